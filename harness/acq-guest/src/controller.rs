//! Control actions on a streaming card from a second process (`acq-stream --control`, the
//! scenario's `control` list): what a monitoring tool or a second thread of a user's
//! program does to the file while the consumer reads it.
//!
//! The device has one open file (a second open() is `EBUSY`), so the second process
//! shares the consumer's open file the way a forked child does: it is forked after the
//! open, before the consumer's first read. It waits for each action's moment (a time
//! since it started, or the consumer's byte count, which the consumer publishes in a
//! shared page), does the ioctl and records the answer. When the consumer is done it
//! says so in the same page; the helper writes its report (one JSON object) to a pipe
//! and exits before the consumer closes the device, so the close still ends the session.
//!
//! What the consumer sees of these actions is the driver's contract (docs/driver.md,
//! "Sessions and the stream"): a STOP or RESET ends the session, a read() waiting then
//! returns 0 and the next one starts a new session whose offsets begin at 0.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::acqdev::{self, AcqDev};
use crate::forked::{self, Pipe};
use acq_wire::consumer::{
    At, ControlAction as Action, ControlPlan as Planned, ControlReport, ControlResult,
};

/// The page the consumer and the helper share: the consumer's byte count and its "done".
#[repr(C)]
struct Shared {
    bytes: AtomicU64,
    done: AtomicU64,
}

/// One anonymous shared page holding a [`Shared`], unmapped on drop.
struct SharedPage(*mut Shared);

impl SharedPage {
    fn new() -> Result<SharedPage, String> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        // The page is zero-filled: both counters start at 0, a valid `Shared`.
        Ok(SharedPage(p.cast()))
    }

    fn get(&self) -> &Shared {
        // SAFETY: the mapping lives as long as `self`, is page-aligned and zero-filled
        // (valid atomics), and is only ever accessed through atomics, by both processes.
        unsafe { &*self.0 }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping of one page; nothing borrows it past `self`.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

/// The consumer's side of the helper.
pub struct Controller {
    shared: SharedPage,
    report: Option<OwnedFd>,
    helper: libc::pid_t,
    reaped: bool,
}

/// How long the helper may take to report once the consumer is done (an ioctl under way
/// may wait for a function reset: 10 s in the driver).
const REPORT_WAIT_MS: i32 = 15_000;

impl Controller {
    /// Forks the helper, which shares `dev`'s open file; `path` is the device path for an
    /// `open` action.
    ///
    /// # Safety
    ///
    /// The process must have one thread (the helper allocates and formats).
    pub unsafe fn start(
        plan: Vec<Planned>,
        dev: &AcqDev,
        path: &str,
    ) -> Result<Controller, String> {
        let shared = SharedPage::new()?;
        let child = |wr: OwnedFd, parent| {
            // Only the device and the report pipe stay open in the helper: another of the
            // consumer's descriptors (the signal helper's trigger pipe, a sink) must close
            // when the consumer closes it.
            let keep = [dev.raw_fd(), wr.as_raw_fd()];
            for fd in 3..1024 {
                if !keep.contains(&fd) {
                    // SAFETY: closing a descriptor number in the forked child, which owns
                    // copies only; a number not open fails with EBADF, harmlessly. Nothing
                    // in the child uses these descriptors again.
                    unsafe { libc::close(fd) };
                }
            }
            helper(&plan, dev, path, shared.get(), parent, wr)
        };
        // SAFETY: the process has one thread (the caller's contract).
        let (pid, rd) = unsafe { forked::fork_with_pipe(Pipe::FromHelper, child) }?;
        Ok(Controller {
            shared,
            report: Some(rd),
            helper: pid,
            reaped: false,
        })
    }

    /// The consumer has `bytes` so far.
    pub fn progress(&self, bytes: u64) {
        self.shared.get().bytes.store(bytes, Ordering::Release);
    }

    /// The consumer is done: the helper stops waiting, reports and exits. Returns its
    /// report, or one that says why there is none.
    pub fn finish(&mut self) -> ControlReport {
        self.shared.get().done.store(1, Ordering::Release);
        let mut text = Vec::new();
        if let Some(rd) = self.report.take() {
            let deadline = Instant::now() + Duration::from_millis(REPORT_WAIT_MS as u64);
            let mut buf = [0u8; 4096];
            loop {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis() as i32;
                let mut p = libc::pollfd {
                    fd: rd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                if left <= 0 {
                    break;
                }
                // SAFETY: `p` is one valid pollfd.
                let r = unsafe { libc::poll(&mut p, 1, left) };
                // SIGUSR1 (caught without SA_RESTART) interrupts a wait: not the end.
                let interrupted = || errno_is(libc::EINTR);
                if r < 0 && interrupted() {
                    continue;
                }
                if r <= 0 {
                    break;
                }
                // SAFETY: `buf` is valid for writes of its length.
                let n = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 && interrupted() {
                    continue;
                }
                if n <= 0 {
                    break;
                }
                text.extend_from_slice(&buf[..n as usize]);
            }
        }
        self.reap();
        serde_json::from_slice(&text).unwrap_or_else(|_| ControlReport {
            error: Some(format!(
                "the control helper gave no report within {} s: {:?}",
                REPORT_WAIT_MS / 1000,
                String::from_utf8_lossy(&text)
            )),
            ..ControlReport::default()
        })
    }

    fn reap(&mut self) {
        if self.reaped {
            return;
        }
        self.reaped = true;
        if forked::reap(self.helper, Duration::from_millis(REPORT_WAIT_MS as u64)) {
            return;
        }
        eprintln!(
            "acq-stream: the control helper (pid {}) is still there after SIGKILL: stuck in the driver?",
            self.helper
        );
    }
}

fn errno_is(code: i32) -> bool {
    std::io::Error::last_os_error().raw_os_error() == Some(code)
}

impl Drop for Controller {
    /// An error path that never called `finish`: the helper is told, and reaped.
    fn drop(&mut self) {
        self.shared.get().done.store(1, Ordering::Release);
        self.report = None;
        self.reap();
    }
}

/// The errno name of an ioctl's answer, or "ok".
fn answer(r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => acqdev::errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

fn act(action: &Action, dev: &AcqDev, path: &str) -> String {
    match action {
        Action::Stop => answer(dev.stop()),
        Action::Start => answer(dev.start()),
        Action::Reset => answer(dev.reset()),
        Action::SetConfig(c) => {
            let mut cfg = match dev.config() {
                Ok(cfg) => cfg,
                Err(e) => return format!("GET_CONFIG {}", answer(Err(e))),
            };
            if let Some(v) = c.block_size {
                cfg.block_size = v;
            }
            if let Some(v) = c.irq_count {
                cfg.irq_mod_count = v;
            }
            if let Some(v) = c.irq_time_us {
                cfg.irq_mod_time_us = v;
            }
            if let Some(v) = c.rate {
                cfg.rate = v;
            }
            answer(dev.set_config(&cfg))
        }
        // A second open that succeeds breaks the one-open rule: "opened" (and closed).
        Action::Open => match AcqDev::open(path, false) {
            Ok(_second) => "opened".into(),
            Err(e) => answer(Err(e)),
        },
    }
}

/// The helper process: never returns.
fn helper(
    plan: &[Planned],
    dev: &AcqDev,
    path: &str,
    shared: &Shared,
    parent: libc::pid_t,
    report: OwnedFd,
) -> ! {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number; no memory is passed. A
    // consumer killed by a signal takes its helper along, so the device gets closed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid() cannot fail.
    let orphan = unsafe { libc::getppid() } != parent;
    let start = Instant::now();
    let mut done = Vec::new();
    for p in plan {
        if orphan {
            break;
        }
        let due = loop {
            if shared.done.load(Ordering::Acquire) != 0 {
                break false;
            }
            let ready = match p.at {
                At::Ms(ms) => start.elapsed() >= Duration::from_millis(ms),
                At::Bytes(b) => shared.bytes.load(Ordering::Acquire) >= b,
            };
            if ready {
                break true;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if !due {
            break;
        }
        let at_ms = start.elapsed().as_millis() as u64;
        let at_bytes = shared.bytes.load(Ordering::Acquire);
        let result = act(&p.action, dev, path);
        done.push(ControlResult {
            action: p.action.name().into(),
            at_ms,
            at_bytes,
            took_ms: start.elapsed().as_millis() as u64 - at_ms,
            result,
        });
    }
    let planned = plan.len() as u64;
    let line = serde_json::to_string(&ControlReport {
        actions: done,
        planned,
        error: None,
    })
    .unwrap_or_default();
    // SAFETY: write(2) of an initialised buffer to our pipe's write end.
    unsafe { libc::write(report.as_raw_fd(), line.as_ptr().cast(), line.len()) };
    // SAFETY: _exit() in the forked child (no destructors, no atexit handlers: the
    // device's descriptor is closed by the exit, never by a destructor racing the parent).
    unsafe { libc::_exit(0) };
}

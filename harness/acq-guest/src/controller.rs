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
use crate::signaler::When;

/// Settings a SET_CONFIG action changes (the rest keep their value). The pattern and its
/// seed are not among them: the consumer verifies the stream against them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Bytes per block.
    pub block_size: Option<u32>,
    /// Completions per interrupt.
    pub irq_count: Option<u32>,
    /// Interrupt moderation time.
    pub irq_time_us: Option<u32>,
    /// Source rate, bytes per second.
    pub rate: Option<u64>,
}

/// One action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `ACQ_IOC_STOP`.
    Stop,
    /// `ACQ_IOC_START`.
    Start,
    /// `ACQ_IOC_RESET`.
    Reset,
    /// `ACQ_IOC_GET_CONFIG`, then `ACQ_IOC_SET_CONFIG` with the change.
    SetConfig(Change),
    /// A second open() of the device path (the contract: `EBUSY`).
    Open,
}

impl Action {
    /// The name in reports and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Reset => "reset",
            Action::SetConfig(_) => "set_config",
            Action::Open => "open",
        }
    }
}

/// An action and its moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    /// What.
    pub action: Action,
    /// When.
    pub when: When,
}

/// Parses `ACTION@WHEN`: ACTION is `stop`, `start`, `reset`, `open` or
/// `set_config:KEY=N,...` (keys `block_size`, `irq_count`, `irq_time_us`, `rate`); WHEN is
/// `Nms` (after the consumer started) or a byte count (`N`, `NK`, `NM`, `NG`).
pub fn parse(s: &str) -> Result<Planned, String> {
    let (what, when) = s
        .rsplit_once('@')
        .ok_or_else(|| format!("--control {s:?}: expected ACTION@WHEN"))?;
    let when = match when.strip_suffix("ms") {
        Some(ms) => When::Ms(
            ms.parse()
                .map_err(|_| format!("--control {s:?}: bad time {when:?}"))?,
        ),
        None => When::Bytes(
            acqdev::parse_size(when)
                .ok_or_else(|| format!("--control {s:?}: bad byte count {when:?}"))?,
        ),
    };
    let action = match what.split_once(':') {
        None => match what {
            "stop" => Action::Stop,
            "start" => Action::Start,
            "reset" => Action::Reset,
            "open" => Action::Open,
            _ => {
                return Err(format!(
                    "--control {s:?}: unknown action {what:?} (stop, start, reset, open, \
                     set_config:KEY=N,...)"
                ))
            }
        },
        Some(("set_config", kvs)) => {
            let mut c = Change::default();
            for kv in kvs.split(',') {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--control {s:?}: expected KEY=N, not {kv:?}"))?;
                let n = acqdev::parse_size(v)
                    .ok_or_else(|| format!("--control {s:?}: bad number {v:?}"))?;
                let small = || u32::try_from(n).map_err(|_| format!("--control {s:?}: {k} {n}"));
                match k {
                    "block_size" => c.block_size = Some(small()?),
                    "irq_count" => c.irq_count = Some(small()?),
                    "irq_time_us" => c.irq_time_us = Some(small()?),
                    "rate" => c.rate = Some(n),
                    _ => {
                        return Err(format!(
                            "--control {s:?}: unknown setting {k:?} (block_size, irq_count, \
                             irq_time_us, rate)"
                        ))
                    }
                }
            }
            Action::SetConfig(c)
        }
        Some(_) => return Err(format!("--control {s:?}: only set_config takes settings")),
    };
    Ok(Planned { action, when })
}

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
    /// report (`{"actions": [...], "planned": N}`), or an error object if it gave none.
    pub fn finish(&mut self) -> serde_json::Value {
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
        serde_json::from_slice(&text).unwrap_or_else(|_| {
            serde_json::json!({"error": format!(
                "the control helper gave no report within {} s: {:?}",
                REPORT_WAIT_MS / 1000,
                String::from_utf8_lossy(&text)
            )})
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
            let ready = match p.when {
                When::Ms(ms) => start.elapsed() >= Duration::from_millis(ms),
                When::Bytes(b) => shared.bytes.load(Ordering::Acquire) >= b,
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
        done.push(serde_json::json!({
            "action": p.action.name(),
            "at_ms": at_ms,
            "at_bytes": at_bytes,
            "took_ms": start.elapsed().as_millis() as u64 - at_ms,
            "result": result,
        }));
    }
    let line = serde_json::json!({"actions": done, "planned": plan.len()}).to_string();
    // SAFETY: write(2) of an initialised buffer to our pipe's write end.
    unsafe { libc::write(report.as_raw_fd(), line.as_ptr().cast(), line.len()) };
    // SAFETY: _exit() in the forked child (no destructors, no atexit handlers: the
    // device's descriptor is closed by the exit, never by a destructor racing the parent).
    unsafe { libc::_exit(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse("stop@2M").unwrap(),
            Planned {
                action: Action::Stop,
                when: When::Bytes(2 << 20)
            }
        );
        assert_eq!(parse("open@150ms").unwrap().when, When::Ms(150));
        assert_eq!(
            parse("set_config:block_size=2048,rate=4M@1M")
                .unwrap()
                .action,
            Action::SetConfig(Change {
                block_size: Some(2048),
                rate: Some(4 << 20),
                ..Change::default()
            })
        );
        assert!(parse("stop").unwrap_err().contains("ACTION@WHEN"));
        assert!(parse("halt@1M").unwrap_err().contains("unknown action"));
        assert!(parse("set_config:seed=1@1M")
            .unwrap_err()
            .contains("unknown setting"));
        assert!(parse("stop:x=1@1M")
            .unwrap_err()
            .contains("only set_config"));
        assert!(parse("stop@soon").unwrap_err().contains("bad byte count"));
    }
}

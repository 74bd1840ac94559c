//! `acq-ctl slow-read|slow-write|slow-read-unbind`: a read() or write() of one block whose
//! user buffer faults for 3 s (userfaultfd), and, while it waits inside the driver's
//! copy, another call on the same card: an ioctl, or the driver's unbind. That call must
//! not wait for the copy. When the fault is resolved the stuck call completes with the
//! right data (after an unbind too: the copy's page outlives the card's memory).
//!
//! Each prints one JSON line: whether the fault was seen, how long the other call took
//! (`probe_ms`, `null` if it was still waiting after 2 s), the stuck call's result and
//! whether its data is the stream's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::acqdev::{errno_name, AcqDev};
use crate::regs;
use crate::uapi::{self, AcqConfig, AcqPbStats};
use crate::uffd::SlowBuffer;

const BLOCK: usize = 4096;
/// How long the other call may take before it counts as waiting for the copy.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// How long the user's page keeps faulting.
const FAULT_HOLD: Duration = Duration::from_secs(3);

/// What the other call is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Probe {
    /// `ACQ_IOC_GET_STATS` (or `ACQ_IOC_PB_GET_STATS`) on the same descriptor.
    Ioctl,
    /// The driver's unbind through sysfs.
    Unbind,
}

/// The first block of a COUNTER stream with seed 0 (what a fresh session delivers, and
/// what the playback card verifies).
fn counter_block() -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    for (i, w) in b.chunks_exact_mut(8).enumerate() {
        let v = regs::pattern_word(regs::pattern::COUNTER, 0, i as u64);
        w.copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// Runs `f` in a thread; the receiver gets its result and how long it took.
fn timed<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> (mpsc::Receiver<(T, u64)>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let t = Instant::now();
        let r = f();
        let _ = tx.send((r, t.elapsed().as_millis() as u64));
    });
    (rx, h)
}

/// A system call's result: the count or the errno's name.
fn sys_result(r: isize) -> Result<usize, String> {
    if r < 0 {
        Err(errno_name(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(r as usize)
    }
}

/// The scene shared by both directions: `stuck` runs the read or write on the slow
/// buffer, `probe` is the other call. Returns the JSON fields common to both.
fn scene(
    buf: &SlowBuffer,
    fill: &[u8; BLOCK],
    stuck: impl FnOnce() -> Result<usize, String> + Send + 'static,
    probe: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> std::io::Result<(serde_json::Value, Option<Result<usize, String>>)> {
    let (stuck_rx, stuck_h) = timed(stuck);
    let Some(page) = buf.wait_fault(5000)? else {
        // The call never touched the buffer: report what it did instead.
        let r = stuck_rx.recv_timeout(Duration::from_secs(10)).ok();
        let _ = stuck_h.join();
        return Ok((
            serde_json::json!({"fault_seen": false, "stuck_result": format!("{:?}", r.map(|x| x.0))}),
            None,
        ));
    };
    let started = Instant::now();
    let (probe_rx, probe_h) = timed(probe);
    let probe = probe_rx.recv_timeout(PROBE_WAIT).ok();
    std::thread::sleep(FAULT_HOLD.saturating_sub(started.elapsed()));
    buf.resolve(page, fill)?;
    // A probe that waited for the copy completes now.
    let probe_late = match &probe {
        Some(_) => None,
        None => probe_rx.recv_timeout(Duration::from_secs(10)).ok(),
    };
    let stuck = stuck_rx.recv_timeout(Duration::from_secs(10)).ok();
    let _ = probe_h.join();
    let _ = stuck_h.join();
    let (probe_result, probe_ms) = match (&probe, &probe_late) {
        (Some((r, ms)), _) => (format!("{r:?}"), serde_json::json!(ms)),
        (None, Some((r, _))) => (format!("{r:?}"), serde_json::Value::Null),
        (None, None) => ("still waiting".to_string(), serde_json::Value::Null),
    };
    let stuck_ms = stuck.as_ref().map(|(_, ms)| *ms);
    Ok((
        serde_json::json!({
            "fault_seen": true,
            "probe_ms": probe_ms,
            "probe_result": probe_result,
            "stuck_ms": stuck_ms,
        }),
        stuck.map(|(r, _)| r),
    ))
}

/// `slow-read` / `slow-read-unbind`.
pub fn slow_read(dev: &AcqDev, probe: Probe) -> std::io::Result<serde_json::Value> {
    let mut c = dev.config()?;
    c.block_size = BLOCK as u32;
    c.rate = 4 << 20;
    c.pattern = regs::pattern::COUNTER;
    c.seed = 0;
    dev.stop()?;
    dev.set_config(&c)?;
    let buf = SlowBuffer::new(1)?;
    let (fd, addr) = (dev.raw_fd(), buf.addr());
    let stuck = move || {
        // SAFETY: `addr` is the slow buffer, one page, live until the scene returns
        // (after this thread was joined).
        sys_result(unsafe { libc::read(fd, addr as *mut libc::c_void, BLOCK) })
    };
    let probe_fn: Box<dyn FnOnce() -> Result<(), String> + Send> = match probe {
        Probe::Ioctl => Box::new(move || {
            let mut s = uapi::AcqStats::default();
            // SAFETY: `s` is the structure ACQ_IOC_GET_STATS writes.
            let r = unsafe { libc::ioctl(fd, uapi::ACQ_IOC_GET_STATS as _, &mut s) };
            sys_result(r as isize).map(|_| ())
        }),
        Probe::Unbind => {
            let bdf = crate::acqdev::bound_card()?;
            Box::new(move || {
                std::fs::write("/sys/bus/pci/drivers/acq/unbind", &bdf)
                    .map_err(|e| format!("unbind {bdf}: {e}"))
            })
        }
    };
    // The page the kernel copies into is resolved with zeros: what the read returns is
    // what the driver copied after the fault, the stream's first block.
    let (mut json, stuck) = scene(&buf, &[0u8; BLOCK], stuck, probe_fn)?;
    let data_ok = stuck
        .as_ref()
        .is_some_and(|r| r == &Ok(BLOCK) && buf.bytes() == counter_block());
    json["read"] = serde_json::json!(format!("{stuck:?}"));
    json["data_ok"] = serde_json::json!(data_ok);
    json["probe"] = serde_json::json!(format!("{probe:?}"));
    Ok(json)
}

/// `slow-write`: the same on `/dev/acqN-out`, whose card verifies what it receives.
pub fn slow_write(out_path: &str) -> std::io::Result<serde_json::Value> {
    let c = std::ffi::CString::new(out_path).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let raw = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` was just opened and is owned by nobody else.
    let out = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = out.as_raw_fd();
    let mut cfg = AcqConfig::default();
    // SAFETY: `cfg` is the structure ACQ_IOC_PB_GET_CONFIG writes.
    if unsafe { libc::ioctl(fd, uapi::ACQ_IOC_PB_GET_CONFIG as _, &mut cfg) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    cfg.block_size = BLOCK as u32;
    cfg.pattern = regs::pattern::COUNTER;
    cfg.seed = 0;
    // SAFETY: `cfg` is the structure ACQ_IOC_PB_SET_CONFIG reads.
    if unsafe { libc::ioctl(fd, uapi::ACQ_IOC_PB_SET_CONFIG as _, &cfg) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let buf = SlowBuffer::new(1)?;
    let addr = buf.addr();
    let stuck = move || {
        // SAFETY: `addr` is the slow buffer, one page, live until the scene returns.
        sys_result(unsafe { libc::write(fd, addr as *const libc::c_void, BLOCK) })
    };
    let probe = move || {
        let mut s = AcqPbStats::default();
        // SAFETY: `s` is the structure ACQ_IOC_PB_GET_STATS writes.
        let r = unsafe { libc::ioctl(fd, uapi::ACQ_IOC_PB_GET_STATS as _, &mut s) };
        sys_result(r as isize).map(|_| ())
    };
    // The faulting page is resolved with the stream's first block, which the card checks.
    let (mut json, stuck) = scene(&buf, &counter_block(), stuck, probe)?;
    let mut s = AcqPbStats::default();
    // SAFETY: DRAIN takes no argument; `s` is the structure PB_GET_STATS writes.
    let drained = unsafe {
        libc::ioctl(fd, uapi::ACQ_IOC_PB_DRAIN as _, 0) == 0
            && libc::ioctl(fd, uapi::ACQ_IOC_PB_GET_STATS as _, &mut s) == 0
    };
    json["write"] = serde_json::json!(format!("{stuck:?}"));
    json["drained"] = serde_json::json!(drained);
    json["card_verified"] = serde_json::json!(s.card_verified);
    json["mismatch_blocks"] = serde_json::json!(s.mismatch_blocks);
    json["data_ok"] = serde_json::json!(
        stuck == Some(Ok(BLOCK))
            && drained
            && s.card_verified >= BLOCK as u64
            && s.mismatch_blocks == 0
    );
    drop(out);
    Ok(json)
}

//! `acq-stream --direction out`: play a stream into the card's playback node
//! (`/dev/acqN-out`, docs/driver.md "Playback") and report, as one JSON line, what the
//! card verified.
//!
//! ```text
//! acq-stream --direction out [--device /dev/acq0-out] --bytes N
//!            [--source pattern|zero|FILE] [--mode write|writev|splice|sendfile|vmsplice]
//!            [--write-size N] [--buffers K] [--gift] [--reuse-before-release]
//!            [--pipe-size N] [--block B] [--ring-log2 L] [--rate R] [--pattern P]
//!            [--seed S] [--irq-count C] [--irq-time-us T] [--nonblock]
//!            [--corrupt-at OFFSET] [--pause-at N --pause-ms MS] [--verify]
//!            [--timeout SECONDS]
//! ```
//!
//! Sources: `pattern` is the card's pattern generated here (from stream offset 0, so the
//! card verifies every byte); `zero` reads `/dev/zero`; anything else is a file read
//! from its start. Mode `write` copies the source into write() calls (`writev` into
//! writev() calls of 4 KiB pieces); `sendfile` moves a file with sendfile(); mode `splice`
//! moves it with splice(): a file (or `/dev/zero`) is spliced into a pipe and the pipe
//! into the card, and the pattern source is written into a pipe by a second thread and
//! spliced from that pipe ("splice from a pipe"). Mode `vmsplice` lends `--buffers`
//! buffers of `--write-size` bytes to the card with vmsplice() and splice(), reusing each
//! only once the driver released it (the `vmsplice` module says how; `--gift` and
//! `--reuse-before-release` are its variants).
//!
//! `--corrupt-at` flips bit 0 of the pattern byte at that stream offset (a deliberately
//! bad source, which the card must catch there). `--pause-at` stops writing once for
//! `--pause-ms` at that byte count (an underrun when the card plays at a set rate).
//!
//! The card's counters (`ACQ_IOC_PB_GET_STATS`) are read after `ACQ_IOC_PB_DRAIN`, so
//! they cover everything written. With `--verify` the run passes only if the card
//! verified every byte written and saw no mismatch.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::acqdev::{self, errno_name, parse_pattern, parse_size};
use crate::regs;
use crate::uapi::{self, AcqConfig, AcqPbStats};

mod vmsplice;

/// How the data reaches the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Write,
    /// writev() of 4 KiB pieces of each `--write-size` chunk.
    Writev,
    Splice,
    /// sendfile() from the `--source` file (or /dev/zero is refused: a file is needed).
    Sendfile,
    /// vmsplice() of user buffers into a pipe, splice() from the pipe to the card.
    Vmsplice,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Write => "write",
            Mode::Writev => "writev",
            Mode::Splice => "splice",
            Mode::Sendfile => "sendfile",
            Mode::Vmsplice => "vmsplice",
        }
    }
}

/// The modes, for messages.
const MODES: &str = "write, writev, splice, sendfile, vmsplice";

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SourceSpec {
    Pattern,
    Zero,
    File(String),
}

impl SourceSpec {
    fn name(&self) -> String {
        match self {
            SourceSpec::Pattern => "pattern".into(),
            SourceSpec::Zero => "/dev/zero".into(),
            SourceSpec::File(p) => p.clone(),
        }
    }

    fn path(&self) -> Option<&str> {
        match self {
            SourceSpec::Pattern => None,
            SourceSpec::Zero => Some("/dev/zero"),
            SourceSpec::File(p) => Some(p),
        }
    }
}

#[derive(Debug)]
struct Args {
    device: String,
    mode: Mode,
    source: SourceSpec,
    bytes: u64,
    write_size: usize,
    pipe_size: Option<usize>,
    block: Option<u32>,
    ring_log2: Option<u32>,
    rate: Option<u64>,
    pattern: Option<u32>,
    seed: Option<u64>,
    irq_count: Option<u32>,
    irq_time_us: Option<u32>,
    nonblock: bool,
    corrupt_at: Option<u64>,
    pause_at: Option<u64>,
    pause_ms: u64,
    verify: bool,
    timeout: Option<f64>,
    /// vmsplice: buffers cycled, SPLICE_F_GIFT, reuse without waiting for the release.
    buffers: usize,
    gift: bool,
    reuse_before_release: bool,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        device: "/dev/acq0-out".into(),
        mode: Mode::Write,
        source: SourceSpec::Pattern,
        bytes: 0,
        write_size: 1 << 20,
        pipe_size: None,
        block: None,
        ring_log2: None,
        rate: None,
        pattern: None,
        seed: None,
        irq_count: None,
        irq_time_us: None,
        nonblock: false,
        corrupt_at: None,
        pause_at: None,
        pause_ms: 500,
        verify: false,
        timeout: None,
        buffers: 4,
        gift: false,
        reuse_before_release: false,
    };
    let mut it = argv.iter();
    while let Some(opt) = it.next() {
        let mut val = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let size =
            |name: &str, v: String| parse_size(&v).ok_or(format!("bad value for {name}: {v:?}"));
        let small = |name: &str, v: u64| u32::try_from(v).map_err(|_| format!("{name} too large"));
        match opt.as_str() {
            "--direction" => {
                let v = val(opt)?;
                if v != "out" {
                    return Err(format!("--direction {v:?} reached the playback path"));
                }
            }
            "--device" => a.device = val(opt)?,
            "--mode" => {
                a.mode = match val(opt)?.as_str() {
                    "write" => Mode::Write,
                    "writev" => Mode::Writev,
                    "splice" => Mode::Splice,
                    "sendfile" => Mode::Sendfile,
                    "vmsplice" => Mode::Vmsplice,
                    m => return Err(format!("--direction out: mode {m:?} ({MODES})")),
                }
            }
            "--source" => {
                a.source = match val(opt)?.as_str() {
                    "pattern" => SourceSpec::Pattern,
                    "zero" | "/dev/zero" => SourceSpec::Zero,
                    p if p.starts_with('/') => SourceSpec::File(p.into()),
                    s => {
                        return Err(format!(
                            "bad source {s:?} (pattern, zero, or an absolute file path)"
                        ))
                    }
                }
            }
            "--bytes" => a.bytes = size(opt, val(opt)?)?,
            "--write-size" => {
                let v = size(opt, val(opt)?)?;
                if v == 0 || v > (1 << 30) {
                    return Err(format!("--write-size must be 1 .. 1G, not {v}"));
                }
                a.write_size = v as usize;
            }
            "--pipe-size" => {
                let v = size(opt, val(opt)?)?;
                if !(4096..=(1 << 30)).contains(&v) {
                    return Err(format!("--pipe-size must be 4K .. 1G, not {v}"));
                }
                a.pipe_size = Some(v as usize);
            }
            "--block" => a.block = Some(small(opt, size(opt, val(opt)?)?)?),
            "--ring-log2" => a.ring_log2 = Some(small(opt, size(opt, val(opt)?)?)?),
            "--rate" => a.rate = Some(size(opt, val(opt)?)?),
            "--pattern" => {
                let v = val(opt)?;
                a.pattern = Some(parse_pattern(&v).ok_or_else(|| format!("bad pattern {v:?}"))?)
            }
            "--seed" => a.seed = Some(size(opt, val(opt)?)?),
            "--irq-count" => a.irq_count = Some(small(opt, size(opt, val(opt)?)?)?),
            "--irq-time-us" => a.irq_time_us = Some(small(opt, size(opt, val(opt)?)?)?),
            "--nonblock" => a.nonblock = true,
            "--corrupt-at" => a.corrupt_at = Some(size(opt, val(opt)?)?),
            "--pause-at" => a.pause_at = Some(size(opt, val(opt)?)?),
            "--pause-ms" => a.pause_ms = size(opt, val(opt)?)?,
            "--verify" => a.verify = true,
            "--buffers" => {
                let v = size(opt, val(opt)?)?;
                if !(1..=1024).contains(&v) {
                    return Err(format!("--buffers must be 1 .. 1024, not {v}"));
                }
                a.buffers = v as usize;
            }
            "--gift" => a.gift = true,
            "--reuse-before-release" => a.reuse_before_release = true,
            "--timeout" => {
                let v = val(opt)?;
                a.timeout = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|t| *t > 0.0 && t.is_finite())
                        .ok_or_else(|| format!("bad --timeout {v:?}"))?,
                );
            }
            other => return Err(format!("unknown argument for --direction out: {other:?}")),
        }
    }
    if a.bytes == 0 {
        return Err("--bytes N (N > 0) is required".into());
    }
    if a.corrupt_at.is_some() && a.source != SourceSpec::Pattern {
        return Err("--corrupt-at needs --source pattern".into());
    }
    if a.pipe_size.is_some() && !matches!(a.mode, Mode::Splice | Mode::Vmsplice) {
        return Err("--pipe-size needs --mode splice or vmsplice".into());
    }
    if (a.gift || a.reuse_before_release) && a.mode != Mode::Vmsplice {
        return Err("--gift and --reuse-before-release need --mode vmsplice".into());
    }
    if a.gift && a.reuse_before_release {
        return Err("--gift gives each buffer away: there is nothing to reuse".into());
    }
    if a.mode == Mode::Sendfile && !matches!(a.source, SourceSpec::File(_)) {
        return Err("--mode sendfile needs --source FILE (sendfile() reads a file)".into());
    }
    Ok(a)
}

/// The open playback node.
struct PbDev {
    fd: OwnedFd,
}

impl PbDev {
    fn open(path: &str, nonblock: bool) -> std::io::Result<PbDev> {
        let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = libc::O_WRONLY | libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 };
        // SAFETY: `c` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PbDev { fd })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<(), String> {
        // SAFETY: `arg` is null or points at a structure of the size encoded in `cmd`
        // (the callers below); the driver writes no more than that.
        let r = unsafe { libc::ioctl(self.raw(), cmd as _, arg) };
        if r < 0 {
            Err(errno_name(last_errno()))
        } else {
            Ok(())
        }
    }

    fn config(&self) -> Result<AcqConfig, String> {
        let mut c = AcqConfig::default();
        self.ioctl(
            uapi::ACQ_IOC_PB_GET_CONFIG,
            &mut c as *mut AcqConfig as usize,
        )?;
        Ok(c)
    }

    fn set_config(&self, c: &AcqConfig) -> Result<(), String> {
        self.ioctl(uapi::ACQ_IOC_PB_SET_CONFIG, c as *const AcqConfig as usize)
    }

    fn stats(&self) -> Result<AcqPbStats, String> {
        let mut s = AcqPbStats::default();
        self.ioctl(
            uapi::ACQ_IOC_PB_GET_STATS,
            &mut s as *mut AcqPbStats as usize,
        )?;
        Ok(s)
    }

    fn drain(&self) -> Result<(), String> {
        self.ioctl(uapi::ACQ_IOC_PB_DRAIN, 0)
    }

    /// Waits until the node takes more data (poll for POLLOUT), at most 10 s.
    fn wait_writable(&self) -> Result<(), String> {
        let mut p = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 10_000) };
        match r {
            r if r < 0 && last_errno() == libc::EINTR => Ok(()),
            r if r < 0 => Err(format!("poll: {}", errno_name(last_errno()))),
            0 => Err("poll: not writable for 10 s".into()),
            _ => Ok(()),
        }
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The card's counters as JSON.
pub fn pb_stats_json(s: &AcqPbStats) -> serde_json::Value {
    serde_json::json!({
        "bytes": s.bytes,
        "blocks": s.blocks,
        "zero_copy_bytes": s.zero_copy_bytes,
        "copied_bytes": s.copied_bytes,
        "underruns": s.underruns,
        "underrun_bytes": s.underrun_bytes,
        "mismatch_blocks": s.mismatch_blocks,
        "errors": s.errors,
        "session": s.session,
        "in_flight": s.in_flight,
        "state": s.state,
        "card_verified": s.card_verified,
        "card_bytes": s.card_bytes,
        "card_first_bad": (s.card_first_bad != u64::MAX).then_some(s.card_first_bad),
        "card_mismatch": s.card_mismatch,
        "card_underruns": s.card_underruns,
        "held_pages": s.held_pages,
        "lost_wakeups": s.lost_wakeups,
    })
}

/// Fills `buf` with the source's bytes at stream offset `off`.
struct Producer {
    cfg: AcqConfig,
    corrupt_at: Option<u64>,
    file: Option<std::fs::File>,
}

impl Producer {
    fn fill(&mut self, off: u64, buf: &mut [u8]) -> Result<usize, String> {
        match &mut self.file {
            None => {
                regs::pattern_fill(self.cfg.pattern, self.cfg.seed, off, buf);
                if let Some(c) = self.corrupt_at {
                    if c >= off && c < off + buf.len() as u64 {
                        buf[(c - off) as usize] ^= 1;
                    }
                }
                Ok(buf.len())
            }
            Some(f) => f.read(buf).map_err(|e| format!("source read: {e}")),
        }
    }
}

/// Loop state.
struct Run {
    errnos: BTreeMap<String, u64>,
    total: u64,
    paused: bool,
    start: Instant,
    timed_out: bool,
}

impl Run {
    fn count(&mut self, e: i32) {
        *self.errnos.entry(errno_name(e)).or_default() += 1;
    }

    fn pause_if_due(&mut self, a: &Args) {
        if let Some(p) = a.pause_at {
            if !self.paused && self.total >= p {
                self.paused = true;
                std::thread::sleep(Duration::from_millis(a.pause_ms));
            }
        }
    }

    fn expired(&mut self, a: &Args) -> bool {
        if let Some(t) = a.timeout {
            if self.start.elapsed().as_secs_f64() > t {
                self.timed_out = true;
            }
        }
        self.timed_out
    }

    /// The chunk to move next: up to `max`, not past the pause point or the end.
    fn chunk(&self, a: &Args, max: usize) -> usize {
        let mut left = a.bytes - self.total;
        if let Some(p) = a.pause_at {
            if !self.paused && self.total < p {
                left = left.min(p - self.total);
            }
        }
        left.min(max as u64) as usize
    }
}

/// Handles a failed transfer: documented errnos are counted and the loop goes on
/// (EPIPE: an underrun; EIO: an error completion or halt; EAGAIN: wait for POLLOUT).
fn on_error(dev: &PbDev, st: &mut Run, e: i32) -> Result<(), String> {
    // EAGAIN is flow control (O_NONBLOCK), not an event: not counted.
    if e != libc::EAGAIN {
        st.count(e);
    }
    match e {
        libc::EPIPE | libc::EIO | libc::EINTR => Ok(()),
        libc::EAGAIN => dev.wait_writable(),
        other => Err(format!("fatal {}", errno_name(other))),
    }
}

fn write_loop(a: &Args, dev: &PbDev, p: &mut Producer, st: &mut Run) -> Result<(), String> {
    let mut buf = vec![0u8; a.write_size];
    let (mut have, mut at) = (0usize, 0usize);
    while st.total < a.bytes && !st.expired(a) {
        st.pause_if_due(a);
        if at == have {
            let n = st.chunk(a, buf.len());
            have = p.fill(st.total, &mut buf[..n])?;
            at = 0;
            if have == 0 {
                return Err(format!("source ended after {} bytes", st.total));
            }
        }
        let chunk = &buf[at..have];
        let r = if a.mode == Mode::Writev {
            let iov: Vec<libc::iovec> = chunk
                .chunks(4096)
                .take(1024)
                .map(|c| libc::iovec {
                    iov_base: c.as_ptr().cast_mut().cast(),
                    iov_len: c.len(),
                })
                .collect();
            // SAFETY: every iovec points into `chunk`, valid for reads of its length; the
            // kernel only reads through them.
            unsafe { libc::writev(dev.raw(), iov.as_ptr(), iov.len() as libc::c_int) }
        } else {
            // SAFETY: `chunk` is valid for reads of its length.
            unsafe { libc::write(dev.raw(), chunk.as_ptr().cast(), chunk.len()) }
        };
        if r < 0 {
            on_error(dev, st, last_errno())?;
            continue;
        }
        at += r as usize;
        st.total += r as u64;
    }
    Ok(())
}

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new(size: Option<usize>) -> Result<Pipe, String> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(format!("pipe: {}", errno_name(last_errno())));
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if let Some(s) = size {
            // SAFETY: F_SETPIPE_SZ on our own pipe.
            if unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, s as libc::c_int) } < 0 {
                return Err(format!("F_SETPIPE_SZ {s}: {}", errno_name(last_errno())));
            }
        }
        Ok(Pipe { r, w })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> Result<usize, i32> {
    // SAFETY: plain splice between descriptors we own, no offsets.
    let r = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | flags,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as usize)
    }
}

/// Sendfile mode: file -> card with sendfile() (the kernel's direct splice: its own pipe,
/// and a loop of splice_read/splice_write steps inside one call).
fn sendfile_loop(a: &Args, dev: &PbDev, p: &Producer, st: &mut Run) -> Result<(), String> {
    let src = p
        .file
        .as_ref()
        .ok_or("sendfile needs a source file")?
        .as_raw_fd();
    while st.total < a.bytes && !st.expired(a) {
        st.pause_if_due(a);
        let n = st.chunk(a, a.write_size);
        // SAFETY: plain descriptors; a null offset reads the source at its file position.
        let r = unsafe { libc::sendfile(dev.raw(), src, std::ptr::null_mut(), n) };
        match r {
            0 => return Err(format!("source ended after {} bytes", st.total)),
            r if r < 0 => on_error(dev, st, last_errno())?,
            r => st.total += r as u64,
        }
    }
    Ok(())
}

/// Splice mode: source -> pipe -> card. The pipe is filled by splicing a file, or by a
/// thread writing the generated pattern into it.
fn splice_loop(a: &Args, dev: &PbDev, p: Producer, st: &mut Run) -> Result<(), String> {
    let pipe = Pipe::new(a.pipe_size)?;
    let mut feeder = None;
    let src_fd = match &p.file {
        Some(f) => Some(f.as_raw_fd()),
        None => {
            // "splice from a pipe": the pattern is written into the pipe by a thread.
            let w = pipe.w.try_clone().map_err(|e| format!("dup: {e}"))?;
            let bytes = a.bytes;
            let chunk = a.write_size;
            let mut prod = Producer {
                cfg: p.cfg,
                corrupt_at: p.corrupt_at,
                file: None,
            };
            feeder = Some(std::thread::spawn(move || -> Result<(), String> {
                let mut f = std::fs::File::from(w);
                let mut buf = vec![0u8; chunk];
                let mut off = 0u64;
                while off < bytes {
                    let n = (bytes - off).min(chunk as u64) as usize;
                    prod.fill(off, &mut buf[..n])?;
                    std::io::Write::write_all(&mut f, &buf[..n])
                        .map_err(|e| format!("pipe write: {e}"))?;
                    off += n as u64;
                }
                Ok(())
            }));
            None
        }
    };
    let mut in_pipe = 0u64;
    let mut fed = 0u64;
    while st.total < a.bytes && !st.expired(a) {
        st.pause_if_due(a);
        if let Some(fd) = src_fd {
            // Keep the pipe topped up from the file (never past --bytes).
            let want = st.chunk(a, a.write_size) as u64;
            if in_pipe < want && fed < a.bytes {
                let n = (a.bytes - fed).min(a.write_size as u64) as usize;
                // Non-blocking: this thread is also the pipe's only reader, so a full pipe
                // (EAGAIN) just means "drain first".
                match splice(fd, pipe.w.as_raw_fd(), n, libc::SPLICE_F_NONBLOCK) {
                    Ok(0) => return Err(format!("source ended after {fed} bytes")),
                    Ok(n) => {
                        fed += n as u64;
                        in_pipe += n as u64;
                    }
                    Err(libc::EAGAIN) => {}
                    Err(e) => return Err(format!("splice from source: {}", errno_name(e))),
                }
            }
        }
        let n = st.chunk(a, a.write_size);
        let n = if src_fd.is_some() {
            n.min(in_pipe as usize)
        } else {
            n
        };
        if n == 0 {
            continue;
        }
        match splice(pipe.r.as_raw_fd(), dev.raw(), n, 0) {
            Ok(0) => return Err("splice to the card returned 0".into()),
            Ok(m) => {
                st.total += m as u64;
                in_pipe = in_pipe.saturating_sub(m as u64);
            }
            Err(e) => on_error(dev, st, e)?,
        }
    }
    drop(pipe);
    if let Some(t) = feeder {
        match t.join() {
            Ok(Ok(())) => {}
            // The feeder's pipe closed early because we stopped (timeout): not its fault.
            Ok(Err(_)) if st.timed_out => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("pipe feeder panicked".into()),
        }
    }
    Ok(())
}

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    let dev = PbDev::open(&a.device, a.nonblock).map_err(|e| format!("open {}: {e}", a.device))?;
    let mut cfg = dev.config().map_err(|e| format!("PB_GET_CONFIG: {e}"))?;
    for (v, f) in [
        (a.block, &mut cfg.block_size),
        (a.ring_log2, &mut cfg.ring_log2),
        (a.pattern, &mut cfg.pattern),
        (a.irq_count, &mut cfg.irq_mod_count),
        (a.irq_time_us, &mut cfg.irq_mod_time_us),
    ] {
        if let Some(v) = v {
            *f = v;
        }
    }
    if let Some(v) = a.rate {
        cfg.rate = v;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    dev.set_config(&cfg)
        .map_err(|e| format!("PB_SET_CONFIG {}: {e}", acqdev::config_json(&cfg)))?;
    let before = dev.stats().map_err(|e| format!("PB_GET_STATS: {e}"))?;
    let file = match a.source.path() {
        Some(p) => Some(std::fs::File::open(p).map_err(|e| format!("open {p}: {e}"))?),
        None => None,
    };
    let mut prod = Producer {
        cfg,
        corrupt_at: a.corrupt_at,
        file,
    };
    let mut st = Run {
        errnos: BTreeMap::new(),
        total: 0,
        paused: false,
        start: Instant::now(),
        timed_out: false,
    };
    let mut vs = vmsplice::VmspliceStats::default();
    let r = match a.mode {
        Mode::Write | Mode::Writev => write_loop(a, &dev, &mut prod, &mut st),
        Mode::Splice => splice_loop(a, &dev, prod, &mut st),
        Mode::Sendfile => sendfile_loop(a, &dev, &prod, &mut st),
        Mode::Vmsplice => vmsplice::vmsplice_loop(a, &dev, &mut prod, &mut st).map(|v| vs = v),
    };
    // Pipe pages still held for blocks the card has not completed (zero-copy splice at a
    // rate: the driver releases them on completion, not when splice() returned).
    let held_at_end = dev.stats().map(|s| s.held_pages).unwrap_or(0);
    // Everything written reaches the card before the counters are read.
    let drained = dev.drain();
    let secs = st.start.elapsed().as_secs_f64();
    let fatal = r.err();
    let after = match dev.stats() {
        Ok(s) => s,
        // The card is gone (the loop ended on ENODEV): report what was counted before.
        Err(_) if fatal.is_some() => before,
        Err(e) => return Err(format!("PB_GET_STATS: {e}")),
    };
    let verified = after.card_verified.wrapping_sub(before.card_verified);
    let received = after.card_bytes.wrapping_sub(before.card_bytes);
    let mismatch = after.card_mismatch.wrapping_sub(before.card_mismatch);
    let underruns = after.card_underruns.wrapping_sub(before.card_underruns);
    let first_bad = (after.card_first_bad != u64::MAX).then_some(after.card_first_bad);
    let verify_ok = !a.verify || (verified == st.total && mismatch == 0 && first_bad.is_none());
    let ok = fatal.is_none()
        && drained.is_ok()
        && !st.timed_out
        && st.total >= a.bytes
        && received == st.total - st.total % u64::from(cfg.block_size.max(1))
        && verify_ok;
    let report = serde_json::json!({
        "direction": "out",
        "device": a.device,
        "mode": a.mode.name(),
        "driver_errors": after.errors.wrapping_sub(before.errors),
        "source": a.source.name(),
        "bytes": st.total,
        "seconds": secs,
        "mb_per_s": if secs > 0.0 { st.total as f64 / secs / 1e6 } else { 0.0 },
        "verify": a.verify,
        "card": {
            "received_bytes": received,
            "verified_bytes": verified,
            "mismatch_blocks": mismatch,
            "first_bad_offset": first_bad,
            "underruns": underruns,
        },
        "verified_bytes": verified,
        "errors": mismatch,
        "underruns": after.underruns.wrapping_sub(before.underruns),
        "zero_copy_bytes": after.zero_copy_bytes.wrapping_sub(before.zero_copy_bytes),
        "held_pages_at_end": held_at_end,
        "copied_bytes": after.copied_bytes.wrapping_sub(before.copied_bytes),
        "release_waits": vs.release_waits,
        "release_wait_ms": vs.release_wait_ms,
        "gifted_buffers": vs.gifted,
        "errno": st.errnos,
        "drain": drained.err(),
        "timed_out": st.timed_out,
        "fatal": fatal,
        "config": acqdev::config_json(&cfg),
        "stats": pb_stats_json(&after),
        "ok": ok,
    });
    Ok((report, ok))
}

/// Entry point of `acq-stream --direction out ...` (`argv` without the program name).
pub fn main(argv: &[String]) -> ExitCode {
    let a = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("acq-stream: {e}");
            eprintln!(
                "usage: acq-stream --direction out [--device /dev/acqN-out] --bytes N \
                 [--source pattern|zero|FILE] [--mode write|writev|splice|sendfile|vmsplice] \
                 [--write-size N] [--buffers K] [--gift] [--reuse-before-release] \
                 [--pipe-size N] [--block B] [--ring-log2 L] [--rate R] [--pattern P] \
                 [--seed S] [--irq-count C] [--irq-time-us T] [--nonblock] \
                 [--corrupt-at OFFSET] [--pause-at N [--pause-ms MS]] [--verify] \
                 [--timeout SECONDS]"
            );
            return ExitCode::from(2);
        }
    };
    let context = serde_json::json!({"direction": "out", "device": a.device});
    crate::result::finish(run(&a), context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn options_parse_and_bad_ones_are_refused() {
        let a = args("--direction out --bytes 1M --source /tmp/x --mode splice").unwrap();
        assert!(a.mode == Mode::Splice && a.source == SourceSpec::File("/tmp/x".into()));
        assert_eq!(a.device, "/dev/acq0-out");
        assert!(args("--bytes 1M --source zero --corrupt-at 5")
            .unwrap_err()
            .contains("--corrupt-at"));
        assert!(args("--bytes 1M --mode mmap").unwrap_err().contains("mmap"));
        assert!(args("--source pattern").unwrap_err().contains("--bytes"));
        assert!(args("--bytes 1M --source rel/path").is_err());
        let v = args("--bytes 1M --mode vmsplice --buffers 8 --gift").unwrap();
        assert!(v.mode == Mode::Vmsplice && v.buffers == 8 && v.gift);
        assert!(args("--bytes 1M --mode splice --gift")
            .unwrap_err()
            .contains("vmsplice"));
        assert!(args("--bytes 1M --mode vmsplice --gift --reuse-before-release").is_err());
        assert!(args("--bytes 1M --mode vmsplice --buffers 0").is_err());
    }

    #[test]
    fn corrupted_pattern_flips_one_byte() {
        let cfg = AcqConfig {
            pattern: regs::pattern::PRBS,
            seed: 7,
            ..AcqConfig::default()
        };
        let mut p = Producer {
            cfg,
            corrupt_at: Some(4096 + 10),
            file: None,
        };
        let mut buf = vec![0u8; 8192];
        p.fill(0, &mut buf).unwrap();
        assert_eq!(
            regs::pattern_check(cfg.pattern, 7, 0, &buf),
            Some(4096 + 10)
        );
    }
}

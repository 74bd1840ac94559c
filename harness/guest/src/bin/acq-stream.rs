//! acq-stream: stream from `/dev/acqN`, verify every byte against the card's pattern, and
//! print one JSON result line. `--direction out` plays a stream into `/dev/acqN-out`
//! instead and reports what the card verified (`acq_guest::playback`).
//!
//! ```text
//! acq-stream --device /dev/acq0 --mode read|splice --bytes 256M [--verify]
//!            [--sink /dev/null|FILE|tcp] [--tee /dev/null|FILE] [--pipe-size N]
//!            [--block B] [--ring-log2 L] [--rate R] [--pattern P] [--seed S]
//!            [--transfer dma|bar2 | --bar2] [--irq-count C] [--irq-time-us T] [--read-size N] [--nonblock]
//!            [--restart-at N] [--pause-at N --pause-ms MS] [--hold-at N --hold-s S]
//!            [--control ACTION@WHEN]... [--reopen-at N] [--timeout SECONDS]
//!            [--stop-on-signal] [--signal int|term|kill|hup|stop (--signal-at-ms MS | --signal-at-bytes N) [--signal-stop-ms MS]] [--raw]
//!            [--on-sink-error stop|retry|skip] [--sink-retries N] [--sink-retry-ms MS]
//!            [--direct] [--sink-base OFFSET]
//! ```
//!
//! `--pause-at` (mode read) stops reading once, for `--pause-ms`, after that many bytes:
//! the card fills the ring and runs out of buffers meanwhile.
//!
//! A block device sink (a capture disk) is written by position: disk offset = stream
//! offset − base, so a stretch the card lost stays a hole of the same size on the disk.
//! Every write error of a disk (or of a file with `--on-sink-error`/`--direct`) is handled
//! by the `--on-sink-error` policy and accounted to the byte in `sink_io` (module
//! `acq_guest::sinkio`, docs/sink.md "Consumer behaviour").
//!
//! Verification works by stream offset (docs/driver.md): the offset of the next byte is
//! tracked; after read() or splice() fails with EPIPE (overflow) or EIO, and after a
//! restart, the driver's statistics (`read_offset`) tell where the stream continues.
//! Every such point starts a *segment* (sink position, stream offset); a copy of the
//! stream in a sink is verified segment by segment.
//!
//! Mode `splice` moves the stream device -> pipe -> sink with splice() and never sees the
//! data, so `--verify` checks the copies instead (docs/driver.md, "acq-stream"):
//! a file sink (and a `--tee` file) is re-read and verified after the stream; the `tcp`
//! sink's receiving thread verifies what arrives; with the /dev/null sink the device pipe
//! is tee()d into a second pipe whose read end is read and verified.
//!
//! `--transfer bar2` (or `--bar2`) selects the card's BAR2 streaming mode (no DMA; the
//! driver copies each block out of BAR2) for this and later sessions, `--transfer dma`
//! goes back to DMA; without either the card keeps its mode.
//!
//! `--raw` reads any file (such as /dev/zero) with the same read/splice loop: no ioctls,
//! no verification (the in-guest peer of the benchmark).
//!
//! SIGUSR1 is caught without SA_RESTART, so it interrupts a blocked read() (EINTR or a
//! short count): the tests use it. `--signal` sends a signal from outside at a time or
//! byte offset (module `signaler`: a forked helper, which reports how long this process
//! took to die).
//!
//! `--control ACTION@WHEN` (repeatable; modes read and splice, the /dev/null sink) has a
//! second process that shares this one's open file do STOP, START, RESET, SET_CONFIG or a
//! second open() at a time or byte count (module `controller`). A read() or splice() that
//! then returns 0 ended the session (docs/driver.md): the stream goes on in the next one,
//! and each call's data is placed by the driver's `read_offset` (a new session's first
//! data must start at offset 0: `misplaced` counts the calls where it did not). `--reopen-at N` closes the device after
//! N bytes and opens it again (a new session).
//!
//! Exit status: 0 ok, 1 verification or I/O failure, 2 bad arguments.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use acq_guest::acqdev::{self, AcqDev};
use acq_guest::controller::{self, Controller};
use acq_guest::regs;
use acq_guest::signaler;
use acq_guest::sinkio::{self, AlignedBuf, Failure, Flow, Policy, SinkIo};
use acq_guest::uapi;
use acq_guest::uapi::{AcqConfig, AcqStats};

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Splice,
    Mmap,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Splice => "splice",
            Mode::Mmap => "mmap",
        }
    }
}

/// Where the stream goes.
#[derive(Clone, PartialEq, Eq)]
enum SinkSpec {
    Null,
    File(String),
    /// A TCP connection over loopback to a receiving thread of this process.
    Tcp,
}

impl SinkSpec {
    fn parse(s: &str) -> Result<SinkSpec, String> {
        match s {
            "" => Err("empty sink".into()),
            "/dev/null" | "null" => Ok(SinkSpec::Null),
            "tcp" => Ok(SinkSpec::Tcp),
            p if p.starts_with('/') => Ok(SinkSpec::File(p.into())),
            other => Err(format!(
                "bad sink {other:?} (expected /dev/null, an absolute file path, or tcp)"
            )),
        }
    }

    fn name(&self) -> String {
        match self {
            SinkSpec::Null => "/dev/null".into(),
            SinkSpec::File(p) => p.clone(),
            SinkSpec::Tcp => "tcp".into(),
        }
    }
}

struct Args {
    device: String,
    mode: Mode,
    raw: bool,
    bytes: u64,
    verify: bool,
    sink: SinkSpec,
    tee: Option<SinkSpec>,
    pipe_size: Option<usize>,
    block: Option<u32>,
    ring_log2: Option<u32>,
    transfer: Option<String>,
    rate: Option<u64>,
    pattern: Option<u32>,
    seed: Option<u64>,
    irq_count: Option<u32>,
    irq_time_us: Option<u32>,
    read_size: usize,
    nonblock: bool,
    progress: bool,
    restart_at: Option<u64>,
    pause_at: Option<u64>,
    pause_ms: u64,
    hold_at: Option<u64>,
    hold_s: f64,
    timeout: Option<f64>,
    stop_on_signal: bool,
    /// `--signal NAME` with `--signal-at-ms` or `--signal-at-bytes` (and `--signal-stop-ms`).
    signal: Option<signaler::Plan>,
    /// `--control`: actions of a second process sharing the file.
    controls: Vec<controller::Planned>,
    /// `--reopen-at`: close and open the device again after this many bytes.
    reopen_at: Option<u64>,
    /// Capture what the card's playback channel receives (ACQ_CFG_LOOPBACK).
    loopback: bool,
    sink_opts: SinkOpts,
}

/// The sink-error options (module `sinkio`).
#[derive(Clone, Copy)]
struct SinkOpts {
    /// `--on-sink-error`; `None`: not given (`stop` for a disk).
    policy: Option<Policy>,
    retries: u32,
    retry_ms: u64,
    direct: bool,
    base: Option<u64>,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-stream: {msg}");
    eprintln!(
        "usage: acq-stream [--direction in] --device /dev/acqN --mode read|splice --bytes N [--verify] \
         [--sink /dev/null|FILE|tcp] [--tee /dev/null|FILE] [--pipe-size N] \
         [--block B] [--ring-log2 L] [--rate R] [--pattern counter|prbs|sine[:CH]|N] [--seed S] \
         [--transfer dma|bar2 | --bar2] [--irq-count C] [--irq-time-us T] [--read-size N] [--nonblock] \
         [--progress] [--restart-at N] \
         [--hold-at N [--hold-s S]] [--timeout SECONDS] [--stop-on-signal] [--raw] [--loopback] \
         [--on-sink-error stop|retry|skip] [--sink-retries N] [--sink-retry-ms MS] [--direct] \
         [--sink-base OFFSET]\n\
         or:    acq-stream --direction out ... (see acq_guest::playback)"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: "/dev/acq0".into(),
        mode: Mode::Read,
        raw: false,
        bytes: 0,
        verify: false,
        sink: SinkSpec::Null,
        tee: None,
        pipe_size: None,
        block: None,
        ring_log2: None,
        transfer: None,
        rate: None,
        pattern: None,
        seed: None,
        irq_count: None,
        irq_time_us: None,
        read_size: 1 << 20,
        nonblock: false,
        progress: false,
        restart_at: None,
        controls: Vec::new(),
        reopen_at: None,
        pause_at: None,
        pause_ms: 1000,
        hold_at: None,
        hold_s: 2.0,
        timeout: None,
        stop_on_signal: false,
        signal: None,
        loopback: false,
        sink_opts: SinkOpts {
            policy: None,
            retries: 3,
            retry_ms: 50,
            direct: false,
            base: None,
        },
    };
    let mut mode = None;
    let (mut sig, mut sig_when, mut sig_stop_ms) = (None, None, 1000u64);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(opt) = it.next() {
        let mut val = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let size = |name: &str, v: String| -> Result<u64, String> {
            acqdev::parse_size(&v).ok_or_else(|| format!("bad value for {name}: {v:?}"))
        };
        let small = |name: &str, v: u64| -> Result<u32, String> {
            u32::try_from(v).map_err(|_| format!("{name} too large: {v}"))
        };
        let secs = |name: &str, v: String| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|t| *t > 0.0 && t.is_finite())
                .ok_or_else(|| format!("bad {name} {v:?}"))
        };
        match opt.as_str() {
            "--device" => a.device = val(opt)?,
            "--direction" => {
                let d = val(opt)?;
                if d != "in" {
                    return Err(format!("--direction must be in or out, not {d:?}"));
                }
            }
            "--mode" => mode = Some(val(opt)?),
            "--raw" => a.raw = true,
            "--bytes" => a.bytes = size(opt, val(opt)?)?,
            "--verify" => a.verify = true,
            "--sink" => a.sink = SinkSpec::parse(&val(opt)?)?,
            "--tee" => a.tee = Some(SinkSpec::parse(&val(opt)?)?),
            "--pipe-size" => {
                let v = size(opt, val(opt)?)?;
                if !(4096..=(1 << 30)).contains(&v) {
                    return Err(format!("--pipe-size must be 4K .. 1G, not {v}"));
                }
                a.pipe_size = Some(v as usize);
            }
            "--block" => a.block = Some(small(opt, size(opt, val(opt)?)?)?),
            "--ring-log2" => a.ring_log2 = Some(small(opt, size(opt, val(opt)?)?)?),
            "--transfer" => {
                let v = val(opt)?;
                acqdev::set_transfer(&mut AcqConfig::default(), &v)?;
                a.transfer = Some(v);
            }
            "--bar2" => a.transfer = Some("bar2".into()),
            "--rate" => a.rate = Some(size(opt, val(opt)?)?),
            "--pattern" => {
                let v = val(opt)?;
                a.pattern =
                    Some(acqdev::parse_pattern(&v).ok_or_else(|| format!("bad pattern {v:?}"))?)
            }
            "--seed" => a.seed = Some(size(opt, val(opt)?)?),
            "--irq-count" => a.irq_count = Some(small(opt, size(opt, val(opt)?)?)?),
            "--irq-time-us" => a.irq_time_us = Some(small(opt, size(opt, val(opt)?)?)?),
            "--read-size" => {
                let v = size(opt, val(opt)?)?;
                if v == 0 || v > (1 << 30) {
                    return Err(format!("--read-size must be 1 .. 1G, not {v}"));
                }
                a.read_size = v as usize;
            }
            "--nonblock" => a.nonblock = true,
            "--loopback" => a.loopback = true,
            "--progress" => a.progress = true,
            "--stop-on-signal" => a.stop_on_signal = true,
            "--signal" => sig = Some(signaler::Sig::parse(&val(opt)?)?),
            "--signal-at-ms" => sig_when = Some(signaler::When::Ms(size(opt, val(opt)?)?)),
            "--signal-at-bytes" => sig_when = Some(signaler::When::Bytes(size(opt, val(opt)?)?)),
            "--signal-stop-ms" => sig_stop_ms = size(opt, val(opt)?)?,
            "--restart-at" => a.restart_at = Some(size(opt, val(opt)?)?),
            "--control" => a.controls.push(controller::parse(&val(opt)?)?),
            "--reopen-at" => a.reopen_at = Some(size(opt, val(opt)?)?),
            "--hold-at" => a.hold_at = Some(size(opt, val(opt)?)?),
            "--hold-s" => a.hold_s = secs(opt, val(opt)?)?,
            "--pause-at" => a.pause_at = Some(size(opt, val(opt)?)?),
            "--pause-ms" => a.pause_ms = size(opt, val(opt)?)?,
            "--timeout" => a.timeout = Some(secs(opt, val(opt)?)?),
            "--on-sink-error" => {
                let v = val(opt)?;
                a.sink_opts.policy = Some(Policy::parse(&v).ok_or_else(|| {
                    format!("bad --on-sink-error {v:?} (expected stop, retry or skip)")
                })?)
            }
            "--sink-retries" => a.sink_opts.retries = small(opt, size(opt, val(opt)?)?)?,
            "--sink-retry-ms" => a.sink_opts.retry_ms = size(opt, val(opt)?)?,
            "--direct" => a.sink_opts.direct = true,
            "--sink-base" => a.sink_opts.base = Some(size(opt, val(opt)?)?),
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.mode = match mode.as_deref() {
        Some("read") => Mode::Read,
        Some("splice") => Mode::Splice,
        Some("mmap") => Mode::Mmap,
        Some(m) => return Err(format!("mode {m:?} is not supported (read, splice, mmap)")),
        None => return Err("--mode is required (read, splice, mmap)".into()),
    };
    if a.bytes == 0 {
        return Err("--bytes N (N > 0) is required".into());
    }
    if a.raw {
        let dev_only = [
            (a.verify, "--verify"),
            (a.block.is_some(), "--block"),
            (a.ring_log2.is_some(), "--ring-log2"),
            (a.transfer.is_some(), "--transfer/--bar2"),
            (a.rate.is_some(), "--rate"),
            (a.pattern.is_some(), "--pattern"),
            (a.seed.is_some(), "--seed"),
            (a.irq_count.is_some(), "--irq-count"),
            (a.irq_time_us.is_some(), "--irq-time-us"),
            (a.restart_at.is_some(), "--restart-at"),
            (!a.controls.is_empty(), "--control"),
            (a.reopen_at.is_some(), "--reopen-at"),
            (a.loopback, "--loopback"),
        ];
        if let Some((_, name)) = dev_only.iter().find(|(set, _)| *set) {
            return Err(format!("{name} needs the card (not --raw)"));
        }
    }
    if a.raw && a.mode == Mode::Mmap {
        return Err("--mode mmap needs the card (not --raw)".into());
    }
    if a.tee.is_some() && a.mode != Mode::Splice {
        return Err("--tee needs --mode splice".into());
    }
    if matches!(a.tee, Some(SinkSpec::Tcp)) {
        return Err("--tee takes /dev/null or a file".into());
    }
    if a.pipe_size.is_some() && a.mode != Mode::Splice {
        return Err("--pipe-size needs --mode splice".into());
    }
    if a.hold_at.is_some() && a.mode != Mode::Splice {
        return Err("--hold-at needs --mode splice".into());
    }
    if a.pause_at.is_some() && a.mode != Mode::Read {
        return Err("--pause-at needs --mode read".into());
    }
    if !a.controls.is_empty() {
        // A RESET clears the driver's statistics, which a file or disk sink's account is
        // checked against: the controller streams to /dev/null.
        if a.mode == Mode::Mmap {
            return Err("--control needs --mode read or splice".into());
        }
        if a.sink != SinkSpec::Null || a.tee.is_some() {
            return Err("--control needs the /dev/null sink and no --tee".into());
        }
        if a.reopen_at.is_some() {
            return Err(
                "--reopen-at with --control: the controller shares the file, so a close \
                 would not end the session"
                    .into(),
            );
        }
    }
    if a.reopen_at.is_some() && a.mode == Mode::Mmap {
        return Err("--reopen-at needs --mode read or splice".into());
    }
    if a.pause_ms > 60_000 {
        return Err("--pause-ms at most 60000".into());
    }
    a.signal = match (sig, sig_when) {
        (Some(sig), Some(when)) if sig_stop_ms <= 60_000 => Some(signaler::Plan {
            sig,
            when,
            stop_ms: sig_stop_ms,
        }),
        (Some(_), Some(_)) => return Err("--signal-stop-ms at most 60000".into()),
        (None, None) => None,
        _ => {
            return Err(
                "--signal needs --signal-at-ms or --signal-at-bytes, and they need --signal".into(),
            )
        }
    };
    let so = &a.sink_opts;
    if !matches!(a.sink, SinkSpec::File(_))
        && (so.policy.is_some() || so.direct || so.base.is_some())
    {
        return Err("--on-sink-error, --direct and --sink-base need a file or disk --sink".into());
    }
    if so.retry_ms > 60_000 || so.retries > 1000 {
        return Err("--sink-retries at most 1000, --sink-retry-ms at most 60000".into());
    }
    if let (SinkSpec::File(s), Some(SinkSpec::File(t))) = (&a.sink, &a.tee) {
        if s == t {
            return Err("--sink and --tee must be different files".into());
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv
        .windows(2)
        .any(|w| w[0] == "--direction" && w[1] == "out")
    {
        return acq_guest::playback::main(&argv);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let context = serde_json::json!({ "device": args.device });
    acq_guest::result::finish(run(&args), context)
}

fn install_sigusr1() {
    // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic. No
    // SA_RESTART: the signal interrupts a blocked read().
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// Where each stretch of the stream landed in a sink: `(sink position, stream offset)`,
/// in order. A new segment starts at the first byte and after every gap (overflow, error,
/// restart).
type Segments = Arc<Mutex<Vec<(u64, u64)>>>;

/// Outcome of verifying a copy of the stream.
#[derive(Default)]
struct Check {
    bytes: u64,
    verified: u64,
    mismatches: u64,
    first_mismatch: Option<serde_json::Value>,
}

impl Check {
    /// Verifies `data`, found at sink position `pos`, against the pattern.
    fn verify(&mut self, cfg: &AcqConfig, segs: &[(u64, u64)], pos: u64, data: &[u8]) {
        self.bytes += data.len() as u64;
        let mut done = 0usize;
        while done < data.len() {
            let p = pos + done as u64;
            // The segment holding `p`, and where the next one starts.
            let i = segs.partition_point(|s| s.0 <= p);
            let Some(&(seg_pos, seg_off)) = i.checked_sub(1).and_then(|i| segs.get(i)) else {
                self.mismatch(serde_json::json!({ "sink_pos": p, "why": "no segment" }));
                return;
            };
            let end = segs
                .get(i)
                .map(|s| (s.0 - p).min((data.len() - done) as u64) as usize)
                .unwrap_or(data.len() - done);
            let chunk = &data[done..done + end];
            let off = seg_off + (p - seg_pos);
            match regs::pattern_check(cfg.pattern, cfg.seed, off, chunk) {
                Some(j) => {
                    let at = off + j as u64;
                    self.mismatch(serde_json::json!({
                        "sink_pos": p + j as u64,
                        "stream_offset": at,
                        "got": chunk[j],
                        "want": regs::pattern_byte(cfg.pattern, cfg.seed, at),
                    }));
                }
                None => self.verified += chunk.len() as u64,
            }
            done += end;
        }
    }

    fn mismatch(&mut self, what: serde_json::Value) {
        self.mismatches += 1;
        if self.first_mismatch.is_none() {
            self.first_mismatch = Some(what);
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "bytes": self.bytes,
            "verified_bytes": self.verified,
            "errors": self.mismatches,
            "first_mismatch": self.first_mismatch,
        })
    }
}

/// Re-reads a sink file and verifies it segment by segment.
fn verify_file(path: &str, cfg: &AcqConfig, segs: &[(u64, u64)]) -> Result<Check, String> {
    let mut f = File::open(path).map_err(|e| format!("re-open {path}: {e}"))?;
    // The file was synced: drop its clean pages from the page cache so that the check reads
    // what the disk holds (no effect on tmpfs).
    // SAFETY: an advice call on our own descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut buf = vec![0u8; 1 << 20];
    let mut check = Check::default();
    let mut pos = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("re-read {path}: {e}"))?;
        if n == 0 {
            return Ok(check);
        }
        check.verify(cfg, segs, pos, &buf[..n]);
        pos += n as u64;
    }
}

/// Most extents [`file_extents`] reports (a sequentially written file has a handful).
const MAX_EXTENTS: usize = 4096;

/// The file's extents as (logical, physical, length) byte triples, from `FS_IOC_FIEMAP`
/// (synced first). `None` where the file system has no block mapping (tmpfs) or the file
/// has more than [`MAX_EXTENTS`] extents.
fn file_extents(path: &str) -> Option<Vec<(u64, u64, u64)>> {
    // struct fiemap (32 bytes) followed by struct fiemap_extent (56 bytes) each, as u64s.
    const BATCH: usize = 256;
    const HEADER: usize = 4;
    const EXTENT: usize = 7;
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B; // _IOWR('f', 11, struct fiemap)
    const FLAG_SYNC: u64 = 1;
    const EXTENT_LAST: u64 = 1;
    let f = File::open(path).ok()?;
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut buf = vec![0u64; HEADER + BATCH * EXTENT];
        buf[0] = start; // fm_start
        buf[1] = u64::MAX; // fm_length: to the end
        buf[2] = FLAG_SYNC; // fm_flags (low half), fm_mapped_extents (high half) = 0
        buf[3] = BATCH as u64; // fm_extent_count (low half), fm_reserved = 0
                               // SAFETY: FS_IOC_FIEMAP reads the header and writes at most fm_extent_count
                               // extents after it, all inside `buf`, which lives across the call.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, buf.as_mut_ptr()) };
        if r != 0 {
            return None;
        }
        let mapped = (buf[2] >> 32) as usize;
        if mapped == 0 {
            return Some(out);
        }
        for e in buf[HEADER..].chunks(EXTENT).take(mapped.min(BATCH)) {
            let (logical, physical, len, flags) = (e[0], e[1], e[2], e[5] & 0xFFFF_FFFF);
            out.push((logical, physical, len));
            if out.len() > MAX_EXTENTS {
                return None;
            }
            start = logical + len;
            if flags & EXTENT_LAST != 0 {
                return Some(out);
            }
        }
    }
}

/// Brings the loopback interface up (the guest's init does not), for the TCP sink.
fn loopback_up() {
    // SAFETY: plain socket and ioctl calls on a zeroed `ifreq` naming "lo".
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if s < 0 {
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *c as libc::c_char;
        }
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        }
        libc::close(s);
    }
}

/// An open sink. The TCP sink is a connection to a thread of this process that receives
/// (and, with `--verify`, verifies) everything.
struct Sink {
    spec: SinkSpec,
    file: Option<File>,
    tcp: Option<TcpStream>,
    receiver: Option<JoinHandle<Result<Check, String>>>,
    /// Positions, error policy and account (disks, and files with the sink options).
    io: Option<SinkIo>,
    direct: bool,
    /// O_DIRECT copy of unaligned data.
    bounce: Option<AlignedBuf>,
    /// Where the rest of a failed splice goes (the pipe must be emptied).
    devnull: Option<File>,
}

impl Sink {
    fn open(spec: &SinkSpec, verify: Option<(AcqConfig, Segments)>) -> Result<Sink, String> {
        let mut sink = Sink {
            spec: spec.clone(),
            file: None,
            tcp: None,
            receiver: None,
            io: None,
            direct: false,
            bounce: None,
            devnull: None,
        };
        match spec {
            SinkSpec::Null => {
                sink.file = Some(File::create("/dev/null").map_err(|e| format!("/dev/null: {e}"))?)
            }
            SinkSpec::File(p) => {
                sink.file = Some(File::create(p).map_err(|e| format!("create {p}: {e}"))?)
            }
            SinkSpec::Tcp => {
                loopback_up();
                let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
                let addr = l.local_addr().map_err(|e| format!("listen: {e}"))?;
                sink.receiver = Some(std::thread::spawn(move || -> Result<Check, String> {
                    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut check = Check::default();
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) => return Ok(check),
                            Ok(n) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(format!("tcp receive: {e}")),
                        };
                        match &verify {
                            Some((cfg, segs)) => {
                                let segs = segs.lock().map_err(|_| "segments lock")?.clone();
                                let pos = check.bytes;
                                check.verify(cfg, &segs, pos, &buf[..n]);
                            }
                            None => check.bytes += n as u64,
                        }
                    }
                }));
                let c = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
                sink.tcp = Some(c);
            }
        }
        Ok(sink)
    }

    fn fd(&self) -> RawFd {
        match (&self.file, &self.tcp) {
            (Some(f), _) => f.as_raw_fd(),
            (None, Some(t)) => t.as_raw_fd(),
            _ => -1,
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match (&mut self.file, &mut self.tcp) {
            (Some(f), _) => f.write_all(data),
            (None, Some(t)) => t.write_all(data),
            _ => Ok(()),
        }
    }

    /// Takes over the writes of a disk (or of a file given sink options): see `sinkio`.
    fn attach_io(&mut self, o: &SinkOpts, mode: Mode) -> Result<(), String> {
        use std::os::unix::fs::FileTypeExt;
        let (Some(f), SinkSpec::File(path)) = (&self.file, &self.spec) else {
            return Ok(());
        };
        let blk = f
            .metadata()
            .map_err(|e| format!("stat {path}: {e}"))?
            .file_type()
            .is_block_device();
        if !blk && o.policy.is_none() && !o.direct && o.base.is_none() {
            return Ok(());
        }
        if o.base.is_some() && !blk {
            return Err(format!(
                "--sink-base needs a block device sink; {path} is not one"
            ));
        }
        if o.direct {
            // SAFETY: fcntl on our own descriptor.
            let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
            let set = if fl < 0 {
                -1
            } else {
                // SAFETY: as above; O_DIRECT is one of the flags F_SETFL may change.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_DIRECT) }
            };
            if set < 0 {
                return Err(format!(
                    "O_DIRECT on {path}: {} (the file system may not support it)",
                    std::io::Error::last_os_error()
                ));
            }
        }
        let policy = o.policy.unwrap_or(Policy::Stop);
        if mode == Mode::Splice && policy == Policy::Retry && !o.direct {
            // A buffered splice has moved the pages out of the pipe into the page cache by
            // the time write-back fails: there is nothing left to write again.
            return Err(
                "--on-sink-error retry with --mode splice needs --direct (a buffered splice \
                 no longer has the data when write-back fails)"
                    .into(),
            );
        }
        self.direct = o.direct;
        self.io = Some(SinkIo::new(sinkio::Settings {
            policy,
            retries: o.retries,
            backoff: Duration::from_millis(o.retry_ms),
            positional: blk,
            base: o.base,
            sync_each: !o.direct,
        }));
        Ok(())
    }

    /// True when the sink is written by stream position (a disk checked on the host).
    fn positional(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.set.positional)
    }

    /// Writes `data`, stream offset `off`. `Flow::Stop`: the sink failed and the policy
    /// says stop.
    fn put(&mut self, off: u64, data: &[u8]) -> Result<Flow, String> {
        let fd = self.fd();
        let Some(io) = self.io.as_mut() else {
            self.write_all(data)
                .map_err(|e| format!("write sink: {e}"))?;
            return Ok(Flow::Continue);
        };
        let direct = self.direct;
        let sync_each = io.set.sync_each;
        let data: &[u8] = if direct && !AlignedBuf::aligned(data) {
            if self
                .bounce
                .as_mut()
                .is_none_or(|b| b.as_mut_slice().len() < data.len())
            {
                self.bounce = Some(AlignedBuf::new(data.len()));
            }
            let b = self
                .bounce
                .as_mut()
                .map(|b| b.as_mut_slice())
                .unwrap_or_default();
            b[..data.len()].copy_from_slice(data);
            &b[..data.len()]
        } else {
            data
        };
        io.put(off, data.len() as u64, |pos, done| {
            let n = sinkio::pwrite(fd, pos, &data[done as usize..])
                .map_err(|e| io_failure(e, direct, pos))?;
            if sync_each && n > 0 {
                sinkio::sync_range(fd, pos, n).map_err(Failure::Io)?;
            }
            Ok(n)
        })
    }

    /// Moves `n` bytes (stream offset `off`) from pipe `pipe` to the sink.
    fn splice_from(&mut self, pipe: RawFd, off: u64, n: usize) -> Result<Flow, String> {
        let fd = self.fd();
        let Some(io) = self.io.as_mut() else {
            drain(pipe, fd, n, &self.spec.name())?;
            return Ok(Flow::Continue);
        };
        let direct = self.direct;
        let sync_each = io.set.sync_each;
        // What left the pipe: after a failure the rest must be taken out too.
        let mut taken = 0usize;
        let flow = io.put(off, n as u64, |pos, done| {
            let k = sinkio::splice_at(pipe, fd, pos, n - done as usize)
                .map_err(|e| io_failure(e, direct, pos))?;
            taken += k;
            if sync_each && k > 0 {
                sinkio::sync_range(fd, pos, k as u64).map_err(Failure::Io)?;
            }
            Ok(k as u64)
        })?;
        if taken < n {
            if self.devnull.is_none() {
                self.devnull =
                    Some(File::create("/dev/null").map_err(|e| format!("/dev/null: {e}"))?);
            }
            let null = self.devnull.as_ref().map_or(-1, |f| f.as_raw_fd());
            drain(pipe, null, n - taken, "/dev/null")?;
        }
        Ok(flow)
    }

    /// Closes the sink; for TCP, waits for the receiver and returns its check. A sink
    /// with an account is synced under its policy (a failure is reported, not fatal).
    fn finish(mut self) -> Result<(Option<Check>, Option<SinkIo>), String> {
        if let (Some(f), Some(io)) = (&self.file, self.io.as_mut()) {
            io.final_sync(|| f.sync_all());
            self.file = None;
        }
        if let Some(f) = self.file.take() {
            f.sync_all().or_else(|e| {
                // /dev/null cannot be synced; a file can.
                if matches!(self.spec, SinkSpec::Null) {
                    Ok(())
                } else {
                    Err(format!("sync {}: {e}", self.spec.name()))
                }
            })?;
        }
        drop(self.tcp.take());
        let check = match self.receiver.take() {
            Some(h) => h
                .join()
                .map_err(|_| "tcp receiver panicked".to_string())?
                .map(Some)?,
            None => None,
        };
        Ok((check, self.io.take()))
    }
}

/// A failed sink write: EINVAL under O_DIRECT is a usage error (alignment) no policy fixes.
fn io_failure(e: std::io::Error, direct: bool, pos: u64) -> Failure {
    if direct && e.raw_os_error() == Some(libc::EINVAL) {
        Failure::Fatal(format!(
            "O_DIRECT write at sink position {pos}: {e} (offsets, lengths and buffers must be \
             whole logical blocks of the disk)"
        ))
    } else {
        Failure::Io(e)
    }
}

/// The stream source: the card, or any file with `--raw`.
enum Source {
    Card(AcqDev),
    Raw(File),
}

impl Source {
    fn fd(&self) -> RawFd {
        match self {
            Source::Card(d) => d.raw_fd(),
            Source::Raw(f) => f.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Card(d) => d.read(buf),
            Source::Raw(f) => f.read(buf),
        }
    }

    fn card(&self) -> Option<&AcqDev> {
        match self {
            Source::Card(d) => Some(d),
            Source::Raw(_) => None,
        }
    }

    fn stats(&self) -> Result<Option<AcqStats>, String> {
        match self {
            Source::Card(d) => d.stats().map(Some).map_err(|e| format!("GET_STATS: {e}")),
            Source::Raw(_) => Ok(None),
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A pipe, both ends.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
}

impl Pipe {
    fn new(size: Option<usize>) -> Result<Pipe, String> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: pipe2 returned two new descriptors we own.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if let Some(s) = size {
            // SAFETY: fcntl on our own descriptor.
            if unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, s as libc::c_int) } < 0 {
                return Err(format!(
                    "F_SETPIPE_SZ {s}: {} (see /proc/sys/fs/pipe-max-size)",
                    std::io::Error::last_os_error()
                ));
            }
        }
        // SAFETY: fcntl on our own descriptor.
        let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
        Ok(Pipe {
            r,
            w,
            size: usize::try_from(got).unwrap_or(65536),
        })
    }
}

/// splice() without offsets.
fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> std::io::Result<usize> {
    // SAFETY: plain system call on descriptors; null offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves exactly `len` bytes out of pipe `from` into `to`.
fn drain(from: RawFd, to: RawFd, mut len: usize, what: &str) -> Result<(), String> {
    while len > 0 {
        match splice(from, to, len, libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE) {
            Ok(0) => return Err(format!("splice to {what}: wrote nothing")),
            Ok(n) => len -= n.min(len),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(format!("splice to {what}: {e}")),
        }
    }
    Ok(())
}

/// Duplicates exactly `len` bytes of pipe `from` into pipe `to` (tee()).
fn tee_all(from: RawFd, to: RawFd, len: usize) -> Result<(), String> {
    let mut done = 0usize;
    while done < len {
        // SAFETY: plain system call on two pipes.
        let n = unsafe { libc::tee(from, to, len - done, 0) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(format!("tee: {}", std::io::Error::last_os_error()));
        }
        if n == 0 {
            return Err("tee: duplicated nothing".into());
        }
        // tee() starts again at the head of the pipe: everything in `from` is this chunk,
        // and `to` was empty, so a short tee can only mean `to` is full.
        done = n as usize;
        if done < len {
            return Err(format!(
                "tee: only {done} of {len} bytes fit the second pipe"
            ));
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes from `fd`.
fn read_exact_fd(fd: RawFd, buf: &mut [u8]) -> Result<(), String> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the buffer range is valid for writes.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(format!("read pipe: {}", std::io::Error::last_os_error()));
        }
        if n == 0 {
            return Err("read pipe: end of file".into());
        }
        done += n as usize;
    }
    Ok(())
}

/// CPU time of the process so far (user, system), all threads.
fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    install_sigusr1();
    // SAFETY: nothing has started a thread yet: acq-stream's threads (a tee reader, a
    // TCP sink's peer) start later in this function.
    let signaler = a
        .signal
        .map(|p| unsafe { signaler::Signaler::start(p) })
        .transpose()?;
    let mut src = if a.raw {
        Source::Raw(File::open(&a.device).map_err(|e| format!("open {}: {e}", a.device))?)
    } else {
        Source::Card(
            AcqDev::open(&a.device, a.nonblock).map_err(|e| format!("open {}: {e}", a.device))?,
        )
    };
    let mut cfg = AcqConfig::default();
    if let Some(dev) = src.card() {
        cfg = dev.config().map_err(|e| format!("GET_CONFIG: {e}"))?;
        if let Some(v) = a.block {
            cfg.block_size = v;
        }
        if let Some(v) = a.ring_log2 {
            cfg.ring_log2 = v;
        }
        if let Some(t) = &a.transfer {
            acqdev::set_transfer(&mut cfg, t)?;
        }
        if let Some(v) = a.rate {
            cfg.rate = v;
        }
        if let Some(v) = a.pattern {
            cfg.pattern = v;
        }
        if let Some(v) = a.seed {
            cfg.seed = v;
        }
        if let Some(v) = a.irq_count {
            cfg.irq_mod_count = v;
        }
        if let Some(v) = a.irq_time_us {
            cfg.irq_mod_time_us = v;
        }
        // Loopback is asked for per stream; the transfer mode (BAR2 bit) persists.
        cfg.flags &= !acq_guest::uapi::ACQ_CFG_LOOPBACK;
        if a.loopback {
            cfg.flags |= acq_guest::uapi::ACQ_CFG_LOOPBACK;
        }
        dev.set_config(&cfg).map_err(|e| {
            format!(
                "SET_CONFIG {}: {e}{}",
                acqdev::config_json(&cfg),
                acqdev::bar2_hint(&cfg, &e)
            )
        })?;
    }
    let controller = match src.card() {
        Some(dev) if !a.controls.is_empty() => {
            // SAFETY: still one thread (the sinks' threads start below); the helper is
            // forked after the open so that it shares the file.
            Some(unsafe { Controller::start(a.controls.clone(), dev, &a.device) }?)
        }
        _ => None,
    };
    let segs: Segments = Arc::new(Mutex::new(Vec::new()));
    let tcp_verify = a.verify.then(|| (cfg, segs.clone()));
    let mut sink = Sink::open(&a.sink, tcp_verify)?;
    sink.attach_io(&a.sink_opts, a.mode)?;
    let positional = sink.positional();
    let mut tee_sink = match &a.tee {
        Some(t) => Some(Sink::open(t, None)?),
        None => None,
    };

    // Progress on a terminal rewrites one line; forced (--progress, for the harness, which
    // relays output line by line) it prints a line per second.
    let tty = std::io::stderr().is_terminal();
    let progress = tty || a.progress;
    let mut st = State {
        errnos: BTreeMap::new(),
        errno_events: Vec::new(),
        start: Instant::now(),
        last_progress: Instant::now(),
        total: 0,
        inline: Check::default(),
        offset: 0,
        session: None,
        short_reads: 0,
        restarted: false,
        reopened: false,
        session_ends: 0,
        misplaced: 0,
        seen_overflows: src.stats()?.map(|s| s.overflows),
        controller,
        timed_out: false,
        fatal: None,
        stopped_by_signal: false,
        held: false,
        segs: segs.clone(),
        signaler,
    };
    let cpu0 = cpu_times();
    let mut method = "read";
    let mut pipe_size = None;
    match a.mode {
        Mode::Read => read_loop(a, &cfg, &mut src, &mut sink, &mut st, tty, progress)?,
        Mode::Mmap => {
            method = "mmap";
            mmap_loop(a, &cfg, &src, &mut sink, &mut st, tty, progress)?
        }
        Mode::Splice => {
            let p1 = Pipe::new(a.pipe_size)?;
            pipe_size = Some(p1.size);
            // The second pipe: the tee sink's, or the one read back for verification when
            // the sink is /dev/null and there is no tee file to re-read.
            let inline =
                a.verify && a.sink == SinkSpec::Null && !matches!(a.tee, Some(SinkSpec::File(_)));
            let p2 = if inline || tee_sink.is_some() {
                Some(Pipe::new(Some(p1.size))?)
            } else {
                None
            };
            method = if !a.verify {
                "none"
            } else if inline {
                "tee-pipe-read"
            } else if a.sink == SinkSpec::Tcp {
                "tcp-receiver"
            } else if positional {
                // The capture disk checks every write on the host (docs/sink.md).
                "disk-host"
            } else {
                "sink-reread"
            };
            splice_loop(
                a,
                &cfg,
                &mut src,
                &mut sink,
                tee_sink.as_ref(),
                &p1,
                p2.as_ref(),
                inline,
                &mut st,
                tty,
                progress,
            )?;
        }
    }
    if sink.io.is_some() {
        // A disk stream stops the card as soon as it stops taking data (its byte count,
        // or the sink said stop): what the card loses from now on is no part of this
        // capture, and the card's loss counters then match the consumer's gaps.
        if let Some(d) = src.card() {
            let _ = d.stop();
        }
    }
    // The helper exits (it holds the file too) before the close below ends the session.
    let control = st.controller.as_mut().map(Controller::finish);
    let secs = st.start.elapsed().as_secs_f64();
    let cpu1 = cpu_times();
    if tty {
        eprintln!();
    }
    let stats = src.stats()?;
    // Finish the sinks and check the copies.
    let (tcp_check, sink_io) = sink.finish()?;
    if let Some(t) = tee_sink.take() {
        t.finish()?;
    }
    let segs_now = segs.lock().map_err(|_| "segments lock")?.clone();
    let mut copies = serde_json::Map::new();
    let mut copy_checks: Vec<Check> = Vec::new();
    if a.verify {
        if let Some(c) = tcp_check {
            copies.insert("tcp".into(), c.json());
            copy_checks.push(c);
        }
        let mut files = Vec::new();
        if a.mode == Mode::Splice && !positional {
            if let SinkSpec::File(p) = &a.sink {
                files.push(p.clone());
            }
        }
        if let Some(SinkSpec::File(p)) = &a.tee {
            files.push(p.clone());
        }
        for p in files {
            let c = verify_file(&p, &cfg, &segs_now)?;
            copies.insert(p, c.json());
            copy_checks.push(c);
        }
    }
    // What verified_bytes/errors report: what the consumer saw (read mode, or the
    // tee-pipe read back), else the sink copy (for a tee, every copy must be complete).
    let (verified, mismatches, first_mismatch) =
        if a.mode != Mode::Splice || method == "tee-pipe-read" {
            (
                st.inline.verified,
                st.inline.mismatches,
                st.inline.first_mismatch.clone(),
            )
        } else {
            let v = copy_checks.iter().map(|c| c.verified).min().unwrap_or(0);
            let e = copy_checks.iter().map(|c| c.mismatches).sum::<u64>();
            let f = copy_checks.iter().find_map(|c| c.first_mismatch.clone());
            (v, e, f)
        };
    let copies_ok = copy_checks
        .iter()
        .all(|c| c.mismatches == 0 && c.bytes == st.total && c.verified == st.total);
    let verify_ok = !a.verify
        || method == "disk-host"
        || (mismatches == 0 && copies_ok && verified == st.total);
    let ok = st.fatal.is_none()
        && st.misplaced == 0
        && sink_io.as_ref().is_none_or(SinkIo::clean)
        && mismatches == 0
        && verify_ok
        && !st.timed_out
        && (st.total >= a.bytes || st.stopped_by_signal);
    let mut report = serde_json::json!({
        "device": a.device,
        "mode": a.mode.name(),
        "raw": a.raw,
        "sink": a.sink.name(),
        "bytes": st.total,
        "seconds": secs,
        "mb_per_s": if secs > 0.0 { st.total as f64 / secs / 1e6 } else { 0.0 },
        "cpu_user_s": cpu1.0 - cpu0.0,
        "cpu_sys_s": cpu1.1 - cpu0.1,
        "verify": a.verify,
        "verify_method": if a.verify { method } else { "none" },
        "verified_bytes": verified,
        "errors": mismatches,
        "first_mismatch": first_mismatch,
        "overflows": stats.map(|s| s.overflows).unwrap_or(0),
        "lost_bytes": stats.map(|s| s.lost_bytes).unwrap_or(0),
        "errno": st.errnos,
        "errno_events": st.errno_events,
        "signals": SIGNALS.load(Ordering::Relaxed),
        "short_reads": st.short_reads,
        "restarted": st.restarted,
        "reopened": st.reopened,
        "session_ends": st.session_ends,
        "misplaced": st.misplaced,
        "held": st.held,
        "timed_out": st.timed_out,
        "stopped_by_signal": st.stopped_by_signal,
        "fatal": st.fatal,
        "segments": segs_now.len(),
        "copies": copies,
        "ok": ok,
    });
    if let Some(o) = report.as_object_mut() {
        if let Some(p) = pipe_size {
            o.insert("pipe_size".into(), p.into());
        }
        if let Some(t) = &a.tee {
            o.insert("tee".into(), t.name().into());
        }
        if let Some(c) = control {
            o.insert("control".into(), c);
        }
        if let Some(io) = &sink_io {
            let mut j = io.json();
            if let Some(m) = j.as_object_mut() {
                m.insert("direct".into(), a.sink_opts.direct.into());
            }
            o.insert("sink_io".into(), j);
        }
        if src.card().is_some() {
            o.insert("config".into(), acqdev::config_json(&cfg));
        }
        if let Some(s) = stats {
            o.insert("stats".into(), acqdev::stats_json(&s));
        }
        // Where a file's blocks landed (a file system on a capture disk), and which stream
        // offset each file position holds: a host holding the disk verifies the file there.
        if let SinkSpec::File(path) = &a.sink {
            if let Some(ext) = file_extents(path) {
                o.insert("extents".into(), serde_json::json!(ext));
                o.insert("segment_map".into(), serde_json::json!(segs_now));
            }
        }
    }
    Ok((report, ok))
}

/// How many errno events a result lists (the counts in `errno` are always complete).
const MAX_ERRNO_EVENTS: usize = 64;

/// Loop state shared by the read and splice loops.
struct State {
    errnos: BTreeMap<String, u64>,
    /// Where in the stream each errno came (the first [`MAX_ERRNO_EVENTS`]), so a scenario
    /// can check not only that an EIO came but that it came where the fault was injected.
    errno_events: Vec<serde_json::Value>,
    start: Instant,
    last_progress: Instant,
    total: u64,
    /// What the consumer itself saw and verified.
    inline: Check,
    /// Stream offset of the next byte.
    offset: u64,
    session: Option<u64>,
    short_reads: u64,
    restarted: bool,
    /// `--reopen-at` happened.
    reopened: bool,
    /// read()/splice() returned 0: a STOP or RESET (of the controller) ended the session.
    session_ends: u64,
    /// With a controller: calls whose data opened a new session anywhere but at offset 0.
    misplaced: u64,
    /// The driver's `overflows` when the consumer last read its statistics.
    seen_overflows: Option<u64>,
    /// `--control`: the second process.
    controller: Option<Controller>,
    timed_out: bool,
    fatal: Option<String>,
    stopped_by_signal: bool,
    held: bool,
    segs: Segments,
    /// `--signal` at a byte offset: told the bytes after each call.
    signaler: Option<signaler::Signaler>,
}

impl State {
    /// The next byte (sink position `total`) is stream offset `offset`: a new segment
    /// unless it continues the current one.
    fn mark(&mut self) {
        if let Ok(mut s) = self.segs.lock() {
            let continues = s
                .last()
                .is_some_and(|&(p, o)| o + (self.total - p) == self.offset);
            if !continues {
                s.push((self.total, self.offset));
            }
        }
    }

    /// Before the loop's next call: timeout.
    fn expired(&mut self, a: &Args) -> bool {
        if let Some(t) = a.timeout {
            if self.start.elapsed().as_secs_f64() > t {
                self.timed_out = true;
                return true;
            }
        }
        false
    }

    /// The first data of the session: take the offset from the driver.
    fn first_data(&mut self, src: &Source, n: usize) -> Result<(), String> {
        if self.session.is_none() {
            if let Some(s) = src.stats()? {
                let gap = self.gap_since(&s);
                self.session = Some(s.session);
                // A call that ended where a gap begins leaves `read_offset` past the gap
                // already (the next call reports it): the session's first data is at 0.
                self.offset = if gap {
                    0
                } else {
                    s.read_offset.saturating_sub(n as u64)
                };
            } else {
                self.session = Some(0);
            }
        }
        Ok(())
    }

    /// With a controller: where the `n` bytes one call returned lie in the stream. The
    /// consumer is the stream's only reader, so the driver's statistics after the call
    /// say: the same session with `read_offset` = `offset + n`, the data continues; a
    /// session the consumer had not read from, the call was its first (a STOP or RESET
    /// ended the old one), so `read_offset` must be `n` and the data starts at 0 (any
    /// other `read_offset` is counted in `misplaced`: the driver let a session go on, or
    /// skipped data, behind a new session number); `read_offset` below `n`, the call read
    /// the old session and a STOP and START came between it and GET_STATS, so the data
    /// continues at `offset` and verification judges it.
    ///
    /// Two things blur that. A call that ended where a gap begins: the driver counted the
    /// overflow and moved `read_offset` past the gap already (the next call reports it as
    /// EPIPE), so a new session's data is at 0 whatever `read_offset` says. And RESET
    /// clears the statistics: the next session may get the old one's number (the overflow
    /// count going down shows a RESET; so does `read_offset` = `n`); where a gap leaves it
    /// open whether the data continues or starts at 0, the pattern decides (`data`: the
    /// bytes, when the consumer holds them).
    fn attribute(
        &mut self,
        src: &Source,
        cfg: &AcqConfig,
        n: usize,
        data: Option<&[u8]>,
    ) -> Result<(), String> {
        let Some(s) = src.stats()? else {
            return Ok(());
        };
        let before = self.seen_overflows.replace(s.overflows);
        let gap = before.is_some_and(|o| s.overflows > o);
        let cleared = before.is_some_and(|o| s.overflows < o);
        let n = n as u64;
        let same = self.session == Some(s.session) && !cleared;
        if same && s.read_offset == self.offset + n {
            return Ok(());
        }
        let fresh = s.read_offset.checked_sub(n);
        if same {
            let fits = |o: u64| {
                data.is_some_and(|d| regs::pattern_check(cfg.pattern, cfg.seed, o, d).is_none())
            };
            if fresh == Some(0) || (gap && !fits(self.offset) && fits(0)) {
                self.offset = 0;
            }
            return Ok(());
        }
        if let Some(f) = fresh {
            // After a RESET the new session's own overflows show a gap too.
            if gap || (cleared && s.overflows > 0) {
                self.offset = 0;
            } else {
                if f != 0 {
                    self.misplaced += 1;
                }
                self.offset = f;
            }
            self.session = Some(s.session);
        }
        Ok(())
    }

    /// Did the driver count an overflow since the consumer last looked (a gap it may
    /// have moved `read_offset` past already)?
    fn gap_since(&mut self, s: &AcqStats) -> bool {
        let more = self.seen_overflows.is_some_and(|o| s.overflows > o);
        self.seen_overflows = Some(s.overflows);
        more
    }

    /// read()/splice() returned 0. With a controller, a STOP or RESET ended the session
    /// (docs/driver.md): the next call starts a new one. Returns false when 0 is the end.
    fn session_ended(&mut self, what: &str) -> bool {
        if self.controller.is_some() {
            self.session_ends += 1;
            self.session = None;
            true
        } else {
            self.fatal = Some(format!("{what} returned 0 (end of file)"));
            false
        }
    }

    /// `--reopen-at`: once the consumer has that many bytes, close the device and open it
    /// again (close ends the session; the next read starts another from offset 0).
    fn maybe_reopen(&mut self, a: &Args, src: &mut Source) -> Result<(), String> {
        let Some(at) = a.reopen_at else {
            return Ok(());
        };
        if self.reopened || self.total < at {
            return Ok(());
        }
        self.reopened = true;
        if src.card().is_some() {
            // The old file closes first (replaced, it is dropped): a second open while it
            // is open is EBUSY.
            *src = Source::Raw(File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?);
            *src = Source::Card(
                AcqDev::open(&a.device, a.nonblock)
                    .map_err(|e| format!("reopen {}: {e}", a.device))?,
            );
            self.session = None;
        }
        Ok(())
    }

    /// An errno from read() or splice(). Returns false when the loop must stop.
    fn errno_event(
        &mut self,
        src: &Source,
        e: &std::io::Error,
        what: &str,
    ) -> Result<bool, String> {
        let code = e.raw_os_error().unwrap_or(0);
        let name = acqdev::errno_name(code);
        *self.errnos.entry(name.clone()).or_default() += 1;
        // `offset`: the stream offset of the next byte the consumer expected (everything
        // before it was delivered); `bytes`: what the consumer had received by then.
        let mut event = serde_json::json!({
            "errno": name,
            "offset": self.offset,
            "bytes": self.total,
            "ms": self.start.elapsed().as_millis() as u64,
        });
        match code {
            libc::EPIPE | libc::EIO if src.card().is_some() => {
                // The stream continues where the driver says: after the lost bytes, or
                // from 0 in the new session a watchdog reset started. A session that is
                // not running (the engine halted) ends here: the next call starts a new
                // one, from 0 (docs/driver.md, the EIO row).
                if let Some(s) = src.stats()? {
                    if s.state == uapi::ACQ_STATE_RUNNING {
                        event["resume"] = s.read_offset.into();
                        self.offset = s.read_offset;
                        self.session = Some(s.session);
                    } else {
                        event["resume"] = 0.into();
                        self.offset = 0;
                        self.session = None;
                    }
                    self.seen_overflows = Some(s.overflows);
                }
            }
            libc::EINTR => {}
            libc::EAGAIN => {
                if let Some(d) = src.card() {
                    let _ = d.poll(libc::POLLIN, 1000);
                }
            }
            _ => {
                self.fatal = Some(format!("{what}: {e}"));
                self.record(event);
                return Ok(false);
            }
        }
        // EINTR and EAGAIN are part of normal operation (signals, O_NONBLOCK): counted,
        // but not worth an event each.
        if code != libc::EINTR && code != libc::EAGAIN {
            self.record(event);
        }
        Ok(true)
    }

    fn record(&mut self, event: serde_json::Value) {
        if self.errno_events.len() < MAX_ERRNO_EVENTS {
            self.errno_events.push(event);
        }
    }

    /// After each call: signal stop and progress. Returns false to stop.
    fn after(&mut self, a: &Args, tty: bool, progress: bool) -> bool {
        if let Some(s) = &mut self.signaler {
            s.progress(self.total);
        }
        if let Some(c) = &self.controller {
            c.progress(self.total);
        }
        if a.stop_on_signal && SIGNALS.load(Ordering::Relaxed) > 0 {
            self.stopped_by_signal = true;
            return false;
        }
        if progress && self.last_progress.elapsed() >= Duration::from_secs(1) {
            self.last_progress = Instant::now();
            let secs = self.start.elapsed().as_secs_f64();
            let line = format!(
                "{:>8.1} MiB  {:>8.2} MB/s",
                self.total as f64 / 1048576.0,
                self.total as f64 / secs / 1e6
            );
            if tty {
                eprint!("\r{line}  ");
            } else {
                eprintln!("{line}");
            }
        }
        true
    }
}

fn read_loop(
    a: &Args,
    cfg: &AcqConfig,
    src: &mut Source,
    sink: &mut Sink,
    st: &mut State,
    tty: bool,
    progress: bool,
) -> Result<(), String> {
    let mut buf = vec![0u8; a.read_size];
    let mut paused = false;
    while st.total < a.bytes {
        if st.expired(a) {
            break;
        }
        if let Some(at) = a.pause_at {
            if !paused && st.total >= at {
                paused = true;
                std::thread::sleep(std::time::Duration::from_millis(a.pause_ms));
            }
        }
        if let Some(at) = a.restart_at {
            if !st.restarted && st.total >= at {
                st.restarted = true;
                if let Some(dev) = src.card() {
                    dev.stop().map_err(|e| format!("STOP: {e}"))?;
                    match dev.start() {
                        // The controller's START came between our STOP and START.
                        Err(e)
                            if e.raw_os_error() == Some(libc::EBUSY) && st.controller.is_some() => {
                        }
                        r => r.map_err(|e| format!("START: {e}"))?,
                    }
                    let s = dev.stats().map_err(|e| format!("GET_STATS: {e}"))?;
                    st.offset = s.read_offset;
                    st.session = Some(s.session);
                }
            }
        }
        st.maybe_reopen(a, src)?;
        let want = buf
            .len()
            .min((a.bytes - st.total).min(usize::MAX as u64) as usize);
        match src.read(&mut buf[..want]) {
            Ok(0) => {
                if !st.session_ended("read") {
                    break;
                }
            }
            Ok(n) => {
                if st.controller.is_some() {
                    st.attribute(src, cfg, n, Some(&buf[..n]))?;
                }
                st.first_data(src, n)?;
                if n < want {
                    st.short_reads += 1;
                }
                st.mark();
                let data = &buf[..n];
                if a.verify {
                    // One segment: this read() starts at `offset`.
                    let segs = [(st.total, st.offset)];
                    st.inline.verify(cfg, &segs, st.total, data);
                }
                let flow = sink.put(st.offset, data)?;
                st.offset += n as u64;
                st.total += n as u64;
                if flow == Flow::Stop {
                    break;
                }
            }
            Err(e) => {
                if !st.errno_event(src, &e, "read")? {
                    break;
                }
            }
        }
        if !st.after(a, tty, progress) {
            break;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn splice_loop(
    a: &Args,
    cfg: &AcqConfig,
    src: &mut Source,
    sink: &mut Sink,
    tee_sink: Option<&Sink>,
    p1: &Pipe,
    p2: Option<&Pipe>,
    inline: bool,
    st: &mut State,
    tty: bool,
    progress: bool,
) -> Result<(), String> {
    let mut buf = vec![0u8; if inline { p1.size } else { 0 }];
    // With a controller each call's data is placed by the driver's statistics.
    let controlled = st.controller.is_some();
    while st.total < a.bytes {
        if st.expired(a) {
            break;
        }
        st.maybe_reopen(a, src)?;
        let want = p1
            .size
            .min((a.bytes - st.total).min(usize::MAX as u64) as usize);
        let n = match splice(src.fd(), p1.w.as_raw_fd(), want, libc::SPLICE_F_MOVE) {
            Ok(0) => {
                if !st.session_ended("splice") || !st.after(a, tty, progress) {
                    break;
                }
                continue;
            }
            Ok(n) => n,
            Err(e) => {
                if !st.errno_event(src, &e, "splice")? {
                    break;
                }
                if !st.after(a, tty, progress) {
                    break;
                }
                continue;
            }
        };
        // With the data read back (inline verification) the placement can use it: it
        // is done after the read-back below.
        if controlled && !inline {
            st.attribute(src, cfg, n, None)?;
        }
        if !(controlled && inline) {
            st.first_data(src, n)?;
            st.mark();
        }
        if n < want {
            st.short_reads += 1;
        }
        if let Some(at) = a.hold_at {
            if !st.held && st.total + n as u64 > at {
                // Keep the device's pages in the pipe without reading them: the card
                // runs out of buffers and overflows.
                st.held = true;
                std::thread::sleep(Duration::from_secs_f64(a.hold_s));
            }
        }
        if let Some(p2) = p2 {
            tee_all(p1.r.as_raw_fd(), p2.w.as_raw_fd(), n)?;
        }
        let flow = sink.splice_from(p1.r.as_raw_fd(), st.offset, n)?;
        if let Some(p2) = p2 {
            if inline {
                let data = &mut buf[..n];
                read_exact_fd(p2.r.as_raw_fd(), data)?;
                if controlled {
                    st.attribute(src, cfg, n, Some(data))?;
                    st.first_data(src, n)?;
                    st.mark();
                }
                let segs = [(st.total, st.offset)];
                st.inline.verify(cfg, &segs, st.total, data);
            } else if let Some(t) = tee_sink {
                drain(p2.r.as_raw_fd(), t.fd(), n, &t.spec.name())?;
            }
        }
        st.offset += n as u64;
        st.total += n as u64;
        if flow == Flow::Stop || !st.after(a, tty, progress) {
            break;
        }
    }
    Ok(())
}

/// A read-only mapping of the card's ring (control page + buffer pages).
struct Mapping {
    base: *const u8,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize) -> Result<Mapping, String> {
        // SAFETY: a new shared read-only mapping of our device file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Mapping {
            base: p.cast(),
            len,
        })
    }

    /// Bytes `off .. off + len` of the mapping (clamped).
    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        let off = off.min(self.len);
        let len = len.min(self.len - off);
        // SAFETY: the range is inside the live mapping; the driver hands a block to us only
        // after the card wrote it and keeps it until we release it.
        unsafe { std::slice::from_raw_parts(self.base.add(off), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

fn mmap_loop(
    a: &Args,
    cfg: &AcqConfig,
    src: &Source,
    sink: &mut Sink,
    st: &mut State,
    tty: bool,
    progress: bool,
) -> Result<(), String> {
    let Some(dev) = src.card() else {
        return Err("mmap needs the card".into());
    };
    let entries = 1usize << cfg.ring_log2;
    let map = Mapping::new(dev.raw_fd(), (entries + 1) * 4096)?;
    let mut release = 0u32;
    while st.total < a.bytes {
        if st.expired(a) {
            break;
        }
        let mut req = acq_guest::uapi::AcqMmapSync {
            release,
            timeout_ms: 1000,
            ..Default::default()
        };
        release = 0;
        let r = dev.ioctl_raw(
            acq_guest::uapi::ACQ_IOC_MMAP_SYNC,
            &mut req as *mut acq_guest::uapi::AcqMmapSync as usize,
        );
        if let Err(code) = r {
            let e = std::io::Error::from_raw_os_error(code);
            if !st.errno_event(src, &e, "ACQ_IOC_MMAP_SYNC")? {
                break;
            }
            if !st.after(a, tty, progress) {
                break;
            }
            continue;
        }
        if st.session.is_none() {
            st.session = src.stats()?.map(|s| s.session);
        }
        st.offset = req.stream_offset;
        let bs = req.block_size as usize;
        let mut taken = 0u32;
        let mut stop = false;
        while taken < req.count && st.total < a.bytes {
            let slot = (req.head as usize + taken as usize) % entries;
            let want = bs.min((a.bytes - st.total).min(usize::MAX as u64) as usize);
            let data = map.bytes((slot + 1) * 4096, want);
            st.mark();
            if a.verify {
                let segs = [(st.total, st.offset)];
                st.inline.verify(cfg, &segs, st.total, data);
            }
            let flow = sink.put(st.offset, data)?;
            st.offset += data.len() as u64;
            st.total += data.len() as u64;
            taken += 1;
            if flow == Flow::Stop {
                stop = true;
                break;
            }
        }
        release = taken;
        if stop {
            // Give the blocks back before leaving: the pool must be whole at the end.
            let mut req = acq_guest::uapi::AcqMmapSync {
                release,
                timeout_ms: 0,
                ..Default::default()
            };
            let _ = dev.ioctl_raw(
                acq_guest::uapi::ACQ_IOC_MMAP_SYNC,
                &mut req as *mut acq_guest::uapi::AcqMmapSync as usize,
            );
            break;
        }
        if !st.after(a, tty, progress) {
            break;
        }
    }
    Ok(())
}

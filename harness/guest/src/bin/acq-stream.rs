//! acq-stream: stream from `/dev/acqN`, verify every byte against the card's pattern, and
//! print one JSON result line.
//!
//! ```text
//! acq-stream --device /dev/acq0 --mode read --bytes 256M [--verify] [--sink /dev/null|FILE]
//!            [--block B] [--ring-log2 L] [--rate R] [--pattern P] [--seed S]
//!            [--irq-count C] [--irq-time-us T] [--read-size N] [--nonblock]
//!            [--restart-at N] [--timeout SECONDS] [--stop-on-signal]
//! ```
//!
//! Verification works by stream offset (docs/driver.md): the offset of the next byte is
//! tracked; after read() fails with EPIPE (overflow) or EIO, and after a restart, the
//! driver's statistics (`read_offset`) tell where the stream continues. SIGUSR1 is caught
//! without SA_RESTART, so it interrupts a blocked read() (EINTR or a short count): the
//! tests use it. Exit status: 0 ok, 1 verification or I/O failure, 2 bad arguments.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use acq_guest::acqdev::{self, AcqDev};
use acq_guest::regs;

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

struct Args {
    device: String,
    bytes: u64,
    verify: bool,
    sink: Option<String>,
    block: Option<u32>,
    ring_log2: Option<u32>,
    rate: Option<u64>,
    pattern: Option<u32>,
    seed: Option<u64>,
    irq_count: Option<u32>,
    irq_time_us: Option<u32>,
    read_size: usize,
    nonblock: bool,
    progress: bool,
    restart_at: Option<u64>,
    timeout: Option<f64>,
    stop_on_signal: bool,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-stream: {msg}");
    eprintln!(
        "usage: acq-stream --device /dev/acqN --mode read --bytes N [--verify] [--sink PATH] \
         [--block B] [--ring-log2 L] [--rate R] [--pattern counter|prbs|sine[:CH]|N] [--seed S] \
         [--irq-count C] [--irq-time-us T] [--read-size N] [--nonblock] [--progress] [--restart-at N] \
         [--timeout SECONDS] [--stop-on-signal]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: "/dev/acq0".into(),
        bytes: 0,
        verify: false,
        sink: None,
        block: None,
        ring_log2: None,
        rate: None,
        pattern: None,
        seed: None,
        irq_count: None,
        irq_time_us: None,
        read_size: 1 << 20,
        nonblock: false,
        progress: false,
        restart_at: None,
        timeout: None,
        stop_on_signal: false,
    };
    let mut mode = None;
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
        match opt.as_str() {
            "--device" => a.device = val(opt)?,
            "--mode" => mode = Some(val(opt)?),
            "--bytes" => a.bytes = size(opt, val(opt)?)?,
            "--verify" => a.verify = true,
            "--sink" => a.sink = Some(val(opt)?),
            "--block" => a.block = Some(small(opt, size(opt, val(opt)?)?)?),
            "--ring-log2" => a.ring_log2 = Some(small(opt, size(opt, val(opt)?)?)?),
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
            "--progress" => a.progress = true,
            "--stop-on-signal" => a.stop_on_signal = true,
            "--restart-at" => a.restart_at = Some(size(opt, val(opt)?)?),
            "--timeout" => {
                let v = val(opt)?;
                a.timeout = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|t| *t > 0.0)
                        .ok_or_else(|| format!("bad --timeout {v:?}"))?,
                )
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match mode.as_deref() {
        Some("read") => {}
        Some(m) => return Err(format!("mode {m:?} is not supported (only: read)")),
        None => return Err("--mode is required (read)".into()),
    }
    if a.bytes == 0 {
        return Err("--bytes N (N > 0) is required".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    match run(&args) {
        Ok((report, ok)) => {
            println!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            let report = serde_json::json!({ "device": args.device, "error": e });
            println!("{report}");
            ExitCode::from(1)
        }
    }
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

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    install_sigusr1();
    let dev = AcqDev::open(&a.device, a.nonblock).map_err(|e| format!("open {}: {e}", a.device))?;
    let mut cfg = dev.config().map_err(|e| format!("GET_CONFIG: {e}"))?;
    if let Some(v) = a.block {
        cfg.block_size = v;
    }
    if let Some(v) = a.ring_log2 {
        cfg.ring_log2 = v;
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
    dev.set_config(&cfg)
        .map_err(|e| format!("SET_CONFIG {}: {e}", acqdev::config_json(&cfg)))?;
    let mut sink = match a.sink.as_deref() {
        None | Some("/dev/null") => None,
        Some(p) => Some(File::create(p).map_err(|e| format!("create {p}: {e}"))?),
    };

    // Progress on a terminal rewrites one line; forced (--progress, for the harness, which
    // relays output line by line) it prints a line per second.
    let tty = std::io::stderr().is_terminal();
    let progress = tty || a.progress;
    let mut buf = vec![0u8; a.read_size];
    let mut errnos: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    let mut last_progress = start;
    let mut total: u64 = 0;
    let mut verified: u64 = 0;
    let mut mismatches: u64 = 0;
    let mut first_mismatch = serde_json::Value::Null;
    let mut offset: u64 = 0;
    let mut session: Option<u64> = None;
    let mut short_reads: u64 = 0;
    let mut restarted = false;
    let mut timed_out = false;
    let mut fatal: Option<String> = None;
    let mut stopped_by_signal = false;

    while total < a.bytes {
        if let Some(t) = a.timeout {
            if start.elapsed().as_secs_f64() > t {
                timed_out = true;
                break;
            }
        }
        if let Some(at) = a.restart_at {
            if !restarted && total >= at {
                restarted = true;
                dev.stop().map_err(|e| format!("STOP: {e}"))?;
                dev.start().map_err(|e| format!("START: {e}"))?;
                let s = dev.stats().map_err(|e| format!("GET_STATS: {e}"))?;
                offset = s.read_offset;
                session = Some(s.session);
            }
        }
        let want = buf
            .len()
            .min((a.bytes - total).min(usize::MAX as u64) as usize);
        match dev.read(&mut buf[..want]) {
            Ok(0) => {
                fatal = Some("read returned 0 (end of file)".into());
                break;
            }
            Ok(n) => {
                if session.is_none() {
                    // The first read started the session: take its offset from the driver.
                    let s = dev.stats().map_err(|e| format!("GET_STATS: {e}"))?;
                    session = Some(s.session);
                    offset = s.read_offset.saturating_sub(n as u64);
                }
                if n < want {
                    short_reads += 1;
                }
                let data = &buf[..n];
                if a.verify {
                    if let Some(i) = regs::pattern_check(cfg.pattern, cfg.seed, offset, data) {
                        mismatches += 1;
                        if first_mismatch.is_null() {
                            let at = offset + i as u64;
                            first_mismatch = serde_json::json!({
                                "stream_offset": at,
                                "got": data[i],
                                "want": regs::pattern_byte(cfg.pattern, cfg.seed, at),
                            });
                        }
                    } else {
                        verified += n as u64;
                    }
                }
                if let Some(f) = sink.as_mut() {
                    f.write_all(data).map_err(|e| format!("write sink: {e}"))?;
                }
                offset += n as u64;
                total += n as u64;
            }
            Err(e) => {
                let code = e.raw_os_error().unwrap_or(0);
                *errnos.entry(acqdev::errno_name(code)).or_default() += 1;
                match code {
                    libc::EPIPE | libc::EIO => {
                        // The stream continues where the driver says (after the lost bytes,
                        // or from 0 in a new session after a reset).
                        let s = dev.stats().map_err(|e| format!("GET_STATS: {e}"))?;
                        offset = s.read_offset;
                        session = Some(s.session);
                    }
                    libc::EINTR => {}
                    libc::EAGAIN => {
                        let _ = dev.poll(libc::POLLIN, 1000);
                    }
                    _ => {
                        fatal = Some(format!("read: {e}"));
                        break;
                    }
                }
            }
        }
        if a.stop_on_signal && SIGNALS.load(Ordering::Relaxed) > 0 {
            stopped_by_signal = true;
            break;
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            let line = format!(
                "{:>8.1} MiB  {:>8.2} MB/s",
                total as f64 / 1048576.0,
                total as f64 / secs / 1e6
            );
            if tty {
                eprint!("\r{line}  ");
            } else {
                eprintln!("{line}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if tty {
        eprintln!();
    }
    let stats = dev.stats().map_err(|e| format!("GET_STATS: {e}"))?;
    let ok =
        fatal.is_none() && mismatches == 0 && !timed_out && (total >= a.bytes || stopped_by_signal);
    let report = serde_json::json!({
        "device": a.device,
        "mode": "read",
        "bytes": total,
        "seconds": secs,
        "mb_per_s": if secs > 0.0 { total as f64 / secs / 1e6 } else { 0.0 },
        "verify": a.verify,
        "verified_bytes": verified,
        "errors": mismatches,
        "first_mismatch": first_mismatch,
        "overflows": stats.overflows,
        "lost_bytes": stats.lost_bytes,
        "errno": errnos,
        "signals": SIGNALS.load(Ordering::Relaxed),
        "short_reads": short_reads,
        "restarted": restarted,
        "timed_out": timed_out,
        "stopped_by_signal": stopped_by_signal,
        "fatal": fatal,
        "config": acqdev::config_json(&cfg),
        "stats": acqdev::stats_json(&stats),
        "ok": ok,
    });
    Ok((report, ok))
}

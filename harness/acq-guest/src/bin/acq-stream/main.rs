//! acq-stream: stream from `/dev/acqN`, verify every byte against the card's pattern, and
//! print one JSON result line. `--direction out` plays a stream into `/dev/acqN-out`
//! instead and reports what the card verified (`playback.rs`: both directions' consumers
//! live in this binary).
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
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use acq_guest::acqdev::{self, AcqDev};
use acq_guest::controller::Controller;
use acq_guest::signaler;
use acq_guest::sinkio::{self, AlignedBuf, Failure, Flow, Policy, SinkIo};
use acq_guest::uapi;
use acq_guest::uapi::{AcqConfig, AcqStats};
use acq_hw::regs;
use acq_wire::consumer::{ConsumerReport, Direction, ErrnoEvent};

mod args;
mod check;
mod loops;
mod pipes;
mod playback;
mod sink;
mod state;

use args::*;
use check::*;
use loops::*;
use pipes::*;
use sink::*;
use state::*;

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if Direction::of(&argv) == Direction::Out {
        return playback::main(&argv);
    }
    if let Some(done) = acq_guest::result::help(&argv, usage_text) {
        return done;
    }
    let args = match parse_args(argv) {
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
        acqdev::apply(&mut cfg, &a.card);
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
            let p1 = Pipe::new(a.pipe_size.map(|p| p as usize))?;
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
    let file_map = match &a.sink {
        // Where a file's blocks landed (a file system on a capture disk), and which stream
        // offset each file position holds: a host holding the disk verifies the file there.
        SinkSpec::File(path) => {
            file_extents(path).map(|e| e.into_iter().map(|(l, p, n)| [l, p, n]).collect())
        }
        _ => None,
    };
    let report = ConsumerReport {
        cpu_user_s: Some(cpu1.0 - cpu0.0),
        cpu_sys_s: Some(cpu1.1 - cpu0.1),
        ok,
        verified_bytes: verified,
        errors: mismatches,
        errno: st.errnos.clone(),
        errno_events: Some(st.errno_events.clone()),
        fatal: st.fatal.clone(),
        timed_out: st.timed_out,
        lost_bytes: Some(stats.map(|s| s.lost_bytes).unwrap_or(0)),
        session_ends: Some(st.session_ends),
        misplaced: Some(st.misplaced),
        control,
        sink_io: sink_io.as_ref().map(|io| io.report(a.sink_opts.direct)),
        segment_map: file_map
            .is_some()
            .then(|| segs_now.iter().map(|&(p, o)| [p, o]).collect()),
        extents: file_map,
        config: src.card().is_some().then(|| acqdev::card_config(&cfg)),
        ..ConsumerReport::moved(st.total, secs)
    };
    let mut detail = serde_json::json!({
        "device": a.device,
        "mode": a.mode.as_str(),
        "raw": a.raw,
        "sink": a.sink.name(),
        "verify": a.verify,
        "verify_method": if a.verify { method } else { "none" },
        "first_mismatch": first_mismatch,
        "overflows": stats.map(|s| s.overflows).unwrap_or(0),
        "signals": SIGNALS.load(Ordering::Relaxed),
        "short_reads": st.short_reads,
        "restarted": st.restarted,
        "reopened": st.reopened,
        "held": st.held,
        "stopped_by_signal": st.stopped_by_signal,
        "segments": segs_now.len(),
        "copies": copies,
    });
    if let Some(o) = detail.as_object_mut() {
        if let Some(p) = pipe_size {
            o.insert("pipe_size".into(), p.into());
        }
        if let Some(t) = &a.tee {
            o.insert("tee".into(), t.name().into());
        }
        if let Some(s) = stats {
            o.insert("stats".into(), acqdev::stats_json(&s));
        }
    }
    let report = acq_guest::result::line(&report, detail);
    Ok((report, ok))
}

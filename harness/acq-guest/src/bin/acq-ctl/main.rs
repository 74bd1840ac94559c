//! acq-ctl: the driver's ioctls from the command line, for tests and people.
//!
//! ```text
//! acq-ctl [--device /dev/acqN] info|config|stats|start|stop|reset
//! acq-ctl [--device /dev/acqN] set [--block B] [--ring-log2 L] [--rate R] [--pattern P]
//!                                  [--seed S] [--irq-count C] [--irq-time-us T]
//!                                  [--transfer dma|bar2]
//! acq-ctl [--device /dev/acqN] probe-invalid
//! acq-ctl [--device /dev/acqN] mmap-poll
//! acq-ctl [--device /dev/acqN] mmap-watchdog
//! acq-ctl [--device /dev/acqN] mmap-signal
//! acq-ctl [--device /dev/acqN] slow-read|slow-read-unbind|slow-write
//! acq-ctl [--device /dev/acqN] mmap-to-playback
//! acq-ctl [--device /dev/acqN] splice-hold-unbind dma|bar2
//! acq-ctl [--device /dev/acqN] reset-probe
//! acq-ctl [--device /dev/acqN] second-reader
//! acq-ctl [--device /dev/acqN] irq-mask-race
//! acq-ctl [--device /dev/acqN] wake-latency
//! acq-ctl [--device /dev/acqN] woken-late
//! ```
//!
//! `wake-latency` reads the first block of new sessions that make it 250 ms after their
//! start, and prints how long each read took (`max_ms`): with the driver's test-only
//! `debug_wake_window_ms=300` the interrupt lands between the reader's last check and
//! its sleep, where a lost wake-up shows as a read of about 500 ms instead of 300.
//!
//! `woken-late` wakes a reader by its block's interrupt and keeps it from its CPU (a
//! SCHED_FIFO thread spins on it) until past its re-check deadline: a late run the
//! driver must not call a lost wake-up.
//!
//! `irq-mask-race` starts capture (ACQ_IOC_START) and playback (a first write() to
//! `/dev/acqN-out`) from two threads at once (one delayed by 0 to 1 ms, swept), 1000 times
//! from a soft-reset card, and reads
//! IRQ_MASK through sysfs `resource0` after each pair of starts. It prints the rounds that
//! ended with either channel's interrupt causes masked (`masked`): IRQ_MASK is one
//! register for both channels, and neither start may undo the other's unmask.
//!
//! `second-reader`: while one thread's blocking read() of 4 KiB waits on a 2 KB/s card
//! (2 s a block), a second thread on the same descriptor reads with O_NONBLOCK, then
//! blocks in read() until a signal (SIGALRM after 1 s, no SA_RESTART). It prints how long each took and its errno: the second reader
//! must not wait for the first (EAGAIN at once; EINTR at the signal).
//!
//! `reset-probe` starts a slow session (64 KiB/s, so buffers stay posted) and then times
//! `ACQ_IOC_GET_STATS` every 2 ms for up to 15 s, until the watchdog has reset the card
//! (the test makes it hang) and 1 s more. It prints the longest call (`max_ms`): a driver
//! that holds the card's mutex across the function reset makes that call wait 100 ms and
//! more.
//!
//! `splice-hold-unbind` splices 256 KiB of a COUNTER stream (in DMA or BAR2 mode) into a
//! pipe and keeps it there while the driver is unbound, then reads the pipe and counts
//! the words that are not the stream's (`bad_words`): pages lent to a pipe must keep
//! their data when the card's memory is freed (under `swiotlb=force` an unmap that syncs
//! copies a stale bounce buffer over them).
//!
//! `mmap-to-playback` is seed 003's scene on this card: it maps the capture ring, holds
//! its first block and write()s that block to `/dev/acqN-out` straight from the mapping,
//! which the playback card verifies. The write must complete (or fail with EFAULT)
//! within 10 s, never hang on the card's own locks.
//!
//! `slow-read`, `slow-read-unbind` and `slow-write` hold a read() (or a write() to
//! `/dev/acqN-out`) inside the driver's copy with a userfaultfd buffer for 3 s, and
//! meanwhile time an ioctl or the driver's unbind: see `acq_guest::slowcopy`.
//!
//! `mmap-signal` holds the first block of a slow card (a 64-byte block every 2 s), then
//! releases it with a sync that waits up to 5 s, and a signal (SIGALRM, no SA_RESTART)
//! ends that wait after 1 s. If the sync failed, it tries the same request again. It
//! prints both results: a sync whose release took effect must not fail, or its retry
//! would release blocks the consumer no longer holds (`EINVAL`).
//!
//! `mmap-watchdog` holds two mapped blocks of a slow card (64-byte blocks at 1 KiB/s, a
//! 64-block ring) for 9 s, during which the test makes the card hang so that the
//! watchdog resets it; then it releases them and syncs twice more. It prints the session
//! and state seen while holding and the three syncs' results: the driver
//! must not start a new session (and so re-post the held slots) under a consumer that
//! holds blocks.
//!
//! `mmap-poll` checks poll() in mmap mode: with a 16-block ring at 1 MiB/s it maps the
//! ring, holds every block through `ACQ_IOC_MMAP_SYNC` (so the card cannot complete
//! another) and polls for POLLIN for 500 ms. It prints the blocks held, `revents` and the
//! milliseconds poll() took: a driver that reports held blocks as new ones wakes an
//! epoll consumer at once, for ever.
//!
//! Every command prints one JSON line. `probe-invalid` sends a battery of invalid ioctls
//! (bad values, bad pointers, unknown numbers, wrong sizes, wrong states) and reports the
//! errno of each against the documented one; it exits 1 if any differs. Exit status 2
//! means bad arguments.

use std::process::ExitCode;

use acq_guest::acqdev::{self, AcqDev};
use acq_guest::slowcopy;

mod invalid;
mod scenes;

use acq_guest::mapping::ReadOnlyMap;
use acq_guest::uapi::AcqConfig;
use acq_wire::consumer::{Argv, DeviceArgs};

const USAGE: &str =
    "usage: acq-ctl [--device /dev/acqN] info|config|stats|start|stop|reset|probe-invalid\n\
    \x20      acq-ctl [--device /dev/acqN] set [--block B] [--ring-log2 L] [--rate R] \
    [--pattern P] [--seed S] [--irq-count C] [--irq-time-us T] [--transfer dma|bar2]\n\
    \x20      acq-ctl memcpy --bytes N";

fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-ctl: {msg}");
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // `--flag=value` split as every tool splits it (acq_wire's Argv).
    let mut walk = Argv::new(std::env::args().skip(1));
    let mut argv = Vec::new();
    while let Some(a) = walk.next_flag() {
        argv.push(a);
    }
    if let Some(done) = acq_guest::result::help(&argv, || USAGE.to_string()) {
        return done;
    }
    let mut device = "/dev/acq0".to_string();
    let mut rest = argv.as_slice();
    if let [opt, val, tail @ ..] = rest {
        if opt == "--device" {
            device = val.clone();
            rest = tail;
        }
    }
    let Some((cmd, opts)) = rest.split_first() else {
        return usage("a command is required");
    };
    if cmd == "peek" {
        return peek(opts);
    }
    if cmd == "memcpy" {
        return memcpy(opts);
    }
    let known = [
        "info",
        "config",
        "stats",
        "start",
        "stop",
        "reset",
        "set",
        "probe-invalid",
        "mmap-poll",
        "mmap-watchdog",
        "mmap-signal",
        "slow-read",
        "slow-read-unbind",
        "slow-write",
        "mmap-to-playback",
        "splice-hold-unbind",
        "reset-probe",
        "second-reader",
        "irq-mask-race",
        "wake-latency",
        "woken-late",
    ];
    if !known.contains(&cmd.as_str()) {
        return usage(&format!("unknown command {cmd:?}"));
    }
    if cmd != "set" && cmd != "splice-hold-unbind" && !opts.is_empty() {
        return usage(&format!("{cmd} takes no arguments"));
    }
    let dev = match AcqDev::open(&device, false) {
        Ok(d) => d,
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"device": device, "error": format!("open: {e}"),
                    "errno": acqdev::errno_name(e.raw_os_error().unwrap_or(0))})
            );
            return ExitCode::from(1);
        }
    };
    let result = match cmd.as_str() {
        "info" => dev.info().map(|i| acqdev::info_json(&i)),
        "config" => dev.config().map(|c| acqdev::config_json(&c)),
        "stats" => dev.stats().map(|s| acqdev::stats_json(&s)),
        "start" => dev.start().map(|_| serde_json::json!({"started": true})),
        "stop" => dev.stop().map(|_| serde_json::json!({"stopped": true})),
        "reset" => dev.reset().map(|_| serde_json::json!({"reset": true})),
        "set" => {
            let mut c = match dev.config() {
                Ok(c) => c,
                Err(e) => return fail(&device, e),
            };
            if let Err(e) = apply_options(&mut c, opts) {
                return usage(&e);
            }
            match dev.set_config(&c) {
                Ok(()) => Ok(acqdev::config_json(&c)),
                Err(e) => {
                    let hint = acqdev::bar2_hint(&c, &e);
                    println!(
                        "{}",
                        serde_json::json!({"device": device, "error": format!("{e}{hint}"),
                            "errno": acqdev::errno_name(e.raw_os_error().unwrap_or(0)),
                            "config": acqdev::config_json(&c)})
                    );
                    return ExitCode::from(1);
                }
            }
        }
        "probe-invalid" => return invalid::probe_invalid(&dev, &device),
        "mmap-poll" => scenes::mmap_poll(&dev),
        "mmap-watchdog" => scenes::mmap_watchdog(&dev),
        "mmap-signal" => scenes::mmap_signal(&dev),
        "slow-read" => slowcopy::slow_read(&dev, slowcopy::Probe::Ioctl),
        "slow-read-unbind" => slowcopy::slow_read(&dev, slowcopy::Probe::Unbind),
        "slow-write" => slowcopy::slow_write(&format!("{device}-out")),
        "reset-probe" => scenes::reset_probe(&dev),
        "second-reader" => scenes::second_reader(&dev),
        "irq-mask-race" => scenes::irq_mask_race(&dev, &format!("{device}-out")),
        "wake-latency" => scenes::wake_latency(&dev),
        "woken-late" => scenes::woken_late(&dev),
        "mmap-to-playback" => scenes::mmap_to_playback(&dev, &format!("{device}-out")),
        "splice-hold-unbind" => match opts {
            [mode] if mode == "dma" || mode == "bar2" => scenes::splice_hold_unbind(&dev, mode),
            _ => return usage("splice-hold-unbind takes dma or bar2"),
        },
        _ => return usage("unreachable"),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&device, e),
    }
}

fn fail(device: &str, e: std::io::Error) -> ExitCode {
    println!(
        "{}",
        serde_json::json!({"device": device, "error": e.to_string(),
            "errno": acqdev::errno_name(e.raw_os_error().unwrap_or(0))})
    );
    ExitCode::from(1)
}

/// `set`'s options: the card settings every tool takes (`DeviceArgs`, parsed and checked
/// as acq-stream parses them), applied to the card's configuration `c`.
fn apply_options(c: &mut AcqConfig, opts: &[String]) -> Result<(), String> {
    let mut d = DeviceArgs::default();
    let mut argv = Argv::new(opts.iter().cloned());
    while let Some(flag) = argv.next_flag() {
        if !d.take(&flag, &mut argv).map_err(|e| e.to_string())? {
            return Err(format!("unknown option {flag:?}"));
        }
    }
    d.check().map_err(|e| e.to_string())?;
    acqdev::apply(c, &d);
    Ok(())
}

/// `acq-ctl memcpy --bytes N`: the guest's memory copy bandwidth, copying N bytes in all
/// between two 4 MiB buffers (a ring's worth of pages) with the C library's memcpy: the
/// bench's yard stick for every path that copies (`make bench`, docs/performance.md).
/// One JSON line: `ok`, `bytes`, `seconds`, `mb_per_s`.
fn memcpy(opts: &[String]) -> ExitCode {
    let [flag, bytes] = opts else {
        return usage("memcpy --bytes N");
    };
    if flag != "--bytes" {
        return usage("memcpy --bytes N");
    }
    let Some(total) = acqdev::parse_size(bytes).filter(|&b| b > 0) else {
        return usage(&format!("memcpy: {bytes:?} is not a size above 0"));
    };
    const BUF: usize = 4 << 20;
    let src: Vec<u8> = (0..BUF).map(|i| i as u8).collect();
    let mut dst = vec![0u8; BUF];
    // One pass first: the pages are faulted in before the clock starts.
    dst.copy_from_slice(&src);
    let start = std::time::Instant::now();
    let mut done = 0u64;
    while done < total {
        let n = BUF.min((total - done).min(BUF as u64) as usize);
        dst[..n].copy_from_slice(std::hint::black_box(&src[..n]));
        std::hint::black_box(&mut dst);
        done += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "ok": true,
            "bytes": done,
            "seconds": secs,
            "mb_per_s": done as f64 / secs.max(1e-9) / 1e6,
        })
    );
    ExitCode::SUCCESS
}

/// `acq-ctl peek RESOURCE OFFSET...`: reads 32-bit words of a PCI BAR through its sysfs
/// `resourceN` file (mmap), bypassing the driver. A debugging aid.
fn peek(opts: &[String]) -> ExitCode {
    let Some((file, offsets)) = opts.split_first() else {
        return usage("peek RESOURCE_FILE OFFSET...");
    };
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
    else {
        return usage(&format!("cannot open {file}"));
    };
    let len = 0x4000usize;
    let map = match ReadOnlyMap::new(std::os::fd::AsRawFd::as_raw_fd(&f), len) {
        Ok(m) => m,
        Err(e) => return usage(&format!("mmap {file}: {e}")),
    };
    for o in offsets {
        let Some(off) = acqdev::parse_size(o).filter(|v| *v % 4 == 0 && (*v as usize) < len) else {
            return usage(&format!("bad offset {o:?}"));
        };
        let Some(v) = map.read_u32(off as usize) else {
            return usage(&format!("bad offset {o:?}"));
        };
        println!("{off:#06x}: {v:#010x}");
    }
    ExitCode::SUCCESS
}

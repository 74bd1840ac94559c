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
//! ```
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
use acq_guest::uapi::{self, AcqConfig};

fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-ctl: {msg}");
    eprintln!(
        "usage: acq-ctl [--device /dev/acqN] info|config|stats|start|stop|reset|probe-invalid\n\
         \x20      acq-ctl [--device /dev/acqN] set [--block B] [--ring-log2 L] [--rate R] \
         [--pattern P] [--seed S] [--irq-count C] [--irq-time-us T] [--transfer dma|bar2]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
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
    ];
    if !known.contains(&cmd.as_str()) {
        return usage(&format!("unknown command {cmd:?}"));
    }
    if cmd != "set" && !opts.is_empty() {
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
        "probe-invalid" => return probe_invalid(&dev, &device),
        "mmap-poll" => mmap_poll(&dev),
        "mmap-watchdog" => mmap_watchdog(&dev),
        "mmap-signal" => mmap_signal(&dev),
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

fn apply_options(c: &mut AcqConfig, opts: &[String]) -> Result<(), String> {
    let mut it = opts.iter();
    while let Some(opt) = it.next() {
        let v = it.next().ok_or_else(|| format!("{opt} needs a value"))?;
        let num = || acqdev::parse_size(v).ok_or_else(|| format!("bad value for {opt}: {v:?}"));
        let num32 =
            || num().and_then(|n| u32::try_from(n).map_err(|_| format!("{opt} too large: {n}")));
        match opt.as_str() {
            "--block" => c.block_size = num32()?,
            "--ring-log2" => c.ring_log2 = num32()?,
            "--rate" => c.rate = num()?,
            "--pattern" => {
                c.pattern = acqdev::parse_pattern(v).ok_or_else(|| format!("bad pattern {v:?}"))?
            }
            "--seed" => c.seed = num()?,
            "--irq-count" => c.irq_mod_count = num32()?,
            "--irq-time-us" => c.irq_mod_time_us = num32()?,
            "--transfer" => acqdev::set_transfer(c, v)?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(())
}

/// One invalid request and the errno the driver must answer.
struct Case {
    name: String,
    want: i32,
    got: Result<i32, i32>,
}

fn probe_invalid(dev: &AcqDev, device: &str) -> ExitCode {
    let mut cases = Vec::new();
    let before = match dev.config() {
        Ok(c) => c,
        Err(e) => return fail(device, e),
    };
    let mut set = |name: &str, f: &dyn Fn(&mut AcqConfig)| {
        let mut c = before;
        f(&mut c);
        cases.push(Case {
            name: format!("set_config {name}"),
            want: libc::EINVAL,
            got: dev.ioctl_raw(uapi::ACQ_IOC_SET_CONFIG, &c as *const AcqConfig as usize),
        });
    };
    set("block_size=0", &|c| c.block_size = 0);
    set("block_size=63", &|c| c.block_size = 63);
    set("block_size=100", &|c| c.block_size = 100);
    set("block_size=8192", &|c| c.block_size = 8192);
    set("block_size=u32::MAX", &|c| c.block_size = u32::MAX);
    set("ring_log2=0", &|c| c.ring_log2 = 0);
    set("ring_log2=16", &|c| c.ring_log2 = 16);
    set("ring_log2=u32::MAX", &|c| c.ring_log2 = u32::MAX);
    set("pattern=7", &|c| c.pattern = 7);
    set("pattern reserved bits", &|c| c.pattern = 0x1_0000);
    set("irq_mod_count=65536", &|c| c.irq_mod_count = 65536);
    set("irq_mod_time_us=2000000", &|c| {
        c.irq_mod_time_us = 2_000_000
    });
    // Bit 0 is ACQ_CFG_LOOPBACK, bit 1 ACQ_CFG_BAR2 (ABI 1.2), not both; the other bits are
    // reserved.
    // A rate must move a full ring within 60 s (close() and the watchdog wait on it).
    set("rate=1 (below a ring per 60 s)", &|c| c.rate = 1);
    set("rate one byte short of a ring per 60 s", &|c| {
        c.rate = (u64::from(c.block_size) << c.ring_log2.min(10)).div_ceil(60) - 1
    });
    set("flags=4 (reserved)", &|c| c.flags = 4);
    set("flags=0x80000000 (reserved)", &|c| c.flags = 0x8000_0000);
    set("flags=LOOPBACK|BAR2", &|c| {
        c.flags = uapi::ACQ_CFG_LOOPBACK | uapi::ACQ_CFG_BAR2
    });
    set("flags=BAR2|reserved", &|c| c.flags = uapi::ACQ_CFG_BAR2 | 4);

    let mut raw = |name: &str, cmd: u32, arg: usize, want: i32| {
        cases.push(Case {
            name: name.into(),
            want,
            got: dev.ioctl_raw(cmd, arg),
        });
    };
    raw("set_config NULL", uapi::ACQ_IOC_SET_CONFIG, 0, libc::EFAULT);
    raw(
        "set_config bad pointer",
        uapi::ACQ_IOC_SET_CONFIG,
        8,
        libc::EFAULT,
    );
    raw(
        "set_config kernel pointer",
        uapi::ACQ_IOC_SET_CONFIG,
        0xffff_ffff_8100_0000,
        libc::EFAULT,
    );
    raw("get_config NULL", uapi::ACQ_IOC_GET_CONFIG, 0, libc::EFAULT);
    raw("get_stats NULL", uapi::ACQ_IOC_GET_STATS, 0, libc::EFAULT);
    raw(
        "get_stats kernel pointer",
        uapi::ACQ_IOC_GET_STATS,
        0xffff_ffff_8100_0000,
        libc::EFAULT,
    );
    raw(
        "get_info bad pointer",
        uapi::ACQ_IOC_GET_INFO,
        16,
        libc::EFAULT,
    );
    raw(
        "unknown number",
        uapi::ioc(0, uapi::ACQ_IOC_MAGIC, 0x99, 0),
        0,
        libc::ENOTTY,
    );
    raw(
        "get_stats wrong size",
        uapi::ioc(2, uapi::ACQ_IOC_MAGIC, 6, 8),
        0,
        libc::ENOTTY,
    );
    raw("other magic", uapi::ioc(0, 0x54, 1, 0), 0, libc::ENOTTY);
    raw("mmap_sync NULL", uapi::ACQ_IOC_MMAP_SYNC, 0, libc::EFAULT);
    let mut sync = uapi::AcqMmapSync::default();
    raw(
        "mmap_sync without a mapping",
        uapi::ACQ_IOC_MMAP_SYNC,
        &mut sync as *mut uapi::AcqMmapSync as usize,
        libc::EINVAL,
    );
    let mut sync = uapi::AcqMmapSync {
        reserved: 1,
        ..Default::default()
    };
    raw(
        "mmap_sync reserved",
        uapi::ACQ_IOC_MMAP_SYNC,
        &mut sync as *mut uapi::AcqMmapSync as usize,
        libc::EINVAL,
    );
    let mut v1 = [0u8; uapi::ACQ_STATS_V1_SIZE];
    cases.push(Case {
        name: "get_stats v1 (80 bytes) still served".into(),
        want: 0,
        got: dev.ioctl_raw(uapi::ACQ_IOC_GET_STATS_V1, v1.as_mut_ptr() as usize),
    });

    // State errors: a second start, a configuration change while running.
    let started = dev.start();
    cases.push(Case {
        name: "start while running".into(),
        want: libc::EBUSY,
        got: dev.ioctl_raw(uapi::ACQ_IOC_START, 0),
    });
    cases.push(Case {
        name: "set_config while running".into(),
        want: libc::EBUSY,
        got: dev.ioctl_raw(
            uapi::ACQ_IOC_SET_CONFIG,
            &before as *const AcqConfig as usize,
        ),
    });
    let _ = dev.stop();

    let after = dev.config().ok();
    let mut ok = started.is_ok() && after == Some(before);
    let list: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            let good = if c.want == 0 {
                c.got.is_ok()
            } else {
                c.got == Err(c.want)
            };
            ok &= good;
            serde_json::json!({
                "case": c.name,
                "want": acqdev::errno_name(c.want),
                "got": match c.got { Ok(v) => format!("ok({v})"), Err(e) => acqdev::errno_name(e) },
                "ok": good,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "device": device,
            "cases": list,
            "config_unchanged": after == Some(before),
            "start_ok": started.is_ok(),
            "ok": ok,
        })
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
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
    let map = match RingMap::map(std::os::fd::AsRawFd::as_raw_fd(&f), len) {
        Ok(m) => m,
        Err(e) => return usage(&format!("mmap {file}: {e}")),
    };
    for o in offsets {
        let Some(off) = acqdev::parse_size(o).filter(|v| *v % 4 == 0 && (*v as usize) < len) else {
            return usage(&format!("bad offset {o:?}"));
        };
        // SAFETY: `off` is 4-byte aligned and inside the mapping.
        let v = unsafe {
            std::ptr::read_volatile(map.base.cast::<u8>().add(off as usize).cast::<u32>())
        };
        println!("{off:#06x}: {v:#010x}");
    }
    ExitCode::SUCCESS
}

/// One `ACQ_IOC_MMAP_SYNC`: `Ok(ready count)` or the errno.
fn mmap_sync(dev: &AcqDev, release: u32, timeout_ms: u32) -> Result<u32, i32> {
    let mut req = uapi::AcqMmapSync {
        release,
        timeout_ms,
        ..Default::default()
    };
    dev.ioctl_raw(
        uapi::ACQ_IOC_MMAP_SYNC,
        &mut req as *mut uapi::AcqMmapSync as usize,
    )?;
    Ok(req.count)
}

/// A shared read-only mapping of a file (the card's ring, or a BAR's sysfs resource),
/// unmapped on drop.
struct RingMap {
    base: *mut libc::c_void,
    len: usize,
}

impl RingMap {
    /// The whole ring of `dev`: the control page and `entries` buffer pages.
    fn new(dev: &AcqDev, entries: usize) -> std::io::Result<RingMap> {
        RingMap::map(dev.raw_fd(), (entries + 1) * 4096)
    }

    /// `len` bytes of `fd` from offset 0.
    fn map(fd: std::os::fd::RawFd, len: usize) -> std::io::Result<RingMap> {
        // SAFETY: a new shared read-only mapping; the kernel picks the address, and the
        // mapping is only read, within `len`, until `drop` unmaps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RingMap { base, len })
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Configures a stopped card (`ring_log2`, `block_size`, `rate`), maps its ring and syncs
/// without releasing until at least `want` blocks are held (at most 10 s). Returns the
/// mapping (kept while the caller holds blocks) and the blocks held.
fn hold_blocks(
    dev: &AcqDev,
    ring_log2: u32,
    block_size: u32,
    rate: u64,
    want: u32,
) -> std::io::Result<(RingMap, u32)> {
    use std::time::{Duration, Instant};
    let mut c = dev.config()?;
    c.ring_log2 = ring_log2;
    c.block_size = block_size;
    c.rate = rate;
    dev.stop()?;
    dev.set_config(&c)?;
    let map = RingMap::new(dev, 1 << ring_log2)?;
    let mut held = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while held < want && Instant::now() < deadline {
        held = mmap_sync(dev, 0, 200).map_err(std::io::Error::from_raw_os_error)?;
    }
    Ok((map, held))
}

/// An errno-or-count result as JSON.
fn sync_json(r: Result<u32, i32>) -> serde_json::Value {
    match r {
        Ok(n) => serde_json::json!(n),
        Err(e) => serde_json::json!(acqdev::errno_name(e)),
    }
}

/// See the module docs (`mmap-watchdog`).
fn mmap_watchdog(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
    let (_map, held) = hold_blocks(dev, 6, 64, 1024, 2)?;
    let before = dev.stats()?;
    std::thread::sleep(std::time::Duration::from_secs(9));
    let during = dev.stats()?;
    let release = mmap_sync(dev, held, 0);
    let next = mmap_sync(dev, 0, 2000);
    let third = mmap_sync(dev, 0, 2000);
    Ok(serde_json::json!({
        "held": held,
        "session_before": before.session,
        "session_while_held": during.session,
        "state_while_held": during.state,
        "watchdog_resets": during.watchdog_resets - before.watchdog_resets,
        "release": sync_json(release),
        "next_sync": sync_json(next),
        "third_sync": sync_json(third),
    }))
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// See the module docs (`mmap-signal`).
fn mmap_signal(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
    let (_map, held) = hold_blocks(dev, 4, 64, 32, 1)?;
    // SAFETY: installs a handler that does nothing, without SA_RESTART, so the signal
    // ends the driver's interruptible wait; `act` is fully initialised.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &act, std::ptr::null_mut());
        libc::alarm(1);
    }
    let start = std::time::Instant::now();
    let first = mmap_sync(dev, held, 5000);
    let ms = start.elapsed().as_millis() as u64;
    let retry = match first {
        Ok(_) => None,
        Err(_) => Some(mmap_sync(dev, held, 0)),
    };
    Ok(serde_json::json!({
        "held": held,
        "release": sync_json(first),
        "release_ms": ms,
        "retry": retry.map(sync_json),
        "retry_einval": retry == Some(Err(libc::EINVAL)),
    }))
}

/// See the module docs (`mmap-poll`).
fn mmap_poll(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
    // The whole ring held, so the card cannot complete another block.
    let (_map, held) = hold_blocks(dev, 4, 4096, 1 << 20, 16)?;
    let start = std::time::Instant::now();
    let revents = dev.poll(libc::POLLIN, 500)?;
    let ms = start.elapsed().as_millis() as u64;
    Ok(serde_json::json!({
        "entries": 16,
        "held": held,
        "revents": revents,
        "poll_ms": ms,
    }))
}

//! acq-ctl's test scenes around mmap(), held pages and unbind (each described in the
//! binary's docs): they hold the driver in a state and print what it did there.

use acq_guest::acqdev::{self, AcqDev};
use acq_guest::mapping::ReadOnlyMap;
use acq_guest::pipe::{self, Pipe};
use acq_guest::uapi;

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

/// The whole ring of `dev`: the control page and `entries` buffer pages.
fn map_ring(dev: &AcqDev, entries: usize) -> std::io::Result<ReadOnlyMap> {
    ReadOnlyMap::new(dev.raw_fd(), (entries + 1) * 4096)
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
) -> std::io::Result<(ReadOnlyMap, u32)> {
    use std::time::{Duration, Instant};
    let mut c = dev.config()?;
    c.ring_log2 = ring_log2;
    c.block_size = block_size;
    c.rate = rate;
    dev.stop()?;
    dev.set_config(&c)?;
    let map = map_ring(dev, 1 << ring_log2)?;
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

/// See acq-ctl's docs (`mmap-watchdog`).
pub(crate) fn mmap_watchdog(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
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

/// See acq-ctl's docs (`mmap-signal`).
pub(crate) fn mmap_signal(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
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

/// See acq-ctl's docs (`mmap-poll`).
pub(crate) fn mmap_poll(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
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

/// See acq-ctl's docs (`mmap-to-playback`).
pub(crate) fn mmap_to_playback(dev: &AcqDev, out_path: &str) -> std::io::Result<serde_json::Value> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut c = dev.config()?;
    c.pattern = acq_hw::regs::pattern::COUNTER;
    c.seed = 0;
    dev.stop()?;
    dev.set_config(&c)?;
    let (map, held) = hold_blocks(dev, 4, 4096, 1 << 20, 1)?;
    let path = std::ffi::CString::new(out_path).map_err(std::io::Error::other)?;
    // SAFETY: `path` is a valid NUL-terminated string.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` was just opened and is owned by nobody else.
    let out = unsafe { OwnedFd::from_raw_fd(raw) };
    // Page 1 of the mapping is ring slot 0: the session's first block.
    let (fd, src) = (out.as_raw_fd(), map.addr(4096) as usize);
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        // SAFETY: `src` is one mapped, readable page that outlives this thread (joined
        // below, before `map` drops).
        let n = unsafe { libc::write(fd, src as *const libc::c_void, 4096) };
        let e = std::io::Error::last_os_error();
        let _ = tx.send(if n < 0 { Err(e) } else { Ok(n as usize) });
    });
    let r = rx.recv_timeout(std::time::Duration::from_secs(10));
    let hung = r.is_err();
    if !hung {
        let _ = writer.join();
    }
    let mut s = uapi::AcqPbStats::default();
    // SAFETY: DRAIN takes no argument; `s` is the structure PB_GET_STATS writes.
    let drained = !hung
        && unsafe {
            libc::ioctl(fd, uapi::ACQ_IOC_PB_DRAIN as _, 0) == 0
                && libc::ioctl(fd, uapi::ACQ_IOC_PB_GET_STATS as _, &mut s) == 0
        };
    let v = serde_json::json!({
        "held": held,
        "hung": hung,
        "write": match &r {
            Ok(Ok(n)) => serde_json::json!(n),
            Ok(Err(e)) => serde_json::json!(acqdev::errno_name(e.raw_os_error().unwrap_or(0))),
            Err(_) => serde_json::Value::Null,
        },
        "drained": drained,
        "card_verified": s.card_verified,
        "mismatch_blocks": s.mismatch_blocks,
    });
    if hung {
        // The writer is stuck in the kernel: leave it (and the mapping) to the exit.
        std::mem::forget(map);
        std::mem::forget(out);
    }
    Ok(v)
}

/// See acq-ctl's docs (`splice-hold-unbind`).
pub(crate) fn splice_hold_unbind(
    dev: &AcqDev,
    transfer: &str,
) -> std::io::Result<serde_json::Value> {
    use std::os::fd::AsRawFd;
    const HOLD: usize = 256 << 10;
    let mut c = dev.config()?;
    c.pattern = acq_hw::regs::pattern::COUNTER;
    c.seed = 0;
    c.block_size = 4096;
    c.ring_log2 = 7;
    c.rate = 0;
    acqdev::set_transfer(&mut c, transfer).map_err(std::io::Error::other)?;
    dev.stop()?;
    dev.set_config(&c)?;
    let p = Pipe::new(Some(1 << 20)).map_err(std::io::Error::other)?;
    let (r, w) = (&p.r, &p.w);
    let mut held = 0usize;
    while held < HOLD {
        match pipe::splice(dev.raw_fd(), w.as_raw_fd(), HOLD - held, 0)? {
            0 => return Err(std::io::Error::other("splice from the card returned 0")),
            n => held += n,
        }
    }
    let bdf = acqdev::bound_card()?;
    std::fs::write("/sys/bus/pci/drivers/acq/unbind", &bdf)?;
    let mut data = vec![0u8; held];
    let mut got = 0;
    while got < held {
        // SAFETY: `data[got..]` is valid for writes of `held - got` bytes.
        let n = unsafe { libc::read(r.as_raw_fd(), data[got..].as_mut_ptr().cast(), held - got) };
        if n <= 0 {
            return Err(std::io::Error::last_os_error());
        }
        got += n as usize;
    }
    let words = data.chunks_exact(8).map(|w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        u64::from_le_bytes(b)
    });
    let bad: Vec<usize> = words
        .enumerate()
        .filter(|&(i, v)| v != i as u64)
        .map(|(i, _)| i * 8)
        .collect();
    Ok(serde_json::json!({
        "transfer": transfer,
        "held": held,
        "unbound": bdf,
        "bad_words": bad.len(),
        "first_bad": bad.first(),
    }))
}

/// See acq-ctl's docs (`reset-probe`).
pub(crate) fn reset_probe(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
    use std::time::{Duration, Instant};
    let orig = dev.config()?;
    let mut c = orig;
    c.rate = 64 << 10;
    c.ring_log2 = 8;
    c.block_size = 4096;
    dev.stop()?;
    dev.set_config(&c)?;
    dev.start()?;
    let before = dev.stats()?.watchdog_resets;
    let start = Instant::now();
    let (mut max_ms, mut calls, mut reset_at) = (0f64, 0u64, None);
    while start.elapsed() < Duration::from_secs(15) {
        let t = Instant::now();
        let s = dev.stats()?;
        max_ms = max_ms.max(t.elapsed().as_secs_f64() * 1e3);
        calls += 1;
        if reset_at.is_none() && s.watchdog_resets > before {
            reset_at = Some(start.elapsed());
        }
        if reset_at.is_some_and(|r| start.elapsed() > r + Duration::from_secs(1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let after = dev.stats()?;
    // The configuration belongs to the card: leave it as it was.
    dev.stop()?;
    dev.set_config(&orig)?;
    Ok(serde_json::json!({
        "watchdog_resets": after.watchdog_resets - before,
        "reset_at_ms": reset_at.map(|r| r.as_millis() as u64),
        "calls": calls,
        "max_ms": max_ms,
        "state": after.state,
    }))
}

/// See acq-ctl's docs (`second-reader`).
pub(crate) fn second_reader(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
    use std::time::{Duration, Instant};
    let orig = dev.config()?;
    let mut c = orig;
    // 2 KB/s: 2 s a block; a 16-block ring (a full ring must move within 60 s).
    c.rate = 2 << 10;
    c.block_size = 4096;
    c.ring_log2 = 4;
    dev.stop()?;
    dev.set_config(&c)?;
    let fd = dev.raw_fd();
    let first = std::thread::spawn(move || {
        // SIGALRM is for the second reader (this thread's siblings): blocked here.
        // SAFETY: `set` is initialised by sigemptyset before use.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGALRM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let mut buf = vec![0u8; 4096];
        let t = Instant::now();
        // SAFETY: `buf` is valid for 4096 bytes of writes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        (n, t.elapsed().as_millis() as u64)
    });
    std::thread::sleep(Duration::from_millis(300));
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut buf = vec![0u8; 4096];
    // O_NONBLOCK on the shared file now (the first reader's call decided when it began).
    // SAFETY: plain fcntl calls on our descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    let t = Instant::now();
    // SAFETY: `buf` is valid for 4096 bytes of writes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let nowait = (n, errno(), t.elapsed().as_millis() as u64);
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    // SAFETY: a handler that does nothing, without SA_RESTART, so the signal ends the
    // blocking read below; `act` is fully initialised.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &act, std::ptr::null_mut());
        libc::alarm(1);
    }
    let t = Instant::now();
    // SAFETY: `buf` is valid for 4096 bytes of writes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let blocking = (n, errno(), t.elapsed().as_millis() as u64);
    let (first_n, first_ms) = first.join().unwrap_or((-1, 0));
    dev.stop()?;
    dev.set_config(&orig)?;
    let name = |(n, e, _): (isize, i32, u64)| {
        if n < 0 {
            acqdev::errno_name(e)
        } else {
            n.to_string()
        }
    };
    Ok(serde_json::json!({
        "first": first_n,
        "first_ms": first_ms,
        "nowait": name(nowait),
        "nowait_ms": nowait.2,
        "blocking": name(blocking),
        "blocking_ms": blocking.2,
    }))
}

/// `irq-mask-race`: starts the capture and the playback channel at nearly the same moment
/// from two threads, `ROUNDS` times, each time from a soft-reset card (IRQ_MASK = every
/// cause masked), and reads IRQ_MASK (BAR0 0x024) through the function's sysfs
/// `resource0` after both starts. One side's start is delayed by a sweep of 0 to 1 ms
/// (each side in turn), so that the two starts' register sequences meet at every offset
/// (a trapped register access takes tens of microseconds here). Both channels unmask their causes at their start, and each start
/// must leave the other's alone: `masked` counts the rounds that ended with a running
/// channel's causes masked (its interrupts lost until the driver's periodic recheck).
pub(crate) fn irq_mask_race(dev: &AcqDev, out_path: &str) -> std::io::Result<serde_json::Value> {
    use acq_hw::regs::{irq, reg};
    use std::io::Write;
    use std::sync::Barrier;
    const ROUNDS: u32 = 1000;
    const STEP_US: u64 = 2;
    let func = acqdev::bound_card()?;
    let res = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/sys/bus/pci/devices/{func}/resource0"))?;
    let bar0 = ReadOnlyMap::new(std::os::fd::AsRawFd::as_raw_fd(&res), 4096)?;
    let irq_mask = || bar0.read_u32(reg::IRQ_MASK).unwrap_or(u32::MAX);
    let block = vec![0u8; dev.config()?.block_size as usize];
    let barrier = Barrier::new(2);
    let (mut masked, mut first_bad) = (0u32, None);
    for round in 0..ROUNDS {
        // Playback idle (closed last round), capture stopped, IRQ_MASK back to ALL.
        dev.reset()?;
        let mut out = std::fs::OpenOptions::new().write(true).open(out_path)?;
        let delay = std::time::Duration::from_micros(u64::from(round / 2) * STEP_US);
        let spin = |late: bool| {
            let t = std::time::Instant::now();
            while late && t.elapsed() < delay {
                std::hint::spin_loop();
            }
        };
        let (cap, pb) = std::thread::scope(|s| {
            let cap = s.spawn(|| {
                barrier.wait();
                spin(round % 2 == 0);
                dev.start()
            });
            barrier.wait();
            spin(round % 2 == 1);
            // The first write starts the playback session.
            let pb = out.write_all(&block);
            (cap.join(), pb)
        });
        cap.unwrap_or_else(|_| Err(std::io::Error::other("capture start panicked")))?;
        pb?;
        let m = irq_mask();
        if m & (irq::ALL_CAPTURE | irq::VEC_PLAYBACK_CAUSES) != 0 {
            masked += 1;
            first_bad.get_or_insert((round, m));
        }
        dev.stop()?;
        drop(out);
    }
    Ok(serde_json::json!({
        "rounds": ROUNDS,
        "masked": masked,
        "first_bad": first_bad.map(|(r, m)| format!("round {r}: IRQ_MASK {m:#x}")),
    }))
}

/// `wake-latency`: 8 rounds, each a new session (stop, start) whose first block
/// (4 KiB at 16 KiB/s, an interrupt per block) comes 250 ms after its start, read with one
/// read(); prints each read's duration and the longest (`max_ms`). With the driver loaded
/// with `debug_wake_window_ms=300`, the block's interrupt lands while the reader is
/// between its last check of the ring and its sleep: a driver that loses that wake-up
/// sleeps its 200 ms re-check period (a read of about 500 ms, which the next block at
/// 500 ms cannot shorten); one that does not wakes the reader as soon as it sleeps
/// (about 300 ms).
pub(crate) fn wake_latency(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
    let ms = first_block_sessions(dev, 8, |_| Ok(()))?;
    Ok(serde_json::json!({
        "reads": ms.len(),
        "max_ms": ms.iter().copied().max().unwrap_or(0),
        "read_ms": ms,
    }))
}

/// `rounds` new sessions of a card that makes one 4 KiB block 250 ms after its start (16
/// KiB/s, an interrupt per block), each read with one read(): stop, start, `before(t0)`
/// (the session's start), read; returns each read's duration from `t0` in ms. The card's
/// configuration is restored whatever happened.
fn first_block_sessions(
    dev: &AcqDev,
    rounds: usize,
    mut before: impl FnMut(std::time::Instant) -> Result<(), String>,
) -> std::io::Result<Vec<u64>> {
    use std::time::Instant;
    let orig = dev.config()?;
    let mut c = orig;
    c.block_size = 4096;
    c.ring_log2 = 4;
    c.rate = 16 << 10;
    c.irq_mod_count = 1;
    c.irq_mod_time_us = 0;
    let mut run = || -> Result<Vec<u64>, String> {
        dev.stop()
            .and_then(|_| dev.set_config(&c))
            .map_err(|e| format!("configuring the card: {e}"))?;
        let mut buf = vec![0u8; 4096];
        let mut ms = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            dev.stop()
                .and_then(|_| dev.start())
                .map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            before(t0)?;
            dev.read(&mut buf).map_err(|e| {
                format!(
                    "read failed: {}",
                    acqdev::errno_name(e.raw_os_error().unwrap_or(0))
                )
            })?;
            ms.push(t0.elapsed().as_millis() as u64);
        }
        Ok(ms)
    };
    let result = run();
    // The card as it was, even when the stop fails; the first error is the one reported.
    let stopped = dev.stop();
    let restored = dev.set_config(&orig);
    let ms = result.map_err(std::io::Error::other)?;
    stopped?;
    restored?;
    Ok(ms)
}

/// `woken-late`: a reader woken by its block's interrupt but kept from its CPU until past
/// its re-check deadline. Each round stops the card and starts a session that makes one
/// 4 KiB block 250 ms later (16 KiB/s), then reads it: the reader sleeps a first 200 ms
/// re-check period (nothing), then a second one, in which the block's interrupt wakes it
/// at about 250 ms. A SCHED_FIFO thread on the reader's CPU (both pinned to CPU 0) spins
/// from 220 ms to 430 ms, so the woken reader runs only after its second period's
/// deadline (about 405 ms): its wait ends as a timeout that finds completions, the same
/// as a wait whose interrupt never woke it, and only the driver's record of the wake-up
/// tells the two apart. Prints each read's duration and how many ended after the spin
/// (`held`, reads of at least 400 ms: the scene did what it says).
pub(crate) fn woken_late(dev: &AcqDev) -> std::io::Result<serde_json::Value> {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    const ROUNDS: usize = 6;
    const SPIN_FROM: Duration = Duration::from_millis(220);
    const SPIN_UNTIL: Duration = Duration::from_millis(430);
    // The spinner first, and only then the card: a thread that cannot be pinned or made
    // real-time (EPERM, say) fails the scene before anything changed.
    pin_to_cpu0()?;
    let (starts, rx) = mpsc::channel::<Instant>();
    let (ready_tx, ready) = mpsc::channel::<std::io::Result<()>>();
    let hog = std::thread::spawn(move || {
        let setup = pin_to_cpu0().and_then(|_| set_fifo(1));
        let ok = setup.is_ok();
        let _ = ready_tx.send(setup);
        if !ok {
            return;
        }
        // Each round's start; the channel closes after the last round.
        while let Ok(t0) = rx.recv_timeout(Duration::from_secs(30)) {
            std::thread::sleep((t0 + SPIN_FROM).saturating_duration_since(Instant::now()));
            while t0.elapsed() < SPIN_UNTIL {
                std::hint::spin_loop();
            }
        }
    });
    let setup = ready
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| Err(std::io::Error::other("the spinning thread never started")));
    if let Err(e) = setup {
        drop(starts);
        let _ = hog.join();
        return Err(std::io::Error::new(
            e.kind(),
            format!("making the spinning thread real-time on CPU 0: {e}"),
        ));
    }
    let result = first_block_sessions(dev, ROUNDS, |t0| {
        starts
            .send(t0)
            .map_err(|_| "the spinning thread ended early".to_string())
    });
    drop(starts);
    let joined = hog.join();
    let ms = result?;
    joined.map_err(|_| std::io::Error::other("the spinning thread panicked"))?;
    Ok(serde_json::json!({
        "reads": ms.len(),
        "held": ms.iter().filter(|&&m| m >= 400).count(),
        "read_ms": ms,
    }))
}

/// Pins the calling thread to CPU 0.
fn pin_to_cpu0() -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_SET writes bit 0 of the set
    // we own; sched_setaffinity reads `size_of` bytes of it and changes only this thread.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the calling thread SCHED_FIFO at `priority` (below the kernel's IRQ threads, 50,
/// and above every normal task).
fn set_fifo(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param the call only reads; pid 0 is this thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

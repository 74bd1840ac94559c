//! The Rust kernel driver (driver/acq.ko) in the VM: probe with one and two cards, stream
//! and verify every byte through read(), control paths (ioctls, O_NONBLOCK, signals,
//! stop/start, rate), error paths (error completions, overflow, watchdog, removal,
//! unload with open files) and a clean kernel log after each.
//!
//! Needs `make driver guest build` (the module, the guest tools, the device model).
//! `ACQ_TEST_MIB` scales the per-card stream volume (default 256 MiB).

use std::time::Duration;

use acq_e2e::gate::{beside_others, quiet};
use acq_e2e::{
    assert_dmesg_clean, boot_configured, driver_image, json_num, json_true, json_u64,
    model_request, pool, stream_mib, Guest, CMD,
};
use anyhow::{ensure, Context, Result};

/// How long a long stream may take in the guest.
const STREAM: Duration = Duration::from_secs(600);

/// A guest from the pool (`acq_e2e::pool`) with `cards` cards, the driver not loaded.
fn boot(test: &str, cards: usize) -> Result<Guest> {
    let paths = acq::paths::Paths::discover()?;
    pool::lease(test, pool::Spec::cards(cards, driver_image(&paths)?))
}

fn insmod(vm: &mut acq::vm::Vm, cards: usize) -> Result<()> {
    insmod_with(vm, cards, "")
}

/// Loads the driver with module parameters `params` and checks that `cards` cards probed.
fn insmod_with(vm: &mut acq::vm::Vm, cards: usize, params: &str) -> Result<()> {
    vm.sh_ok(&format!("insmod /lib/modules/acq.ko {params}"), CMD)?;
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    let probed = dmesg.lines().filter(|l| l.contains("/dev/acq")).count();
    ensure!(
        probed == cards,
        "{probed} of {cards} cards probed:\n{dmesg}"
    );
    let ls = vm.sh_ok("ls /dev", CMD)?;
    for i in 0..cards {
        ensure!(
            ls.lines().any(|l| l.trim() == format!("acq{i}")),
            "/dev/acq{i} missing after insmod; /dev: {ls}"
        );
    }
    Ok(())
}

fn rmmod_clean(vm: &mut acq::vm::Vm) -> Result<()> {
    vm.sh_ok("rmmod acq", CMD)?;
    ensure!(!vm.sh_ok("cat /proc/modules", CMD)?.contains("acq "));
    assert_dmesg_clean(vm)
}

/// Runs `acq-stream --mode read ARGS` and checks its verdict; returns its JSON line.
fn stream(vm: &mut acq::vm::Vm, args: &str) -> Result<String> {
    acq_e2e::acq_stream(vm, &format!("--mode read {args}"))
}

#[test]
fn driver_loads_and_unloads_without_a_card() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("driver-nocard", 0)?;
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    ensure!(vm.sh_ok("cat /proc/modules", CMD)?.contains("acq "));
    ensure!(!vm.sh_ok("ls /dev", CMD)?.contains("acq0"));
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

#[test]
fn driver_one_card_streams_verified_and_unloads() -> Result<()> {
    let _gate = beside_others();
    let mib = stream_mib();
    let mut vm = boot("driver-one", 1)?;
    insmod(&mut vm, 1)?;
    let info = vm.sh_ok("acq-ctl info", CMD)?;
    ensure!(json_u64(&info, "abi_version") == 1, "info: {info}");

    // Standard tools work: dd reads whole 1 MiB blocks (blocking reads fill the request).
    let dd = vm.sh_ok("dd if=/dev/acq0 of=/dev/null bs=1M count=8 2>&1", STREAM)?;
    ensure!(dd.contains("8+0 records in"), "dd: {dd}");
    // COUNTER pattern with seed 0: word i is i (little-endian).
    let od = vm.sh_ok(
        "dd if=/dev/acq0 bs=16 count=1 2>/dev/null | od -A n -t x8",
        CMD,
    )?;
    ensure!(
        od.split_whitespace().collect::<Vec<_>>() == ["0000000000000000", "0000000000000001"],
        "first words of the stream: {od}"
    );

    // The main stream: every byte verified (PRBS catches bit errors).
    let out = stream(
        &mut vm,
        &format!("--device /dev/acq0 --bytes {mib}M --pattern prbs --seed 0x1234 --verify"),
    )?;
    ensure!(
        json_u64(&out, "verified_bytes") == mib << 20,
        "not every byte verified: {out}"
    );
    eprintln!(
        "driver: one card, {mib} MiB through read(): {:.1} MB/s",
        json_num(&out, "mb_per_s").unwrap_or(0.0)
    );

    // A single read() of 64 MiB.
    let out = stream(
        &mut vm,
        "--device /dev/acq0 --bytes 64M --read-size 64M --verify --pattern counter --seed 7",
    )?;
    ensure!(json_u64(&out, "short_reads") == 0, "64 MiB read: {out}");

    // The stats agree.
    let stats = vm.sh_ok("acq-ctl stats", CMD)?;
    ensure!(json_u64(&stats, "errors") == 0, "stats: {stats}");
    ensure!(json_u64(&stats, "interrupts") > 0, "no interrupts: {stats}");

    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

#[test]
fn driver_two_cards_stream_in_parallel() -> Result<()> {
    let _gate = beside_others();
    let mib = stream_mib();
    let mut vm = boot("driver-two", 2)?;
    insmod(&mut vm, 2)?;
    let cmd = format!(
        "acq-stream --mode read --device /dev/acq0 --bytes {mib}M --pattern prbs --seed 1 --verify > /tmp/s0 & \
         acq-stream --mode read --device /dev/acq1 --bytes {mib}M --pattern counter --seed 2 --verify > /tmp/s1 & \
         wait; cat /tmp/s0; cat /tmp/s1"
    );
    let out = vm.sh_ok(&cmd, STREAM)?;
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    ensure!(lines.len() == 2, "two results expected: {out}");
    for (i, l) in lines.iter().enumerate() {
        ensure!(json_true(l, "ok"), "card {i}: {l}");
        ensure!(json_u64(l, "verified_bytes") == mib << 20, "card {i}: {l}");
        eprintln!(
            "driver: card {i} of 2, {mib} MiB in parallel: {:.1} MB/s",
            json_num(l, "mb_per_s").unwrap_or(0.0)
        );
    }
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

#[test]
fn driver_control_paths() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("driver-control", 1)?;
    insmod(&mut vm, 1)?;

    // Every invalid ioctl is refused with the documented errno; nothing changes.
    let out = vm.sh("acq-ctl probe-invalid", CMD)?;
    ensure!(
        out.success() && json_true(&out.stdout, "ok"),
        "invalid ioctls: {}",
        out.stdout
    );

    // One opener at a time: a second open gets EBUSY.
    let out = vm.sh("exec 3</dev/acq0; acq-ctl stats; exec 3<&-", CMD)?;
    ensure!(
        acq_e2e::json_str(&out.stdout, "errno").as_deref() == Some("EBUSY"),
        "second open: {out:?}"
    );

    // Stop and start mid-stream: a new session restarts at offset 0, still verified.
    let out = stream(
        &mut vm,
        "--bytes 32M --restart-at 16M --verify --pattern prbs --seed 3",
    )?;
    ensure!(json_true(&out, "restarted"), "{out}");

    // O_NONBLOCK on a slow source: EAGAIN while empty, the data still complete.
    let out = stream(
        &mut vm,
        "--nonblock --bytes 256K --rate 256K --block 4096 --verify",
    )?;
    ensure!(json_u64(&out, "EAGAIN") > 0, "no EAGAIN seen: {out}");

    // The rate limit: 4 MiB/s, within 5%, measured on the host from the card's own
    // production counter over 4 s of a verified 24 MiB stream. (The guest's clock is not a
    // ruler: under TCG on a loaded host it runs slow, and a rate measured with it came out
    // 10-80% high.)
    vm.sh_ok(
        "acq-stream --mode read --bytes 24M --rate 4M --verify --irq-count 8 > /tmp/rate 2>&1 &",
        CMD,
    )?;
    let produced = |vm: &acq::vm::Vm| -> Result<(std::time::Instant, f64)> {
        let line = model_request(vm, 0, r#"{"cmd":"counters"}"#)?;
        let at = std::time::Instant::now();
        let n = json_num(&line, "bytes_produced").context("no bytes_produced")?;
        Ok((at, n))
    };
    std::thread::sleep(Duration::from_secs(1));
    let (t0, n0) = produced(&vm)?;
    std::thread::sleep(Duration::from_secs(4));
    let (t1, n1) = produced(&vm)?;
    let got = (n1 - n0) / (t1 - t0).as_secs_f64();
    let rate = 4.0 * 1048576.0;
    let out = vm.sh_ok(
        "i=0; while ! grep -q '}' /tmp/rate && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done; \
         cat /tmp/rate",
        STREAM,
    )?;
    ensure!(json_true(&out, "ok"), "rate-limited stream: {out}");
    ensure!(
        (got - rate).abs() <= rate * 0.05,
        "card produced {got:.0} B/s over 4 s, configured {rate:.0} B/s"
    );

    // A reader blocked on a slow source, interrupted by a signal: EINTR or a short count,
    // never a kernel-internal code.
    let out = vm.sh(
        "acq-stream --mode read --bytes 16M --read-size 16M --rate 64K --stop-on-signal > /tmp/sig & \
         sleep 3; kill -USR1 $!; wait; cat /tmp/sig",
        CMD,
    )?;
    let line = out.stdout.trim();
    ensure!(
        json_true(line, "stopped_by_signal") && json_true(line, "ok"),
        "signal: {line}"
    );
    ensure!(
        json_u64(line, "EINTR") + json_u64(line, "short_reads") >= 1,
        "neither EINTR nor a short count: {line}"
    );
    // A kernel-internal errno (ERESTARTSYS and its kind, 512 and up) must never reach
    // user space: the report names an errno it has no name for `errnoN`.
    let errnos = acq_e2e::json_field(line, "errno")
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let internal = |k: &str| {
        k.strip_prefix("errno")
            .and_then(|n| n.parse::<i32>().ok())
            .is_some_and(|n| n >= 512)
    };
    ensure!(
        !errnos.keys().any(|k| internal(k)),
        "kernel-internal errno: {line}"
    );

    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

#[test]
fn driver_error_paths() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("driver-errors", 1)?;
    insmod(&mut vm, 1)?;

    // Error completions: EIO once per error, the stream continues and verifies.
    model_request(&vm, 0, r#"{"cmd":"inject","fault":"dma_error","count":2}"#)?;
    let out = stream(&mut vm, "--bytes 8M --verify --pattern prbs")?;
    ensure!(
        json_u64(&out, "EIO") >= 1,
        "no EIO after error completions: {out}"
    );
    ensure!(json_u64(&out, "verified_bytes") == 8 << 20, "{out}");

    // Overflow: EPIPE once, the lost bytes in the stats, verification resumes by offset.
    model_request(&vm, 0, r#"{"cmd":"inject","fault":"overflow","count":4}"#)?;
    let out = stream(&mut vm, "--bytes 8M --verify --pattern counter --seed 9")?;
    ensure!(
        json_u64(&out, "EPIPE") >= 1,
        "no EPIPE after an overflow: {out}"
    );
    ensure!(json_u64(&out, "lost_bytes") >= 4 * 4096, "{out}");

    // A real overflow: the source (200 MiB/s) outruns a verifying reader. Every gap gives
    // one EPIPE; verification resumes at the offset the driver reports, every byte read is
    // checked.
    let out = stream(
        &mut vm,
        "--bytes 16M --rate 200M --verify --pattern prbs --seed 11",
    )?;
    ensure!(
        json_u64(&out, "EPIPE") >= 1,
        "no EPIPE under overload: {out}"
    );
    // `overflows` counts since the driver loaded: the injected overflow above is in it.
    ensure!(
        json_u64(&out, "overflows") > json_u64(&out, "EPIPE"),
        "{out}"
    );
    ensure!(json_u64(&out, "verified_bytes") == 16 << 20, "{out}");

    // A card that hangs mid-stream (no progress, registers read all-ones, writes ignored):
    // the watchdog resets it (soft reset, then a function-level reset), the reader gets
    // EIO once, and the stream goes on verified in a new session.
    vm.sh_ok(
        "acq-stream --mode read --bytes 24M --rate 4M --verify --timeout 120 \
         > /tmp/hang 2>&1 </dev/null &",
        CMD,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    model_request(&vm, 0, r#"{"cmd":"inject","fault":"hang"}"#)?;
    let out = vm.sh_ok(
        "while ! grep -q '\"ok\"' /tmp/hang; do sleep 1; done; cat /tmp/hang",
        STREAM,
    )?;
    ensure!(json_true(&out, "ok"), "stream across a hang: {out}");
    ensure!(
        json_u64(&out, "watchdog_resets") >= 1,
        "no watchdog reset: {out}"
    );
    ensure!(
        json_u64(&out, "EIO") >= 1,
        "the reset was not reported: {out}"
    );
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    ensure!(
        dmesg.contains("no progress"),
        "watchdog message missing:\n{dmesg}"
    );

    // Unloading with an open file is refused; after close it works (reloaded below).
    let out = vm.sh("exec 3</dev/acq0; rmmod acq; echo rc=$?; exec 3<&-", CMD)?;
    ensure!(
        !out.stdout.contains("rc=0"),
        "rmmod with an open file: {out:?}"
    );
    vm.sh_ok("rmmod acq && insmod /lib/modules/acq.ko", CMD)?;

    // The card is removed while a reader sleeps: the reader gets ENODEV, nothing breaks.
    let out = vm.sh(
        "acq-stream --mode read --bytes 16M --rate 64K > /tmp/rm & sleep 3; \
         for d in /sys/bus/pci/devices/*; do \
           [ \"$(cat $d/class)\" = 0x118000 ] && echo 1 > $d/remove; done; \
         wait; cat /tmp/rm",
        CMD,
    )?;
    let fatal = acq_e2e::json_str(&out.stdout, "fatal").unwrap_or_default();
    ensure!(
        fatal.contains("ENODEV") || fatal.contains("No such device"),
        "reader after removal: {out:?}"
    );
    ensure!(!vm.sh_ok("ls /dev", CMD)?.contains("acq0"));
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

#[test]
fn driver_msi_fallback() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("driver-msi", 1)?;
    // force_msi=1 takes the fallback path: one MSI vector for every cause.
    insmod_with(&mut vm, 1, "force_msi=1")?;
    let info = vm.sh_ok("acq-ctl info", CMD)?;
    ensure!(
        acq_e2e::json_str(&info, "irq_mode").as_deref() == Some("msi"),
        "info: {info}"
    );
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    ensure!(
        dmesg.contains("/dev/acq0") && dmesg.contains("MSI\n"),
        "{dmesg}"
    );
    let out = stream(&mut vm, "--bytes 32M --verify --pattern prbs --seed 5")?;
    ensure!(json_u64(&out, "verified_bytes") == 32 << 20, "{out}");
    // Error causes arrive on the same vector: an error completion is still seen.
    model_request(&vm, 0, r#"{"cmd":"inject","fault":"dma_error","count":1}"#)?;
    let out = stream(&mut vm, "--bytes 8M --verify")?;
    ensure!(json_u64(&out, "EIO") >= 1, "no EIO under MSI: {out}");
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// A card that takes 5 ms to stop (the model's `slow_stop`; the spec allows 10 ms): the
/// driver waits for STATUS.RUNNING to clear instead of resetting the whole function,
/// which would also stop the playback channel. The model counts the resets: three
/// start-stop cycles add none. v1 gave up after 8 register reads (well under 1 ms under
/// TCG) and soft-reset the card on every such stop.
#[test]
fn a_stop_within_the_specs_10_ms_is_waited_for() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("driver-slow-stop", 1)?;
    insmod(&mut vm, 1)?;
    let resets = |vm: &acq::vm::Vm| -> Result<u64> {
        let line = model_request(vm, 0, r#"{"cmd":"counters"}"#)?;
        json_num(&line, "resets")
            .map(|n| n as u64)
            .with_context(|| format!("no resets counter: {line}"))
    };
    let before = resets(&vm)?;
    model_request(
        &vm,
        0,
        r#"{"cmd":"inject","fault":"slow_stop","ms":5,"count":3}"#,
    )?;
    // `acq-ctl start` starts a session and its close() stops it: three slow stops.
    vm.sh_ok("acq-ctl start && acq-ctl start && acq-ctl start", CMD)?;
    let after = resets(&vm)?;
    let counters = vm.counters(0)?;
    ensure!(
        acq_e2e::json_field(&counters, "slow_stop") == Some(0.into()),
        "the three stops did not all reach the card: {counters}"
    );
    ensure!(
        after == before,
        "the driver reset the card {} times for stops that took 5 ms",
        after - before
    );
    // And the card streams on.
    stream(&mut vm, "--bytes 4M --verify")?;
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// The watchdog's function-level reset runs without the card's mutex: a hung card (the
/// model's `hang`, which only a reset ends) is reset while `acq-ctl reset-probe` calls
/// ACQ_IOC_GET_STATS every 2 ms, and no call waits anywhere near the 100 ms an FLR takes
/// at least. v1 held the mutex across the reset, so an ioctl, the interrupt threads,
/// poll() and unbind waited for it.
#[test]
fn a_function_reset_holds_up_nobody() -> Result<()> {
    let _gate = quiet();
    let mut vm = boot("driver-flr-unlocked", 1)?;
    insmod(&mut vm, 1)?;
    let control = vm.models[0].control.clone();
    let inject = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        acq_e2e::control_request(&control, r#"{"cmd":"inject","fault":"hang"}"#)
    });
    let out = vm.sh_ok("acq-ctl reset-probe", Duration::from_secs(60))?;
    inject
        .join()
        .map_err(|_| anyhow::anyhow!("the injector panicked"))??;
    eprintln!("reset-probe: {}", out.trim());
    ensure!(
        json_u64(&out, "watchdog_resets") >= 1,
        "the watchdog never reset the hung card: {out}"
    );
    let max_ms = json_num(&out, "max_ms").context("no max_ms")?;
    ensure!(
        max_ms < 90.0,
        "an ioctl waited {max_ms:.0} ms for the function reset: {out}"
    );
    // The card came back: a new session streams.
    stream(&mut vm, "--bytes 4M --verify")?;
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    ensure!(
        dmesg.contains("function reset: 0, card back"),
        "no function reset in the kernel log:\n{dmesg}"
    );
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// IRQ_MASK is one register for both channels: capture and playback started at the same
/// moment (one delayed by a sweep of 0 to 1 ms), 1000 times from a soft-reset card, must
/// each time leave both channels' causes unmasked (`acq-ctl irq-mask-race` reads the
/// register through sysfs `resource0`). v1 changed it under each channel's own lock, and
/// playback's read-modify-write could put back the mask capture had just cleared: capture then ran on the 200 ms recheck alone
/// (the driver before cec9d49 fails this in 4 or 5 rounds of 1000).
#[test]
fn concurrent_starts_leave_both_channels_unmasked() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("driver-irq-mask-race", 1)?;
    insmod(&mut vm, 1)?;
    let out = vm.sh_ok("acq-ctl irq-mask-race", Duration::from_secs(300))?;
    eprintln!("irq-mask-race: {}", out.trim());
    ensure!(json_u64(&out, "rounds") == 1000, "{out}");
    ensure!(
        json_u64(&out, "masked") == 0,
        "concurrent starts left a channel's interrupts masked: {out}"
    );
    assert_dmesg_clean(&mut vm)?;
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// A wake-up that lands between a reader's last check of the ring and its sleep is not
/// lost. The driver's test-only `debug_wake_window_ms=300` holds every waiter 300 ms in
/// that window, and each of `acq-ctl wake-latency`'s new sessions makes its first block
/// 250 ms after its start, so the block's interrupt lands in it: a reader that misses it
/// sleeps its 200 ms re-check (reads of about 500 ms: the next block comes at 500 ms); the
/// driver wakes it as it goes to sleep (about 300 ms). v1's hard handler notified without
/// the mutex: 500 ms (run against the driver before 0b61261 with the same window added at
/// the same place); so does a hard handler that never hands the wake-up to its thread
/// (tried: reads of 475 to 500 ms). The scene read a stream of blocks 250 ms apart
/// before, where the next block rescued such a reader: 446 ms, under this test's limit.
#[test]
fn a_wake_up_between_the_last_check_and_the_sleep_is_not_lost() -> Result<()> {
    let _gate = quiet();
    let mut vm = boot("driver-wake-window", 1)?;
    insmod_with(&mut vm, 1, "debug_wake_window_ms=300")?;
    let out = vm.sh_ok("acq-ctl wake-latency", Duration::from_secs(60))?;
    eprintln!("wake-latency: {}", out.trim());
    ensure!(json_u64(&out, "reads") == 8, "{out}");
    let max_ms = json_u64(&out, "max_ms");
    ensure!(
        max_ms >= 290,
        "no read waited the 300 ms window: the parameter had no effect: {out}"
    );
    ensure!(
        max_ms < 420,
        "a read slept {max_ms} ms: a wake-up in the window was lost: {out}"
    );
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// A reader its block's interrupt woke, but that a real-time thread kept from its CPU
/// until past its re-check deadline, is late, not lost: the driver must not report a
/// lost wake-up (which fails every test). `acq-ctl woken-late` makes the case six times
/// (a SCHED_FIFO thread spins on the reader's CPU from before the block until after the
/// deadline). The driver before this test judged by time alone (an interrupt well before
/// the deadline, a reader that ran less than 50 ms after it) and reported "lost wake-up"
/// here, as it did once in CI under an interrupt storm, whose IRQ threads starve the
/// reader the same way.
#[test]
fn a_waiter_woken_but_kept_from_its_cpu_is_not_a_lost_wake_up() -> Result<()> {
    let _gate = quiet();
    let mut vm = boot("driver-woken-late", 1)?;
    insmod(&mut vm, 1)?;
    let out = vm.sh_ok("acq-ctl woken-late", Duration::from_secs(60))?;
    eprintln!("woken-late: {}", out.trim());
    ensure!(json_u64(&out, "reads") == 6, "{out}");
    ensure!(
        json_u64(&out, "held") >= 3,
        "fewer than 3 of 6 reads were held past their deadline: the scene proves nothing: {out}"
    );
    let stats = vm.sh_ok("acq-ctl stats", CMD)?;
    ensure!(
        json_u64(&stats, "lost_wakeups") == 0,
        "late runs counted as lost wake-ups: {stats}"
    );
    assert_dmesg_clean(&mut vm)?;
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// Not a test: boots `ACQ_DEBUG_CARDS` cards (default 1) with the driver and the guest
/// tools, runs the shell command `ACQ_DEBUG_CMD` and prints its output. For poking at the
/// driver by hand: `ACQ_DEBUG_CMD='insmod /lib/modules/acq.ko && acq-ctl info' cargo test
/// -p acq-e2e --test vm driver::debug_shell -- --ignored --nocapture`.
#[test]
#[ignore]
fn debug_shell() -> Result<()> {
    let cards = std::env::var("ACQ_DEBUG_CARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cmd = std::env::var("ACQ_DEBUG_CMD").unwrap_or_else(|_| "dmesg | tail".into());
    let mut vm = boot("driver-debug", cards)?;
    let out = vm.sh(&cmd, STREAM)?;
    println!("status {}\n{}{}", out.status, out.stdout, out.stderr);
    vm.shutdown(CMD)
}

/// A card that does not answer at probe (the model's `hang`: BAR0 reads all-ones, config
/// space still works): probe refuses it, and bus mastering is off afterwards (the command
/// register's bit 2 reads 0), so a function the driver did not bind cannot write into
/// memory. v1 enabled bus mastering before identifying the card and left it on.
#[test]
fn driver_probe_failure_leaves_bus_mastering_off() -> Result<()> {
    let _gate = beside_others();
    // A card that probe identifies (bus mastering goes on) and then refuses: it has
    // neither MSI-X nor MSI. (A hung card no longer makes probe fail: probe revives it
    // with a function reset, scenario fault-hang-at-probe.)
    let paths = acq::paths::Paths::discover()?;
    let (modules, files) = driver_image(&paths)?;
    let (mut vm, _) = boot_configured(
        "driver-probe-fail",
        1,
        r#"{"msix_vectors": 0, "msi": false}"#,
        modules,
        files,
    )?;
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    ensure!(
        dmesg.contains("the card cannot interrupt, not binding"),
        "probe did not refuse the card without interrupts:\n{dmesg}"
    );
    let out = vm.sh_ok(
        "for d in /sys/bus/pci/devices/*; do \
           if [ \"$(cat $d/class)\" = 0x118000 ]; then od -An -tx1 -j4 -N1 $d/config; fi; \
         done",
        CMD,
    )?;
    let command = u8::from_str_radix(out.trim(), 16)
        .with_context(|| format!("no command register read for the card: {out:?}"))?;
    ensure!(
        command & 0x04 == 0,
        "bus mastering still on after a failed probe (PCI command register {command:#04x})"
    );
    rmmod_clean(&mut vm)?;
    vm.shutdown(CMD)
}

//! The capture disk (`acq-sink`, docs/sink.md) in the VM: the card's stream spliced to the
//! raw virtio-blk disk is verified on the host byte for byte; a write of other data is
//! reported at its exact first bad offset; and every sink fault reaches the guest as it
//! should (EIO for write errors, disk full and flush errors; slow completions for stall,
//! latency and the bandwidth cap).
//!
//! Needs `make driver guest build` (the module, the guest tools, the device model and the
//! sink).

use acq_e2e::gate::beside_others;
use std::time::{Duration, Instant};

use acq::disks::DiskSpec;
use acq::vm::{Card, Vm, VmConfig};
use acq_e2e::{assert_dmesg_clean, driver_image, CMD};
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// Disk size.
const DISK: u64 = 64 * MIB;
/// Bytes streamed from the card to the disk.
const STREAMED: u64 = 16 * MIB;

fn counters(vm: &Vm) -> Result<Value> {
    vm.disk_servers[0].counters().context("sink counters")
}

fn inject(vm: &Vm, req: Value) -> Result<()> {
    vm.disk_servers[0].request(&req).map(|_| ())
}

fn n(c: &Value, key: &str) -> u64 {
    c[key].as_u64().unwrap_or(u64::MAX)
}

/// Disk offset of the first byte of `[offset, offset + len)` where the COUNTER stream with
/// seed 0 is not zero (what a block of zeros written there first differs from).
fn first_nonzero_counter_byte(offset: u64, len: u64) -> Option<u64> {
    (offset..offset + len).find(|o| ((o / 8) >> ((o % 8) * 8)) & 0xFF != 0)
}

/// A file on an ext2 filesystem on the stored disk (vdb), checked on the host in the store
/// file: every 4 KiB block of the card's COUNTER stream (seed 0) names its own stream
/// offset in its first word, so the blocks are found wherever the filesystem put them.
fn filesystem(vm: &mut Vm) -> Result<()> {
    const FILE: u64 = 8 * MIB;
    vm.sh_ok(
        &format!(
            "mke2fs -q -b 4096 /dev/vdb && mount -t ext2 /dev/vdb /mnt && \
             dd if=/dev/acq0 of=/mnt/capture bs=1M count={} iflag=fullblock && \
             sync && umount /mnt",
            FILE / MIB
        ),
        CMD,
    )?;
    let img = vm.disk_servers[1]
        .store
        .clone()
        .context("vdb has no store file")?;
    let data = std::fs::read(&img).with_context(|| format!("reading {}", img.display()))?;
    let blocks = (FILE / 4096) as usize;
    let mut found = vec![false; blocks];
    let mut expect = vec![0u8; 4096];
    for chunk in data.chunks_exact(4096) {
        let word = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
        let off = word.wrapping_mul(8);
        if off % 4096 != 0 || off >= FILE {
            continue;
        }
        for (i, b) in expect.chunks_exact_mut(8).enumerate() {
            b.copy_from_slice(&(word + i as u64).to_le_bytes());
        }
        if chunk == expect.as_slice() {
            found[(off / 4096) as usize] = true;
        }
    }
    let missing = found.iter().filter(|f| !**f).count();
    ensure!(
        missing == 0,
        "{missing} of {blocks} stream blocks of /mnt/capture are not on the disk (first: {:?})",
        found.iter().position(|f| !*f).map(|b| b * 4096)
    );
    let c = vm.disk_servers[1].counters()?;
    ensure!(n(&c, "bytes_written") >= FILE, "{c}");
    eprintln!(
        "ext2 on vdb: {} MiB file found block by block in the store file; sink: {} bytes written, {} flushes",
        FILE / MIB,
        n(&c, "bytes_written"),
        n(&c, "flushes")
    );
    Ok(())
}

/// Runs `cmd` in the guest and returns (success, stdout + stderr, elapsed).
fn run(vm: &mut Vm, cmd: &str) -> Result<(bool, String, Duration)> {
    let t = Instant::now();
    let out = vm.sh(cmd, CMD)?;
    Ok((
        out.success(),
        format!("{}{}", out.stdout, out.stderr),
        t.elapsed(),
    ))
}

#[test]
fn card_stream_to_the_capture_disk_is_verified_on_the_host_and_faults_reach_the_guest() -> Result<()>
{
    let _gate = beside_others();
    let paths = acq::paths::Paths::discover()?;
    let (modules, files) = driver_image(&paths)?;
    let disk = DiskSpec {
        size: DISK,
        ..DiskSpec::default()
    };
    let cfg = VmConfig {
        cards: vec![Card::Model { config: None }],
        // vda: verified raw disk; vdb: a stored disk for a filesystem.
        disks: vec![
            disk,
            DiskSpec {
                size: DISK,
                store: true,
                verify: false,
                ..DiskSpec::default()
            },
        ],
        modules,
        files,
        run_dir: paths.repo.join("target/acq-runs/test-sink"),
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(&cfg, &paths)?;
    let r = steps(&mut vm);
    if r.is_err() {
        vm.mark_failed();
        eprintln!("sink log: {}", vm.disk_servers[0].log.display());
    }
    r?;
    vm.shutdown(Duration::from_secs(60))?;
    Ok(())
}

fn steps(vm: &mut Vm) -> Result<()> {
    // The disk: size, block size and ID as the sink advertises them.
    let size = vm.sh_ok("cat /sys/block/vda/size", CMD)?;
    ensure!(size.trim() == (DISK / 512).to_string(), "vda size {size}");
    let serial = vm.sh_ok("cat /sys/block/vda/serial 2>/dev/null || true", CMD)?;
    eprintln!("vda serial: {serial:?}");
    let c0 = counters(vm)?;
    ensure!(n(&c0, "connections") == 1, "{c0}");
    ensure!(n(&c0, "bytes_written") == 0, "nothing written yet: {c0}");

    // 1. The card's stream, spliced to the raw disk with O_DIRECT: every byte verified.
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    let (ok, out, took) = run(
        vm,
        &format!(
            "dd if=/dev/acq0 of=/dev/vda bs=64k count={} iflag=fullblock oflag=direct",
            STREAMED / (64 << 10)
        ),
    )?;
    ensure!(ok, "dd card -> disk failed: {out}");
    eprintln!(
        "card -> disk (O_DIRECT, 64 KiB): {} MiB in {:.2} s: {out}",
        STREAMED / MIB,
        took.as_secs_f64()
    );
    let c = counters(vm)?;
    ensure!(n(&c, "bytes_written") == STREAMED, "{c}");
    ensure!(n(&c, "bytes_verified") == STREAMED, "{c}");
    ensure!(n(&c, "bytes_mismatched") == 0, "{c}");
    ensure!(c["first_mismatch"].is_null(), "{c}");
    ensure!(
        n(&c, "holes") == 0 && n(&c, "highest_written") == STREAMED,
        "{c}"
    );

    // 2. Zeros at a known offset past the stream: the exact first bad byte, and a hole.
    let seek = 5000u64;
    let off = seek * 4096;
    vm.sh_ok(
        &format!("dd if=/dev/zero of=/dev/vda bs=4096 seek={seek} count=1 oflag=direct"),
        CMD,
    )?;
    let c = counters(vm)?;
    let expect = first_nonzero_counter_byte(off, 4096).context("all-zero stream block")?;
    ensure!(n(&c, "first_mismatch") == expect, "expected {expect}: {c}");
    ensure!(n(&c, "mismatched_writes") == 1, "{c}");
    ensure!(
        n(&c, "holes") == 1 && c["first_hole"] == json!([STREAMED, off]),
        "{c}"
    );

    // 3. write_error: the next write fails with EIO in the guest, nothing is recorded.
    let before = counters(vm)?;
    inject(vm, json!({"cmd":"inject","fault":"write_error","count":1}))?;
    let (ok, out, _) = run(
        vm,
        "dd if=/dev/acq0 of=/dev/vda bs=4096 count=1 seek=8192 oflag=direct",
    )?;
    ensure!(
        !ok && out.contains("Input/output error"),
        "write_error: {out}"
    );
    let c = counters(vm)?;
    ensure!(n(&c, "write_errors") == 1, "{c}");
    ensure!(n(&c, "failed_write_bytes") == 4096, "{c}");
    ensure!(n(&c, "first_failed_write") == 8192 * 4096, "{c}");
    ensure!(n(&c, "bytes_written") == n(&before, "bytes_written"), "{c}");
    // The count is spent: the same write now succeeds.
    vm.sh_ok(
        "dd if=/dev/acq0 of=/dev/vda bs=4096 count=1 seek=0 oflag=direct",
        CMD,
    )?;

    // 4. disk_full: writes reaching past 32 MiB fail, below still work; cleared, all work.
    inject(
        vm,
        json!({"cmd":"inject","fault":"disk_full","at": 32 * MIB}),
    )?;
    let past = "dd if=/dev/zero of=/dev/vda bs=4096 count=1 seek=8192 oflag=direct";
    let (ok, out, _) = run(vm, past)?;
    ensure!(
        !ok && out.contains("Input/output error"),
        "disk_full: {out}"
    );
    vm.sh_ok(
        "dd if=/dev/acq0 of=/dev/vda bs=4096 count=1 oflag=direct",
        CMD,
    )?;
    ensure!(n(&counters(vm)?, "disk_full_errors") == 1);
    inject(vm, json!({"cmd":"clear_faults"}))?;
    vm.sh_ok(past, CMD)?;

    // 5. flush_error: fsync of the raw disk fails once.
    inject(vm, json!({"cmd":"inject","fault":"flush_error","count":1}))?;
    let (ok, out, _) = run(vm, "dd if=/dev/acq0 of=/dev/vda bs=4096 count=1 conv=fsync")?;
    ensure!(!ok, "flush_error: fsync succeeded: {out}");
    let c = counters(vm)?;
    ensure!(n(&c, "flush_errors") == 1, "{c}");

    // 6. stall: a write issued during a 2 s stall completes only after it.
    inject(vm, json!({"cmd":"inject","fault":"stall","ms":2000}))?;
    let (ok, out, took) = run(
        vm,
        "dd if=/dev/acq0 of=/dev/vda bs=4096 count=1 oflag=direct",
    )?;
    ensure!(ok, "write after a stall: {out}");
    ensure!(took >= Duration::from_millis(1500), "stall: {took:?}");
    ensure!(n(&counters(vm)?, "stalled_requests") >= 1);

    // 7. latency and bandwidth: a slow disk.
    inject(vm, json!({"cmd":"inject","fault":"latency","us":100_000}))?;
    let (ok, out, took) = run(
        vm,
        "dd if=/dev/acq0 of=/dev/vda bs=4096 count=5 oflag=direct",
    )?;
    ensure!(
        ok && took >= Duration::from_millis(500),
        "latency: {took:?} {out}"
    );
    inject(vm, json!({"cmd":"clear_faults"}))?;
    inject(
        vm,
        json!({"cmd":"inject","fault":"bandwidth","bytes_per_s": 2 * MIB}),
    )?;
    let (ok, out, took) = run(
        vm,
        "dd if=/dev/acq0 of=/dev/vda bs=64k count=32 iflag=fullblock oflag=direct",
    )?;
    ensure!(
        ok && took >= Duration::from_millis(900),
        "bandwidth: {took:?} {out}"
    );
    eprintln!("2 MiB at a 2 MiB/s cap: {:.2} s", took.as_secs_f64());
    inject(vm, json!({"cmd":"clear_faults"}))?;

    // 8. Host speed: the raw disk with zeros (verified and counted as mismatches).
    let (ok, out, took) = run(
        vm,
        "dd if=/dev/zero of=/dev/vda bs=1M count=32 oflag=direct",
    )?;
    ensure!(ok, "{out}");
    eprintln!(
        "zeros -> disk (O_DIRECT, 1 MiB): 32 MiB in {:.2} s: {out}",
        took.as_secs_f64()
    );

    filesystem(vm)?;

    let c = counters(vm)?;
    eprintln!("sink counters: {c}");
    ensure!(n(&c, "bad_requests") == 0, "{c}");
    assert_dmesg_clean(vm)?;
    Ok(())
}

/// Throughput of the raw capture disk from the guest (`cargo test -p acq-e2e --test vm
/// sink::sink_throughput -- --ignored --nocapture`): the card's stream to /dev/null (the
/// source alone), to the disk with O_DIRECT and buffered, and zeros to the disk (the disk
/// alone).
#[test]
#[ignore]
fn sink_throughput() -> Result<()> {
    let _gate = beside_others();
    const SIZE: u64 = 256 * MIB;
    let paths = acq::paths::Paths::discover()?;
    let (modules, files) = driver_image(&paths)?;
    let cfg = VmConfig {
        cards: vec![Card::Model { config: None }],
        disks: vec![DiskSpec {
            size: SIZE,
            ..DiskSpec::default()
        }],
        modules,
        files,
        run_dir: paths.repo.join("target/acq-runs/test-sink-throughput"),
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(&cfg, &paths)?;
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    let mib = SIZE / MIB;
    for (what, cmd) in [
        (
            "card -> /dev/null, 1 MiB reads",
            format!("dd if=/dev/acq0 of=/dev/null bs=1M count={mib} iflag=fullblock"),
        ),
        (
            "card -> disk, O_DIRECT 64 KiB",
            format!(
                "dd if=/dev/acq0 of=/dev/vda bs=64k count={} iflag=fullblock oflag=direct",
                mib * 16
            ),
        ),
        (
            "card -> disk, O_DIRECT 1 MiB",
            format!("dd if=/dev/acq0 of=/dev/vda bs=1M count={mib} iflag=fullblock oflag=direct"),
        ),
        (
            "card -> disk, buffered 1 MiB + fsync",
            format!("dd if=/dev/acq0 of=/dev/vda bs=1M count={mib} iflag=fullblock conv=fsync"),
        ),
        (
            "zeros -> disk, O_DIRECT 1 MiB",
            format!("dd if=/dev/zero of=/dev/vda bs=1M count={mib} oflag=direct"),
        ),
    ] {
        let before = counters(&vm)?;
        let (ok, out, took) = run(&mut vm, &cmd)?;
        ensure!(ok, "{what}: {out}");
        let c = counters(&vm)?;
        eprintln!(
            "{what}: {mib} MiB in {:.2} s = {:.0} MiB/s (sink: +{} verified, +{} mismatched)",
            took.as_secs_f64(),
            mib as f64 / took.as_secs_f64(),
            n(&c, "bytes_verified") - n(&before, "bytes_verified"),
            n(&c, "bytes_mismatched") - n(&before, "bytes_mismatched"),
        );
    }
    vm.shutdown(Duration::from_secs(60))?;
    Ok(())
}

/// The consumer on the capture disk (docs/sink.md, "Consumer behaviour"): bad sink
/// options are refused naming the option; in mmap mode with `O_DIRECT` and policy `skip`,
/// two failed writes become two reported lost ranges, and the consumer's account of the
/// disk (bytes on it, holes, failed bytes) equals the disk's counters to the byte, its
/// gaps the card's lost bytes. (The scenarios tests/scenarios/disk-*.json cover read and
/// splice and every fault.)
#[test]
fn consumer_account_of_the_disk_matches_the_disk() -> Result<()> {
    let _gate = beside_others();
    let paths = acq::paths::Paths::discover()?;
    let (modules, files) = driver_image(&paths)?;
    let cfg = VmConfig {
        cards: vec![Card::Model { config: None }],
        // The disk checks against the stream the consumer programs below.
        disks: vec![DiskSpec {
            size: DISK,
            pattern: "prbs".into(),
            seed: 3,
            ..DiskSpec::default()
        }],
        modules,
        files,
        run_dir: paths.repo.join("target/acq-runs/test-sink-consumer"),
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(&cfg, &paths)?;
    let r = consumer_steps(&mut vm);
    if r.is_err() {
        vm.mark_failed();
        eprintln!("sink log: {}", vm.disk_servers[0].log.display());
    }
    r?;
    vm.shutdown(Duration::from_secs(60))?;
    Ok(())
}

fn consumer_steps(vm: &mut Vm) -> Result<()> {
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    let base = "acq-stream --device /dev/acq0 --bytes 1M";
    for (args, status, says) in [
        (
            "--mode read --on-sink-error ignore --sink /dev/vda",
            2,
            "--on-sink-error",
        ),
        ("--mode read --direct", 2, "a file or disk --sink"),
        (
            "--mode splice --on-sink-error retry --sink /dev/vda",
            1,
            "needs --direct",
        ),
        ("--mode read --sink-base 0 --sink /tmp/f", 1, "block device"),
    ] {
        let out = vm.sh(&format!("{base} {args}"), CMD)?;
        let text = format!("{}{}", out.stdout, out.stderr);
        ensure!(
            out.status == status && text.contains(says),
            "`{args}`: status {} (want {status}), wanted {says:?} in: {text}",
            out.status
        );
    }
    ensure!(
        n(&counters(vm)?, "bytes_written") == 0,
        "a refused stream wrote to the disk"
    );

    // Two failing write requests while mmap mode writes whole 4 KiB ring blocks.
    let before = counters(vm)?;
    let total = 4 * MIB;
    let run = std::thread::scope(|s| -> Result<Value> {
        let sinks = &vm.disk_servers;
        let faults = s.spawn(|| -> Result<()> {
            // Once writes flow, fail the next two.
            let t = Instant::now();
            while n(&sinks[0].counters()?, "bytes_written") < MIB {
                ensure!(
                    t.elapsed() < Duration::from_secs(60),
                    "no writes reached the disk"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            sinks[0]
                .request(&json!({"cmd":"inject","fault":"write_error","count":2}))
                .map(|_| ())
        });
        let out = vm.guest().sh(
            &format!(
                "acq-stream --device /dev/acq0 --mode mmap --bytes {total} --sink /dev/vda \
                 --direct --on-sink-error skip --block 4096 --rate 1M --pattern prbs --seed 3"
            ),
            Duration::from_secs(120),
        )?;
        faults
            .join()
            .map_err(|_| anyhow::anyhow!("fault thread panicked"))??;
        let line = out
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("no result: {}{}", out.stdout, out.stderr))?;
        Ok(serde_json::from_str(line)?)
    })?;
    let io = &run["sink_io"];
    let c = counters(vm)?;
    let d = |k: &str| n(&c, k) - n(&before, k);
    eprintln!("consumer: {io}\ndisk: {c}");
    ensure!(run["bytes"] == json!(total), "{run}");
    ensure!(io["errno"]["EIO"] == json!(2), "{io}");
    ensure!(d("write_errors") == 2, "{c}");
    // Two failed whole blocks (mmap writes one ring block per write).
    ensure!(io["failed_bytes"] == json!(2 * 4096), "{io}");
    ensure!(d("failed_write_bytes") == 2 * 4096, "{c}");
    ensure!(io["lost_bytes"] == json!(2 * 4096), "{io}");
    ensure!(
        io["written_bytes_unique"] == c["written_bytes_unique"],
        "{io} {c}"
    );
    ensure!(io["hole_bytes"] == c["hole_bytes"], "{io} {c}");
    ensure!(
        io["bytes_to_sink"].as_u64() == Some(total - 2 * 4096),
        "{io}"
    );
    ensure!(n(&c, "bytes_mismatched") == 0, "{c}");
    // The sink's hole bytes are the lost writes plus the card's gaps (if the disk fell
    // behind the card: one 4 KiB write per block is slow under TCG).
    ensure!(
        n(&c, "hole_bytes") == 2 * 4096 + io["gap_bytes"].as_u64().unwrap_or(u64::MAX),
        "{io} {c}"
    );
    ensure!(io["gap_bytes"] == run["lost_bytes"], "{io} {run}");
    let card = acq::control::ModelControl::connect(&vm.models[0].control, None)?.counters()?;
    ensure!(card["lost_bytes"] == io["gap_bytes"], "card {card} vs {io}");
    assert_dmesg_clean(vm)?;
    Ok(())
}

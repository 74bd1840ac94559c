//! BAR2 streaming mode of the driver (`ACQ_CFG_BAR2`, docs/driver.md "BAR2 streaming
//! mode"): the card keeps the ring and the data in its BAR2 and does no DMA; the driver
//! copies each block into a pool page, which then goes through read(), splice() and mmap()
//! like a DMA block. Checked here: every path streams verified, read() and splice() (and
//! DMA mode) give identical bytes, error completions and overflows under a held pipe are
//! reported without corruption, every lent page comes back, bad layouts are refused with
//! EINVAL and a kernel log line, switching back to DMA works, and the kernel log stays
//! clean.
//!
//! That a session really ran in BAR2 mode is read from the card itself: BAR2_DATA_OFF
//! (BAR0 0x08C) is set only by a BAR2-mode enable (0x2000 for a 128-entry ring) and
//! cleared by a reset; the BAR2 event page's `cons` (BAR2 0x40) counts the session's
//! completions.
//!
//! Needs `make driver guest build`. `ACQ_TEST_MIB` scales the long streams (default 256).
//! Each test boots a guest of its own (`boot_streaming_guest_alone`): BAR2 keeps its
//! contents across a card reset, so a card handed on would not start with the zeros of a
//! card at power-on.

use acq_e2e::gate::{beside_others, heavy};
use acq_e2e::{
    acq_stream as stream, assert_dmesg_clean, assert_pool_full, boot_streaming_guest_alone as boot,
    ensure_verified, json_true, json_u64, kill_consumers_holding_pages, model_request, stream_mib,
    CMD,
};
use anyhow::{ensure, Context, Result};

/// The card's PCI function in the guest.
const FUNC: &str = "/sys/bus/pci/devices/0000:01:00.0";
/// The largest ring a default (1 MiB) BAR2 holds with 4 KiB blocks: 0x2000 + 128 * 4 KiB.
const RING: &str = "--ring-log2 7";

/// A 32-bit word of one of the card's BARs (`resource0` registers, `resource2` BAR2),
/// read through the sysfs resource file.
fn peek(vm: &mut acq::vm::Vm, resource: u32, off: u32) -> Result<u32> {
    let out = vm.sh_ok(
        &format!("acq-ctl peek {FUNC}/resource{resource} {off:#x}"),
        CMD,
    )?;
    let v = out
        .split(": ")
        .nth(1)
        .and_then(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        .with_context(|| format!("peek output {out:?}"))?;
    Ok(v)
}

/// BAR0 BAR2_DATA_OFF: set by a BAR2-mode enable, 0 after a reset.
fn bar2_data_off(vm: &mut acq::vm::Vm) -> Result<u32> {
    peek(vm, 0, 0x08C)
}

#[test]
fn bar2_streams_verified_by_read_splice_and_mmap() -> Result<()> {
    let _gate = heavy();
    let mib = stream_mib();
    let bytes = mib << 20;
    let mut vm = boot("bar2-modes")?;

    // A ring the 1 MiB BAR2 cannot hold is refused at SET_CONFIG, with the reason in the
    // kernel log, and the configuration stays as it was.
    let out = vm.sh("acq-ctl set --transfer bar2 --ring-log2 8", CMD)?;
    ensure!(
        !out.success() && acq_e2e::json_str(&out.stdout, "errno").as_deref() == Some("EINVAL"),
        "a ring of 256 in 1 MiB of BAR2 was not refused: {out:?}"
    );
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    ensure!(
        dmesg.contains("BAR2 mode refused: 256 slots of 4096 bytes need"),
        "no kernel log line for the refused BAR2 layout: {dmesg}"
    );
    let cfg = vm.sh_ok("acq-ctl config", CMD)?;
    ensure!(
        acq_e2e::json_str(&cfg, "transfer").as_deref() == Some("dma"),
        "{cfg}"
    );
    // The block size and the ring size count together: 1024 slots of 1 KiB plus the
    // completion ring exceed 1 MiB.
    let out = vm.sh(
        "acq-ctl set --transfer bar2 --ring-log2 10 --block 1024",
        CMD,
    )?;
    ensure!(
        !out.success() && acq_e2e::json_str(&out.stdout, "errno").as_deref() == Some("EINVAL"),
        "1024 slots of 1 KiB in 1 MiB of BAR2 were not refused: {out:?}"
    );
    ensure!(
        bar2_data_off(&mut vm)? == 0,
        "BAR2 mode before any BAR2 session"
    );

    // read(): every byte verified.
    let out = stream(
        &mut vm,
        &format!("--bar2 {RING} --mode read --bytes {mib}M --pattern prbs --seed 0x5eed --verify"),
    )?;
    ensure_verified(&out, bytes)?;
    ensure!(
        acq_e2e::json_str(&out, "transfer").as_deref() == Some("bar2"),
        "{out}"
    );
    ensure!(
        bar2_data_off(&mut vm)? == 0x2000,
        "the session did not run in BAR2 mode (BAR2_DATA_OFF)"
    );
    ensure!(
        peek(&mut vm, 2, 0x40)? >= (bytes / 4096) as u32,
        "the BAR2 event page does not count the session's completions"
    );
    assert_pool_full(&mut vm, 10)?;

    // splice(): the copies are pool pages lent to the pipe; the tee()d pipe is read back
    // and verified. The configuration (BAR2 mode) persists: no --bar2 here.
    for pipe in ["1M", "4M"] {
        let out = stream(
            &mut vm,
            &format!(
                "--mode splice --pipe-size {pipe} --bytes {mib}M --pattern prbs --seed 0x5eed \
                 --verify"
            ),
        )?;
        ensure_verified(&out, bytes)?;
        ensure!(
            acq_e2e::json_str(&out, "transfer").as_deref() == Some("bar2"),
            "{out}"
        );
        ensure!(
            json_u64(&out, "spliced_bytes") >= bytes,
            "did not splice: {out}"
        );
        assert_pool_full(&mut vm, 10)?;
    }
    // Into a file on tmpfs (re-read and verified) and over TCP.
    for sink in ["/mnt/t/s.bin", "tcp"] {
        let out = stream(
            &mut vm,
            &format!(
                "--mode splice --pipe-size 1M --bytes 64M --pattern prbs --verify --sink {sink}"
            ),
        )?;
        ensure_verified(&out, 64 << 20)?;
        vm.sh_ok("rm -f /mnt/t/s.bin", CMD)?;
        assert_pool_full(&mut vm, 10)?;
    }

    // mmap(): the ring's pages hold the copies.
    let out = stream(
        &mut vm,
        "--mode mmap --bytes 64M --pattern prbs --seed 3 --verify",
    )?;
    ensure_verified(&out, 64 << 20)?;
    assert_pool_full(&mut vm, 10)?;

    // read() and splice() give identical bytes, and the same as DMA mode: each run is a
    // new session from offset 0 with the same pattern and seed, nothing lost.
    let common = "--bytes 32M --pattern prbs --seed 0xabc";
    let r = stream(&mut vm, &format!("--mode read {common} --sink /mnt/t/r"))?;
    let s = stream(&mut vm, &format!("--mode splice {common} --sink /mnt/t/s"))?;
    let d = stream(
        &mut vm,
        &format!("--transfer dma --ring-log2 8 --mode splice {common} --sink /mnt/t/d"),
    )?;
    ensure!(
        [&r, &s, &d].iter().all(|o| json_u64(o, "overflows") == 0),
        "{r}\n{s}\n{d}"
    );
    ensure!(
        acq_e2e::json_str(&d, "transfer").as_deref() == Some("dma"),
        "{d}"
    );
    vm.sh_ok("cmp /mnt/t/r /mnt/t/s", CMD)
        .context("BAR2 mode: read() and splice() gave different bytes")?;
    vm.sh_ok("cmp /mnt/t/s /mnt/t/d", CMD)
        .context("BAR2 mode and DMA mode gave different bytes")?;
    vm.sh_ok("rm -f /mnt/t/r /mnt/t/s /mnt/t/d", CMD)?;

    vm.sh_ok("rmmod acq", CMD)?;
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)
}

#[test]
fn bar2_errors_overflow_held_pages_and_back_to_dma() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("bar2-errors")?;
    vm.sh_ok(&format!("acq-ctl set --transfer bar2 {RING}"), CMD)?;

    // Error completions (the card fails to fill a slot): EIO once each, in read and splice
    // mode; the stream goes on verified.
    for mode in ["read", "splice"] {
        model_request(&vm, 0, r#"{"cmd":"inject","fault":"dma_error","count":2}"#)?;
        let out = stream(
            &mut vm,
            &format!("--mode {mode} --bytes 16M --pattern prbs --verify --sink /mnt/t/e"),
        )?;
        ensure!(json_u64(&out, "EIO") == 2, "EIO in BAR2 {mode} mode: {out}");
        ensure_verified(&out, 16 << 20)?;
    }
    vm.sh_ok("rm -f /mnt/t/e", CMD)?;

    // A consumer that keeps a full pipe of lent copies unread: the rate-limited card runs
    // out of free slots and overflows (counted, EPIPE); no byte is corrupted.
    for sink in ["/dev/null", "tcp"] {
        let out = stream(
            &mut vm,
            &format!(
                "--mode splice --bytes 48M --rate 16M --pattern prbs --verify \
                 --pipe-size 1M --hold-at 8M --hold-s 3 --sink {sink}"
            ),
        )?;
        ensure!(json_true(&out, "held"), "{out}");
        ensure!(
            json_u64(&out, "overflows") >= 1
                && json_u64(&out, "EPIPE") >= 1
                && json_u64(&out, "lost_bytes") > 0,
            "holding pages did not overflow the card: {out}"
        );
        ensure_verified(&out, 48 << 20)?;
        assert_pool_full(&mut vm, 10)?;
    }
    // An overflow injected by the model: EPIPE, lost bytes counted, verified across it.
    model_request(&vm, 0, r#"{"cmd":"inject","fault":"overflow","count":3}"#)?;
    let out = stream(&mut vm, "--mode read --bytes 16M --pattern prbs --verify")?;
    ensure!(
        json_u64(&out, "EPIPE") >= 1,
        "no EPIPE in BAR2 read mode: {out}"
    );
    ensure!(json_u64(&out, "lost_bytes") >= 3 * 4096, "{out}");
    ensure_verified(&out, 16 << 20)?;

    // Consumers killed while a pipe, a tee pipe and a socket hold lent copies: every page
    // comes back.
    kill_consumers_holding_pages(&mut vm)?;
    ensure!(bar2_data_off(&mut vm)? == 0x2000, "not in BAR2 mode");

    // Back to DMA mode: the reset clears BAR2_DATA_OFF, a DMA session leaves it at 0.
    vm.sh_ok("acq-ctl reset", CMD)?;
    let out = stream(
        &mut vm,
        "--transfer dma --ring-log2 8 --mode splice --pipe-size 1M --bytes 64M --pattern prbs \
         --verify",
    )?;
    ensure_verified(&out, 64 << 20)?;
    ensure!(
        acq_e2e::json_str(&out, "transfer").as_deref() == Some("dma"),
        "{out}"
    );
    ensure!(
        bar2_data_off(&mut vm)? == 0,
        "a DMA-mode session enabled BAR2 mode"
    );
    let out = stream(&mut vm, "--mode read --bytes 64M --pattern prbs --verify")?;
    ensure_verified(&out, 64 << 20)?;
    assert_pool_full(&mut vm, 10)?;

    vm.sh_ok("rmmod acq", CMD)?;
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// Pages lent to a pipe keep their data when the driver is unbound, in a guest booted
/// with `swiotlb=force` (every streaming mapping bounces, as in a confidential-computing
/// guest), in BAR2 mode and in DMA mode. In BAR2 mode the CPU fills the pool pages, so
/// their bounce buffers hold nothing of it: v1 unmapped the pool with a CPU sync, which
/// copied those stale bounce buffers over the pages the pipe still held (every word
/// wrong). The driver now unmaps without a sync: every page the CPU reads was synced
/// when its completion was taken.
#[test]
fn pages_in_a_pipe_keep_their_data_through_unbind_under_swiotlb_force() -> Result<()> {
    let _gate = beside_others();
    let paths = acq::paths::Paths::discover()?;
    let (modules, files) = acq_e2e::driver_image(&paths)?;
    let mut failures = Vec::new();
    for transfer in ["bar2", "dma"] {
        let cfg = acq::vm::VmConfig {
            cards: vec![acq::vm::Card::Model { config: None }],
            modules: modules.clone(),
            files: files.clone(),
            kernel_args: vec!["swiotlb=force".into()],
            run_dir: paths
                .repo
                .join(format!("target/acq-runs/test-bar2-swiotlb-{transfer}")),
            ..acq::vm::VmConfig::default()
        };
        let mut vm = acq::vm::Vm::boot(&cfg, &paths)?;
        let cmdline = vm.sh_ok("cat /proc/cmdline", CMD)?;
        ensure!(
            cmdline.contains("swiotlb=force"),
            "not booted with it: {cmdline}"
        );
        vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
        let out = vm.sh_ok(&format!("acq-ctl splice-hold-unbind {transfer}"), CMD)?;
        eprintln!("{transfer}: {}", out.trim());
        if json_u64(&out, "held") != 256 << 10 || json_u64(&out, "bad_words") != 0 {
            failures.push(format!(
                "{transfer}: the pipe's pages lost their data at unbind: {out}"
            ));
        }
        let dmesg = vm.sh_ok("dmesg", CMD)?;
        let bad = acq_e2e::kernel_bug_reports(&dmesg);
        if !bad.is_empty() {
            failures.push(format!("{transfer}: kernel reports: {bad:?}"));
        }
        vm.shutdown(CMD)?;
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

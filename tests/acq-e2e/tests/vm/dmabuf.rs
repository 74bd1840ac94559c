//! dma-buf sharing between cards (issue #20, seed 004) in the VM: card 0's capture ring
//! exported (`ACQ_IOC_EXPBUF`), imported by card 1's playback channel
//! (`ACQ_IOC_PB_IMPORT`) and played from the same pages (`ACQ_IOC_PB_QUEUE`), every byte
//! verified by card 1's model against card 0's pattern and seed, with no CPU copy; the
//! buffer's lifetime when card 0's file is closed or card 0 is unplugged while card 1 and
//! a mapping still hold it; a clean kernel log and an unloadable module at the end.
//!
//! Needs `make driver guest build`.

use acq_e2e::gate::beside_others;
use std::time::Duration;

use acq_e2e::{
    assert_dmesg_clean, boot_unpluggable, boot_with, driver_image, json_true, json_u64, CMD,
};
use anyhow::{ensure, Result};

/// How long one acq-share run may take in the guest.
const SHARE: Duration = Duration::from_secs(600);

fn image() -> Result<(Vec<std::path::PathBuf>, acq_e2e::ImageFiles)> {
    let paths = acq::paths::Paths::discover()?;
    let (modules, mut files) = driver_image(&paths)?;
    files.push(("/bin/acq-share".into(), paths.guest_bin.join("acq-share")));
    Ok((modules, files))
}

/// Runs `acq-share ARGS`; it must report ok. Returns its JSON line.
fn share(vm: &mut acq::vm::Vm, args: &str) -> Result<String> {
    let out = vm.sh(&format!("acq-share {args}"), SHARE)?;
    ensure!(
        out.success() && json_true(&out.stdout, "ok"),
        "acq-share {args} failed (status {}): {}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

/// Card 0 to card 1, then card 0 to its own playback channel: every byte verified by the
/// receiving card, every byte zero-copy, the mapping of the dma-buf reading the same
/// blocks; then card 0's file closed with blocks queued on card 1 and the mapping held
/// (both still read valid data, and the pages go back to card 0's pool only after the
/// last holder). With both device files closed and only the dma-buf and its mapping
/// held, rmmod is refused (each dma-buf pins the module) and the mapping still reads
/// valid blocks. The module unloads afterwards.
#[test]
fn card_to_card_without_a_cpu_copy() -> Result<()> {
    let _gate = beside_others();
    let (modules, files) = image()?;
    let (mut vm, _) = boot_with("dmabuf-c2c", 2, modules, files)?;
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;

    let bytes = 64u64 << 20;
    let out = share(
        &mut vm,
        "--from /dev/acq0 --to /dev/acq1-out --bytes 64M --pattern prbs --seed 0x5eed --map-verify",
    )?;
    eprintln!("card 0 -> card 1: {}", out.trim());
    ensure!(
        json_u64(&out, "card_verified") == bytes && json_u64(&out, "zero_copy_bytes") == bytes,
        "card 1 did not verify every byte zero-copy: {out}"
    );
    ensure!(
        json_u64(&out, "map_checked_blocks") == bytes / 4096,
        "the mapping did not see every block: {out}"
    );

    let out = share(
        &mut vm,
        "--from /dev/acq0 --to /dev/acq0-out --bytes 16M --pattern counter --block 2048 --ring-log2 8",
    )?;
    eprintln!("card 0 -> card 0: {}", out.trim());

    let out = share(
        &mut vm,
        "--from /dev/acq0 --to /dev/acq1-out --bytes 64M --ring-log2 10 --play-rate 2M \
         --close-capture-after 4M --map-verify",
    )?;
    eprintln!("card 0 closed with card 1 playing: {}", out.trim());
    ensure!(
        json_u64(&out, "map_after_close_blocks") > 0,
        "nothing was still queued on card 1 when card 0's file closed: the run proves nothing: {out}"
    );

    // Only a dma-buf and a mapping of it left (both device files closed): the module is
    // pinned by it, rmmod is refused, and the mapping still reads what was queued.
    vm.sh_ok(
        "(acq-share --from /dev/acq0 --to /dev/acq1-out --bytes 64M --ring-log2 10 \
         --play-rate 4M --close-capture-after 2M --map-verify --hold-s 6 > /tmp/h.json 2>&1 & \
         echo $! > /tmp/h.pid; wait $!; echo $? > /tmp/h.rc) &",
        CMD,
    )?;
    // Once its device files are closed (only the dma-buf left), try to unload.
    let refused = vm.sh(
        "i=0; until [ -s /tmp/h.pid ]; do sleep 0.1; done; p=$(cat /tmp/h.pid); \
         until [ ! -e /proc/$p/fd ] || [ \"$(ls -l /proc/$p/fd | grep -c '/dev/acq')\" = 0 ]; do \
         sleep 0.1; i=$((i+1)); [ $i -gt 300 ] && break; done; \
         ls -l /proc/$p/fd | grep -q dmabuf || echo NOT-HOLDING; \
         rmmod acq; r=$?; [ -s /tmp/h.rc ] && echo LATE; exit $r",
        CMD,
    )?;
    let held = vm.sh_ok(
        "i=0; while [ ! -s /tmp/h.rc ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
         cat /tmp/h.json",
        Duration::from_secs(120),
    )?;
    eprintln!(
        "only the dma-buf held: rmmod {} ({}{}): {}",
        refused.status,
        refused.stdout.trim(),
        refused.stderr.trim(),
        held.trim()
    );
    ensure!(
        !refused.stdout.contains("LATE") && !refused.stdout.contains("NOT-HOLDING"),
        "the rmmod attempt did not happen while acq-share held only the dma-buf: {}",
        refused.stdout
    );
    ensure!(
        !refused.success()
            && json_true(&held, "ok")
            && json_u64(&held, "map_after_close_blocks") > 0,
        "rmmod while only a dma-buf (and its mapping) held card 0's pages: status {} ({}), \
         acq-share: {held}",
        refused.status,
        refused.stderr.trim()
    );

    vm.sh_ok("rmmod acq", CMD)?;
    assert_dmesg_clean(&mut vm)
}

/// Card 0 unplugged (QMP device_del) while card 1 plays from its exported ring and a
/// mapping holds it: card 1 plays and verifies every block it had queued, the mapping
/// still reads them, card 0's file ends with ENODEV, and the kernel log is clean. On the
/// debug kernel this is where a use-after-free of card 0's pages would show.
#[test]
fn card_zero_unplugged_while_card_one_plays_its_buffer() -> Result<()> {
    let _gate = beside_others();
    let (modules, files) = image()?;
    let (mut vm, _) = boot_unpluggable("dmabuf-unplug", 2, modules, files)?;
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    vm.sh_ok(
        "(acq-share --from /dev/acq0 --to /dev/acq1-out --bytes 1G --ring-log2 10 \
         --play-rate 1M --map-verify --until-gone > /tmp/s.json 2>&1; echo $? > /tmp/s.rc) &",
        CMD,
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let qmp_log = vm.run_dir().join("qmp.log");
    vm.guest()
        .unplug_card(0, &qmp_log, Duration::from_secs(60))?;
    let out = vm.sh_ok(
        "i=0; while [ ! -s /tmp/s.rc ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done; \
         cat /tmp/s.json",
        Duration::from_secs(120),
    )?;
    eprintln!("card 0 unplugged: {}", out.trim());
    ensure!(
        json_true(&out, "ok") && json_true(&out, "card0_gone"),
        "card 1 did not finish what it had queued from the unplugged card's pages: {out}"
    );
    ensure!(
        json_u64(&out, "map_after_close_blocks") > 0,
        "nothing was queued on card 1 at the unplug: the run proves nothing: {out}"
    );
    vm.sh_ok("rmmod acq", CMD)?;
    assert_dmesg_clean(&mut vm)
}

//! The card as an adversary, beyond what one fault request does: the device process
//! itself dying under a running stream.

use acq_e2e::gate::beside_others;
use std::time::{Duration, Instant};

use acq_e2e::{
    boot_streaming_guest_alone, boot_unpluggable, driver_image, json_u64, kernel_bug_reports,
    CARD_CONFIG, CMD,
};
use anyhow::{ensure, Context, Result};

/// Runs `cmd` in the guest's background (its exit status into `/tmp/NAME.rc`), lets it
/// run 3 s, kills card 0's model with SIGKILL (the model leaves the VM's books: its end
/// is the test's doing, not a failure) and waits up to 60 s for the command to end.
/// Returns whether it ended, and how long after the kill.
fn kill_model_under(vm: &mut acq::vm::Vm, cmd: &str, name: &str) -> Result<(bool, Duration)> {
    vm.sh_ok(
        &format!("({cmd} > /tmp/{name}.json 2> /tmp/{name}.err; echo $? > /tmp/{name}.rc) &"),
        CMD,
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let mut model = vm.models.remove(0);
    model.child.signal(libc::SIGKILL);
    ensure!(
        model.child.wait_timeout(Duration::from_secs(10)).is_some(),
        "acq-device survived SIGKILL"
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        let rc = vm.sh(&format!("cat /tmp/{name}.rc 2>/dev/null"), CMD)?;
        if !rc.stdout.trim().is_empty() {
            return Ok((true, t.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok((false, t.elapsed()))
}

/// `kill -9` of acq-device while the guest reads /dev/acq0 (docs/faults.md, "The device
/// process dies"). QEMU 11.1 keeps the device and answers every access with all-ones
/// (its log: "vfio_region_read(...) failed: Bad address"); the driver's watchdog finds
/// no progress, then config space all-ones, and declares the card gone. The reader gets
/// ENODEV once, after bytes that all verify; the kernel log has no oops or warning;
/// rmmod works. v1 answered every later call with EIO, which a consumer that retries
/// EIO (acq-stream does) turned into a busy loop for ever.
#[test]
fn the_device_process_killed_mid_stream() -> Result<()> {
    let _gate = beside_others();
    // A guest of its own: its card is dead for good.
    let mut vm = boot_streaming_guest_alone("hostile-kill-model")?;
    let (ended, after) = kill_model_under(
        &mut vm,
        "acq-stream --device /dev/acq0 --mode read --bytes 1G --rate 8M --verify",
        "r",
    )?;
    ensure!(ended, "the reader did not end within 60 s of the kill");
    let out = vm.sh_ok("cat /tmp/r.json", CMD)?;
    eprintln!("reader after {after:?}: {out}");
    let line = out.lines().last().context("no result line")?;
    ensure!(
        json_u64(line, "ENODEV") == 1 && json_u64(line, "EIO") == 0,
        "not one ENODEV: {line}"
    );
    ensure!(
        json_u64(line, "verified_bytes") == json_u64(line, "bytes") && json_u64(line, "bytes") > 0,
        "bytes before the end did not all verify: {line}"
    );
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    let bad = kernel_bug_reports(&dmesg);
    ensure!(bad.is_empty(), "kernel reports: {bad:?}");
    ensure!(
        dmesg.contains("no longer answers config space reads"),
        "the driver did not say why the card is gone"
    );
    vm.sh_ok("rmmod acq", CMD)?;
    vm.shutdown(CMD)
}

/// The same kill under a playback writer (`acq-stream --direction out` at 8 MB/s): the
/// writer ends within 60 s on ENODEV (config space reads all-ones: the card is gone),
/// not on an EIO it would retry for ever, and the kernel log has no oops or warning.
/// Before the playback channel had the "gone" rule, every write() after the kill got
/// EIO (a dead card cannot be started) and the writer ran until its own timeout.
#[test]
fn the_device_process_killed_under_a_writer() -> Result<()> {
    let _gate = beside_others();
    // A guest of its own: its card is dead for good.
    let mut vm = boot_streaming_guest_alone("hostile-kill-model-writer")?;
    let (ended, after) = kill_model_under(
        &mut vm,
        "acq-stream --direction out --bytes 1G --rate 8M --timeout 200",
        "w",
    )?;
    let out = vm.sh_ok("cat /tmp/w.json /tmp/w.err", CMD)?;
    eprintln!("writer after {after:?}: {out}");
    ensure!(
        ended,
        "the writer did not end within 60 s of the kill: {out}"
    );
    ensure!(
        acq_e2e::json_field(&out, "ENODEV") == Some(1.into())
            && acq_e2e::json_str(&out, "fatal").as_deref() == Some("fatal ENODEV"),
        "the writer did not end on one ENODEV: {out}"
    );
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    let bad = kernel_bug_reports(&dmesg);
    ensure!(bad.is_empty(), "kernel reports: {bad:?}");
    vm.sh_ok("rmmod acq", CMD)?;
    vm.shutdown(CMD)
}

/// Waits up to 30 s for `/dev/acq0` to appear (after a card was plugged in).
fn wait_for_card(vm: &mut acq::vm::Vm) -> Result<()> {
    vm.sh_ok(
        "i=0; while [ ! -c /dev/acq0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
         [ -c /dev/acq0 ]",
        CMD,
    )
    .map(|_| ())
}

/// A card unplugged and plugged in again (QMP device_del, then device_add of a new
/// model behind the same root port), and then a card whose model process was killed,
/// unplugged and replaced: each time the driver probes the new card as /dev/acq0 and it
/// streams verified; the dead card ends a reader with one ENODEV and nothing else (the
/// first cut answered the start on a dead card with an EIO before the ENODEV); the
/// kernel log stays clean and the module unloads. (A card replaced on the bench, or a
/// restarted model.)
#[test]
fn a_card_plugged_in_again_streams_after_an_unplug_and_after_its_model_died() -> Result<()> {
    let _gate = beside_others();
    let paths = acq::paths::Paths::discover()?;
    let (modules, files) = driver_image(&paths)?;
    let (mut vm, _) = boot_unpluggable("hostile-replug", 1, modules, files)?;
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    let config = vm.run_dir().join(CARD_CONFIG);
    let qmp_log = vm.run_dir().join("qmp.log");
    let stream = "acq-stream --device /dev/acq0 --mode read --bytes 8M --verify";
    vm.sh_ok(stream, CMD)?;

    // Unplugged, then plugged in again.
    vm.guest()
        .unplug_card(0, &qmp_log, Duration::from_secs(60))?;
    ensure!(
        !vm.sh("[ -c /dev/acq0 ]", CMD)?.success(),
        "/dev/acq0 outlived the unplug"
    );
    vm.replug_card(0, Some(&config), &qmp_log)?;
    wait_for_card(&mut vm)?;
    let out = vm.sh_ok(stream, CMD)?;
    ensure!(
        json_u64(&out, "verified_bytes") == 8 << 20,
        "the card plugged in again did not stream verified: {out}"
    );

    // Its model killed: the next reader gets ENODEV; the card is unplugged and replaced.
    vm.models[0].child.signal(libc::SIGKILL);
    ensure!(
        vm.models[0]
            .child
            .wait_timeout(Duration::from_secs(10))
            .is_some(),
        "acq-device survived SIGKILL"
    );
    let dead = vm.sh(
        "acq-stream --device /dev/acq0 --mode read --bytes 64M --verify",
        Duration::from_secs(120),
    )?;
    eprintln!("reader of the dead card: {}", dead.stdout.trim());
    ensure!(
        acq_e2e::json_field(&dead.stdout, "errno") == Some(serde_json::json!({"ENODEV": 1})),
        "a reader of the dead card did not end on one ENODEV (and nothing else): {}{}",
        dead.stdout,
        dead.stderr
    );
    vm.guest()
        .unplug_card(0, &qmp_log, Duration::from_secs(60))?;
    vm.replug_card(0, Some(&config), &qmp_log)?;
    wait_for_card(&mut vm)?;
    let out = vm.sh_ok(stream, CMD)?;
    ensure!(
        json_u64(&out, "verified_bytes") == 8 << 20,
        "the replacement card did not stream verified: {out}"
    );
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    let bad = kernel_bug_reports(&dmesg);
    ensure!(bad.is_empty(), "kernel reports: {bad:?}");
    vm.sh_ok("rmmod acq", CMD)?;
    vm.shutdown(CMD)
}

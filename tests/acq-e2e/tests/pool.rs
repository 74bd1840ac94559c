//! The test binaries' guest pool (`acq_e2e::pool`): a guest reaches the next test only as
//! clean as a fresh one, and a guest that is not is powered off, not handed on.
//!
//! One test, its steps in order: the pool's counts are the binary's own.
//!
//! Needs `make driver guest build`.

use std::sync::atomic::Ordering;

use acq_e2e::pool::{self, BOOTS, HANDED_ON};
use acq_e2e::{acq_stream, assert_dmesg_clean, driver_image, ensure_verified, json_u64, CMD};
use anyhow::{anyhow, ensure, Result};

fn spec() -> Result<pool::Spec> {
    Ok(pool::Spec::cards(
        1,
        driver_image(&acq::paths::Paths::discover()?)?,
    ))
}

/// The first test, in a thread of its own that ends before the second starts (as libtest
/// runs each test), leaves behind what tests leave: the driver loaded, a tmpfs mounted
/// with a file in it, a file in /tmp, a line in the kernel log, counters counted and an
/// interrupt storm running. The second gets the same guest (no boot, its QEMU and model
/// alive after the first thread ended) with none of it: no driver, no mount, /tmp empty,
/// the log cleared, its counters from zero and no spurious interrupt (the storm ended).
/// It leaves a process running: the third test boots a guest of its own. The third has
/// its device model taken away (as the hostile-device tests do): the fourth boots again.
/// The fourth writes a kernel warning after its own log check: its hand-back fails it,
/// as a report at the driver's unload would.
#[test]
fn a_guest_reaches_the_next_test_as_clean_as_a_fresh_one_or_not_at_all() -> Result<()> {
    ensure!(
        std::env::var_os("ACQ_E2E_POOL").is_none_or(|v| v != "0"),
        "ACQ_E2E_POOL=0 turns off the pool this test checks"
    );
    let boots = BOOTS.load(Ordering::Relaxed);
    let first_dir = std::thread::spawn(|| -> Result<std::path::PathBuf> {
        let mut vm = pool::lease("pool-first", spec()?)?;
        let dir = vm.run_dir().to_path_buf();
        vm.sh_ok(
            "insmod /lib/modules/acq.ko && mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t && \
             echo x > /mnt/t/f && echo y > /tmp/left && echo 'pool-test: first' > /dev/kmsg",
            CMD,
        )?;
        ensure_verified(
            &acq_stream(&mut vm, "--mode read --bytes 1M --verify")?,
            1 << 20,
        )?;
        // A minute of spurious interrupts, a thousand a second (`count` is the rate): a
        // card's reset at the next probe does not end it, only the model's `clear_faults`.
        acq_e2e::model_request(
            &vm,
            0,
            r#"{"cmd":"inject","fault":"irq_storm","vector":0,"count":1000,"ms":60000}"#,
        )?;
        assert_dmesg_clean(&mut vm)?;
        vm.shutdown(CMD)?;
        Ok(dir)
    })
    .join()
    .map_err(|_| anyhow!("the first test's thread panicked"))??;

    let handed = HANDED_ON.load(Ordering::Relaxed);
    let mut vm = pool::lease("pool-second", spec()?)?;
    ensure!(
        HANDED_ON.load(Ordering::Relaxed) == handed + 1
            && BOOTS.load(Ordering::Relaxed) == boots + 1
            && vm.run_dir() == first_dir,
        "the second test did not get the first one's guest"
    );
    let state = vm.sh_ok(
        "grep -c '^acq ' /proc/modules; grep -c ' /mnt/t ' /proc/mounts; ls -A /tmp | wc -l; \
         dmesg | grep -c 'pool-test: first'; true",
        CMD,
    )?;
    ensure!(
        state.split_whitespace().collect::<Vec<_>>() == ["0", "0", "0", "0"],
        "the guest came with the first test's driver, mount, /tmp file or kernel log \
         (counts: {state})"
    );
    let c = vm.counters(0)?;
    ensure!(
        json_u64(&c, "bytes_produced") == 0,
        "the counters are not the second test's own: {c}"
    );
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    let out = acq_stream(&mut vm, "--mode read --bytes 4M --verify")?;
    ensure_verified(&out, 4 << 20)?;
    let c = vm.counters(0)?;
    ensure!(
        json_u64(&c, "bytes_produced") >= 4 << 20,
        "the counters do not count the second test's stream: {c}"
    );
    ensure!(
        json_u64(&c, "irqs_spurious") == 0,
        "the first test's interrupt storm went on in the second: {c}"
    );
    vm.sh_ok("sleep 300 > /dev/null 2>&1 &", CMD)?;
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)?;

    let handed = HANDED_ON.load(Ordering::Relaxed);
    let mut vm = pool::lease("pool-third", spec()?)?;
    ensure!(
        HANDED_ON.load(Ordering::Relaxed) == handed
            && BOOTS.load(Ordering::Relaxed) == boots + 2
            && vm.run_dir() != first_dir,
        "a guest with a process left behind was handed on"
    );
    let third_dir = vm.run_dir().to_path_buf();
    let mut model = vm.models.remove(0);
    model.child.terminate(std::time::Duration::from_secs(5));
    vm.shutdown(CMD)?;

    let mut vm = pool::lease("pool-fourth", spec()?)?;
    ensure!(
        HANDED_ON.load(Ordering::Relaxed) == handed
            && BOOTS.load(Ordering::Relaxed) == boots + 3
            && vm.run_dir() != third_dir,
        "a guest without its device model was handed on"
    );
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    assert_dmesg_clean(&mut vm)?;
    vm.sh_ok(
        "echo 'WARNING: CPU: 0 PID: 1 at drivers/acq/pool_test.rs:1 pool_test' > /dev/kmsg",
        CMD,
    )?;
    let dir = vm.run_dir().to_path_buf();
    let r = vm.shutdown(CMD);
    ensure!(
        r.as_ref()
            .is_err_and(|e| format!("{e:#}").contains("pool_test")),
        "a kernel report after the test's own check did not fail its hand-back: {r:?}"
    );
    // Kept as a failed run's files are; this failure was the test's own doing.
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

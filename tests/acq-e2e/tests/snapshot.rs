//! Guests restored from a snapshot (harness/acq/src/snapshot.rs): the machine's first guest
//! boots and saves it, the next is restored from it, and the two hold the same things: the
//! cards in order behind their root ports, the run's modules and files, the host's time.
//! A snapshot that does not restore is booted past and replaced.
//!
//! Each test gives its machine a kernel argument of its own, so its snapshot is new (and
//! deleted at the end): the first boot must take it, whatever the cache holds.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acq::paths::Paths;
use acq::vm::{Card, Vm, VmConfig};
use acq_e2e::{driver_image, json_u64, model_request, CMD};
use anyhow::{ensure, Context, Result};

/// Two cards, the driver and its tools, a machine no other test has.
fn config(paths: &Paths, test: &str, run: usize) -> Result<VmConfig> {
    let (modules, mut files) = driver_image(paths)?;
    let script = paths
        .repo
        .join(format!("target/acq-runs/snapshot-{test}.sh"));
    fs::create_dir_all(script.parent().context("a run path has a parent")?)?;
    fs::write(&script, "#!/bin/sh\necho put by the host\n")?;
    files.push(("/opt/acq/hello".into(), script));
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    Ok(VmConfig {
        cards: vec![Card::Model { config: None }; 2],
        modules,
        files,
        run_dir: paths
            .repo
            .join(format!("target/acq-runs/test-snapshot-{test}-{run}")),
        kernel_args: vec![format!("acq.snapshot_test={test}-{nonce}")],
        ..VmConfig::default()
    })
}

/// The guest holds what its configuration asks for, however it started: the file put
/// in place and executable, the driver loaded with card 0 as /dev/acq0 and card 1 as
/// /dev/acq1 (a stream from each moves only its own model's counters), the host's time.
fn check_guest(vm: &mut Vm) -> Result<()> {
    let out = vm.sh_ok("/opt/acq/hello", CMD)?;
    ensure!(out == "put by the host\n", "the put file ran as {out:?}");
    let guest_time: u64 = vm.sh_ok("date +%s", CMD)?.trim().parse()?;
    let host_time = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    ensure!(
        guest_time.abs_diff(host_time) <= 2,
        "the guest's clock says {guest_time}, the host's {host_time}"
    );
    vm.sh_ok(
        "insmod /lib/modules/acq.ko && for i in $(seq 100); do [ -c /dev/acq1 ] && exit 0; sleep 0.1; done; exit 1",
        CMD,
    )?;
    for card in 0..2 {
        let before: Vec<u64> = (0..2)
            .map(|c| {
                Ok(json_u64(
                    &model_request(vm, c, r#"{"cmd":"counters"}"#)?,
                    "bytes",
                ))
            })
            .collect::<Result<_>>()?;
        vm.sh_ok(
            &format!("acq-stream --device /dev/acq{card} --mode read --bytes 4M --verify"),
            CMD,
        )?;
        for (c, before) in before.iter().enumerate() {
            let after = json_u64(&model_request(vm, c, r#"{"cmd":"counters"}"#)?, "bytes");
            let moved = after - before;
            ensure!(
                (c == card) == (moved >= 4 << 20),
                "a stream from /dev/acq{card} moved {moved} bytes of card {c}"
            );
        }
    }
    vm.sh_ok("rmmod acq", CMD)?;
    Ok(())
}

#[test]
fn a_restored_guest_holds_what_a_booted_one_does() -> Result<()> {
    let paths = Paths::discover()?;
    let cfg = config(&paths, "same", 0)?;
    let mut first = Vm::boot(&cfg, &paths)?;
    let snap = first
        .snapshot
        .clone()
        .context("no snapshot for a TCG guest")?;
    let r = (|| {
        ensure!(
            !first.restored,
            "the first guest of a new machine was restored"
        );
        ensure!(snap.exists(), "the first guest saved no snapshot");
        check_guest(&mut first)?;
        first.shutdown(Duration::from_secs(60))?;
        // The restored guest's clock starts where the snapshot's stopped: seconds behind
        // the host's unless it is set.
        std::thread::sleep(Duration::from_secs(3));
        let cfg = VmConfig {
            run_dir: paths.repo.join("target/acq-runs/test-snapshot-same-1"),
            ..cfg.clone()
        };
        let mut second = Vm::boot(&cfg, &paths)?;
        ensure!(second.restored, "the second guest was booted, not restored");
        check_guest(&mut second)?;
        second.shutdown(Duration::from_secs(60))
    })();
    snap.discard();
    r
}

#[test]
fn a_snapshot_that_does_not_restore_is_replaced() -> Result<()> {
    let paths = Paths::discover()?;
    let cfg = config(&paths, "broken", 0)?;
    let first = Vm::boot(&cfg, &paths)?;
    let snap = first
        .snapshot
        .clone()
        .context("no snapshot for a TCG guest")?;
    let r = (|| {
        first.shutdown(Duration::from_secs(60))?;
        // Cut short, as a full disk or a killed save would leave it.
        let whole = fs::metadata(&snap.state)?.len();
        fs::write(&snap.state, vec![0x5a; 4096])?;
        let cfg = VmConfig {
            run_dir: paths.repo.join("target/acq-runs/test-snapshot-broken-1"),
            ..cfg.clone()
        };
        let mut second = Vm::boot(&cfg, &paths)?;
        ensure!(!second.restored, "a guest restored from a broken snapshot");
        check_guest(&mut second)?;
        second.shutdown(Duration::from_secs(60))?;
        // The guest's RAM (1 GiB) and its devices' state, about as long as before.
        let now = fs::metadata(&snap.state)?.len();
        ensure!(
            now > whole - whole / 100,
            "the snapshot is {now} bytes after the boot, against {whole} before it broke"
        );
        let third = Vm::boot(
            &VmConfig {
                run_dir: paths.repo.join("target/acq-runs/test-snapshot-broken-2"),
                ..cfg
            },
            &paths,
        )?;
        ensure!(third.restored, "the replaced snapshot was not restored");
        third.shutdown(Duration::from_secs(60))
    })();
    snap.discard();
    r
}

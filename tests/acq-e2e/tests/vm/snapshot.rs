//! Guests restored from a snapshot (harness/acq/src/snapshot.rs): the machine's first guest
//! boots and saves it, the next is restored from it, and the two hold the same things: the
//! cards and capture disks in order behind their root ports, the run's modules and files,
//! the host's time.
//! A snapshot that does not restore is booted past and replaced.
//!
//! Each test gives its machine a kernel argument of its own, so its snapshot is new (and
//! deleted at the end): the first boot must take it, whatever the cache holds.

use acq_e2e::gate::beside_others;
use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acq::accel::AccelChoice;
use acq::disks::DiskSpec;
use acq::paths::Paths;
use acq::vm::{Card, Vm, VmConfig};
use acq_e2e::{driver_image, json_u64, model_request, CMD};
use anyhow::{ensure, Context, Result};

/// The paths and the first guest's configuration of a new machine for `test`, or None
/// (and the test skipped) when snapshots are off.
fn new_machine(test: &str) -> Result<Option<(Paths, VmConfig)>> {
    if !acq::snapshot::enabled() {
        eprintln!("skipped: ACQ_SNAPSHOTS=0");
        return Ok(None);
    }
    let paths = Paths::discover()?;
    let cfg = config(&paths, test, 0)?;
    Ok(Some((paths, cfg)))
}

/// Two cards, two capture disks, the driver and its tools, a machine no other test has.
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
        disks: vec![
            DiskSpec {
                verify: false,
                ..DiskSpec::default()
            };
            2
        ],
        modules,
        files,
        run_dir: paths
            .repo
            .join(format!("target/acq-runs/test-snapshot-{test}-{run}")),
        kernel_args: vec![format!("acq.snapshot_test={test}-{nonce}")],
        // Snapshots are taken under TCG only.
        accel: AccelChoice::Tcg,
        ..VmConfig::default()
    })
}

/// The guest holds what its configuration asks for, however it started: the file put
/// in place and executable, the driver loaded with card 0 as /dev/acq0 and card 1 as
/// /dev/acq1 (a stream from each moves only its own model's counters), disk 0 as
/// /dev/vda and disk 1 as /dev/vdb (the same with writes), the host's time.
fn check_guest(vm: &mut Vm) -> Result<()> {
    for disk in 0..2 {
        let before: Vec<u64> = (vm.disk_servers.iter())
            .map(|d| Ok(d.disk_counters()?.data.bytes_written))
            .collect::<Result<_>>()?;
        let dev = ["/dev/vda", "/dev/vdb"][disk];
        vm.sh_ok(
            &format!("dd if=/dev/zero of={dev} bs=64k count=16 conv=fsync 2>&1"),
            CMD,
        )?;
        for (d, before) in before.iter().enumerate() {
            let moved = vm.disk_servers[d].disk_counters()?.data.bytes_written - before;
            ensure!(
                (d == disk) == (moved >= 1 << 20),
                "writing {dev} moved {moved} bytes of capture disk {d}"
            );
        }
    }
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

/// A snapshot is keyed by the guest image's bytes: a guest tool that named the clone it
/// was built in (an absolute source path in a panic message, `CARGO_MANIFEST_DIR`) would
/// give every clone its own snapshots, and a fresh clone's `make test` would boot every
/// machine again.
#[test]
fn guest_tools_do_not_name_the_clone() -> Result<()> {
    let _gate = beside_others();
    let paths = Paths::discover()?;
    let repo = paths.repo.canonicalize()?.display().to_string();
    let mut tools = 0;
    for entry in fs::read_dir(&paths.guest_bin)? {
        let path = entry?.path();
        if !path.is_file() || path.extension().is_some() {
            continue;
        }
        let bytes = fs::read(&path)?;
        tools += 1;
        ensure!(
            !bytes.windows(repo.len()).any(|w| w == repo.as_bytes()),
            "{} holds the clone's path {repo}",
            path.display()
        );
    }
    ensure!(
        tools >= 5,
        "only {tools} guest tools in {}",
        paths.guest_bin.display()
    );
    Ok(())
}

#[test]
fn a_restored_guest_holds_what_a_booted_one_does() -> Result<()> {
    let _gate = beside_others();
    let Some((paths, cfg)) = new_machine("same")? else {
        return Ok(());
    };
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
    let _gate = beside_others();
    let Some((paths, cfg)) = new_machine("broken")? else {
        return Ok(());
    };
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

/// A card whose BAR2 is larger than the default would get no BAR2 if plugged into a
/// running guest: its guest boots with the card present, and the driver maps all of it.
#[test]
fn a_card_with_a_large_bar2_is_present_at_boot() -> Result<()> {
    let _gate = beside_others();
    let paths = Paths::discover()?;
    let dir = paths.repo.join("target/acq-runs/test-snapshot-large-bar2");
    fs::create_dir_all(&dir)?;
    let card = dir.join("card.json");
    fs::write(&card, r#"{"bar2_size": "16M"}"#)?;
    let (modules, files) = driver_image(&paths)?;
    let mut vm = Vm::boot(
        &VmConfig {
            cards: vec![Card::Model { config: Some(card) }],
            modules,
            files,
            run_dir: dir.join("run"),
            ..VmConfig::default()
        },
        &paths,
    )?;
    vm.sh_ok(
        "insmod /lib/modules/acq.ko && for i in $(seq 100); do [ -c /dev/acq0 ] && exit 0; sleep 0.1; done; exit 1",
        CMD,
    )?;
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    ensure!(
        dmesg.contains("BAR2 16384 KiB"),
        "the driver did not map the 16 MiB BAR2:\n{dmesg}"
    );
    ensure!(
        vm.snapshot.is_none() && !vm.restored,
        "a snapshot for a large-BAR2 card"
    );
    vm.sh_ok("rmmod acq", CMD)?;
    vm.shutdown(Duration::from_secs(60))
}

//! Foundation: the guest boots with our kernel, the agent answers, Rust modules load and
//! unload, the kernel stays clean, and the guest shuts down cleanly.

use acq_e2e::gate::beside_others;
use std::time::Duration;

use acq_e2e::{assert_dmesg_clean, boot, CMD};
use anyhow::{ensure, Result};

#[test]
fn guest_boots_runs_a_rust_module_and_powers_off() -> Result<()> {
    let _gate = beside_others();
    let paths = acq::paths::Paths::discover()?;
    let sample = paths.kernel_build.join("samples/rust/rust_minimal.ko");
    let (mut vm, _) = boot("foundation", vec![sample])?;

    // The agent answers and reports the kernel we built.
    ensure!(
        vm.kernel.starts_with("7.3"),
        "guest kernel is {}",
        vm.kernel
    );
    let out = vm.exec(&["uname", "-r"], CMD)?;
    ensure!(
        out.success() && out.stdout.trim() == vm.kernel,
        "uname: {out:?}"
    );

    // Exit codes, stderr and the agent's timeout come back faithfully.
    let out = vm.sh("echo oops >&2; exit 3", CMD)?;
    ensure!(out.status == 3 && out.stderr == "oops\n", "{out:?}");
    let out = vm.sh("sleep 30", Duration::from_secs(1))?;
    ensure!(
        out.timed_out && !out.success(),
        "timeout not enforced: {out:?}"
    );
    ensure!(vm.exec(&["/no/such/program"], CMD).is_err());

    // While a command waits, the guest is idle and its CPUs stop their tick: the agent
    // sleeps until the command's output, exit or deadline. (It polled every 10 ms: 600
    // local timer interrupts in these 3 s against about 50, and an idle guest under TCG
    // kept a tenth of a host CPU busy.)
    let ticks = "awk '/LOC:/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; print n }' /proc/interrupts";
    let out = vm.sh_ok(
        &format!("a=$({ticks}); sleep 3; b=$({ticks}); echo $((b - a))"),
        CMD,
    )?;
    let ticks: u64 = out.trim().parse()?;
    ensure!(
        ticks < 200,
        "{ticks} local timer interrupts in 3 s of a guest whose command sleeps"
    );

    // Rust is enabled: the in-tree sample module loads, runs and unloads cleanly.
    vm.sh_ok("insmod /lib/modules/rust_minimal.ko", CMD)?;
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    ensure!(
        dmesg.contains("Rust minimal sample (init)"),
        "no init message:\n{dmesg}"
    );
    ensure!(vm.sh_ok("cat /proc/modules", CMD)?.contains("rust_minimal"));
    vm.sh_ok("rmmod rust_minimal", CMD)?;
    ensure!(vm
        .sh_ok("dmesg", CMD)?
        .contains("Rust minimal sample (exit)"));
    ensure!(!vm.sh_ok("cat /proc/modules", CMD)?.contains("rust_minimal"));

    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(Duration::from_secs(60))?;
    Ok(())
}

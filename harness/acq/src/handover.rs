//! What a guest goes through before it serves another run: the part of a hand-over that
//! does not depend on who used the guest. Shared by `acq run --reuse-guests` (one guest
//! for several scenarios, `scenario::run::reuse`) and the end-to-end tests' guest pool
//! (tests/acq-e2e, `pool`): each adds its own kernel-log check around it.
//!
//! The driver must already be unloaded: with it loaded a card would still be bound.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::control::ModelControl;
use crate::vm::Vm;

/// How long one hand-over command may take in the guest.
const CMD: Duration = Duration::from_secs(60);

/// How long after the driver's unload a hand-over reads the kernel log at the earliest:
/// four times the driver's longest timer (the watchdog's 500 ms), so that a report a timer
/// or work item left behind lands in the run that loaded the driver.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Each card's model resets the card and disarms what is still armed (a fault that never
/// fired must not fire in the next run); the requests go to `log` when given.
pub fn reset_cards(vm: &Vm, log: Option<&Path>) -> Result<()> {
    for (i, m) in vm.models.iter().enumerate() {
        let mut c = ModelControl::connect(&m.control, log).with_context(|| format!("card {i}"))?;
        c.request(&json!({"cmd": "reset"}))
            .and_then(|_| c.request(&json!({"cmd": "clear_faults"})))
            .with_context(|| format!("card {i}"))?;
    }
    Ok(())
}

/// Fails unless the guest is as its boot left it, in what a run can change and a reset
/// does not undo: all `cards` are there (found again by a rescan of the PCI bus if the
/// run removed one in the guest) with no driver bound and no `driver_override` set; no
/// process the run started still runs; the mounts are `mounts` (/proc/mounts after the
/// boot). Then empties /tmp (a tmpfs holds guest RAM).
pub fn ensure_as_booted(vm: &mut Vm, cards: usize, mounts: &str) -> Result<()> {
    // One guest command: the cards (rescanned for if one is missing), then, for each, a
    // line if a driver has it or is set to take it (with acq unloaded none should: a run
    // that bound a card to vfio-pci, say), then the shell's pid and the processes.
    let list = card_device_files_cmd();
    let out = vm.sh_ok(
        &format!(
            "n=$({list} | wc -l); [ \"$n\" = {cards} ] || {{ echo 1 > /sys/bus/pci/rescan; n=$({list} | wc -l); }}; \
             echo $n; for d in $({list}); do d=${{d%/device}}; \
             [ -e $d/driver ] && echo \"driver: $d is bound to $(basename $(readlink $d/driver))\"; \
             o=$(cat $d/driver_override); [ \"$o\" = '(null)' ] || echo \"driver: $d has driver_override $o\"; \
             done; echo $$; ps -o pid,ppid,args"
        ),
        CMD,
    )?;
    let mut lines = out.lines().peekable();
    let found: usize = lines.next().unwrap_or("").trim().parse().unwrap_or(0);
    if found != cards {
        bail!("the guest shows {found} card(s) of the {cards} it was booted with, after a rescan");
    }
    if let Some(line) = lines.peek().and_then(|l| l.strip_prefix("driver: ")) {
        bail!("a card was left to a driver: {line}");
    }
    let shell = lines.next().unwrap_or("").trim().to_string();
    if let Some(p) = stray_processes(lines, &shell).first() {
        bail!("a process the run started still runs: {p}");
    }
    let now = vm.sh_ok("cat /proc/mounts", CMD)?;
    if now != mounts {
        bail!("file systems were left mounted:\n{now}");
    }
    vm.sh_ok("rm -rf /tmp/* /tmp/.[!.]*", CMD)?;
    Ok(())
}

/// The processes in the guest that are not its own ([`stray_processes`]).
pub fn stray_processes_in(vm: &mut Vm) -> Result<Vec<String>> {
    let out = vm.sh_ok("echo $$; ps -o pid,ppid,args", CMD)?;
    let mut lines = out.lines();
    let shell = lines.next().unwrap_or("").trim().to_string();
    Ok(stray_processes(lines, &shell))
}

/// A guest shell command that prints the sysfs `device` file of each of the guest's cards
/// (`/sys/bus/pci/devices/<address>/device`), found by their PCI device ID.
pub fn card_device_files_cmd() -> String {
    let id = format!("{:#06x}", acq_hw::regs::pci::DEVICE_ID);
    format!("grep -lx {id} /sys/bus/pci/devices/*/device")
}

/// The processes of `ps -o pid,ppid,args` (header first) that are not the guest's own:
/// not a kernel thread (`[name]`), init, the agent, or the shell with pid `shell` that
/// ran `ps` and its children.
pub fn stray_processes<'a>(ps: impl Iterator<Item = &'a str>, shell: &str) -> Vec<String> {
    ps.skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (pid, ppid) = (f.next()?, f.next()?);
            let args = f.collect::<Vec<_>>().join(" ");
            let ours = pid == "1"
                || pid == shell
                || ppid == shell
                || args.starts_with('[')
                || args == "/sbin/acq-agent";
            (!ours).then(|| format!("pid {pid}: {args}"))
        })
        .collect()
}

/// A card's counters reply with its statistics (`CardStats`, counted since the model
/// started) counted from `baseline` on, the same reply read when the run started: a
/// run's counters are its own whether its guest was booted for it or handed over.
/// The registers and flags in the reply are as they are now.
pub fn since(mut now: Value, baseline: Option<&Value>) -> Value {
    let (Some(obj), Some(base)) = (now.as_object_mut(), baseline) else {
        return now;
    };
    for name in acq_wire::counters::CardStats::NAMES {
        if let (Some(v), Some(b)) = (
            obj.get(*name).and_then(Value::as_u64),
            base.get(*name).and_then(Value::as_u64),
        ) {
            obj.insert((*name).to_string(), json!(v.saturating_sub(b)));
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_left_behind_is_named_and_the_guests_own_are_not() {
        let ps = "PID   PPID  COMMAND
    1     0 {init} /bin/sh /init
    2     0 [kthreadd]
   52     1 /sbin/acq-agent
   61    52 sleep 300
   70    52 /bin/sh -c echo $$; ps -o pid,ppid,args
   71    70 {ps} /bin/sh -c echo $$; ps -o pid,ppid,args";
        assert_eq!(stray_processes(ps.lines(), "70"), ["pid 61: sleep 300"]);
        assert!(stray_processes(ps.lines().filter(|l| !l.contains("sleep")), "70").is_empty());
    }
}

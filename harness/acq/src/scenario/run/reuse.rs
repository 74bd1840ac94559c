//! One guest for several scenarios (`acq run --reuse-guests`): which scenarios may share a
//! guest ([`guest_shape`]), how a run's scenarios are cut into batches that share one
//! ([`batches`]), what a guest must go through before the next scenario gets it
//! ([`hand_over`]), and counters counted from the scenario's start ([`since`]).
//!
//! Why: a debug-kernel guest takes 12-14 s to boot under TCG and 7 s more for kmemleak's
//! baseline scans, while most debug scenarios run for a few seconds. A guest handed over
//! has had the driver unloaded, its kernel log checked and its cards reset by their
//! models (on the debug flavor its leak scan is left to the last scenario in it, which
//! tells each scenario's objects apart: `leaks`); the next scenario loads the driver
//! again, which is itself a path worth testing (state that survives rmmod and insmod).

use super::*;

/// The guest a scenario needs, as a key: two scenarios with the same key can run one
/// after the other in one guest. `None` for a scenario that must have a guest of its own:
/// one that does not let the harness load and unload the driver, has capture disks (their
/// servers check a stream of their own), or leaves its card changed in ways a reset does
/// not undo (unplugged, config space rewritten, stray DMA into the guest's memory).
pub fn guest_shape(sc: &Scenario, opts: &RunOptions) -> Option<String> {
    let leaves_a_mark = sc.faults.iter().any(|f| {
        matches!(
            f.inject.name(),
            "surprise_removal" | "config_change" | "stray_dma"
        )
    });
    // BAR2 keeps its contents across a reset (docs/device.md): a BAR2-mode scenario
    // would start with the one before's samples in the slots, where a card at power-on
    // has zeros.
    let bar2 = |d: &super::super::format::DeviceSettings| {
        d.transfer == Some(acq_wire::consumer::device::Transfer::Bar2)
    };
    let uses_bar2 = sc.cards.iter().any(|c| bar2(&c.device))
        || sc
            .steps
            .iter()
            .any(|s| matches!(s, Step::Config(c) if bar2(&c.device)));
    if !sc.load_driver || sc.cards.is_empty() || !sc.disks.is_empty() || leaves_a_mark || uses_bar2
    {
        return None;
    }
    let (viommu, kernel_args) = vm_dma(sc, opts);
    let shape = json!({
        "accel": format!("{:?}", opts.accel.unwrap_or(sc.vm.accel)),
        "kernel": opts.kernel_flavor.unwrap_or(sc.vm.kernel).to_string(),
        "cpus": sc.vm.cpus,
        "memory_mib": opts.memory_mib.unwrap_or(sc.vm.memory_mib),
        "viommu": viommu,
        "kernel_args": kernel_args,
        "cards": sc.cards.iter().map(model_config).collect::<Vec<_>>(),
    });
    Some(shape.to_string())
}

/// Cuts `scenarios` (indexes into the run's list, in its order) into batches, each run in
/// turn by one job. Without `reuse`, one scenario a batch. With it, the scenarios of one
/// [`guest_shape`] share batches of at most a job's fair share of the run (the run's
/// length over `jobs`, so that one long batch does not leave the other jobs idle at the
/// end); the longest batches come first.
pub fn batches(shapes: &[Option<String>], jobs: usize, reuse: bool) -> Vec<Vec<usize>> {
    if !reuse {
        return (0..shapes.len()).map(|i| vec![i]).collect();
    }
    let share = shapes.len().div_ceil(jobs.max(1)).max(1);
    let mut groups: Vec<(Option<&String>, Vec<usize>)> = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        match shape {
            Some(s) => match groups.iter_mut().find(|(k, _)| *k == Some(s)) {
                Some((_, g)) => g.push(i),
                None => groups.push((Some(s), vec![i])),
            },
            None => groups.push((None, vec![i])),
        }
    }
    let mut out = Vec::new();
    for (_, g) in groups {
        // As even as they can be: 13 at a share of 12 is 7 and 6, not 12 and 1.
        let n = g.len().div_ceil(share);
        let mut rest = g.as_slice();
        for k in 0..n {
            let take = rest.len().div_ceil(n - k);
            let (a, b) = rest.split_at(take);
            out.push(a.to_vec());
            rest = b;
        }
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.len()));
    out
}

/// How long after the driver's unload the hand-over reads the kernel log at the earliest.
pub(super) const SETTLE: Duration = Duration::from_secs(2);

/// Makes a guest whose scenario passed fit for the next one: each card's model resets the
/// card and disarms what is still armed (a fault that never fired must not fire in the
/// next scenario); every card is still there (found again by a rescan of the PCI bus if
/// the scenario removed it in the guest) with no driver bound and no `driver_override`
/// set; no process the scenario started still runs and
/// no file system it mounted is still mounted (`mounts`: /proc/mounts after the boot);
/// its files in /tmp are deleted (a stream's tmpfs sink holds guest RAM); last, at least
/// [`SETTLE`] after the driver was `unloaded`, the kernel log since `seen` (the
/// scenario's last read of it) is checked as the scenario's, with its expectations, and
/// cleared (`seen` then empty): each scenario checks only its own. (On the debug flavor
/// the guest has not been scanned for leaks: the last scenario in it scans for all,
/// `leaks`.)
pub(super) fn hand_over(
    vm: &mut Vm,
    sc: &Scenario,
    mounts: &str,
    seen: &mut String,
    unloaded: Instant,
    dir: &Path,
    res: &mut ScenarioResult,
) -> Result<()> {
    let (cards, ex) = (sc.cards.len(), &sc.expect);
    for (i, m) in vm.models.iter().enumerate() {
        let mut c = ModelControl::connect(&m.control, Some(&dir.join("control.log")))
            .with_context(|| format!("card {i}"))?;
        c.request(&json!({"cmd": "reset"}))
            .and_then(|_| c.request(&json!({"cmd": "clear_faults"})))
            .with_context(|| format!("card {i}"))?;
    }
    // One guest command: the cards (rescanned for if one is missing), then, for each, a
    // line if a driver has it or is set to take it (with acq unloaded none should: an
    // `exec` that bound a card to vfio-pci, say), then the shell's pid and the processes.
    let id = format!("{:#06x}", acq_hw::regs::pci::DEVICE_ID);
    let list = format!("grep -lx {id} /sys/bus/pci/devices/*/device");
    let out = vm.sh_ok(
        &format!(
            "n=$({list} | wc -l); [ \"$n\" = {cards} ] || {{ echo 1 > /sys/bus/pci/rescan; n=$({list} | wc -l); }}; \
             echo $n; for d in $({list}); do d=${{d%/device}}; \
             [ -e $d/driver ] && echo \"driver: $d is bound to $(basename $(readlink $d/driver))\"; \
             o=$(cat $d/driver_override); [ \"$o\" = '(null)' ] || echo \"driver: $d has driver_override $o\"; \
             done; echo $$; ps -o pid,ppid,args"
        ),
        Duration::from_secs(60),
    )?;
    let mut lines = out.lines().peekable();
    let found: usize = lines.next().unwrap_or("").trim().parse().unwrap_or(0);
    if found != cards {
        bail!("the guest shows {found} card(s) of the {cards} it was booted with, after a rescan");
    }
    if let Some(line) = lines.peek().and_then(|l| l.strip_prefix("driver: ")) {
        bail!("the scenario left a card to a driver: {line}");
    }
    let shell = lines.next().unwrap_or("").trim().to_string();
    if let Some(p) = stray_processes(lines, &shell).first() {
        bail!("a process the scenario started still runs: {p}");
    }
    let now = vm.sh_ok("cat /proc/mounts", Duration::from_secs(60))?;
    if now != mounts {
        bail!("the scenario left file systems mounted:\n{now}");
    }
    vm.sh_ok("rm -rf /tmp/* /tmp/.[!.]*", Duration::from_secs(60))?;
    // Last, the kernel log since the scenario's checks read it, read and cleared at once:
    // a report the scenario's driver left for later (a timer, a work item) is its own. Read
    // at least SETTLE after the unload, four times the driver's longest timer (the
    // watchdog's 500 ms), so that such a report lands here and not in the next scenario.
    std::thread::sleep(SETTLE.saturating_sub(unloaded.elapsed()));
    let last = vm.sh_ok("dmesg -c", Duration::from_secs(60))?;
    let later = last.get(seen.len()..).unwrap_or(&last);
    seen.clear();
    super::append(&dir.join("dmesg-unload.txt"), later)?;
    let check = kernel_log_check("kernel log clean through the hand-over", later, ex);
    let ok = check.ok;
    res.checks.push(check);
    if !ok {
        bail!("the kernel reported a problem while the guest was handed over (dmesg-unload.txt)");
    }
    Ok(())
}

/// The processes of `ps -o pid,ppid,args` (header first) that are not the guest's own:
/// not a kernel thread (`[name]`), init, the agent, or the shell with pid `shell` that
/// ran `ps` and its children.
pub(super) fn stray_processes<'a>(ps: impl Iterator<Item = &'a str>, shell: &str) -> Vec<String> {
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
/// started) counted from `baseline` on, the same reply read when the scenario started: a
/// scenario's counters are its own whether its guest was booted for it or handed over.
/// The registers and flags in the reply are as they are now.
pub(super) fn since(mut now: Value, baseline: Option<&Value>) -> Value {
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

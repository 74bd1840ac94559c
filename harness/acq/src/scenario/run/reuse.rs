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

use crate::handover::SETTLE;

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
    crate::handover::reset_cards(vm, Some(&dir.join("control.log")))?;
    crate::handover::ensure_as_booted(vm, sc.cards.len(), mounts)?;
    // Last, the kernel log since the scenario's checks read it, read and cleared at once:
    // a report the scenario's driver left for later (a timer, a work item) is its own. Read
    // at least SETTLE after the unload, four times the driver's longest timer (the
    // watchdog's 500 ms), so that such a report lands here and not in the next scenario.
    std::thread::sleep(SETTLE.saturating_sub(unloaded.elapsed()));
    let last = vm.sh_ok("dmesg -c", Duration::from_secs(60))?;
    let later = last.get(seen.len()..).unwrap_or(&last);
    seen.clear();
    super::append(&dir.join("dmesg-unload.txt"), later)?;
    let check = kernel_log_check("kernel log clean through the hand-over", later, &sc.expect);
    let ok = check.ok;
    res.checks.push(check);
    if !ok {
        bail!("the kernel reported a problem while the guest was handed over (dmesg-unload.txt)");
    }
    Ok(())
}

//! kmemleak's scan on the debug flavor, and whose leak an object is when one scan covers
//! several scenarios.
//!
//! A debug guest handed on (`acq run --reuse-guests`) is scanned once, when its last
//! scenario ends, not after each one: a scan is 5 s of waiting for the objects to age and
//! two passes over the kernel's memory, about 12 s a scenario under TCG. The scenarios
//! before it wait for that scan with their results ([`Held`]). Each object the scan finds
//! goes to the scenario that was running when it was allocated: kmemleak stamps every
//! object with the jiffies of its allocation, and each scenario's start is read in
//! jiffies too ([`start_jiffies`]). An object allocated before the first of them (at boot,
//! its last reference dropped later) is laid on every one of them.

use super::*;

/// A scenario that passed in a debug guest it handed on before kmemleak scanned it: its
/// result waits for the guest's scan.
pub(super) struct Held {
    /// The result, complete but for the leak check.
    pub res: ScenarioResult,
    /// Guest jiffies when it started (before the driver loaded); None if unreadable.
    pub start: Option<u64>,
    /// The guest's scan has given it its leak check.
    pub scanned: bool,
}

/// The guest's jiffies now, on a kernel with kmemleak (None elsewhere, or unreadable).
pub(super) fn start_jiffies(vm: &mut Vm) -> Option<u64> {
    vm.sh(crate::dmesg::JIFFIES_CMD, Duration::from_secs(60))
        .ok()
        .filter(|o| o.success())
        .and_then(|o| o.stdout.trim().parse().ok())
}

/// Which of the scenarios started at `starts` (guest jiffies, in the order they ran) an
/// object allocated at `at` belongs to: the last one started at or before it. None when
/// that cannot be told: allocated before the first one, or a clock that was not read.
pub(super) fn owner(starts: &[Option<u64>], at: Option<u64>) -> Option<usize> {
    let at = at?;
    let starts: Option<Vec<u64>> = starts.iter().copied().collect();
    starts?.iter().rposition(|s| *s <= at)
}

/// kmemleak's scan once the driver is gone: every object nothing references any more,
/// each laid on the scenario it was allocated in, `res` (started at `start`) or one of
/// `held` (the scenarios before it in this guest, whose scans were left to this one).
pub(super) fn check_leaks(
    vm: &mut Vm,
    dir: &Path,
    bound: Duration,
    res: &mut ScenarioResult,
    start: Option<u64>,
    held: &mut [Held],
) -> Result<()> {
    const NAME: &str = "kmemleak: nothing leaked";
    // Two scans of the debug kernel's memory take seconds under TCG.
    let scan = vm.sh(&crate::dmesg::kmemleak_scan_cmd(), bound)?;
    let failed = if scan.status == 3 {
        // The debug kernel without kmemleak: it disabled itself (say, its pool ran out)
        // and would pass every leak.
        Some(format!(
            "{} is missing on the debug kernel: kmemleak disabled itself (see dmesg.txt)",
            crate::dmesg::KMEMLEAK
        ))
    } else if !scan.success() {
        Some(format!("the scan failed: {}", scan.stderr.trim()))
    } else {
        None
    };
    let here = format!("the scan after `{}` ({})", res.name, dir.display());
    if let Some(why) = failed {
        for h in held.iter_mut() {
            h.res.checks.push(Check {
                name: NAME.into(),
                ok: false,
                detail: format!("{why}: {here}"),
            });
            h.scanned = true;
        }
        res.checks.push(Check {
            name: NAME.into(),
            ok: false,
            detail: why,
        });
        return Ok(());
    }
    fs::write(dir.join("kmemleak.txt"), &scan.stdout)?;
    let starts: Vec<Option<u64>> = held
        .iter()
        .map(|h| h.start)
        .chain(std::iter::once(start))
        .collect();
    let mut owed: Vec<Vec<String>> = vec![Vec::new(); starts.len()];
    let mut unplaced = Vec::new();
    for leak in crate::dmesg::kmemleak_objects(&scan.stdout) {
        match owner(&starts, leak.jiffies) {
            Some(i) => owed[i].push(leak.summary),
            None => unplaced.push(leak.summary),
        }
    }
    let shared = held.len() + 1 > 1;
    let detail = |mine: &[String]| {
        let all: Vec<&String> = mine.iter().chain(&unplaced).collect();
        if all.is_empty() {
            return "no unreferenced objects".to_string();
        }
        let mut d = format!("{} unreferenced object(s)", all.len());
        if shared && !unplaced.is_empty() {
            d.push_str(&format!(
                " ({} allocated before any scenario of this guest ran: laid on each of them, \
                 one may have dropped its last reference)",
                unplaced.len()
            ));
        }
        let first: Vec<&str> = all.iter().take(3).map(|s| s.as_str()).collect();
        format!("{d}, kmemleak.txt: {}", first.join(" | "))
    };
    for (h, mine) in held.iter_mut().zip(&owed) {
        h.res.checks.push(Check {
            name: NAME.into(),
            ok: mine.is_empty() && unplaced.is_empty(),
            detail: format!("{}; {here}", detail(mine)),
        });
        h.scanned = true;
    }
    let mine = owed.last().map(Vec::as_slice).unwrap_or_default();
    res.checks.push(Check {
        name: NAME.into(),
        ok: mine.is_empty() && unplaced.is_empty(),
        detail: detail(mine),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn an_object_belongs_to_the_scenario_running_when_it_was_allocated() {
        let starts = [Some(100), Some(250), Some(400)];
        assert_eq!(owner(&starts, Some(100)), Some(0));
        assert_eq!(owner(&starts, Some(249)), Some(0));
        assert_eq!(owner(&starts, Some(250)), Some(1));
        assert_eq!(owner(&starts, Some(9999)), Some(2));
        // Before the first scenario (at boot): nobody's in particular.
        assert_eq!(owner(&starts, Some(99)), None);
        // A clock not read: nobody's in particular.
        assert_eq!(owner(&starts, None), None);
        assert_eq!(owner(&[Some(100), None], Some(500)), None);
        assert_eq!(owner(&[Some(100)], Some(500)), Some(0));
    }
}

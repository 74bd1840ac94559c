//! kmemleak's scan on the debug flavor, and whose leak an object is when one scan covers
//! several scenarios.
//!
//! A debug guest handed on (`acq run --reuse-guests`) is scanned once, when its last
//! scenario ends, not after each one: a scan is 5 s of waiting for the objects to age and
//! two passes over the kernel's memory, about 12 s a scenario under TCG. The scenarios
//! before it wait for that scan with their results ([`Held`]). kmemleak stamps every
//! object with the jiffies of its allocation, and each scenario's [`Window`] is read on
//! the same clock (from before its driver loads to after it is unloaded): an object
//! allocated inside a scenario's window is that scenario's; one allocated between two
//! windows (a hand-over's PCI rescan makes a `pci_dev`) or before the first (at boot) is
//! laid on every scenario after that point, one of which dropped its last reference.

use super::*;

/// A scenario's time in its guest on kmemleak's clock (guest jiffies): from before its
/// driver loaded to after it was unloaded. None where the clock could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Window {
    pub start: Option<u64>,
    pub end: Option<u64>,
}

/// A scenario that passed in a debug guest it handed on before kmemleak scanned it: its
/// result waits for the guest's scan.
pub(super) struct Held {
    /// The result, complete but for the leak check.
    pub res: ScenarioResult,
    pub window: Window,
    /// The guest's scan has given it its leak check.
    pub scanned: bool,
}

/// The guest's jiffies now (None where unreadable: the scheduler's debugfs file missing).
pub(super) fn jiffies(vm: &mut Vm) -> Option<u64> {
    vm.sh(crate::dmesg::JIFFIES_CMD, Duration::from_secs(60))
        .ok()
        .filter(|o| o.success())
        .and_then(|o| o.stdout.trim().parse().ok())
}

/// Whose an object is, among the scenarios of one guest in the order they ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// Allocated while scenario N ran.
    Own(usize),
    /// Allocated before scenario N started and after the one before it ended (or before
    /// the first, at boot): any of N and those after it may have dropped its last
    /// reference.
    From(usize),
    /// A clock was not read: any of them.
    Unknown,
}

/// Where an object allocated at `at` (guest jiffies) belongs among scenarios that ran in
/// `windows`, in order.
pub(super) fn place(windows: &[Window], at: Option<u64>) -> Place {
    let Some(at) = at else {
        return Place::Unknown;
    };
    let Some(starts) = windows
        .iter()
        .map(|w| w.start)
        .collect::<Option<Vec<u64>>>()
    else {
        return Place::Unknown;
    };
    let Some(i) = starts.iter().rposition(|s| *s <= at) else {
        return Place::From(0);
    };
    match windows[i].end {
        // After its end: between it and the next (the last one's scan: its own).
        Some(end) if at > end => Place::From((i + 1).min(windows.len() - 1)),
        _ => Place::Own(i),
    }
}

/// The scenario whose kmemleak scan covers `held` too (those before it in its guest):
/// its result and window.
pub(super) struct Scanning<'a> {
    pub res: &'a mut ScenarioResult,
    pub window: Window,
    pub held: &'a mut [Held],
}

/// kmemleak's scan once the driver is gone: every object nothing references any more,
/// each laid on its scenario ([`place`]), the scanning one or one of those held.
pub(super) fn check_leaks(
    vm: &mut Vm,
    dir: &Path,
    bound: Duration,
    s: &mut Scanning,
) -> Result<()> {
    const NAME: &str = "kmemleak: nothing leaked";
    // Two scans of the debug kernel's memory take seconds under TCG.
    let scan = vm.sh(&crate::dmesg::kmemleak_scan_cmd(), bound)?;
    if scan.status != 3 {
        fs::write(dir.join("kmemleak.txt"), &scan.stdout)?;
    }
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
    let here = format!("the scan after `{}` ({})", s.res.name, dir.display());
    let mut results: Vec<&mut ScenarioResult> = Vec::new();
    let mut windows = Vec::new();
    for h in s.held.iter_mut() {
        h.scanned = true;
        windows.push(h.window);
        results.push(&mut h.res);
    }
    windows.push(s.window);
    results.push(&mut *s.res);
    let last = results.len() - 1;
    if let Some(why) = failed {
        for (k, r) in results.into_iter().enumerate() {
            r.checks.push(Check {
                name: NAME.into(),
                ok: false,
                detail: if k == last {
                    why.clone()
                } else {
                    format!("{why}: {here}")
                },
            });
        }
        return Ok(());
    }
    // Per scenario: the objects its own, and those laid on it with others.
    let mut own: Vec<Vec<String>> = vec![Vec::new(); windows.len()];
    let mut laid: Vec<Vec<String>> = vec![Vec::new(); windows.len()];
    for leak in crate::dmesg::kmemleak_objects(&scan.stdout) {
        match place(&windows, leak.jiffies) {
            Place::Own(k) => own[k].push(leak.summary),
            Place::From(k) => laid[k..]
                .iter_mut()
                .for_each(|l| l.push(leak.summary.clone())),
            Place::Unknown => laid.iter_mut().for_each(|l| l.push(leak.summary.clone())),
        }
    }
    for (k, r) in results.into_iter().enumerate() {
        let all: Vec<&String> = own[k].iter().chain(&laid[k]).collect();
        let mut detail = if all.is_empty() {
            "no unreferenced objects".to_string()
        } else {
            let first: Vec<&str> = all.iter().take(3).map(|s| s.as_str()).collect();
            format!(
                "{} unreferenced object(s){}, kmemleak.txt: {}",
                all.len(),
                if laid[k].is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} not allocated while it ran, but before it or between two \
                         scenarios of its guest, or with the guest's clock unread: laid on \
                         each scenario that may have dropped its last reference)",
                        laid[k].len()
                    )
                },
                first.join(" | ")
            )
        };
        if k != last {
            detail.push_str(&format!("; {here}"));
        }
        r.checks.push(Check {
            name: NAME.into(),
            ok: all.is_empty(),
            detail,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{place, Place, Window};

    fn w(start: u64, end: u64) -> Window {
        Window {
            start: Some(start),
            end: Some(end),
        }
    }

    #[test]
    fn an_object_belongs_to_the_scenario_running_when_it_was_allocated() {
        let ws = [
            w(100, 200),
            w(250, 380),
            Window {
                start: Some(400),
                end: None,
            },
        ];
        assert_eq!(place(&ws, Some(100)), Place::Own(0));
        assert_eq!(place(&ws, Some(200)), Place::Own(0));
        assert_eq!(place(&ws, Some(250)), Place::Own(1));
        assert_eq!(place(&ws, Some(9999)), Place::Own(2));
        // Between two windows (a hand-over): the next one on.
        assert_eq!(place(&ws, Some(220)), Place::From(1));
        assert_eq!(place(&ws, Some(390)), Place::From(2));
        // Before the first (at boot): all of them.
        assert_eq!(place(&ws, Some(99)), Place::From(0));
        // After the last one's end (its scan): still the last one's at most.
        assert_eq!(place(&[w(100, 200)], Some(300)), Place::From(0));
        assert_eq!(
            place(&[w(100, 200), w(250, 300)], Some(301)),
            Place::From(1)
        );
        // A clock not read: anyone's.
        assert_eq!(place(&ws, None), Place::Unknown);
        let unread = [w(100, 200), Window::default()];
        assert_eq!(place(&unread, Some(150)), Place::Unknown);
    }
}

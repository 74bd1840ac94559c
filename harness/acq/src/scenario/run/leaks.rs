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
    let last = i + 1 == windows.len();
    match windows[i].end {
        // After the last one's end (its hand-over, its scan): nobody else's.
        _ if last => Place::Own(i),
        // After its end: in the gap before the next one.
        Some(end) if at > end => Place::From(i + 1),
        Some(_) => Place::Own(i),
        // Its end unread: in its window or in the gap after, nobody can tell.
        None => Place::Unknown,
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
    // Two scans of the debug kernel's memory take seconds under TCG.
    let scan = vm.sh(&crate::dmesg::kmemleak_scan_cmd(), bound)?;
    let failed = match scan.status {
        // The debug kernel without kmemleak: it disabled itself (say, its pool ran out)
        // and would pass every leak.
        3 => Some(format!(
            "{} is missing on the debug kernel: kmemleak disabled itself (see dmesg.txt)",
            crate::dmesg::KMEMLEAK
        )),
        _ => {
            fs::write(dir.join("kmemleak.txt"), &scan.stdout)?;
            (!scan.success()).then(|| format!("the scan failed: {}", scan.stderr.trim()))
        }
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
    let shared = results.len() > 1;
    let last = results.len() - 1;
    let (own, laid) = attribute(&windows, &scan.stdout);
    for (k, r) in results.into_iter().enumerate() {
        let (ok, mut detail) = match &failed {
            Some(why) => (false, why.clone()),
            None => detail(&own[k], &laid[k], shared),
        };
        if k != last {
            detail.push_str(&format!("; {here}"));
        }
        r.checks.push(Check {
            name: "kmemleak: nothing leaked".into(),
            ok,
            detail,
        });
    }
    Ok(())
}

/// Each scenario's objects of the `report`, by [`place`]: those allocated in its window,
/// and those laid on it with others.
fn attribute(windows: &[Window], report: &str) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut own: Vec<Vec<String>> = vec![Vec::new(); windows.len()];
    let mut laid: Vec<Vec<String>> = vec![Vec::new(); windows.len()];
    for leak in crate::dmesg::kmemleak_objects(report) {
        match place(windows, leak.jiffies) {
            Place::Own(k) => own[k].push(leak.summary),
            Place::From(k) => laid[k..]
                .iter_mut()
                .for_each(|l| l.push(leak.summary.clone())),
            Place::Unknown => laid.iter_mut().for_each(|l| l.push(leak.summary.clone())),
        }
    }
    (own, laid)
}

/// A scenario's leak check from its objects: whether it holds, and its detail (the first
/// three objects; in a shared guest, how many were laid on it with others).
fn detail(own: &[String], laid: &[String], shared: bool) -> (bool, String) {
    let all: Vec<&str> = own.iter().chain(laid).map(String::as_str).collect();
    if all.is_empty() {
        return (true, "no unreferenced objects".into());
    }
    let why = if shared && !laid.is_empty() {
        format!(
            " ({} not allocated while it ran but before it, between two scenarios of its \
             guest, or with the guest's clock unread: laid on each scenario that may have \
             dropped its last reference)",
            laid.len()
        )
    } else {
        String::new()
    };
    let first = all.iter().take(3).copied().collect::<Vec<_>>().join(" | ");
    (
        false,
        format!(
            "{} unreferenced object(s){why}, kmemleak.txt: {first}",
            all.len()
        ),
    )
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
        // After the last one's end (its hand-over, its scan): the last one's.
        assert_eq!(place(&[w(100, 200)], Some(300)), Place::Own(0));
        assert_eq!(place(&[w(100, 200), w(250, 300)], Some(301)), Place::Own(1));
        // A clock not read: anyone's.
        assert_eq!(place(&ws, None), Place::Unknown);
        let unread = [w(100, 200), Window::default()];
        assert_eq!(place(&unread, Some(150)), Place::Unknown);
        // An end not read: within that window or after it, nobody can tell.
        let open = [
            Window {
                start: Some(100),
                end: None,
            },
            w(250, 300),
        ];
        assert_eq!(place(&open, Some(220)), Place::Unknown);
        assert_eq!(place(&open, Some(260)), Place::Own(1));
    }
}

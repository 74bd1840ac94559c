//! How many of the VM tests' guests run at once. make test-vm lets four run (VM_JOBS, as
//! `ACQ_TEST_GUESTS`) on a 2-CPU host, and libtest starts twice as many tests: the others
//! wait here. Under TCG a guest's clock runs on while its vCPU waits for a host CPU, so a
//! test that judges the driver by how long something takes (a wake-up, a second reader, a
//! submission, a signal's effect) or by a consumer keeping up with no overflow, with less
//! than about a second to spare, would measure the host's load as much as the driver. Such
//! a test holds [`quiet`]: at most one other guest runs beside it, as every test ran
//! through many CI runs before make test-vm ran four at a time, and never one that keeps
//! a host CPU busy by itself ([`heavy`]: a debug kernel's, one behind the virtual IOMMU,
//! the VFIO userspace driver's, a long stream at full speed). Every other test holds
//! [`beside_others`] while its guest runs (an ioctl given a second beside a call stuck for
//! three, say). The gate is the test binary's: the VM tests are one binary (`tests/vm/`),
//! so it counts them all; the pool's own test, a binary of its own, runs alone. A guest
//! idle in the pool (`pool`, two at most) takes no slot: it runs nothing.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// Guests the test binary runs at once at most: `ACQ_TEST_GUESTS` (make test-vm passes its
/// VM_JOBS), four by default. libtest may start more tests than that (make test-vm starts
/// twice as many): the others wait here, so that a slot left free beside a quiet test
/// finds a test ready to take it.
fn total() -> u32 {
    static TOTAL: OnceLock<u32> = OnceLock::new();
    *TOTAL.get_or_init(|| {
        // More than u32::MAX guests is no limit at all.
        u32::try_from(crate::env_count("ACQ_TEST_GUESTS", 4)).unwrap_or(u32::MAX)
    })
}

/// A quiet test's share of `total` slots: it leaves room for one other guest (none when
/// there is only one slot; with two, two quiet tests may run side by side).
fn quiet_share(total: u32) -> u32 {
    total.saturating_sub(1).max(1)
}

/// A heavy test's share: two slots, so that it never runs beside a quiet test (with three
/// slots or more a quiet test leaves one free and a heavy one needs two; with two or one,
/// a heavy test takes them all).
fn heavy_share(total: u32) -> u32 {
    total.min(2)
}

/// What a test's guest asks of the gate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ordinary,
    Heavy,
    Quiet,
}

impl Kind {
    fn share(self, total: u32) -> u32 {
        match self {
            Kind::Ordinary => 1,
            Kind::Heavy => heavy_share(total),
            Kind::Quiet => quiet_share(total),
        }
    }
}

struct Slots {
    used: u32,
    /// Quiet tests waiting for their share: while none runs, other tests wait behind
    /// them, or a steady stream of ordinary tests would keep a quiet test's share from
    /// ever being free at once.
    quiet_waiting: u32,
    /// Quiet tests running. Beside one, the slot it leaves may go to an ordinary test even
    /// while another quiet test waits: the running one gives back its share when it ends,
    /// all the waiting one needs, so nothing waits longer for it. (Before, that slot
    /// stayed empty behind each waiting quiet test: a CI run's CPUs idled 10-50% busy
    /// through consumers.rs's quiet tests.)
    quiet_running: u32,
    /// Heavy tests waiting for their two slots: ordinary tests wait behind them too
    /// (except in the slot beside a quiet test, where a heavy one may not run), or the
    /// longest tests would drift to the end of the run, a single slot at a time taken
    /// before two were ever free.
    heavy_waiting: u32,
}

static SLOTS_STATE: Mutex<Slots> = Mutex::new(Slots {
    used: 0,
    quiet_waiting: 0,
    quiet_running: 0,
    heavy_waiting: 0,
});
static SLOTS_CHANGED: Condvar = Condvar::new();

fn slots() -> MutexGuard<'static, Slots> {
    // A test that panicked while holding the lock left the counts consistent (each
    // change is one statement): go on with them.
    SLOTS_STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Slots held by a test while its guest runs; given back when dropped.
#[must_use = "the slots are given back when the guard is dropped"]
pub struct Guard {
    held: u32,
    kind: Kind,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut s = slots();
        s.used -= self.held;
        if self.kind == Kind::Quiet {
            s.quiet_running -= 1;
        }
        drop(s);
        SLOTS_CHANGED.notify_all();
    }
}

/// Whether a test of `kind` may take its share now, of `total` slots.
fn may_take(s: &Slots, total: u32, kind: Kind) -> bool {
    let free = total - s.used;
    let beside_quiet = s.quiet_running > 0;
    free >= kind.share(total)
        && match kind {
            Kind::Quiet => true,
            Kind::Heavy => s.quiet_waiting == 0 || beside_quiet,
            Kind::Ordinary => (s.quiet_waiting == 0 && s.heavy_waiting == 0) || beside_quiet,
        }
}

fn take(kind: Kind) -> Guard {
    let total = total();
    let mut s = slots();
    match kind {
        Kind::Quiet => s.quiet_waiting += 1,
        Kind::Heavy => s.heavy_waiting += 1,
        Kind::Ordinary => {}
    }
    while !may_take(&s, total, kind) {
        s = SLOTS_CHANGED
            .wait(s)
            .unwrap_or_else(PoisonError::into_inner);
    }
    let held = kind.share(total);
    s.used += held;
    match kind {
        Kind::Quiet => {
            s.quiet_waiting -= 1;
            s.quiet_running += 1;
        }
        Kind::Heavy => s.heavy_waiting -= 1,
        Kind::Ordinary => {}
    }
    if kind != Kind::Ordinary {
        // Tests that waited behind this one may take what is left.
        drop(s);
        SLOTS_CHANGED.notify_all();
    }
    Guard { held, kind }
}

/// Held while at most one other test of this binary runs a guest, never a heavy one.
pub fn quiet() -> Guard {
    take(Kind::Quiet)
}

/// Held while a test runs a guest that other tests' guests may run beside.
pub fn beside_others() -> Guard {
    take(Kind::Ordinary)
}

/// Held while a test runs a guest that keeps a host CPU busy by itself (a debug kernel's,
/// one behind the virtual IOMMU, the VFIO userspace driver's, a long verified stream at
/// full speed): it counts as two, so it never runs beside a quiet test.
pub fn heavy() -> Guard {
    take(Kind::Heavy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn state(used: u32, quiet_waiting: u32, quiet_running: u32) -> Slots {
        Slots {
            used,
            quiet_waiting,
            quiet_running,
            heavy_waiting: 0,
        }
    }

    fn with_heavy_waiting(mut s: Slots) -> Slots {
        s.heavy_waiting = 1;
        s
    }

    /// The slot beside a running quiet test goes to an ordinary test even while another
    /// quiet test waits (it stayed empty before); when the running one ends, the waiting
    /// one gets its three slots before any ordinary test gets one.
    #[test]
    fn the_slot_beside_a_quiet_test_is_used_and_the_next_quiet_one_still_gets_its_share() {
        use Kind::{Ordinary, Quiet};
        // One quiet test running (3 slots), another waiting: an ordinary one may run.
        assert!(may_take(&state(3, 1, 1), 4, Ordinary));
        // ... and then the slots are full.
        assert!(!may_take(&state(4, 1, 1), 4, Ordinary));
        // The running quiet test ended, the ordinary one still runs: the waiting quiet
        // test may take its three, an ordinary test may not take the rest first.
        assert!(may_take(&state(1, 1, 0), 4, Quiet));
        assert!(!may_take(&state(1, 1, 0), 4, Ordinary));
        // Two ordinary tests running: the quiet one waits for a third slot.
        assert!(!may_take(&state(2, 1, 0), 4, Quiet));
        // Nobody quiet: slots go in turn.
        assert!(may_take(&state(3, 0, 0), 4, Ordinary));
        assert_eq!(quiet_share(4), 3);
        assert_eq!(quiet_share(2), 1);
        assert_eq!(quiet_share(1), 1);
    }

    /// A heavy test never runs beside a quiet one, whatever the number of slots; ordinary
    /// tests wait behind a waiting heavy one (else it would wait for two free slots while
    /// each freed slot went to an ordinary test), except beside a quiet test, where the
    /// heavy one may not run anyway.
    #[test]
    fn a_heavy_test_never_runs_beside_a_quiet_one_and_is_not_passed_by_ordinary_ones() {
        use Kind::{Heavy, Ordinary, Quiet};
        for total in 1..=8 {
            // A quiet test running: no room for a heavy one.
            let used = quiet_share(total);
            assert!(!may_take(&state(used, 0, 1), total, Heavy), "{total} slots");
            // A heavy test running: no room for a quiet one.
            let used = heavy_share(total);
            assert!(!may_take(&state(used, 0, 0), total, Quiet), "{total} slots");
        }
        // Four slots, two ordinary tests running, a heavy test waiting: it may take the
        // other two; a third ordinary test may not take one of them first.
        let s = with_heavy_waiting(state(2, 0, 0));
        assert!(may_take(&s, 4, Heavy));
        assert!(!may_take(&s, 4, Ordinary));
        // Three running: the freed slot waits for the next one, not for an ordinary test.
        assert!(!may_take(&with_heavy_waiting(state(3, 0, 0)), 4, Ordinary));
        // Beside a running quiet test an ordinary test may still run.
        assert!(may_take(&with_heavy_waiting(state(3, 0, 1)), 4, Ordinary));
        assert_eq!(heavy_share(1), 1);
        assert_eq!(heavy_share(4), 2);
    }

    /// Quiet, heavy and ordinary tests on many threads: never more than `total` guests at
    /// once, never more than two while a quiet test runs, never a heavy one beside it. (RUNNING counts a thread only
    /// while it holds its guard: it counts up after taking it and down before giving it
    /// back, so what the quiet thread sees is at most what holds slots.)
    #[test]
    fn a_quiet_test_has_at_most_one_guest_beside_it() {
        static RUNNING: AtomicU32 = AtomicU32::new(0);
        static HEAVY_RUNNING: AtomicU32 = AtomicU32::new(0);
        static MOST: AtomicU32 = AtomicU32::new(0);
        static MOST_BESIDE_QUIET: AtomicU32 = AtomicU32::new(0);
        static HEAVY_BESIDE_QUIET: AtomicU32 = AtomicU32::new(0);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                std::thread::spawn(move || {
                    let quiet_one = i % 4 == 0;
                    let heavy_one = i % 4 == 1;
                    let _g = match (quiet_one, heavy_one) {
                        (true, _) => quiet(),
                        (_, true) => heavy(),
                        _ => beside_others(),
                    };
                    if heavy_one {
                        HEAVY_RUNNING.fetch_add(1, Ordering::SeqCst);
                    }
                    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                    MOST.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..10 {
                        if quiet_one {
                            let seen = RUNNING.load(Ordering::SeqCst);
                            MOST_BESIDE_QUIET.fetch_max(seen, Ordering::SeqCst);
                            let heavy = HEAVY_RUNNING.load(Ordering::SeqCst);
                            HEAVY_BESIDE_QUIET.fetch_max(heavy, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    RUNNING.fetch_sub(1, Ordering::SeqCst);
                    if heavy_one {
                        HEAVY_RUNNING.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(MOST.load(Ordering::SeqCst) <= total());
        assert!(MOST_BESIDE_QUIET.load(Ordering::SeqCst) <= 2);
        assert_eq!(HEAVY_BESIDE_QUIET.load(Ordering::SeqCst), 0);
        assert_eq!(slots().used, 0);
    }
}

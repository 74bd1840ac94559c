//! How many of a test file's guests run at once. make test-vm runs four tests of a file at
//! a time (`--test-threads`), each with its own guest, on a 2-CPU host. Under TCG a
//! guest's clock runs on while its vCPU waits for a host CPU, so a test that judges the
//! driver by how long something takes (a wake-up, a second reader, a submission, a
//! signal's effect) or by a consumer keeping up with no overflow, with less than about a
//! second to spare, would measure the host's load as much as the driver. Such a test
//! holds [`quiet`]: at most one other guest of its file runs beside it, as every test ran
//! through many CI runs before make test-vm ran four at a time. Every other test holds
//! [`beside_others`] while its guest runs (an ioctl given a second beside a call stuck for
//! three, say). Cargo runs one test binary at a time, and each has its own gate. A guest
//! idle in the binary's pool (`pool`, two at most) takes no slot: it runs nothing.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Guests a test binary runs at once at most (four, whatever `--test-threads` allows).
const SLOTS: u32 = 4;

/// A quiet test's share of the slots: it leaves room for one other guest.
const QUIET: u32 = SLOTS - 1;

struct Slots {
    free: u32,
    /// Quiet tests waiting for their share: other tests wait behind them, or a steady
    /// stream of ordinary tests would keep three slots from ever being free at once.
    quiet_waiting: u32,
}

static SLOTS_STATE: Mutex<Slots> = Mutex::new(Slots {
    free: SLOTS,
    quiet_waiting: 0,
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
}

impl Drop for Guard {
    fn drop(&mut self) {
        slots().free += self.held;
        SLOTS_CHANGED.notify_all();
    }
}

fn take(n: u32, quiet: bool) -> Guard {
    let mut s = slots();
    if quiet {
        s.quiet_waiting += 1;
    }
    while s.free < n || (!quiet && s.quiet_waiting > 0) {
        s = SLOTS_CHANGED
            .wait(s)
            .unwrap_or_else(PoisonError::into_inner);
    }
    if quiet {
        s.quiet_waiting -= 1;
    }
    s.free -= n;
    Guard { held: n }
}

/// Held while at most one other test of this binary runs a guest.
pub fn quiet() -> Guard {
    take(QUIET, true)
}

/// Held while a test runs a guest that other tests' guests may run beside.
pub fn beside_others() -> Guard {
    take(1, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// Quiet tests and ordinary ones on many threads: never more than four guests at
    /// once, never more than two while a quiet test runs. (RUNNING counts a thread only
    /// while it holds its guard: it counts up after taking it and down before giving it
    /// back, so what the quiet thread sees is at most what holds slots.)
    #[test]
    fn a_quiet_test_has_at_most_one_guest_beside_it() {
        static RUNNING: AtomicU32 = AtomicU32::new(0);
        static MOST: AtomicU32 = AtomicU32::new(0);
        static MOST_BESIDE_QUIET: AtomicU32 = AtomicU32::new(0);
        let threads: Vec<_> = (0..12)
            .map(|i| {
                std::thread::spawn(move || {
                    let quiet_one = i % 4 == 0;
                    let _g = if quiet_one { quiet() } else { beside_others() };
                    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                    MOST.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..10 {
                        if quiet_one {
                            let seen = RUNNING.load(Ordering::SeqCst);
                            MOST_BESIDE_QUIET.fetch_max(seen, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    RUNNING.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(MOST.load(Ordering::SeqCst) <= SLOTS);
        assert!(MOST_BESIDE_QUIET.load(Ordering::SeqCst) <= 2);
        assert_eq!(slots().free, SLOTS);
    }
}

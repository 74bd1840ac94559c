//! How many of the VM tests' guests run at once, and which test goes next. make test-vm
//! lets four run (VM_JOBS, as `ACQ_TEST_GUESTS`) on a 2-CPU host and libtest starts every
//! test at once: the others wait here, and go quiet ones first, then the longest first, by
//! how long each took the run before ([`next`]). Under TCG a guest's clock runs on while its vCPU waits for a host CPU, so a
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
//! idle in the pool (`pool`, two at most) takes no slot: it runs nothing. How long each
//! test held the gate is kept in the cache (`vm-test-seconds/`) for the next run's order.

use std::cmp::Reverse;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Guests the test binary runs at once at most: `ACQ_TEST_GUESTS` (make test-vm passes its
/// VM_JOBS), four by default. libtest may start more tests than that (make test-vm starts
/// them all): the others wait here, and the gate chooses which goes next ([`next`]).
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

    /// How long a test of this kind is taken to hold its slots when no run has timed it
    /// yet ([`expected`]): heavy tests are the longest streams.
    fn unknown_duration(self) -> Duration {
        match self {
            Kind::Heavy => Duration::from_secs(60),
            Kind::Ordinary | Kind::Quiet => Duration::from_secs(20),
        }
    }
}

/// The order waiting tests go in, first the least: quiet tests before all others (they
/// run from the start, while nothing else does, each beside one long test, instead of
/// each waiting for the machine to empty around it), then the longest expected first (the
/// longest tests no longer end the run alone; make test's fuzz build, at idle priority,
/// takes the CPU time the quiet stretch leaves), then in the order they came.
type Rank = (bool, Reverse<Duration>, u64);

fn rank(kind: Kind, expected: Duration, arrival: u64) -> Rank {
    (kind != Kind::Quiet, Reverse(expected), arrival)
}

/// A test waiting for its share.
struct Waiter {
    kind: Kind,
    rank: Rank,
}

struct Slots {
    used: u32,
    /// Quiet tests running: beside one, only a test its share leaves room for may run (an
    /// ordinary one), and it need not wait for those ahead of it that cannot.
    quiet_running: u32,
    waiting: Vec<Waiter>,
    /// Tests that have come to the gate, the last one's arrival number.
    arrived: u64,
}

static SLOTS_STATE: Mutex<Slots> = Mutex::new(Slots {
    used: 0,
    quiet_running: 0,
    waiting: Vec::new(),
    arrived: 0,
});
static SLOTS_CHANGED: Condvar = Condvar::new();

/// How long after the first test comes to the gate the first slot is given: libtest starts
/// every test at once, and the order holds only among tests that have come (the first few
/// would otherwise take the slots in name order, ahead of the quiet and long ones).
const OPENS_AFTER: Duration = Duration::from_millis(500);

/// The longest a test waits for its slots: the whole of make test-vm's VM tests take
/// under ten minutes, so a test still waiting after an hour waits behind one that hung,
/// and fails saying so instead of waiting for ever.
const WAIT_LIMIT: Duration = Duration::from_secs(3600);

/// When the gate gives its first slot.
fn opening() -> Instant {
    static OPENS: OnceLock<Instant> = OnceLock::new();
    *OPENS.get_or_init(|| Instant::now() + OPENS_AFTER)
}

fn slots() -> MutexGuard<'static, Slots> {
    // A test that panicked while holding the lock left the state consistent (the gate's
    // code does not panic while changing it): go on with it.
    SLOTS_STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The waiting test (its rank) that takes its share now, of `total` slots. In rank order,
/// and strictly so: a test whose share is not free yet waits for it and those behind it
/// wait too, or a heavy or quiet test would wait for ever for slots that each go to an
/// ordinary test as they free up. Beside a running quiet test, though, the first one that
/// fits goes (an ordinary one): the tests ahead of it cannot run before the quiet one ends,
/// which gives back all they need.
fn next(s: &Slots, total: u32) -> Option<Rank> {
    let free = total - s.used;
    let fits = |w: &Waiter| w.kind.share(total) <= free;
    let mut order: Vec<&Waiter> = s.waiting.iter().collect();
    order.sort_by_key(|w| w.rank);
    if s.quiet_running > 0 {
        order.into_iter().find(|w| fits(w)).map(|w| w.rank)
    } else {
        order.first().filter(|w| fits(w)).map(|w| w.rank)
    }
}

/// Slots held by a test while its guest runs; given back when dropped.
#[must_use = "the slots are given back when the guard is dropped"]
pub struct Guard {
    held: u32,
    kind: Kind,
    since: Instant,
}

impl Drop for Guard {
    fn drop(&mut self) {
        log("release", self.kind);
        // A test that panicked may have ended early: its time would misplace it next run.
        // (One that failed by returning an error is kept: its guard cannot tell. The time
        // only orders the next run.)
        if !std::thread::panicking() {
            record(self.since.elapsed());
        }
        let mut s = slots();
        s.used -= self.held;
        if self.kind == Kind::Quiet {
            s.quiet_running -= 1;
        }
        drop(s);
        SLOTS_CHANGED.notify_all();
    }
}

fn take(kind: Kind) -> Guard {
    let total = total();
    let expected = expected().unwrap_or_else(|| kind.unknown_duration());
    let opens = opening();
    let came = Instant::now();
    let mut s = slots();
    s.arrived += 1;
    let me = rank(kind, expected, s.arrived);
    s.waiting.push(Waiter { kind, rank: me });
    loop {
        let early = opens.saturating_duration_since(Instant::now());
        if early.is_zero() && next(&s, total) == Some(me) {
            break;
        }
        // Before the opening, each waiter wakes at it; after, when slots change.
        let waited = came.elapsed();
        if waited >= WAIT_LIMIT {
            let why = format!(
                "waited {} s for the gate ({} of {total} slots held, {} quiet test(s) \
                 running, {} test(s) waiting): a test holding slots has hung",
                waited.as_secs(),
                s.used,
                s.quiet_running,
                s.waiting.len()
            );
            // Out of the queue first, so that nobody waits behind a test that gave up.
            s.waiting.retain(|w| w.rank != me);
            drop(s);
            SLOTS_CHANGED.notify_all();
            panic!("{why}");
        }
        let bound = if early.is_zero() {
            WAIT_LIMIT - waited
        } else {
            early
        };
        s = SLOTS_CHANGED
            .wait_timeout(s, bound)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    s.waiting.retain(|w| w.rank != me);
    let held = kind.share(total);
    s.used += held;
    if kind == Kind::Quiet {
        s.quiet_running += 1;
    }
    // The next in order may take what is left.
    drop(s);
    SLOTS_CHANGED.notify_all();
    log("take", kind);
    Guard {
        held,
        kind,
        since: Instant::now(),
    }
}

/// Where each test's last time holding the gate is kept, for the next run's order: one
/// file a test, named after it, in the cache (the cache as `acq` finds it).
fn durations_dir() -> PathBuf {
    acq::paths::cache_dir().join("vm-test-seconds")
}

/// The calling test's name: libtest names each test's thread after it.
fn test_name() -> Option<String> {
    std::thread::current().name().map(str::to_owned)
}

/// How long the calling test held the gate the last time it ran, if a run recorded it.
fn expected() -> Option<Duration> {
    let text = std::fs::read_to_string(durations_dir().join(test_name()?)).ok()?;
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// Keeps how long the calling test held the gate, for the next run's order. (An order,
/// not a result: a file that cannot be written costs the next run some minutes at most.)
fn record(held: Duration) {
    let Some(name) = test_name() else { return };
    let dir = durations_dir();
    let _ = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(name), format!("{:.1}\n", held.as_secs_f64())));
}

/// With `ACQ_GATE_LOG=FILE`, each take and release is appended to FILE as a line
/// `MILLISECONDS_SINCE_EPOCH take|release KIND TEST`: where a run's guests spent their
/// time, to lay out as a timeline (docs/architecture.md, "Tests").
fn log(what: &str, kind: Kind) {
    let Some(path) = std::env::var_os("ACQ_GATE_LOG") else {
        return;
    };
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let test = test_name().unwrap_or_else(|| "?".into());
    let line = format!("{ms} {what} {kind:?} {test}\n");
    // A diagnostic: a log that cannot be written loses a line, never a test.
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
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

    /// Slots with `used` taken, `quiet_running` quiet tests among them, and `waiting` in
    /// the order they came (kind, expected seconds).
    fn state(used: u32, quiet_running: u32, waiting: &[(Kind, u64)]) -> Slots {
        Slots {
            used,
            quiet_running,
            waiting: (waiting.iter().enumerate())
                .map(|(i, &(kind, secs))| Waiter {
                    kind,
                    rank: rank(kind, Duration::from_secs(secs), i as u64),
                })
                .collect(),
            arrived: waiting.len() as u64,
        }
    }

    /// Which of `s.waiting` (its index) goes next.
    fn who(s: &Slots, total: u32) -> Option<usize> {
        let r = next(s, total)?;
        s.waiting.iter().position(|w| w.rank == r)
    }

    /// On an empty machine quiet tests go first; beside one, the longest ordinary test
    /// goes, even past a heavy test and another quiet one ahead of it (neither may run
    /// before the quiet test ends); when it ends, the next quiet test gets its three slots
    /// before any ordinary test gets one.
    #[test]
    fn quiet_tests_go_first_each_beside_the_longest_ordinary_one() {
        use Kind::{Heavy, Ordinary, Quiet};
        let waiting = [
            (Ordinary, 30),
            (Heavy, 90),
            (Quiet, 5),
            (Ordinary, 60),
            (Quiet, 8),
        ];
        assert_eq!(who(&state(0, 0, &waiting), 4), Some(4));
        let beside = [(Ordinary, 30), (Heavy, 90), (Ordinary, 60), (Quiet, 5)];
        assert_eq!(who(&state(3, 1, &beside), 4), Some(2));
        // The slots are full.
        assert_eq!(who(&state(4, 1, &beside), 4), None);
        // The quiet test ended, its companion runs on: the next quiet one takes three.
        let after = [(Ordinary, 30), (Heavy, 90), (Quiet, 5)];
        assert_eq!(who(&state(1, 0, &after), 4), Some(2));
        // Two ordinary tests running: the quiet one waits for a third slot, and nobody
        // takes it first.
        assert_eq!(who(&state(2, 0, &after), 4), None);
        assert_eq!(quiet_share(4), 3);
        assert_eq!(quiet_share(2), 1);
        assert_eq!(quiet_share(1), 1);
    }

    /// Past the quiet tests, the longest expected goes first, and a test needing more
    /// slots than are free is not passed by one that fits (else it would wait while each
    /// freed slot went to a shorter test); equal ones go in the order they came.
    #[test]
    fn the_longest_test_goes_first_and_is_not_passed() {
        use Kind::{Heavy, Ordinary};
        let waiting = [(Ordinary, 20), (Ordinary, 45), (Heavy, 40), (Ordinary, 45)];
        assert_eq!(who(&state(0, 0, &waiting), 4), Some(1));
        let heavy_first = [(Ordinary, 20), (Heavy, 40)];
        assert_eq!(who(&state(2, 0, &heavy_first), 4), Some(1));
        assert_eq!(who(&state(3, 0, &heavy_first), 4), None);
        assert_eq!(who(&state(4, 0, &heavy_first), 4), None);
        // Nobody waiting, nobody next.
        assert_eq!(who(&state(0, 0, &[]), 4), None);
    }

    /// A heavy test never runs beside a quiet one, nor a quiet one beside a heavy one,
    /// whatever the number of slots.
    #[test]
    fn a_heavy_test_never_runs_beside_a_quiet_one() {
        use Kind::{Heavy, Quiet};
        for total in 1..=8 {
            let s = state(quiet_share(total), 1, &[(Heavy, 60)]);
            assert_eq!(who(&s, total), None, "{total} slots");
            let s = state(heavy_share(total), 0, &[(Quiet, 10)]);
            assert_eq!(who(&s, total), None, "{total} slots");
        }
        assert_eq!(heavy_share(1), 1);
        assert_eq!(heavy_share(4), 2);
    }

    /// Quiet, heavy and ordinary tests on many threads: never more than `total` guests at
    /// once, never more than two while a quiet test runs, never a heavy one beside it,
    /// and every test gets its turn. (RUNNING counts a thread only while it holds its
    /// guard: it counts up after taking it and down before giving it back, so what the
    /// quiet thread sees is at most what holds slots.)
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
        let s = slots();
        assert_eq!((s.used, s.quiet_running, s.waiting.len()), (0, 0, 0));
    }
}

//! Guests shared by the tests of one test binary. Under TCG a guest's boot and power-off
//! cost about 5 host CPU-seconds, as much as many a test's own work, and make test-vm is
//! CPU-bound: a test that ends cleanly hands its guest back ([`Guest::shutdown`]), and the
//! next test that asks for a guest of the same kind ([`lease`]: the same cards, card
//! settings and image) gets it instead of booting one.
//!
//! A guest is handed on only as clean as a fresh one, checked, not assumed: the driver
//! unloaded (a report from the unload fails the test that loaded it), the tests' tmpfs
//! unmounted, every card reset by its model with its faults disarmed, every card present
//! with no driver bound, no process left, the mounts as after the boot, /tmp empty, and
//! the kernel log cleared. Anything else and the guest is powered off as before. The
//! next test reads the cards' counters from its own start ([`Guest::counters`]).
//!
//! A guest's processes (QEMU, its device models) die with the thread that started them
//! (`PR_SET_PDEATHSIG`), and libtest runs each test in a thread of its own: a pooled
//! guest is booted by a keeper thread that lives as long as the guest. A guest still idle
//! when the test binary exits is powered off then (`atexit`). A test that may leave its
//! guest changed in a way the checks cannot see (cards unplugged and plugged in again, a
//! device model restarted by the test) boots a guest of its own ([`own`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use acq::vm::Vm;
use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::{ImageFiles, CMD};

/// Idle guests kept at most: one per test slot (`gate`).
const IDLE_MAX: usize = 4;

/// How long after the driver's unload the hand-back reads the kernel log at the earliest:
/// four times the driver's longest timer (the watchdog's 500 ms), so that a report a timer
/// or work item left behind lands in the test that loaded the driver.
const SETTLE: Duration = Duration::from_secs(2);

/// Guests booted by this test binary's pool (including those of a test's own).
pub static BOOTS: AtomicUsize = AtomicUsize::new(0);
/// Guests handed from one test to the next.
pub static HANDED_ON: AtomicUsize = AtomicUsize::new(0);

/// A guest and its keeper: `vm` is dropped (its processes stopped) before the keeper's
/// sender, which ends the keeper thread.
struct Kept {
    vm: Vm,
    _keeper: Option<mpsc::Sender<()>>,
}

impl Kept {
    fn shutdown(self, timeout: Duration) -> Result<()> {
        let Kept { vm, _keeper } = self;
        vm.shutdown(timeout)
    }
}

struct Idle {
    key: String,
    kept: Kept,
    cards: usize,
    mounts: String,
    booted_for: String,
}

static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

fn idle() -> std::sync::MutexGuard<'static, Vec<Idle>> {
    // A panic while the lock was held left the list consistent (push, pop, drain).
    IDLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a guest boots with.
pub struct Spec<'a> {
    /// Cards, each served by its own device model.
    pub cards: usize,
    /// The cards' model settings (JSON), if not the defaults.
    pub config: Option<&'a str>,
    /// Kernel modules in the image.
    pub modules: Vec<PathBuf>,
    /// Extra image files (guest path, host path).
    pub files: ImageFiles,
}

impl Spec<'_> {
    fn key(&self) -> String {
        format!(
            "{} {:?} {:?} {:?}",
            self.cards, self.config, self.modules, self.files
        )
    }
}

/// A test's guest: derefs to its [`Vm`]. Give it back with [`Guest::shutdown`]; dropped
/// any other way (the test failed) it is stopped, never handed on.
pub struct Guest {
    kept: Option<Kept>,
    /// `None` for a guest of the test's own ([`own`]).
    key: Option<String>,
    cards: usize,
    mounts: String,
    baseline: Vec<Value>,
}

/// A guest for `test` as `spec` says: an idle one of the same kind if the pool has one
/// (its run directory stays the one it was booted in), else a new one booted by a keeper
/// thread, its run directory named after the test.
pub fn lease(test: &str, spec: Spec<'_>) -> Result<Guest> {
    let key = spec.key();
    let found = {
        let mut idle = idle();
        let i = idle.iter().position(|g| g.key == key);
        i.map(|i| idle.remove(i))
    };
    let (mut kept, cards, mounts) = match found {
        Some(g) => {
            HANDED_ON.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "{test}: the guest booted for {} (run files in {})",
                g.booted_for,
                g.kept.vm.run_dir().display()
            );
            (g.kept, g.cards, g.mounts)
        }
        None => {
            let cards = spec.cards;
            let mut kept = boot_kept(test, spec)?;
            let mounts = kept.vm.sh_ok("cat /proc/mounts", CMD)?;
            (kept, cards, mounts)
        }
    };
    // The console log shows where each test starts.
    kept.vm
        .sh_ok(&format!("echo 'acq-e2e: {test} starts' > /dev/kmsg"), CMD)?;
    let baseline = counters_of(&kept.vm)?;
    Ok(Guest {
        kept: Some(kept),
        key: Some(key),
        cards,
        mounts,
        baseline,
    })
}

/// A guest of `test`'s own, booted in the test's thread and powered off at its end, for a
/// test that may change it in ways a hand-over cannot check.
pub fn own(test: &str, spec: Spec<'_>) -> Result<Guest> {
    let cards = spec.cards;
    let vm = boot_vm(test, spec)?;
    let baseline = counters_of(&vm)?;
    Ok(Guest {
        kept: Some(Kept { vm, _keeper: None }),
        key: None,
        cards,
        mounts: String::new(),
        baseline,
    })
}

fn boot_vm(test: &str, spec: Spec<'_>) -> Result<Vm> {
    BOOTS.fetch_add(1, Ordering::Relaxed);
    let (vm, _) = match spec.config {
        Some(c) => crate::boot_configured(test, spec.cards, c, spec.modules, spec.files)?,
        None => crate::boot_with(test, spec.cards, spec.modules, spec.files)?,
    };
    Ok(vm)
}

/// Boots in a thread that outlives the test: it waits until the guest is dropped.
fn boot_kept(test: &str, spec: Spec<'_>) -> Result<Kept> {
    AT_EXIT.call_once(|| {
        // SAFETY: `power_off_idle` is an `extern "C" fn()` that does not unwind (it
        // catches panics) and may run at exit: it only takes the pool's own lock.
        unsafe { libc::atexit(power_off_idle) };
    });
    let (booted_tx, booted_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let name = test.to_owned();
    let (cards, config, modules, files) = (
        spec.cards,
        spec.config.map(str::to_owned),
        spec.modules,
        spec.files,
    );
    std::thread::Builder::new()
        .name(format!("keeper-{test}"))
        .spawn(move || {
            let spec = Spec {
                cards,
                config: config.as_deref(),
                modules,
                files,
            };
            let _ = booted_tx.send(boot_vm(&name, spec));
            // Until the guest is dropped: its sender goes with it.
            let _ = done_rx.recv();
        })
        .context("starting a keeper thread")?;
    let vm = booted_rx
        .recv()
        .map_err(|_| anyhow!("the keeper thread ended without a guest"))??;
    Ok(Kept {
        vm,
        _keeper: Some(done_tx),
    })
}

/// Each card's model counters (one JSON object per card).
fn counters_of(vm: &Vm) -> Result<Vec<Value>> {
    (0..vm.models.len())
        .map(|i| {
            let line = crate::model_request(vm, i, r#"{"cmd":"counters"}"#)?;
            serde_json::from_str(&line).with_context(|| format!("card {i} counters: {line}"))
        })
        .collect()
}

impl std::ops::Deref for Guest {
    type Target = Vm;
    fn deref(&self) -> &Vm {
        // Taken only by `shutdown`, which consumes the guest.
        &self
            .kept
            .as_ref()
            .expect("a guest is present until shut down")
            .vm
    }
}

impl std::ops::DerefMut for Guest {
    fn deref_mut(&mut self) -> &mut Vm {
        &mut self
            .kept
            .as_mut()
            .expect("a guest is present until shut down")
            .vm
    }
}

impl Guest {
    /// Card `card`'s model counters as a JSON line, each counted from this test's start
    /// (a handed-on guest's cards have counted for the tests before); the registers and
    /// flags in it are as they are now.
    pub fn counters(&self, card: usize) -> Result<String> {
        let now: Value =
            serde_json::from_str(&crate::model_request(self, card, r#"{"cmd":"counters"}"#)?)?;
        Ok(acq::handover::since(now, self.baseline.get(card)).to_string())
    }

    /// Ends the test's use of the guest: handed back to the pool if it is as clean as a
    /// fresh one (the module doc), else powered off as [`Vm::shutdown`] does. Fails only
    /// as that power-off does, or when the kernel reported a bug while the driver was
    /// unloaded.
    pub fn shutdown(mut self, timeout: Duration) -> Result<()> {
        let mut kept = self
            .kept
            .take()
            .context("the guest was already shut down")?;
        let Some(key) = self.key.take() else {
            return kept.shutdown(timeout);
        };
        match hand_back(&mut kept.vm, self.cards, &self.mounts) {
            Ok(()) => {
                let g = Idle {
                    key,
                    booted_for: kept
                        .vm
                        .run_dir()
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    kept,
                    cards: self.cards,
                    mounts: std::mem::take(&mut self.mounts),
                };
                let extra = {
                    let mut idle = idle();
                    idle.push(g);
                    (idle.len() > IDLE_MAX).then(|| idle.remove(0))
                };
                if let Some(old) = extra {
                    let _ = old.kept.shutdown(CMD);
                }
                Ok(())
            }
            Err(HandBack::Unfit(why)) => {
                eprintln!("the guest is not handed on: {why:#}");
                kept.shutdown(timeout)
            }
            Err(HandBack::Bug(e)) => {
                kept.vm.mark_failed();
                Err(e)
            }
        }
    }
}

enum HandBack {
    /// Not clean enough to hand on; not the test's failure.
    Unfit(anyhow::Error),
    /// The kernel reported a bug: the test's failure.
    Bug(anyhow::Error),
}

fn hand_back(vm: &mut Vm, cards: usize, mounts: &str) -> Result<(), HandBack> {
    let unfit = HandBack::Unfit;
    // (Not under busybox's `timeout`: its watchdog process outlives the command. A driver
    // stuck in its unload shows as the command's own timeout.)
    let out = vm
        .sh(
            "if grep -q '^acq ' /proc/modules; then rmmod acq || exit 1; fi; \
             if grep -q ' /mnt/t ' /proc/mounts; then umount /mnt/t || exit 2; fi; rmdir /mnt/t 2>/dev/null; true",
            CMD,
        )
        .map_err(unfit)?;
    let unloaded = Instant::now();
    match out.status {
        0 => {}
        1 => return Err(unfit(anyhow!("rmmod acq failed: {}", out.stderr.trim()))),
        _ => {
            return Err(unfit(anyhow!(
                "/mnt/t stays mounted: {}",
                out.stderr.trim()
            )))
        }
    }
    acq::handover::reset_cards(vm, None).map_err(unfit)?;
    acq::handover::ensure_as_booted(vm, cards, mounts).map_err(unfit)?;
    std::thread::sleep(SETTLE.saturating_sub(unloaded.elapsed()));
    let log = vm.sh_ok("dmesg -c", CMD).map_err(unfit)?;
    let bad = crate::kernel_bug_reports(&log);
    if !bad.is_empty() {
        return Err(HandBack::Bug(anyhow!(
            "the guest kernel reported bugs by the time the driver was unloaded:\n{}",
            bad.join("\n")
        )));
    }
    Ok(())
}

/// Powers off the guests still idle when the test binary exits (an `atexit` handler):
/// each through its agent, all at once.
extern "C" fn power_off_idle() {
    let _ = std::panic::catch_unwind(|| {
        eprintln!(
            "guest pool: {} guests booted, {} handed from one test to the next",
            BOOTS.load(Ordering::Relaxed),
            HANDED_ON.load(Ordering::Relaxed)
        );
        let guests: Vec<Idle> = std::mem::take(&mut *idle());
        std::thread::scope(|s| {
            for g in guests {
                s.spawn(move || {
                    if let Err(e) = g.kept.shutdown(CMD) {
                        eprintln!("powering off an idle guest: {e:#}");
                    }
                });
            }
        });
    });
}

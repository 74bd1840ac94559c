//! Guests shared by the tests of one test binary. Under TCG a guest's boot and power-off
//! cost about 5 host CPU-seconds, as much as many a test's own work: a test that ends
//! cleanly hands its guest back ([`Guest::shutdown`]), and the next test that asks for a
//! guest of the same kind ([`lease`]: the same cards, card settings and image) gets it
//! instead of booting one.
//!
//! A guest is handed on only when the hand-back finds it as the boot left it, in all that
//! a test can change and a card reset does not undo: the device models it was booted with,
//! all running (a test that killed or replaced one, say by `Vm::replug_card`, whose new
//! model would die with the test's thread); the driver unloaded; the tests' tmpfs
//! unmounted; each card reset by its model with its faults and interrupt storms ended;
//! every card present with no driver bound or set to bind; no process left; the mounts as
//! after the boot; /tmp emptied; and the kernel log, read at least 2 s after the unload,
//! clean. A report in that log, an unload that does not return or takes the guest down, or
//! one still refused after 2 s with no open file of /dev/acq* to hold the driver fails the
//! test that loaded it; anything else and the guest is powered off as before. The next test reads the cards' counters from its own
//! start ([`Guest::counters`]).
//!
//! What the hand-back cannot see is left out: a test whose card keeps state across a reset
//! (BAR2's contents, as `acq run --reuse-guests` also refuses) or that unplugs cards
//! boots a guest of its own ([`own`]).
//!
//! A guest's processes (QEMU, its device models) die with the thread that started them
//! (`PR_SET_PDEATHSIG`), and libtest runs tests in threads of their own: a pooled guest is
//! booted by a keeper thread that lives as long as the guest. Guests still idle when the
//! test binary exits are powered off then (`atexit`; a failed power-off fails the binary,
//! as it failed the test before the pool). A guest that stops answering while idle fails
//! the next test that gets it, naming the test that handed it back. Idle guests hold
//! their memory on the host (a guest's RAM is a memfd): at most two.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use acq::vm::Vm;
use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::{ImageFiles, CMD};

/// Idle guests kept at most (each holds its guest's memory on the host, and costs a little
/// CPU: no timer tick while idle; a kind of guest that only one test asks for would
/// otherwise sit idle to the end). Four: the gate runs the tests longest first, so that
/// tests of one kind rarely follow each other (two kept: 21 boots in a run of 63 tests).
const IDLE_MAX: usize = 4;

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

/// A pooled guest's kind and what its hand-back checks it against, recorded at its boot.
struct Booted {
    /// The [`Spec`]'s key.
    key: String,
    cards: usize,
    /// /proc/mounts after the boot.
    mounts: String,
    /// The device models' process IDs after the boot.
    models: Vec<u32>,
    /// The test it was booted for (its run directory is named after it).
    test: String,
}

struct Idle {
    kept: Kept,
    booted: Booted,
    /// The test that handed it back.
    last_test: String,
}

static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

fn idle() -> std::sync::MutexGuard<'static, Vec<Idle>> {
    // A panic while the lock was held left the list consistent (push, pop, drain).
    IDLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a guest boots with.
pub struct Spec {
    /// Cards, each served by its own device model.
    pub cards: usize,
    /// The cards' model settings (JSON), if not the defaults.
    pub config: Option<String>,
    /// Kernel modules in the image.
    pub modules: Vec<PathBuf>,
    /// Extra image files (guest path, host path).
    pub files: ImageFiles,
}

impl Spec {
    /// `cards` cards with the model's default settings and `image` (modules, files: as
    /// `driver_image` gives them).
    pub fn cards(cards: usize, image: (Vec<PathBuf>, ImageFiles)) -> Spec {
        let (modules, files) = image;
        Spec {
            cards,
            config: None,
            modules,
            files,
        }
    }

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
    booted: Option<Booted>,
    /// The cards' counters at the test's start.
    baseline: Vec<Value>,
    /// The test using it.
    test: String,
}

/// A guest for `test` as `spec` says: an idle one of the same kind if the pool has one
/// (its run directory stays the one it was booted in), else a new one booted by a keeper
/// thread, its run directory named after the test. With `ACQ_E2E_POOL=0` in the
/// environment every test boots its own ([`own`]), as before the pool.
pub fn lease(test: &str, spec: Spec) -> Result<Guest> {
    if std::env::var_os("ACQ_E2E_POOL").is_some_and(|v| v == "0") {
        return own(test, spec);
    }
    let key = spec.key();
    let found = {
        let mut idle = idle();
        let i = idle.iter().position(|g| g.booted.key == key);
        i.map(|i| idle.remove(i))
    };
    if let Some(Idle {
        kept,
        booted,
        last_test,
    }) = found
    {
        let run_dir = kept.vm.run_dir().display().to_string();
        let booted_for = booted.test.clone();
        // A guest that passed its hand-back and then stopped answering while idle (a timer
        // of the unloaded driver firing, a model that died): a bug of the test before,
        // reported by this one, which has no guest to run in.
        let guest = started(test, kept, Some(booted)).with_context(|| {
            format!("the guest handed on by {last_test} ({run_dir}) stopped answering while idle")
        })?;
        HANDED_ON.fetch_add(1, Ordering::Relaxed);
        eprintln!("{test}: the guest booted for {booted_for} ({run_dir})");
        return Ok(guest);
    }
    let cards = spec.cards;
    let mut kept = boot_kept(test, spec)?;
    let booted = Booted {
        key,
        cards,
        mounts: kept.vm.sh_ok("cat /proc/mounts", CMD)?,
        models: model_pids(&kept.vm),
        test: test.to_owned(),
    };
    started(test, kept, Some(booted))
}

/// The line that marks `test`'s start in the guest's kernel log.
fn start_marker(test: &str) -> String {
    format!("acq-e2e: {test} starts")
}

/// The guest for `test`, its start marked in the guest's kernel log (the console log
/// shows where each test starts) and its cards' counters read.
fn started(test: &str, mut kept: Kept, booted: Option<Booted>) -> Result<Guest> {
    let baseline = kept
        .vm
        .sh_ok(&format!("echo '{}' > /dev/kmsg", start_marker(test)), CMD)
        .and_then(|_| counters_of(&kept.vm));
    let baseline = match baseline {
        Ok(b) => b,
        Err(e) => {
            kept.vm.mark_failed();
            return Err(e);
        }
    };
    Ok(Guest {
        kept: Some(kept),
        booted,
        baseline,
        test: test.to_owned(),
    })
}

fn model_pids(vm: &Vm) -> Vec<u32> {
    vm.models.iter().map(|m| m.child.pid()).collect()
}

/// A guest of `test`'s own, booted in the test's thread and powered off at its end, for a
/// test that may change it in ways a hand-over cannot check.
pub fn own(test: &str, spec: Spec) -> Result<Guest> {
    let vm = boot_vm(test, spec)?;
    started(test, Kept { vm, _keeper: None }, None)
}

fn boot_vm(test: &str, spec: Spec) -> Result<Vm> {
    BOOTS.fetch_add(1, Ordering::Relaxed);
    let (vm, _) = match spec.config {
        Some(c) => crate::boot_configured(test, spec.cards, &c, spec.modules, spec.files)?,
        None => crate::boot_with(test, spec.cards, spec.modules, spec.files)?,
    };
    Ok(vm)
}

/// Boots in a thread that outlives the test: it waits until the guest is dropped.
fn boot_kept(test: &str, spec: Spec) -> Result<Kept> {
    AT_EXIT.call_once(|| {
        // SAFETY: `power_off_idle` is an `extern "C" fn()` that never unwinds (it catches
        // panics), and what it does at exit is safe then: it takes the pool's own lock,
        // which no other code holds across a call, and powers off the idle guests one
        // after the other through their agents (a bounded wait each).
        if unsafe { libc::atexit(power_off_idle) } != 0 {
            eprintln!("guest pool: no atexit handler: idle guests will be killed at exit");
        }
    });
    let (booted_tx, booted_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let name = test.to_owned();
    std::thread::Builder::new()
        .name(format!("keeper-{test}"))
        .spawn(move || {
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
    (0..vm.models.len()).map(|i| card_counters(vm, i)).collect()
}

/// Card `card`'s model counters, as the model counts them (since it started).
fn card_counters(vm: &Vm, card: usize) -> Result<Value> {
    let line = crate::model_request(vm, card, r#"{"cmd":"counters"}"#)?;
    serde_json::from_str(&line).with_context(|| format!("card {card} counters: {line}"))
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
        let now = card_counters(self, card)?;
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
        let Some(booted) = self.booted.take() else {
            return kept.shutdown(timeout);
        };
        match hand_back(&mut kept.vm, &booted) {
            Ok(()) => {
                let g = Idle {
                    kept,
                    booted,
                    last_test: std::mem::take(&mut self.test),
                };
                let extra = {
                    let mut idle = idle();
                    idle.push(g);
                    (idle.len() > IDLE_MAX).then(|| idle.remove(0))
                };
                if let Some(old) = extra {
                    // Its last test has passed: a failed power-off fails the one that
                    // pushed it out, naming it.
                    old.kept.shutdown(CMD).with_context(|| {
                        format!("powering off the idle guest {} handed back", old.last_test)
                    })?;
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

impl Drop for Guest {
    /// A guest dropped without [`Guest::shutdown`] belongs to a test that failed: its run
    /// files are kept, and the guest's kernel log since the test started is printed with
    /// the test's output (a CI log is often all there is: the run directory goes with the
    /// clone).
    fn drop(&mut self) {
        if let Some(kept) = self.kept.as_mut() {
            kept.vm.mark_failed();
            eprintln!(
                "--- the guest's console since {} started (its last 40 lines) ---\n{}",
                self.test,
                kept.vm.console_since(&start_marker(&self.test), 40)
            );
        }
    }
}

enum HandBack {
    /// Not clean enough to hand on; not the test's failure.
    Unfit(anyhow::Error),
    /// The kernel reported a bug: the test's failure.
    Bug(anyhow::Error),
}

/// The guest shell command that unloads the driver and the tests' tmpfs: status 1 if rmmod
/// still fails after 2 s of tries (a process that just ended may still be closing its
/// file), printing how many open files still point at /dev/acq*; 2 if the unmount
/// failed. (Not under busybox's `timeout`: its watchdog process outlives the command. A
/// driver stuck in its unload shows as the command's timeout.)
const UNLOAD: &str = "if grep -q '^acq ' /proc/modules; then \
       for i in 1 2 3 4 5; do rmmod acq 2>/dev/null && break; sleep 0.5; done; \
       if grep -q '^acq ' /proc/modules; then \
         ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c ' -> /dev/acq'; rmmod acq; exit 1; fi; fi; \
     if grep -q ' /mnt/t ' /proc/mounts; then umount /mnt/t || exit 2; fi; \
     rmdir /mnt/t 2>/dev/null; true";

fn hand_back(vm: &mut Vm, booted: &Booted) -> Result<(), HandBack> {
    let alive = vm.models.iter_mut().all(|m| m.child.try_status().is_none());
    if !alive || model_pids(vm) != booted.models {
        return Err(HandBack::Unfit(anyhow!(
            "its device models are not the ones it was booted with, all running"
        )));
    }
    let unload = vm.sh(UNLOAD, CMD);
    let unloaded = Instant::now();
    let mut bug = None;
    let mut unfit = None;
    match unload {
        // The guest answered the test's last command; only the unload ran since (a panic
        // in it powers the guest off: panic=-1, -no-reboot).
        Err(e) => {
            bug = Some(e.context("the guest stopped answering while the driver was unloaded"))
        }
        Ok(out) if out.timed_out => {
            bug = Some(anyhow!("rmmod acq did not return within {CMD:?}"));
        }
        Ok(out) if out.status == 1 => {
            let holders: u32 = out.stdout.trim().parse().unwrap_or(0);
            if holders == 0 {
                bug = Some(anyhow!(
                    "rmmod acq failed with no open file of /dev/acq* left to hold the driver: {}",
                    out.stderr.trim()
                ));
            } else {
                let left = acq::handover::stray_processes_in(vm).unwrap_or_default();
                unfit = Some(anyhow!(
                    "rmmod acq failed: {holders} open files of /dev/acq* (processes left: {})",
                    left.join("; ")
                ));
            }
        }
        Ok(out) if out.status != 0 => {
            unfit = Some(anyhow!("/mnt/t stays mounted: {}", out.stderr.trim()));
        }
        Ok(_) => {
            if let Err(e) = acq::handover::reset_cards(vm, None)
                .and_then(|()| acq::handover::ensure_as_booted(vm, booted.cards, &booted.mounts))
            {
                unfit = Some(e);
            }
        }
    }
    // The kernel log is read whatever happened above: a report from the unload is the
    // test's, even when the guest cannot be handed on.
    std::thread::sleep(acq::handover::SETTLE.saturating_sub(unloaded.elapsed()));
    match vm.sh_ok("dmesg -c", CMD) {
        Ok(log) => {
            let bad = crate::kernel_bug_reports(&log);
            if !bad.is_empty() {
                bug = Some(anyhow!(
                    "the guest kernel reported bugs by the time the driver was unloaded:\n{}",
                    bad.join("\n")
                ));
            }
        }
        Err(e) => unfit = unfit.or(Some(e.context("reading the kernel log"))),
    }
    match (bug, unfit) {
        (Some(e), _) => Err(HandBack::Bug(e)),
        (None, Some(e)) => Err(HandBack::Unfit(e)),
        (None, None) => Ok(()),
    }
}

/// Powers off the guests still idle when the test binary exits (an `atexit` handler), one
/// after the other through their agents.
extern "C" fn power_off_idle() {
    let _ = std::panic::catch_unwind(|| {
        eprintln!(
            "guest pool: {} guests booted, {} handed from one test to the next",
            BOOTS.load(Ordering::Relaxed),
            HANDED_ON.load(Ordering::Relaxed)
        );
        let guests: Vec<Idle> = std::mem::take(&mut *idle());
        let mut failed = false;
        for g in guests {
            if let Err(e) = g.kept.shutdown(CMD) {
                eprintln!(
                    "guest pool: powering off the idle guest {} handed back failed: {e:#}",
                    g.last_test
                );
                failed = true;
            }
        }
        if failed {
            // Each test used to power its guest off and fail on a bad power-off: the
            // binary fails instead, as libtest does for a failed test.
            // SAFETY: _exit ends the process at once, which is what an atexit handler may
            // do; nothing is left to run that the exit would skip but other handlers.
            unsafe { libc::_exit(101) };
        }
    });
}

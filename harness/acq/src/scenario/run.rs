//! Carrying out one scenario: boot the VM with its cards, load the driver, run the steps
//! while a timeline thread injects the faults, then check every expectation.
//!
//! Everything a run leaves is under its results directory: `console.log`, `qemu.log`,
//! `acqN.log` (device models), `control.log` and `qmp.log` (transcripts), `result.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use acq_wire::counters::DriverStats;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::format::{
    counter_key, CardSpec, Channel, CounterOf, Expect, Fault, FaultAt, FaultSpec, PlayStep,
    Scenario, Sink, Step, StreamStep,
};
use crate::accel::AccelChoice;
use crate::control::ModelControl;
use crate::paths::{KernelFlavor, Paths};
use crate::vm::{Card, GuestHandle, Vm, VmConfig};

mod checks;
mod consumers;
mod control;
mod leaks;
mod reuse;
#[cfg(test)]
mod tests;
mod timeline;

use crate::handover::since;
use checks::*;
use consumers::*;
use leaks::{check_leaks, jiffies, Held, Scanning, Window};
use reuse::hand_over;
pub use reuse::{batches, guest_shape};
use timeline::*;

/// How scenarios are run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Results go to `results/<scenario name>/`.
    pub results: PathBuf,
    /// Overrides every scenario's accelerator.
    pub accel: Option<AccelChoice>,
    /// Print guest output (progress) while streaming.
    pub verbose: bool,
    /// The kernel module to load instead of the flavor's own (`acq mutants`, `acq run
    /// --driver`).
    pub driver: Option<PathBuf>,
    /// Overrides every scenario's guest kernel flavor (`vm.kernel`).
    pub kernel_flavor: Option<KernelFlavor>,
    /// Puts every scenario's DMA through this path besides what it asks for.
    pub dma: Option<DmaPath>,
    /// Overrides every scenario's guest RAM (`vm.memory_mib`).
    pub memory_mib: Option<u32>,
    /// Lets one guest serve several scenarios of the same shape in turn (`acq run
    /// --reuse-guests`; [`guest_shape`] says which).
    pub reuse_guests: bool,
}

impl RunOptions {
    /// Results under `results`, every scenario as its file says, one guest each.
    pub fn new(results: PathBuf) -> RunOptions {
        RunOptions {
            results,
            accel: None,
            verbose: false,
            driver: None,
            kernel_flavor: None,
            dma: None,
            memory_mib: None,
            reuse_guests: false,
        }
    }
}

/// A DMA path a whole run is forced onto (`acq run --dma`), so that a set of scenarios
/// written for the plain path runs again where a missing mapping or sync shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DmaPath {
    /// A virtual IOMMU (`vm.viommu`): every DMA address is an IOVA the driver mapped.
    Viommu,
    /// `swiotlb=force`: every streaming mapping bounces, as in a confidential guest.
    Swiotlb,
}

impl DmaPath {
    /// The VM's IOMMU and kernel arguments with this path added.
    fn apply(self, viommu: bool, args: &[String]) -> (bool, Vec<String>) {
        let mut args = args.to_vec();
        match self {
            DmaPath::Viommu => (true, args),
            DmaPath::Swiotlb => {
                if !args.iter().any(|a| a == "swiotlb=force") {
                    args.push("swiotlb=force".into());
                }
                (viommu, args)
            }
        }
    }
}

/// One checked expectation.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// The measured value, or why it failed.
    pub detail: String,
}

/// What one scenario did.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// Its file.
    pub file: String,
    /// All checks held and nothing failed.
    pub passed: bool,
    /// Wall-clock seconds, boot included.
    pub seconds: f64,
    /// Accelerator used.
    pub accel: String,
    /// Guest kernel flavor booted (`test`, `debug`, `bench`).
    pub kernel: String,
    /// The DMA path `acq run --dma` forced (`viommu`, `swiotlb`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dma: Option<String>,
    /// Guest RAM in MiB (the scenario's, or `acq run --memory`'s); 0 before the boot.
    pub memory_mib: u32,
    /// The scenario whose run booted the guest this one ran in, when that was another
    /// (`acq run --reuse-guests`): its results directory holds the guest's console, QEMU
    /// and device model logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_booted_by: Option<String>,
    /// A failure that stopped the run before the checks (boot failure, step failure, ...).
    pub error: Option<String>,
    /// The expectations, each checked.
    pub checks: Vec<Check>,
    /// The result line of each stream step.
    pub streams: Vec<Value>,
    /// Faults fired: (fault, card, when in ms after the steps started).
    pub faults_fired: Vec<Value>,
    /// Each card's counters at the end.
    pub counters: Vec<Value>,
    /// Each capture disk's counters at the end.
    pub disk_counters: Vec<Value>,
    /// The results directory.
    pub results: String,
}

/// Runs one scenario in a guest of its own; never panics, never leaves processes behind.
pub fn run(sc: &Scenario, file: &Path, paths: &Paths, opts: &RunOptions) -> ScenarioResult {
    let mut results = Vec::new();
    run_batch(&[(sc, file)], paths, opts, &mut |r| {
        results.push(r.clone());
        true
    });
    results.pop().unwrap_or_else(|| new_result(sc, file, opts))
}

/// Runs scenarios in turn, one guest serving the next as long as each passes and may
/// share it (`opts.reuse_guests` and [`guest_shape`]; a batch is made of scenarios of one
/// shape, [`batches`]). `done` gets each result as it is ready, in the batch's order, and
/// returns false to stop the batch (the results ready by then are all given). Never
/// panics, never leaves processes behind.
pub fn run_batch(
    batch: &[(&Scenario, &Path)],
    paths: &Paths,
    opts: &RunOptions,
    done: &mut dyn FnMut(&ScenarioResult) -> bool,
) {
    let mut guest: Option<SharedGuest> = None;
    // Scenarios that passed in a debug guest they handed on: their results wait for the
    // leak scan of the last scenario in that guest ([`leaks`]).
    let mut held: Vec<Held> = Vec::new();
    for (i, (sc, file)) in batch.iter().enumerate() {
        let mut res = new_result(sc, file, opts);
        let dir = PathBuf::from(&res.results);
        let start = Instant::now();
        // A guest is handed on only to a scenario of its shape, after one that passed, and
        // not to one whose results directory is the guest's own (a scenario of the same
        // name as the one that booted it: clearing the directory would pull the guest's
        // sockets from under it).
        let shape = guest_shape(sc, opts);
        let guest_dir = guest
            .as_ref()
            .map_or(dir.clone(), |g| g.vm.run_dir().to_path_buf());
        let more = opts.reuse_guests
            && shape.is_some()
            && batch.get(i + 1).is_some_and(|(next, _)| {
                guest_shape(next, opts) == shape && name_and_dir(next, opts).1 != guest_dir
            });
        let turn = Turn {
            guest: guest.take(),
            hand_on: more,
            held: &mut held,
        };
        let mut owed = None;
        match run_inner(sc, paths, opts, &dir, &mut res, turn) {
            Ok(next) => (guest, owed) = (next.guest, next.scan_owed),
            Err(e) => res.error = Some(format!("{e:#}")),
        }
        res.seconds = start.elapsed().as_secs_f64();
        if let Some(window) = owed {
            held.push(Held {
                res,
                window,
                scanned: false,
            });
            continue;
        }
        let why = res
            .error
            .clone()
            .unwrap_or_else(|| "it was shut down".into());
        let name = res.name.clone();
        let mut go_on = true;
        for mut r in held
            .drain(..)
            .map(|h| not_scanned(h, &name, &why))
            .chain([res])
        {
            r.passed = r.error.is_none() && r.checks.iter().all(|c| c.ok);
            if let Ok(text) = serde_json::to_string_pretty(&r) {
                let _ = fs::write(Path::new(&r.results).join("result.json"), text);
            }
            go_on &= done(&r);
        }
        if !go_on {
            break;
        }
    }
    // Never the case (the batch's last scenario does not hand its guest on), but no
    // result may depend on that.
    for r in held.drain(..) {
        done(&not_scanned(r, "the batch's end", "the batch ended first"));
    }
    if let Some(g) = guest {
        let _ = g.vm.shutdown(Duration::from_secs(60));
    }
}

/// A held scenario's result, with a failed leak check if its guest's scan never came
/// (the guest died, or the scenario that was to scan it ended before: `why`).
fn not_scanned(mut h: Held, scanner: &str, why: &str) -> ScenarioResult {
    if !h.scanned {
        h.res.checks.push(Check {
            name: "kmemleak: nothing leaked".into(),
            ok: false,
            detail: format!(
                "not scanned: the guest it handed on was to be scanned after `{scanner}`, \
                 which ended first: {why}"
            ),
        });
    }
    h.res
}

/// A scenario's name and results directory.
fn name_and_dir(sc: &Scenario, opts: &RunOptions) -> (String, PathBuf) {
    let name = sc.name.clone().unwrap_or_else(|| "scenario".into());
    let dir = opts.results.join(&name);
    (name, dir)
}

fn new_result(sc: &Scenario, file: &Path, opts: &RunOptions) -> ScenarioResult {
    let (name, dir) = name_and_dir(sc, opts);
    ScenarioResult {
        name,
        file: file.display().to_string(),
        passed: false,
        seconds: 0.0,
        accel: String::new(),
        kernel: String::new(),
        dma: None,
        memory_mib: 0,
        guest_booted_by: None,
        error: None,
        checks: Vec::new(),
        streams: Vec::new(),
        faults_fired: Vec::new(),
        counters: Vec::new(),
        disk_counters: Vec::new(),
        results: dir.display().to_string(),
    }
}

/// A guest kept running for the next scenario of its shape.
struct SharedGuest {
    vm: Vm,
    /// The scenario whose run booted it.
    booted_by: String,
    /// /proc/mounts after the boot: a scenario must leave no mount of its own behind.
    mounts: String,
}

/// What a scenario gets from the one before it in its batch.
struct Turn<'a> {
    /// The guest handed over, if any.
    guest: Option<SharedGuest>,
    /// Whether the next scenario could have this guest.
    hand_on: bool,
    /// The scenarios before it in the guest whose leak scan is left to a later one.
    held: &'a mut [Held],
}

/// What a scenario leaves to the next one.
#[derive(Default)]
struct Next {
    /// Its guest, when it is handed on.
    guest: Option<SharedGuest>,
    /// Set when the guest owes this scenario its kmemleak scan (debug flavor, handed on):
    /// the scenario's window on kmemleak's clock ([`leaks`]).
    scan_owed: Option<Window>,
}

/// Carries out one scenario, in the guest `turn` hands over if any (else in a guest it
/// boots). Returns the guest when `turn.hand_on` and the scenario passed and left it fit
/// for another ([`hand_over`]); shuts it down otherwise, on the debug flavor after a leak
/// scan that covers `turn.held` too.
fn run_inner(
    sc: &Scenario,
    paths: &Paths,
    opts: &RunOptions,
    dir: &Path,
    res: &mut ScenarioResult,
    turn: Turn,
) -> Result<Next> {
    let deadline = Instant::now() + Duration::from_secs(sc.timeout_s);
    let Turn {
        guest,
        hand_on,
        held,
    } = turn;
    // (A guest handed over never lives in `dir`: run_batch hands none to a scenario whose
    // results directory is the guest's own.)
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    let paths = &paths.with_kernel(opts.kernel_flavor.unwrap_or(sc.vm.kernel))?;
    res.kernel = paths.kernel_flavor.to_string();
    let (mut vm, booted_by, mounts) = match guest {
        Some(g) => {
            fs::write(
                dir.join("guest.txt"),
                format!(
                    "This scenario ran in the guest booted for `{}` (acq run --reuse-guests), \
                     after the scenarios before it in that guest passed: its console, QEMU \
                     and device model logs are in {}.\n",
                    g.booted_by,
                    g.vm.run_dir().display()
                ),
            )?;
            res.guest_booted_by = Some(g.booted_by.clone());
            res.memory_mib = opts.memory_mib.unwrap_or(sc.vm.memory_mib);
            (g.vm, g.booted_by, g.mounts)
        }
        None => {
            let mut vm = boot(sc, paths, opts, dir, deadline, res)?;
            let mounts = if hand_on {
                vm.sh_ok("cat /proc/mounts", Duration::from_secs(60))?
            } else {
                String::new()
            };
            (vm, res.name.clone(), mounts)
        }
    };
    if let Some(d) = opts.dma {
        res.dma = Some(format!("{d:?}").to_lowercase());
    }
    res.accel = vm.accel.0.to_string();
    let debug = paths.kernel_flavor == KernelFlavor::Debug;
    let mut window = Window::default();
    let ctx = InGuest {
        sc,
        opts,
        dir,
        deadline,
        mounts: &mounts,
        hand_on,
        debug,
    };
    match in_guest(&ctx, &mut vm, res, &mut window, held) {
        Ok(true) => Ok(Next {
            guest: Some(SharedGuest {
                vm,
                booted_by,
                mounts,
            }),
            // The leak scan is left to the last scenario in this guest.
            scan_owed: debug.then_some(window),
        }),
        Ok(false) => {
            vm.shutdown(
                Duration::from_secs(60).min(remaining(deadline).max(Duration::from_secs(5))),
            )?;
            Ok(Next::default())
        }
        Err(e) => {
            if held.iter().any(|h| !h.scanned) {
                // The scenarios before this one in the guest still need its leak scan:
                // best effort (without it, they fail for want of one; this one gets a
                // leak check too).
                let _ = vm.sh("rmmod acq", bounded(deadline, 60));
                let mut scanning = Scanning { res, window, held };
                let _ = check_leaks(&mut vm, dir, bounded(deadline, 300), &mut scanning);
            }
            Err(e)
        }
    }
}

/// What [`in_guest`] works with besides the guest and the results.
struct InGuest<'a> {
    sc: &'a Scenario,
    opts: &'a RunOptions,
    dir: &'a Path,
    deadline: Instant,
    /// /proc/mounts after the boot.
    mounts: &'a str,
    hand_on: bool,
    /// The debug kernel flavor: kmemleak runs.
    debug: bool,
}

/// The scenario in its guest: the driver loaded, the steps, the checks, the driver
/// unloaded; then the hand-over when the guest may go to the next scenario, else (on the
/// debug flavor) the leak scan. `window` is filled in as the scenario goes. Returns
/// whether the guest is handed on.
fn in_guest(
    g: &InGuest,
    vm: &mut Vm,
    res: &mut ScenarioResult,
    window: &mut Window,
    held: &mut [Held],
) -> Result<bool> {
    let (sc, dir, deadline) = (g.sc, g.dir, g.deadline);
    // (On the debug flavor, what the kernel leaked while booting was forgotten before the
    // guest was handed out: crate::vm. In a guest handed over, the scenarios before this
    // one own what they allocated.)
    // The scenario's start on kmemleak's clock: a scan covering several scenarios lays
    // each object on the one it was allocated in ([`leaks`]).
    if g.debug {
        window.start = jiffies(vm);
    }
    // The scenario's counters count from here, before the driver loads ([`since`]).
    let baseline = card_counters(vm, dir)
        .into_iter()
        .enumerate()
        .map(|(i, c)| c.with_context(|| format!("card {i}: reading its counters before the steps")))
        .collect::<Result<Vec<_>>>()?;
    let origins = baseline
        .iter()
        .map(|c| {
            let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
            (n("bytes"), n("pb_bytes"))
        })
        .collect();
    let r = run_steps(sc, g.opts, dir, deadline, vm, res, origins);
    if r.is_err() {
        vm.mark_failed();
    }
    // Counters and the kernel log are read even after a failed step: they explain it.
    for (i, c) in card_counters(vm, dir).into_iter().enumerate() {
        res.counters.push(
            c.map(|c| since(c, baseline.get(i)))
                .unwrap_or_else(|e| json!({"error": format!("card {i}: {e:#}")})),
        );
    }
    for (i, d) in vm.disk_servers.iter().enumerate() {
        let c = d
            .counters()
            .unwrap_or_else(|e| json!({"error": format!("disk {i}: {e:#}")}));
        res.disk_counters.push(c);
    }
    let dmesg = vm.sh("dmesg", Duration::from_secs(60).min(remaining(deadline)));
    r?;
    let dmesg = dmesg?.stdout;
    fs::write(dir.join("dmesg.txt"), &dmesg)?;
    check_expectations(&sc.expect, res, &dmesg);
    explain_outrun_consumers(sc, res);
    check_disk_streams(sc, res);
    if sc.load_driver && sc.expect.pool_returned {
        for i in 0..sc.cards.len() {
            let out = vm.sh(
                // Status 3: no card any more (unplugged), or one the driver found gone
                // (its calls fail with ENODEV, "No such device").
                &format!(
                    "[ -c /dev/acq{i} ] || exit 3; out=$(acq-ctl --device /dev/acq{i} stats 2>&1) \
                     || {{ echo \"$out\"; echo \"$out\" | grep -q 'No such device' && exit 3; exit 1; }}; \
                     echo \"$out\""
                ),
                Duration::from_secs(60),
            )?;
            if out.status == 3 {
                continue; // removed or gone on purpose: its pool went with it, unload checks the rest
            }
            let stats: Option<DriverStats> = serde_json::from_str(out.stdout.trim()).ok();
            let (free, pages) = stats.map_or((0, 0), |s| (s.pool_free, s.pool_pages));
            res.checks.push(Check {
                name: format!("card {i}: every pool page returned"),
                ok: out.success() && pages > 0 && free == pages,
                detail: format!("pool_free {free} of {pages}"),
            });
        }
    }
    let mut seen = dmesg.clone();
    if sc.load_driver {
        let out = vm.sh("rmmod acq", Duration::from_secs(60))?;
        res.checks.push(Check {
            name: "driver unloads".into(),
            ok: out.success(),
            detail: format!("status {} {}", out.status, out.stderr.trim()),
        });
    }
    // For the hand-over's settle: only shared guests use it, and their scenarios all
    // load the driver.
    let unloaded = Instant::now();
    if sc.load_driver || g.debug {
        seen = check_after_unload(vm, &dmesg, &sc.expect, dir, deadline, res)?;
    }
    if g.debug {
        window.end = jiffies(vm);
    }
    if g.hand_on && res.checks.iter().all(|c| c.ok) {
        match hand_over(vm, sc, g.mounts, &mut seen, unloaded, dir, res) {
            Ok(()) => return Ok(true),
            // Not the scenario's failure: the next one boots a guest of its own.
            Err(e) => append(
                &dir.join("guest.txt"),
                &format!("The guest was not handed on to the next scenario: {e:#}\n"),
            )?,
        }
    }
    // A scenario that loads the driver itself (a probe that must fail, say) is checked
    // for leaks all the same on the debug flavor: a failed probe's error path is where
    // they hide.
    if g.debug {
        let scanning = Scanning {
            res,
            window: *window,
            held,
        };
        scan_for_leaks(vm, &seen, &sc.expect, dir, deadline, scanning)?;
    }
    Ok(false)
}

/// Each card's `counters` reply, read through its model's control socket (the exchange
/// goes to the scenario's control.log).
fn card_counters(vm: &Vm, dir: &Path) -> Vec<Result<Value>> {
    vm.models
        .iter()
        .map(|m| {
            ModelControl::connect(&m.control, Some(&dir.join("control.log")))
                .and_then(|mut c| c.counters())
        })
        .collect()
}

/// Boots the scenario's guest with its cards and disks (device models started), the
/// driver in it.
fn boot(
    sc: &Scenario,
    paths: &Paths,
    opts: &RunOptions,
    dir: &Path,
    deadline: Instant,
    res: &mut ScenarioResult,
) -> Result<Vm> {
    let mut cards = Vec::new();
    for (i, c) in sc.cards.iter().enumerate() {
        let cfg = dir.join(format!("acq{i}.config.json"));
        fs::write(&cfg, model_config(c).to_string())?;
        cards.push(Card::Model { config: Some(cfg) });
    }
    let mut modules = Vec::new();
    // In the guest whenever there is a card: a scenario that loads it itself (a probe
    // that must fail) finds it at /lib/modules/acq.ko.
    if sc.load_driver || !sc.cards.is_empty() {
        let ko = opts.driver.clone().unwrap_or_else(|| paths.driver_module());
        if !ko.exists() {
            bail!(
                "{} does not exist: run `{}`",
                ko.display(),
                paths.driver_target()
            );
        }
        modules.push(ko);
    }
    let (viommu, kernel_args) = vm_dma(sc, opts);
    let cfg = VmConfig {
        accel: opts.accel.unwrap_or(sc.vm.accel),
        cpus: sc.vm.cpus,
        memory_mib: opts.memory_mib.unwrap_or(sc.vm.memory_mib),
        cards,
        modules,
        files: Vec::new(),
        boot_timeout: remaining(deadline).min(Duration::from_secs(300)),
        shell: false,
        disks: sc.disks.iter().map(|d| disk_spec(sc, d)).collect(),
        run_dir: dir.to_path_buf(),
        keep: true,
        viommu,
        kernel_args,
        snapshot: true,
    };
    res.memory_mib = cfg.memory_mib;
    Vm::boot(&cfg, paths)
}

/// The VM's IOMMU and kernel arguments: the scenario's, with `acq run --dma`'s path.
fn vm_dma(sc: &Scenario, opts: &RunOptions) -> (bool, Vec<String>) {
    match opts.dma {
        Some(d) => d.apply(sc.vm.viommu, &sc.vm.kernel_args),
        None => (sc.vm.viommu, sc.vm.kernel_args.clone()),
    }
}

/// What the kernel reported while the driver was removed (a use-after-free in the remove
/// path shows only then). Returns the kernel log as read.
fn check_after_unload(
    vm: &mut Vm,
    dmesg_before: &str,
    ex: &super::format::Expect,
    dir: &Path,
    deadline: Instant,
    res: &mut ScenarioResult,
) -> Result<String> {
    let after = vm.sh("dmesg", bounded(deadline, 60))?.stdout;
    let new = after.get(dmesg_before.len()..).unwrap_or(&after);
    fs::write(dir.join("dmesg-unload.txt"), new)?;
    res.checks.push(kernel_log_check(
        "kernel log clean while unloading",
        new,
        ex,
    ));
    Ok(after)
}

/// On the debug flavor, with the driver gone: kmemleak's scan, for this scenario and those
/// held before it in this guest ([`leaks`]), and what the kernel reported during it (a
/// timer or work item a driver left behind fires there), read from the log after `seen`.
fn scan_for_leaks(
    vm: &mut Vm,
    seen: &str,
    ex: &super::format::Expect,
    dir: &Path,
    deadline: Instant,
    mut s: Scanning,
) -> Result<()> {
    check_leaks(vm, dir, bounded(deadline, 300), &mut s)?;
    let last = vm.sh("dmesg", bounded(deadline, 60))?.stdout;
    let later = last.get(seen.len()..).unwrap_or(&last);
    append(&dir.join("dmesg-unload.txt"), later)?;
    s.res.checks.push(kernel_log_check(
        "kernel log clean to the end (after the leak scans)",
        later,
        ex,
    ));
    Ok(())
}

/// At most `most` seconds, within the scenario's time but with a floor so that the checks
/// after its steps can still run.
fn bounded(deadline: Instant, most: u64) -> Duration {
    Duration::from_secs(most).min(remaining(deadline).max(Duration::from_secs(20)))
}

/// Appends `text` to the file at `path` (created if missing).
fn append(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The sink settings for a scenario disk: it checks writes against its card's stream.
fn disk_spec(sc: &Scenario, d: &super::format::DiskSpec) -> crate::disks::DiskSpec {
    let dev = sc
        .cards
        .get(d.card)
        .map(|c| c.device.clone())
        .unwrap_or_default();
    crate::disks::DiskSpec {
        size: d.size.0,
        block_size: d.block_size,
        pattern: dev
            .pattern
            .unwrap_or(super::format::Pattern::COUNTER)
            .to_string(),
        seed: dev.seed.unwrap_or(0),
        base: d.base.map_or(0, |b| b.0),
        store: d.store,
        verify: d.verify,
    }
}

/// The device model's JSON config for a card (its model-level settings).
fn model_config(c: &CardSpec) -> Value {
    let mut v = serde_json::Map::new();
    if let Some(s) = c.bar2_size {
        v.insert("bar2_size".into(), json!(s.0));
    }
    if let Some(n) = c.msix_vectors {
        v.insert("msix_vectors".into(), json!(n));
    }
    if let Some(s) = c.fifo_depth {
        v.insert("fifo_depth".into(), json!(s.0));
    }
    if let Some(m) = c.msi {
        v.insert("msi".into(), json!(m));
    }
    if let Some(m) = c.msix_enable_fails {
        v.insert("msix_enable_fails".into(), json!(m));
    }
    Value::Object(v)
}

/// Loads the driver and runs the steps, the timeline beside them.
fn run_steps(
    sc: &Scenario,
    opts: &RunOptions,
    dir: &Path,
    deadline: Instant,
    vm: &mut Vm,
    res: &mut ScenarioResult,
    origins: Vec<(u64, u64)>,
) -> Result<()> {
    if sc.load_driver {
        vm.sh_ok("insmod /lib/modules/acq.ko", Duration::from_secs(60))?;
        for i in 0..sc.cards.len() {
            vm.sh_ok(
                &format!("for t in $(seq 50); do [ -c /dev/acq{i} ] && exit 0; sleep 0.1; done; echo no /dev/acq{i}; exit 1"),
                Duration::from_secs(30),
            )?;
        }
    }
    let controls: Vec<PathBuf> = vm.models.iter().map(|m| m.control.clone()).collect();
    let disks: Vec<PathBuf> = vm.disk_servers.iter().map(|s| s.control.clone()).collect();
    // Faults at a step are injected by this thread, between the steps; the rest by the
    // timeline, beside them.
    let (at_step, timed): (Vec<FaultSpec>, Vec<FaultSpec>) = sc
        .faults
        .iter()
        .cloned()
        .partition(|f| matches!(f.at, FaultAt::Step(_)));
    let mut step_conns: Vec<Option<ModelControl>> = controls.iter().map(|_| None).collect();
    let mut step_fired: Vec<Value> = Vec::new();
    let t0 = Instant::now();
    let timeline = Timeline::start(
        timed,
        controls.clone(),
        disks.clone(),
        origins,
        vm.guest(),
        dir.to_path_buf(),
    );
    // Background steps (a writer, a second process) beside the ones that follow; the
    // scenario waits for them after its last step, and before the checks.
    type Background = thread::JoinHandle<Result<Option<Value>>>;
    let mut background: Vec<(usize, Background)> = Vec::new();
    let r = (|| -> Result<()> {
        for (i, step) in sc.steps.iter().enumerate() {
            if remaining(deadline).is_zero() {
                bail!(
                    "scenario time limit ({} s) reached before step {i}",
                    sc.timeout_s
                );
            }
            for f in at_step.iter().filter(|f| f.at == FaultAt::Step(i)) {
                let transcript = dir.join("control.log");
                let r = if f.inject.is_disk() {
                    inject_disk(&disks, f, &transcript)
                } else {
                    inject(&mut step_conns, &controls, f, &vm.guest(), &transcript)
                };
                r.with_context(|| {
                    format!(
                        "injecting {} on card {} before step {i}",
                        f.inject.name(),
                        f.card
                    )
                })?;
                step_fired.push(fired_record(f, t0.elapsed().as_millis() as u64, None));
            }
            match step {
                Step::Stream(st) => {
                    let v = stream(vm, sc, st, opts, deadline)
                        .with_context(|| format!("step {i} (stream)"))?;
                    res.streams.push(v);
                }
                Step::Play(p) if p.background => {
                    let (guest, p, card, opts) = (
                        vm.guest(),
                        p.clone(),
                        sc.cards[p.card].clone(),
                        opts.clone(),
                    );
                    background.push((
                        i,
                        thread::spawn(move || play(&guest, &p, &card, &opts, deadline).map(Some)),
                    ));
                }
                Step::Play(p) => {
                    let v = play(&vm.guest(), p, &sc.cards[p.card], opts, deadline)
                        .with_context(|| format!("step {i} (play)"))?;
                    res.streams.push(v);
                }
                Step::Share(sh) => {
                    let v = share(&vm.guest(), sh, &sc.cards[sh.settings_card()], deadline)
                        .with_context(|| format!("step {i} (share)"))?;
                    res.streams.push(v);
                }
                Step::Exec(e) if e.background => {
                    let (guest, e) = (vm.guest(), e.clone());
                    background.push((
                        i,
                        thread::spawn(move || {
                            let t = Duration::from_secs(e.timeout_s).min(remaining(deadline));
                            exec_result(i, &e, guest.sh(&e.cmd, t)?).map(|()| None)
                        }),
                    ));
                }
                Step::Exec(e) => {
                    let t = Duration::from_secs(e.timeout_s).min(remaining(deadline));
                    exec_result(i, e, vm.sh(&e.cmd, t)?)?;
                }
                Step::Config(c) => {
                    let mut cmd = format!("acq-ctl --device /dev/acq{} set", c.card);
                    let mut flags = Vec::new();
                    crate::scenario::format::invoke::device_args(&c.device).push_argv(&mut flags);
                    for f in flags {
                        cmd.push(' ');
                        cmd.push_str(&f);
                    }
                    vm.sh_ok(&cmd, Duration::from_secs(60).min(remaining(deadline)))
                        .with_context(|| format!("step {i} (config)"))?;
                }
                Step::Reset(c) => {
                    vm.sh_ok(
                        &format!("acq-ctl --device /dev/acq{} reset", c.card),
                        Duration::from_secs(60).min(remaining(deadline)),
                    )
                    .with_context(|| format!("step {i} (reset)"))?;
                }
                Step::SleepMs(ms) => {
                    thread::sleep(Duration::from_millis(*ms).min(remaining(deadline)))
                }
            }
        }
        Ok(())
    })();
    // Every background step is waited for (each has its own time limit), even after a
    // failed step: no thread outlives the scenario.
    let mut r = r;
    for (i, h) in background {
        let out = h
            .join()
            .map_err(|_| anyhow!("step {i} (background): its thread panicked"))
            .and_then(|x| x.with_context(|| format!("step {i} (background)")));
        match (out, r.is_ok()) {
            (Ok(Some(v)), _) => res.streams.push(v),
            (Ok(None), _) => {}
            (Err(e), true) => r = Err(e),
            // Not lost behind the first failure: said in its context.
            (Err(e), false) => r = r.context(format!("(a background step failed too: {e:#})")),
        }
    }
    let (mut fired, unfired, errors) = timeline.stop();
    fired.extend(step_fired);
    res.faults_fired = fired;
    for f in unfired.into_iter().filter(|_| sc.expect.all_faults_fire) {
        res.checks.push(Check {
            name: format!("fault {} on card {} fires", f.inject.name(), f.card),
            ok: false,
            detail: format!("never fired ({:?}): the steps ended first", f.at),
        });
    }
    for e in errors {
        res.checks.push(Check {
            name: "fault injection".into(),
            ok: false,
            detail: e,
        });
    }
    r
}

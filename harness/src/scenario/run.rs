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

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::format::{
    counter_key, CardSpec, Channel, CounterOf, DeviceSettings, Expect, Fault, FaultAt, FaultSpec,
    PlayMode, PlaySource, PlayStep, Scenario, Sink, Size, Step, StreamStep,
};
use crate::accel::AccelChoice;
use crate::control::ModelControl;
use crate::paths::{KernelFlavor, Paths};
use crate::vm::{Card, GuestHandle, Vm, VmConfig};

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

/// Runs one scenario; never panics, never leaves processes behind.
pub fn run(sc: &Scenario, file: &Path, paths: &Paths, opts: &RunOptions) -> ScenarioResult {
    let name = sc.name.clone().unwrap_or_else(|| "scenario".into());
    let dir = opts.results.join(&name);
    let start = Instant::now();
    let mut res = ScenarioResult {
        name: name.clone(),
        file: file.display().to_string(),
        passed: false,
        seconds: 0.0,
        accel: String::new(),
        kernel: String::new(),
        dma: None,
        error: None,
        checks: Vec::new(),
        streams: Vec::new(),
        faults_fired: Vec::new(),
        counters: Vec::new(),
        disk_counters: Vec::new(),
        results: dir.display().to_string(),
    };
    if let Err(e) = run_inner(sc, paths, opts, &dir, &mut res) {
        res.error = Some(format!("{e:#}"));
    }
    res.seconds = start.elapsed().as_secs_f64();
    res.passed = res.error.is_none() && res.checks.iter().all(|c| c.ok);
    if let Ok(text) = serde_json::to_string_pretty(&res) {
        let _ = fs::write(dir.join("result.json"), text);
    }
    res
}

fn run_inner(
    sc: &Scenario,
    paths: &Paths,
    opts: &RunOptions,
    dir: &Path,
    res: &mut ScenarioResult,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(sc.timeout_s);
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    let mut cards = Vec::new();
    for (i, c) in sc.cards.iter().enumerate() {
        let cfg = dir.join(format!("acq{i}.config.json"));
        fs::write(&cfg, model_config(c).to_string())?;
        cards.push(Card::Model { config: Some(cfg) });
    }
    let paths = &paths.with_kernel(opts.kernel_flavor.unwrap_or(sc.vm.kernel))?;
    res.kernel = paths.kernel_flavor.to_string();
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
    let mut cfg = VmConfig {
        accel: opts.accel.unwrap_or(sc.vm.accel),
        cpus: sc.vm.cpus,
        memory_mib: sc.vm.memory_mib,
        cards,
        modules,
        files: Vec::new(),
        boot_timeout: remaining(deadline).min(Duration::from_secs(300)),
        shell: false,
        disks: sc.disks.iter().map(|d| disk_spec(sc, d)).collect(),
        run_dir: dir.to_path_buf(),
        keep: true,
        viommu: sc.vm.viommu,
        kernel_args: sc.vm.kernel_args.clone(),
    };
    if let Some(d) = opts.dma {
        (cfg.viommu, cfg.kernel_args) = d.apply(cfg.viommu, &cfg.kernel_args);
        res.dma = Some(format!("{d:?}").to_lowercase());
    }
    let mut vm = Vm::boot(&cfg, paths)?;
    res.accel = vm.accel.0.to_string();
    let r = run_steps(sc, opts, dir, deadline, &mut vm, res);
    if r.is_err() {
        vm.mark_failed();
    }
    // Counters and the kernel log are read even after a failed step: they explain it.
    for (i, m) in vm.models.iter().enumerate() {
        let c = ModelControl::connect(&m.control, Some(&dir.join("control.log")))
            .and_then(|mut c| c.counters())
            .unwrap_or_else(|e| json!({"error": format!("card {i}: {e:#}")}));
        res.counters.push(c);
    }
    for (i, d) in vm.sinks.iter().enumerate() {
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
            let stats: Value = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
            let (free, pages) = (num(&stats, "pool_free"), num(&stats, "pool_pages"));
            res.checks.push(Check {
                name: format!("card {i}: every pool page returned"),
                ok: out.success() && pages > 0 && free == pages,
                detail: format!("pool_free {free} of {pages}"),
            });
        }
    }
    if sc.load_driver {
        let out = vm.sh("rmmod acq", Duration::from_secs(60))?;
        res.checks.push(Check {
            name: "driver unloads".into(),
            ok: out.success(),
            detail: format!("status {} {}", out.status, out.stderr.trim()),
        });
        let kmemleak = paths.kernel_flavor == KernelFlavor::Debug;
        check_after_unload(&mut vm, &dmesg, &sc.expect, dir, deadline, kmemleak, res)?;
    } else if paths.kernel_flavor == KernelFlavor::Debug {
        // A scenario that loads the driver itself (a probe that must fail, say) is
        // checked for leaks all the same: a failed probe's error path is where they hide.
        check_after_unload(&mut vm, &dmesg, &sc.expect, dir, deadline, true, res)?;
    }
    vm.shutdown(Duration::from_secs(60).min(remaining(deadline).max(Duration::from_secs(5))))?;
    Ok(())
}

/// What the kernel reported while the driver was removed (a use-after-free in the remove
/// path shows only then), and on the debug flavor whatever kmemleak finds unreferenced
/// once the driver is gone.
#[allow(clippy::too_many_arguments)]
fn check_after_unload(
    vm: &mut Vm,
    dmesg_before: &str,
    ex: &super::format::Expect,
    dir: &Path,
    deadline: Instant,
    kmemleak: bool,
    res: &mut ScenarioResult,
) -> Result<()> {
    // Bounded by the scenario's time, with a floor so the checks can still run.
    let bound =
        |most: u64| Duration::from_secs(most).min(remaining(deadline).max(Duration::from_secs(20)));
    let after = vm.sh("dmesg", bound(60))?.stdout;
    let new = after.get(dmesg_before.len()..).unwrap_or(&after);
    fs::write(dir.join("dmesg-unload.txt"), new)?;
    res.checks.push(kernel_log_check(
        "kernel log clean while unloading",
        new,
        ex,
    ));
    if !kmemleak {
        return Ok(());
    }
    // Two scans of the debug kernel's memory take seconds under TCG.
    let scan = vm.sh(&crate::dmesg::kmemleak_scan_cmd(), bound(300))?;
    if scan.status == 3 {
        // The debug kernel without kmemleak: it disabled itself (say, its pool ran out)
        // and would pass every leak.
        res.checks.push(Check {
            name: "kmemleak: nothing leaked".into(),
            ok: false,
            detail: format!(
                "{} is missing on the debug kernel: kmemleak disabled itself (see dmesg.txt)",
                crate::dmesg::KMEMLEAK
            ),
        });
        return Ok(());
    }
    fs::write(dir.join("kmemleak.txt"), &scan.stdout)?;
    let leaks = crate::dmesg::kmemleak_leaks(&scan.stdout);
    res.checks.push(Check {
        name: "kmemleak: nothing leaked".into(),
        ok: scan.success() && leaks.is_empty(),
        detail: if !scan.success() {
            format!("the scan failed: {}", scan.stderr.trim())
        } else if leaks.is_empty() {
            "no unreferenced objects".into()
        } else {
            format!(
                "{} unreferenced object(s), kmemleak.txt: {}",
                leaks.len(),
                leaks
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        },
    });
    Ok(())
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The sink settings for a scenario disk: it checks writes against its card's stream.
fn disk_spec(sc: &Scenario, d: &super::format::DiskSpec) -> crate::sink::DiskSpec {
    let dev = sc
        .cards
        .get(d.card)
        .map(|c| c.device.clone())
        .unwrap_or_default();
    crate::sink::DiskSpec {
        size: d.size.0,
        block_size: d.block_size,
        pattern: dev
            .pattern
            .unwrap_or(super::format::Pattern::Counter)
            .as_str()
            .into(),
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

fn run_steps(
    sc: &Scenario,
    opts: &RunOptions,
    dir: &Path,
    deadline: Instant,
    vm: &mut Vm,
    res: &mut ScenarioResult,
) -> Result<()> {
    // On the debug flavor: what the kernel leaked while booting is not the run's.
    vm.sh_ok(
        &crate::dmesg::kmemleak_baseline_cmd(),
        Duration::from_secs(120),
    )?;
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
    let disks: Vec<PathBuf> = vm.sinks.iter().map(|s| s.control.clone()).collect();
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
                    let v =
                        super::share::run(&vm.guest(), sh, &sc.cards[sh.settings_card()], deadline)
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
                    for (flag, v) in device_flags(&c.device) {
                        cmd.push_str(&format!(" {flag} {v}"));
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

/// Runs `acq-stream` for a stream step and returns its JSON result line.
fn stream(
    vm: &mut Vm,
    sc: &Scenario,
    st: &StreamStep,
    opts: &RunOptions,
    deadline: Instant,
) -> Result<Value> {
    let card = &sc.cards[st.card];
    let mut argv: Vec<String> = vec![
        "acq-stream".into(),
        "--device".into(),
        format!("/dev/acq{}", st.card),
        "--mode".into(),
        st.mode.as_str().into(),
        "--bytes".into(),
        st.bytes.0.to_string(),
        "--timeout".into(),
        st.timeout_s.to_string(),
    ];
    if st.verify {
        argv.push("--verify".into());
    }
    if opts.verbose {
        argv.push("--progress".into());
    }
    match st.sink {
        Sink::Null => {}
        Sink::Tmpfs => argv.extend(["--sink".into(), format!("/tmp/acq{}.data", st.card)]),
        Sink::Tcp => argv.extend(["--sink".into(), "tcp".into()]),
        Sink::Disk(d) => {
            argv.extend(["--sink".into(), disk_device(d)]);
            // Disk offset = stream offset - base: the disk's own base.
            let base = sc.disks[d].base.map_or(0, |b| b.0);
            argv.extend(["--sink-base".into(), base.to_string()]);
        }
        Sink::DiskFile(d) => {
            let dev = disk_device(d);
            let mnt = disk_mount(d);
            vm.sh_ok(
                &format!("mke2fs -q -b 4096 {dev} && mkdir -p {mnt} && mount -t ext2 {dev} {mnt}"),
                Duration::from_secs(120).min(remaining(deadline)),
            )
            .with_context(|| format!("making an ext2 file system on {dev}"))?;
            argv.extend(["--sink".into(), format!("{mnt}/capture")]);
        }
    }
    if st.direct {
        argv.push("--direct".into());
    }
    match (st.on_sink_error, st.sink) {
        (Some(p), _) => argv.extend(["--on-sink-error".into(), p.as_str().into()]),
        // A file gets the account (and errors seen per piece) only when asked: ask, so
        // that every disk stream reports what reached the disk.
        (None, Sink::DiskFile(_)) => argv.extend(["--on-sink-error".into(), "stop".into()]),
        (None, _) => {}
    }
    if let Some(n) = st.sink_retries {
        argv.extend(["--sink-retries".into(), n.to_string()]);
    }
    if let Some(n) = st.sink_retry_ms {
        argv.extend(["--sink-retry-ms".into(), n.to_string()]);
    }
    if let Some(c) = st.chunk {
        argv.extend(["--read-size".into(), c.0.to_string()]);
    }
    if let Some(p) = st.pipe_size {
        argv.extend(["--pipe-size".into(), p.0.to_string()]);
    }
    match st.tee {
        Some(Sink::Tmpfs) => argv.extend(["--tee".into(), format!("/tmp/acq{}.tee", st.card)]),
        Some(_) => argv.extend(["--tee".into(), "/dev/null".into()]),
        None => {}
    }
    if let Some(r) = st.restart_at {
        argv.extend(["--restart-at".into(), r.0.to_string()]);
    }
    argv.extend(super::control::args(&st.control));
    if let Some(r) = st.reopen_at {
        argv.extend(["--reopen-at".into(), r.0.to_string()]);
    }
    argv.extend(pause_args(st.pause_at, st.pause_ms));
    if let Some(sig) = &st.signal {
        argv.extend(sig.args());
    }
    for (flag, v) in device_flags(&card.device) {
        argv.extend([flag.to_owned(), v]);
    }
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    // The agent's timeout is a backstop; acq-stream's own --timeout ends the stream first.
    let t = Duration::from_secs(st.timeout_s + 30).min(remaining(deadline));
    let verbose = opts.verbose;
    let out = vm.exec_streaming(&argv_ref, t, &mut |stream, data| {
        if verbose && stream == acq_guest::proto::Stream::Stderr {
            eprint!("{data}");
        }
    })?;
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| {
            anyhow!(
                "acq-stream printed no result (status {}): {}",
                out.status,
                out.stderr.trim()
            )
        })?;
    let mut v: Value =
        serde_json::from_str(line).with_context(|| format!("acq-stream result {line:?}"))?;
    if out.status == 2 {
        bail!("acq-stream rejected its arguments: {}", out.stderr.trim());
    }
    if let Some(sig) = st.signal.as_ref().filter(|s| s.send.ends()) {
        // The consumer died of it: the line is the signal helper's (`exit_ms`), checked
        // against the bound with the expectations.
        if let Some(o) = v.as_object_mut() {
            o.insert("signal_sent".into(), sig.send.as_str().into());
            o.insert("exit_within_ms".into(), sig.exit_within_ms.into());
        }
    }
    if let Sink::DiskFile(d) = st.sink {
        vm.sh_ok(
            &format!("umount {}", disk_mount(d)),
            Duration::from_secs(120).min(remaining(deadline)),
        )?;
        // Unmounted: everything the file system wrote is on the disk, so its store holds
        // the file where the extents say.
        if let Some(store) = vm.sinks.get(d).and_then(|s| s.store.clone()) {
            let check = verify_file_on_disk(&v, &store)
                .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            if let Some(o) = v.as_object_mut() {
                o.insert("host_verify".into(), check);
            }
        }
    }
    Ok(v)
}

/// Verifies a file the consumer wrote to a file system on a capture disk, on the host:
/// each extent the consumer reported (`extents`: file offset, disk offset, length) is read
/// from the disk's store file and checked against the card's pattern at the stream offset
/// its file position holds (`segment_map`: file position, stream offset). Returns
/// `{"bytes", "verified", "mismatches", "first_mismatch"}`.
fn verify_file_on_disk(result: &Value, store: &Path) -> Result<Value> {
    use std::io::{Read, Seek, SeekFrom};
    let pairs = |key: &str| -> Result<Vec<Vec<u64>>> {
        let list = result
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("the consumer reported no `{key}`"))?;
        Ok(list
            .iter()
            .map(|e| {
                e.as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default()
            })
            .collect())
    };
    let extents = pairs("extents")?;
    let segments = pairs("segment_map")?;
    let cfg = result.get("config").context("no config in the result")?;
    let pattern = num(cfg, "pattern") as u32;
    let seed = num(cfg, "seed");
    let size = num(result, "bytes");
    // The stream offset of file position `p`: the last segment starting at or before it.
    let offset_of = |p: u64| -> Option<u64> {
        let seg = segments.iter().rev().find(|s| s.len() == 2 && s[0] <= p)?;
        Some(seg[1] + (p - seg[0]))
    };
    let mut f = fs::File::open(store).with_context(|| format!("opening {}", store.display()))?;
    let (mut verified, mut mismatches, mut first) = (0u64, 0u64, None::<u64>);
    let mut buf = vec![0u8; 1 << 16];
    for e in extents.iter().filter(|e| e.len() == 3) {
        let (logical, physical, len) = (e[0], e[1], e[2].min(size.saturating_sub(e[0])));
        let mut done = 0u64;
        while done < len {
            // One piece never crosses a segment boundary.
            let p = logical + done;
            let next_seg = segments
                .iter()
                .filter(|s| s.len() == 2 && s[0] > p)
                .map(|s| s[0])
                .min()
                .unwrap_or(u64::MAX);
            let n = (len - done).min(buf.len() as u64).min(next_seg - p) as usize;
            f.seek(SeekFrom::Start(physical + done))?;
            f.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {} at {}", store.display(), physical + done))?;
            match offset_of(p) {
                Some(o) => match acq_guest::regs::pattern_check(pattern, seed, o, &buf[..n]) {
                    None => verified += n as u64,
                    Some(i) => {
                        mismatches += 1;
                        first.get_or_insert(p + i as u64);
                    }
                },
                None => mismatches += 1,
            }
            done += n as u64;
        }
    }
    Ok(
        json!({"bytes": size, "verified": verified, "mismatches": mismatches,
              "first_mismatch": first}),
    )
}

/// Checks an exec step's exit status.
fn exec_result(i: usize, e: &super::format::ExecStep, out: crate::agent::ExecOutput) -> Result<()> {
    if out.status != e.status || out.timed_out {
        bail!(
            "step {i}: `{}` exited {} (expected {}){}:\n{}{}",
            e.cmd,
            out.status,
            e.status,
            if out.timed_out { ", timed out" } else { "" },
            out.stdout,
            out.stderr
        );
    }
    Ok(())
}

/// Runs `acq-stream --direction out` for a play step and returns its JSON result line
/// (the same fields as a stream's where they apply: `bytes`, `verified_bytes` and
/// `errors` as the card counted them, `errno`, `fatal`, `timed_out`, `ok`).
fn play(
    guest: &GuestHandle,
    p: &PlayStep,
    card: &CardSpec,
    opts: &RunOptions,
    deadline: Instant,
) -> Result<Value> {
    let mut argv: Vec<String> = vec![
        "acq-stream".into(),
        "--direction".into(),
        "out".into(),
        "--device".into(),
        format!("/dev/acq{}-out", p.card),
        "--mode".into(),
        match p.mode {
            PlayMode::Write => "write",
            PlayMode::Splice => "splice",
            PlayMode::Vmsplice => "vmsplice",
        }
        .into(),
        "--source".into(),
        match p.source {
            PlaySource::Pattern => "pattern",
            PlaySource::Zero => "zero",
        }
        .into(),
        "--bytes".into(),
        p.bytes.0.to_string(),
        "--timeout".into(),
        p.timeout_s.to_string(),
    ];
    if p.verify {
        argv.push("--verify".into());
    }
    if let Some(c) = p.chunk {
        argv.extend(["--write-size".into(), c.0.to_string()]);
    }
    if let Some(s) = p.pipe_size {
        argv.extend(["--pipe-size".into(), s.0.to_string()]);
    }
    if let Some(b) = p.buffers {
        argv.extend(["--buffers".into(), b.to_string()]);
    }
    if p.gift {
        argv.push("--gift".into());
    }
    if p.reuse_before_release {
        argv.push("--reuse-before-release".into());
    }
    argv.extend(pause_args(p.pause_at, p.pause_ms));
    // The card's settings, but the playback rate is the step's (the capture rate is not).
    // The capture rate and transfer mode (BAR2 or DMA) are the capture channel's own;
    // playback always moves its data by DMA.
    for (flag, v) in device_flags(&card.device) {
        if flag != "--rate" && flag != "--transfer" {
            argv.extend([flag.to_owned(), v]);
        }
    }
    argv.extend(["--rate".into(), p.rate.map_or(0, |r| r.0).to_string()]);
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let t = Duration::from_secs(p.timeout_s + 30).min(remaining(deadline));
    let verbose = opts.verbose;
    let out = guest.exec_streaming(&argv_ref, t, &mut |stream, data| {
        if verbose && stream == acq_guest::proto::Stream::Stderr {
            eprint!("{data}");
        }
    })?;
    if out.status == 2 {
        bail!("acq-stream rejected its arguments: {}", out.stderr.trim());
    }
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| {
            anyhow!(
                "acq-stream --direction out printed no result (status {}): {}",
                out.status,
                out.stderr.trim()
            )
        })?;
    serde_json::from_str(line).with_context(|| format!("acq-stream result {line:?}"))
}

/// Errnos after which a reader carries on (docs/driver.md); any other ends the stream.
const RECOVERABLE: [&str; 4] = ["EIO", "EPIPE", "EINTR", "EAGAIN"];

/// `acq-stream` / `acq-ctl set` flags for device settings.
fn device_flags(d: &DeviceSettings) -> Vec<(&'static str, String)> {
    [
        ("--block", d.block_size.map(|s| s.0.to_string())),
        ("--rate", d.rate.map(|s| s.0.to_string())),
        ("--pattern", d.pattern.map(|p| p.as_str().to_owned())),
        ("--seed", d.seed.map(|s| s.to_string())),
        ("--irq-count", d.irq_count.map(|s| s.to_string())),
        ("--irq-time-us", d.irq_time_us.map(|s| s.to_string())),
        ("--ring-log2", d.ring_log2.map(|s| s.to_string())),
        ("--transfer", d.transfer.map(|t| t.as_str().to_owned())),
    ]
    .into_iter()
    .filter_map(|(f, v)| Some((f, v?)))
    .collect()
}

/// The guest block device of capture disk `d`: /dev/vda, /dev/vdb, ...
fn disk_device(d: usize) -> String {
    format!("/dev/vd{}", (b'a' + d as u8) as char)
}

/// Where the file system of capture disk `d` is mounted (sink `disk_file`).
fn disk_mount(d: usize) -> String {
    format!("/mnt/vd{}", (b'a' + d as u8) as char)
}

/// Checks every stream to a capture disk: the consumer's account of the disk against the
/// disk's and the card's counters, to the byte, and `expect.sink`.
/// The stream steps with their results. `res.streams` holds the foreground stream and
/// play steps' results in step order, then the background play steps'; a play step's
/// result is skipped here.
fn stream_results<'a>(
    sc: &'a Scenario,
    res: &'a ScenarioResult,
) -> Vec<(&'a StreamStep, &'a Value)> {
    sc.steps
        .iter()
        .filter(|s| match s {
            Step::Stream(_) | Step::Share(_) => true,
            Step::Play(p) => !p.background,
            _ => false,
        })
        .zip(&res.streams)
        .filter_map(|(s, v)| match s {
            Step::Stream(st) => Some((st, v)),
            _ => None,
        })
        .collect()
}

fn check_disk_streams(sc: &Scenario, res: &mut ScenarioResult) {
    let (steps, results): (Vec<&StreamStep>, Vec<Value>) = stream_results(sc, res)
        .into_iter()
        .map(|(st, v)| (st, v.clone()))
        .unzip();
    let ex = &sc.expect.sink;
    let mut checks = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut lost, mut gaps, mut retries) = (0u64, 0u64, 0u64);
    let mut any = false;
    for (i, (st, s)) in steps.iter().zip(&results).enumerate() {
        let Some(d) = st.sink.disk() else { continue };
        any = true;
        if let (Sink::DiskFile(_), Some(h)) = (st.sink, s.get("host_verify")) {
            let bytes = num(s, "bytes");
            checks.push(Check {
                name: format!("stream {i}: the file's blocks on disk {d} verified on the host"),
                ok: h.get("error").is_none()
                    && bytes > 0
                    && num(h, "verified") == bytes
                    && num(h, "mismatches") == 0,
                detail: h.to_string(),
            });
        }
        let Some(io) = s.get("sink_io").filter(|v| v.is_object()) else {
            checks.push(Check {
                name: format!("stream {i}: consumer reports its disk account"),
                ok: false,
                detail: format!(
                    "no sink_io in the result: {}",
                    s.get("error").unwrap_or(&Value::Null)
                ),
            });
            continue;
        };
        if let Some(m) = io.get("errno").and_then(Value::as_object) {
            for (k, v) in m {
                *errors.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        lost += num(io, "lost_bytes");
        gaps += num(io, "gap_bytes");
        retries += num(io, "retries");
        let stopped = io.get("stopped") == Some(&Value::Bool(true));
        checks.push(Check {
            name: format!("stream {i}: stopped by the sink = {}", ex.stopped),
            ok: stopped == ex.stopped,
            detail: format!(
                "stopped {stopped}; {} of {} bytes taken from the card",
                num(s, "bytes"),
                st.bytes
            ),
        });
        let synced = io.get("sync").and_then(Value::as_str) == Some("ok");
        checks.push(Check {
            name: format!("stream {i}: final fsync succeeded = {}", ex.synced),
            ok: synced == ex.synced,
            detail: format!("sync {}", io.get("sync").unwrap_or(&Value::Null)),
        });
        // The card's loss as the consumer met it (EPIPE gaps) is what the driver counted
        // from the card's completions.
        checks.push(Check {
            name: format!("stream {i}: consumer gaps = driver lost_bytes"),
            ok: num(io, "gap_bytes") == num(s, "lost_bytes"),
            detail: format!(
                "gaps {} bytes, driver lost_bytes {}",
                num(io, "gap_bytes"),
                num(s, "lost_bytes")
            ),
        });
        // The model counts for its whole life: comparable when this is the card's only
        // stream (the device is closed right after it, which stops the card).
        if steps.iter().filter(|x| x.card == st.card).count() == 1 {
            let card = res.counters.get(st.card);
            let got = card
                .and_then(|c| c.get("lost_bytes"))
                .and_then(Value::as_u64);
            checks.push(Check {
                name: format!("stream {i}: consumer gaps = card{}.lost_bytes", st.card),
                ok: got == Some(num(io, "gap_bytes")),
                detail: format!("gaps {} bytes, card {got:?}", num(io, "gap_bytes")),
            });
        }
        if !matches!(st.sink, Sink::Disk(_)) {
            continue;
        }
        let disk = res.disk_counters.get(d).cloned().unwrap_or(Value::Null);
        for (mine, theirs, what) in [
            (
                "written_bytes_unique",
                "written_bytes_unique",
                "bytes on the disk",
            ),
            ("hole_bytes", "hole_bytes", "hole bytes"),
            ("failed_bytes", "failed_write_bytes", "failed write bytes"),
        ] {
            let got = disk.get(theirs).and_then(Value::as_u64);
            checks.push(Check {
                name: format!("stream {i}: consumer {what} = disk{d}.{theirs}"),
                ok: got == Some(num(io, mine)),
                detail: format!("consumer {}, disk {got:?}", num(io, mine)),
            });
        }
        let bad = disk.get("bytes_mismatched").and_then(Value::as_u64);
        checks.push(Check {
            name: format!("stream {i}: disk{d} holds only the card's stream"),
            ok: bad == Some(0),
            detail: format!("bytes_mismatched {bad:?}"),
        });
    }
    if any {
        errno_counts(&ex.errors, &errors, "sink ", &mut checks);
        for (what, range, got) in [
            ("lost at the sink", ex.lost_bytes, lost),
            ("lost by the card (gaps)", ex.gap_bytes, gaps),
            ("retries", ex.retries, retries),
        ] {
            checks.push(Check {
                name: format!("sink: {what} {range}"),
                ok: range.contains(got),
                detail: got.to_string(),
            });
        }
    }
    res.checks.extend(checks);
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// One check per errno named in `want` or seen in `got`: seen exactly as often as wanted
/// (an errno nobody named must not occur). `who` prefixes the check names.
fn errno_counts(
    want: &BTreeMap<String, u64>,
    got: &BTreeMap<String, u64>,
    who: &str,
    checks: &mut Vec<Check>,
) {
    let mut names: Vec<&String> = want.keys().chain(got.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let w = want.get(name).copied().unwrap_or(0);
        let g = got.get(name).copied().unwrap_or(0);
        checks.push(Check {
            name: format!("{who}{name} seen {w} time(s)"),
            ok: w == g,
            detail: format!("seen {g} time(s)"),
        });
    }
}

/// A failing scenario whose card produced faster than its consumer took the data says so:
/// the overflows (EPIPE, lost bytes) are then the consumer's pace, not a driver bug, and
/// the author needs a lower card rate or a faster consumer mode (docs/scenarios.md,
/// "Rates a consumer sustains"). Added only to a run that already failed and saw gaps.
fn explain_outrun_consumers(sc: &Scenario, res: &mut ScenarioResult) {
    if res.checks.iter().all(|c| c.ok) {
        return;
    }
    let mut notes = Vec::new();
    for (i, (st, s)) in stream_results(sc, res).into_iter().enumerate() {
        let gaps = s
            .get("errno")
            .and_then(|m| m.get("EPIPE"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let rate = sc
            .cards
            .get(st.card)
            .and_then(|c| c.device.rate)
            .map_or(0, |r| r.0);
        let took = s.get("mb_per_s").and_then(Value::as_f64).unwrap_or(0.0) * 1e6;
        if let Some(note) = outrun_note(i, gaps, rate, took) {
            notes.push(note);
        }
    }
    res.checks.extend(notes);
}

/// The note for stream `i` when its consumer (`took` bytes/s) fell behind a card set to
/// `rate` bytes/s and saw `gaps` EPIPEs.
fn outrun_note(i: usize, gaps: u64, rate: u64, took: f64) -> Option<Check> {
    if gaps == 0 || rate == 0 || took <= 0.0 || took >= 0.9 * rate as f64 {
        return None;
    }
    Some(Check {
        name: format!("stream {i}: the consumer kept up with its card"),
        ok: false,
        detail: format!(
            "the card produced {:.1} MB/s, the consumer took {:.1} MB/s and saw {gaps} EPIPE: \
             it cannot keep up at this rate here; lower the card's rate or use a faster \
             consumer mode (docs/scenarios.md, \"Rates a consumer sustains\")",
            rate as f64 / 1e6,
            took / 1e6
        ),
    })
}

/// Checks the expectations against what the run measured.
fn check_expectations(ex: &Expect, res: &mut ScenarioResult, dmesg: &str) {
    let mut checks = Vec::new();
    let streams = &res.streams;
    for (i, s) in streams.iter().enumerate() {
        // A stream may end on purpose: a fatal errno the scenario expects (ENODEV after a
        // surprise removal) is checked by the errno counts below instead.
        let expected_fatal = s.get("errno").and_then(Value::as_object).is_some_and(|m| {
            m.keys()
                .any(|k| ex.errors.contains_key(k) && !RECOVERABLE.contains(&k.as_str()))
        });
        let fatal = s
            .get("fatal")
            .filter(|f| !f.is_null())
            .or_else(|| s.get("error"));
        if let Some(f) = fatal.filter(|_| !expected_fatal) {
            checks.push(Check {
                name: format!("stream {i} ends without a fatal error"),
                ok: false,
                detail: f.to_string(),
            });
        }
        let never_sent = s.get("signal").is_none();
        if let Some(sig) = s
            .get("signal_sent")
            .and_then(Value::as_str)
            .filter(|_| ex.all_faults_fire || !never_sent)
        {
            let bound = num(s, "exit_within_ms");
            let exit = s.get("exit_ms").and_then(Value::as_u64);
            checks.push(Check {
                name: format!(
                    "stream {i}: the consumer is gone within {bound} ms of SIG{}",
                    sig.to_uppercase()
                ),
                ok: exit.is_some_and(|ms| ms <= bound),
                detail: match (s.get("signal"), exit) {
                    (None, _) => "the consumer ended before the signal was due".into(),
                    (Some(_), Some(ms)) => format!("gone after {ms} ms"),
                    (Some(_), None) => "still there 30 s after the signal".into(),
                },
            });
        }
        if s.get("control").is_some() {
            // The second process's ioctls got answers the contract allows, and the
            // consumer met a session end (0) only where one of them ended the session.
            let faults: Vec<String> = ex
                .errors_allowed
                .iter()
                .chain(ex.errors.keys())
                .cloned()
                .collect();
            let verdict = super::control::judge(s, &faults);
            checks.push(Check {
                name: format!("stream {i}: the control actions met the contract"),
                ok: verdict.is_ok(),
                detail: verdict.unwrap_or_else(|e| e),
            });
        }
        if s.get("timed_out") == Some(&Value::Bool(true)) {
            checks.push(Check {
                name: format!("stream {i} finishes in time"),
                ok: false,
                detail: format!("timed out after {} bytes", num(s, "bytes")),
            });
        }
    }
    if let Some(min) = ex.min_throughput_mbps {
        for (i, s) in streams.iter().enumerate() {
            let mbps = s.get("mb_per_s").and_then(Value::as_f64).unwrap_or(0.0);
            checks.push(Check {
                name: format!("stream {i} throughput >= {min} MB/s"),
                ok: mbps >= min,
                detail: format!("{mbps:.1} MB/s"),
            });
        }
    }
    let verified: u64 = streams.iter().map(|s| num(s, "verified_bytes")).sum();
    if let Some(min) = ex.verified_bytes_min {
        checks.push(Check {
            name: format!("verified bytes >= {min}"),
            ok: verified >= min.0,
            detail: format!("{verified} bytes verified"),
        });
    }
    let mismatches: u64 = streams.iter().map(|s| num(s, "errors")).sum();
    checks.push(Check {
        name: format!("verification mismatches {}", ex.mismatches),
        ok: ex.mismatches.contains(mismatches),
        detail: format!("{mismatches} consumer chunk(s) failed verification"),
    });
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for s in streams {
        if let Some(m) = s.get("errno").and_then(Value::as_object) {
            for (k, v) in m {
                *seen.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    for name in &ex.errors_allowed {
        if !ex.errors.contains_key(name) {
            seen.remove(name);
        }
    }
    errno_counts(&ex.errors, &seen, "", &mut checks);
    for (name, range) in &ex.errors_at {
        let offsets: Vec<u64> = streams
            .iter()
            .filter_map(|s| s.get("errno_events").and_then(Value::as_array))
            .flatten()
            .filter(|e| e.get("errno").and_then(Value::as_str) == Some(name.as_str()))
            .map(|e| num(e, "offset"))
            .collect();
        // No occurrence at all is a failure here too: a placement was asked for.
        let ok = !offsets.is_empty() && offsets.iter().all(|&o| range.contains(o));
        checks.push(Check {
            name: format!("{name} at stream offset {range}"),
            ok,
            detail: if offsets.is_empty() {
                "never seen".into()
            } else {
                format!("at {offsets:?}")
            },
        });
    }
    if ex.recovered {
        for (i, s) in streams.iter().enumerate() {
            let ok = s.get("ok") == Some(&Value::Bool(true))
                || (num(s, "bytes") > 0
                    && s.get("fatal").is_none_or(Value::is_null)
                    && s.get("timed_out") != Some(&Value::Bool(true)));
            checks.push(Check {
                name: format!("stream {i} recovered and reached its byte count"),
                ok,
                detail: format!(
                    "{} bytes, fatal: {}",
                    num(s, "bytes"),
                    s.get("fatal").unwrap_or(&Value::Null)
                ),
            });
        }
    }
    for (key, range) in &ex.counters {
        let got = counter_key(key).and_then(|(who, idx, name)| {
            let all = match who {
                CounterOf::Card => &res.counters,
                CounterOf::Disk => &res.disk_counters,
                CounterOf::Stream => &res.streams,
            };
            all.get(idx)?.get(name)?.as_u64()
        });
        checks.push(Check {
            name: format!("{key} {range}"),
            ok: got.is_some_and(|g| range.contains(g)),
            detail: got.map_or_else(|| "no such counter".into(), |g| g.to_string()),
        });
    }
    for (text, range) in &ex.dmesg_lines {
        let n = dmesg.lines().filter(|l| l.contains(text.as_str())).count() as u64;
        checks.push(Check {
            name: format!("kernel log lines with {text:?} {range}"),
            ok: range.contains(n),
            detail: n.to_string(),
        });
    }
    checks.push(kernel_log_check(
        "kernel log clean (no WARN/BUG/lockdep)",
        dmesg,
        ex,
    ));
    res.checks.extend(checks);
}

/// The check that `log` has no kernel bug report but those the scenario allows
/// (`dmesg_allow`).
fn kernel_log_check(name: &str, log: &str, ex: &Expect) -> Check {
    let bad: Vec<String> = crate::dmesg::kernel_bug_reports(log)
        .into_iter()
        .filter(|l| !ex.dmesg_allow.iter().any(|a| l.contains(a.as_str())))
        .collect();
    Check {
        name: name.into(),
        ok: bad.is_empty(),
        detail: if bad.is_empty() {
            "clean".into()
        } else {
            bad.join(" | ")
        },
    }
}

/// The fault timeline: a thread that fires each fault when its time or stream offset comes.
struct Timeline {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
    state: Arc<Mutex<TimelineState>>,
}

#[derive(Default)]
struct TimelineState {
    pending: Vec<FaultSpec>,
    fired: Vec<Value>,
    errors: Vec<String>,
}

impl Timeline {
    fn start(
        faults: Vec<FaultSpec>,
        controls: Vec<PathBuf>,
        disks: Vec<PathBuf>,
        guest: GuestHandle,
        dir: PathBuf,
    ) -> Timeline {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(TimelineState {
            pending: faults,
            ..Default::default()
        }));
        let handle = if state.lock().map(|s| s.pending.is_empty()).unwrap_or(true) {
            None
        } else {
            let (stop, state) = (Arc::clone(&stop), Arc::clone(&state));
            Some(thread::spawn(move || {
                timeline_thread(&stop, &state, &controls, &disks, &guest, &dir)
            }))
        };
        Timeline {
            stop,
            handle,
            state,
        }
    }

    /// Stops the thread; returns (fired, never fired, injection errors).
    fn stop(mut self) -> (Vec<Value>, Vec<FaultSpec>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (
            std::mem::take(&mut s.fired),
            std::mem::take(&mut s.pending),
            std::mem::take(&mut s.errors),
        )
    }
}

fn timeline_thread(
    stop: &AtomicBool,
    state: &Mutex<TimelineState>,
    controls: &[PathBuf],
    disks: &[PathBuf],
    guest: &GuestHandle,
    dir: &Path,
) {
    let t0 = Instant::now();
    let transcript = dir.join("control.log");
    let mut conns: Vec<Option<ModelControl>> = controls.iter().map(|_| None).collect();
    while !stop.load(Ordering::SeqCst) {
        let pending = match state.lock() {
            Ok(s) => s.pending.clone(),
            Err(_) => return,
        };
        if pending.is_empty() {
            return;
        }
        let mut produced: BTreeMap<usize, u64> = BTreeMap::new();
        for (idx, f) in pending.iter().enumerate() {
            let due = match f.at {
                FaultAt::TimeMs(ms) => t0.elapsed() >= Duration::from_millis(ms),
                // Injected by the step loop, never given to the timeline.
                FaultAt::Step(_) => false,
                FaultAt::Bytes(b) => {
                    // Capture faults follow the bytes the card delivered, playback faults
                    // the bytes it received.
                    let (key, name) = match f.channel {
                        Channel::Capture => (f.card, "bytes"),
                        Channel::Playback => (f.card + 1000, "pb_bytes"),
                    };
                    let p = match produced.get(&key) {
                        Some(p) => *p,
                        None => {
                            let p = control(&mut conns, controls, f.card, &transcript)
                                .and_then(|c| c.counters())
                                .map(|c| num(&c, name))
                                .unwrap_or(0);
                            produced.insert(key, p);
                            p
                        }
                    };
                    p >= b.0
                }
            };
            if !due {
                continue;
            }
            let when = t0.elapsed().as_millis() as u64;
            let r = if f.inject.is_disk() {
                inject_disk(disks, f, &transcript)
            } else {
                inject(&mut conns, controls, f, guest, &transcript)
            };
            if let Ok(mut s) = state.lock() {
                s.pending.retain(|p| p != f);
                match r {
                    Ok(()) => s.fired.push(fired_record(
                        f,
                        when,
                        produced
                            .get(&match f.channel {
                                Channel::Capture => f.card,
                                Channel::Playback => f.card + 1000,
                            })
                            .copied(),
                    )),
                    Err(e) => s.errors.push(format!(
                        "injecting {} on card {}: {e:#}",
                        f.inject.name(),
                        f.card
                    )),
                }
            }
            let _ = idx;
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// What the result says of a fault that fired `when` ms after the steps started (at
/// stream offset `at_bytes`, for a fault that waited for one).
fn fired_record(f: &FaultSpec, when: u64, at_bytes: Option<u64>) -> Value {
    let mut v = json!({
        "fault": f.inject.name(), "card": f.card, "at_ms": when, "channel": f.channel,
        "at_bytes": at_bytes,
    });
    if let (FaultAt::Step(n), Some(o)) = (f.at, v.as_object_mut()) {
        o.insert("at_step".into(), json!(n));
    }
    v
}

/// A capture-disk fault, through the sink's control socket (docs/sink.md).
fn inject_disk(disks: &[PathBuf], f: &FaultSpec, transcript: &Path) -> Result<()> {
    let req = match f.inject {
        Fault::DiskWriteError { count } => {
            json!({"cmd": "inject", "fault": "write_error", "count": count})
        }
        Fault::DiskFull { at } => json!({"cmd": "inject", "fault": "disk_full", "at": at.0}),
        Fault::DiskBandwidth { bytes_per_s } => {
            json!({"cmd": "inject", "fault": "bandwidth", "bytes_per_s": bytes_per_s.0})
        }
        Fault::DiskLatency { us } => json!({"cmd": "inject", "fault": "latency", "us": us}),
        Fault::DiskStall { ms } => json!({"cmd": "inject", "fault": "stall", "ms": ms}),
        Fault::DiskFlushError { count } => {
            json!({"cmd": "inject", "fault": "flush_error", "count": count})
        }
        other => bail!("{} is not a disk fault", other.name()),
    };
    let path = disks
        .get(f.disk)
        .with_context(|| format!("no disk {}", f.disk))?;
    ModelControl::connect(path, Some(transcript))?.request(&req)?;
    Ok(())
}

fn control<'a>(
    conns: &'a mut [Option<ModelControl>],
    paths: &[PathBuf],
    card: usize,
    transcript: &Path,
) -> Result<&'a mut ModelControl> {
    let slot = conns.get_mut(card).context("no such card")?;
    if slot.is_none() {
        *slot = Some(ModelControl::connect(&paths[card], Some(transcript))?);
    }
    slot.as_mut().context("control connection")
}

/// acq-stream's `--pause-at N --pause-ms MS` (capture and playback alike), if a step
/// pauses.
fn pause_args(at: Option<Size>, ms: u64) -> Vec<String> {
    match at {
        Some(a) => vec![
            "--pause-at".into(),
            a.0.to_string(),
            "--pause-ms".into(),
            ms.to_string(),
        ],
        None => Vec::new(),
    }
}

fn inject(
    conns: &mut [Option<ModelControl>],
    paths: &[PathBuf],
    f: &FaultSpec,
    guest: &GuestHandle,
    transcript: &Path,
) -> Result<()> {
    let mut req = match f.inject {
        Fault::DiskWriteError { .. }
        | Fault::DiskFull { .. }
        | Fault::DiskBandwidth { .. }
        | Fault::DiskLatency { .. }
        | Fault::DiskStall { .. }
        | Fault::DiskFlushError { .. } => return inject_disk(&[], f, transcript),
        Fault::SurpriseRemoval => {
            // QMP device_del: the guest's ACPI hotplug driver unbinds the driver while
            // the stream runs (readers wake with ENODEV) and ejects the slot; QEMU then
            // removes the card. The model keeps serving its control socket.
            let qmp_log = transcript.with_file_name("qmp.log");
            return guest.unplug_card(f.card, &qmp_log, Duration::from_secs(60));
        }
        ref card_fault => card_fault
            .card_request()
            .context("a card fault without a control request")?,
    };
    if f.channel == Channel::Playback {
        if let Some(o) = req.as_object_mut() {
            o.insert("channel".into(), "playback".into());
        }
    }
    control(conns, paths, f.card, transcript)?.request(&req)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_dma_path_adds_to_what_the_scenario_asks() {
        let args = vec!["quiet".to_string()];
        assert_eq!(DmaPath::Viommu.apply(false, &args), (true, args.clone()));
        let (iommu, with) = DmaPath::Swiotlb.apply(true, &args);
        assert!(iommu, "swiotlb keeps a scenario's own IOMMU");
        assert_eq!(with, ["quiet", "swiotlb=force"]);
        // Not twice when the scenario asks for it already.
        assert_eq!(DmaPath::Swiotlb.apply(false, &with).1, with);
    }

    fn result_with(streams: Vec<Value>) -> ScenarioResult {
        ScenarioResult {
            name: "t".into(),
            file: "t.json".into(),
            passed: false,
            seconds: 0.0,
            accel: "tcg".into(),
            kernel: "test".into(),
            dma: None,
            error: None,
            checks: Vec::new(),
            streams,
            faults_fired: Vec::new(),
            counters: Vec::new(),
            disk_counters: Vec::new(),
            results: String::new(),
        }
    }

    #[test]
    fn a_consumer_slower_than_its_card_is_named_as_the_cause() {
        // 50 MB/s card, read() with verification took 22 MB/s and saw 90 gaps.
        let c = outrun_note(0, 90, 50_000_000, 22e6).expect("a note");
        assert!(!c.ok);
        assert!(
            c.detail.contains("50.0 MB/s") && c.detail.contains("22.0 MB/s"),
            "{}",
            c.detail
        );
        assert!(outrun_note(0, 0, 50_000_000, 22e6).is_none(), "no gaps");
        assert!(outrun_note(0, 90, 0, 22e6).is_none(), "an unlimited card");
        assert!(outrun_note(0, 3, 50_000_000, 48e6).is_none(), "kept up");
    }

    fn expect(json: &str) -> Expect {
        serde_json::from_str(json).expect("valid expect")
    }

    fn check<'a>(res: &'a ScenarioResult, prefix: &str) -> &'a Check {
        res.checks
            .iter()
            .find(|c| c.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no check named {prefix}...: {:?}", res.checks))
    }

    #[test]
    fn a_file_on_a_disk_is_verified_where_its_extents_lie() {
        // A 3-block file: file block 0 at disk block 5, file blocks 1-2 at disk block 1;
        // the stream starts at offset 4096 (the consumer's first segment).
        let (pattern, seed) = (1u32, 9u64);
        let mut disk = vec![0u8; 8 * 4096];
        let put = |disk: &mut Vec<u8>, at: usize, stream: u64, len: usize| {
            acq_guest::regs::pattern_fill(pattern, seed, stream, &mut disk[at..at + len]);
        };
        put(&mut disk, 5 * 4096, 4096, 4096);
        put(&mut disk, 4096, 8192, 8192);
        let dir = std::env::temp_dir().join(format!("acq-verify-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let store = dir.join("store.img");
        let result = json!({
            "bytes": 3 * 4096,
            "extents": [[0, 5 * 4096, 4096], [4096, 4096, 8192]],
            "segment_map": [[0, 4096]],
            "config": {"pattern": pattern, "seed": seed},
        });
        fs::write(&store, &disk).unwrap();
        let v = verify_file_on_disk(&result, &store).unwrap();
        assert_eq!(
            (num(&v, "verified"), num(&v, "mismatches")),
            (3 * 4096, 0),
            "{v}"
        );

        // One flipped bit in file block 2 (disk block 2) is found at its file offset.
        disk[2 * 4096 + 100] ^= 1;
        fs::write(&store, &disk).unwrap();
        let v = verify_file_on_disk(&result, &store).unwrap();
        assert_eq!(num(&v, "mismatches"), 1, "{v}");
        assert_eq!(num(&v, "first_mismatch"), 2 * 4096 + 100, "{v}");
        // Without extents there is nothing to verify: an error, not a pass.
        assert!(verify_file_on_disk(&json!({"bytes": 1}), &store).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_at_checks_every_occurrence_against_the_range() {
        let ex =
            expect(r#"{"errors": {"EIO": 2}, "errors_at": {"EIO": {"min": "16M", "max": "20M"}}}"#);
        let stream = |offsets: &[u64]| {
            let events: Vec<Value> = offsets
                .iter()
                .map(|o| json!({"errno": "EIO", "offset": o, "bytes": o}))
                .collect();
            json!({"errno": {"EIO": offsets.len()}, "errno_events": events, "bytes": 1})
        };

        let mut inside = result_with(vec![stream(&[17 << 20, 19 << 20])]);
        check_expectations(&ex, &mut inside, "");
        assert!(check(&inside, "EIO at stream offset").ok);
        assert!(check(&inside, "EIO seen 2").ok);

        // One occurrence too early is enough to fail.
        let mut early = result_with(vec![stream(&[1 << 20, 19 << 20])]);
        check_expectations(&ex, &mut early, "");
        let c = check(&early, "EIO at stream offset");
        assert!(!c.ok);
        assert!(c.detail.contains("1048576"), "{}", c.detail);

        // Never seen: the placement check fails as well as the count.
        let mut none = result_with(vec![stream(&[])]);
        check_expectations(&ex, &mut none, "");
        assert_eq!(check(&none, "EIO at stream offset").detail, "never seen");
        assert!(!check(&none, "EIO seen 2").ok);
    }
}

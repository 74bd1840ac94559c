//! `acq bench` / `make bench`: throughput of every consumer path, measured side by side in
//! one VM boot, with the in-guest peer (/dev/zero) and the host's memset/memcpy as yard
//! sticks, and the card spliced to a raw capture disk against a file on a disk. It reports; it asserts nothing (targets are printed with their ratios).
//!
//! Output: a table on stdout, `bench.json` and `bench.svg` (throughput against pipe size
//! per mode) in the results directory, and with `--update-docs` the table and plot in
//! `docs/performance.md` (between the `bench:begin`/`bench:end` markers).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::accel::AccelChoice;
use crate::control::ModelControl;
use crate::paths::Paths;
use crate::vm::{Card, Vm, VmConfig};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Bytes per measurement.
    pub bytes: u64,
    /// Accelerator.
    pub accel: AccelChoice,
    /// Results directory.
    pub results: PathBuf,
    /// Rewrite the table and plot in docs/performance.md.
    pub update_docs: bool,
    /// Pipe sizes for the splice sweep.
    pub pipe_sizes: Vec<u64>,
    /// Repetitions of each row: the table gives their median and spread.
    pub repeat: u32,
}

/// One measured run of the guest consumer.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Short label (`acq0 splice pipe=1M`).
    pub label: String,
    /// `acq0` or `zero`.
    pub source: String,
    /// `read`, `splice`, `mmap`.
    pub mode: String,
    /// Pipe size (splice), bytes.
    pub pipe_size: Option<u64>,
    /// Block size (card), bytes.
    pub block: Option<u64>,
    /// Interrupt moderation count (card).
    pub irq_count: Option<u64>,
    /// BAR2 streaming mode (card): no DMA, the driver copies each block out of BAR2.
    pub bar2: bool,
    /// Throughput, MB/s (10^6 bytes/s): the median repetition's; None when the mode is
    /// not supported.
    pub mb_per_s: Option<f64>,
    /// Throughput of each repetition, in the order measured.
    pub samples: Vec<f64>,
    /// Guest CPU seconds (user + system) per GiB, when the consumer reports them.
    pub cpu_s_per_gib: Option<f64>,
    /// Interrupts per GiB (model counter `irqs`).
    pub irqs_per_gib: Option<f64>,
    /// Trapped register accesses per GiB (model counters `reg_reads` + `reg_writes`).
    pub reg_accesses_per_gib: Option<f64>,
    /// Blocks per interrupt.
    pub blocks_per_irq: Option<f64>,
    /// Blocks per trapped register access.
    pub blocks_per_reg_access: Option<f64>,
    /// Raw model counter deltas over the run: (blocks, interrupts, register accesses).
    pub deltas: Option<(f64, f64, f64)>,
    /// Why there is no figure.
    pub note: Option<String>,
}

/// The host-side fill-rate comparison (no VM), from `acq-device bench`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFill {
    /// Block size, bytes.
    pub block: u64,
    /// Host memset, GB/s.
    pub memset_gbps: f64,
    /// Host memcpy, GB/s.
    pub memcpy_gbps: f64,
    /// The capture engine with the counter pattern, GB/s.
    pub engine_gbps: f64,
}

/// Everything one `acq bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When (UTC, RFC 3339).
    pub date: String,
    /// Accelerator the guest ran under, with the CPU model under TCG.
    pub accel: String,
    /// Guest kernel flavor (`bench`: no lock or memory debugging) and release.
    pub kernel: String,
    /// Host CPU model and count.
    pub machine: String,
    /// Bytes per measurement.
    pub bytes: u64,
    /// The guest runs.
    pub runs: Vec<Run>,
    /// The model's fill rate against memset/memcpy.
    pub model: Vec<ModelFill>,
    /// The targets, with the ratio measured and whether it was met.
    pub targets: Vec<Value>,
}

const GIB: f64 = (1u64 << 30) as f64;

/// Runs the whole benchmark.
pub fn run(paths: &Paths, opts: &BenchOptions) -> Result<Report> {
    fs::create_dir_all(&opts.results)?;
    let model = model_fill(paths).unwrap_or_else(|e| {
        eprintln!("bench: model fill rate not measured: {e:#}");
        Vec::new()
    });
    // Two capture disks for the raw-device vs file comparison (docs/sink.md): vda raw,
    // checked on the host (the card's defaults after load: counter, seed 0; every run is
    // a new session from stream offset 0, written at disk offset 0), vdb with an ext2 file
    // system (stored, sparse, not checked).
    let disk = |store: bool| crate::sink::DiskSpec {
        // The raw disk is written by stream position: room for overflow gaps when the
        // disk is slower than the card (sparse; an unstored disk keeps no data).
        size: (opts.bytes * if store { 1 } else { 4 } + (64 << 20)).next_multiple_of(1 << 20),
        block_size: 4096,
        pattern: "counter".into(),
        seed: 0,
        base: 0,
        store,
        verify: !store,
    };
    let cfg = VmConfig {
        accel: opts.accel,
        cards: vec![Card::Model { config: None }],
        modules: vec![paths.driver_module()],
        run_dir: opts.results.join("vm"),
        disks: vec![disk(false), disk(true)],
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(&cfg, paths)?;
    vm.sh_ok(
        "insmod /lib/modules/acq.ko && for i in $(seq 50); do [ -c /dev/acq0 ] && exit 0; sleep 0.1; done; exit 1",
        Duration::from_secs(60),
    )?;
    let control = vm.models[0].control.clone();
    let mut runs = Vec::new();
    let mut bench = |vm: &mut Vm, r: Spec| -> Result<()> {
        let mut reps = Vec::new();
        for _ in 0..opts.repeat.max(1) {
            let run = measure(vm, &control, opts.bytes, &r)?;
            // A mode that failed or is not supported is not tried again.
            let failed = run.mb_per_s.is_none();
            reps.push(run);
            if failed {
                break;
            }
        }
        let run = median_run(reps);
        eprintln!(
            "  {:<34} {}{}",
            run.label,
            run.mb_per_s
                .map(|m| format!("{m:8.1} MB/s"))
                .unwrap_or_else(|| run.note.clone().unwrap_or_default()),
            spread(&run.samples)
                .map(|(lo, hi)| format!("  ({lo:.1}-{hi:.1})"))
                .unwrap_or_default()
        );
        runs.push(run);
        Ok(())
    };
    eprintln!(
        "bench: {} per run, accelerator {}",
        human(opts.bytes),
        vm.accel.0
    );
    for mode in ["read", "splice", "mmap"] {
        bench(
            &mut vm,
            Spec::acq(mode, Some(1 << 20).filter(|_| mode == "splice")),
        )?;
    }
    // The same read twice as long: the difference is the steady state, without the
    // register accesses of session start and stop.
    let mut long = Spec::acq("read", None);
    long.scale = 2;
    bench(&mut vm, long)?;
    for mode in ["read", "splice"] {
        bench(
            &mut vm,
            Spec::zero(mode, Some(1 << 20).filter(|_| mode == "splice")),
        )?;
    }
    // The guest's memory copy bandwidth, for every path that copies.
    bench(
        &mut vm,
        Spec {
            source: MEMCPY,
            ..Spec::acq("memcpy", None)
        },
    )?;
    // The peer a user would pick instead: a file in the page cache (tmpfs), read with
    // read() (the ceiling for a copying read) and spliced (its pages lent to the pipe by
    // reference: the ceiling for lending DMA pages), by the same consumer.
    vm.sh_ok(
        &format!(
            "dd if=/dev/zero of={PAGE_CACHE_FILE} bs=1M count={} 2>/dev/null",
            opts.bytes.div_ceil(1 << 20)
        ),
        Duration::from_secs(300),
    )?;
    for mode in ["read", "splice"] {
        bench(
            &mut vm,
            Spec::file(mode, Some(1 << 20).filter(|_| mode == "splice")),
        )?;
    }
    vm.sh_ok(&format!("rm -f {PAGE_CACHE_FILE}"), Duration::from_secs(60))?;
    // Playback (host -> card, as fast as the data comes), the card verifying every byte
    // of the pattern the guest generates: write() copies into the bounce pages, splice()
    // of a pipe a thread writes (one copy, into the pipe), vmsplice() of user buffers
    // (no copy at all: the card reads the writer's pages, each reused once released).
    for mode in ["write", "splice", "vmsplice"] {
        bench(&mut vm, Spec::play(mode))?;
    }
    // Card to card: the capture ring shared as a dma-buf with the playback channel (the
    // card reads the pages it wrote, no CPU copy) against read() then write() through a
    // buffer, the card verifying every byte either way.
    for mode in ["dma-buf", "read+write"] {
        bench(&mut vm, Spec::share(mode))?;
    }
    for &p in &opts.pipe_sizes {
        bench(&mut vm, Spec::acq("splice", Some(p)))?;
        bench(&mut vm, Spec::zero("splice", Some(p)))?;
    }
    for block in [1024u64, 2048, 4096] {
        let mut s = Spec::acq("splice", Some(1 << 20));
        s.block = Some(block);
        bench(&mut vm, s)?;
    }
    for irq in [1u64, 4, 16, 64] {
        let mut s = Spec::acq("read", None);
        s.irq_count = Some(irq);
        bench(&mut vm, s)?;
    }
    // Raw disk against a file on it, side by side (splice, 1 MiB pipe): buffered (each
    // piece written back and waited for, so that errors are seen per piece), O_DIRECT,
    // and a file on ext2 (page cache, fsync at the end).
    vm.sh_ok(
        "mke2fs -q -b 4096 /dev/vdb && mkdir -p /mnt/bench && mount -t ext2 /dev/vdb /mnt/bench",
        Duration::from_secs(120),
    )?;
    for (sink, direct) in [(RAW_DISK, false), (RAW_DISK, true), (DISK_FILE, false)] {
        let mut s = Spec::acq("splice", Some(1 << 20));
        s.sink = Some(sink);
        s.direct = direct;
        // The driver's default moderation, not the sweep's last value.
        s.irq_count = Some(16);
        bench(&mut vm, s)?;
        if sink == DISK_FILE {
            vm.sh_ok(&format!("rm -f {DISK_FILE}"), Duration::from_secs(60))?;
        }
    }
    vm.sh_ok("umount /mnt/bench", Duration::from_secs(60))?;
    if let Some(c) = vm.sinks.first().and_then(|s| s.counters().ok()) {
        eprintln!(
            "  raw disk check: {} bytes verified, {} mismatched",
            c.get("bytes_verified").and_then(Value::as_u64).unwrap_or(0),
            c.get("bytes_mismatched")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        );
    }
    // BAR2 streaming mode (docs/driver.md): last, because the mode (and the 128-entry ring
    // the default 1 MiB BAR2 holds) persists in the card's configuration.
    for mode in ["read", "splice"] {
        let mut s = Spec::acq(mode, Some(1 << 20).filter(|_| mode == "splice"));
        s.bar2 = true;
        bench(&mut vm, s)?;
    }
    let accel = match vm.accel.0 {
        crate::accel::Accel::Tcg => format!("tcg, -cpu {}", crate::vm::TCG_CPU),
        a => a.to_string(),
    };
    let kernel = format!("{} {}", paths.kernel_flavor, vm.kernel);
    vm.shutdown(Duration::from_secs(60))?;
    let targets = targets(&runs, &model);
    Ok(Report {
        date: utc_now(),
        accel,
        kernel,
        machine: machine(),
        bytes: opts.bytes,
        runs,
        model,
        targets,
    })
}

/// The raw capture disk and the file on the other one, for the disk rows.
const RAW_DISK: &str = "/dev/vda";
const DISK_FILE: &str = "/mnt/bench/capture";

/// What to run.
struct Spec {
    /// Multiple of the benchmark's byte count.
    scale: u64,
    source: &'static str,
    mode: &'static str,
    pipe: Option<u64>,
    block: Option<u64>,
    irq_count: Option<u64>,
    /// `--sink` (a disk or a file on one); `None`: /dev/null.
    sink: Option<&'static str>,
    /// `--direct`.
    direct: bool,
    /// `--bar2` (BAR2 streaming mode, 128-entry ring).
    bar2: bool,
}

impl Spec {
    fn acq(mode: &'static str, pipe: Option<u64>) -> Spec {
        Spec {
            scale: 1,
            source: "acq0",
            mode,
            pipe,
            block: None,
            irq_count: None,
            sink: None,
            direct: false,
            bar2: false,
        }
    }
    fn zero(mode: &'static str, pipe: Option<u64>) -> Spec {
        Spec {
            source: "zero",
            ..Spec::acq(mode, pipe)
        }
    }
    fn file(mode: &'static str, pipe: Option<u64>) -> Spec {
        Spec {
            source: "tmpfs",
            ..Spec::acq(mode, pipe)
        }
    }
    /// Into the card's playback channel (`source` names the device written); the pipe
    /// modes through a 1 MiB pipe (with the default 64 KiB, the system calls per byte,
    /// not the data path, set the pace: 75 against 154 MB/s for splice in one run).
    fn play(mode: &'static str) -> Spec {
        Spec {
            source: PLAYBACK,
            ..Spec::acq(mode, Some(1 << 20).filter(|_| mode != "write"))
        }
    }
    /// Card to card: `dma-buf` (the ring exported and imported, no CPU copy) or
    /// `read+write` (through a buffer, two copies).
    fn share(mode: &'static str) -> Spec {
        Spec {
            source: SHARE,
            ..Spec::acq(mode, None)
        }
    }
    fn label(&self) -> String {
        let mut l = format!("{} {}", self.source, self.mode);
        if let Some(p) = self.pipe {
            let _ = write!(l, " pipe={}", human(p));
        }
        if let Some(b) = self.block {
            let _ = write!(l, " block={b}");
        }
        if let Some(i) = self.irq_count {
            let _ = write!(l, " irq_count={i}");
        }
        if self.bar2 {
            l.push_str(" bar2");
        }
        if self.scale != 1 {
            let _ = write!(l, " x{}", self.scale);
        }
        match self.sink {
            Some(RAW_DISK) => l.push_str(" > raw disk"),
            Some(_) => l.push_str(" > ext2 file"),
            None => {}
        }
        if self.direct {
            l.push_str(" O_DIRECT");
        }
        l
    }
}

/// The repetitions of one row as one: the median repetition (the lower of the two middle
/// ones for an even count) with every repetition's throughput in `samples`; a repetition
/// without a figure (failed, not supported) stands for the row.
fn median_run(mut reps: Vec<Run>) -> Run {
    let samples: Vec<f64> = reps.iter().filter_map(|r| r.mb_per_s).collect();
    if let Some(i) = reps.iter().position(|r| r.mb_per_s.is_none()) {
        let mut failed = reps.swap_remove(i);
        failed.samples = samples;
        return failed;
    }
    reps.sort_by(|a, b| {
        a.mb_per_s
            .partial_cmp(&b.mb_per_s)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mid = reps.len().saturating_sub(1) / 2;
    let mut run = reps.swap_remove(mid);
    run.samples = samples;
    run
}

/// The lowest and highest of several repetitions (None for fewer than two).
fn spread(samples: &[f64]) -> Option<(f64, f64)> {
    (samples.len() > 1).then(|| {
        samples
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            })
    })
}

/// The page-cache peer's file, on the guest's tmpfs /tmp.
const PAGE_CACHE_FILE: &str = "/tmp/peer.dat";
/// The playback rows' `source`: the device they write.
const PLAYBACK: &str = "acq0-out";
/// The guest memcpy row's `source`.
const MEMCPY: &str = "guest";
/// The card-to-card rows' `source`: card 0's capture played by its own playback channel
/// (`acq-share`; docs/driver.md "Sharing the ring with another device").
const SHARE: &str = "acq0 -> acq0-out";

fn measure(vm: &mut Vm, control: &Path, bytes: u64, s: &Spec) -> Result<Run> {
    let mut argv: Vec<String> = match s.source {
        SHARE => ["acq-share", "--from", "/dev/acq0", "--to", "/dev/acq0-out"]
            .map(String::from)
            .into(),
        // The yard stick of every copying path: the guest's own memcpy.
        MEMCPY => vec!["acq-ctl".into(), "memcpy".into()],
        _ => vec!["acq-stream".into(), "--mode".into(), s.mode.into()],
    };
    match s.source {
        MEMCPY => {}
        SHARE if s.mode == "read+write" => argv.push("--copy".into()),
        SHARE => {}
        "zero" => argv.extend(["--raw".into(), "--device".into(), "/dev/zero".into()]),
        "tmpfs" => argv.extend(["--raw".into(), "--device".into(), PAGE_CACHE_FILE.into()]),
        PLAYBACK => argv.extend([
            "--direction".into(),
            "out".into(),
            "--device".into(),
            "/dev/acq0-out".into(),
            "--verify".into(),
        ]),
        _ => argv.extend(["--device".into(), "/dev/acq0".into()]),
    }
    argv.extend(["--bytes".into(), (bytes * s.scale).to_string()]);
    if let Some(p) = s.pipe {
        argv.extend(["--pipe-size".into(), p.to_string()]);
    }
    if let Some(b) = s.block {
        argv.extend(["--block".into(), b.to_string()]);
    }
    if let Some(i) = s.irq_count {
        argv.extend(["--irq-count".into(), i.to_string()]);
    }
    if let Some(k) = s.sink {
        argv.extend(["--sink".into(), k.into()]);
    }
    if s.direct {
        argv.push("--direct".into());
    }
    if s.bar2 {
        // The largest ring the default 1 MiB BAR2 holds with 4 KiB blocks.
        argv.extend(["--bar2".into(), "--ring-log2".into(), "7".into()]);
    }
    let before = ModelControl::connect(control, None)?.counters()?;
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = vm.exec(&argv_ref, Duration::from_secs(600))?;
    let after = ModelControl::connect(control, None)?.counters()?;
    let mut run = Run {
        label: s.label(),
        source: s.source.into(),
        mode: s.mode.into(),
        pipe_size: s.pipe,
        block: s.block,
        irq_count: s.irq_count,
        bar2: s.bar2,
        mb_per_s: None,
        samples: Vec::new(),
        cpu_s_per_gib: None,
        irqs_per_gib: None,
        reg_accesses_per_gib: None,
        blocks_per_irq: None,
        blocks_per_reg_access: None,
        deltas: None,
        note: None,
    };
    let result: Option<Value> = out
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok());
    let Some(v) = result.filter(|v: &Value| v.get("ok") == Some(&Value::Bool(true))) else {
        let why = out.stderr.lines().next().unwrap_or("").trim().to_owned();
        run.note = Some(if out.status == 2 {
            format!("not supported ({why})")
        } else {
            format!("failed (status {}): {why}", out.status)
        });
        return Ok(run);
    };
    let got = v.get("bytes").and_then(Value::as_u64).unwrap_or(0) as f64;
    run.mb_per_s = v.get("mb_per_s").and_then(Value::as_f64);
    run.samples = run.mb_per_s.into_iter().collect();
    let cpu = ["cpu_user_s", "cpu_sys_s"]
        .iter()
        .map(|k| v.get(*k).and_then(Value::as_f64))
        .sum::<Option<f64>>();
    run.cpu_s_per_gib = cpu.filter(|_| got > 0.0).map(|c| c * GIB / got);
    if s.source == "acq0" && got > 0.0 {
        let d = |k: &str| {
            after.get(k).and_then(Value::as_u64).unwrap_or(0) as f64
                - before.get(k).and_then(Value::as_u64).unwrap_or(0) as f64
        };
        let irqs = d("irqs");
        let regs = d("reg_reads") + d("reg_writes");
        let blocks = d("blocks");
        run.irqs_per_gib = Some(irqs * GIB / got);
        run.reg_accesses_per_gib = Some(regs * GIB / got);
        run.blocks_per_irq = (irqs > 0.0).then(|| blocks / irqs);
        run.blocks_per_reg_access = (regs > 0.0).then(|| blocks / regs);
        run.deltas = Some((blocks, irqs, regs));
    }
    Ok(run)
}

/// `acq-device bench` on the host: the engine's fill rate next to memset and memcpy.
fn model_fill(paths: &Paths) -> Result<Vec<ModelFill>> {
    let out = Command::new(&paths.device_model)
        .args([
            "bench",
            "--patterns",
            "counter",
            "--seconds",
            "1",
            "--repeat",
            "3",
        ])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .with_context(|| format!("running {} bench", paths.device_model.display()))?;
    if !out.status.success() {
        bail!(
            "acq-device bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse_model_bench(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses the text `acq-device bench` prints: a `block N B x ...` header per block size,
/// then `host memset  X GB/s`, `host memcpy ...`, `engine counter ...` lines.
pub fn parse_model_bench(text: &str) -> Vec<ModelFill> {
    let mut out = Vec::new();
    let mut cur: Option<ModelFill> = None;
    let gbps = |l: &str| -> Option<f64> {
        let mut it = l.split_whitespace();
        let i = it.position(|w| w == "GB/s")?;
        l.split_whitespace().nth(i.checked_sub(1)?)?.parse().ok()
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("block ") {
            if let Some(c) = cur.take() {
                out.push(c);
            }
            let block = rest
                .split_whitespace()
                .next()
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            cur = Some(ModelFill {
                block,
                memset_gbps: 0.0,
                memcpy_gbps: 0.0,
                engine_gbps: 0.0,
            });
        } else if let Some(c) = cur.as_mut() {
            let v = gbps(l).unwrap_or(0.0);
            if l.starts_with("host memset") {
                c.memset_gbps = v;
            } else if l.starts_with("host memcpy") {
                c.memcpy_gbps = v;
            } else if l.starts_with("engine counter") {
                c.engine_gbps = v;
            }
        }
    }
    out.extend(cur);
    out
}

fn find<'a>(runs: &'a [Run], label: &str) -> Option<&'a Run> {
    runs.iter().find(|r| r.label == label)
}

fn ratio_target(name: &str, num: Option<f64>, den: Option<f64>, min: f64) -> Value {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => {
            json!({"target": name, "ratio": n / d, "goal": min, "met": n / d >= min})
        }
        _ => {
            json!({"target": name, "ratio": null, "goal": min, "met": null, "note": "not measured"})
        }
    }
}

fn targets(runs: &[Run], model: &[ModelFill]) -> Vec<Value> {
    let mbps = |l: &str| find(runs, l).and_then(|r| r.mb_per_s);
    // Steady state: the marginal cost between a run and one twice as long.
    let marginal = |i: usize| -> Option<f64> {
        let a = find(runs, "acq0 read")?.deltas?;
        let b = find(runs, "acq0 read x2")?.deltas?;
        let (db, dx) = (b.0 - a.0, [b.1 - a.1, b.2 - a.2][i]);
        (db > 0.0).then(|| if dx <= 0.0 { f64::INFINITY } else { db / dx })
    };
    let mut t = vec![
        ratio_target(
            "splice /dev/acq0 >= splice /dev/zero",
            mbps("acq0 splice pipe=1M"),
            mbps("zero splice pipe=1M"),
            1.0,
        ),
        ratio_target(
            "read /dev/acq0 >= 0.5 x read /dev/zero",
            mbps("acq0 read"),
            mbps("zero read"),
            0.5,
        ),
        ratio_target(
            "splice /dev/acq0 >= 0.8 x splice of a page-cache file",
            mbps("acq0 splice pipe=1M"),
            mbps("tmpfs splice pipe=1M"),
            0.8,
        ),
        ratio_target(
            "read /dev/acq0 >= 0.8 x read of a tmpfs file",
            mbps("acq0 read"),
            mbps("tmpfs read"),
            0.8,
        ),
        ratio_target(
            "splice > read on /dev/acq0",
            mbps("acq0 splice pipe=1M"),
            mbps("acq0 read"),
            1.0,
        ),
        ratio_target(
            "<= 1 trapped register access per 64 blocks (steady state)",
            marginal(1),
            Some(64.0),
            1.0,
        ),
        ratio_target(
            "<= 1 interrupt per 16 blocks (steady state)",
            marginal(0),
            Some(16.0),
            1.0,
        ),
    ];
    // Lending user memory to the card (vmsplice) against copying it (write()).
    t.push(ratio_target(
        "vmsplice playback >= write() playback",
        mbps("acq0-out vmsplice pipe=1M"),
        mbps("acq0-out write"),
        1.0,
    ));
    // Sharing a buffer between devices against copying it through the CPU.
    t.push(ratio_target(
        "card to card by dma-buf >= read()+write()",
        mbps("acq0 -> acq0-out dma-buf"),
        mbps("acq0 -> acq0-out read+write"),
        1.0,
    ));
    // The seed's comparison: the raw device against a file system on it.
    t.push(ratio_target(
        "splice to raw disk O_DIRECT >= splice to an ext2 file",
        mbps("acq0 splice pipe=1M irq_count=16 > raw disk O_DIRECT"),
        mbps("acq0 splice pipe=1M irq_count=16 > ext2 file"),
        1.0,
    ));
    t.push(ratio_target(
        "splice to raw disk, buffered >= splice to an ext2 file",
        mbps("acq0 splice pipe=1M irq_count=16 > raw disk"),
        mbps("acq0 splice pipe=1M irq_count=16 > ext2 file"),
        1.0,
    ));
    if let Some(m) = model.iter().max_by_key(|m| m.block) {
        t.push(ratio_target(
            &format!(
                "model fill >= 0.5 x host memset ({} KiB blocks)",
                m.block / 1024
            ),
            Some(m.engine_gbps),
            Some(m.memset_gbps),
            0.5,
        ));
    }
    t
}

/// The human table (also what goes into docs/performance.md).
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} | accelerator {} | kernel {} | {} | {} per run\n",
        r.date,
        r.accel,
        r.kernel,
        r.machine,
        human(r.bytes)
    );
    let _ = writeln!(
        s,
        "| run | MB/s (median) | min-max | CPU s/GiB | IRQs/GiB | blocks/IRQ | reg accesses/GiB |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    for run in &r.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            run.label,
            run.mb_per_s.map_or_else(
                || run.note.clone().unwrap_or("-".into()),
                |m| format!("{m:.1}")
            ),
            spread(&run.samples).map_or("-".into(), |(lo, hi)| format!("{lo:.0}-{hi:.0}")),
            f(run.cpu_s_per_gib, 2),
            f(run.irqs_per_gib, 0),
            f(run.blocks_per_irq, 1),
            f(run.reg_accesses_per_gib, 1)
        );
    }
    if !r.model.is_empty() {
        let _ = writeln!(s, "\n| model fill (host, no VM) | memset GB/s | memcpy GB/s | engine GB/s | engine / memset |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for m in &r.model {
            let _ = writeln!(
                s,
                "| {} KiB blocks | {:.2} | {:.2} | {:.2} | {:.0}% |",
                m.block / 1024,
                m.memset_gbps,
                m.memcpy_gbps,
                m.engine_gbps,
                if m.memset_gbps > 0.0 {
                    100.0 * m.engine_gbps / m.memset_gbps
                } else {
                    0.0
                }
            );
        }
    }
    let _ = writeln!(s, "\n| target | ratio | met |");
    let _ = writeln!(s, "|---|---:|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            t["target"].as_str().unwrap_or(""),
            t["ratio"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.2}")),
            match t["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            }
        );
    }
    s
}

/// Throughput against pipe size, one line per source, as SVG.
pub fn plot(r: &Report, out: &Path) -> Result<()> {
    use plotters::prelude::*;
    /// (source, colour, (pipe KiB, MB/s) points)
    type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);
    let series: Vec<Series> = ["acq0", "zero"]
        .iter()
        .zip([RGBColor(200, 40, 40), RGBColor(40, 80, 200)])
        .map(|(src, color)| {
            let mut pts: Vec<(f64, f64)> = r
                .runs
                .iter()
                .filter(|x| x.source == *src && x.mode == "splice" && x.block.is_none() && !x.bar2)
                .filter_map(|x| Some((x.pipe_size? as f64 / 1024.0, x.mb_per_s?)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts.dedup_by(|a, b| a.0 == b.0);
            (*src, color, pts)
        })
        .collect();
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .chain(r.runs.iter().filter_map(|x| x.mb_per_s))
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("plot: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("splice throughput vs pipe size ({}, {})", r.accel, r.date),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((48f64..3072f64).log_scale(), 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("pipe size (KiB)")
        .y_desc("MB/s")
        .draw()
        .map_err(e)?;
    for (src, color, pts) in &series {
        let name = if *src == "acq0" {
            "splice /dev/acq0"
        } else {
            "splice /dev/zero (peer)"
        };
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(e)?;
    }
    // Non-splice modes have no pipe: horizontal references.
    for (label, color) in [
        ("acq0 read", BLACK),
        ("acq0 mmap", RGBColor(30, 150, 60)),
        ("zero read", RGBColor(120, 120, 120)),
    ] {
        if let Some(m) = find(&r.runs, label).and_then(|x| x.mb_per_s) {
            chart
                .draw_series(LineSeries::new(
                    vec![(48.0, m), (3072.0, m)],
                    color.stroke_width(1),
                ))
                .map_err(e)?
                .label(format!("{label} (no pipe)"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Rewrites the part of `doc` between the bench markers.
pub fn update_doc(doc: &Path, table: &str) -> Result<()> {
    let text = fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} ... {END} markers", doc.display());
    };
    let new = format!(
        "{}{BEGIN}\n\n{table}\n![splice throughput against pipe size](performance.svg)\n\n{}",
        &text[..b],
        &text[e..]
    );
    fs::write(doc, new)?;
    Ok(())
}

fn human(b: u64) -> String {
    crate::scenario::format::Size(b).to_string()
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {n} host CPUs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_bench_text_parses() {
        let text = "block 65536 B x 256 buffers (16384 KiB working set)\n  host memset            5.92 GB/s\n  host memcpy            5.51 GB/s\n  generate counter       5.83 GB/s   98.5% of memset\n  engine counter         1.79 GB/s   30.3% of memset   32.5% of memcpy\nblock 4096 B x 256 buffers\n  host memset 40.0 GB/s\n  engine counter 10.0 GB/s\n";
        let m = parse_model_bench(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].block, 65536);
        assert!((m[0].memset_gbps - 5.92).abs() < 1e-9);
        assert!((m[0].memcpy_gbps - 5.51).abs() < 1e-9);
        assert!((m[0].engine_gbps - 1.79).abs() < 1e-9);
        assert_eq!(m[1].block, 4096);
        assert!((m[1].engine_gbps - 10.0).abs() < 1e-9);
    }

    #[test]
    fn repetitions_give_the_median_run_and_keep_every_figure() {
        let mk = |mbps: Option<f64>, note: Option<&str>| Run {
            label: "acq0 read".into(),
            source: String::new(),
            mode: String::new(),
            pipe_size: None,
            block: None,
            irq_count: None,
            bar2: false,
            mb_per_s: mbps,
            samples: mbps.into_iter().collect(),
            cpu_s_per_gib: mbps.map(|m| 1000.0 / m),
            irqs_per_gib: None,
            reg_accesses_per_gib: None,
            blocks_per_irq: None,
            blocks_per_reg_access: None,
            deltas: None,
            note: note.map(Into::into),
        };
        let r = median_run(vec![
            mk(Some(379.0), None),
            mk(Some(550.0), None),
            mk(Some(500.0), None),
        ]);
        assert_eq!(r.mb_per_s, Some(500.0));
        assert_eq!(r.cpu_s_per_gib, Some(2.0), "the median run's own figures");
        assert_eq!(r.samples, [379.0, 550.0, 500.0]);
        assert_eq!(spread(&r.samples), Some((379.0, 550.0)));
        let even = median_run(vec![mk(Some(4.0), None), mk(Some(2.0), None)]);
        assert_eq!(even.mb_per_s, Some(2.0));
        let failed = median_run(vec![mk(Some(4.0), None), mk(None, Some("failed"))]);
        assert_eq!(failed.mb_per_s, None);
        assert_eq!(failed.note.as_deref(), Some("failed"));
        assert_eq!(spread(&[1.0]), None);
    }

    #[test]
    fn targets_report_ratios_and_unmeasured() {
        let mk = |label: &str, mbps: Option<f64>| Run {
            label: label.into(),
            source: String::new(),
            mode: String::new(),
            pipe_size: None,
            block: None,
            irq_count: None,
            bar2: false,
            mb_per_s: mbps,
            samples: mbps.into_iter().collect(),
            cpu_s_per_gib: None,
            irqs_per_gib: None,
            reg_accesses_per_gib: None,
            blocks_per_irq: Some(32.0),
            blocks_per_reg_access: Some(1000.0),
            deltas: None,
            note: None,
        };
        let mut runs = vec![mk("acq0 read", Some(50.0)), mk("zero read", Some(200.0))];
        runs[0].deltas = Some((1000.0, 50.0, 40.0));
        let mut long = mk("acq0 read x2", Some(50.0));
        long.deltas = Some((2000.0, 100.0, 40.0));
        runs.push(long);
        let t = targets(&runs, &[]);
        let read = t
            .iter()
            .find(|v| v["target"].as_str().unwrap().starts_with("read"))
            .unwrap();
        assert_eq!(read["ratio"].as_f64(), Some(0.25));
        assert_eq!(read["met"], false);
        let splice = &t[0];
        assert!(splice["met"].is_null());
        let irq = t
            .iter()
            .find(|v| v["target"].as_str().unwrap().contains("interrupt"))
            .unwrap();
        assert_eq!(irq["met"], true);
    }
}

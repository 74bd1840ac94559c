//! `acq bench` / `make bench`: throughput of every consumer path, measured side by side in
//! one VM boot, with the in-guest peer (/dev/zero) and the host's memset/memcpy as yard
//! sticks, and the card spliced to a raw capture disk against a file on a disk. It reports; it asserts nothing (targets are printed with their ratios).
//!
//! Output: a table on stdout, `bench.json` and `bench.svg` (throughput against pipe size
//! per mode) in the results directory, and with `--update-docs` the table and plot in
//! `docs/performance.md` (between the `bench:begin`/`bench:end` markers).
//!
//! Inside: `specs` (each row: the path or peer, its guest command, one measured run),
//! `model` (the model's fill against memset/memcpy), `targets` (the ratios promised),
//! `report` (table, plot, docs).

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

mod specs;
use specs::*;
mod model;
pub use model::*;
mod targets;
use targets::*;
mod report;
pub use report::*;
mod scaling;
pub use scaling::ScaleRun;
#[cfg(test)]
mod tests;

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
    /// Several streams at once (cards side by side, capture and playback on one card).
    pub scaling: Vec<ScaleRun>,
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
    let disk = |store: bool| crate::disks::DiskSpec {
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
    if let Some(c) = vm.disk_servers.first().and_then(|s| s.disk_counters().ok()) {
        eprintln!(
            "  raw disk check: {} bytes verified, {} mismatched",
            c.data.bytes_verified, c.data.bytes_mismatched
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
    let scaling = scaling::run(paths, opts).unwrap_or_else(|e| {
        eprintln!("bench: scaling not measured: {e:#}");
        Vec::new()
    });
    let targets = targets(&runs, &model, &scaling);
    Ok(Report {
        date: utc_now(),
        accel,
        kernel,
        machine: machine(),
        bytes: opts.bytes,
        runs,
        model,
        scaling,
        targets,
    })
}

/// The repetitions of one row as one: the median repetition (the lower of the two middle
/// ones for an even count) with every repetition's throughput in `samples`; a repetition
/// without a figure (failed, not supported) stands for the row.
fn median_run(mut reps: Vec<Run>) -> Run {
    let samples: Vec<f64> = reps.iter().filter_map(|r| r.mb_per_s).collect();
    if let Some(i) = reps.iter().position(|r| r.mb_per_s.is_none()) {
        // No figure, and no spread of the repetitions before the one that failed.
        let mut failed = reps.swap_remove(i);
        failed.samples = Vec::new();
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

//! `acq`: the pcie-acq harness CLI.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use acq::accel::AccelChoice;
use acq::paths::{KernelFlavor, Paths};
use acq::signals;
use acq::vm::{Card, Vm, VmConfig};
use acq_wire::agent::Stream;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

/// The pcie-acq harness: boots the guest VM with virtual acquisition cards and runs
/// commands and scenarios in it.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot the guest, print its status, run guest commands (or a shell), shut it down.
    ///
    /// With neither --exec nor a trailing command, the guest boots, reports kernel,
    /// accelerator and boot time, and powers off. The exit status is the first failing
    /// guest command's (or 0).
    Vm(VmArgs),
    /// Run scenario files: boot a VM per scenario, run its steps and faults, check its
    /// expectations. Prints a table; writes summary.json, junit.xml and per-scenario logs
    /// under --results. Exit status 1 if any scenario fails.
    Run(RunArgs),
    /// Measure throughput of every consumer path side by side in one VM boot (make bench):
    /// read/splice/mmap from /dev/acq0 against the same consumer on /dev/zero, pipe and
    /// block sizes, interrupt moderation, register accesses, CPU time, splice to a raw
    /// capture disk (buffered, O_DIRECT) against a file on ext2 on a disk, and the model's
    /// fill rate against host memset/memcpy. Reports; asserts nothing.
    Bench(BenchArgs),
    /// Measure the suite's power: plant each bug of a catalogue (tests/mutants/*.toml) in
    /// a copy of the driver, build it, and run the scenarios until one fails (caught) or
    /// all pass (survived). Prints the table and the score; exit status 1 if the score is
    /// below --min-score or a mutant no longer applies or builds (docs/explore.md).
    Mutants(MutantsArgs),
    /// Draw random scenarios from a seed (cards, every consumer system call, playback,
    /// signals, faults), run each, check the invariants every scenario must meet, and
    /// shrink a failing draw into a small scenario file under RESULTS/found/. Exit status 1
    /// if any draw failed (docs/explore.md).
    Explore(ExploreArgs),
    /// One long-lived guest (the debug kernel by default) and many cycles of load, stream
    /// with a consumer drawn from the system calls, a random card fault, pool check, unload;
    /// kmemleak at the end. Writes soak.json; exit status 1 on any failed cycle, missing
    /// pool page, kernel report or leak (make soak).
    Soak(SoakArgs),
    /// Validate scenario files without running them (exit 1 if any is malformed).
    Check {
        /// Scenario files (JSON, docs/scenarios.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the scenario format (docs/scenario.schema.json).
    Schema,
}

#[derive(Args)]
struct BenchArgs {
    /// Bytes per measurement (K, M, G suffixes).
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    bytes: u64,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Where bench.json and bench.svg go.
    #[arg(long, default_value = "results/bench")]
    results: PathBuf,
    /// Write the table and plot into docs/performance.md (and docs/performance.svg).
    #[arg(long)]
    update_docs: bool,
    /// Pipe sizes for the splice sweep.
    #[arg(long, value_delimiter = ',', default_value = "64K,128K,256K,512K,1M,2M", value_parser = parse_size)]
    pipe_sizes: Vec<u64>,
    /// Guest kernel flavor: test, debug (KASAN, kmemleak) or bench (no debugging).
    #[arg(long, value_enum, default_value_t = KernelFlavor::Test)]
    kernel_flavor: KernelFlavor,
    /// Repetitions of each row (the table gives their median and spread).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeat: u32,
}

fn parse_size(s: &str) -> Result<u64, String> {
    acq::scenario::format::Size::parse(s).map(|s| s.0)
}

#[derive(Args)]
struct RunArgs {
    /// Scenario files (JSON, docs/scenarios.md); directories are searched for *.json.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Where reports and per-scenario logs go.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Run this many scenarios at once, each in its own VM.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    jobs: u32,
    /// Run only shard I of N (1-based, e.g. 2/4): scenarios are split by sorted position.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Override every scenario's accelerator.
    #[arg(long, value_enum)]
    accel: Option<AccelChoice>,
    /// Show the guest tools' progress while streaming.
    #[arg(long, short)]
    verbose: bool,
    /// Load this kernel module instead of driver/acq.ko.
    #[arg(long, value_name = "KO")]
    driver: Option<PathBuf>,
    /// Guest kernel flavor: test (the default), debug (KASAN, kmemleak) or bench
    /// (no debugging); `make kernel-FLAVOR driver-FLAVOR` builds it.
    #[arg(long, value_enum)]
    kernel_flavor: Option<KernelFlavor>,
    /// Put every scenario's DMA through a virtual IOMMU (viommu) or bounce buffers
    /// (swiotlb, `swiotlb=force`) besides what it asks for.
    #[arg(long, value_enum)]
    dma: Option<acq::scenario::run::DmaPath>,
    /// Override every scenario's guest RAM, in MiB (make test-vm gives the debug kernel's
    /// guests 512: each kmemleak scan reads every page's struct page).
    #[arg(long, value_name = "MIB", value_parser = parse_memory)]
    memory: Option<u32>,
    /// Let one guest serve several scenarios that need the same VM, one after the other:
    /// after each passes, the driver unloaded and the kernel checked, the cards are reset
    /// and the next scenario loads the driver again (docs/scenarios.md, "One guest for
    /// several scenarios"). A failed scenario's guest is shut down.
    #[arg(long)]
    reuse_guests: bool,
}

#[derive(Args)]
struct ExploreArgs {
    /// The seed: the same seed draws the same scenarios.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// At most this many draws.
    #[arg(long)]
    runs: Option<u64>,
    /// Stop drawing after this long: 90s, 20m, 1h (default 20m without --runs).
    #[arg(long, value_parser = acq::explore::parse_budget)]
    budget: Option<Duration>,
    /// Extra runs spent shrinking each failing draw (0: do not shrink).
    #[arg(long, default_value_t = 25)]
    shrink_runs: u32,
    /// Where runs, reports and found/ (the failing scenarios) go.
    #[arg(long, default_value = "results/explore")]
    results: PathBuf,
    /// Override every scenario's accelerator.
    #[arg(long, value_enum)]
    accel: Option<AccelChoice>,
    /// Load this kernel module instead of driver/acq.ko.
    #[arg(long, value_name = "KO")]
    driver: Option<PathBuf>,
    /// Print the draws' JSON instead of running them.
    #[arg(long)]
    print: bool,
    /// Guest kernel flavor: test (the default), debug (KASAN, kmemleak) or bench
    /// (no debugging); `make kernel-FLAVOR driver-FLAVOR` builds it.
    #[arg(long, value_enum)]
    kernel_flavor: Option<KernelFlavor>,
}

#[derive(Args)]
struct SoakArgs {
    /// Load/stream/fault/unload cycles.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    cycles: u32,
    /// Draws each cycle's consumer, fault and moment.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bytes each cycle's consumer reads (K, M, G suffixes), from a card at 16 MB/s.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    bytes: u64,
    /// Where the guest's files, soak.json and kmemleak.txt go.
    #[arg(long, default_value = "results/soak")]
    results: PathBuf,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Guest kernel flavor.
    #[arg(long, value_enum, default_value_t = KernelFlavor::Debug)]
    kernel_flavor: KernelFlavor,
}

#[derive(Args)]
struct MutantsArgs {
    /// The mutant catalogue: a directory of *.toml, or single files.
    #[arg(long, default_value = "tests/mutants")]
    mutants: Vec<PathBuf>,
    /// Only the mutants with these names (repeatable).
    #[arg(long = "only", value_name = "NAME")]
    only: Vec<String>,
    /// The scenarios that try to catch them (files or directories).
    #[arg(long, default_value = "tests/scenarios")]
    scenarios: Vec<PathBuf>,
    /// Where each mutant's driver copy, diff, build log and scenario results go.
    #[arg(long, default_value = "results/mutants")]
    results: PathBuf,
    /// Exit status 1 below this share of mutants caught (0 to 1).
    #[arg(long, default_value_t = 0.9)]
    min_score: f64,
    /// Override every scenario's accelerator.
    #[arg(long, value_enum)]
    accel: Option<AccelChoice>,
    /// Guest kernel flavor: test (the default), debug (KASAN, kmemleak) or bench
    /// (no debugging); `make kernel-FLAVOR driver-FLAVOR` builds it.
    #[arg(long, value_enum)]
    kernel_flavor: Option<KernelFlavor>,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 1/4")?;
    let i: usize = i.parse().map_err(|_| format!("`{i}` is not a number"))?;
    let n: usize = n.parse().map_err(|_| format!("`{n}` is not a number"))?;
    if n == 0 || i == 0 || i > n {
        return Err(format!("shard {i}/{n}: need 1 <= I <= N"));
    }
    Ok((i, n))
}

/// Guest RAM in MiB, within what a scenario's `vm.memory_mib` may be.
fn parse_memory(s: &str) -> Result<u32, String> {
    use acq::scenario::format::limits::VM_MEMORY_MIB;
    let mib: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of MiB"))?;
    if !VM_MEMORY_MIB.contains(&mib) {
        return Err(format!("{mib} MiB is not in {VM_MEMORY_MIB:?}"));
    }
    Ok(mib)
}

#[derive(Args)]
struct VmArgs {
    /// Accelerator: auto uses KVM only where it really runs a stock guest, TCG otherwise.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Number of guest vCPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    cpus: u32,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(128..=16384))]
    memory: u32,
    /// Attach this many cards, each served by its own device model (acq-device).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8))]
    cards: u32,
    /// JSON config file for the device models started by --cards (see docs/device.md).
    #[arg(long, value_name = "FILE", requires = "cards")]
    card_config: Option<PathBuf>,
    /// Attach a card served by an external vfio-user server at this socket (repeatable).
    #[arg(long = "card-socket", value_name = "SOCKET")]
    card_sockets: Vec<PathBuf>,
    /// Attach a capture disk of this size (acq-sink; repeatable: /dev/vda, /dev/vdb, ...).
    /// It verifies writes against the default stream of card 0 (counter pattern, seed 0).
    #[arg(long = "disk", value_name = "SIZE", value_parser = parse_size)]
    disks: Vec<u64>,
    /// Do not load the driver (driver/acq.ko) when cards are attached.
    #[arg(long)]
    no_driver: bool,
    /// Put a kernel module into the guest at /lib/modules/NAME.ko (repeatable).
    #[arg(long = "module", value_name = "KO")]
    modules: Vec<PathBuf>,
    /// Run a shell command in the guest (repeatable; run in order, stops at the first failure).
    #[arg(long = "exec", short = 'e', value_name = "SHELL-CMD")]
    exec: Vec<String>,
    /// Seconds the guest may take to become ready.
    #[arg(long, default_value_t = 180)]
    boot_timeout: u64,
    /// Boot the kernel with the cards present from power-on, instead of restoring the
    /// machine from its snapshot and plugging the cards in (docs/architecture.md, "Guests").
    #[arg(long)]
    cold_boot: bool,
    /// Seconds each guest command may run before it is killed.
    #[arg(long, default_value_t = 600)]
    cmd_timeout: u64,
    /// Interactive shell on the guest's serial console instead of running commands.
    #[arg(long, conflicts_with_all = ["exec", "argv"])]
    shell: bool,
    /// Give the VM a virtual IOMMU (intel-iommu, caching mode): acq-vfio then runs on the
    /// type-1 VFIO path instead of no-IOMMU mode (docs/vfio.md).
    #[arg(long)]
    viommu: bool,
    /// An extra guest kernel command-line argument (repeatable), e.g. `swiotlb=force`.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    kernel_args: Vec<String>,
    /// Directory for the run's files (console log, QEMU log, sockets).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Keep the run directory even when the run succeeds (it is always kept on failure).
    #[arg(long)]
    keep: bool,
    /// A guest command to run (program and arguments, no shell), after any --exec.
    #[arg(last = true, value_name = "ARGV")]
    argv: Vec<String>,
    /// Guest kernel flavor: test, debug (KASAN, kmemleak) or bench (no debugging).
    #[arg(long, value_enum, default_value_t = KernelFlavor::Test)]
    kernel_flavor: KernelFlavor,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ACQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    signals::install();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Vm(args) => cmd_vm(args),
        Cmd::Check { files } => cmd_check(&files),
        Cmd::Run(args) => cmd_run(args),
        Cmd::Bench(args) => cmd_bench(args),
        Cmd::Mutants(args) => cmd_mutants(args),
        Cmd::Explore(args) => cmd_explore(args),
        Cmd::Soak(args) => cmd_soak(args),
        Cmd::Schema => {
            print!("{}", acq::scenario::format::schema_json());
            Ok(ExitCode::SUCCESS)
        }
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("acq: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Expands directories into their `*.json` files, sorted. A directory without any, or no
/// input at all, is an error: checking nothing must not pass.
fn scenario_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if inputs.is_empty() {
        bail!("no scenario files given");
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            if v.is_empty() {
                bail!("{}: a directory without any *.json scenario", p.display());
            }
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Loads every scenario of `inputs`, all validated before anything starts: a typo in the
/// last file must not cost the minutes the first ones take.
fn load_scenarios(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, acq::scenario::Scenario)>> {
    let files = scenario_files(inputs)?;
    let mut scenarios = Vec::new();
    let mut bad = Vec::new();
    for f in &files {
        match acq::scenario::load(f) {
            Ok(sc) => scenarios.push((f.clone(), sc)),
            Err(e) => bad.push(e.to_string()),
        }
    }
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("acq: error: {b}");
        }
        anyhow::bail!("{} malformed scenario file(s); nothing was run", bad.len());
    }
    Ok(scenarios)
}

fn cmd_explore(args: ExploreArgs) -> Result<ExitCode> {
    let budget = match (args.budget, args.runs) {
        (None, None) => Some(Duration::from_secs(20 * 60)),
        (b, _) => b,
    };
    if args.print {
        for k in 0..args.runs.unwrap_or(1) {
            let (_, drawn) = acq::explore::gen::draw(acq::explore::run_seed(args.seed, k));
            println!("{}", serde_json::to_string_pretty(&drawn)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let paths = Paths::discover()?;
    let opts = acq::explore::ExploreOptions {
        seed: args.seed,
        runs: args.runs,
        budget,
        shrink_runs: args.shrink_runs,
        results: args.results.clone(),
        run: acq::scenario::run::RunOptions {
            results: args.results.clone(),
            accel: args.accel,
            verbose: false,
            driver: args.driver.clone(),
            kernel_flavor: args.kernel_flavor,
            dma: None,
            memory_mib: None,
            reuse_guests: false,
        },
    };
    eprintln!(
        "exploring from seed {} ({}); results in {}",
        args.seed,
        match (args.runs, budget) {
            (Some(n), Some(b)) => format!("{n} draws or {} s", b.as_secs()),
            (Some(n), None) => format!("{n} draws"),
            (None, Some(b)) => format!("{} s", b.as_secs()),
            (None, None) => "unbounded".into(),
        },
        args.results.display()
    );
    let findings = acq::explore::explore(&paths, &opts)?;
    let results: Vec<_> = findings.iter().map(|f| f.result.clone()).collect();
    acq::scenario::report::write_all(&args.results, &results)?;
    std::fs::write(
        args.results.join("explore.json"),
        serde_json::to_string_pretty(&findings)?,
    )?;
    print!("{}", acq::scenario::report::table(&results));
    for f in findings.iter().filter(|f| !f.result.passed) {
        match &f.shrunk {
            Some(p) => println!(
                "seed {:#018x}: shrunk to {} in {} run(s): run it with `acq run {}`",
                f.seed,
                p.display(),
                f.shrink_runs,
                p.display()
            ),
            None => println!("seed {:#018x}: not shrunk", f.seed),
        }
    }
    if signals::interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(if findings.iter().all(|f| f.result.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_mutants(args: MutantsArgs) -> Result<ExitCode> {
    let scenarios = load_scenarios(&args.scenarios)?;
    let mut mutants = Vec::new();
    for m in &args.mutants {
        if m.is_dir() {
            mutants.extend(acq::mutants::load_dir(m)?);
        } else {
            mutants.push(acq::mutants::load(m)?);
        }
    }
    for name in &args.only {
        if !mutants.iter().any(|m| &m.name == name) {
            anyhow::bail!("no mutant named `{name}` in the catalogue");
        }
    }
    if !args.only.is_empty() {
        mutants.retain(|m| args.only.contains(&m.name));
    }
    if !(0.0..=1.0).contains(&args.min_score) {
        anyhow::bail!("--min-score {} is not between 0 and 1", args.min_score);
    }
    // The mutants are built for (and their scenarios run on) one flavor.
    let paths = Paths::discover()?.with_kernel(args.kernel_flavor.unwrap_or_default())?;
    let opts = acq::mutants::MutantOptions {
        results: args.results.clone(),
        run: acq::scenario::run::RunOptions {
            results: args.results.clone(),
            accel: args.accel,
            verbose: false,
            driver: None,
            kernel_flavor: args.kernel_flavor,
            dma: None,
            memory_mib: None,
            reuse_guests: false,
        },
    };
    eprintln!(
        "{} mutant(s) against {} scenario(s); results in {}",
        mutants.len(),
        scenarios.len(),
        args.results.display()
    );
    let results = acq::mutants::run_all(&mutants, &scenarios, &paths, &opts);
    std::fs::create_dir_all(&args.results)?;
    std::fs::write(
        args.results.join("summary.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "score": acq::mutants::score(&results),
            "mutants": results,
        }))?,
    )?;
    print!("{}", acq::mutants::table(&results));
    if signals::interrupted() {
        anyhow::bail!("interrupted");
    }
    let invalid = results
        .iter()
        .any(|r| matches!(r.outcome, acq::mutants::Outcome::Invalid { .. }));
    let weak = acq::mutants::score(&results).is_none_or(|s| s < args.min_score);
    Ok(if invalid || weak {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn cmd_run(args: RunArgs) -> Result<ExitCode> {
    let mut scenarios = load_scenarios(&args.files)?;
    if let Some((i, n)) = args.shard {
        scenarios = scenarios
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i - 1)
            .map(|(_, s)| s)
            .collect();
    }
    let mut names = std::collections::HashSet::new();
    for (f, sc) in &scenarios {
        let name = sc.name.clone().unwrap_or_default();
        if !names.insert(name.clone()) {
            anyhow::bail!(
                "two scenarios are named `{name}` (one is {}): names must be unique",
                f.display()
            );
        }
    }
    let paths = Paths::discover()?;
    let opts = acq::scenario::run::RunOptions {
        results: args.results.clone(),
        accel: args.accel,
        verbose: args.verbose,
        driver: args.driver.clone(),
        kernel_flavor: args.kernel_flavor,
        dma: args.dma,
        memory_mib: args.memory,
        reuse_guests: args.reuse_guests,
    };
    let shapes: Vec<_> = scenarios
        .iter()
        .map(|(_, sc)| acq::scenario::run::guest_shape(sc, &opts))
        .collect();
    let batches = acq::scenario::run::batches(&shapes, args.jobs as usize, opts.reuse_guests);
    eprintln!(
        "running {} scenario(s), {} at a time{}; results in {}",
        scenarios.len(),
        args.jobs,
        if opts.reuse_guests {
            format!(" ({} guest(s) at most)", batches.len())
        } else {
            String::new()
        },
        args.results.display()
    );
    let queue = std::sync::Mutex::new(batches);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..args.jobs {
            s.spawn(|| loop {
                let next = queue
                    .lock()
                    .ok()
                    .and_then(|mut q| (!q.is_empty()).then(|| q.remove(0)));
                let Some(ks) = next else { break };
                if signals::interrupted() {
                    break;
                }
                let batch: Vec<_> = ks
                    .iter()
                    .map(|&k| (&scenarios[k].1, scenarios[k].0.as_path()))
                    .collect();
                // The results come in the batch's order.
                let mut k = ks.iter().copied();
                acq::scenario::run::run_batch(&batch, &paths, &opts, &mut |r| {
                    eprintln!(
                        "{} {} ({:.0} s){}{}",
                        if r.passed { "PASS" } else { "FAIL" },
                        r.name,
                        r.seconds,
                        r.guest_booted_by
                            .as_ref()
                            .map(|b| format!(" in the guest booted for {b}"))
                            .unwrap_or_default(),
                        r.error
                            .as_ref()
                            .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                            .unwrap_or_default()
                    );
                    if let (Ok(mut v), Some(k)) = (results.lock(), k.next()) {
                        v.push((k, r.clone()));
                    }
                    !signals::interrupted()
                });
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(k, _)| *k);
    let results: Vec<_> = results.into_iter().map(|(_, r)| r).collect();
    acq::scenario::report::write_all(&args.results, &results)?;
    print!("{}", acq::scenario::report::table(&results));
    if signals::interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(if results.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_soak(args: SoakArgs) -> Result<ExitCode> {
    let paths = Paths::discover()?.with_kernel(args.kernel_flavor)?;
    let opts = acq::soak::SoakOptions {
        cycles: args.cycles,
        seed: args.seed,
        bytes: args.bytes,
        results: args.results.clone(),
        accel: args.accel,
    };
    eprintln!(
        "soak: {} cycles on the {} kernel (seed {}); results in {}",
        opts.cycles,
        paths.kernel_flavor,
        opts.seed,
        opts.results.display()
    );
    let report = acq::soak::run(&paths, &opts)?;
    print!("{}", acq::soak::summary(&report));
    eprintln!("wrote {}/soak.json", opts.results.display());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_bench(args: BenchArgs) -> Result<ExitCode> {
    let paths = Paths::discover()?.with_kernel(args.kernel_flavor)?;
    let opts = acq::bench::BenchOptions {
        bytes: args.bytes,
        accel: args.accel,
        results: args.results.clone(),
        update_docs: args.update_docs,
        pipe_sizes: args.pipe_sizes.clone(),
        repeat: args.repeat,
    };
    let report = acq::bench::run(&paths, &opts)?;
    let table = acq::bench::table(&report);
    std::fs::write(
        args.results.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    acq::bench::plots(&report, &args.results)?;
    println!("{table}");
    eprintln!(
        "wrote {0}/bench.json and the plots {0}/bench*.svg",
        args.results.display()
    );
    if opts.update_docs {
        acq::bench::update_doc(&paths.repo.join("docs/performance.md"), &table)?;
        for (file, _) in acq::bench::PLOTS {
            std::fs::copy(
                args.results.join(file),
                paths
                    .repo
                    .join("docs")
                    .join(acq::bench::doc_plot_name(file)),
            )?;
        }
        eprintln!("updated docs/performance.md and its plots (docs/performance*.svg)");
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(files: &[PathBuf]) -> Result<ExitCode> {
    let files = scenario_files(files)?;
    let mut bad = 0;
    for f in &files {
        match acq::scenario::load(f) {
            Ok(sc) => println!(
                "ok    {} ({} step(s), {} fault(s), {} card(s))",
                f.display(),
                sc.steps.len(),
                sc.faults.len(),
                sc.cards.len()
            ),
            Err(e) => {
                println!("error {e}");
                bad += 1;
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_vm(args: VmArgs) -> Result<ExitCode> {
    let paths = Paths::discover()?.with_kernel(args.kernel_flavor)?;
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        paths
            .repo
            .join(format!("target/acq-runs/vm-{}", std::process::id()))
    });
    // With cards attached the driver is loaded before anything else runs, so /dev/acqN
    // exist for the commands (and the shell).
    let ncards = args.cards as usize + args.card_sockets.len();
    let load_driver = ncards > 0 && !args.no_driver;
    let driver = paths.driver_module();
    if load_driver && !driver.exists() {
        anyhow::bail!(
            "{} does not exist: run `{}` (or pass --no-driver)",
            driver.display(),
            paths.driver_target()
        );
    }
    let cfg = VmConfig {
        accel: args.accel,
        cpus: args.cpus,
        memory_mib: args.memory,
        cards: (0..args.cards)
            .map(|_| Card::Model {
                config: args.card_config.clone(),
            })
            .chain(args.card_sockets.iter().cloned().map(Card::External))
            .collect(),
        modules: args
            .modules
            .iter()
            .cloned()
            .chain(load_driver.then_some(driver))
            .collect(),
        files: Vec::new(),
        disks: args
            .disks
            .iter()
            .map(|&size| acq::disks::DiskSpec {
                size,
                block_size: 4096,
                ..Default::default()
            })
            .collect(),
        boot_timeout: Duration::from_secs(args.boot_timeout),
        shell: args.shell,
        viommu: args.viommu,
        kernel_args: args.kernel_args.clone(),
        run_dir,
        keep: args.keep,
        snapshot: !args.cold_boot,
    };
    let mut vm = Vm::boot(&cfg, &paths).context("booting the guest")?;
    eprintln!(
        "guest ready: kernel {}, accelerator {} ({}), {} {:.1} s (guest uptime {:.1} s), {} card(s)",
        vm.kernel,
        vm.accel.0,
        vm.accel.1,
        if vm.restored { "restored from its snapshot in" } else { "boot" },
        vm.boot_time.as_secs_f64(),
        vm.guest_uptime.as_secs_f64(),
        cfg.cards.len()
    );
    if load_driver {
        let out = vm.sh(
            &format!(
                "insmod /lib/modules/acq.ko && for i in $(seq 100); do [ $(ls /dev/acq* 2>/dev/null | wc -l) -ge {ncards} ] && exit 0; sleep 0.1; done; echo 'no /dev/acqN appeared'; exit 1"
            ),
            Duration::from_secs(60),
        )?;
        if !out.success() {
            vm.mark_failed();
            anyhow::bail!("loading the driver failed: {}{}", out.stdout, out.stderr);
        }
        let devs = vm.sh_ok("ls /dev/acq* | tr '\\n' ' '", Duration::from_secs(30))?;
        eprintln!("driver loaded: {}", devs.trim());
    }
    if args.shell {
        eprintln!("shell on the serial console; `exit` powers the guest off");
        // The guest powers off when the shell exits; QEMU then exits on its own.
        vm.wait_exit(None)?;
        return Ok(ExitCode::SUCCESS);
    }
    let timeout = Duration::from_secs(args.cmd_timeout);
    let mut commands: Vec<Vec<String>> = args
        .exec
        .iter()
        .map(|c| vec!["/bin/sh".into(), "-c".into(), c.clone()])
        .collect();
    if !args.argv.is_empty() {
        commands.push(args.argv.clone());
    }
    let mut code = 0;
    for argv in &commands {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = vm.exec_streaming(&argv, timeout, &mut |stream, data| {
            // Guest output goes straight through, so progress lines show live.
            let _ = match stream {
                Stream::Stdout => std::io::stdout().write_all(data.as_bytes()),
                Stream::Stderr => std::io::stderr().write_all(data.as_bytes()),
            };
        })?;
        if !out.success() {
            eprintln!(
                "acq: guest command {argv:?} {}",
                if out.timed_out {
                    format!("timed out after {}", args.cmd_timeout)
                } else {
                    format!("exited with status {}", out.status)
                }
            );
            code = if out.timed_out {
                124
            } else {
                out.status.clamp(1, 255)
            };
            vm.mark_failed();
            break;
        }
    }
    vm.shutdown(Duration::from_secs(60))?;
    Ok(ExitCode::from(code as u8))
}

#[cfg(test)]
mod tests {
    use super::{parse_memory, scenario_files};

    #[test]
    fn a_run_wide_memory_is_held_to_a_scenarios_limits() {
        assert_eq!(parse_memory("512"), Ok(512));
        assert!(parse_memory("64").unwrap_err().contains("64 MiB is not in"));
        assert!(parse_memory("1G")
            .unwrap_err()
            .contains("not a number of MiB"));
    }

    #[test]
    fn checking_nothing_is_an_error() {
        assert!(scenario_files(&[]).is_err());
        let dir = std::env::temp_dir().join(format!("acq-files-{}", std::process::id()));
        let empty = dir.join("x.json");
        std::fs::create_dir_all(&empty).unwrap();
        let e = scenario_files(std::slice::from_ref(&empty)).unwrap_err();
        assert!(e.to_string().contains("without any *.json"), "{e}");
        std::fs::write(dir.join("a.json"), "{}").unwrap();
        let found = scenario_files(std::slice::from_ref(&dir)).unwrap();
        // The directory x.json is listed too: loading it then says it is a directory.
        assert_eq!(found, vec![dir.join("a.json"), dir.join("x.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

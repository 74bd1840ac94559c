//! `acq soak` (make soak): one long-lived guest on the debug kernel, and many cycles of
//! load, stream, a random fault, unload.
//!
//! A scenario boots a fresh guest, so what a driver leaks or corrupts across loads, and
//! what only shows after the hundredth probe, never accumulates there. The soak keeps one
//! guest and, per cycle: loads the driver, streams with a consumer drawn from the system
//! calls `acq-consume` knows (which checks the errno contract from the data), injects one
//! fault drawn from the card's catalogue while the stream runs, then checks that every
//! pool page came back, that the driver unloads, and that the kernel reported nothing
//! (KASAN, lockdep, WARN, hung tasks...). After the last cycle kmemleak scans for anything
//! the cycles left unreferenced. Reproducible from `--seed`.

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use acq_wire::consumer::{ConsumeArgs, ConsumeMethod, ConsumerReport};
use acq_wire::counters::DriverStats;
use anyhow::{Context, Result};
use serde::Serialize;

use crate::accel::AccelChoice;
use crate::control::ModelControl;
use crate::explore::rng::Rng;
use crate::paths::Paths;
use crate::scenario::format::{CardFault, Channel, CompletionLie, Fault, HostFault};
use crate::vm::{Card, Vm, VmConfig};

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Load/stream/fault/unload cycles.
    pub cycles: u32,
    /// Draws the consumers and faults.
    pub seed: u64,
    /// Bytes each cycle's consumer reads.
    pub bytes: u64,
    /// Where the VM's files, soak.json and the kmemleak report go.
    pub results: PathBuf,
    /// The accelerator.
    pub accel: AccelChoice,
}

/// What one cycle did.
#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    /// 1-based.
    pub n: u32,
    /// The consumer's system call.
    pub method: String,
    /// The fault injected while it streamed.
    pub fault: String,
    /// Every check of the cycle held.
    pub ok: bool,
    /// What failed, when something did.
    pub problems: Vec<String>,
    /// Bytes the consumer verified.
    pub bytes: u64,
    /// EIOs and EPIPEs the consumer saw.
    pub eio: u64,
    /// EPIPEs (gaps) the consumer saw.
    pub epipe: u64,
    /// Pool pages not back when the consumer was done.
    pub pages_missing: u64,
    /// Seconds.
    pub seconds: f64,
}

/// The whole soak.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The seed.
    pub seed: u64,
    /// Guest kernel flavor and release.
    pub kernel: String,
    /// Cycles run (fewer than asked when interrupted or the guest died).
    pub cycles: u32,
    /// Cycles with a failed check.
    pub failed: u32,
    /// Pool pages missing, summed over the cycles.
    pub pages_missing: u64,
    /// Kernel bug reports (dmesg lines) over the whole soak.
    pub kernel_reports: Vec<String>,
    /// Objects kmemleak found unreferenced after the last unload (None: no kmemleak).
    pub kmemleak_leaks: Option<Vec<String>>,
    /// The guest or the harness failed and the soak stopped early.
    pub error: Option<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Each cycle.
    pub runs: Vec<Cycle>,
}

impl SoakReport {
    /// Everything held.
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.failed == 0
            && self.pages_missing == 0
            && self.kernel_reports.is_empty()
            && self.kmemleak_leaks.as_ref().is_none_or(|l| l.is_empty())
    }
}

/// The consumers a cycle draws from (acq-consume methods that verify a live stream).
const METHODS: &[ConsumeMethod] = &[
    ConsumeMethod::Read,
    ConsumeMethod::Readv,
    ConsumeMethod::Splice,
    ConsumeMethod::SendfilePipe,
    ConsumeMethod::PollRead,
    ConsumeMethod::EpollRead,
    ConsumeMethod::IoUringRead,
    ConsumeMethod::Preadv2Nowait,
];

/// A fault drawn from the card's catalogue: every fault the driver must survive with the
/// errno contract intact (corrupt data is the verifier's business, surprise removal ends
/// the card for good; both have their scenarios).
fn draw_fault(rng: &mut Rng) -> Fault {
    let count = |rng: &mut Rng, hi: u64| rng.range(1, hi);
    Fault::Card(match rng.below(13) {
        0 => CardFault::DmaError {
            count: count(rng, 3),
        },
        1 => CardFault::Overflow {
            count: count(rng, 4),
        },
        2 => CardFault::DropIrq {
            count: count(rng, 3),
        },
        3 => CardFault::SpuriousIrq {
            count: count(rng, 8),
            vector: 0,
        },
        4 => CardFault::Stall {
            ms: rng.range(100, 600),
        },
        5 => CardFault::SlowStop {
            ms: rng.range(5, 50),
            count: 1,
        },
        6 => CardFault::DoorbellLie { count: 1 },
        7 => CardFault::ConsLie { count: 1 },
        8 => CardFault::IrqStorm {
            vector: rng.below(2) as u16,
            rate: 20_000,
            ms: rng.range(50, 300),
        },
        9 => CardFault::BadCompletion {
            kind: *rng.pick(CompletionLie::ALL),
            count: 1,
        },
        10 => CardFault::BadRegisterReads {
            count: count(rng, 3),
        },
        11 => CardFault::Hang,
        _ => return Fault::Host(HostFault::Reset),
    })
}

const CMD: Duration = Duration::from_secs(60);

/// Runs the soak. Errors are the harness's own (the VM would not boot); what the driver
/// does wrong goes into the report.
pub fn run(paths: &Paths, opts: &SoakOptions) -> Result<SoakReport> {
    let start = Instant::now();
    let ko = paths.driver_module();
    if !ko.exists() {
        anyhow::bail!(
            "{} does not exist: run `{}`",
            ko.display(),
            paths.driver_target()
        );
    }
    fs::create_dir_all(&opts.results)?;
    let cfg = VmConfig {
        accel: opts.accel,
        cards: vec![Card::Model { config: None }],
        modules: vec![ko],
        run_dir: opts.results.join("vm"),
        keep: true,
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(&cfg, paths).context("booting the soak guest")?;
    let mut report = SoakReport {
        seed: opts.seed,
        kernel: format!("{} {}", paths.kernel_flavor, vm.kernel),
        cycles: 0,
        failed: 0,
        pages_missing: 0,
        kernel_reports: Vec::new(),
        kmemleak_leaks: None,
        error: None,
        seconds: 0.0,
        runs: Vec::new(),
    };
    let control = vm.models[0].control.clone();
    let kmemleak_expected = paths.kernel_flavor == crate::paths::KernelFlavor::Debug;
    let mut rng = Rng::new(opts.seed);
    let result = (|| -> Result<()> {
        // (What the kernel leaked while booting was forgotten before the guest was
        // handed out: crate::vm.)
        for n in 1..=opts.cycles {
            if crate::signals::interrupted() {
                anyhow::bail!("interrupted after {} cycles", n - 1);
            }
            let cycle = one_cycle(&mut vm, &control, &mut rng, n, opts)?;
            // Every kernel report since the last cycle is this cycle's: the log is read
            // and cleared (`dmesg -c`; the console log keeps it all), so a long soak never
            // depends on the ring buffer's size.
            let new = vm.sh("dmesg -c", CMD)?.stdout;
            let reports = crate::dmesg::kernel_bug_reports(&new);
            let mut cycle = cycle;
            if !reports.is_empty() {
                cycle.ok = false;
                cycle.problems.push(format!("kernel: {}", reports[0]));
                report.kernel_reports.extend(reports);
            }
            eprintln!(
                "{} cycle {n:3}/{} {:14} {:34} {:6.1} s{}",
                if cycle.ok { "PASS" } else { "FAIL" },
                opts.cycles,
                cycle.method,
                cycle.fault,
                cycle.seconds,
                if cycle.ok {
                    String::new()
                } else {
                    format!(": {}", cycle.problems.join("; "))
                }
            );
            report.cycles = n;
            report.failed += u32::from(!cycle.ok);
            report.pages_missing += cycle.pages_missing;
            report.runs.push(cycle);
        }
        let scan = vm.sh(&crate::dmesg::kmemleak_scan_cmd(), Duration::from_secs(600))?;
        if scan.status != 3 {
            fs::write(opts.results.join("kmemleak.txt"), &scan.stdout)?;
            report.kmemleak_leaks = Some(crate::dmesg::kmemleak_leaks(&scan.stdout));
        } else if kmemleak_expected {
            anyhow::bail!(
                "{} is missing on the debug kernel: kmemleak disabled itself (its reason is in the kernel log, dmesg)",
                crate::dmesg::KMEMLEAK
            );
        }
        Ok(())
    })();
    if let Err(e) = result {
        report.error = Some(format!("{e:#}"));
        vm.mark_failed();
    }
    let _ = vm.shutdown(Duration::from_secs(60));
    report.seconds = start.elapsed().as_secs_f64();
    fs::write(
        opts.results.join("soak.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

/// Load, stream with one fault, check, unload.
fn one_cycle(
    vm: &mut Vm,
    control: &std::path::Path,
    rng: &mut Rng,
    n: u32,
    opts: &SoakOptions,
) -> Result<Cycle> {
    let t0 = Instant::now();
    let method = *rng.pick(METHODS);
    let fault = draw_fault(rng);
    // The stream lasts about a second (`--rate 16M`, 16 MiB by default): the fault lands
    // inside it.
    let delay = Duration::from_millis(rng.range(20, 700));
    let mut cycle = Cycle {
        n,
        method: method.as_str().into(),
        fault: format!("{fault:?}"),
        ok: true,
        problems: Vec::new(),
        bytes: 0,
        eio: 0,
        epipe: 0,
        pages_missing: 0,
        seconds: 0.0,
    };
    vm.sh_ok(
        "insmod /lib/modules/acq.ko && for t in $(seq 100); do [ -c /dev/acq0 ] && exit 0; sleep 0.05; done; echo no /dev/acq0; exit 1",
        CMD,
    )
    .with_context(|| format!("cycle {n}: loading the driver"))?;
    // The consumer runs in the guest while this thread injects the fault; a card rate
    // keeps the stream going long enough for the fault to land inside it.
    let guest = vm.guest();
    let mut consume = ConsumeArgs::new(method, opts.bytes);
    consume.rate = 16 << 20;
    consume.timeout = 90;
    let cmd = format!("acq-consume {}", consume.to_argv().join(" "));
    let consumer = thread::spawn(move || guest.sh(&cmd, Duration::from_secs(120)));
    thread::sleep(delay);
    let req = fault
        .card_request(Channel::Capture)
        .context("a soak fault the card cannot inject")?;
    if let Err(e) = ModelControl::connect(control, None).and_then(|mut c| c.request(&req)) {
        cycle
            .problems
            .push(format!("injecting {}: {e:#}", fault.name()));
    }
    let out = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    let rep: ConsumerReport = out
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let errno = |name: &str| rep.errno.get(name).copied().unwrap_or(0);
    cycle.bytes = rep.bytes;
    cycle.eio = errno("EIO");
    cycle.epipe = errno("EPIPE");
    if !rep.ok {
        cycle.problems.push(format!(
            "consumer (status {}): {} {}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        ));
    }
    // The card may still be recovering (a reset after a hang): the pool must be whole
    // once the descriptor is closed, at the latest after the recovery.
    let stats = vm.sh(
        "for t in $(seq 50); do s=$(acq-ctl --device /dev/acq0 stats) && { echo \"$s\"; exit 0; }; sleep 0.1; done; exit 1",
        CMD,
    )?;
    let read: Result<DriverStats, _> = serde_json::from_str(stats.stdout.trim());
    match read
        .as_ref()
        .map(|s| (u64::from(s.pool_free), u64::from(s.pool_pages)))
    {
        Ok((f, p)) if p > 0 => {
            cycle.pages_missing = p.saturating_sub(f);
            if f != p {
                cycle.problems.push(format!("pool: {f} of {p} pages back"));
            }
        }
        _ => cycle
            .problems
            .push(format!("no pool statistics: {}", stats.stdout.trim())),
    }
    let rm = vm.sh("rmmod acq", CMD)?;
    if !rm.success() {
        cycle
            .problems
            .push(format!("rmmod: status {} {}", rm.status, rm.stderr.trim()));
        // Still loaded: the next cycle's insmod would fail for the wrong reason.
        anyhow::bail!(
            "cycle {n}: the driver does not unload: {}",
            rm.stderr.trim()
        );
    }
    cycle.ok = cycle.problems.is_empty();
    cycle.seconds = t0.elapsed().as_secs_f64();
    Ok(cycle)
}

/// The human summary.
pub fn summary(r: &SoakReport) -> String {
    let mut kinds: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
    for c in &r.runs {
        let name = c.fault.split([' ', '{']).next().unwrap_or_default();
        let e = kinds.entry(name).or_default();
        e.0 += 1;
        e.1 += u32::from(!c.ok);
    }
    let mut s = format!(
        "soak: {} cycles on {} (seed {}), {} failed, {} pool pages missing, {} kernel reports, kmemleak: {}, {:.0} s\n",
        r.cycles,
        r.kernel,
        r.seed,
        r.failed,
        r.pages_missing,
        r.kernel_reports.len(),
        match &r.kmemleak_leaks {
            None => "not in this kernel".to_string(),
            Some(l) => format!("{} unreferenced objects", l.len()),
        },
        r.seconds
    );
    for (k, (n, bad)) in kinds {
        s.push_str(&format!("  {k:20} {n:4} cycles, {bad} failed\n"));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("stopped early: {e}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drawn_fault_is_one_the_card_can_inject() {
        let mut rng = Rng::new(7);
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let f = draw_fault(&mut rng);
            assert!(f.card_request(Channel::Capture).is_some(), "{f:?}");
            names.insert(f.name());
        }
        // The whole drawable catalogue comes up.
        assert_eq!(names.len(), 13, "{names:?}");
    }
}

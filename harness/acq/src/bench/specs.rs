//! What each row of the bench measures and how: the consumer path or its peer, the guest
//! command, and one measured run.

use super::*;

use acq_wire::consumer::{
    CaptureArgs, CaptureMode, ConsumerReport, DeviceArgs, PlayMode, PlaybackArgs, ShareArgs,
    ShareSource, SinkPath, SourcePath, Transfer,
};
use acq_wire::counters::CardStats;

/// The raw capture disk and the file on the other one, for the disk rows.
pub(super) const RAW_DISK: &str = "/dev/vda";

pub(super) const DISK_FILE: &str = "/mnt/bench/capture";

/// What to run.
pub(super) struct Spec {
    /// Multiple of the benchmark's byte count.
    pub(super) scale: u64,
    pub(super) source: &'static str,
    pub(super) mode: &'static str,
    pub(super) pipe: Option<u64>,
    pub(super) block: Option<u64>,
    pub(super) irq_count: Option<u64>,
    /// `--sink` (a disk or a file on one); `None`: /dev/null.
    pub(super) sink: Option<&'static str>,
    /// `--direct`.
    pub(super) direct: bool,
    /// `--bar2` (BAR2 streaming mode, 128-entry ring).
    pub(super) bar2: bool,
}

impl Spec {
    pub(super) fn acq(mode: &'static str, pipe: Option<u64>) -> Spec {
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
    pub(super) fn zero(mode: &'static str, pipe: Option<u64>) -> Spec {
        Spec {
            source: "zero",
            ..Spec::acq(mode, pipe)
        }
    }
    pub(super) fn file(mode: &'static str, pipe: Option<u64>) -> Spec {
        Spec {
            source: "tmpfs",
            ..Spec::acq(mode, pipe)
        }
    }
    /// Into the card's playback channel (`source` names the device written); the pipe
    /// modes through a 1 MiB pipe (with the default 64 KiB, the system calls per byte,
    /// not the data path, set the pace: 75 against 154 MB/s for splice in one run).
    pub(super) fn play(mode: &'static str) -> Spec {
        Spec {
            source: PLAYBACK,
            ..Spec::acq(mode, Some(1 << 20).filter(|_| mode != "write"))
        }
    }
    /// Card to card: `dma-buf` (the ring exported and imported, no CPU copy) or
    /// `read+write` (through a buffer, two copies).
    pub(super) fn share(mode: &'static str) -> Spec {
        Spec {
            source: SHARE,
            ..Spec::acq(mode, None)
        }
    }
    pub(super) fn label(&self) -> String {
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

/// The page-cache peer's file, on the guest's tmpfs /tmp.
pub(super) const PAGE_CACHE_FILE: &str = "/tmp/peer.dat";

/// The playback rows' `source`: the device they write.
pub(super) const PLAYBACK: &str = "acq0-out";

/// The guest memcpy row's `source`.
pub(super) const MEMCPY: &str = "guest";

/// The card-to-card rows' `source`: card 0's capture played by its own playback channel
/// (`acq-share`; docs/driver.md "Sharing the ring with another device").
pub(super) const SHARE: &str = "acq0 -> acq0-out";

/// The guest command of a row: acq-stream's and acq-share's from their typed command lines
/// (the ones the scenarios use), acq-ctl's as its own.
pub(super) fn argv(bytes: u64, s: &Spec) -> Vec<String> {
    let bytes = bytes * s.scale;
    let mut argv: Vec<String> = match s.source {
        SHARE => vec!["acq-share".into()],
        // The yard stick of every copying path: the guest's own memcpy.
        MEMCPY => vec!["acq-ctl".into(), "memcpy".into()],
        _ => vec!["acq-stream".into()],
    };
    let card = DeviceArgs {
        block: s.block.map(|b| b as u32),
        irq_count: s.irq_count.map(|i| i as u32),
        // The largest ring the default 1 MiB BAR2 holds with 4 KiB blocks.
        ring_log2: s.bar2.then_some(7),
        transfer: s.bar2.then_some(Transfer::Bar2),
        ..DeviceArgs::default()
    };
    match s.source {
        MEMCPY => argv.extend(["--bytes".into(), bytes.to_string()]),
        SHARE => {
            let mut a = ShareArgs::new("/dev/acq0", "/dev/acq0-out", bytes);
            if s.mode == "read+write" {
                a.source = ShareSource::Copy {
                    from: "/dev/acq0".into(),
                };
            }
            argv.extend(a.to_argv());
        }
        PLAYBACK => {
            let mode = match s.mode {
                "splice" => PlayMode::Splice,
                "vmsplice" => PlayMode::Vmsplice,
                _ => PlayMode::Write,
            };
            let mut a = PlaybackArgs::new("/dev/acq0-out", mode, SourcePath::Pattern, bytes);
            a.verify = true;
            a.pipe_size = s.pipe;
            a.card = card;
            argv.extend(a.to_argv());
        }
        source => {
            let mode = match s.mode {
                "splice" => CaptureMode::Splice,
                "mmap" => CaptureMode::Mmap,
                _ => CaptureMode::Read,
            };
            let device = match source {
                "zero" => "/dev/zero",
                "tmpfs" => PAGE_CACHE_FILE,
                _ => "/dev/acq0",
            };
            let mut a = CaptureArgs::new(device, mode, bytes);
            a.raw = matches!(source, "zero" | "tmpfs");
            a.pipe_size = s.pipe;
            a.card = card;
            a.sink = s.sink.map_or(SinkPath::Null, |k| SinkPath::File(k.into()));
            a.sink_opts.direct = s.direct;
            argv.extend(a.to_argv());
        }
    }
    argv
}

pub(super) fn measure(vm: &mut Vm, control: &Path, bytes: u64, s: &Spec) -> Result<Run> {
    let argv = argv(bytes, s);
    let before = ModelControl::connect(control, None)?.card_counters()?.stats;
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = vm.exec(&argv_ref, Duration::from_secs(600))?;
    let after = ModelControl::connect(control, None)?.card_counters()?.stats;
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
    // The tool's result line, read as the report type it was written from.
    let result: Option<ConsumerReport> = out
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok());
    let Some(v) = result.filter(|v| v.ok) else {
        let why = out.stderr.lines().next().unwrap_or("").trim().to_owned();
        run.note = Some(if out.status == 2 {
            format!("not supported ({why})")
        } else {
            format!("failed (status {}): {why}", out.status)
        });
        return Ok(run);
    };
    let got = v.bytes as f64;
    run.mb_per_s = Some(v.mb_per_s);
    run.samples = run.mb_per_s.into_iter().collect();
    let cpu = v.cpu_user_s.zip(v.cpu_sys_s).map(|(u, s)| u + s);
    run.cpu_s_per_gib = cpu.filter(|_| got > 0.0).map(|c| c * GIB / got);
    if s.source == "acq0" && got > 0.0 {
        let d = |k: fn(&CardStats) -> u64| k(&after) as f64 - k(&before) as f64;
        let irqs = d(|c| c.irqs);
        let regs = d(|c| c.reg_reads) + d(|c| c.reg_writes);
        let blocks = d(|c| c.blocks);
        run.irqs_per_gib = Some(irqs * GIB / got);
        run.reg_accesses_per_gib = Some(regs * GIB / got);
        run.blocks_per_irq = (irqs > 0.0).then(|| blocks / irqs);
        run.blocks_per_reg_access = (regs > 0.0).then(|| blocks / regs);
        run.deltas = Some((blocks, irqs, regs));
    }
    Ok(run)
}

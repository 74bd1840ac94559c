//! How a step becomes a guest tool's invocation: the typed command lines of
//! `acq_wire::consumer`, built from a step and its card. The runner runs them; the
//! validation checks them with the tools' own rules, so `acq check` refuses what a tool
//! would refuse minutes into a run.

use acq_wire::consumer::{
    self, CaptureArgs, DeviceArgs, PlaybackArgs, ShareArgs, SinkPath, SourcePath,
};

use super::share::{ShareSource, ShareStep};
use super::*;

/// The guest path of a stream step's sink (a `disk_file` sink's file system is made and
/// mounted by the runner before the consumer runs).
pub fn sink_path(sc: &Scenario, st: &StreamStep) -> (SinkPath, Option<u64>) {
    match st.sink {
        Sink::Null => (SinkPath::Null, None),
        Sink::Tmpfs => (SinkPath::File(format!("/tmp/acq{}.data", st.card)), None),
        Sink::Tcp => (SinkPath::Tcp, None),
        // Disk offset = stream offset - base: the disk's own base.
        Sink::Disk(d) => (
            SinkPath::File(disk_device(d)),
            Some(sc.disks.get(d).and_then(|k| k.base).map_or(0, |b| b.0)),
        ),
        Sink::DiskFile(d) => (SinkPath::File(format!("{}/capture", disk_mount(d))), None),
    }
}

/// What `acq-stream` is asked to do for a stream step: the step's settings and its card's.
pub fn capture_args(sc: &Scenario, st: &StreamStep, progress: bool) -> CaptureArgs {
    let mut a = CaptureArgs::new(format!("/dev/acq{}", st.card), st.mode, st.bytes.0);
    a.timeout = Some(st.timeout_s as f64);
    a.verify = st.verify;
    a.progress = progress;
    (a.sink, a.sink_opts.base) = sink_path(sc, st);
    a.sink_opts.direct = st.direct;
    a.sink_opts.policy = match (st.on_sink_error, st.sink) {
        (Some(p), _) => Some(p),
        // A file gets the account (and errors seen per piece) only when asked: ask, so
        // that every disk stream reports what reached the disk.
        (None, Sink::DiskFile(_)) => Some(SinkErrorPolicy::Stop),
        (None, _) => None,
    };
    if let Some(n) = st.sink_retries {
        a.sink_opts.retries = n;
    }
    if let Some(n) = st.sink_retry_ms {
        a.sink_opts.retry_ms = n;
    }
    if let Some(c) = st.chunk {
        a.read_size = c.0;
    }
    a.pipe_size = st.pipe_size.map(|p| p.0);
    a.tee = st.tee.map(|t| match t {
        Sink::Tmpfs => SinkPath::File(format!("/tmp/acq{}.tee", st.card)),
        _ => SinkPath::Null,
    });
    a.restart_at = st.restart_at.map(|r| r.0);
    a.controls = super::control::plans(&st.control);
    a.reopen_at = st.reopen_at.map(|r| r.0);
    if let Some(p) = st.pause_at {
        a.pause_at = Some(p.0);
        a.pause_ms = st.pause_ms;
    }
    a.signal = st.signal.as_ref().map(|s| s.plan());
    if let Some(card) = sc.cards.get(st.card) {
        a.card = device_args(&card.device);
    }
    a
}

/// A card's settings as the guest tools take them (`acq-stream`, `acq-ctl set`).
pub fn device_args(d: &DeviceSettings) -> DeviceArgs {
    let small = |s: Size| u32::try_from(s.0).unwrap_or(u32::MAX);
    DeviceArgs {
        block: d.block_size.map(small),
        ring_log2: d.ring_log2,
        rate: d.rate.map(|r| r.0),
        pattern: d.pattern.map(|p| p.0),
        seed: d.seed,
        irq_count: d.irq_count,
        irq_time_us: d.irq_time_us,
        transfer: d.transfer,
    }
}

/// What `acq-share` is asked to do for a share step; `card` is the card whose settings the
/// stream uses ([`ShareStep::settings_card`]): its pattern (counter if none) and seed (0),
/// block and ring size.
pub fn share_args(s: &ShareStep, card: &CardSpec) -> ShareArgs {
    let from = format!("/dev/acq{}", s.from);
    let source = match s.source {
        ShareSource::Card => consumer::ShareSource::Card { from },
        ShareSource::Copy => consumer::ShareSource::Copy { from },
        ShareSource::Heap => consumer::ShareSource::Heap {
            path: "/dev/dma_heap/system".into(),
            pages: consumer::share::HEAP_PAGES_DEFAULT,
        },
    };
    let d = device_args(&card.device);
    ShareArgs {
        to: format!("/dev/acq{}-out", s.to),
        source,
        bytes: s.bytes.0,
        card: DeviceArgs {
            pattern: Some(d.pattern.unwrap_or(Pattern::COUNTER.0)),
            seed: Some(d.seed.unwrap_or(0)),
            block: d.block,
            ring_log2: d.ring_log2,
            ..DeviceArgs::default()
        },
        play_rate: s.play_rate.map(|r| r.0),
        map_verify: s.map_verify,
        close_capture_after: s.close_capture_after.map(|c| c.0),
        until_gone: s.until_gone,
        hold_s: s.hold_s,
    }
}

/// What `acq-stream --direction out` is asked to do for a play step.
pub fn playback_args(p: &PlayStep, card: &CardSpec) -> PlaybackArgs {
    let mode = match p.mode {
        PlayMode::Write => consumer::PlayMode::Write,
        PlayMode::Splice => consumer::PlayMode::Splice,
        PlayMode::Vmsplice => consumer::PlayMode::Vmsplice,
    };
    let source = match p.source {
        PlaySource::Pattern => SourcePath::Pattern,
        PlaySource::Zero => SourcePath::Zero,
    };
    let mut a = PlaybackArgs::new(format!("/dev/acq{}-out", p.card), mode, source, p.bytes.0);
    a.timeout = Some(p.timeout_s as f64);
    a.verify = p.verify;
    if let Some(c) = p.chunk {
        a.write_size = c.0;
    }
    a.pipe_size = p.pipe_size.map(|s| s.0);
    a.buffers = p.buffers;
    a.gift = p.gift;
    a.reuse_before_release = p.reuse_before_release;
    if let Some(at) = p.pause_at {
        a.pause_at = Some(at.0);
        a.pause_ms = p.pause_ms;
    }
    // The card's settings, but the playback rate is the step's (the capture rate is not).
    // The capture rate and transfer mode (BAR2 or DMA) are the capture channel's own;
    // playback always moves its data by DMA.
    a.card = DeviceArgs {
        rate: Some(p.rate.map_or(0, |r| r.0)),
        transfer: None,
        ..device_args(&card.device)
    };
    a
}

/// The guest block device of capture disk `d`: /dev/vda, /dev/vdb, ...
pub fn disk_device(d: usize) -> String {
    format!("/dev/vd{}", (b'a' + d as u8) as char)
}

/// Where the file system of capture disk `d` is mounted (sink `disk_file`).
pub fn disk_mount(d: usize) -> String {
    format!("/mnt/vd{}", (b'a' + d as u8) as char)
}

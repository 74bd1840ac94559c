//! The command line: modes, sinks and every option, parsed and checked together.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Splice,
    Mmap,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Splice => "splice",
            Mode::Mmap => "mmap",
        }
    }
}

/// Where the stream goes.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum SinkSpec {
    Null,
    File(String),
    /// A TCP connection over loopback to a receiving thread of this process.
    Tcp,
}

impl SinkSpec {
    pub(crate) fn parse(s: &str) -> Result<SinkSpec, String> {
        match s {
            "" => Err("empty sink".into()),
            "/dev/null" | "null" => Ok(SinkSpec::Null),
            "tcp" => Ok(SinkSpec::Tcp),
            p if p.starts_with('/') => Ok(SinkSpec::File(p.into())),
            other => Err(format!(
                "bad sink {other:?} (expected /dev/null, an absolute file path, or tcp)"
            )),
        }
    }

    pub(crate) fn name(&self) -> String {
        match self {
            SinkSpec::Null => "/dev/null".into(),
            SinkSpec::File(p) => p.clone(),
            SinkSpec::Tcp => "tcp".into(),
        }
    }
}

pub(crate) struct Args {
    pub(crate) device: String,
    pub(crate) mode: Mode,
    pub(crate) raw: bool,
    pub(crate) bytes: u64,
    pub(crate) verify: bool,
    pub(crate) sink: SinkSpec,
    pub(crate) tee: Option<SinkSpec>,
    pub(crate) pipe_size: Option<usize>,
    pub(crate) block: Option<u32>,
    pub(crate) ring_log2: Option<u32>,
    pub(crate) transfer: Option<String>,
    pub(crate) rate: Option<u64>,
    pub(crate) pattern: Option<u32>,
    pub(crate) seed: Option<u64>,
    pub(crate) irq_count: Option<u32>,
    pub(crate) irq_time_us: Option<u32>,
    pub(crate) read_size: usize,
    pub(crate) nonblock: bool,
    pub(crate) progress: bool,
    pub(crate) restart_at: Option<u64>,
    pub(crate) pause_at: Option<u64>,
    pub(crate) pause_ms: u64,
    pub(crate) hold_at: Option<u64>,
    pub(crate) hold_s: f64,
    pub(crate) timeout: Option<f64>,
    pub(crate) stop_on_signal: bool,
    /// `--signal NAME` with `--signal-at-ms` or `--signal-at-bytes` (and `--signal-stop-ms`).
    pub(crate) signal: Option<signaler::Plan>,
    /// `--control`: actions of a second process sharing the file.
    pub(crate) controls: Vec<controller::Planned>,
    /// `--reopen-at`: close and open the device again after this many bytes.
    pub(crate) reopen_at: Option<u64>,
    /// Capture what the card's playback channel receives (ACQ_CFG_LOOPBACK).
    pub(crate) loopback: bool,
    pub(crate) sink_opts: SinkOpts,
}

/// The sink-error options (module `sinkio`).
#[derive(Clone, Copy)]
pub(crate) struct SinkOpts {
    /// `--on-sink-error`; `None`: not given (`stop` for a disk).
    pub(crate) policy: Option<Policy>,
    pub(crate) retries: u32,
    pub(crate) retry_ms: u64,
    pub(crate) direct: bool,
    pub(crate) base: Option<u64>,
}

pub(crate) fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-stream: {msg}");
    eprintln!(
        "usage: acq-stream [--direction in] --device /dev/acqN --mode read|splice --bytes N [--verify] \
         [--sink /dev/null|FILE|tcp] [--tee /dev/null|FILE] [--pipe-size N] \
         [--block B] [--ring-log2 L] [--rate R] [--pattern counter|prbs|sine[:CH]|N] [--seed S] \
         [--transfer dma|bar2 | --bar2] [--irq-count C] [--irq-time-us T] [--read-size N] [--nonblock] \
         [--progress] [--restart-at N] \
         [--hold-at N [--hold-s S]] [--timeout SECONDS] [--stop-on-signal] [--raw] [--loopback] \
         [--on-sink-error stop|retry|skip] [--sink-retries N] [--sink-retry-ms MS] [--direct] \
         [--sink-base OFFSET]\n\
         or:    acq-stream --direction out ... (see acq_guest::playback)"
    );
    ExitCode::from(2)
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: "/dev/acq0".into(),
        mode: Mode::Read,
        raw: false,
        bytes: 0,
        verify: false,
        sink: SinkSpec::Null,
        tee: None,
        pipe_size: None,
        block: None,
        ring_log2: None,
        transfer: None,
        rate: None,
        pattern: None,
        seed: None,
        irq_count: None,
        irq_time_us: None,
        read_size: 1 << 20,
        nonblock: false,
        progress: false,
        restart_at: None,
        controls: Vec::new(),
        reopen_at: None,
        pause_at: None,
        pause_ms: 1000,
        hold_at: None,
        hold_s: 2.0,
        timeout: None,
        stop_on_signal: false,
        signal: None,
        loopback: false,
        sink_opts: SinkOpts {
            policy: None,
            retries: 3,
            retry_ms: 50,
            direct: false,
            base: None,
        },
    };
    let mut mode = None;
    let (mut sig, mut sig_when, mut sig_stop_ms) = (None, None, 1000u64);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(opt) = it.next() {
        let mut val = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let size = |name: &str, v: String| -> Result<u64, String> {
            acqdev::parse_size(&v).ok_or_else(|| format!("bad value for {name}: {v:?}"))
        };
        let small = |name: &str, v: u64| -> Result<u32, String> {
            u32::try_from(v).map_err(|_| format!("{name} too large: {v}"))
        };
        let secs = |name: &str, v: String| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|t| *t > 0.0 && t.is_finite())
                .ok_or_else(|| format!("bad {name} {v:?}"))
        };
        match opt.as_str() {
            "--device" => a.device = val(opt)?,
            "--direction" => {
                let d = val(opt)?;
                if d != "in" {
                    return Err(format!("--direction must be in or out, not {d:?}"));
                }
            }
            "--mode" => mode = Some(val(opt)?),
            "--raw" => a.raw = true,
            "--bytes" => a.bytes = size(opt, val(opt)?)?,
            "--verify" => a.verify = true,
            "--sink" => a.sink = SinkSpec::parse(&val(opt)?)?,
            "--tee" => a.tee = Some(SinkSpec::parse(&val(opt)?)?),
            "--pipe-size" => {
                let v = size(opt, val(opt)?)?;
                if !(4096..=(1 << 30)).contains(&v) {
                    return Err(format!("--pipe-size must be 4K .. 1G, not {v}"));
                }
                a.pipe_size = Some(v as usize);
            }
            "--block" => a.block = Some(small(opt, size(opt, val(opt)?)?)?),
            "--ring-log2" => a.ring_log2 = Some(small(opt, size(opt, val(opt)?)?)?),
            "--transfer" => {
                let v = val(opt)?;
                acqdev::set_transfer(&mut AcqConfig::default(), &v)?;
                a.transfer = Some(v);
            }
            "--bar2" => a.transfer = Some("bar2".into()),
            "--rate" => a.rate = Some(size(opt, val(opt)?)?),
            "--pattern" => {
                let v = val(opt)?;
                a.pattern =
                    Some(acqdev::parse_pattern(&v).ok_or_else(|| format!("bad pattern {v:?}"))?)
            }
            "--seed" => a.seed = Some(size(opt, val(opt)?)?),
            "--irq-count" => a.irq_count = Some(small(opt, size(opt, val(opt)?)?)?),
            "--irq-time-us" => a.irq_time_us = Some(small(opt, size(opt, val(opt)?)?)?),
            "--read-size" => {
                let v = size(opt, val(opt)?)?;
                if v == 0 || v > (1 << 30) {
                    return Err(format!("--read-size must be 1 .. 1G, not {v}"));
                }
                a.read_size = v as usize;
            }
            "--nonblock" => a.nonblock = true,
            "--loopback" => a.loopback = true,
            "--progress" => a.progress = true,
            "--stop-on-signal" => a.stop_on_signal = true,
            "--signal" => sig = Some(signaler::Sig::parse(&val(opt)?)?),
            "--signal-at-ms" => sig_when = Some(signaler::When::Ms(size(opt, val(opt)?)?)),
            "--signal-at-bytes" => sig_when = Some(signaler::When::Bytes(size(opt, val(opt)?)?)),
            "--signal-stop-ms" => sig_stop_ms = size(opt, val(opt)?)?,
            "--restart-at" => a.restart_at = Some(size(opt, val(opt)?)?),
            "--control" => a.controls.push(controller::parse(&val(opt)?)?),
            "--reopen-at" => a.reopen_at = Some(size(opt, val(opt)?)?),
            "--hold-at" => a.hold_at = Some(size(opt, val(opt)?)?),
            "--hold-s" => a.hold_s = secs(opt, val(opt)?)?,
            "--pause-at" => a.pause_at = Some(size(opt, val(opt)?)?),
            "--pause-ms" => a.pause_ms = size(opt, val(opt)?)?,
            "--timeout" => a.timeout = Some(secs(opt, val(opt)?)?),
            "--on-sink-error" => {
                let v = val(opt)?;
                a.sink_opts.policy = Some(Policy::parse(&v).ok_or_else(|| {
                    format!("bad --on-sink-error {v:?} (expected stop, retry or skip)")
                })?)
            }
            "--sink-retries" => a.sink_opts.retries = small(opt, size(opt, val(opt)?)?)?,
            "--sink-retry-ms" => a.sink_opts.retry_ms = size(opt, val(opt)?)?,
            "--direct" => a.sink_opts.direct = true,
            "--sink-base" => a.sink_opts.base = Some(size(opt, val(opt)?)?),
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.mode = match mode.as_deref() {
        Some("read") => Mode::Read,
        Some("splice") => Mode::Splice,
        Some("mmap") => Mode::Mmap,
        Some(m) => return Err(format!("mode {m:?} is not supported (read, splice, mmap)")),
        None => return Err("--mode is required (read, splice, mmap)".into()),
    };
    if a.bytes == 0 {
        return Err("--bytes N (N > 0) is required".into());
    }
    if a.raw {
        let dev_only = [
            (a.verify, "--verify"),
            (a.block.is_some(), "--block"),
            (a.ring_log2.is_some(), "--ring-log2"),
            (a.transfer.is_some(), "--transfer/--bar2"),
            (a.rate.is_some(), "--rate"),
            (a.pattern.is_some(), "--pattern"),
            (a.seed.is_some(), "--seed"),
            (a.irq_count.is_some(), "--irq-count"),
            (a.irq_time_us.is_some(), "--irq-time-us"),
            (a.restart_at.is_some(), "--restart-at"),
            (!a.controls.is_empty(), "--control"),
            (a.reopen_at.is_some(), "--reopen-at"),
            (a.loopback, "--loopback"),
        ];
        if let Some((_, name)) = dev_only.iter().find(|(set, _)| *set) {
            return Err(format!("{name} needs the card (not --raw)"));
        }
    }
    if a.raw && a.mode == Mode::Mmap {
        return Err("--mode mmap needs the card (not --raw)".into());
    }
    if a.tee.is_some() && a.mode != Mode::Splice {
        return Err("--tee needs --mode splice".into());
    }
    if matches!(a.tee, Some(SinkSpec::Tcp)) {
        return Err("--tee takes /dev/null or a file".into());
    }
    if a.pipe_size.is_some() && a.mode != Mode::Splice {
        return Err("--pipe-size needs --mode splice".into());
    }
    if a.hold_at.is_some() && a.mode != Mode::Splice {
        return Err("--hold-at needs --mode splice".into());
    }
    if a.pause_at.is_some() && a.mode != Mode::Read {
        return Err("--pause-at needs --mode read".into());
    }
    if !a.controls.is_empty() {
        // A RESET clears the driver's statistics, which a file or disk sink's account is
        // checked against: the controller streams to /dev/null.
        if a.mode == Mode::Mmap {
            return Err("--control needs --mode read or splice".into());
        }
        if a.sink != SinkSpec::Null || a.tee.is_some() {
            return Err("--control needs the /dev/null sink and no --tee".into());
        }
        if a.reopen_at.is_some() {
            return Err(
                "--reopen-at with --control: the controller shares the file, so a close \
                 would not end the session"
                    .into(),
            );
        }
    }
    if a.reopen_at.is_some() && a.mode == Mode::Mmap {
        return Err("--reopen-at needs --mode read or splice".into());
    }
    if a.pause_ms > 60_000 {
        return Err("--pause-ms at most 60000".into());
    }
    a.signal = match (sig, sig_when) {
        (Some(sig), Some(when)) if sig_stop_ms <= 60_000 => Some(signaler::Plan {
            sig,
            when,
            stop_ms: sig_stop_ms,
        }),
        (Some(_), Some(_)) => return Err("--signal-stop-ms at most 60000".into()),
        (None, None) => None,
        _ => {
            return Err(
                "--signal needs --signal-at-ms or --signal-at-bytes, and they need --signal".into(),
            )
        }
    };
    let so = &a.sink_opts;
    if !matches!(a.sink, SinkSpec::File(_))
        && (so.policy.is_some() || so.direct || so.base.is_some())
    {
        return Err("--on-sink-error, --direct and --sink-base need a file or disk --sink".into());
    }
    if so.retry_ms > 60_000 || so.retries > 1000 {
        return Err("--sink-retries at most 1000, --sink-retry-ms at most 60000".into());
    }
    if let (SinkSpec::File(s), Some(SinkSpec::File(t))) = (&a.sink, &a.tee) {
        if s == t {
            return Err("--sink and --tee must be different files".into());
        }
    }
    Ok(a)
}

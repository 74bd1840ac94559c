//! `acq-stream --direction out`'s command line: the write path, the data source, the run's
//! settings.

use super::*;

/// How the data reaches the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Write,
    /// writev() of 4 KiB pieces of each `--write-size` chunk.
    Writev,
    Splice,
    /// sendfile() from the `--source` file (or /dev/zero is refused: a file is needed).
    Sendfile,
    /// vmsplice() of user buffers into a pipe, splice() from the pipe to the card.
    Vmsplice,
}

impl Mode {
    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Write => "write",
            Mode::Writev => "writev",
            Mode::Splice => "splice",
            Mode::Sendfile => "sendfile",
            Mode::Vmsplice => "vmsplice",
        }
    }
}

/// The modes, for messages.
pub(super) const MODES: &str = "write, writev, splice, sendfile, vmsplice";

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SourceSpec {
    Pattern,
    Zero,
    File(String),
}

impl SourceSpec {
    pub(super) fn name(&self) -> String {
        match self {
            SourceSpec::Pattern => "pattern".into(),
            SourceSpec::Zero => "/dev/zero".into(),
            SourceSpec::File(p) => p.clone(),
        }
    }

    pub(super) fn path(&self) -> Option<&str> {
        match self {
            SourceSpec::Pattern => None,
            SourceSpec::Zero => Some("/dev/zero"),
            SourceSpec::File(p) => Some(p),
        }
    }
}

#[derive(Debug)]
pub(super) struct Args {
    pub(super) device: String,
    pub(super) mode: Mode,
    pub(super) source: SourceSpec,
    pub(super) bytes: u64,
    pub(super) write_size: usize,
    pub(super) pipe_size: Option<usize>,
    pub(super) block: Option<u32>,
    pub(super) ring_log2: Option<u32>,
    pub(super) rate: Option<u64>,
    pub(super) pattern: Option<u32>,
    pub(super) seed: Option<u64>,
    pub(super) irq_count: Option<u32>,
    pub(super) irq_time_us: Option<u32>,
    pub(super) nonblock: bool,
    pub(super) corrupt_at: Option<u64>,
    pub(super) pause_at: Option<u64>,
    pub(super) pause_ms: u64,
    pub(super) verify: bool,
    pub(super) timeout: Option<f64>,
    /// vmsplice: buffers cycled, SPLICE_F_GIFT, reuse without waiting for the release.
    pub(super) buffers: usize,
    pub(super) gift: bool,
    pub(super) reuse_before_release: bool,
}

pub(super) fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        device: "/dev/acq0-out".into(),
        mode: Mode::Write,
        source: SourceSpec::Pattern,
        bytes: 0,
        write_size: 1 << 20,
        pipe_size: None,
        block: None,
        ring_log2: None,
        rate: None,
        pattern: None,
        seed: None,
        irq_count: None,
        irq_time_us: None,
        nonblock: false,
        corrupt_at: None,
        pause_at: None,
        pause_ms: 500,
        verify: false,
        timeout: None,
        buffers: 4,
        gift: false,
        reuse_before_release: false,
    };
    let mut it = argv.iter();
    while let Some(opt) = it.next() {
        let mut val = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let size =
            |name: &str, v: String| parse_size(&v).ok_or(format!("bad value for {name}: {v:?}"));
        let small = |name: &str, v: u64| u32::try_from(v).map_err(|_| format!("{name} too large"));
        match opt.as_str() {
            "--direction" => {
                let v = val(opt)?;
                if v != "out" {
                    return Err(format!("--direction {v:?} reached the playback path"));
                }
            }
            "--device" => a.device = val(opt)?,
            "--mode" => {
                a.mode = match val(opt)?.as_str() {
                    "write" => Mode::Write,
                    "writev" => Mode::Writev,
                    "splice" => Mode::Splice,
                    "sendfile" => Mode::Sendfile,
                    "vmsplice" => Mode::Vmsplice,
                    m => return Err(format!("--direction out: mode {m:?} ({MODES})")),
                }
            }
            "--source" => {
                a.source = match val(opt)?.as_str() {
                    "pattern" => SourceSpec::Pattern,
                    "zero" | "/dev/zero" => SourceSpec::Zero,
                    p if p.starts_with('/') => SourceSpec::File(p.into()),
                    s => {
                        return Err(format!(
                            "bad source {s:?} (pattern, zero, or an absolute file path)"
                        ))
                    }
                }
            }
            "--bytes" => a.bytes = size(opt, val(opt)?)?,
            "--write-size" => {
                let v = size(opt, val(opt)?)?;
                if v == 0 || v > (1 << 30) {
                    return Err(format!("--write-size must be 1 .. 1G, not {v}"));
                }
                a.write_size = v as usize;
            }
            "--pipe-size" => {
                let v = size(opt, val(opt)?)?;
                if !(4096..=(1 << 30)).contains(&v) {
                    return Err(format!("--pipe-size must be 4K .. 1G, not {v}"));
                }
                a.pipe_size = Some(v as usize);
            }
            "--block" => a.block = Some(small(opt, size(opt, val(opt)?)?)?),
            "--ring-log2" => a.ring_log2 = Some(small(opt, size(opt, val(opt)?)?)?),
            "--rate" => a.rate = Some(size(opt, val(opt)?)?),
            "--pattern" => {
                let v = val(opt)?;
                a.pattern = Some(parse_pattern(&v).ok_or_else(|| format!("bad pattern {v:?}"))?)
            }
            "--seed" => a.seed = Some(size(opt, val(opt)?)?),
            "--irq-count" => a.irq_count = Some(small(opt, size(opt, val(opt)?)?)?),
            "--irq-time-us" => a.irq_time_us = Some(small(opt, size(opt, val(opt)?)?)?),
            "--nonblock" => a.nonblock = true,
            "--corrupt-at" => a.corrupt_at = Some(size(opt, val(opt)?)?),
            "--pause-at" => a.pause_at = Some(size(opt, val(opt)?)?),
            "--pause-ms" => a.pause_ms = size(opt, val(opt)?)?,
            "--verify" => a.verify = true,
            "--buffers" => {
                let v = size(opt, val(opt)?)?;
                if !(1..=1024).contains(&v) {
                    return Err(format!("--buffers must be 1 .. 1024, not {v}"));
                }
                a.buffers = v as usize;
            }
            "--gift" => a.gift = true,
            "--reuse-before-release" => a.reuse_before_release = true,
            "--timeout" => {
                let v = val(opt)?;
                a.timeout = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|t| *t > 0.0 && t.is_finite())
                        .ok_or_else(|| format!("bad --timeout {v:?}"))?,
                );
            }
            other => return Err(format!("unknown argument for --direction out: {other:?}")),
        }
    }
    if a.bytes == 0 {
        return Err("--bytes N (N > 0) is required".into());
    }
    if a.corrupt_at.is_some() && a.source != SourceSpec::Pattern {
        return Err("--corrupt-at needs --source pattern".into());
    }
    if a.pipe_size.is_some() && !matches!(a.mode, Mode::Splice | Mode::Vmsplice) {
        return Err("--pipe-size needs --mode splice or vmsplice".into());
    }
    if (a.gift || a.reuse_before_release) && a.mode != Mode::Vmsplice {
        return Err("--gift and --reuse-before-release need --mode vmsplice".into());
    }
    if a.gift && a.reuse_before_release {
        return Err("--gift gives each buffer away: there is nothing to reuse".into());
    }
    if a.mode == Mode::Sendfile && !matches!(a.source, SourceSpec::File(_)) {
        return Err("--mode sendfile needs --source FILE (sendfile() reads a file)".into());
    }
    Ok(a)
}

//! `acq-stream [--direction in]`: a capture consumer's command line as a type. The
//! harness builds it from a scenario step, the tool parses it back, and both run
//! [`CaptureArgs::check`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::argv::{push, push_if, ArgError, Argv};
use super::device::{DeviceArgs, DEVICE_USAGE};
use super::plan::{At, ControlPlan, Signal, SignalPlan, STOP_MS_DEFAULT, STOP_MS_MAX};

/// How a consumer reads the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// read(2) into a user buffer.
    Read,
    /// splice(2) from the device into a pipe, and from the pipe to the sink.
    Splice,
    /// The mmap ring.
    Mmap,
}

impl CaptureMode {
    /// The name `--mode` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Read => "read",
            CaptureMode::Splice => "splice",
            CaptureMode::Mmap => "mmap",
        }
    }

    fn parse(s: &str) -> Result<CaptureMode, String> {
        [CaptureMode::Read, CaptureMode::Splice, CaptureMode::Mmap]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("mode {s:?} is not supported (read, splice, mmap)"))
    }
}

/// Where the stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkPath {
    /// /dev/null.
    Null,
    /// A file or a block device, by absolute path.
    File(String),
    /// A TCP connection over loopback to a receiving thread of the consumer.
    Tcp,
}

impl SinkPath {
    /// Parses `/dev/null` (or `null`), `tcp` or an absolute path.
    pub fn parse(s: &str) -> Result<SinkPath, String> {
        match s {
            "" => Err("empty sink".into()),
            "/dev/null" | "null" => Ok(SinkPath::Null),
            "tcp" => Ok(SinkPath::Tcp),
            p if p.starts_with('/') => Ok(SinkPath::File(p.into())),
            other => Err(format!(
                "bad sink {other:?} (expected /dev/null, an absolute file path, or tcp)"
            )),
        }
    }

    /// The name `parse` takes.
    pub fn name(&self) -> String {
        match self {
            SinkPath::Null => "/dev/null".into(),
            SinkPath::File(p) => p.clone(),
            SinkPath::Tcp => "tcp".into(),
        }
    }
}

/// What a consumer does when a write to its sink fails (docs/sink.md, "Consumer
/// behaviour").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SinkPolicy {
    /// Report the failed range as lost and end the stream.
    Stop,
    /// Write the range again (`sink_retries`, `sink_retry_ms`); when the retries are used
    /// up, as `stop`.
    Retry,
    /// Report the range as lost, leave it unwritten (a hole on a raw disk), go on.
    Skip,
}

impl SinkPolicy {
    /// The name `--on-sink-error` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkPolicy::Stop => "stop",
            SinkPolicy::Retry => "retry",
            SinkPolicy::Skip => "skip",
        }
    }

    /// Parses `stop`, `retry` or `skip`.
    pub fn parse(s: &str) -> Result<SinkPolicy, String> {
        [SinkPolicy::Stop, SinkPolicy::Retry, SinkPolicy::Skip]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("bad policy {s:?} (expected stop, retry or skip)"))
    }
}

/// How a file or disk sink's write errors are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkOpts {
    /// `--on-sink-error`; `None`: not given (`stop` for a disk).
    pub policy: Option<SinkPolicy>,
    /// `--sink-retries`: tries after the first (policy retry).
    pub retries: u32,
    /// `--sink-retry-ms`: the first wait, doubled per retry.
    pub retry_ms: u64,
    /// `--direct`: O_DIRECT.
    pub direct: bool,
    /// `--sink-base`: the stream offset of disk offset 0.
    pub base: Option<u64>,
}

impl Default for SinkOpts {
    fn default() -> SinkOpts {
        SinkOpts {
            policy: None,
            retries: 3,
            retry_ms: 50,
            direct: false,
            base: None,
        }
    }
}

/// The limits of the sink options.
pub const SINK_RETRIES_MAX: u32 = 1000;
/// The longest first wait between retries.
pub const SINK_RETRY_MS_MAX: u64 = 60_000;
/// The largest read or write per call, and the largest pipe.
pub const CHUNK_MAX: u64 = 1 << 30;
/// The smallest pipe (one page).
pub const PIPE_MIN: u64 = 4096;

/// Everything a capture consumer is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureArgs {
    /// `--device`.
    pub device: String,
    /// `--mode` (required).
    pub mode: CaptureMode,
    /// `--raw`: any file, no ioctls, no verification (the benchmark's peer).
    pub raw: bool,
    /// `--bytes` (required, > 0).
    pub bytes: u64,
    /// `--verify` every byte against the card's pattern.
    pub verify: bool,
    /// `--sink`.
    pub sink: SinkPath,
    /// `--tee` (mode splice): a second copy through tee().
    pub tee: Option<SinkPath>,
    /// `--pipe-size` (mode splice).
    pub pipe_size: Option<u64>,
    /// The card's settings.
    pub card: DeviceArgs,
    /// `--read-size`: bytes per read() or splice() call.
    pub read_size: u64,
    /// `--nonblock`: O_NONBLOCK and poll().
    pub nonblock: bool,
    /// `--progress` on standard error.
    pub progress: bool,
    /// `--restart-at`: STOP and START after this many bytes.
    pub restart_at: Option<u64>,
    /// `--pause-at` (mode read): stop reading once, for `pause_ms`.
    pub pause_at: Option<u64>,
    /// `--pause-ms`.
    pub pause_ms: u64,
    /// `--hold-at` (mode splice): keep the spliced pages for `hold_s`.
    pub hold_at: Option<u64>,
    /// `--hold-s`.
    pub hold_s: f64,
    /// `--timeout` in seconds.
    pub timeout: Option<f64>,
    /// `--stop-on-signal`: SIGUSR1 ends the stream.
    pub stop_on_signal: bool,
    /// `--signal ...`: a signal from outside.
    pub signal: Option<SignalPlan>,
    /// `--control ACTION@WHEN`...: a second process's actions.
    pub controls: Vec<ControlPlan>,
    /// `--reopen-at`: close and open the device again after this many bytes.
    pub reopen_at: Option<u64>,
    /// `--loopback`: capture what the playback channel receives.
    pub loopback: bool,
    /// The sink's write-error handling.
    pub sink_opts: SinkOpts,
}

/// The default `--read-size` (1 MiB).
pub const READ_SIZE_DEFAULT: u64 = 1 << 20;
/// The default `--pause-ms`.
pub const PAUSE_MS_DEFAULT: u64 = 1000;
/// The default `--hold-s`.
pub const HOLD_S_DEFAULT: f64 = 2.0;

impl CaptureArgs {
    /// A stream of `bytes` from `device` by `mode`, every other setting at its default.
    pub fn new(device: impl Into<String>, mode: CaptureMode, bytes: u64) -> CaptureArgs {
        CaptureArgs {
            device: device.into(),
            mode,
            raw: false,
            bytes,
            verify: false,
            sink: SinkPath::Null,
            tee: None,
            pipe_size: None,
            card: DeviceArgs::default(),
            read_size: READ_SIZE_DEFAULT,
            nonblock: false,
            progress: false,
            restart_at: None,
            pause_at: None,
            pause_ms: PAUSE_MS_DEFAULT,
            hold_at: None,
            hold_s: HOLD_S_DEFAULT,
            timeout: None,
            stop_on_signal: false,
            signal: None,
            controls: Vec::new(),
            reopen_at: None,
            loopback: false,
            sink_opts: SinkOpts::default(),
        }
    }

    /// The usage text.
    pub fn usage() -> String {
        format!(
            "acq-stream [--direction in] --device /dev/acqN --mode read|splice|mmap --bytes N \
             [--verify] [--sink /dev/null|FILE|tcp] [--tee /dev/null|FILE] [--pipe-size N] \
             {DEVICE_USAGE} [--read-size N] [--nonblock] [--progress] [--restart-at N] \
             [--pause-at N [--pause-ms MS]] [--hold-at N [--hold-s S]] [--timeout SECONDS] \
             [--stop-on-signal] [--signal int|term|kill|hup|stop (--signal-at-ms MS | \
             --signal-at-bytes N) [--signal-stop-ms MS]] [--control ACTION@WHEN]... \
             [--reopen-at N] [--raw] [--loopback] [--on-sink-error stop|retry|skip] \
             [--sink-retries N] [--sink-retry-ms MS] [--direct] [--sink-base OFFSET]"
        )
    }

    /// The command line (without the program name) that [`CaptureArgs::parse`] reads
    /// back into `self`. Settings at their default are left out.
    pub fn to_argv(&self) -> Vec<String> {
        let d = CaptureArgs::new("", self.mode, 0);
        let mut v = Vec::new();
        push(&mut v, "--device", &self.device);
        push(&mut v, "--mode", self.mode.as_str());
        push(&mut v, "--bytes", self.bytes);
        push_if(&mut v, "--raw", self.raw);
        push_if(&mut v, "--verify", self.verify);
        if self.sink != SinkPath::Null {
            push(&mut v, "--sink", self.sink.name());
        }
        if let Some(t) = &self.tee {
            push(&mut v, "--tee", t.name());
        }
        if let Some(p) = self.pipe_size {
            push(&mut v, "--pipe-size", p);
        }
        self.card.push_argv(&mut v);
        if self.read_size != d.read_size {
            push(&mut v, "--read-size", self.read_size);
        }
        push_if(&mut v, "--nonblock", self.nonblock);
        push_if(&mut v, "--progress", self.progress);
        if let Some(r) = self.restart_at {
            push(&mut v, "--restart-at", r);
        }
        if let Some(p) = self.pause_at {
            push(&mut v, "--pause-at", p);
        }
        if self.pause_ms != d.pause_ms {
            push(&mut v, "--pause-ms", self.pause_ms);
        }
        if let Some(h) = self.hold_at {
            push(&mut v, "--hold-at", h);
        }
        if self.hold_s != d.hold_s {
            push(&mut v, "--hold-s", self.hold_s);
        }
        if let Some(t) = self.timeout {
            push(&mut v, "--timeout", t);
        }
        push_if(&mut v, "--stop-on-signal", self.stop_on_signal);
        if let Some(s) = &self.signal {
            s.push_argv(&mut v);
        }
        for c in &self.controls {
            c.push_argv(&mut v);
        }
        if let Some(r) = self.reopen_at {
            push(&mut v, "--reopen-at", r);
        }
        push_if(&mut v, "--loopback", self.loopback);
        let (so, dso) = (&self.sink_opts, &d.sink_opts);
        if let Some(p) = so.policy {
            push(&mut v, "--on-sink-error", p.as_str());
        }
        if so.retries != dso.retries {
            push(&mut v, "--sink-retries", so.retries);
        }
        if so.retry_ms != dso.retry_ms {
            push(&mut v, "--sink-retry-ms", so.retry_ms);
        }
        push_if(&mut v, "--direct", so.direct);
        if let Some(b) = so.base {
            push(&mut v, "--sink-base", b);
        }
        v
    }

    /// Parses a command line (without the program name) and checks it.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<CaptureArgs, ArgError> {
        let mut a = CaptureArgs::new("/dev/acq0", CaptureMode::Read, 0);
        let mut mode = None;
        let (mut sig, mut sig_at, mut sig_stop_ms) = (None, None, STOP_MS_DEFAULT);
        let mut argv = Argv::new(args);
        while let Some(flag) = argv.next_flag() {
            let f = flag.as_str();
            if a.card.take(f, &mut argv)? {
                continue;
            }
            match f {
                "--device" => a.device = argv.value(f)?,
                "--direction" => {
                    let d = argv.value(f)?;
                    if d != "in" {
                        return Err(ArgError::new(f, format!("{d:?} is not in (a capture)")));
                    }
                }
                "--mode" => mode = Some(argv.with(f, CaptureMode::parse)?),
                "--raw" => a.raw = true,
                "--bytes" => a.bytes = argv.size(f)?,
                "--verify" => a.verify = true,
                "--sink" => a.sink = argv.with(f, SinkPath::parse)?,
                "--tee" => a.tee = Some(argv.with(f, SinkPath::parse)?),
                "--pipe-size" => a.pipe_size = Some(argv.size(f)?),
                "--read-size" => a.read_size = argv.size(f)?,
                "--nonblock" => a.nonblock = true,
                "--loopback" => a.loopback = true,
                "--progress" => a.progress = true,
                "--stop-on-signal" => a.stop_on_signal = true,
                "--signal" => sig = Some(argv.with(f, Signal::parse)?),
                "--signal-at-ms" => sig_at = Some(At::Ms(argv.size(f)?)),
                "--signal-at-bytes" => sig_at = Some(At::Bytes(argv.size(f)?)),
                "--signal-stop-ms" => sig_stop_ms = argv.size(f)?,
                "--restart-at" => a.restart_at = Some(argv.size(f)?),
                "--control" => a
                    .controls
                    .push(argv.with(f, |v| ControlPlan::parse(v).map_err(|e| e.why))?),
                "--reopen-at" => a.reopen_at = Some(argv.size(f)?),
                "--hold-at" => a.hold_at = Some(argv.size(f)?),
                "--hold-s" => a.hold_s = argv.secs(f)?,
                "--pause-at" => a.pause_at = Some(argv.size(f)?),
                "--pause-ms" => a.pause_ms = argv.size(f)?,
                "--timeout" => a.timeout = Some(argv.secs(f)?),
                "--on-sink-error" => a.sink_opts.policy = Some(argv.with(f, SinkPolicy::parse)?),
                "--sink-retries" => a.sink_opts.retries = argv.small(f)?,
                "--sink-retry-ms" => a.sink_opts.retry_ms = argv.size(f)?,
                "--direct" => a.sink_opts.direct = true,
                "--sink-base" => a.sink_opts.base = Some(argv.size(f)?),
                other => return Err(ArgError::line(format!("unknown argument {other:?}"))),
            }
        }
        a.mode = mode.ok_or_else(|| ArgError::new("--mode", "is required (read, splice, mmap)"))?;
        a.signal = match (sig, sig_at) {
            (Some(sig), Some(at)) => Some(SignalPlan {
                sig,
                at,
                stop_ms: sig_stop_ms,
            }),
            (None, None) => None,
            _ => {
                return Err(ArgError::new(
                    "--signal",
                    "needs --signal-at-ms or --signal-at-bytes, and they need --signal",
                ))
            }
        };
        a.check()?;
        Ok(a)
    }

    /// Checks the options against each other and against their limits: everything the
    /// tool refuses before it opens anything (a scenario step is checked by this too).
    pub fn check(&self) -> Result<(), ArgError> {
        let no = |flag: &str, why: &str| Err(ArgError::new(flag, why.to_string()));
        let splice = self.mode == CaptureMode::Splice;
        if self.bytes == 0 {
            return no("--bytes", "N > 0 is required");
        }
        self.card.check()?;
        if self.raw {
            let card_only = [
                (self.verify, "--verify"),
                (
                    self.card.any(),
                    "--block/--rate/--pattern/... (the card's settings)",
                ),
                (self.restart_at.is_some(), "--restart-at"),
                (!self.controls.is_empty(), "--control"),
                (self.reopen_at.is_some(), "--reopen-at"),
                (self.loopback, "--loopback"),
                (self.mode == CaptureMode::Mmap, "--mode mmap"),
            ];
            if let Some((_, name)) = card_only.iter().find(|(set, _)| *set) {
                return no(name, "needs the card (not --raw)");
            }
        }
        if let Some(p) = self.pipe_size {
            if !(PIPE_MIN..=CHUNK_MAX).contains(&p) {
                return Err(ArgError::new(
                    "--pipe-size",
                    format!("must be 4K .. 1G, not {p}"),
                ));
            }
            if !splice {
                return no("--pipe-size", "needs --mode splice");
            }
        }
        if self.read_size == 0 || self.read_size > CHUNK_MAX {
            return Err(ArgError::new(
                "--read-size",
                format!("must be 1 .. 1G, not {}", self.read_size),
            ));
        }
        if let Some(t) = &self.tee {
            if !splice {
                return no("--tee", "needs --mode splice");
            }
            if *t == SinkPath::Tcp {
                return no("--tee", "takes /dev/null or a file");
            }
            if let (SinkPath::File(s), SinkPath::File(t)) = (&self.sink, t) {
                if s == t {
                    return no("--tee", "must be a different file than --sink");
                }
            }
        }
        if self.hold_at.is_some() && !splice {
            return no("--hold-at", "needs --mode splice");
        }
        if self.pause_at.is_some() && self.mode != CaptureMode::Read {
            return no("--pause-at", "needs --mode read");
        }
        if self.pause_ms > STOP_MS_MAX {
            return no("--pause-ms", "at most 60000");
        }
        for (at, flag) in [
            (self.restart_at, "--restart-at"),
            (self.pause_at, "--pause-at"),
            (self.reopen_at, "--reopen-at"),
            (self.hold_at, "--hold-at"),
        ] {
            if at.is_some_and(|at| at >= self.bytes) {
                return no(flag, "must be less than --bytes (it would never happen)");
            }
        }
        if !self.controls.is_empty() {
            // A RESET clears the driver's statistics, which a file or disk sink's account
            // is checked against: the controller streams to /dev/null.
            if self.mode == CaptureMode::Mmap {
                return no("--control", "needs --mode read or splice");
            }
            if self.sink != SinkPath::Null || self.tee.is_some() {
                return no("--control", "needs the /dev/null sink and no --tee");
            }
            if self.reopen_at.is_some() {
                return no(
                    "--reopen-at",
                    "not with --control: the controller shares the file, so a close would \
                     not end the session",
                );
            }
        }
        if self.reopen_at.is_some() && self.mode == CaptureMode::Mmap {
            return no("--reopen-at", "needs --mode read or splice");
        }
        if let Some(s) = &self.signal {
            if s.stop_ms > STOP_MS_MAX {
                return no("--signal-stop-ms", "at most 60000");
            }
            if matches!(s.at, At::Bytes(b) if b >= self.bytes) {
                return no(
                    "--signal-at-bytes",
                    "must be less than --bytes (it would never be sent)",
                );
            }
        }
        let so = &self.sink_opts;
        if !matches!(self.sink, SinkPath::File(_)) {
            let set = [
                (so.policy.is_some(), "--on-sink-error"),
                (so.direct, "--direct"),
                (so.base.is_some(), "--sink-base"),
            ];
            if let Some((_, flag)) = set.iter().find(|(s, _)| *s) {
                return no(flag, "needs a file or disk --sink");
            }
        }
        if so.retries > SINK_RETRIES_MAX {
            return no("--sink-retries", "at most 1000");
        }
        if so.retry_ms > SINK_RETRY_MS_MAX {
            return no("--sink-retry-ms", "at most 60000");
        }
        Ok(())
    }
}

//! `acq-stream --direction out`: a playback producer's command line as a type, built by
//! the harness, parsed and checked by the tool with the same rules.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::argv::{push, push_if, ArgError, Argv};
use super::capture::{CHUNK_MAX, PIPE_MIN};
use super::device::{DeviceArgs, DEVICE_USAGE};
use super::plan::STOP_MS_MAX;

/// How the data reaches the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayMode {
    /// write(2) of each `--write-size` chunk.
    Write,
    /// writev(2) of 4 KiB pieces of each chunk.
    Writev,
    /// splice(2) from a pipe a thread fills.
    Splice,
    /// sendfile(2) from the `--source` file.
    Sendfile,
    /// vmsplice(2) of user buffers into a pipe, splice(2) from the pipe to the card.
    Vmsplice,
}

impl PlayMode {
    const ALL: [PlayMode; 5] = [
        PlayMode::Write,
        PlayMode::Writev,
        PlayMode::Splice,
        PlayMode::Sendfile,
        PlayMode::Vmsplice,
    ];

    /// The name `--mode` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            PlayMode::Write => "write",
            PlayMode::Writev => "writev",
            PlayMode::Splice => "splice",
            PlayMode::Sendfile => "sendfile",
            PlayMode::Vmsplice => "vmsplice",
        }
    }

    fn parse(s: &str) -> Result<PlayMode, String> {
        PlayMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "mode {s:?} is not a playback mode (write, writev, splice, sendfile, vmsplice)"
                )
            })
    }
}

/// Where the played data comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourcePath {
    /// The card's pattern from offset 0, generated in the guest.
    Pattern,
    /// /dev/zero.
    Zero,
    /// A file, by absolute path.
    File(String),
}

impl SourcePath {
    /// Parses `pattern`, `zero` (or `/dev/zero`) or an absolute path.
    pub fn parse(s: &str) -> Result<SourcePath, String> {
        match s {
            "pattern" => Ok(SourcePath::Pattern),
            "zero" | "/dev/zero" => Ok(SourcePath::Zero),
            p if p.starts_with('/') => Ok(SourcePath::File(p.into())),
            s => Err(format!(
                "bad source {s:?} (pattern, zero, or an absolute file path)"
            )),
        }
    }

    /// The name in reports.
    pub fn name(&self) -> String {
        match self {
            SourcePath::Pattern => "pattern".into(),
            SourcePath::Zero => "/dev/zero".into(),
            SourcePath::File(p) => p.clone(),
        }
    }

    /// The file to read, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            SourcePath::Pattern => None,
            SourcePath::Zero => Some("/dev/zero"),
            SourcePath::File(p) => Some(p),
        }
    }

    fn arg(&self) -> String {
        match self {
            SourcePath::Zero => "zero".into(),
            s => s.name(),
        }
    }
}

/// The vmsplice buffers cycled when `--buffers` is not given.
pub const BUFFERS_DEFAULT: u32 = 4;

/// The most vmsplice buffers.
pub const BUFFERS_MAX: u32 = 1024;

/// Everything a playback producer is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaybackArgs {
    /// `--device` (`/dev/acqN-out`).
    pub device: String,
    /// `--mode`.
    pub mode: PlayMode,
    /// `--source`.
    pub source: SourcePath,
    /// `--bytes` (required, > 0).
    pub bytes: u64,
    /// `--write-size`: bytes per call.
    pub write_size: u64,
    /// `--pipe-size` (modes splice and vmsplice).
    pub pipe_size: Option<u64>,
    /// The card's settings (`--transfer` is the capture channel's: not taken).
    pub card: DeviceArgs,
    /// `--nonblock`: O_NONBLOCK and poll().
    pub nonblock: bool,
    /// `--corrupt-at`: flip a byte at this offset (source pattern).
    pub corrupt_at: Option<u64>,
    /// `--pause-at`: stop writing once, for `pause_ms` (an underrun).
    pub pause_at: Option<u64>,
    /// `--pause-ms`.
    pub pause_ms: u64,
    /// `--verify`: the card checks what it plays against the pattern.
    pub verify: bool,
    /// `--timeout` in seconds.
    pub timeout: Option<f64>,
    /// `--buffers` (vmsplice): user buffers cycled (none given: [`BUFFERS_DEFAULT`]).
    pub buffers: Option<u32>,
    /// `--gift` (vmsplice): SPLICE_F_GIFT, each buffer unmapped once queued.
    pub gift: bool,
    /// `--reuse-before-release` (vmsplice): refill without waiting for the release.
    pub reuse_before_release: bool,
}

/// The default `--write-size` (1 MiB).
pub const WRITE_SIZE_DEFAULT: u64 = 1 << 20;

impl PlaybackArgs {
    /// Plays `bytes` of `source` into `device` by `mode`, every other setting at its
    /// default.
    pub fn new(device: impl Into<String>, mode: PlayMode, source: SourcePath, bytes: u64) -> Self {
        PlaybackArgs {
            device: device.into(),
            mode,
            source,
            bytes,
            write_size: WRITE_SIZE_DEFAULT,
            pipe_size: None,
            card: DeviceArgs::default(),
            nonblock: false,
            corrupt_at: None,
            pause_at: None,
            pause_ms: 500,
            verify: false,
            timeout: None,
            buffers: None,
            gift: false,
            reuse_before_release: false,
        }
    }

    /// The usage text.
    pub fn usage() -> String {
        format!(
            "acq-stream --direction out --device /dev/acqN-out [--mode write|writev|splice|sendfile|vmsplice] \
             [--source pattern|zero|FILE] --bytes N [--write-size N] [--pipe-size N] {DEVICE_USAGE} \
             [--nonblock] [--corrupt-at N] [--pause-at N [--pause-ms MS]] [--verify] \
             [--timeout SECONDS] [--buffers N] [--gift | --reuse-before-release]"
        )
    }

    /// The command line (without the program name) that [`PlaybackArgs::parse`] reads
    /// back into `self`. Settings at their default are left out.
    pub fn to_argv(&self) -> Vec<String> {
        let d = PlaybackArgs::new("", self.mode, SourcePath::Pattern, 0);
        let mut v = Vec::new();
        push(&mut v, "--direction", "out");
        push(&mut v, "--device", &self.device);
        push(&mut v, "--mode", self.mode.as_str());
        push(&mut v, "--source", self.source.arg());
        push(&mut v, "--bytes", self.bytes);
        if self.write_size != d.write_size {
            push(&mut v, "--write-size", self.write_size);
        }
        if let Some(p) = self.pipe_size {
            push(&mut v, "--pipe-size", p);
        }
        self.card.push_argv(&mut v);
        push_if(&mut v, "--nonblock", self.nonblock);
        if let Some(c) = self.corrupt_at {
            push(&mut v, "--corrupt-at", c);
        }
        if let Some(p) = self.pause_at {
            push(&mut v, "--pause-at", p);
        }
        if self.pause_ms != d.pause_ms {
            push(&mut v, "--pause-ms", self.pause_ms);
        }
        push_if(&mut v, "--verify", self.verify);
        if let Some(t) = self.timeout {
            push(&mut v, "--timeout", t);
        }
        if let Some(b) = self.buffers {
            push(&mut v, "--buffers", b);
        }
        push_if(&mut v, "--gift", self.gift);
        push_if(&mut v, "--reuse-before-release", self.reuse_before_release);
        v
    }

    /// Parses a command line (without the program name) and checks it.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<PlaybackArgs, ArgError> {
        let mut a = PlaybackArgs::new("/dev/acq0-out", PlayMode::Write, SourcePath::Pattern, 0);
        let mut argv = Argv::new(args);
        while let Some(flag) = argv.next_flag() {
            let f = flag.as_str();
            if f != "--transfer" && f != "--bar2" && a.card.take(f, &mut argv)? {
                continue;
            }
            match f {
                "--direction" => {
                    let v = argv.value(f)?;
                    if v != "out" {
                        return Err(ArgError::new(f, format!("{v:?} reached the playback path")));
                    }
                }
                "--device" => a.device = argv.value(f)?,
                "--mode" => a.mode = argv.with(f, PlayMode::parse)?,
                "--source" => a.source = argv.with(f, SourcePath::parse)?,
                "--bytes" => a.bytes = argv.size(f)?,
                "--write-size" => a.write_size = argv.size(f)?,
                "--pipe-size" => a.pipe_size = Some(argv.size(f)?),
                "--nonblock" => a.nonblock = true,
                "--corrupt-at" => a.corrupt_at = Some(argv.size(f)?),
                "--pause-at" => a.pause_at = Some(argv.size(f)?),
                "--pause-ms" => a.pause_ms = argv.size(f)?,
                "--verify" => a.verify = true,
                "--buffers" => a.buffers = Some(argv.small(f)?),
                "--gift" => a.gift = true,
                "--reuse-before-release" => a.reuse_before_release = true,
                "--timeout" => a.timeout = Some(argv.secs(f)?),
                "--transfer" | "--bar2" => {
                    return Err(ArgError::new(
                        f,
                        "is the capture channel's: playback always moves its data by DMA",
                    ))
                }
                other => {
                    return Err(ArgError::line(format!(
                        "unknown argument for --direction out: {other:?}"
                    )))
                }
            }
        }
        a.check()?;
        Ok(a)
    }

    /// Checks the options against each other and against their limits (a scenario's
    /// play step is checked by this too).
    pub fn check(&self) -> Result<(), ArgError> {
        let no = |flag: &str, why: &str| Err(ArgError::new(flag, why.to_string()));
        let vmsplice = self.mode == PlayMode::Vmsplice;
        if self.bytes == 0 {
            return no("--bytes", "N > 0 is required");
        }
        if self.card.transfer.is_some() {
            return no(
                "--transfer",
                "is the capture channel's: playback always moves its data by DMA",
            );
        }
        self.card.check()?;
        if self.write_size == 0 || self.write_size > CHUNK_MAX {
            return Err(ArgError::new(
                "--write-size",
                format!("must be 1 .. 1G, not {}", self.write_size),
            ));
        }
        if let Some(p) = self.pipe_size {
            if !(PIPE_MIN..=CHUNK_MAX).contains(&p) {
                return Err(ArgError::new(
                    "--pipe-size",
                    format!("must be 4K .. 1G, not {p}"),
                ));
            }
            if !matches!(self.mode, PlayMode::Splice | PlayMode::Vmsplice) {
                return no("--pipe-size", "needs --mode splice or vmsplice");
            }
        }
        if self.corrupt_at.is_some() && self.source != SourcePath::Pattern {
            return no("--corrupt-at", "needs --source pattern");
        }
        if self.pause_ms > STOP_MS_MAX {
            return no("--pause-ms", "at most 60000");
        }
        for (at, flag) in [
            (self.corrupt_at, "--corrupt-at"),
            (self.pause_at, "--pause-at"),
        ] {
            if at.is_some_and(|at| at >= self.bytes) {
                return no(flag, "must be less than --bytes (it would never happen)");
            }
        }
        if let Some(b) = self.buffers.filter(|b| !(1..=BUFFERS_MAX).contains(b)) {
            return Err(ArgError::new(
                "--buffers",
                format!("must be 1 .. {BUFFERS_MAX}, not {b}"),
            ));
        }
        if !vmsplice && self.buffers.is_some() {
            return no("--buffers", "needs --mode vmsplice");
        }
        if (self.gift || self.reuse_before_release) && !vmsplice {
            return no(
                if self.gift {
                    "--gift"
                } else {
                    "--reuse-before-release"
                },
                "needs --mode vmsplice",
            );
        }
        if self.gift && self.reuse_before_release {
            return no(
                "--reuse-before-release",
                "not with --gift: a gifted buffer is given away, there is nothing to reuse",
            );
        }
        if self.mode == PlayMode::Sendfile && !matches!(self.source, SourcePath::File(_)) {
            return no(
                "--mode",
                "sendfile needs --source FILE (sendfile() reads a file)",
            );
        }
        Ok(())
    }
}

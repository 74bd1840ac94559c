//! The workload steps of a scenario and their settings (`share` has its own module:
//! `format::share`).

use super::*;

/// One workload step. Written as an object with exactly one key naming the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Stream from a card with `acq-stream` and verify what arrives.
    Stream(StreamStep),
    /// Play a stream into a card's playback channel (`/dev/acqN-out`, `acq-stream
    /// --direction out`); the card verifies what it receives.
    Play(PlayStep),
    /// Play one card's capture ring on a card's playback channel with no CPU copy
    /// (dma-buf, `acq-share`); the receiving card verifies every byte.
    Share(super::share::ShareStep),
    /// Run a shell command in the guest.
    Exec(ExecStep),
    /// Wait.
    SleepMs(u64),
    /// Change a card's settings through the driver (`ACQ_IOC_SET_CONFIG`, while stopped);
    /// they persist for later opens.
    Config(ConfigStep),
    /// Reset a card through the driver (`ACQ_IOC_RESET`: stop, soft reset, clear stats).
    Reset(CardRef),
}

/// A settings change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigStep {
    /// Which card.
    #[serde(default)]
    pub card: usize,
    /// The settings to change (others keep their value).
    pub device: DeviceSettings,
}

/// A card, by index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardRef {
    /// Which card.
    #[serde(default)]
    pub card: usize,
}

/// A stream from one card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamStep {
    /// Which card (index into `cards`).
    #[serde(default)]
    pub card: usize,
    /// How the consumer reads: `read`, `splice` or `mmap`.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Where the data goes.
    #[serde(default = "default_sink")]
    pub sink: Sink,
    /// How many bytes to stream.
    pub bytes: Size,
    /// Bytes per read()/splice() call (default: the card's block size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Size>,
    /// Pipe size for splice (F_SETPIPE_SZ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe_size: Option<Size>,
    /// Splice mode: a second copy of the stream through tee() into this sink (`"null"` or
    /// `"tmpfs"`), verified like the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tee: Option<Sink>,
    /// Stop and restart the capture (ACQ_IOC_STOP / START) after this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<Size>,
    /// Mode `read`: stop reading once, after this many bytes, for `pause_ms` (the card
    /// fills the ring and runs out of buffers; longer than the FIFO lasts, it overflows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_at: Option<Size>,
    /// How long the pause lasts (at most 60,000 ms).
    #[serde(default = "default_pause_ms")]
    pub pause_ms: u64,
    /// A signal for the consumer at a time or byte offset (`int`, `term`, `kill`, `hup`:
    /// it must be gone within `exit_within_ms`; `stop`: stopped, then continued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<super::signal::SignalSpec>,
    /// ioctls (STOP, START, RESET, SET_CONFIG) and a second open() from a second process
    /// that shares the consumer's file, at times or byte counts (modes `read` and
    /// `splice`, the `null` sink, no `tee`). A STOP or RESET ends the session: the consumer
    /// goes on in the next one (docs/scenarios.md, "Control from a second process").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control: Vec<super::control::ControlStep>,
    /// Close the device after this many bytes and open it again (a new session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopen_at: Option<Size>,
    /// Verify every byte against the card's pattern.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Disk sinks: write with O_DIRECT (`acq-stream --direct`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// Disk sinks: what the consumer does when a write fails (docs/sink.md, "Consumer
    /// behaviour"). Default `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_sink_error: Option<SinkErrorPolicy>,
    /// Policy `retry`: tries per failed write after the first (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_retries: Option<u32>,
    /// Policy `retry`: wait before the first retry, doubled for each further one (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_retry_ms: Option<u64>,
    /// Seconds this step may take.
    #[serde(default = "default_step_timeout")]
    pub timeout_s: u64,
}

/// A stream into one card's playback channel (host -> card).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlayStep {
    /// Which card (index into `cards`).
    #[serde(default)]
    pub card: usize,
    /// How the data reaches the card: `write` (write(2)), `splice` (through a pipe) or
    /// `vmsplice` (user buffers lent to a pipe, then spliced: no copy).
    #[serde(default = "default_play_mode")]
    pub mode: PlayMode,
    /// What is played: `pattern` (the card's pattern from offset 0, which the card
    /// verifies) or `zero` (/dev/zero: every block mismatches).
    #[serde(default = "default_play_source")]
    pub source: PlaySource,
    /// How many bytes to play.
    pub bytes: Size,
    /// Bytes per write()/splice() call (default 1M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Size>,
    /// Pipe size for splice and vmsplice (F_SETPIPE_SZ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe_size: Option<Size>,
    /// Mode `vmsplice`: buffers of `chunk` bytes cycled (default 4); each is written again
    /// only once the driver released it (`ACQ_IOC_PB_RELEASE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffers: Option<u32>,
    /// Mode `vmsplice`: each buffer is given away (SPLICE_F_GIFT), unmapped once queued and
    /// never waited for (a new one per chunk); the driver's page references must keep it
    /// valid until the card read it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gift: bool,
    /// Mode `vmsplice`: a buffer is written again without waiting for its release (the
    /// hazard: the card reads the new bytes where it expected the old, and counts
    /// mismatches). Needs `verify: false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_before_release: bool,
    /// Output rate of the card in bytes per second (default 0: as fast as the data comes,
    /// never an underrun). The card's `device` pattern, seed, block size and moderation
    /// apply to the playback channel too; its capture `rate` does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Size>,
    /// Stop writing once, after this many bytes, for `pause_ms` (an underrun at a rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_at: Option<Size>,
    /// How long the pause lasts.
    #[serde(default = "default_pause_ms")]
    pub pause_ms: u64,
    /// The step fails unless the card verified every byte and saw no mismatch.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Run beside the steps that follow (a writer while a capture streams); the scenario
    /// waits for it after its last step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
    /// Seconds this step may take.
    #[serde(default = "default_step_timeout")]
    pub timeout_s: u64,
}

/// How a player writes to the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlayMode {
    /// write(2) from a user buffer.
    Write,
    /// splice(2) from a pipe (a thread writes the data into it).
    Splice,
    /// vmsplice(2) of user buffers into a pipe, then splice(2) to the card.
    Vmsplice,
}

/// What a player plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlaySource {
    /// The card's pattern, generated in the guest.
    Pattern,
    /// /dev/zero.
    Zero,
}

fn default_play_mode() -> PlayMode {
    PlayMode::Write
}
fn default_play_source() -> PlaySource {
    PlaySource::Pattern
}
fn default_pause_ms() -> u64 {
    1000
}
/// The longest consumer pause a stream step takes (a minute).
pub(super) const PAUSE_MS_MAX: u64 = acq_wire::consumer::plan::STOP_MS_MAX;

fn default_mode() -> Mode {
    Mode::Read
}
fn default_sink() -> Sink {
    Sink::Null
}
fn default_step_timeout() -> u64 {
    300
}

/// How a consumer reads the card: `acq-stream --mode`'s own type.
pub use acq_wire::consumer::CaptureMode as Mode;

/// What a consumer does when a write to its disk sink fails: `acq-stream
/// --on-sink-error`'s own type.
pub use acq_wire::consumer::SinkPolicy as SinkErrorPolicy;

/// Where streamed data goes: `"null"`, `"tmpfs"`, `"tcp"`, `{"disk": N}` or
/// `{"disk_file": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sink {
    /// /dev/null.
    Null,
    /// A file on tmpfs.
    Tmpfs,
    /// A TCP socket over loopback inside the guest (the consumer runs both ends).
    Tcp,
    /// The raw capture disk N (`/dev/vda` for 0), written from offset 0; the disk verifies
    /// what arrives on the host.
    Disk(usize),
    /// A file on an ext2 file system made on capture disk N (`mke2fs -b 4096`, mounted
    /// at `/mnt/vdX`, file `capture`); the disk needs `store: true` and `verify: false`,
    /// and the consumer verifies the file by reading it back from the disk.
    DiskFile(usize),
}

impl Sink {
    /// The capture disk this sink writes to.
    pub fn disk(self) -> Option<usize> {
        match self {
            Sink::Disk(d) | Sink::DiskFile(d) => Some(d),
            _ => None,
        }
    }
}

/// A guest shell command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecStep {
    /// The command, run with `/bin/sh -c`.
    pub cmd: String,
    /// The exit status it must have.
    #[serde(default)]
    pub status: i32,
    /// Run beside the steps that follow (a second process while a stream runs); the
    /// scenario waits for it after its last step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
    /// Seconds it may take.
    #[serde(default = "default_step_timeout")]
    pub timeout_s: u64,
}

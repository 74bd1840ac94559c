//! Things that happen to a stream at a chosen moment: a signal from outside
//! (`--signal`) and a second process's ioctls (`--control ACTION@WHEN`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::argv::{push, ArgError};
use crate::size::parse_size;

/// When: a time since the consumer started, or once it has this many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Milliseconds after the consumer started.
    Ms(u64),
    /// Once the consumer reports this many bytes.
    Bytes(u64),
}

/// A signal a user's Ctrl-C, `kill` or job control sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGTERM (`kill`).
    Term,
    /// SIGKILL.
    Kill,
    /// SIGHUP (the terminal went away).
    Hup,
    /// SIGSTOP, then SIGCONT after a while (job control, a debugger).
    Stop,
}

impl Signal {
    /// Every signal, in `parse`'s order.
    pub const ALL: [Signal; 5] = [
        Signal::Int,
        Signal::Term,
        Signal::Kill,
        Signal::Hup,
        Signal::Stop,
    ];

    /// The name on a command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Int => "int",
            Signal::Term => "term",
            Signal::Kill => "kill",
            Signal::Hup => "hup",
            Signal::Stop => "stop",
        }
    }

    /// Parses `int`, `term`, `kill`, `hup` or `stop`.
    pub fn parse(s: &str) -> Result<Signal, String> {
        Signal::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| format!("unknown signal `{s}` (int, term, kill, hup, stop)"))
    }

    /// Whether the signal ends the process (all but `stop`).
    pub fn ends(self) -> bool {
        self != Signal::Stop
    }
}

/// The longest stop (`--signal-stop-ms`) and the longest pause of any consumer.
pub const STOP_MS_MAX: u64 = 60_000;

/// The default `--signal-stop-ms`.
pub const STOP_MS_DEFAULT: u64 = 1000;

/// `--signal NAME (--signal-at-ms MS | --signal-at-bytes N) [--signal-stop-ms MS]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalPlan {
    /// Which.
    pub sig: Signal,
    /// When.
    pub at: At,
    /// `stop`: how long the consumer stays stopped.
    pub stop_ms: u64,
}

impl SignalPlan {
    /// Appends its flags.
    pub fn push_argv(&self, out: &mut Vec<String>) {
        push(out, "--signal", self.sig.as_str());
        match self.at {
            At::Ms(ms) => push(out, "--signal-at-ms", ms),
            At::Bytes(b) => push(out, "--signal-at-bytes", b),
        }
        if self.sig == Signal::Stop {
            push(out, "--signal-stop-ms", self.stop_ms);
        }
    }
}

/// The settings a SET_CONFIG action changes (the rest keep their value). The pattern and
/// its seed are not among them: the consumer verifies the stream against them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Bytes per block.
    pub block_size: Option<u32>,
    /// Completions per interrupt.
    pub irq_count: Option<u32>,
    /// Interrupt moderation time.
    pub irq_time_us: Option<u32>,
    /// Source rate, bytes per second.
    pub rate: Option<u64>,
}

/// A second process's action on the consumer's open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlAction {
    /// `ACQ_IOC_STOP`.
    Stop,
    /// `ACQ_IOC_START`.
    Start,
    /// `ACQ_IOC_RESET`.
    Reset,
    /// `ACQ_IOC_GET_CONFIG`, then `ACQ_IOC_SET_CONFIG` with the change.
    SetConfig(Change),
    /// A second open() of the device path (the contract: `EBUSY`).
    Open,
}

impl ControlAction {
    /// The name on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            ControlAction::Stop => "stop",
            ControlAction::Start => "start",
            ControlAction::Reset => "reset",
            ControlAction::SetConfig(_) => "set_config",
            ControlAction::Open => "open",
        }
    }

    /// Whether the action ends the session (the consumer then reads 0 once).
    pub fn ends_session(&self) -> bool {
        matches!(self, ControlAction::Stop | ControlAction::Reset)
    }
}

/// `--control ACTION@WHEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPlan {
    /// What.
    pub action: ControlAction,
    /// When.
    pub at: At,
}

impl fmt::Display for ControlPlan {
    /// `ACTION@WHEN`, as [`ControlPlan::parse`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action.name())?;
        if let ControlAction::SetConfig(c) = &self.action {
            let mut sep = ':';
            for (k, v) in [
                ("block_size", c.block_size.map(u64::from)),
                ("irq_count", c.irq_count.map(u64::from)),
                ("irq_time_us", c.irq_time_us.map(u64::from)),
                ("rate", c.rate),
            ] {
                if let Some(v) = v {
                    write!(f, "{sep}{k}={v}")?;
                    sep = ',';
                }
            }
        }
        match self.at {
            At::Ms(ms) => write!(f, "@{ms}ms"),
            At::Bytes(b) => write!(f, "@{b}"),
        }
    }
}

impl ControlPlan {
    /// Parses `ACTION@WHEN`: ACTION is `stop`, `start`, `reset`, `open` or
    /// `set_config:KEY=N,...` (keys `block_size`, `irq_count`, `irq_time_us`, `rate`);
    /// WHEN is `Nms` (after the consumer started) or a byte count in the size grammar.
    pub fn parse(s: &str) -> Result<ControlPlan, ArgError> {
        let bad = |why: String| ArgError::new("--control", format!("{s:?}: {why}"));
        let (what, when) = s
            .rsplit_once('@')
            .ok_or_else(|| bad("expected ACTION@WHEN".into()))?;
        let at = match when.strip_suffix("ms") {
            Some(ms) => At::Ms(ms.parse().map_err(|_| bad(format!("bad time {when:?}")))?),
            None => {
                At::Bytes(parse_size(when).map_err(|_| bad(format!("bad byte count {when:?}")))?)
            }
        };
        let action = match what.split_once(':') {
            None => match what {
                "stop" => ControlAction::Stop,
                "start" => ControlAction::Start,
                "reset" => ControlAction::Reset,
                "open" => ControlAction::Open,
                _ => {
                    return Err(bad(format!(
                        "unknown action {what:?} (stop, start, reset, open, set_config:KEY=N,...)"
                    )))
                }
            },
            Some(("set_config", kvs)) => {
                let mut c = Change::default();
                for kv in kvs.split(',') {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| bad(format!("expected KEY=N, not {kv:?}")))?;
                    let n = parse_size(v).map_err(|_| bad(format!("bad number {v:?}")))?;
                    let small =
                        || u32::try_from(n).map_err(|_| bad(format!("{k} {n} is too large")));
                    match k {
                        "block_size" => c.block_size = Some(small()?),
                        "irq_count" => c.irq_count = Some(small()?),
                        "irq_time_us" => c.irq_time_us = Some(small()?),
                        "rate" => c.rate = Some(n),
                        _ => {
                            return Err(bad(format!(
                                "unknown key {k:?} (block_size, irq_count, irq_time_us, rate)"
                            )))
                        }
                    }
                }
                ControlAction::SetConfig(c)
            }
            Some((other, _)) => {
                return Err(bad(format!(
                    "only set_config takes settings, not {other:?}"
                )))
            }
        };
        Ok(ControlPlan { action, at })
    }

    /// Its `--control` flag.
    pub fn push_argv(&self, out: &mut Vec<String>) {
        push(out, "--control", self.to_string());
    }
}

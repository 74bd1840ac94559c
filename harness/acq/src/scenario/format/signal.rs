//! The `signal` of a stream step: a signal for the consumer at a time or byte offset, sent
//! from outside it as a user's Ctrl-C, `kill` or job control would be (`acq-stream
//! --signal`, harness/acq-guest/src/signaler.rs).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use acq_wire::consumer::{self, Signal, SignalPlan};

use super::{At, Size};

/// A signal for a stream step's consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalSpec {
    /// Which signal: `int`, `term`, `kill`, `hup` (the consumer must be gone within
    /// `exit_within_ms`, whatever system call it was in), or `stop` (stopped for
    /// `stop_ms`, then continued; the stream goes on).
    pub send: SignalName,
    /// When: `{"time_ms": N}` after the consumer started, or `{"bytes": "16M"}` once it
    /// received that many bytes.
    pub at: At,
    /// `stop`: how long the consumer stays stopped (at most 60,000 ms).
    #[serde(default = "default_stop_ms")]
    pub stop_ms: u64,
    /// A signal that ends the consumer: how long it may take to be gone (a driver that
    /// sleeps through signals holds it until its next block).
    #[serde(default = "default_exit_within_ms")]
    pub exit_within_ms: u64,
}

/// The signals a scenario may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalName {
    /// SIGINT.
    Int,
    /// SIGTERM.
    Term,
    /// SIGKILL.
    Kill,
    /// SIGHUP.
    Hup,
    /// SIGSTOP, then SIGCONT.
    Stop,
}

impl SignalName {
    /// The name `acq-stream --signal` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalName::Int => "int",
            SignalName::Term => "term",
            SignalName::Kill => "kill",
            SignalName::Hup => "hup",
            SignalName::Stop => "stop",
        }
    }

    /// Does the consumer end on it?
    pub fn ends(self) -> bool {
        self != SignalName::Stop
    }
}

fn default_stop_ms() -> u64 {
    1000
}
fn default_exit_within_ms() -> u64 {
    1500
}

// The longest `stop_ms` is the consumer's own limit (acq_wire's STOP_MS_MAX).
use acq_wire::consumer::plan::STOP_MS_MAX;
/// The longest `exit_within_ms`.
const EXIT_WITHIN_MS_MAX: u64 = 30_000;

impl SignalSpec {
    /// Checks the spec against a stream of `bytes`: `Err((field, why))`.
    pub fn validate(&self, bytes: Size) -> Result<(), (&'static str, String)> {
        if let At::Bytes(b) = self.at {
            if b >= bytes {
                return Err(("at.bytes", "must be less than the stream's `bytes`".into()));
            }
        }
        if self.stop_ms > STOP_MS_MAX {
            return Err((
                "stop_ms",
                format!("{} is above {STOP_MS_MAX}", self.stop_ms),
            ));
        }
        if self.exit_within_ms == 0 || self.exit_within_ms > EXIT_WITHIN_MS_MAX {
            return Err((
                "exit_within_ms",
                format!("{} is not in 1..={EXIT_WITHIN_MS_MAX}", self.exit_within_ms),
            ));
        }
        Ok(())
    }

    /// What the consumer is asked to do (`acq-stream --signal ...`).
    pub fn plan(&self) -> SignalPlan {
        SignalPlan {
            sig: match self.send {
                SignalName::Int => Signal::Int,
                SignalName::Term => Signal::Term,
                SignalName::Kill => Signal::Kill,
                SignalName::Hup => Signal::Hup,
                SignalName::Stop => Signal::Stop,
            },
            at: match self.at {
                At::TimeMs(ms) => consumer::At::Ms(ms),
                At::Bytes(b) => consumer::At::Bytes(b.0),
            },
            stop_ms: self.stop_ms,
        }
    }
}

//! The card settings a consumer programs before it streams (`--block`, `--rate`, ...):
//! one set of flags for acq-stream in both directions and acq-vfio, checked against the
//! contract's limits.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use acq_hw::regs::limits;
use serde::{Deserialize, Serialize};

use super::argv::{push, ArgError, Argv};
use crate::pattern::parse_pattern;

/// How the card delivers captured data (docs/driver.md, "BAR2 streaming mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Transfer {
    /// DMA into host memory.
    Dma,
    /// The card's BAR2 (on-card memory); the driver copies each block out of it.
    Bar2,
}

impl Transfer {
    /// The name on a command line (`--transfer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transfer::Dma => "dma",
            Transfer::Bar2 => "bar2",
        }
    }

    /// Parses `dma` or `bar2`.
    pub fn parse(s: &str) -> Result<Transfer, String> {
        match s {
            "dma" => Ok(Transfer::Dma),
            "bar2" => Ok(Transfer::Bar2),
            other => Err(format!("bad transfer mode {other:?} (dma or bar2)")),
        }
    }
}

/// Settings of the card; `None` keeps what the card has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceArgs {
    /// `--block`: bytes per block.
    pub block: Option<u32>,
    /// `--ring-log2`: log2 of the ring's entries.
    pub ring_log2: Option<u32>,
    /// `--rate`: bytes per second, 0 unlimited.
    pub rate: Option<u64>,
    /// `--pattern`: the PATTERN register value (`acq_wire::pattern` parses the names).
    pub pattern: Option<u32>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--irq-count`: completions per interrupt.
    pub irq_count: Option<u32>,
    /// `--irq-time-us`: interrupt moderation time.
    pub irq_time_us: Option<u32>,
    /// `--transfer dma|bar2` (`--bar2` for short).
    pub transfer: Option<Transfer>,
}

/// The flags, for usage texts.
pub const DEVICE_USAGE: &str = "[--block B] [--ring-log2 L] [--rate R] \
     [--pattern counter|prbs|sine[:CH]|N] [--seed S] [--irq-count C] [--irq-time-us T] \
     [--transfer dma|bar2 | --bar2]";

impl DeviceArgs {
    /// Takes `flag` (and its value) if it is one of these settings: `Ok(true)`.
    pub fn take(&mut self, flag: &str, argv: &mut Argv) -> Result<bool, ArgError> {
        match flag {
            "--block" => self.block = Some(argv.small(flag)?),
            "--ring-log2" => self.ring_log2 = Some(argv.small(flag)?),
            "--rate" => self.rate = Some(argv.size(flag)?),
            "--pattern" => {
                self.pattern = Some(argv.with(flag, |v| {
                    parse_pattern(v).map_err(|e| format!("{v:?}: {e}"))
                })?)
            }
            "--seed" => self.seed = Some(argv.size(flag)?),
            "--irq-count" => self.irq_count = Some(argv.small(flag)?),
            "--irq-time-us" => self.irq_time_us = Some(argv.small(flag)?),
            "--transfer" => self.transfer = Some(argv.with(flag, Transfer::parse)?),
            "--bar2" => self.transfer = Some(Transfer::Bar2),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Appends the flags of the settings that are set.
    pub fn push_argv(&self, out: &mut Vec<String>) {
        let n = |o: Option<u32>| o.map(u64::from);
        for (flag, v) in [
            ("--block", n(self.block)),
            ("--ring-log2", n(self.ring_log2)),
            ("--rate", self.rate),
            ("--pattern", n(self.pattern)),
            ("--seed", self.seed),
            ("--irq-count", n(self.irq_count)),
            ("--irq-time-us", n(self.irq_time_us)),
        ] {
            if let Some(v) = v {
                push(out, flag, v);
            }
        }
        if let Some(t) = self.transfer {
            push(out, "--transfer", t.as_str());
        }
    }

    /// The contract's limits (docs/device.md): what the card would refuse anyway, named
    /// before anything is opened.
    pub fn check(&self) -> Result<(), ArgError> {
        if let Some(l) = self.ring_log2.filter(|&l| !limits::ring_log2_valid(l)) {
            return Err(ArgError::new(
                "--ring-log2",
                format!(
                    "{l} is out of range {}..={}",
                    limits::RING_LOG2_MIN,
                    limits::RING_LOG2_MAX
                ),
            ));
        }
        if let Some(b) = self.block.filter(|&b| {
            !b.is_multiple_of(limits::BLOCK_SIZE_ALIGN)
                || !(limits::BLOCK_SIZE_MIN..=limits::BLOCK_SIZE_MAX).contains(&b)
        }) {
            return Err(ArgError::new(
                "--block",
                format!("{b} is not a multiple of 8 in 64 .. 4M"),
            ));
        }
        Ok(())
    }

    /// Whether any setting is given.
    pub fn any(&self) -> bool {
        *self != DeviceArgs::default()
    }
}

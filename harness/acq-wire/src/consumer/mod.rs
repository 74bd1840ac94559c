//! What the harness asks a guest consumer to do, and what the consumer answers, as types
//! both sides share: the harness builds a command line from [`CaptureArgs`] or
//! [`PlaybackArgs`] (acq-stream), [`ShareArgs`] (acq-share) or [`ConsumeArgs`]
//! (acq-consume) (`to_argv`), the tool parses it back into the same type (`parse`) and
//! checks it with the same rules (`check`, which the scenario format also runs, so
//! `acq check` refuses what the tool would); the tool writes its result line from
//! [`ConsumerReport`] and the harness reads it back into that type. The command line stays
//! the interface (a user runs acq-stream by hand); what is typed is both ends of it.

pub mod argv;
pub mod capture;
pub mod consume;
pub mod device;
pub mod plan;
pub mod playback;
pub mod report;
pub mod share;

pub use argv::{asks_for_help, ArgError, Argv};

/// Which way an acq-stream command line streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `--direction in` (the default): a capture, read by [`CaptureArgs::parse`].
    In,
    /// `--direction out`: a playback, read by [`PlaybackArgs::parse`].
    Out,
}

impl Direction {
    /// The direction a command line asks for, found by walking it flag by flag as the
    /// parsers do (`--direction out` and `--direction=out` alike). A line that names
    /// none, or a value that is neither, is a capture's: its parser says what is wrong.
    pub fn of(args: &[alloc::string::String]) -> Direction {
        let mut argv = Argv::new(args.iter().cloned());
        while let Some(flag) = argv.next_flag() {
            if flag == "--direction" {
                return match argv.value(&flag).as_deref() {
                    Ok("out") => Direction::Out,
                    _ => Direction::In,
                };
            }
        }
        Direction::In
    }
}
pub use capture::{CaptureArgs, CaptureMode, SinkOpts, SinkPath, SinkPolicy};
pub use consume::{ConsumeArgs, ConsumeMethod};
pub use device::{DeviceArgs, Transfer};
pub use plan::{At, Change, ControlAction, ControlPlan, Signal, SignalPlan};
pub use playback::{PlayMode, PlaybackArgs, SourcePath};
pub use report::{
    CardConfig, ConsumerReport, ControlReport, ControlResult, ErrnoEvent, SinkIoReport,
};
pub use share::{ShareArgs, ShareSource};

#[cfg(test)]
mod tests;

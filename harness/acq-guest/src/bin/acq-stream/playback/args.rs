//! `acq-stream --direction out`'s command line: `acq_wire::consumer::PlaybackArgs`, the
//! type the harness builds it from, parsed and checked by the same rules.

pub(super) use acq_wire::consumer::{PlayMode as Mode, PlaybackArgs as Args};

/// Parses `argv` (without the program name).
pub(super) fn parse(argv: &[String]) -> Result<Args, String> {
    Args::parse(argv.iter().cloned()).map_err(|e| e.to_string())
}

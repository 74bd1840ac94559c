//! The command line: `acq_wire::consumer::CaptureArgs`, the type the harness builds it
//! from, parsed and checked by the same rules.

use super::*;

pub(crate) use acq_wire::consumer::{
    CaptureArgs as Args, CaptureMode as Mode, SinkOpts, SinkPath as SinkSpec,
};

pub(crate) fn usage_text() -> String {
    format!(
        "usage: {}\n       acq-stream --direction out ... (acq-stream --direction out --help)",
        Args::usage()
    )
}

pub(crate) fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-stream: {msg}");
    eprintln!("{}", usage_text());
    ExitCode::from(2)
}

pub(crate) fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    Args::parse(argv).map_err(|e| e.to_string())
}

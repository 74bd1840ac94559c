//! How the stream tools end (acq-stream in both directions, acq-vfio): one JSON result
//! line on stdout and an exit status the harness relies on (0 ok, 1 a failed run, 2 bad
//! arguments, printed by each tool's usage).

use std::process::ExitCode;

use serde_json::Value;

/// Prints the run's JSON result and returns its status: 0 if the run reports ok, else 1.
/// A run that could not produce a result prints `context` (what was run) with `error`.
pub fn finish(run: Result<(Value, bool), String>, mut context: Value) -> ExitCode {
    match run {
        Ok((report, ok)) => {
            println!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            if let Some(o) = context.as_object_mut() {
                o.insert("error".into(), e.into());
            }
            println!("{context}");
            ExitCode::from(1)
        }
    }
}

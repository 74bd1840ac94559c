//! How the stream tools end (acq-stream in both directions, acq-share, acq-vfio): one JSON
//! result line on stdout and an exit status the harness relies on (0 ok, 1 a failed run, 2
//! bad arguments, printed by each tool's usage); and how every guest tool answers `--help`.

use std::process::ExitCode;

use acq_wire::consumer::ConsumerReport;
use serde_json::Value;

/// `-h` or `--help` on `argv` (acq_wire's `asks_for_help`): prints `usage` on stdout and
/// gives exit status 0; `None` when help is not asked for.
pub fn help(argv: &[String], usage: impl FnOnce() -> String) -> Option<ExitCode> {
    acq_wire::consumer::asks_for_help(argv).then(|| {
        println!("{}", usage());
        ExitCode::SUCCESS
    })
}

/// A result line: the fields the harness reads, from their type, and `detail`, the
/// tool's own further fields (its settings, the driver's counters). A detail field of
/// the same name as a typed one is dropped: the typed field is the one the harness reads.
pub fn line(report: &ConsumerReport, detail: Value) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or_else(
        |e| serde_json::json!({ "error": format!("the report does not serialise: {e}") }),
    );
    if let (Some(o), Value::Object(d)) = (v.as_object_mut(), detail) {
        for (k, x) in d {
            o.entry(k).or_insert(x);
        }
    }
    v
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_holds_the_typed_fields_and_the_detail() {
        let r = ConsumerReport {
            ok: true,
            bytes: 9,
            ..ConsumerReport::default()
        };
        let v = line(&r, serde_json::json!({"mode": "read", "bytes": 1}));
        assert_eq!(v["mode"], "read");
        // The typed field wins.
        assert_eq!(v["bytes"], 9);
        let back: ConsumerReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}

//! The sink's control socket: JSON lines, one reply line per request line, the same
//! conventions as the card's (docs/device.md, "Model control socket"; docs/sink.md).

use std::io;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::backend::SharedDisk;
use crate::faults;
use acq_daemon::jsonl::{self, fail};

/// Most ranges listed per set in an `extents` reply.
pub const MAX_EXTENTS: usize = 10_000;

/// Handles one request line and returns the reply (without the newline).
pub fn handle_line(sink: &SharedDisk, line: &str) -> String {
    reply(sink, line).to_string()
}

fn reply(sink: &SharedDisk, line: &str) -> Value {
    // `inject` parameters depend on the fault: faults::parse checks them.
    let fields =
        |cmd: &str| -> Option<&'static [&'static str]> { (cmd != "inject").then_some(&[]) };
    let (cmd, obj) = match jsonl::request(line, fields) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let obj = &obj;
    match cmd.as_str() {
        "counters" => json!({"ok": true, "counters": sink.report()}),
        "inject" => {
            let Some(name) = obj.get("fault").and_then(Value::as_str) else {
                return fail("`inject` needs a string `fault`");
            };
            match faults::parse(name, obj) {
                Ok(f) => {
                    sink.inject(f);
                    json!({"ok": true})
                }
                Err(e) => fail(e),
            }
        }
        "extents" => {
            let mut v = sink.extents(MAX_EXTENTS);
            if let Some(o) = v.as_object_mut() {
                o.insert("ok".into(), Value::Bool(true));
            }
            v
        }
        "clear_faults" => {
            sink.clear_faults();
            json!({"ok": true})
        }
        other => fail(format!(
            "unknown command `{other}` (known: counters, extents, inject, clear_faults)"
        )),
    }
}

/// Binds the control socket at `path` and serves it in background threads.
pub fn spawn(path: &Path, sink: Arc<SharedDisk>) -> io::Result<()> {
    let listener = acq_daemon::daemon::listen_ready(path)?;
    let handler = move |line: &str| handle_line(&sink, line);
    jsonl::serve(listener, "sink-control", Arc::new(handler))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SinkConfig;
    use crate::disk::Disk;

    fn sink() -> Arc<SharedDisk> {
        SharedDisk::new(
            Disk::new(SinkConfig {
                size: 1 << 20,
                ..SinkConfig::default()
            })
            .unwrap(),
        )
    }

    fn ask(s: &SharedDisk, line: &str) -> Value {
        serde_json::from_str(&handle_line(s, line)).unwrap()
    }

    #[test]
    fn requests_and_replies() {
        let s = sink();
        let c = ask(&s, r#"{"cmd":"counters"}"#);
        assert_eq!(c["ok"], json!(true));
        assert_eq!(c["counters"]["bytes_verified"], json!(0));
        assert_eq!(c["counters"]["size"], json!(1 << 20));
        assert_eq!(c["counters"]["first_mismatch"], Value::Null);
        // The reply is the shared type the harness reads it into.
        let typed: acq_wire::counters::DiskCounters =
            serde_json::from_value(c["counters"].clone()).unwrap();
        assert_eq!(typed.setup.size, 1 << 20);
        for f in [
            r#"{"cmd":"inject","fault":"write_error","count":2}"#,
            r#"{"cmd":"inject","fault":"disk_full","at":65536}"#,
            r#"{"cmd":"inject","fault":"bandwidth","bytes_per_s":1000000}"#,
            r#"{"cmd":"inject","fault":"latency","us":100}"#,
            r#"{"cmd":"inject","fault":"stall","ms":10}"#,
            r#"{"cmd":"inject","fault":"flush_error","count":1}"#,
        ] {
            assert_eq!(ask(&s, f), json!({"ok": true}), "{f}");
        }
        let f = &ask(&s, r#"{"cmd":"counters"}"#)["counters"]["faults"];
        assert_eq!(f["write_error"], json!(2));
        assert_eq!(f["disk_full"], json!(65536));
        assert_eq!(f["bandwidth"], json!(1000000));
        assert_eq!(ask(&s, r#"{"cmd":"clear_faults"}"#), json!({"ok": true}));
        let f = &ask(&s, r#"{"cmd":"counters"}"#)["counters"]["faults"];
        assert_eq!(f["write_error"], json!(0));
        assert_eq!(
            ask(&s, r#"{"cmd":"extents"}"#),
            json!({"ok": true, "written": [], "failed": [], "truncated": false})
        );
        assert_eq!(f["disk_full"], Value::Null);
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let s = sink();
        for (line, needle) in [
            ("{", "malformed JSON"),
            ("[1]", "JSON object"),
            (r#"{"cmd":"explode"}"#, "unknown command `explode`"),
            (r#"{"cmd":7}"#, "`cmd` must be a string"),
            (r#"{"nocmd":1}"#, "missing `cmd`"),
            (r#"{"cmd":"counters","x":1}"#, "unknown field `x`"),
            (r#"{"cmd":"inject"}"#, "`fault`"),
            (r#"{"cmd":"inject","fault":"melt"}"#, "unknown fault `melt`"),
            (r#"{"cmd":"inject","fault":"write_error"}"#, "needs `count`"),
            (
                r#"{"cmd":"inject","fault":"write_error","count":-1}"#,
                "non-negative",
            ),
            (
                r#"{"cmd":"inject","fault":"disk_full","count":1}"#,
                "unknown field `count`",
            ),
        ] {
            let r = ask(&s, line);
            assert_eq!(r["ok"], json!(false), "{line}");
            let msg = r["error"].as_str().unwrap();
            assert!(msg.contains(needle), "{line}: {msg}");
        }
    }
}

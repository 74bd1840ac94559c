//! The model control socket: JSON lines on a Unix stream socket, one reply line per
//! request line (protocol in docs/device.md, "Model control socket"). The harness reads
//! counters, injects faults and resets the card through it. Not part of the hardware.

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::faults::{Channel, ControlArgs, Fault};
use crate::jsonl::{self, fail};

/// What the control socket operates on.
pub trait ControlTarget: Send + Sync {
    /// The counters, as a JSON object.
    fn counters(&self) -> Value;
    /// Arms (or, for a spurious interrupt, performs) a fault.
    fn inject(&self, fault: Fault) -> Result<(), String>;
    /// Disarms every fault and ends every interrupt storm.
    fn clear_faults(&self) -> Result<(), String>;
    /// Resets the card (as an FLR).
    fn reset(&self);
}

fn ok() -> Value {
    json!({"ok": true})
}

fn uint(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a non-negative integer, not {v}")),
    }
}

/// Handles one request line and returns the reply (without the newline).
pub fn handle_line(target: &dyn ControlTarget, line: &str) -> String {
    reply(target, line).to_string()
}

fn reply(target: &dyn ControlTarget, line: &str) -> Value {
    let fields = |cmd: &str| -> Option<&'static [&'static str]> {
        match cmd {
            "inject" => Some(&["fault", "count", "ms", "vector", "channel", "kind"]),
            _ => Some(&[]),
        }
    };
    let (cmd, obj) = match jsonl::request(line, fields) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let obj = &obj;
    match cmd.as_str() {
        "counters" => {
            let mut v = target.counters();
            if let Some(o) = v.as_object_mut() {
                o.insert("ok".into(), Value::Bool(true));
            }
            v
        }
        "inject" => {
            let Some(name) = obj.get("fault").and_then(Value::as_str) else {
                return fail("`inject` needs a string `fault`");
            };
            let parsed = (|| {
                let channel = match obj.get("channel") {
                    None => None,
                    Some(v) => Some(
                        v.as_str()
                            .ok_or_else(|| format!("a string, not {v}"))
                            .and_then(Channel::parse)
                            .map_err(|e| format!("`channel`: {e}"))?,
                    ),
                };
                let kind = match obj.get("kind") {
                    None => None,
                    Some(v) => Some(v.as_str().ok_or("`kind` must be a string")?.to_string()),
                };
                Fault::from_control(&ControlArgs {
                    fault: name.to_string(),
                    channel,
                    count: uint(obj, "count")?,
                    ms: uint(obj, "ms")?,
                    vector: uint(obj, "vector")?,
                    kind,
                })
            })();
            match parsed.and_then(|f| target.inject(f)) {
                Ok(()) => ok(),
                Err(e) => fail(e),
            }
        }
        "clear_faults" => match target.clear_faults() {
            Ok(()) => ok(),
            Err(e) => fail(e),
        },
        "reset" => {
            target.reset();
            ok()
        }
        other => fail(format!(
            "unknown command `{other}` (known: counters, inject, clear_faults, reset)"
        )),
    }
}

/// A bound control socket.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Creates the socket at `path` (which must not exist).
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        let listener = acq_daemon::daemon::listen_ready(path)?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves clients in background threads (one per connection).
    pub fn spawn(self, target: Arc<dyn ControlTarget>) -> io::Result<std::thread::JoinHandle<()>> {
        let handler = move |line: &str| handle_line(target.as_ref(), line);
        jsonl::serve(self.listener, "acq-control", Arc::new(handler))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::CardFault;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<String>>,
    }

    impl ControlTarget for Fake {
        fn counters(&self) -> Value {
            json!({"blocks": 3})
        }
        fn inject(&self, fault: Fault) -> Result<(), String> {
            self.log.lock().unwrap().push(format!("{fault:?}"));
            Ok(())
        }
        fn clear_faults(&self) -> Result<(), String> {
            self.log.lock().unwrap().push("clear".into());
            Ok(())
        }
        fn reset(&self) {
            self.log.lock().unwrap().push("reset".into());
        }
    }

    fn ask(f: &Fake, line: &str) -> Value {
        serde_json::from_str(&handle_line(f, line)).unwrap()
    }

    #[test]
    fn requests_and_replies() {
        let f = Fake::default();
        assert_eq!(
            ask(&f, r#"{"cmd":"counters"}"#),
            json!({"ok": true, "blocks": 3})
        );
        assert_eq!(
            ask(&f, r#"{"cmd":"inject","fault":"dma_error","count":2}"#),
            ok()
        );
        assert_eq!(ask(&f, r#"{"cmd":"inject","fault":"stall","ms":5}"#), ok());
        assert_eq!(
            ask(
                &f,
                r#"{"cmd":"inject","fault":"corrupt_data","channel":"playback"}"#
            ),
            ok()
        );
        assert_eq!(ask(&f, r#"{"cmd":"reset"}"#), ok());
        assert_eq!(
            *f.log.lock().unwrap(),
            vec![
                format!("{:?}", Fault::capture(CardFault::DmaError { count: 2 })),
                format!("{:?}", Fault::capture(CardFault::Stall { ms: 5 })),
                format!("{:?}", Fault::playback(CardFault::CorruptData { count: 1 })),
                "reset".into(),
            ]
        );
        let r = ask(
            &f,
            r#"{"cmd":"inject","fault":"dma_error","channel":"sideways"}"#,
        );
        assert!(r["error"].as_str().unwrap().contains("`channel`"), "{r}");
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let f = Fake::default();
        for (line, needle) in [
            ("{", "malformed JSON"),
            ("[1]", "JSON object"),
            (r#"{"cmd":"explode"}"#, "unknown command `explode`"),
            (r#"{"cmd":7}"#, "`cmd` must be a string"),
            (r#"{"nocmd":1}"#, "missing `cmd`"),
            (r#"{"cmd":"inject","fault":"melt"}"#, "unknown fault `melt`"),
            (
                r#"{"cmd":"inject","fault":"dma_error","count":-1}"#,
                "`count`",
            ),
            (
                r#"{"cmd":"inject","fault":"dma_error","cuont":1}"#,
                "unknown field `cuont`",
            ),
            (r#"{"cmd":"inject"}"#, "`fault`"),
        ] {
            let r = ask(&f, line);
            assert_eq!(r["ok"], json!(false), "{line}");
            let msg = r["error"].as_str().unwrap();
            assert!(msg.contains(needle), "{line}: {msg}");
        }
    }
}

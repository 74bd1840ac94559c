//! JSON-lines request servers on Unix stream sockets: the framing both control sockets
//! share (the card's, docs/device.md "Model control socket", and the capture disk's,
//! docs/sink.md). One request object per line, exactly one reply line each; a bad line
//! gets `{"ok":false,"error":...}` and the connection stays open, except for a line over
//! [`MAX_LINE`] bytes, which is refused and closes it (the rest of it cannot be framed).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::{json, Map, Value};
use tracing::{debug, info, warn};

/// Longest request line accepted.
pub const MAX_LINE: u64 = 64 * 1024;

/// Answers one request line (without its newline) with one reply (without a newline).
pub type Handler = dyn Fn(&str) -> String + Send + Sync;

/// `{"ok":false,"error":msg}`.
pub fn fail(msg: impl Into<String>) -> Value {
    json!({"ok": false, "error": msg.into()})
}

/// Parses a request line into its `cmd` and the whole object. Unknown fields are refused:
/// `fields` lists the ones `cmd` may carry besides `cmd` itself, `None` for any (the
/// command checks them itself).
pub fn request<'a>(
    line: &str,
    fields: impl Fn(&str) -> Option<&'a [&'a str]>,
) -> Result<(String, Map<String, Value>), Value> {
    let req: Value =
        serde_json::from_str(line).map_err(|e| fail(format!("malformed JSON: {e}")))?;
    let Value::Object(obj) = req else {
        return Err(fail("a request must be a JSON object"));
    };
    let cmd = match obj.get("cmd") {
        None => return Err(fail("missing `cmd`")),
        Some(Value::String(c)) => c.clone(),
        Some(_) => return Err(fail("`cmd` must be a string")),
    };
    if let Some(allowed) = fields(&cmd) {
        if let Some(k) = obj
            .keys()
            .find(|k| k.as_str() != "cmd" && !allowed.contains(&k.as_str()))
        {
            return Err(fail(format!("unknown field `{k}` for `{cmd}`")));
        }
    }
    Ok((cmd, obj))
}

/// Serves `listener` in a background thread named `name`, one thread per connection.
pub fn serve(
    listener: UnixListener,
    name: &str,
    handler: Arc<Handler>,
) -> io::Result<JoinHandle<()>> {
    let conn_name = format!("{name}-conn");
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let h = Arc::clone(&handler);
                        let r = std::thread::Builder::new()
                            .name(conn_name.clone())
                            .spawn(move || serve_conn(stream, h.as_ref()));
                        if let Err(e) = r {
                            warn!("control connection thread: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("control socket accept: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            }
        })
}

fn serve_conn(stream: UnixStream, handler: &Handler) {
    debug!("control client connected");
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut input = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut input).take(MAX_LINE + 1).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                debug!("control read: {e}");
                break;
            }
        }
        let too_long = buf.len() as u64 > MAX_LINE && buf.last() != Some(&b'\n');
        let reply = if too_long {
            fail(format!("request line longer than {MAX_LINE} bytes")).to_string()
        } else {
            match std::str::from_utf8(&buf) {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => {
                    let r = handler(line.trim());
                    if r.contains("\"ok\":false") {
                        info!(request = line.trim(), reply = r, "control request refused");
                    }
                    r
                }
                Err(_) => fail("request is not UTF-8").to_string(),
            }
        };
        if out.write_all(format!("{reply}\n").as_bytes()).is_err() || too_long {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_objects_with_a_string_cmd_and_known_fields() {
        let only_count = |c: &str| (c == "inject").then_some(&["count"][..]);
        let err = |line: &str| request(line, only_count).unwrap_err()["error"].to_string();
        assert!(err("{").contains("malformed JSON"));
        assert!(err("[1]").contains("must be a JSON object"));
        assert!(err("{}").contains("missing `cmd`"));
        assert!(err(r#"{"cmd":1}"#).contains("`cmd` must be a string"));
        assert!(err(r#"{"cmd":"inject","ms":1}"#).contains("unknown field `ms` for `inject`"));
        let (cmd, obj) = request(r#"{"cmd":"inject","count":2}"#, only_count).unwrap();
        assert_eq!((cmd.as_str(), obj["count"].as_u64()), ("inject", Some(2)));
        // No list: the command checks its fields itself.
        assert!(request(r#"{"cmd":"other","x":1}"#, only_count).is_ok());
    }
}

//! Clients for the two side channels a run has into its devices: the device model's
//! control socket (counters, faults) and QEMU's QMP socket (hot-unplug). Both speak JSON
//! lines, both keep a transcript, and every read has a deadline.

use acq_wire::counters::CardCounters;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON-lines connection with a transcript.
struct Lines {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    transcript: Option<File>,
    what: String,
}

impl Lines {
    fn connect(path: &Path, what: &str, transcript: Option<&Path>) -> Result<Lines> {
        let s = UnixStream::connect(path)
            .with_context(|| format!("connecting to the {what} at {}", path.display()))?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let transcript = match transcript {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Lines {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            transcript,
            what: what.to_owned(),
        })
    }

    fn log(&mut self, dir: &str, line: &str) {
        if let Some(t) = &mut self.transcript {
            let _ = writeln!(t, "{dir} {}", line.trim_end());
        }
    }

    fn send(&mut self, v: &Value) -> Result<()> {
        let line = v.to_string();
        self.log(">>", &line);
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("writing to the {}", self.what))
    }

    fn recv(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).with_context(|| {
            format!("reading from the {} (timeout {REPLY_TIMEOUT:?})", self.what)
        })?;
        if n == 0 {
            bail!("the {} closed the connection", self.what);
        }
        self.log("<<", &line);
        serde_json::from_str(&line).with_context(|| format!("the {} sent {line:?}", self.what))
    }
}

/// The device model's control socket (protocol in docs/device.md, "Model control socket").
pub struct ModelControl {
    lines: Lines,
}

impl ModelControl {
    /// Connects to the control socket at `path`, appending the exchange to `transcript`.
    pub fn connect(path: &Path, transcript: Option<&Path>) -> Result<ModelControl> {
        Ok(ModelControl {
            lines: Lines::connect(path, "device model control socket", transcript)?,
        })
    }

    /// Sends one request and returns the reply; a reply with `"ok": false` is an error.
    pub fn request(&mut self, req: &Value) -> Result<Value> {
        self.lines.send(req)?;
        let reply = self.lines.recv()?;
        if reply.get("ok") == Some(&Value::Bool(false)) {
            bail!(
                "device model refused {req}: {}",
                reply
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("(no reason)")
            );
        }
        Ok(reply)
    }

    /// The `counters` reply as it came (the card's or the disk's: the counters, and the
    /// faults still armed), for reports.
    pub fn counters(&mut self) -> Result<Value> {
        let reply = self.request(&json!({"cmd": "counters"}))?;
        Ok(reply.get("counters").cloned().unwrap_or(reply))
    }

    /// The card's counters, read into their type.
    pub fn card_counters(&mut self) -> Result<CardCounters> {
        let v = self.counters()?;
        serde_json::from_value(v.clone())
            .with_context(|| format!("the card's counters reply does not read: {v}"))
    }
}

/// A QMP connection to QEMU (capabilities negotiated).
pub struct Qmp {
    lines: Lines,
    /// Events read while waiting for something else.
    events: Vec<Value>,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub fn connect(path: &Path, transcript: Option<&Path>) -> Result<Qmp> {
        let mut lines = Lines::connect(path, "QMP socket", transcript)?;
        let greeting = lines.recv()?;
        if greeting.get("QMP").is_none() {
            bail!("QEMU's QMP greeting was {greeting}");
        }
        let mut qmp = Qmp {
            lines,
            events: Vec::new(),
        };
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value; asynchronous events that arrive
    /// before it are kept for [`Qmp::wait_event`] (and are in the transcript).
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value> {
        self.lines
            .send(&json!({"execute": cmd, "arguments": args}))?;
        loop {
            let v = self.lines.recv()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {cmd} failed: {e}");
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Waits up to `timeout` for the event `name` whose `data` has every field of
    /// `data` (say `{"device": "acq0"}`), and returns it.
    pub fn wait_event(&mut self, name: &str, data: &Value, timeout: Duration) -> Result<Value> {
        let matches = |v: &Value| {
            v.get("event").and_then(Value::as_str) == Some(name)
                && data.as_object().is_none_or(|want| {
                    want.iter()
                        .all(|(k, x)| v.get("data").and_then(|d| d.get(k)) == Some(x))
                })
        };
        if let Some(i) = self.events.iter().position(matches) {
            return Ok(self.events.remove(i));
        }
        let deadline = Instant::now() + timeout;
        let r = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(anyhow::anyhow!(
                    "QEMU sent no {name} event matching {data} within {timeout:?}"
                ));
            }
            // One read with the rest of the deadline: a timeout ends the wait, so no
            // line is ever cut in half by a read that gave up.
            self.lines.writer.set_read_timeout(Some(left))?;
            match self.lines.recv() {
                Ok(v) if matches(&v) => break Ok(v),
                Ok(v) => {
                    if v.get("event").is_some() {
                        self.events.push(v);
                    }
                }
                Err(e) if is_timeout(&e) => {
                    break Err(e.context(format!(
                        "QEMU sent no {name} event matching {data} within {timeout:?}"
                    )))
                }
                Err(e) => break Err(e),
            }
        };
        self.lines.writer.set_read_timeout(Some(REPLY_TIMEOUT))?;
        r
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    })
}

//! The host side of the guest agent's protocol (see [`acq_wire::agent`]).
//!
//! QEMU connects to a Unix socket the harness listens on (so there is no race with QEMU
//! creating it); a reader thread turns the JSON lines into [`Event`]s on a channel, and
//! every wait on that channel has a deadline.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use acq_wire::agent::{Event, Request, Stream};
use anyhow::{anyhow, bail, Context, Result};

use crate::signals;

/// Echoes a guest command's stderr as it comes, with `verbose` (the output callback of
/// `exec_streaming`).
pub fn echo_stderr(verbose: bool) -> impl FnMut(Stream, &str) {
    move |stream, data| {
        if verbose && stream == Stream::Stderr {
            eprint!("{data}");
        }
    }
}

/// The result of one guest command.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Exit status (128 + signal when killed).
    pub status: i32,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// The agent killed it for exceeding its timeout.
    pub timed_out: bool,
    /// Wall-clock time in the guest.
    pub elapsed: Duration,
}

impl ExecOutput {
    /// The result of a guest tool that ends with one JSON line (`acq_guest::result`: the
    /// stream tools, acq-share), parsed. Exit status 2 (bad arguments) and a run with no
    /// result line are errors naming the tool, `name`.
    pub fn result_line(&self, name: &str) -> Result<serde_json::Value> {
        if self.status == 2 {
            bail!("{name} rejected its arguments: {}", self.stderr.trim());
        }
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or_else(|| {
                anyhow!(
                    "{name} printed no result (status {}): {}",
                    self.status,
                    self.stderr.trim()
                )
            })?;
        serde_json::from_str(line).with_context(|| format!("{name} result {line:?}"))
    }

    /// True when the command exited with status 0 in time.
    pub fn success(&self) -> bool {
        self.status == 0 && !self.timed_out
    }
}

/// Where the reader thread delivers events: per-request channels by id, and a general
/// channel for the rest (`ready`, unparseable lines).
#[derive(Default)]
struct Routes {
    by_id: HashMap<u64, Sender<Event>>,
}

/// A connected agent. Requests may run concurrently from several threads (`&self`
/// methods): each gets its own id and its own event channel.
pub struct Agent {
    writer: Mutex<UnixStream>,
    routes: Arc<Mutex<Routes>>,
    general: Mutex<Receiver<Result<Event, String>>>,
    next_id: AtomicU64,
}

/// Polled while waiting on the agent, so that a QEMU that died is noticed at once
/// instead of at the deadline.
pub type AliveCheck<'a> = &'a mut dyn FnMut() -> Result<()>;

/// How long one request may take to reach the guest.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

fn event_id(ev: &Event) -> Option<u64> {
    match ev {
        Event::Output { id, .. }
        | Event::Exit { id, .. }
        | Event::Written { id, .. }
        | Event::ShuttingDown { id } => Some(*id),
        Event::Error { id, .. } => *id,
        Event::Ready { .. } => None,
    }
}

impl Agent {
    /// Waits up to `timeout` for QEMU to connect to `listener`, then for the agent's
    /// `ready` event. Returns the agent, the guest kernel release and its uptime at ready.
    pub fn accept(
        listener: &UnixListener,
        timeout: Duration,
        alive: AliveCheck<'_>,
    ) -> Result<(Agent, String, Duration)> {
        let deadline = Instant::now() + timeout;
        let agent = Agent::connect(listener, deadline, alive)?;
        let general = agent
            .general
            .lock()
            .map_err(|_| anyhow!("agent lock poisoned"))?;
        loop {
            match recv(&general, deadline, "the guest agent to become ready", alive)? {
                Ok(Event::Ready { kernel, uptime_ms }) => {
                    drop(general);
                    return Ok((agent, kernel, Duration::from_millis(uptime_ms)));
                }
                Ok(other) => tracing::debug!("agent event before ready: {other:?}"),
                Err(msg) => bail!("agent protocol error: {msg}"),
            }
        }
    }

    /// Waits up to `timeout` for QEMU to connect to `listener`, for a guest restored from a
    /// snapshot: its agent said `ready` before the snapshot was taken and is waiting for
    /// requests, so none comes now (the caller asks the guest what it needs to know).
    pub fn accept_restored(
        listener: &UnixListener,
        timeout: Duration,
        alive: AliveCheck<'_>,
    ) -> Result<Agent> {
        Agent::connect(listener, Instant::now() + timeout, alive)
    }

    /// Accepts QEMU's connection and starts the thread that routes events by request id.
    fn connect(listener: &UnixListener, deadline: Instant, alive: AliveCheck<'_>) -> Result<Agent> {
        listener.set_nonblocking(true)?;
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("accepting QEMU's agent connection"),
            }
            check(deadline, "QEMU to connect the agent channel", alive)?;
            thread::sleep(Duration::from_millis(20));
        };
        stream.set_nonblocking(false)?;
        // A guest that stops reading must not hold a request (a `put` of megabytes) for
        // good: every wait on the guest has a bound.
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let reader = stream.try_clone()?;
        let (tx, rx) = mpsc::channel();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let thread_routes = Arc::clone(&routes);
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let ev = match serde_json::from_str::<Event>(&line) {
                    Ok(ev) => ev,
                    Err(e) => {
                        let _ = tx.send(Err(format!("unparseable agent line {line:?}: {e}")));
                        continue;
                    }
                };
                let route = event_id(&ev).and_then(|id| {
                    thread_routes
                        .lock()
                        .ok()
                        .and_then(|r| r.by_id.get(&id).cloned())
                });
                match route {
                    Some(r) => {
                        let _ = r.send(ev);
                    }
                    None => {
                        let _ = tx.send(Ok(ev));
                    }
                }
            }
            // The channel closed: waiters see their senders dropped.
            if let Ok(mut r) = thread_routes.lock() {
                r.by_id.clear();
            }
        });
        Ok(Agent {
            writer: Mutex::new(stream),
            routes,
            general: Mutex::new(rx),
            next_id: AtomicU64::new(1),
        })
    }

    fn send(&self, req: &Request) -> Result<()> {
        let mut line = serde_json::to_string(req)?;
        line.push('\n');
        let mut w = self
            .writer
            .lock()
            .map_err(|_| anyhow!("agent lock poisoned"))?;
        w.write_all(line.as_bytes())
            .context("writing to the agent channel")
    }

    /// Sends `req` (built from a fresh id) and returns the channel its events arrive on.
    fn request(&self, make: impl FnOnce(u64) -> Request) -> Result<(u64, Receiver<Event>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.routes
            .lock()
            .map_err(|_| anyhow!("agent lock poisoned"))?
            .by_id
            .insert(id, tx);
        if let Err(e) = self.send(&make(id)) {
            self.forget(id);
            return Err(e);
        }
        Ok((id, rx))
    }

    fn forget(&self, id: u64) {
        if let Ok(mut r) = self.routes.lock() {
            r.by_id.remove(&id);
        }
    }

    /// Runs `argv` in the guest. The agent kills it after `timeout`; the harness gives up
    /// waiting a little later. `on_output` sees output as it arrives (for progress).
    pub fn exec(
        &self,
        argv: &[String],
        timeout: Duration,
        on_output: &mut dyn FnMut(Stream, &str),
        alive: AliveCheck<'_>,
    ) -> Result<ExecOutput> {
        let (id, rx) = self.request(|id| Request::Exec {
            id,
            argv: argv.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
        })?;
        // The agent enforces `timeout`; this margin covers its reporting back.
        let deadline = Instant::now() + timeout + Duration::from_secs(10);
        let what = format!("guest command {argv:?}");
        let mut out = ExecOutput::default();
        let r = loop {
            match recv(&rx, deadline, &what, alive) {
                Err(e) => break Err(e),
                Ok(Event::Output { stream, data, .. }) => {
                    on_output(stream, &data);
                    match stream {
                        Stream::Stdout => out.stdout.push_str(&data),
                        Stream::Stderr => out.stderr.push_str(&data),
                    }
                }
                Ok(Event::Exit {
                    status,
                    timed_out,
                    elapsed_ms,
                    ..
                }) => {
                    out.status = status;
                    out.timed_out = timed_out;
                    out.elapsed = Duration::from_millis(elapsed_ms);
                    break Ok(out);
                }
                Ok(Event::Error { message, .. }) => {
                    break Err(anyhow!("guest command {argv:?}: {message}"))
                }
                Ok(other) => tracing::debug!("unexpected agent event for {id}: {other:?}"),
            }
        };
        self.forget(id);
        r
    }

    /// Writes `bytes` to the guest file `path` with permissions `mode` (through the
    /// agent: the file appears whole or not at all).
    pub fn put(
        &self,
        path: &str,
        mode: u32,
        bytes: &[u8],
        timeout: Duration,
        alive: AliveCheck<'_>,
    ) -> Result<()> {
        let (id, rx) = self.request(|id| Request::Put {
            id,
            path: path.to_owned(),
            mode,
            hex: acq_wire::agent::to_hex(bytes),
        })?;
        let deadline = Instant::now() + timeout;
        let what = format!("the guest to write {path}");
        let r = loop {
            match recv(&rx, deadline, &what, alive) {
                Ok(Event::Written { bytes: n, .. }) if n == bytes.len() as u64 => break Ok(()),
                Ok(Event::Written { bytes: n, .. }) => {
                    break Err(anyhow!(
                        "the guest wrote {n} bytes of {path}, not {}",
                        bytes.len()
                    ))
                }
                Ok(Event::Error { message, .. }) => break Err(anyhow!("{message}")),
                Ok(other) => tracing::debug!("unexpected agent event for {id}: {other:?}"),
                Err(e) => break Err(e),
            }
        };
        self.forget(id);
        r
    }

    /// Asks the guest to power off and waits for the acknowledgement.
    pub fn shutdown(&self, timeout: Duration, alive: AliveCheck<'_>) -> Result<()> {
        let (id, rx) = self.request(|id| Request::Shutdown { id })?;
        let deadline = Instant::now() + timeout;
        let r = loop {
            match recv(&rx, deadline, "the guest to acknowledge shutdown", alive) {
                Ok(Event::ShuttingDown { .. }) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.forget(id);
        r
    }
}

/// Waits for the next event on `rx` until `deadline`, polling `alive` and Ctrl-C.
fn recv<T>(rx: &Receiver<T>, deadline: Instant, what: &str, alive: AliveCheck<'_>) -> Result<T> {
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ev) => return Ok(ev),
            Err(RecvTimeoutError::Timeout) => check(deadline, what, alive)?,
            Err(RecvTimeoutError::Disconnected) => {
                alive()?;
                bail!("the agent channel closed while waiting for {what}")
            }
        }
    }
}

fn check(deadline: Instant, what: &str, alive: AliveCheck<'_>) -> Result<()> {
    if signals::interrupted() {
        bail!("interrupted while waiting for {what}");
    }
    alive()?;
    if Instant::now() >= deadline {
        bail!("timed out waiting for {what}");
    }
    Ok(())
}

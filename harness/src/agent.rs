//! The host side of the guest agent's protocol (see [`acq_guest::proto`]).
//!
//! QEMU connects to a Unix socket the harness listens on (so there is no race with QEMU
//! creating it); a reader thread turns the JSON lines into [`Event`]s on a channel, and
//! every wait on that channel has a deadline.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use acq_guest::proto::{Event, Request, Stream};
use anyhow::{bail, Context, Result};

use crate::signals;

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
    /// True when the command exited with status 0 in time.
    pub fn success(&self) -> bool {
        self.status == 0 && !self.timed_out
    }
}

/// A connected agent.
pub struct Agent {
    writer: UnixStream,
    events: Receiver<Result<Event, String>>,
    next_id: u64,
}

/// Why a wait on the agent ended early. `alive` is polled so that a QEMU that died is
/// noticed at once instead of at the deadline.
pub type AliveCheck<'a> = &'a mut dyn FnMut() -> Result<()>;

impl Agent {
    /// Waits up to `timeout` for QEMU to connect to `listener`, then for the agent's
    /// `ready` event. Returns the agent, the guest kernel release and its uptime at ready.
    pub fn accept(
        listener: &UnixListener,
        timeout: Duration,
        alive: AliveCheck<'_>,
    ) -> Result<(Agent, String, Duration)> {
        let deadline = Instant::now() + timeout;
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
        let reader = stream.try_clone()?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let ev = serde_json::from_str::<Event>(&line)
                    .map_err(|e| format!("unparseable agent line {line:?}: {e}"));
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let mut agent = Agent {
            writer: stream,
            events: rx,
            next_id: 1,
        };
        loop {
            match agent.next_event(deadline, "the guest agent to become ready", alive)? {
                Event::Ready { kernel, uptime_ms } => {
                    return Ok((agent, kernel, Duration::from_millis(uptime_ms)))
                }
                other => tracing::debug!("agent event before ready: {other:?}"),
            }
        }
    }

    fn next_event(
        &mut self,
        deadline: Instant,
        what: &str,
        alive: AliveCheck<'_>,
    ) -> Result<Event> {
        loop {
            match self.events.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(ev)) => return Ok(ev),
                Ok(Err(msg)) => bail!("agent protocol error: {msg}"),
                Err(RecvTimeoutError::Timeout) => check(deadline, what, alive)?,
                Err(RecvTimeoutError::Disconnected) => {
                    alive()?;
                    bail!("the agent channel closed while waiting for {what}")
                }
            }
        }
    }

    fn send(&mut self, req: &Request) -> Result<()> {
        let mut line = serde_json::to_string(req)?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .context("writing to the agent channel")
    }

    /// Runs `argv` in the guest. The agent kills it after `timeout`; the harness gives up
    /// waiting a little later. `on_output` sees output as it arrives (for progress).
    pub fn exec(
        &mut self,
        argv: &[String],
        timeout: Duration,
        on_output: &mut dyn FnMut(Stream, &str),
        alive: AliveCheck<'_>,
    ) -> Result<ExecOutput> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Request::Exec {
            id,
            argv: argv.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
        })?;
        // The agent enforces `timeout`; this margin covers its reporting back.
        let deadline = Instant::now() + timeout + Duration::from_secs(10);
        let what = format!("guest command {argv:?}");
        let mut out = ExecOutput::default();
        loop {
            match self.next_event(deadline, &what, alive)? {
                Event::Output {
                    id: i,
                    stream,
                    data,
                } if i == id => {
                    on_output(stream, &data);
                    match stream {
                        Stream::Stdout => out.stdout.push_str(&data),
                        Stream::Stderr => out.stderr.push_str(&data),
                    }
                }
                Event::Exit {
                    id: i,
                    status,
                    timed_out,
                    elapsed_ms,
                } if i == id => {
                    out.status = status;
                    out.timed_out = timed_out;
                    out.elapsed = Duration::from_millis(elapsed_ms);
                    return Ok(out);
                }
                Event::Error {
                    id: Some(i),
                    message,
                } if i == id => {
                    bail!("guest command {argv:?}: {message}")
                }
                other => tracing::debug!("unrelated agent event: {other:?}"),
            }
        }
    }

    /// Asks the guest to power off and waits for the acknowledgement.
    pub fn shutdown(&mut self, timeout: Duration, alive: AliveCheck<'_>) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Request::Shutdown { id })?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Event::ShuttingDown { id: i } =
                self.next_event(deadline, "the guest to acknowledge shutdown", alive)?
            {
                if i == id {
                    return Ok(());
                }
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

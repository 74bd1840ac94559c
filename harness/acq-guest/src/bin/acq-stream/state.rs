//! One run's account: bytes, sessions, every errno event and where it happened, and the
//! checks that tie the stream to the driver's counters.

use super::*;

/// How many errno events a result lists (the counts in `errno` are always complete).
pub(crate) const MAX_ERRNO_EVENTS: usize = 64;

/// Loop state shared by the read and splice loops.
pub(crate) struct State {
    pub(crate) errnos: BTreeMap<String, u64>,
    /// Where in the stream each errno came (the first [`MAX_ERRNO_EVENTS`]), so a scenario
    /// can check not only that an EIO came but that it came where the fault was injected.
    pub(crate) errno_events: Vec<ErrnoEvent>,
    pub(crate) start: Instant,
    pub(crate) last_progress: Instant,
    pub(crate) total: u64,
    /// What the consumer itself saw and verified.
    pub(crate) inline: Check,
    /// Stream offset of the next byte.
    pub(crate) offset: u64,
    pub(crate) session: Option<u64>,
    pub(crate) short_reads: u64,
    pub(crate) restarted: bool,
    /// `--reopen-at` happened.
    pub(crate) reopened: bool,
    /// read()/splice() returned 0: a STOP or RESET (of the controller) ended the session.
    pub(crate) session_ends: u64,
    /// With a controller: calls whose data opened a new session anywhere but at offset 0.
    pub(crate) misplaced: u64,
    /// The driver's `overflows` when the consumer last read its statistics.
    pub(crate) seen_overflows: Option<u64>,
    /// `--control`: the second process.
    pub(crate) controller: Option<Controller>,
    pub(crate) timed_out: bool,
    pub(crate) fatal: Option<String>,
    pub(crate) stopped_by_signal: bool,
    pub(crate) held: bool,
    pub(crate) segs: Segments,
    /// `--signal` at a byte offset: told the bytes after each call.
    pub(crate) signaler: Option<signaler::Signaler>,
}

impl State {
    /// The next byte (sink position `total`) is stream offset `offset`: a new segment
    /// unless it continues the current one.
    pub(crate) fn mark(&mut self) {
        if let Ok(mut s) = self.segs.lock() {
            let continues = s
                .last()
                .is_some_and(|&(p, o)| o + (self.total - p) == self.offset);
            if !continues {
                s.push((self.total, self.offset));
            }
        }
    }

    /// Before the loop's next call: timeout.
    pub(crate) fn expired(&mut self, a: &Args) -> bool {
        if let Some(t) = a.timeout {
            if self.start.elapsed().as_secs_f64() > t {
                self.timed_out = true;
                return true;
            }
        }
        false
    }

    /// The first data of the session: take the offset from the driver.
    pub(crate) fn first_data(&mut self, src: &Source, n: usize) -> Result<(), String> {
        if self.session.is_none() {
            if let Some(s) = src.stats()? {
                let gap = self.gap_since(&s);
                self.session = Some(s.session);
                // A call that ended where a gap begins leaves `read_offset` past the gap
                // already (the next call reports it): the session's first data is at 0.
                self.offset = if gap {
                    0
                } else {
                    s.read_offset.saturating_sub(n as u64)
                };
            } else {
                self.session = Some(0);
            }
        }
        Ok(())
    }

    /// With a controller: where the `n` bytes one call returned lie in the stream. The
    /// consumer is the stream's only reader, so the driver's statistics after the call
    /// say: the same session with `read_offset` = `offset + n`, the data continues; a
    /// session the consumer had not read from, the call was its first (a STOP or RESET
    /// ended the old one), so `read_offset` must be `n` and the data starts at 0 (any
    /// other `read_offset` is counted in `misplaced`: the driver let a session go on, or
    /// skipped data, behind a new session number); `read_offset` below `n`, the call read
    /// the old session and a STOP and START came between it and GET_STATS, so the data
    /// continues at `offset` and verification judges it.
    ///
    /// Two things blur that. A call that ended where a gap begins: the driver counted the
    /// overflow and moved `read_offset` past the gap already (the next call reports it as
    /// EPIPE), so a new session's data is at 0 whatever `read_offset` says. And RESET
    /// clears the statistics: the next session may get the old one's number (the overflow
    /// count going down shows a RESET; so does `read_offset` = `n`); where a gap leaves it
    /// open whether the data continues or starts at 0, the pattern decides (`data`: the
    /// bytes, when the consumer holds them).
    pub(crate) fn attribute(
        &mut self,
        src: &Source,
        cfg: &AcqConfig,
        n: usize,
        data: Option<&[u8]>,
    ) -> Result<(), String> {
        let Some(s) = src.stats()? else {
            return Ok(());
        };
        let before = self.seen_overflows.replace(s.overflows);
        let gap = before.is_some_and(|o| s.overflows > o);
        let cleared = before.is_some_and(|o| s.overflows < o);
        let n = n as u64;
        let same = self.session == Some(s.session) && !cleared;
        if same && s.read_offset == self.offset + n {
            return Ok(());
        }
        let fresh = s.read_offset.checked_sub(n);
        if same {
            let fits = |o: u64| {
                data.is_some_and(|d| regs::pattern_check(cfg.pattern, cfg.seed, o, d).is_none())
            };
            if fresh == Some(0) || (gap && !fits(self.offset) && fits(0)) {
                self.offset = 0;
            }
            return Ok(());
        }
        if let Some(f) = fresh {
            // After a RESET the new session's own overflows show a gap too.
            if gap || (cleared && s.overflows > 0) {
                self.offset = 0;
            } else {
                if f != 0 {
                    self.misplaced += 1;
                }
                self.offset = f;
            }
            self.session = Some(s.session);
        }
        Ok(())
    }

    /// Did the driver count an overflow since the consumer last looked (a gap it may
    /// have moved `read_offset` past already)?
    pub(crate) fn gap_since(&mut self, s: &AcqStats) -> bool {
        let more = self.seen_overflows.is_some_and(|o| s.overflows > o);
        self.seen_overflows = Some(s.overflows);
        more
    }

    /// read()/splice() returned 0. With a controller, a STOP or RESET ended the session
    /// (docs/driver.md): the next call starts a new one. Returns false when 0 is the end.
    pub(crate) fn session_ended(&mut self, what: &str) -> bool {
        if self.controller.is_some() {
            self.session_ends += 1;
            self.session = None;
            true
        } else {
            self.fatal = Some(format!("{what} returned 0 (end of file)"));
            false
        }
    }

    /// `--reopen-at`: once the consumer has that many bytes, close the device and open it
    /// again (close ends the session; the next read starts another from offset 0).
    pub(crate) fn maybe_reopen(&mut self, a: &Args, src: &mut Source) -> Result<(), String> {
        let Some(at) = a.reopen_at else {
            return Ok(());
        };
        if self.reopened || self.total < at {
            return Ok(());
        }
        self.reopened = true;
        if src.card().is_some() {
            // The old file closes first (replaced, it is dropped): a second open while it
            // is open is EBUSY.
            *src = Source::Raw(File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?);
            *src = Source::Card(
                AcqDev::open(&a.device, a.nonblock)
                    .map_err(|e| format!("reopen {}: {e}", a.device))?,
            );
            self.session = None;
        }
        Ok(())
    }

    /// An errno from read() or splice(). Returns false when the loop must stop.
    pub(crate) fn errno_event(
        &mut self,
        src: &Source,
        e: &std::io::Error,
        what: &str,
    ) -> Result<bool, String> {
        let code = e.raw_os_error().unwrap_or(0);
        let name = acqdev::errno_name(code);
        *self.errnos.entry(name.clone()).or_default() += 1;
        // `offset`: the stream offset of the next byte the consumer expected (everything
        // before it was delivered); `bytes`: what the consumer had received by then.
        let mut event = ErrnoEvent {
            errno: name,
            offset: self.offset,
            bytes: self.total,
            ms: self.start.elapsed().as_millis() as u64,
            resume: None,
        };
        match code {
            libc::EPIPE | libc::EIO if src.card().is_some() => {
                // The stream continues where the driver says: after the lost bytes, or
                // from 0 in the new session a watchdog reset started. A session that is
                // not running (the engine halted) ends here: the next call starts a new
                // one, from 0 (docs/driver.md, the EIO row).
                if let Some(s) = src.stats()? {
                    if s.state == uapi::ACQ_STATE_RUNNING {
                        event.resume = Some(s.read_offset);
                        self.offset = s.read_offset;
                        self.session = Some(s.session);
                    } else {
                        event.resume = Some(0);
                        self.offset = 0;
                        self.session = None;
                    }
                    self.seen_overflows = Some(s.overflows);
                }
            }
            libc::EINTR => {}
            libc::EAGAIN => {
                if let Some(d) = src.card() {
                    let _ = d.poll(libc::POLLIN, 1000);
                }
            }
            _ => {
                self.fatal = Some(format!("{what}: {e}"));
                self.record(event);
                return Ok(false);
            }
        }
        // EINTR and EAGAIN are part of normal operation (signals, O_NONBLOCK): counted,
        // but not worth an event each.
        if code != libc::EINTR && code != libc::EAGAIN {
            self.record(event);
        }
        Ok(true)
    }

    pub(crate) fn record(&mut self, event: ErrnoEvent) {
        if self.errno_events.len() < MAX_ERRNO_EVENTS {
            self.errno_events.push(event);
        }
    }

    /// After each call: signal stop and progress. Returns false to stop.
    pub(crate) fn after(&mut self, a: &Args, tty: bool, progress: bool) -> bool {
        if let Some(s) = &mut self.signaler {
            s.progress(self.total);
        }
        if let Some(c) = &self.controller {
            c.progress(self.total);
        }
        if a.stop_on_signal && SIGNALS.load(Ordering::Relaxed) > 0 {
            self.stopped_by_signal = true;
            return false;
        }
        if progress && self.last_progress.elapsed() >= Duration::from_secs(1) {
            self.last_progress = Instant::now();
            let secs = self.start.elapsed().as_secs_f64();
            let line = format!(
                "{:>8.1} MiB  {:>8.2} MB/s",
                self.total as f64 / 1048576.0,
                self.total as f64 / secs / 1e6
            );
            if tty {
                eprint!("\r{line}  ");
            } else {
                eprintln!("{line}");
            }
        }
        true
    }
}

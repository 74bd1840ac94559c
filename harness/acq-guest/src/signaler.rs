//! A signal for the consumer at a chosen moment, from outside it, the way a user's Ctrl-C,
//! `kill` or job control arrives (`acq-stream --signal`, the scenario `signal` field).
//!
//! A helper process, forked before the consumer starts, waits for the moment (a time, or
//! the consumer's word that a byte offset arrived, through a pipe), sends the signal to
//! the consumer, and then watches it through a pidfd: for a signal that ends the process
//! it reports how long the consumer took to be gone, which is how long the driver kept it
//! in a system call after the signal. `stop` stops the consumer for a while and continues
//! it. The helper prints one JSON line on the shared standard output:
//! `{"signal":"term","sent_ms":512,"exit_ms":3}` (`exit_ms` null if the consumer outlived
//! the watch, 30 s), or `{"signal":"stop","sent_ms":512,"stopped_ms":1000}`.

use std::os::fd::{AsRawFd, OwnedFd};

use acq_wire::consumer::{At, Signal, SignalPlan as Plan};

use crate::forked::{self, Pipe};
use std::time::Duration;

/// The signal's number.
fn number(sig: Signal) -> libc::c_int {
    match sig {
        Signal::Int => libc::SIGINT,
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
        Signal::Hup => libc::SIGHUP,
        Signal::Stop => libc::SIGSTOP,
    }
}

/// How long the helper watches for the consumer's end, and waits for a byte offset.
const WATCH_MS: i32 = 30_000;
const TRIGGER_WAIT_MS: i32 = 600_000;

/// The consumer's side of the helper.
pub struct Signaler {
    plan: Plan,
    /// Write end of the trigger pipe (one byte = "the offset arrived"; closed = "the
    /// consumer is done").
    trigger: Option<OwnedFd>,
    fired: bool,
    helper: libc::pid_t,
}

impl Signaler {
    /// Forks the helper.
    ///
    /// # Safety
    ///
    /// The process must have one thread: the child of a multi-threaded process may only
    /// make async-signal-safe calls, and the helper formats its line (it allocates).
    pub unsafe fn start(plan: Plan) -> Result<Signaler, String> {
        let child = |rd: OwnedFd, parent| helper(plan, parent, rd.as_raw_fd());
        // SAFETY: the process has one thread (the caller's contract).
        let (pid, wr) = unsafe { forked::fork_with_pipe(Pipe::ToHelper, child) }?;
        Ok(Signaler {
            plan,
            trigger: Some(wr),
            fired: false,
            helper: pid,
        })
    }

    /// The consumer has `bytes` so far: a byte-offset plan fires once they are enough.
    pub fn progress(&mut self, bytes: u64) {
        if let At::Bytes(n) = self.plan.at {
            if !self.fired && bytes >= n {
                self.fired = true;
                let b = [1u8];
                if let Some(t) = &self.trigger {
                    // SAFETY: `t` is our pipe's write end; `b` is one readable byte.
                    let _ = unsafe { libc::write(t.as_raw_fd(), b.as_ptr().cast(), 1) };
                }
            }
        }
    }
}

impl Drop for Signaler {
    /// The consumer finished (a signal that ends it never gets here): the helper learns
    /// it from the closed pipe and exits (after its SIGCONT, for `stop`); it is reaped.
    fn drop(&mut self) {
        self.trigger = None;
        // Still there after that (it should never be): killed, and reaped.
        if !forked::reap(
            self.helper,
            Duration::from_millis(5_000 + self.plan.stop_ms),
        ) {
            eprintln!(
                "acq-stream: the signal helper (pid {}) is still there after SIGKILL",
                self.helper
            );
        }
    }
}

/// Sends `sig` through the consumer's pidfd: never to another process that reused its pid.
fn send(pidfd: libc::c_int, sig: libc::c_int) {
    // SAFETY: pidfd_send_signal(2) with a null siginfo (the kernel fills in a kill()'s);
    // no memory is passed.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

fn now_ms(start: &libc::timespec) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for clock_gettime() to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    let ns =
        (t.tv_sec - start.tv_sec) as i128 * 1_000_000_000 + (t.tv_nsec - start.tv_nsec) as i128;
    (ns / 1_000_000).max(0) as u64
}

/// The helper process (`parent`: the consumer's pid): never returns.
fn helper(plan: Plan, parent: libc::pid_t, trigger: libc::c_int) -> ! {
    let mut start = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `start` is a valid timespec for clock_gettime() to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut start) };
    // SAFETY: pidfd_open(2) has no memory-safety preconditions; -1 on an old kernel.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, parent, 0) } as libc::c_int;
    // SAFETY: getppid() cannot fail.
    if pidfd < 0 || unsafe { libc::getppid() } != parent {
        // The consumer is gone already (we were reparented), or its exit cannot be
        // watched without a pidfd: do nothing rather than signal a stranger.
        // SAFETY: _exit() in the forked child (no destructors, no atexit handlers).
        unsafe { libc::_exit(0) };
    }
    let wait_ms = match plan.at {
        At::Ms(ms) => ms.min(i32::MAX as u64) as i32,
        At::Bytes(_) => TRIGGER_WAIT_MS,
    };
    let mut p = [
        libc::pollfd {
            fd: trigger,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `p` holds two valid pollfds.
    let r = unsafe { libc::poll(p.as_mut_ptr(), 2, wait_ms) };
    let triggered = match plan.at {
        At::Ms(_) => r == 0,
        // A byte, not EOF (the consumer ended without reaching the offset).
        At::Bytes(_) => {
            let mut b = [0u8; 1];
            // SAFETY: `b` has room for one byte.
            r > 0
                && p[0].revents & libc::POLLIN != 0
                && unsafe { libc::read(trigger, b.as_mut_ptr().cast(), 1) } == 1
        }
    };
    if !triggered || p[1].revents != 0 {
        // The consumer ended before the moment came: nothing to send.
        // SAFETY: _exit() in the forked child (no destructors, no atexit handlers).
        unsafe { libc::_exit(0) };
    }
    let sent = now_ms(&start);
    send(pidfd, number(plan.sig));
    let line = if plan.sig == Signal::Stop {
        let ts = libc::timespec {
            tv_sec: (plan.stop_ms / 1000) as libc::time_t,
            tv_nsec: ((plan.stop_ms % 1000) * 1_000_000) as libc::c_long,
        };
        // SAFETY: `ts` is a valid timespec; a null remainder is allowed.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        send(pidfd, libc::SIGCONT);
        format!(
            "{{\"signal\":\"stop\",\"sent_ms\":{sent},\"stopped_ms\":{}}}\n",
            now_ms(&start) - sent
        )
    } else {
        let mut w = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `w` is one valid pollfd.
        let gone = unsafe { libc::poll(&mut w, 1, WATCH_MS) } == 1;
        let exit = if gone {
            (now_ms(&start) - sent).to_string()
        } else {
            "null".to_string()
        };
        format!(
            "{{\"signal\":\"{}\",\"sent_ms\":{sent},\"exit_ms\":{exit}}}\n",
            plan.sig.as_str()
        )
    };
    // SAFETY: write(2) of an initialised buffer to standard output.
    unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
    // SAFETY: _exit() in the forked child.
    unsafe { libc::_exit(0) };
}

//! Child processes that cannot outlive the harness.
//!
//! Every child is started with `PR_SET_PDEATHSIG = SIGKILL` (so even a SIGKILLed harness
//! takes its children down) and wrapped in [`Child`], whose `Drop` terminates and reaps it.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running child process that is terminated and reaped when dropped.
#[derive(Debug)]
pub struct Child {
    name: String,
    inner: std::process::Child,
    status: Option<ExitStatus>,
}

impl Child {
    /// Spawns `cmd`; `name` is used in messages ("qemu", "acq-device 0", ...).
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Child> {
        // SAFETY: the closure runs between fork and exec and only calls prctl(), which is
        // async-signal-safe, and touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let inner = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Child {
            name: name.to_owned(),
            inner,
            status: None,
        })
    }

    /// Waits until the server this child is (a device model, a capture disk) has created
    /// its `socket`: the sign that it is ready. Fails, quoting its `log`, when it exits
    /// first, when the user interrupts, or after `timeout`. `what` names it in messages.
    pub fn wait_for_socket(
        &mut self,
        socket: &Path,
        log: &Path,
        what: &str,
        timeout: Duration,
    ) -> Result<()> {
        let start = Instant::now();
        while !socket.exists() {
            if let Some(s) = self.try_status() {
                bail!(
                    "{what} exited ({s}) before creating {}; its log {}:\n{}",
                    socket.display(),
                    log.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if crate::signals::interrupted() {
                bail!("interrupted while starting {what}");
            }
            if start.elapsed() > timeout {
                bail!(
                    "{what} did not create {} within {timeout:?}; log: {}",
                    socket.display(),
                    log.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The child's process ID.
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// The child's exit status if it has exited (reaping it), without blocking.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.inner.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the child (if it is still running).
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.try_status().is_none() {
            // SAFETY: kill() on our own unreaped child's pid: it cannot have been recycled.
            unsafe { libc::kill(self.inner.id() as libc::pid_t, sig) };
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; always reaps. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.try_status() {
            return Some(s);
        }
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        tracing::warn!(
            "{} did not exit within {grace:?} of SIGTERM; killing it",
            self.name
        );
        self.signal(libc::SIGKILL);
        self.status = self.inner.wait().ok();
        self.status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(3));
    }
}

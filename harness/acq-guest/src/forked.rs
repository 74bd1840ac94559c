//! A helper process forked from a one-threaded consumer, with a pipe between the two, and
//! its reaping within a deadline: what `--signal` (signaler.rs) and `--control`
//! (controller.rs) each need, once.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Which way the pipe between consumer and helper carries bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipe {
    /// Consumer -> helper (the helper gets the read end).
    ToHelper,
    /// Helper -> consumer (the helper gets the write end).
    FromHelper,
}

/// Forks a helper that runs `child` with its end of a new pipe and the consumer's pid,
/// then exits (status 1 if `child` returns; a panic does not unwind into the consumer's
/// code in the child). Returns the helper's pid and the consumer's end of the pipe.
///
/// # Safety
///
/// The process must have one thread: the child of a multi-threaded process may only make
/// async-signal-safe calls, and a helper allocates and formats.
pub unsafe fn fork_with_pipe(
    dir: Pipe,
    child: impl FnOnce(OwnedFd, libc::pid_t),
) -> Result<(libc::pid_t, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2() writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2() returned two new descriptors that nobody else owns.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (theirs, ours) = match dir {
        Pipe::ToHelper => (rd, wr),
        Pipe::FromHelper => (wr, rd),
    };
    // SAFETY: getpid() cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the process has one thread (the caller's contract), so the child is a
    // complete copy that may do anything; it never returns from this branch.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ours);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(theirs, parent)));
        // SAFETY: _exit() in the forked child (no destructors, no atexit handlers: the
        // consumer's state belongs to the consumer).
        unsafe { libc::_exit(1) };
    }
    drop(theirs);
    Ok((pid, ours))
}

/// Reaps helper `pid`: waits up to `wait` for it to exit, then kills it (SIGKILL) and
/// waits up to 5 s more. False if it is still there: a helper stuck in the driver
/// (uninterruptibly: a deadlock) does not die even of SIGKILL, and the consumer must not
/// hang with it.
pub fn reap(pid: libc::pid_t, wait: Duration) -> bool {
    let gone = |until: Instant| {
        let mut status = 0;
        loop {
            // SAFETY: waitpid() on our own child; `status` is valid for writing.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    if gone(Instant::now() + wait) {
        return true;
    }
    // SAFETY: kill() of our own unreaped child: its pid is not reused.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    gone(Instant::now() + Duration::from_secs(5))
}

//! What the two servers (`acq-device` and `acq-sink`) do the same way as processes: log
//! to stderr, take over a socket path a dead predecessor left, create a socket whose path
//! means "listening", and end on SIGTERM or SIGINT through one signal thread.

use std::io::{self, IsTerminal};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use tracing::{error, info};

/// A server's `main`: logging set up, then `run`; an error is logged, printed as
/// `NAME: error` and ends the process with status 1.
pub fn main<A>(name: &str, args: A, run: impl FnOnce(A) -> Result<()>) {
    init_tracing();
    if let Err(e) = run(args) {
        error!("{e:#}");
        eprintln!("{name}: {e:#}");
        std::process::exit(1);
    }
}

/// Logs to stderr at `RUST_LOG`'s level (`info` by default), in colour only on a
/// terminal (the harness keeps each server's stderr as a log file).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Removes a socket file left behind by a dead process; refuses a live one or a non-socket.
pub fn clear_stale_socket(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket", path.display());
    }
    if UnixStream::connect(path).is_ok() {
        bail!("{} is in use by another server", path.display());
    }
    std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    info!("removed stale socket {}", path.display());
    Ok(())
}

/// A listening Unix socket at `path` (which must not exist), there only once it listens.
///
/// The harness waits for a server's socket file and then has QEMU connect to it, but
/// `UnixListener::bind` is bind(2) and then listen(2): a client that finds the file
/// between the two is refused. A replugged card's `device_add` failed so in CI ("Failed
/// to connect to '.../acq0.sock': Connection refused"). So the socket is bound and
/// listening under a temporary name in the same directory and then linked into place
/// (link(2), unlike rename(2), fails on an existing `path` as bind(2) does). The temporary
/// name, `.PID.N`, is 10 bytes for a 7-digit pid and a server's first sockets, one more
/// than `acq0.sock`: a directory within a byte of sun_path's 108 fails here, the error
/// naming `path` (the harness's run directories are far shorter). A server killed between
/// the bind and the link leaves the temporary name behind.
pub fn listen_ready(path: &Path) -> io::Result<UnixListener> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{}.{n}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map(|()| listener)
}

/// SIGTERM and SIGINT, blocked in the thread that made this (and every thread it starts
/// after), so that only a thread in [`TermSignals::wait`] receives them.
pub struct TermSignals {
    set: libc::sigset_t,
}

impl TermSignals {
    /// Blocks the termination signals; call before starting any thread.
    pub fn block() -> TermSignals {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; pthread_sigmask only reads it.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        TermSignals { set }
    }

    /// Waits for one of them; returns its number.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: `set` is an initialised sigset_t and `sig` a valid out-pointer.
        unsafe { libc::sigwait(&self.set, &mut sig) };
        sig
    }
}

// SAFETY: a sigset_t is plain data (a bit mask); sigwait only reads it, from any thread.
unsafe impl Send for TermSignals {}
// SAFETY: as above: shared references only read the mask.
unsafe impl Sync for TermSignals {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_socket_listens_at_its_path_and_leaves_nothing_else() {
        let dir = std::env::temp_dir().join(format!("acq-listen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("card.sock");
        let listener = listen_ready(&path).unwrap();
        UnixStream::connect(&path).expect("connecting to the ready socket");
        assert!(listener.accept().is_ok());
        let again = listen_ready(&path).expect_err("a second socket at the same path");
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, ["card.sock"], "only the socket itself is left");
    }
}

//! Test helpers that need no card: timeouts, polling, scratch directories and server
//! processes. Shared by path with acq-sink's tests (`#[path]`), which have no card rig.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Runs `f` on its own thread and fails the test if it takes longer than `secs` (the
/// crate's client hangs on error replies).
pub fn with_timeout<F: FnOnce() + Send + 'static>(secs: u64, f: F) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: propagate its message.
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("test timed out after {secs} s"),
    }
}

/// Polls `cond` every millisecond until it holds or `secs` pass.
pub fn wait_for(secs: f64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The package's binary `name`, in the directory above this test binary's (cargo puts a
/// test in target/PROFILE/deps/ and the package's binaries in target/PROFILE/). Found at run
/// time, not by the path the test compiled in (`CARGO_BIN_EXE_*`): a test binary another
/// clone reuses (qemu/cargo-cache.sh) must run that clone's build.
pub fn package_bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary in target/PROFILE/deps/")
        .join(name);
    assert!(bin.is_file(), "no {} beside the test binary", bin.display());
    bin.display().to_string()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for sockets.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "acq-test-{}-{}-{}",
        std::process::id(),
        tag,
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server binary (acq-device, acq-sink) started for a test: killed and reaped when
/// dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Starts `bin` with `args`, quiet (`RUST_LOG=warn`), and waits until its `socket`
    /// exists (`what` names it in a timeout).
    pub fn start<I, S>(bin: &str, args: I, socket: &std::path::Path, what: &str) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::process::{Command, Stdio};
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Proc(child);
        wait_for(20.0, what, || socket.exists());
        p
    }
}

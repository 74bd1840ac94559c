//! Device-model processes: one `acq-device` per card, each serving one vfio-user socket
//! (and a JSON-lines control socket) in the run directory.
//!
//! The harness starts them before QEMU, waits until each socket exists, and reaps them
//! (through [`Child`]) when the run ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::Child;

/// How long a device model may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running device model.
#[derive(Debug)]
pub struct DeviceModel {
    /// The process.
    pub child: Child,
    /// Its vfio-user socket (what QEMU connects to).
    pub socket: PathBuf,
    /// Its control socket (counters, faults).
    pub control: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// Starts card `index` with `binary`, its files in `run_dir`, configured by the optional
/// JSON `config` file.
pub fn start(
    binary: &Path,
    run_dir: &Path,
    index: usize,
    config: Option<&Path>,
) -> Result<DeviceModel> {
    if !binary.exists() {
        bail!(
            "the device model {} does not exist: run `make build`",
            binary.display()
        );
    }
    let socket = run_dir.join(format!("acq{index}.sock"));
    let control = run_dir.join(format!("acq{index}.ctl"));
    let log = run_dir.join(format!("acq{index}.log"));
    let _ = fs::remove_file(&socket);
    let _ = fs::remove_file(&control);
    let logf = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--socket")
        .arg(&socket)
        .arg("--control")
        .arg(&control)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .env(
            "RUST_LOG",
            std::env::var("ACQ_DEVICE_LOG").unwrap_or_else(|_| "info".into()),
        );
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = Child::spawn(&format!("acq-device {index}"), &mut cmd)?;
    child.wait_for_socket(
        &socket,
        &log,
        &format!("device model {index}"),
        START_TIMEOUT,
    )?;
    Ok(DeviceModel {
        child,
        socket,
        control,
        log,
    })
}

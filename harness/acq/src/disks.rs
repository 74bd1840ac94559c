//! Capture disks: one `acq-sink` process per disk, each serving a vhost-user-blk socket
//! (and a JSON-lines control socket) in the run directory (docs/sink.md).
//!
//! Started like the device models ([`crate::devices`]): before QEMU, ready once the
//! vhost-user socket exists, reaped through [`Child`] when the run ends. The guest sees
//! the disks as /dev/vda, /dev/vdb, ... in [`crate::vm::VmConfig::disks`] order.

use acq_wire::counters::DiskCounters;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::control::ModelControl;
use crate::process::Child;

/// How long an `acq-sink` process may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One capture disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Size in bytes (a multiple of the block size).
    pub size: u64,
    /// Logical block size, 512 or 4096.
    pub block_size: u32,
    /// Stream the writes are checked against: `counter`, `prbs`, `sine[:CH]` (as the card's
    /// PATTERN).
    pub pattern: String,
    /// The stream's seed.
    pub seed: u64,
    /// Stream offset of disk offset 0.
    pub base: u64,
    /// Keep the written data in a sparse file `sinkN.img` in the run directory (reads then
    /// return it; needed for a filesystem on the disk).
    pub store: bool,
    /// Check writes against the stream (off for a filesystem: only count).
    pub verify: bool,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec {
            size: 64 << 20,
            block_size: 512,
            pattern: "counter".into(),
            seed: 0,
            base: 0,
            store: false,
            verify: true,
        }
    }
}

/// A running capture disk: its `acq-sink` process and sockets.
#[derive(Debug)]
pub struct DiskServer {
    /// The process.
    pub child: Child,
    /// Its vhost-user socket (what QEMU connects to).
    pub socket: PathBuf,
    /// Its control socket (counters, faults).
    pub control: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// The store file, if any.
    pub store: Option<PathBuf>,
}

impl DiskServer {
    /// Connects to the control socket (transcript appended to `sinkN.ctl.log`).
    pub fn connect(&self) -> Result<ModelControl> {
        let transcript = self.control.with_extension("ctl.log");
        ModelControl::connect(&self.control, Some(&transcript))
    }

    /// The disk's counters (one JSON object, docs/sink.md), as they came.
    pub fn counters(&self) -> Result<Value> {
        self.connect()?.counters()
    }

    /// The disk's counters, read into their type.
    pub fn disk_counters(&self) -> Result<DiskCounters> {
        let v = self.counters()?;
        serde_json::from_value(v.clone())
            .with_context(|| format!("the disk's counters reply does not read: {v}"))
    }

    /// Sends one request (`{"cmd":...}`); a refusal is an error.
    pub fn request(&self, req: &Value) -> Result<Value> {
        self.connect()?.request(req)
    }
}

/// The `acq-sink` binary next to the device model binary.
pub fn binary(device_model: &Path) -> PathBuf {
    device_model.with_file_name("acq-sink")
}

/// Starts disk `index` with `binary`, its files in `run_dir`.
pub fn start(binary: &Path, run_dir: &Path, index: usize, spec: &DiskSpec) -> Result<DiskServer> {
    if !binary.exists() {
        bail!(
            "the capture disk {} does not exist: run `make build`",
            binary.display()
        );
    }
    let socket = run_dir.join(format!("sink{index}.sock"));
    let control = run_dir.join(format!("sink{index}.ctl"));
    let log = run_dir.join(format!("sink{index}.log"));
    let store = spec.store.then(|| run_dir.join(format!("sink{index}.img")));
    let _ = fs::remove_file(&socket);
    let _ = fs::remove_file(&control);
    let logf = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--socket")
        .arg(&socket)
        .arg("--control")
        .arg(&control)
        .arg("--size")
        .arg(spec.size.to_string())
        .arg("--block-size")
        .arg(spec.block_size.to_string())
        .arg("--pattern")
        .arg(&spec.pattern)
        .arg("--seed")
        .arg(spec.seed.to_string())
        .arg("--base")
        .arg(spec.base.to_string())
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .env(
            "RUST_LOG",
            std::env::var("ACQ_SINK_LOG").unwrap_or_else(|_| "info".into()),
        );
    if let Some(s) = &store {
        cmd.arg("--store").arg(s);
    }
    if !spec.verify {
        cmd.arg("--no-verify");
    }
    let mut child = Child::spawn(&format!("acq-sink {index}"), &mut cmd)?;
    child.wait_for_socket(
        &socket,
        &log,
        &format!("capture disk {index}"),
        START_TIMEOUT,
    )?;
    Ok(DiskServer {
        child,
        socket,
        control,
        log,
        store,
    })
}

/// The chassis number of disk 0's root port (cards' ports count from 1).
const DISK_CHASSIS: usize = 100;

/// QEMU arguments for a machine whose disks are plugged in once the guest runs (a guest
/// restored from a snapshot, or booted to take one): an empty root port `dpN` for disk N.
pub fn root_ports(disks: usize) -> Vec<String> {
    (0..disks)
        .flat_map(|i| {
            let n = DISK_CHASSIS + i;
            [
                "-device".to_string(),
                format!("pcie-root-port,id=dp{i},chassis={n},slot={n}"),
            ]
        })
        .collect()
}

/// The QMP commands that plug disk `index` (served at `socket`) into its root port: its
/// chardev, then the device.
pub fn hotplug(index: usize, socket: &Path) -> [(&'static str, Value); 2] {
    [
        (
            "chardev-add",
            serde_json::json!({
                "id": format!("sink{index}"),
                "backend": {"type": "socket", "data": {
                    "addr": {"type": "unix", "data": {"path": socket.display().to_string()}},
                    "server": false,
                }},
            }),
        ),
        (
            "device_add",
            serde_json::json!({
                "driver": "vhost-user-blk-pci",
                "id": format!("disk{index}"),
                "chardev": format!("sink{index}"),
                "num-queues": 1,
                "bus": format!("dp{index}"),
            }),
        ),
    ]
}

/// QEMU arguments attaching vhost-user-blk disks at `sockets` (disk N is chardev `sinkN`).
pub fn qemu_args(sockets: &[PathBuf]) -> Vec<String> {
    let mut a = Vec::new();
    for (i, sock) in sockets.iter().enumerate() {
        a.push("-chardev".into());
        a.push(format!("socket,id=sink{i},path={}", sock.display()));
        a.push("-device".into());
        a.push(format!(
            "vhost-user-blk-pci,id=disk{i},chardev=sink{i},num-queues=1"
        ));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_become_vhost_user_blk_devices() {
        let a = qemu_args(&["/r/sink0.sock".into(), "/r/sink1.sock".into()]).join(" ");
        assert_eq!(
            a,
            "-chardev socket,id=sink0,path=/r/sink0.sock \
             -device vhost-user-blk-pci,id=disk0,chardev=sink0,num-queues=1 \
             -chardev socket,id=sink1,path=/r/sink1.sock \
             -device vhost-user-blk-pci,id=disk1,chardev=sink1,num-queues=1"
        );
        assert_eq!(
            binary(Path::new("/x/target/release/acq-device")),
            PathBuf::from("/x/target/release/acq-sink")
        );
    }
}

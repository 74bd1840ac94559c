//! Where things are: the repository, the cache (toolroot, guest kernel), guest binaries.
//!
//! The cache layout belongs to the scripts in `qemu/`; the harness asks them
//! (`qemu/toolroot.sh --path`, `qemu/kernel.sh --path`) instead of re-deriving their keys.
//! Environment overrides let a user bring their own pieces:
//!
//! | variable | meaning |
//! |---|---|
//! | `ACQ_REPO` | the repository (default: where this binary was built from) |
//! | `ACQ_CACHE` | the cache directory (default `~/.cache/pcie-acq`) |
//! | `ACQ_QEMU` | an existing `qemu-system-x86_64` >= 10.1, run directly instead of the toolroot's |
//! | `ACQ_KERNEL_DIR` | a built kernel tree (with `arch/x86/boot/bzImage`) |
//! | `ACQ_GUEST_BIN` | directory of the static guest binaries |
//! | `ACQ_DEVICE` | the device model binary (default `target/release/acq-device`) |

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Resolved locations for one run.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The repository root.
    pub repo: PathBuf,
    /// How to run QEMU.
    pub qemu: QemuBinary,
    /// The kernel build tree (holds `arch/x86/boot/bzImage` and built modules).
    pub kernel_build: PathBuf,
    /// The toolroot, when provisioned (busybox for the initramfs comes from it).
    pub toolroot: Option<PathBuf>,
    /// Directory of the static guest binaries (`acq-agent`, ...).
    pub guest_bin: PathBuf,
    /// The device model binary (`acq-device`).
    pub device_model: PathBuf,
}

/// Which QEMU runs the guest.
#[derive(Debug, Clone)]
pub enum QemuBinary {
    /// The toolroot's QEMU, run through `qemu/toolroot.sh --run` (private mount namespace).
    Toolroot(PathBuf),
    /// A user-provided binary (`ACQ_QEMU`).
    Host(PathBuf),
}

impl Paths {
    /// Resolves every location, failing with a message that says what to run when a piece
    /// is missing.
    pub fn discover() -> Result<Paths> {
        let repo = match std::env::var_os("ACQ_REPO") {
            Some(r) => PathBuf::from(r),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .context("harness has no parent directory")?
                .to_path_buf(),
        };
        let toolroot = script_path(&repo, "toolroot.sh")?;
        let toolroot = toolroot.join(".complete").exists().then_some(toolroot);
        let qemu = match std::env::var_os("ACQ_QEMU") {
            Some(q) => QemuBinary::Host(PathBuf::from(q)),
            None => match &toolroot {
                Some(t) => QemuBinary::Toolroot(t.clone()),
                None => bail!(
                    "the toolroot is not provisioned: run `make deps` (or set ACQ_QEMU to a qemu-system-x86_64 >= 10.1)"
                ),
            },
        };
        let kernel_build = match std::env::var_os("ACQ_KERNEL_DIR") {
            Some(k) => PathBuf::from(k),
            None => {
                let k = script_path(&repo, "kernel.sh")?;
                if !k.join(".complete").exists() {
                    bail!(
                        "the guest kernel is not built ({}): run `make kernel`",
                        k.display()
                    );
                }
                k.join("build")
            }
        };
        let guest_bin = match std::env::var_os("ACQ_GUEST_BIN") {
            Some(g) => PathBuf::from(g),
            None => repo.join("target/guest/x86_64-unknown-linux-gnu/release"),
        };
        let device_model = match std::env::var_os("ACQ_DEVICE") {
            Some(d) => PathBuf::from(d),
            None => repo.join("target/release/acq-device"),
        };
        Ok(Paths {
            device_model,
            repo,
            qemu,
            kernel_build,
            toolroot,
            guest_bin,
        })
    }

    /// The guest kernel image.
    pub fn bzimage(&self) -> PathBuf {
        self.kernel_build.join("arch/x86/boot/bzImage")
    }
}

/// Runs `qemu/SCRIPT --path`, which prints the cache directory the script owns.
fn script_path(repo: &Path, script: &str) -> Result<PathBuf> {
    let path = repo.join("qemu").join(script);
    let out = Command::new("bash")
        .arg(&path)
        .arg("--path")
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{} --path failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

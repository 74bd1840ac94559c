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
//! | `ACQ_KERNEL_DIR` | a built kernel tree (with `vmlinux` or `arch/x86/boot/bzImage`), used for the test flavor |
//! | `ACQ_GUEST_BIN` | directory of the static guest binaries |
//! | `ACQ_DEVICE` | the device model binary (default `target/release/acq-device`) |
//! | `ACQ_SNAPSHOTS` | `0`: boot every guest instead of restoring its machine's snapshot (crate::snapshot) |

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The hardware contract, relative to the repository: the one file the kernel module
/// includes from outside driver/ (qemu/module.sh copies it beside an out-of-tree build).
pub const CONTRACT: &str = "device-model/acq-hw/src/regs.rs";

/// The cache directory, where qemu/lib.sh places it: `$ACQ_CACHE`, else
/// `$XDG_CACHE_HOME/pcie-acq`, else `~/.cache/pcie-acq`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("ACQ_CACHE") {
        Some(c) => PathBuf::from(c),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join("pcie-acq"),
    }
}

/// The repository: `$ACQ_REPO`, or the nearest directory holding `qemu/lib.sh` and
/// `Cargo.toml` above this program (target/release/acq, target/debug/deps/TEST), or above
/// the current directory. Found at run time, never from the path this crate compiled in:
/// a build that another clone reuses (qemu/cargo-cache.sh) must use that clone's files.
pub fn find_repo() -> Result<PathBuf> {
    if let Some(r) = std::env::var_os("ACQ_REPO") {
        return Ok(PathBuf::from(r));
    }
    let is_repo = |d: &Path| d.join("qemu/lib.sh").is_file() && d.join("Cargo.toml").is_file();
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    for start in exe.iter().chain(cwd.iter()) {
        if let Some(repo) = start.ancestors().find(|d| is_repo(d)) {
            return Ok(repo.to_path_buf());
        }
    }
    bail!(
        "no pcie-acq repository (a directory with qemu/lib.sh) above {} or {}: set ACQ_REPO",
        exe.as_deref().unwrap_or(Path::new("?")).display(),
        cwd.as_deref().unwrap_or(Path::new("?")).display()
    )
}

/// Resolved locations for one run.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The repository root.
    pub repo: PathBuf,
    /// How to run QEMU.
    pub qemu: QemuBinary,
    /// The guest kernel flavor `kernel_build` is.
    pub kernel_flavor: KernelFlavor,
    /// The kernel build tree (holds `vmlinux`, `arch/x86/boot/bzImage` and built modules).
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
    /// What names the QEMU in use for a snapshot's key (crate::snapshot): the toolroot's
    /// directory (its name carries its inputs' hash), or a user's binary with its size and
    /// modification time.
    pub fn qemu_identity(&self) -> String {
        match &self.qemu {
            QemuBinary::Toolroot(t) => t.display().to_string(),
            QemuBinary::Host(bin) => {
                let meta = fs::metadata(bin).ok();
                let size = meta.as_ref().map(|m| m.len());
                let mtime = meta.and_then(|m| m.modified().ok());
                format!("{} {size:?} {mtime:?}", bin.display())
            }
        }
    }

    /// Resolves every location, failing with a message that says what to run when a piece
    /// is missing.
    pub fn discover() -> Result<Paths> {
        let repo = find_repo()?;
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
            None => flavor_build(&repo, KernelFlavor::Test)?,
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
            kernel_flavor: KernelFlavor::Test,
            kernel_build,
            toolroot,
            guest_bin,
        })
    }

    /// The same locations with another guest kernel flavor (built by `make kernel-FLAVOR`).
    pub fn with_kernel(&self, flavor: KernelFlavor) -> Result<Paths> {
        if flavor == self.kernel_flavor {
            return Ok(self.clone());
        }
        Ok(Paths {
            kernel_flavor: flavor,
            kernel_build: flavor_build(&self.repo, flavor)?,
            ..self.clone()
        })
    }

    /// The guest kernel image QEMU boots: the uncompressed `vmlinux` through its PVH entry
    /// when the kernel has one (no decompressor: about 1.2 s less per TCG boot), else
    /// `bzImage` (a kernel brought with `ACQ_KERNEL_DIR`).
    pub fn kernel_image(&self) -> PathBuf {
        let vmlinux = self.kernel_build.join("vmlinux");
        let pvh = fs::read_to_string(self.kernel_build.join(".config"))
            .is_ok_and(|c| c.lines().any(|l| l == "CONFIG_PVH=y"));
        if pvh && vmlinux.exists() {
            vmlinux
        } else {
            self.kernel_build.join("arch/x86/boot/bzImage")
        }
    }

    /// The driver module built for this flavor's kernel (`make driver`, `make
    /// driver-FLAVOR`; qemu/module.sh).
    pub fn driver_module(&self) -> PathBuf {
        match self.kernel_flavor {
            KernelFlavor::Test => self.repo.join("driver/acq.ko"),
            f => self
                .repo
                .join(format!("target/driver-{}/driver/acq.ko", f.name())),
        }
    }

    /// The make target that builds [`Self::driver_module`].
    pub fn driver_target(&self) -> String {
        match self.kernel_flavor {
            KernelFlavor::Test => "make driver".into(),
            f => format!("make driver-{}", f.name()),
        }
    }
}

/// The guest kernel flavors qemu/kernel.sh builds (qemu/kernel/*.config).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum KernelFlavor {
    /// Lockdep, atomic-sleep, list and hung-task checks: every test runs on it.
    #[default]
    Test,
    /// The test flavor plus KASAN and kmemleak (built by clang).
    Debug,
    /// No debugging, as a distribution ships it: `make bench`.
    Bench,
}

impl KernelFlavor {
    /// Every flavor, in the order the docs list them.
    pub const ALL: [KernelFlavor; 3] =
        [KernelFlavor::Test, KernelFlavor::Debug, KernelFlavor::Bench];

    /// The flavor's name (qemu/kernel.sh's argument, the scenario format's `vm.kernel`).
    pub fn name(self) -> &'static str {
        match self {
            KernelFlavor::Test => "test",
            KernelFlavor::Debug => "debug",
            KernelFlavor::Bench => "bench",
        }
    }

    /// The flavor of a name, if it is one.
    pub fn from_name(name: &str) -> Option<KernelFlavor> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl std::fmt::Display for KernelFlavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The build tree of a flavor's cached kernel, or what to run to build it.
fn flavor_build(repo: &Path, flavor: KernelFlavor) -> Result<PathBuf> {
    let k = script_path_args(repo, "kernel.sh", &[flavor.name()])?;
    if !k.join(".complete").exists() {
        bail!(
            "the {flavor} guest kernel is not built ({}): run `make kernel-{flavor}`",
            k.display()
        );
    }
    Ok(k.join("build"))
}

/// Runs `qemu/SCRIPT --path`, which prints the cache directory the script owns.
fn script_path(repo: &Path, script: &str) -> Result<PathBuf> {
    script_path_args(repo, script, &[])
}

/// Runs `qemu/SCRIPT --path ARGS...`.
fn script_path_args(repo: &Path, script: &str, args: &[&str]) -> Result<PathBuf> {
    let path = repo.join("qemu").join(script);
    let out = Command::new("bash")
        .arg(&path)
        .arg("--path")
        .args(args)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn paths_with_kernel(build: &Path) -> Paths {
        Paths {
            repo: PathBuf::from("/repo"),
            qemu: QemuBinary::Host(PathBuf::from("qemu-system-x86_64")),
            kernel_flavor: KernelFlavor::Test,
            kernel_build: build.to_path_buf(),
            toolroot: None,
            guest_bin: PathBuf::new(),
            device_model: PathBuf::new(),
        }
    }

    #[test]
    fn vmlinux_boots_only_when_the_kernel_has_a_pvh_entry() {
        let dir = std::env::temp_dir().join(format!("acq-paths-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vmlinux"), b"").unwrap();
        let p = paths_with_kernel(&dir);
        let bz = dir.join("arch/x86/boot/bzImage");
        // A kernel brought with ACQ_KERNEL_DIR may have no .config at all.
        assert_eq!(p.kernel_image(), bz);
        fs::write(
            dir.join(".config"),
            "CONFIG_SMP=y\n# CONFIG_PVH is not set\n",
        )
        .unwrap();
        assert_eq!(p.kernel_image(), bz);
        fs::write(dir.join(".config"), "CONFIG_SMP=y\nCONFIG_PVH=y\n").unwrap();
        assert_eq!(p.kernel_image(), dir.join("vmlinux"));
        fs::remove_file(dir.join("vmlinux")).unwrap();
        assert_eq!(p.kernel_image(), bz, "no vmlinux: the bzImage");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_flavor_has_its_own_driver_build() {
        let p = paths_with_kernel(Path::new("/k"));
        assert_eq!(p.driver_module(), Path::new("/repo/driver/acq.ko"));
        assert_eq!(p.driver_target(), "make driver");
        let d = Paths {
            kernel_flavor: KernelFlavor::Debug,
            ..p
        };
        assert_eq!(
            d.driver_module(),
            Path::new("/repo/target/driver-debug/driver/acq.ko")
        );
        assert_eq!(d.driver_target(), "make driver-debug");
        for f in KernelFlavor::ALL {
            assert_eq!(KernelFlavor::from_name(f.name()), Some(f));
        }
        assert_eq!(KernelFlavor::from_name("kasan"), None);
    }
}

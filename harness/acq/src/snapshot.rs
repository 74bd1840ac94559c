//! Booted guests kept as QEMU snapshots: a guest whose machine was booted once before
//! starts from the saved state instead of booting again.
//!
//! A boot under TCG costs about 4 CPU-seconds (5 with four guests on two cores, 15-20 on
//! the debug kernel), and `make test` boots about a hundred guests. Restoring a snapshot
//! takes about 0.2 s. What a snapshot holds is only what every guest of a machine shares:
//! the kernel and the base image booted up to the agent's `ready`, the cards' root ports
//! empty (and on the debug flavor, what the boot leaked already forgotten by kmemleak).
//! The cards, the kernel modules and the extra files differ from run to run; they are
//! added to the running guest after the restore (QMP `device_add`, the agent's `put`),
//! the same way for a guest booted to take the snapshot, so a guest holds the same
//! things however it started.
//!
//! The cache is `$ACQ_CACHE/snapshots/KEY.state` (QEMU's `mapped-ram` format: sparse,
//! about 90 MB of a 1 GiB guest), keyed by a hash of everything the machine is made of:
//! the QEMU, the kernel image's and the base image's bytes, and QEMU's arguments (run
//! directory paths and the measured TSC rate aside). A changed kernel or guest tool makes
//! a new key; the least recently used snapshots beyond [`KEEP`] are deleted.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::Hasher;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::control::Qmp;
use crate::file_id::FileId;

/// Snapshots kept in the cache (the most recently used ones).
pub const KEEP: usize = 64;
/// The longest a save or a restore may take (a 1 GiB guest takes about a second).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Bump when what a snapshot holds changes in a way its key does not show.
const FORMAT: u32 = 2;

/// The snapshot directory of the cache (`$ACQ_CACHE/snapshots`).
pub fn dir() -> PathBuf {
    crate::paths::cache_dir().join("snapshots")
}

/// Whether snapshots are in use: `ACQ_SNAPSHOTS=0` boots every guest from scratch.
pub fn enabled() -> bool {
    std::env::var("ACQ_SNAPSHOTS").map_or(true, |v| v != "0")
}

/// One machine's snapshot in the cache.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The saved state.
    pub state: PathBuf,
    lock: PathBuf,
    /// What the machine is, for a person looking at the cache: QEMU's arguments as
    /// hashed, one a line (written beside the state as KEY.machine).
    machine: String,
}

impl Snapshot {
    /// The snapshot of the machine QEMU builds from `args` (with the kernel `kernel` and
    /// the image `image`, both in `run_dir`) under `qemu`, which names the QEMU binary.
    pub fn for_machine(
        dir: &Path,
        qemu: &str,
        kernel: &Path,
        image: &Path,
        args: &[String],
        run_dir: &Path,
    ) -> Result<Snapshot> {
        // The guest keeps the TSC rate its kernel was told at boot: a cache carried to a
        // host of another rate must not restore a guest whose clock runs wrong there. In
        // 10 MHz steps, so that a rate measured a few kHz apart names the same machine.
        let tsc = crate::tsc::host_khz().map_or(0, |k| (k + 5_000) / 10_000);
        let mut h = hashed_files(qemu, tsc, kernel, image)?;
        let run = run_dir.display().to_string();
        let mut machine = format!("{qemu}\n");
        for a in args {
            let a = machine_arg(a, &run);
            h.write(a.as_bytes());
            h.write_u8(0);
            machine.push_str(&a);
            machine.push('\n');
        }
        let key = format!("{:016x}", h.finish());
        // QEMU in the toolroot sees the directory only if it exists when QEMU starts.
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Snapshot {
            state: dir.join(format!("{key}.state")),
            lock: dir.join(format!("{key}.lock")),
            machine,
        })
    }

    /// Whether the snapshot has been taken.
    pub fn exists(&self) -> bool {
        self.state.exists()
    }

    /// Saves the running guest behind `qmp` as this snapshot, unless another guest is
    /// saving it now or already has. The guest is stopped while QEMU writes its memory
    /// (about a second: one pass, nothing dirtied meanwhile) and runs on afterwards.
    /// Returns whether this call saved it; a save that fails is logged and leaves no
    /// file. An error means the guest could not be run again.
    pub fn save(&self, qmp: &mut Qmp) -> Result<bool> {
        let dir = self
            .state
            .parent()
            .context("a snapshot path has a directory")?;
        let Ok(lock) = File::create(&self.lock) else {
            tracing::warn!("cannot create {}: no snapshot taken", self.lock.display());
            return Ok(false);
        };
        // SAFETY: flock on a file descriptor we own; it blocks nothing (LOCK_NB) and the
        // lock goes with the descriptor when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(false);
        }
        if self.exists() {
            return Ok(false);
        }
        let tmp = Unfinished(
            self.state
                .with_extension(format!("state.{}", std::process::id())),
        );
        let _ = fs::remove_file(&tmp.0);
        qmp.execute("stop", json!({}))
            .context("stopping the guest for its snapshot")?;
        let saved = match start_migration(qmp, "migrate", json!({"uri": file_uri(&tmp.0)})) {
            // Refused (a QEMU without mapped-ram, a migration blocker): nothing runs.
            Err(e) => Err(e),
            Ok(()) => match wait_migration(qmp, "migrate", MIGRATION_TIMEOUT) {
                Ok(ended) => ended.map_err(anyhow::Error::msg),
                Err(late) => {
                    // A migration still running would stop the guest again when it ends.
                    let _ = qmp.execute("migrate_cancel", json!({}));
                    // Ended either way (cancelled, or done after all: the file goes with
                    // `tmp`); one that does not end leaves the guest to be stopped.
                    let _ended = wait_migration(qmp, "migrate", Duration::from_secs(10))
                        .context("cancelling a snapshot save that did not finish")?;
                    Err(late)
                }
            },
        };
        qmp.execute("cont", json!({}))
            .context("running the guest again after its snapshot")?;
        let done = saved.and_then(|()| {
            fs::rename(&tmp.0, &self.state)
                .with_context(|| format!("renaming {} into place", tmp.0.display()))
        });
        if let Err(e) = done {
            tracing::warn!("{e:#}: no snapshot saved as {}", self.state.display());
            return Ok(false);
        }
        let _ = fs::write(self.state.with_extension("machine"), &self.machine);
        prune(dir, KEEP);
        Ok(true)
    }

    /// Loads this snapshot into a QEMU started with `-incoming defer` and runs it. A
    /// snapshot QEMU cannot load (cut short, of another QEMU) is deleted, so the guest's
    /// boot saves a new one; any other failure (a timeout, QEMU gone) leaves it.
    pub fn restore(&self, qmp: &mut Qmp) -> Result<()> {
        // Most recently used first when pruning.
        let _ = File::options()
            .append(true)
            .open(&self.state)
            .and_then(|f| f.set_modified(SystemTime::now()));
        let uri = file_uri(&self.state);
        // exit-on-error off: a load that fails is reported (status "failed"), and QEMU
        // stays to say so instead of exiting.
        let args = json!({"uri": uri, "exit-on-error": false});
        let loaded = start_migration(qmp, "migrate-incoming", args)
            .and_then(|()| wait_migration(qmp, "migrate-incoming", MIGRATION_TIMEOUT))
            .with_context(|| format!("restoring the snapshot {}", self.state.display()))?;
        if let Err(reason) = loaded {
            self.discard();
            bail!(
                "the snapshot {} does not load: {reason}; deleted",
                self.state.display()
            );
        }
        qmp.execute("cont", json!({}))
            .context("running the restored guest")?;
        Ok(())
    }

    /// Deletes this snapshot (one that would not restore).
    pub fn discard(&self) {
        let _ = fs::remove_file(&self.state);
        let _ = fs::remove_file(self.state.with_extension("machine"));
    }
}

/// `arg` as it says something about the machine: the run directory's paths (sockets,
/// logs, the run's copies of kernel and image) and the TSC rate measured for this run
/// (a guest restored keeps the rate its kernel calibrated) left out.
fn machine_arg(arg: &str, run_dir: &str) -> String {
    arg.replace(run_dir, "@RUN@")
        .split(' ')
        .filter(|w| !w.starts_with("tsc_early_khz="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The key's hash of its first parts: the format, the QEMU, the TSC rate and the bytes of
/// the kernel and of the image. Kept for the process by the files' ids (crate::file_id): a
/// test binary or a scenario run starts dozens of guests from the same two files (45 MB
/// together, each hashed at every start before).
fn hashed_files(qemu: &str, tsc: u32, kernel: &Path, image: &Path) -> Result<DefaultHasher> {
    type Key = (String, u32, FileId, FileId);
    static HASHED: Mutex<Vec<(Key, DefaultHasher)>> = Mutex::new(Vec::new());
    /// A run's guests boot a few kernels (flavors) and images (kinds of guest).
    const HASHED_MAX: usize = 8;
    let hash = || -> Result<DefaultHasher> {
        let mut h = DefaultHasher::new();
        h.write_u32(FORMAT);
        h.write(qemu.as_bytes());
        h.write_u32(tsc);
        hash_file(&mut h, kernel)?;
        hash_file(&mut h, image)?;
        Ok(h)
    };
    let ids = || Some((FileId::of(kernel).ok()?, FileId::of(image).ok()?));
    let Some((k, i)) = ids() else {
        return hash();
    };
    let key = (qemu.to_string(), tsc, k, i);
    // Held while hashing: guests started at once wait for the first one's hash.
    let mut hashed = HASHED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, h)) = hashed.iter().find(|(have, _)| *have == key) {
        return Ok(h.clone());
    }
    let h = hash()?;
    // Kept only if neither file changed while it was read.
    if ids() == Some((k, i)) {
        if hashed.len() >= HASHED_MAX {
            hashed.remove(0);
        }
        hashed.push((key, h.clone()));
    }
    Ok(h)
}

fn hash_file(h: &mut DefaultHasher, path: &Path) -> Result<()> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        h.write(&buf[..n]);
    }
}

fn file_uri(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// Starts one migration command (`migrate` to save, `migrate-incoming` to restore) with
/// the `mapped-ram` format (each page at a fixed offset: a sparse file written and read
/// in place, no stream to parse).
fn start_migration(qmp: &mut Qmp, command: &str, args: serde_json::Value) -> Result<()> {
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "mapped-ram", "state": true}]}),
    )?;
    qmp.execute(command, args).map(drop)
}

/// Waits up to `timeout` for the migration `command` started to end: `Ok(Err(reason))`
/// when QEMU reports it failed or was cancelled (or knows of no migration at all).
fn wait_migration(
    qmp: &mut Qmp,
    command: &str,
    timeout: Duration,
) -> Result<std::result::Result<(), String>> {
    let start = Instant::now();
    loop {
        let status = qmp.execute("query-migrate", json!({}))?;
        match status.get("status").and_then(|s| s.as_str()) {
            Some("completed") => return Ok(Ok(())),
            None => return Ok(Err(format!("QEMU reports no {command} under way"))),
            Some(end @ ("failed" | "cancelled")) => {
                return Ok(Err(format!(
                    "QEMU's {command} ended {end}: {}",
                    status
                        .get("error-desc")
                        .and_then(|e| e.as_str())
                        .unwrap_or("no reason given")
                )))
            }
            _ if start.elapsed() > timeout => {
                bail!("QEMU's {command} did not finish within {timeout:?}: {status}")
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A snapshot file being written: removed unless renamed into place.
struct Unfinished(PathBuf);

impl Drop for Unfinished {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Deletes all but the `keep` most recently used snapshots in `dir`, and what saves
/// left behind over an hour ago (a harness killed mid-save: `KEY.state.PID`; the lock of
/// a snapshot deleted).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    let stale = |p: &Path| {
        p.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(3600)))
    };
    for p in &entries {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let unfinished = name.contains(".state.");
        let orphan_lock =
            p.extension().is_some_and(|x| x == "lock") && !p.with_extension("state").exists();
        if (unfinished || orphan_lock) && stale(p) {
            let _ = fs::remove_file(p);
        }
    }
    let mut states: Vec<(SystemTime, PathBuf)> = entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "state"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    states.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (_, old) in states.into_iter().skip(keep) {
        tracing::info!("removing the old guest snapshot {}", old.display());
        let _ = fs::remove_file(&old);
        let _ = fs::remove_file(old.with_extension("lock"));
        let _ = fs::remove_file(old.with_extension("machine"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh scratch directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("acq-snapshot-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn machine_args_leave_out_run_paths_and_the_tsc_rate() {
        let a = machine_arg(
            "console=ttyS0 tsc=reliable tsc_early_khz=2599999 quiet",
            "/tmp/r1",
        );
        let b = machine_arg(
            "console=ttyS0 tsc=reliable tsc_early_khz=2600001 quiet",
            "/tmp/r2",
        );
        assert_eq!(a, b);
        assert_eq!(
            machine_arg("file,id=con0,path=/tmp/r1/console.log", "/tmp/r1"),
            "file,id=con0,path=@RUN@/console.log"
        );
    }

    #[test]
    fn keys_follow_the_machine_and_the_files() {
        let t = scratch("keys");
        let (k, i) = (t.join("vmlinux"), t.join("initramfs.cpio"));
        fs::write(&k, b"kernel").unwrap();
        fs::write(&i, b"image").unwrap();
        let args = |m: &str| vec!["-m".to_string(), m.to_string()];
        let snap = |args: &[String]| {
            Snapshot::for_machine(&t, "qemu", &k, &i, args, &t)
                .unwrap()
                .state
        };
        let one = snap(&args("1024M"));
        assert_eq!(one, snap(&args("1024M")));
        assert_ne!(one, snap(&args("512M")));
        fs::write(&i, b"image, rebuilt").unwrap();
        assert_ne!(one, snap(&args("1024M")));
        // The key is the bytes': the same image written again as another file names the
        // same machine (each run directory's image is its own file, or a link).
        let rebuilt = snap(&args("1024M"));
        fs::remove_file(&i).unwrap();
        fs::write(&i, b"image, rebuilt").unwrap();
        assert_eq!(rebuilt, snap(&args("1024M")));
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn pruning_keeps_the_most_recently_used() {
        let t = scratch("prune");
        let aged = |name: &str, age: u64| {
            let p = t.join(name);
            fs::write(&p, b"").unwrap();
            File::options()
                .append(true)
                .open(&p)
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
        };
        for (n, age) in [("a", 30), ("b", 10), ("c", 20)] {
            aged(&format!("{n}.state"), age);
            aged(&format!("{n}.lock"), 0);
        }
        // A save killed two hours ago and one under way; the lock of a deleted snapshot.
        for (n, age) in [("d.state.17", 7200), ("e.state.18", 10), ("f.lock", 7200)] {
            aged(n, age);
        }
        prune(&t, 2);
        let mut left: Vec<String> = fs::read_dir(&t)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["b.lock", "b.state", "c.lock", "c.state", "e.state.18"]
        );
        fs::remove_dir_all(&t).unwrap();
    }
}

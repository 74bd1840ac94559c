//! qemu/cargo-cache.sh on a made-up repository: the cache keeps crates.io units only
//! (never this repo's crates, which cargo judges by mtime), a fresh clone's missing target
//! directories get them back with their mtimes, and a later save adds what is new.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

const LOCK: &str = r#"version = 4

[[package]]
name = "acq-wire"
version = "0.1.0"
dependencies = [
 "serde",
]

[[package]]
name = "serde"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "vfio_user"
version = "0.1.7"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

const FUZZ_LOCK: &str = r#"version = 4

[[package]]
name = "acq-fuzz"
version = "0.0.0"

[[package]]
name = "libfuzzer-sys"
version = "0.4.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

const H: &str = "0123456789abcdef";

/// A repository with the two scripts and the two lock files, in a fresh directory.
fn repo(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("acq-cargo-cache-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../qemu");
    fs::create_dir_all(dir.join("qemu")).unwrap();
    for f in ["lib.sh", "cargo-cache.sh"] {
        fs::copy(src.join(f), dir.join("qemu").join(f)).unwrap();
    }
    fs::write(dir.join("Cargo.lock"), LOCK).unwrap();
    fs::create_dir_all(dir.join("tests/acq-fuzz")).unwrap();
    fs::write(dir.join("tests/acq-fuzz/Cargo.lock"), FUZZ_LOCK).unwrap();
    dir
}

fn touch(root: &Path, rel: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, rel).unwrap();
}

/// A serde unit of `profile` with `hash` in `root`'s target/: its fingerprint and rlib.
fn serde_unit(root: &Path, profile: &str, hash: &str) -> [String; 2] {
    let unit = [
        format!("target/{profile}/.fingerprint/serde-{hash}/lib"),
        format!("target/{profile}/deps/libserde-{hash}.rlib"),
    ];
    for f in &unit {
        touch(root, f);
    }
    unit
}

/// Every file under `root`, relative to it.
fn files(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn run(repo: &Path, cache: &Path, cmd: &str) -> String {
    let out = Command::new("bash")
        .arg(repo.join("qemu/cargo-cache.sh"))
        .arg(cmd)
        .env("ACQ_CACHE", cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A failed save exits 0 (a cache must not fail the build) but says so.
    assert!(
        out.status.success() && !stderr.contains("failed"),
        "cargo-cache.sh {cmd}: {stderr}"
    );
    stderr.into_owned()
}

/// The files of an entry, but its list of units.
fn units(entry: &Path) -> BTreeSet<String> {
    let mut f = files(entry);
    assert!(f.remove("units"), "the entry lists its units");
    f
}

/// The one entry `cache` holds.
fn entry(cache: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

#[test]
fn only_crates_io_units_are_kept_and_a_fresh_clone_gets_them_back() {
    let a = repo("a");
    let cache = a.join("cache");
    // Units as cargo leaves them: a fingerprint directory and files of the same hash in
    // the same profile (a build script: its compiled and its run unit).
    let deps = [
        format!("target/debug/.fingerprint/serde-{H}/lib-serde.json"),
        format!("target/debug/.fingerprint/serde-{H}/dep-lib-serde"),
        format!("target/debug/deps/libserde-{H}.rlib"),
        format!("target/debug/deps/libserde-{H}.rmeta"),
        format!("target/debug/deps/serde-{H}.d"),
        "target/debug/.fingerprint/serde-fedcba9876543210/run-build-script".to_string(),
        "target/debug/build/serde-fedcba9876543210/out/private.rs".to_string(),
        format!("target/guest/x86_64-unknown-linux-gnu/release/.fingerprint/vfio_user-{H}/lib"),
        format!("target/guest/x86_64-unknown-linux-gnu/release/deps/libvfio_user-{H}.rlib"),
        format!("tests/acq-fuzz/target/x86_64-unknown-linux-gnu/release/.fingerprint/libfuzzer-sys-{H}/lib"),
        format!(
            "tests/acq-fuzz/target/x86_64-unknown-linux-gnu/release/deps/liblibfuzzer_sys-{H}.rlib"
        ),
        format!("tests/acq-fuzz/target/release/.fingerprint/libfuzzer-sys-{H}/build"),
    ];
    // This repo's crates, a test binary named like no crate ("vfio" beside "vfio_user"), a
    // target named like a crate (the fuzz target vfio_user: its unit is acq-fuzz's),
    // files whose unit is another profile's, uplifted binaries, incremental state: none
    // of it may be cached.
    let own = [
        format!("target/debug/.fingerprint/acq-wire-{H}/lib-acq_wire.json"),
        format!("target/debug/deps/libacq_wire-{H}.rlib"),
        "target/debug/.fingerprint/acq-e2e-1111111111111111/test-vfio".to_string(),
        "target/debug/deps/vfio-1111111111111111".to_string(),
        "target/debug/deps/serde_extra-2222222222222222.d".to_string(),
        "tests/acq-fuzz/target/debug/.fingerprint/acq-fuzz-3333333333333333/bin".to_string(),
        "tests/acq-fuzz/target/debug/deps/libvfio_user-3333333333333333.rmeta".to_string(),
        "tests/acq-fuzz/target/debug/deps/vfio_user-3333333333333333.d".to_string(),
        format!("target/release/deps/libserde-{H}.rlib"),
        format!("target/debug/incremental/acq_wire-{H}/s-1/query-cache.bin"),
        "target/debug/acq".to_string(),
        "target/acq-runs/1/console.log".to_string(),
        format!("tests/acq-fuzz/target/x86_64-unknown-linux-gnu/release/deps/acq_fuzz-{H}"),
    ];
    for f in deps.iter().chain(own.iter()) {
        touch(&a, f);
    }
    // Nanoseconds too: cargo compares mtimes to the nanosecond.
    let old = SystemTime::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    let rlib = format!("target/debug/deps/libserde-{H}.rlib");
    fs::File::options()
        .write(true)
        .open(a.join(&rlib))
        .unwrap()
        .set_modified(old)
        .unwrap();

    run(&a, &cache, "save");
    let e = entry(&cache);
    assert_eq!(units(&e), set(&deps), "the cache entry");

    // A fresh clone: no target directories. Restore brings the units with their mtimes.
    let b = repo("b");
    touch(&b, "target/.keep-nothing");
    fs::remove_dir_all(b.join("target")).unwrap();
    run(&b, &cache, "restore");
    let restored: BTreeSet<String> = files(&b)
        .into_iter()
        .filter(|f| f.contains("target/") && !f.ends_with("/.acq-restored"))
        .collect();
    assert_eq!(restored, set(&deps), "the restored target directories");
    // A second restore before cargo ran (make test restores for the host tests, then
    // again for the builds beside them) leaves the seeded directories alone: it copied the whole
    // entry again before.
    assert!(b.join("tests/acq-fuzz/target/.acq-restored").exists());
    let again = run(&b, &cache, "restore");
    assert!(
        !again.contains("dependencies of"),
        "a second restore copied the entry again: {again}"
    );
    assert_eq!(
        fs::metadata(b.join(&rlib)).unwrap().modified().unwrap(),
        old
    );

    // A target directory cargo has not used yet (qemu/module.sh's target/driver-test
    // only) is seeded; one cargo has used is left alone.
    let m = repo("m");
    touch(&m, "target/driver-debug/driver/acq.ko");
    run(&m, &cache, "restore");
    assert!(
        m.join(&rlib).exists(),
        "not restored beside target/driver-debug"
    );
    assert!(m.join("target/driver-debug/driver/acq.ko").exists());
    let _ = fs::remove_dir_all(m);
    let c = repo("c");
    touch(&c, "target/CACHEDIR.TAG");
    touch(&c, "target/debug/mine");
    run(&c, &cache, "restore");
    assert!(!c
        .join(format!("target/debug/deps/libserde-{H}.rlib"))
        .exists());
    assert!(c
        .join(format!(
            "tests/acq-fuzz/target/release/.fingerprint/libfuzzer-sys-{H}/build"
        ))
        .exists());

    // A clone that restored the entry and built one more unit saves both.
    let newer = serde_unit(&b, "release", "4444444444444444");
    run(&b, &cache, "save");
    let mut want = set(&deps);
    want.extend(newer);
    assert_eq!(units(&entry(&cache)), want, "the entry after a second save");

    // An entry is one clone's build, never a merge: a clone with other units replaces it.
    let d = repo("d");
    let other = serde_unit(&d, "debug", "5555555555555555");
    run(&d, &cache, "save");
    assert_eq!(
        units(&entry(&cache)),
        set(&other),
        "the entry after another clone's save"
    );
    let _ = fs::remove_dir_all(d);

    for d in [a, b, c] {
        let _ = fs::remove_dir_all(d);
    }
}

#[test]
fn another_lock_file_is_another_entry() {
    let a = repo("lock");
    let cache = a.join("cache");
    touch(&a, &format!("target/debug/.fingerprint/serde-{H}/lib"));
    run(&a, &cache, "save");
    let first = entry(&cache);
    fs::write(a.join("Cargo.lock"), LOCK.replace("1.0.0", "1.0.1")).unwrap();
    fs::remove_dir_all(a.join("target")).unwrap();
    run(&a, &cache, "restore");
    assert!(
        !a.join("target").exists(),
        "restored from an entry of another lock file"
    );
    let _ = fs::remove_dir_all(first);
    let _ = fs::remove_dir_all(a);
}

/// A save that fails half-way (here: its cache runs out of space) keeps the old entry
/// whole and says so, and the build goes on (status 0). In a mount namespace of its own,
/// so the small tmpfs it fills vanishes with it; needs root, as make test's CI has.
#[test]
fn a_save_that_fails_keeps_the_old_entry_and_says_so() {
    if !Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: unshare --mount needs root here");
        return;
    }
    let a = repo("full");
    let cache = a.join("cache");
    fs::create_dir_all(&cache).unwrap();
    touch(&a, &format!("target/debug/.fingerprint/serde-{H}/lib"));
    // Bigger than the tmpfs below: its copy fails with ENOSPC.
    let big = "target/debug/.fingerprint/serde-6666666666666666/lib";
    touch(&a, big);
    fs::write(a.join(big), vec![0u8; 512 << 10]).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o size=256k tmpfs '{c}'; \
         mv '{a}/target/debug/.fingerprint/serde-6666666666666666' '{a}/big'; \
         ACQ_CACHE='{c}' bash '{a}/qemu/cargo-cache.sh' save; \
         mv '{a}/big' '{a}/target/debug/.fingerprint/serde-6666666666666666'; \
         ACQ_CACHE='{c}' bash '{a}/qemu/cargo-cache.sh' save; \
         echo \"status $?\"; cat '{c}'/cargo-*/units; ls '{c}'",
        c = cache.display(),
        a = a.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("status 0"), "{stdout}");
    assert!(stderr.contains("the save failed"), "not reported: {stderr}");
    let kept: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("target/"))
        .collect();
    assert_eq!(
        kept,
        [format!("target/debug/.fingerprint/serde-{H}")],
        "{stdout}"
    );
    assert!(
        !stdout.contains(".new."),
        "a half-copied entry was left: {stdout}"
    );
    let _ = fs::remove_dir_all(a);
}

//! qemu/cargo-cache.sh on made-up repositories: the cache keeps every profile directory but
//! incremental state, a fresh clone's missing target directories get them back with their
//! mtimes, a later save adds what is new; and with real cargo and git, a fresh clone of the
//! same sources compiles nothing while one whose sources differ (even with older mtimes) or
//! a tree built in before compiles this repo's crates again.

mod common;

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

/// A git checkout (nothing committed: the script takes untracked files for sources too)
/// with the two scripts and the two lock files, in a fresh directory.
fn repo(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("acq-cargo-cache-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let src = acq::paths::find_repo().unwrap().join("qemu");
    fs::create_dir_all(dir.join("qemu")).unwrap();
    for f in ["lib.sh", "cargo-cache.sh"] {
        fs::copy(src.join(f), dir.join("qemu").join(f)).unwrap();
    }
    fs::write(dir.join("Cargo.lock"), LOCK).unwrap();
    fs::create_dir_all(dir.join("tests/acq-fuzz")).unwrap();
    fs::write(dir.join("tests/acq-fuzz/Cargo.lock"), FUZZ_LOCK).unwrap();
    fs::write(
        dir.join(".gitignore"),
        "/target\n/tests/acq-fuzz/target\n/cache\n*.cmd\n",
    )
    .unwrap();
    git(&dir, &["init", "-q"]);
    dir
}

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?} in {}", dir.display());
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

/// The files of an entry, but its list of units and its sources.
fn units(entry: &Path) -> BTreeSet<String> {
    let mut f = files(entry);
    assert!(f.remove("units"), "the entry lists its units");
    assert!(f.remove("sources"), "the entry lists its sources");
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
fn every_profile_but_incremental_state_is_kept_and_a_fresh_clone_gets_it_back() {
    let a = repo("a");
    let cache = a.join("cache");
    // Units as cargo leaves them, crates.io's and this repo's, in every profile directory
    // (one that holds .fingerprint/) of both target directories, uplifted binaries too.
    let kept = [
        format!("target/debug/.fingerprint/serde-{H}/lib-serde.json"),
        format!("target/debug/.fingerprint/serde-{H}/dep-lib-serde"),
        format!("target/debug/deps/libserde-{H}.rlib"),
        format!("target/debug/deps/serde-{H}.d"),
        "target/debug/build/serde-fedcba9876543210/out/private.rs".to_string(),
        format!("target/debug/.fingerprint/acq-wire-{H}/lib-acq_wire.json"),
        format!("target/debug/deps/libacq_wire-{H}.rlib"),
        "target/debug/acq".to_string(),
        format!("target/guest/x86_64-unknown-linux-gnu/release/.fingerprint/vfio_user-{H}/lib"),
        format!("target/guest/x86_64-unknown-linux-gnu/release/deps/libvfio_user-{H}.rlib"),
        format!("target/lint/debug/.fingerprint/acq-wire-{H}/lib"),
        format!("tests/acq-fuzz/target/x86_64-unknown-linux-gnu/release/.fingerprint/libfuzzer-sys-{H}/lib"),
        format!("tests/acq-fuzz/target/x86_64-unknown-linux-gnu/release/deps/acq_fuzz-{H}"),
        format!("tests/acq-fuzz/target/release/.fingerprint/libfuzzer-sys-{H}/build"),
    ];
    // Incremental state (rustc rebuilds it), the VM tests' run directories, the lists of
    // test binaries (their paths are this clone's) and kbuild's copies: not cached.
    let left = [
        format!("target/debug/incremental/acq_wire-{H}/s-1/query-cache.bin"),
        "target/acq-runs/1/console.log".to_string(),
        "target/host-tests".to_string(),
        "target/driver-debug/driver/acq.ko".to_string(),
    ];
    for f in kept.iter().chain(left.iter()) {
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
    assert_eq!(units(&e), set(&kept), "the cache entry");
    let sources = fs::read_to_string(e.join("sources")).unwrap();
    assert!(
        sources.lines().any(|l| l.ends_with("\tCargo.lock")),
        "{sources}"
    );
    assert!(!sources.contains("target/"), "{sources}");

    // A fresh clone: no target directories. Restore brings the units with their mtimes.
    let b = repo("b");
    run(&b, &cache, "restore");
    let restored: BTreeSet<String> = files(&b)
        .into_iter()
        .filter(|f| f.contains("target/") && !f.ends_with("/.acq-restored"))
        .collect();
    assert_eq!(restored, set(&kept), "the restored target directories");
    // A second restore before cargo ran (make test restores for the host tests, then
    // again for the builds beside them) leaves the seeded directories alone: it copied the whole
    // entry again before.
    assert!(b.join("tests/acq-fuzz/target/.acq-restored").exists());
    let again = run(&b, &cache, "restore");
    assert!(
        !again.contains(" from "),
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

    // A clone that restored the entry, built one more unit and rebuilt another saves all:
    // what it did not build again is linked to the old entry's files, what it built copied.
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let unchanged = format!("target/debug/deps/libacq_wire-{H}.rlib");
    let before = ino(&entry(&cache).join(&unchanged));
    let newer = serde_unit(&b, "release", "4444444444444444");
    fs::write(b.join(&rlib), "rebuilt").unwrap();
    run(&b, &cache, "save");
    let e = entry(&cache);
    let mut want = set(&kept);
    want.extend(newer);
    assert_eq!(units(&e), want, "the entry after a second save");
    assert_eq!(
        ino(&e.join(&unchanged)),
        before,
        "an unchanged file copied again"
    );
    assert_eq!(fs::read_to_string(e.join(&rlib)).unwrap(), "rebuilt");
    assert_ne!(
        ino(&e.join(&rlib)),
        ino(&b.join(&rlib)),
        "the entry shares a clone's file"
    );

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

/// A cache directory of its own for test `name`.
fn scratch_cache(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("acq-cargo-cache-{name}-{}", std::process::id()))
}

/// Removes what a test made.
fn remove_all<const N: usize>(dirs: [PathBuf; N]) {
    for d in dirs {
        let _ = fs::remove_dir_all(d);
    }
}

/// A crate built by real cargo in a git checkout `name`, committed, its cache saved.
fn built_crate(name: &str, cache: &Path) -> PathBuf {
    let a = repo(name);
    fs::write(
        a.join("Cargo.toml"),
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    touch(&a, "src/lib.rs");
    fs::write(a.join("src/lib.rs"), "pub fn f() -> u32 { 1 }\n").unwrap();
    // Its checkout found at run time, as this repo's crates find theirs.
    fs::write(
        a.join("src/main.rs"),
        "fn main() { let e = std::env::current_exe().unwrap(); \
         println!(\"{}\", e.ancestors().nth(3).unwrap().display()); }\n",
    )
    .unwrap();
    assert!(cargo_build(&a).contains("Compiling tiny"));
    git(&a, &["add", "-A"]);
    git(&a, &["commit", "-qm", "tiny"]);
    run(&a, cache, "save");
    a
}

/// `cargo build` in `dir` (its own target directory, whatever the caller's environment
/// says); returns what cargo printed.
fn cargo_build(dir: &Path) -> String {
    let out = Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["build", "--offline"])
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "cargo build in {}: {err}",
        dir.display()
    );
    err
}

/// `dir`'s clone, in a directory beside it named `name`.
fn clone(dir: &Path, name: &str) -> PathBuf {
    let b = dir.with_file_name(format!(
        "{}-{name}",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&b);
    git(
        dir.parent().unwrap(),
        &["clone", "-q", &dir.to_string_lossy(), &b.to_string_lossy()],
    );
    b
}

/// A fresh clone in `dir`'s own directory (as a CI runner clones into its workspace):
/// `dir` is cloned aside, removed, and cloned again from there; returns the aside copy.
fn clone_in_place(dir: &Path) -> PathBuf {
    let aside = clone(dir, "aside");
    fs::remove_dir_all(dir).unwrap();
    git(
        dir.parent().unwrap(),
        &[
            "clone",
            "-q",
            &aside.to_string_lossy(),
            &dir.to_string_lossy(),
        ],
    );
    aside
}

/// What the crate's binary says its checkout is.
fn checkout_of_binary(dir: &Path) -> String {
    let out = Command::new(dir.join("target/debug/tiny"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The point of the cache (#19): a fresh clone of sources the cache has seen, in the
/// directory it was built in, compiles nothing. Before, the cache kept crates.io units
/// only, and every clone compiled this repo's crates again (about 100 s of both CPUs in
/// make test).
#[test]
fn a_fresh_clone_of_the_same_sources_compiles_nothing() {
    let cache = scratch_cache("same");
    let a = built_crate("crate-same", &cache);
    let aside = clone_in_place(&a);
    let log = run(&a, &cache, "restore");
    assert!(log.contains("keep their units"), "{log}");
    let out = cargo_build(&a);
    assert!(
        !out.contains("Compiling"),
        "the same sources compiled again: {out}"
    );
    assert_eq!(checkout_of_binary(&a), a.display().to_string());
    remove_all([a, aside, cache]);
}

/// What a cache of this repo's crates could get wrong: a clone's source of other content
/// whose mtime is older than the cached artefact would pass for its build. It is compiled,
/// and so is everything in a tree a build touched before (its kbuild objects judged by
/// mtime too: no time is set back there).
#[test]
fn other_sources_or_a_tree_built_in_before_compile_again() {
    let cache = scratch_cache("other");
    let a = built_crate("crate-other", &cache);

    let aside = clone_in_place(&a);
    fs::write(a.join("src/lib.rs"), "pub fn f() -> u32 { 2 }\n").unwrap();
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(a.join("src/lib.rs"))
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    run(&a, &cache, "restore");
    assert!(
        cargo_build(&a).contains("Compiling tiny"),
        "a source of other content passed for the cached build"
    );

    let _ = fs::remove_dir_all(&aside);
    let aside = clone_in_place(&a);
    touch(&a, "driver/.acq.o.cmd");
    let log = run(&a, &cache, "restore");
    assert!(log.contains("rebuilt"), "{log}");
    assert!(
        cargo_build(&a).contains("Compiling tiny"),
        "sources set back in a tree with kbuild objects"
    );
    remove_all([a, aside, cache]);
}

/// A fresh clone in another directory (a CI runner's new workspace) compiles nothing
/// either, and its binary finds its own checkout: no crate here compiles in the path of its
/// checkout (`no_crate_compiles_in_its_checkouts_path`).
#[test]
fn a_fresh_clone_elsewhere_compiles_nothing_and_its_binaries_find_their_checkout() {
    let cache = scratch_cache("moved");
    let a = built_crate("crate-moved", &cache);
    let b = clone(&a, "moved");
    let log = run(&b, &cache, "restore");
    assert!(log.contains("keep their units"), "{log}");
    let out = cargo_build(&b);
    assert!(!out.contains("Compiling"), "compiled again: {out}");
    assert_eq!(checkout_of_binary(&b), b.display().to_string());
    remove_all([a, b, cache]);
}

/// What makes the cache sound in any directory: cargo does not rebuild a crate whose
/// checkout moved, so a crate that compiled in its checkout's path would use another
/// clone's files. Every Rust source of both workspaces (and no build script) is checked.
/// Failed before: the harness's repository, the device model's binaries in its tests, and
/// the files of six test files were all found by compile-time paths (a fresh clone's host
/// tests ran a deleted clone's qemu/beside.sh).
#[test]
fn no_crate_compiles_in_its_checkouts_path() {
    let repo = acq::paths::find_repo().unwrap();
    let out = Command::new("git")
        .args(["ls-files", "-z", "*.rs"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success());
    // Whitespace left out: `env!(` and its argument may stand on two lines.
    let needles: Vec<String> = [
        "CARGO_MANIFEST_DIR",
        "CARGO_BIN_EXE_",
        "OUT_DIR",
        "CARGO_TARGET_TMPDIR",
    ]
    .iter()
    .map(|v| format!("env!(\"{v}"))
    .collect();
    let mut found = Vec::new();
    for f in out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = std::str::from_utf8(f).unwrap();
        if rel.ends_with("build.rs") {
            found.push(format!("{rel}: a build script"));
            continue;
        }
        let text: String = fs::read_to_string(repo.join(rel))
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        for n in &needles {
            if text.contains(n.as_str()) {
                found.push(format!("{rel}: {n}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "compile-time paths of the checkout (find them at run time: acq::paths::find_repo):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_source_deleted_in_the_working_tree_stops_nothing() {
    let a = repo("deleted");
    let cache = a.join("cache");
    touch(&a, "gone.rs");
    git(&a, &["add", "-A"]);
    git(&a, &["commit", "-qm", "x"]);
    fs::remove_file(a.join("gone.rs")).unwrap();
    touch(&a, &format!("target/debug/.fingerprint/serde-{H}/lib"));
    let log = run(&a, &cache, "save");
    assert!(log.contains("saved"), "{log}");
    let sources = fs::read_to_string(entry(&cache).join("sources")).unwrap();
    assert!(!sources.contains("gone.rs"), "{sources}");
    fs::remove_dir_all(a.join("target")).unwrap();
    let log = run(&a, &cache, "restore");
    assert!(log.contains("keep their units"), "{log}");
    assert!(a
        .join(format!("target/debug/.fingerprint/serde-{H}/lib"))
        .exists());
    let _ = fs::remove_dir_all(a);
}

/// cargo given target/guest/ (or an editor's target/rust-analyzer/) marks that directory,
/// not target/: such a tree was built in, and no source time is set back in it.
#[test]
fn a_tree_with_a_nested_target_directory_cargo_used_is_not_set_back() {
    let a = repo("nested");
    let cache = a.join("cache");
    touch(&a, &format!("target/debug/.fingerprint/serde-{H}/lib"));
    run(&a, &cache, "save");
    fs::remove_dir_all(a.join("target")).unwrap();
    touch(&a, "target/guest/CACHEDIR.TAG");
    let log = run(&a, &cache, "restore");
    assert!(log.contains("built in before"), "{log}");
    let _ = fs::remove_dir_all(a);
}

/// No save while cargo builds in a profile (its flock on the profile's .cargo-lock): a
/// unit half written would be kept.
#[test]
fn no_save_while_cargo_builds() {
    let a = repo("building");
    let cache = a.join("cache");
    touch(&a, &format!("target/debug/.fingerprint/serde-{H}/lib"));
    let lock = a.join("target/debug/.cargo-lock");
    fs::write(&lock, "").unwrap();
    let mut cargo = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    // flock holds the lock once it runs sleep: wait for that.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Command::new("flock")
        .args(["-n"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = run(&a, &cache, "save");
    let _ = cargo.kill();
    let _ = cargo.wait();
    assert!(log.contains("cargo is building in target/debug"), "{log}");
    assert!(
        !cache.exists()
            || fs::read_dir(&cache)
                .unwrap()
                .all(|e| !e.unwrap().path().is_dir()),
        "saved while cargo built"
    );
    let _ = fs::remove_dir_all(a);
}

/// A target directory cargo built in but left no CACHEDIR.TAG in (target/ itself: a cold
/// make test's restore beside the VM tests, once the entry existed) is used: nothing is
/// restored into it and no source is touched. Failed before: it was restored and every
/// source set to the present time, so the lints beside the VM tests compiled everything.
#[test]
fn a_target_directory_cargo_built_in_is_not_restored_into() {
    let a = repo("built");
    let cache = a.join("cache");
    touch(&a, &format!("target/debug/.fingerprint/serde-{H}/lib"));
    run(&a, &cache, "save");
    let log = run(&a, &cache, "restore");
    assert!(!log.contains("target from"), "{log}");
    let _ = fs::remove_dir_all(a);
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
    if !common::mount_namespaces_allowed() {
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

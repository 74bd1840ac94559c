//! qemu/module.sh's cache of built modules, with the real test kernel and toolroot: the
//! second build of the same sources is the cached module (no compiler ran, the old objects
//! are gone), and a change to the contract, which the driver includes from outside
//! driver/, builds the module again. make test runs it beside the VM tests (it builds a
//! module: about 10 CPU-seconds). Needs the test kernel (`make kernel-test`; make test
//! builds it before the host tests) and root (the toolroot's mount namespace).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// This repo's qemu/, driver/ sources and contract, copied into a fresh directory.
fn tree() -> PathBuf {
    let repo = acq::paths::find_repo().unwrap();
    let dir = std::env::temp_dir().join(format!("acq-module-cache-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let files = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "qemu",
            "driver",
            "device-model/acq-hw/src/regs.rs",
        ])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(files.status.success(), "git ls-files in {}", repo.display());
    for f in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = Path::new(std::str::from_utf8(f).unwrap());
        let to = dir.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(repo.join(rel), &to).unwrap();
    }
    dir
}

/// Runs qemu/module.sh in `tree` with its own module cache; returns what it logged.
fn build(tree: &Path) -> String {
    let out = Command::new("bash")
        .arg(tree.join("qemu/module.sh"))
        .env("ACQ_MODULE_CACHE", tree.join("modules"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "qemu/module.sh: {err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        tree.join("driver/acq.ko").display().to_string()
    );
    err
}

#[test]
fn the_same_sources_are_built_once_and_a_changed_contract_again() {
    let kernel = Command::new("bash")
        .args(["qemu/kernel.sh", "--path", "test"])
        .current_dir(acq::paths::find_repo().unwrap())
        .output()
        .unwrap();
    let kdir = String::from_utf8_lossy(&kernel.stdout).trim().to_string();
    if !kernel.status.success() || !Path::new(&kdir).join(".complete").exists() {
        eprintln!("skipped: the test kernel is not built (make kernel-test)");
        return;
    }
    if !common::mount_namespaces_allowed() {
        eprintln!("skipped: the toolroot's mount namespace needs root here");
        return;
    }
    let t = tree();
    let first = build(&t);
    assert!(first.contains("RUSTC [M]"), "not built: {first}");
    let module = fs::read(t.join("driver/acq.ko")).unwrap();
    assert!(t.join("driver/acq_main.o").exists());

    let second = build(&t);
    assert!(
        second.contains("from") && !second.contains("RUSTC"),
        "the same sources built again: {second}"
    );
    assert_eq!(fs::read(t.join("driver/acq.ko")).unwrap(), module);
    assert!(
        !t.join("driver/acq_main.o").exists(),
        "an older build's object left beside the cached module"
    );

    // A contract the compiler refuses: built again (a hit would have passed), quickly
    // refused, and the failure not cached.
    let regs = t.join("device-model/acq-hw/src/regs.rs");
    let mut text = fs::read_to_string(&regs).unwrap();
    text.push_str("\nfn refused(\n");
    fs::write(&regs, text).unwrap();
    let out = Command::new("bash")
        .arg(t.join("qemu/module.sh"))
        .env("ACQ_MODULE_CACHE", t.join("modules"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("regs.rs"),
        "a changed contract passed for the cached module: {err}"
    );
    assert_eq!(
        fs::read_dir(t.join("modules")).unwrap().count(),
        1,
        "a failed build was cached"
    );
    let _ = fs::remove_dir_all(t);
}

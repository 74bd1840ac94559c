//! qemu/beside.sh, make test's job beside the tests: the main job's status wins, a job
//! beside that fails or overruns fails the run, and a job beside is stopped whole (every
//! process it started, also one in a process group of its own, as the fuzz smoke's
//! `timeout` makes) when the main job fails or its time is up. Its output is shown.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The script in the repository.
fn script() -> PathBuf {
    acq::paths::find_repo().unwrap().join("qemu/beside.sh")
}

/// A fresh directory for one test's log and marker files, removed when the test passes
/// (kept, for its log, when it fails).
struct TestDir(PathBuf);

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn dir(name: &str) -> TestDir {
    let d = std::env::temp_dir().join(format!("acq-beside-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TestDir(d)
}

/// Runs beside.sh with `background` beside `foreground` (a shell command), its log in
/// `d`, the job beside given `timeout_s` after the main job.
fn beside(d: &Path, background: &str, foreground: &str, timeout_s: u32) -> Output {
    Command::new("bash")
        .arg(script())
        .arg(d.join("beside.log"))
        .arg(background)
        .args(["bash", "-c", foreground])
        .env("BESIDE_TIMEOUT", timeout_s.to_string())
        .output()
        .unwrap()
}

/// Whether a process whose command line holds `marker` is still alive (the markers are
/// unique to each test: `sleep` with a made-up number of seconds).
fn alive(marker: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(marker)
            })
            .unwrap_or(false)
    })
}

/// Waits up to 5 s for every process with `marker` to be gone.
fn gone(marker: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if !alive(marker) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn both_jobs_pass_and_the_job_beside_runs_at_idle_priority_with_its_output_shown() {
    let d = dir("pass");
    let out = beside(&d, "chrt -p $$; echo from-beside", "echo from-main", 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("from-main"), "{stdout}");
    assert!(
        stdout.contains("from-beside"),
        "the job beside's output: {stdout}"
    );
    assert!(
        stdout.contains("SCHED_IDLE"),
        "the job beside's policy: {stdout}"
    );
}

/// A job beside that starts a process in a process group of its own (as the fuzz smoke's
/// `timeout` does) and one in its own group: the command, and each process's marker (`n`
/// and `n + 1` seconds of sleep, unique to the test).
fn job_with_a_group_of_its_own(n: u32) -> (String, [String; 2]) {
    let markers = [format!("sleep {n}"), format!("sleep {}", n + 1)];
    let command = format!("timeout 300 {} & {}", markers[0], markers[1]);
    (command, markers)
}

/// Every process the job beside started is gone once the script has returned.
fn assert_stopped_whole(markers: &[String]) {
    for m in markers {
        assert!(
            gone(m),
            "a process of the job beside ({m}) outlived the script"
        );
    }
}

#[test]
fn the_main_jobs_failure_wins_and_stops_the_job_beside_whole() {
    let d = dir("main-fails");
    let (job, markers) = job_with_a_group_of_its_own(7301);
    let out = beside(&d, &job, "sleep 0.5; exit 7", 60);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_stopped_whole(&markers);
}

#[test]
fn a_failing_job_beside_fails_the_run_and_says_so() {
    let d = dir("beside-fails");
    let out = beside(&d, "echo lint-said-no; exit 3", "true", 60);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("failed (status 3)"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("lint-said-no"));
}

#[test]
fn a_job_beside_that_overruns_fails_the_run_and_is_stopped_whole() {
    let d = dir("overrun");
    let (job, markers) = job_with_a_group_of_its_own(7303);
    let out = beside(&d, &job, "true", 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("did not end within 1 s"), "{stderr}");
    assert_stopped_whole(&markers);
}

#[test]
fn without_a_job_beside_the_main_job_runs_alone() {
    let d = dir("alone");
    let out = beside(&d, "", "exit 4", 60);
    assert_eq!(out.status.code(), Some(4));
    assert!(!d.join("beside.log").exists(), "a log for no job");
}

//! The scenario runner with a real guest: what `acq run --reuse-guests` promises a
//! scenario that runs in a guest another scenario booted (docs/scenarios.md, "One guest
//! for several scenarios").

use acq_e2e::gate::{beside_others, heavy};
use std::path::Path;

use acq::paths::Paths;
use acq::scenario::run::{run_batch, RunOptions, ScenarioResult};
use acq::scenario::{parse, Scenario};
use anyhow::{ensure, Context, Result};

fn scenario(json: &str) -> Result<Scenario> {
    parse(json, "runner.rs").context("a scenario of this test")
}

/// Runs `scenarios` in turn as one batch of `acq run --reuse-guests` with `opts`
/// (`reuse_guests` set); returns a result for each and the results as JSON, for messages.
fn in_one_guest(
    paths: &Paths,
    opts: RunOptions,
    scenarios: &[&Scenario],
) -> Result<(Vec<ScenarioResult>, String)> {
    let opts = RunOptions {
        reuse_guests: true,
        ..opts
    };
    let file = Path::new("runner.rs");
    let batch: Vec<(&Scenario, &Path)> = scenarios.iter().map(|sc| (*sc, file)).collect();
    let mut out = Vec::new();
    run_batch(&batch, paths, &opts, &mut |r| {
        out.push(r.clone());
        true
    });
    let summary = serde_json::to_string_pretty(&out)?;
    ensure!(
        out.len() == scenarios.len(),
        "{} results, not {}: {summary}",
        scenarios.len(),
        out.len()
    );
    Ok((out, summary))
}

/// Results under `dir` of the repository.
fn results_in(paths: &Paths, dir: &str) -> RunOptions {
    RunOptions::new(paths.repo.join(dir))
}

/// A scenario whose card hangs (the watchdog resets it, the driver logs it, the reader
/// gets EIO once), then one with a DMA error 2 MiB into its stream, in the same guest: the
/// second sees its own counters (one session and the probe's reset, not the first one's
/// two sessions and watchdog reset), its fault where its own stream reaches 2 MiB (not at
/// once: the card had delivered 12 MiB before), and its own kernel log (none of the first
/// one's reset messages, no boot); it loads the driver again after the first unloaded it.
/// Without counters and byte triggers counted from each scenario's start, or without the
/// log cleared between the two, the second scenario fails its expectations. (Both cards
/// have a 16 MiB FIFO, as fault-hang.json's: a paced card on a loaded host must not
/// overflow, and the two must be made alike to share a guest.)
#[test]
fn a_guest_handed_on_gives_the_next_scenario_its_own_counters_faults_and_kernel_log() -> Result<()>
{
    let _gate = beside_others();
    let paths = Paths::discover()?;
    let first = scenario(
        r#"{"name": "reuse-hang", "timeout_s": 300,
            "cards": [{"fifo_depth": "16M", "device": {"pattern": "prbs", "seed": 7, "rate": "8M"}}],
            "steps": [{"stream": {"mode": "read", "bytes": "12M"}}],
            "faults": [{"at": {"bytes": "4M"}, "inject": "hang"}],
            "expect": {"errors": {"EIO": 1}, "recovered": true,
                       "counters": {"card0.sessions": {"min": 2, "max": 2},
                                    "card0.resets": {"min": 2}},
                       "dmesg_lines": {"resetting the card": {"min": 1, "max": 1}}}}"#,
    )?;
    let second = scenario(
        r#"{"name": "reuse-dma-error", "timeout_s": 300,
            "cards": [{"fifo_depth": "16M", "device": {"pattern": "counter", "rate": "4M"}}],
            "steps": [{"stream": {"mode": "read", "bytes": "6M"}}],
            "faults": [{"at": {"bytes": "2M"}, "inject": {"dma_error": {"count": 1}}}],
            "expect": {"verified_bytes_min": "6M", "recovered": true,
                       "errors": {"EIO": 1}, "errors_at": {"EIO": {"min": "2M", "max": "4M"}},
                       "counters": {"card0.sessions": {"min": 1, "max": 1},
                                    "card0.resets": {"min": 1, "max": 1},
                                    "card0.error_completions": {"min": 1, "max": 1}},
                       "dmesg_lines": {"resetting the card": {"max": 0},
                                       "Linux version": {"max": 0},
                                       "/dev/acq0: version": {"min": 1, "max": 1}}}}"#,
    )?;
    let opts = results_in(&paths, "target/acq-runs/test-runner-reuse");
    let (results, summary) = in_one_guest(&paths, opts, &[&first, &second])?;
    ensure!(
        results.iter().all(|r| r.passed),
        "a scenario failed: {summary}"
    );
    ensure!(
        results[0].guest_booted_by.is_none()
            && results[1].guest_booted_by.as_deref() == Some("reuse-hang"),
        "the second scenario did not run in the first one's guest: {summary}"
    );
    ensure!(
        Path::new(&results[1].results).join("guest.txt").exists(),
        "no guest.txt beside the second scenario's result"
    );
    Ok(())
}

/// Scenarios that pass but leave their guest changed in a way a card reset does not undo:
/// a process running (a daemon an `exec` step started), a card set to go to another
/// driver (`driver_override`), a file system mounted. None of their guests is handed on:
/// each next scenario boots its own, and each guest.txt names what was left.
#[test]
fn a_guest_left_changed_is_not_handed_on() -> Result<()> {
    let _gate = beside_others();
    let paths = Paths::discover()?;
    let leaving = |name: &str, cmd: &str| {
        scenario(&format!(
            r#"{{"name": "{name}", "timeout_s": 300,
                "steps": [{{"exec": {{"cmd": "{cmd}"}}}},
                          {{"stream": {{"mode": "read", "bytes": "1M"}}}}]}}"#
        ))
    };
    let process = leaving(
        "reuse-leaves-a-process",
        "setsid sleep 120 > /dev/null 2>&1 < /dev/null &",
    )?;
    let override_ = leaving(
        "reuse-leaves-a-driver-override",
        &format!(
            "for d in $({}); do echo vfio-pci > ${{d%/device}}/driver_override; done",
            acq::handover::card_device_files_cmd()
        ),
    )?;
    let mount = leaving(
        "reuse-leaves-a-mount",
        "mkdir -p /mnt/left && mount -t tmpfs tmpfs /mnt/left",
    )?;
    let last = scenario(
        r#"{"name": "reuse-after-a-change", "timeout_s": 300,
            "steps": [{"stream": {"mode": "read", "bytes": "1M"}}]}"#,
    )?;
    let opts = results_in(&paths, "target/acq-runs/test-runner-stray");
    let (results, summary) = in_one_guest(&paths, opts, &[&process, &override_, &mount, &last])?;
    ensure!(
        results.iter().all(|r| r.passed),
        "every scenario passes: {summary}"
    );
    ensure!(
        results[1..].iter().all(|r| r.guest_booted_by.is_none()),
        "a scenario ran in a guest the one before left changed: {summary}"
    );
    for (r, left) in results
        .iter()
        .zip(["sleep 120", "driver_override vfio-pci", "/mnt/left"])
    {
        let why = std::fs::read_to_string(Path::new(&r.results).join("guest.txt"))
            .with_context(|| format!("{}: guest.txt", r.name))?;
        ensure!(
            why.contains("not handed on") && why.contains(left),
            "{}: guest.txt does not name `{left}`: {why}",
            r.name
        );
    }
    Ok(())
}

/// On the debug kernel a guest handed on is scanned for leaks once, by the last scenario in
/// it, and each object goes to the scenario it was allocated in. With a driver that leaks
/// 4 KiB in every probe (the `leak-at-probe` mutant), three scenarios in one guest: the
/// first two pass every check they can make before the hand-over, so the second and third
/// run in the first one's guest; the third ends in an error (a step that fails), and the
/// guest is scanned for all three all the same. Each fails with exactly its own leaked
/// object (three different addresses: not all laid on each, not one found in the wrong
/// scenario), and the first two name the scan that found theirs. (Before the scan was
/// shared the first one's leak kept its guest from being handed on; before the scan
/// after an error, the first two failed "not scanned".)
#[test]
fn one_leak_scan_for_a_debug_guest_lays_each_leak_on_its_scenario() -> Result<()> {
    let _gate = heavy();
    let paths = Paths::discover()?.with_kernel(acq::paths::KernelFlavor::Debug)?;
    let mutant = acq::mutants::load(&paths.repo.join("tests/mutants/leak-at-probe.toml"))?;
    let ko = acq::mutants::prepare(
        &mutant,
        &paths,
        &paths.repo.join("target/acq-runs/test-runner-leaks-driver"),
    )?;
    let card = r#"[{"device": {"pattern": "counter", "rate": "8M"}}]"#;
    let scenario_with = |name: &str, steps: &str| {
        scenario(&format!(
            r#"{{"name": "{name}", "timeout_s": 300, "cards": {card}, "steps": {steps}}}"#
        ))
    };
    let first = scenario_with(
        "reuse-leak-first",
        r#"[{"stream": {"mode": "read", "bytes": "1M"}}]"#,
    )?;
    let second = scenario_with(
        "reuse-leak-second",
        r#"[{"stream": {"mode": "splice", "bytes": "1M"}}]"#,
    )?;
    let third = scenario_with(
        "reuse-leak-third",
        r#"[{"stream": {"mode": "read", "bytes": "1M"}}, {"exec": {"cmd": "false"}}]"#,
    )?;
    let opts = RunOptions {
        driver: Some(ko),
        kernel_flavor: Some(acq::paths::KernelFlavor::Debug),
        memory_mib: Some(512),
        ..results_in(&paths, "target/acq-runs/test-runner-leaks")
    };
    let (results, summary) = in_one_guest(&paths, opts, &[&first, &second, &third])?;
    ensure!(
        results[1..]
            .iter()
            .all(|r| r.guest_booted_by.as_deref() == Some("reuse-leak-first")),
        "the others did not run in the first one's guest: {summary}"
    );
    ensure!(
        results[2].error.is_some(),
        "the third scenario's failing step was no error: {summary}"
    );
    let mut objects = Vec::new();
    for (k, r) in results.iter().enumerate() {
        let leak = r
            .checks
            .iter()
            .find(|c| c.name == "kmemleak: nothing leaked")
            .with_context(|| format!("{}: no leak check: {summary}", r.name))?;
        ensure!(
            !leak.ok && leak.detail.starts_with("1 unreferenced object(s)"),
            "{}: not its one leaked object: {}",
            r.name,
            leak.detail
        );
        ensure!(
            !r.passed
                && r.checks
                    .iter()
                    .all(|c| c.ok || c.name == "kmemleak: nothing leaked"),
            "{}: fails for its leak alone: {summary}",
            r.name
        );
        ensure!(
            k == 2 || leak.detail.contains("reuse-leak-third"),
            "{}: its result does not name the scan that found its leak: {}",
            r.name,
            leak.detail
        );
        objects.extend(
            leak.detail
                .split("unreferenced object ")
                .nth(1)
                .and_then(|o| o.split_whitespace().next()),
        );
    }
    objects.sort();
    objects.dedup();
    ensure!(
        objects.len() == 3,
        "the three scenarios were not given three different objects: {objects:?}"
    );
    Ok(())
}

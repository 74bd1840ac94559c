//! `acq explore`: randomized scenarios that check invariants instead of per-scenario
//! expectations, and shrink what fails into a small regression scenario.
//!
//! Each run draws a scenario from the seed ([`gen`]: cards, consumers through every
//! system call, a playback writer, signals, a fault timeline) and runs it like `acq run`.
//! The expectations are the invariants every draw must meet: no kernel bug report (WARN,
//! BUG, lockdep, a lost wake-up, a hung task), no stream that fails fatally or overruns
//! its time, no mismatching byte unless the draw corrupts data on purpose, only the
//! errnos the draw's faults may cause, every pool page back, a clean unload, the consumer
//! gone promptly after a signal that ends it. A failing draw is shrunk ([`shrink`]) and
//! written as an ordinary scenario file with its seed (docs/explore.md).

pub mod gen;
pub mod rng;
pub mod shrink;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::paths::Paths;
use crate::scenario::run::{RunOptions, ScenarioResult};

/// How `acq explore` runs.
#[derive(Debug, Clone)]
pub struct ExploreOptions {
    /// The first seed; run `k` uses a seed derived from it and `k`.
    pub seed: u64,
    /// At most this many draws.
    pub runs: Option<u64>,
    /// Stop drawing once this much time went by (a run under way finishes, shrinking
    /// included).
    pub budget: Option<Duration>,
    /// Shrink failing draws (at most this many extra runs each).
    pub shrink_runs: u32,
    /// Where the runs, the shrunk scenarios (`found/`) and the reports go.
    pub results: PathBuf,
    /// Scenario runs (accelerator, driver).
    pub run: RunOptions,
}

/// What one draw did.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The draw's seed.
    pub seed: u64,
    /// The draw's result.
    pub result: ScenarioResult,
    /// For a failure: the shrunk scenario's file and how many runs shrinking took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrunk: Option<PathBuf>,
    /// Runs spent shrinking.
    pub shrink_runs: u32,
}

/// The seed of run `k`: distinct, and the same for the same `--seed` everywhere.
pub fn run_seed(seed: u64, k: u64) -> u64 {
    let mut r = rng::Rng::new(seed ^ k.wrapping_mul(0xA24B_AED4_963E_E407));
    r.next_u64()
}

/// Draws and runs until `runs` or `budget` is used up (or Ctrl-C).
pub fn explore(paths: &Paths, opts: &ExploreOptions) -> Result<Vec<Finding>> {
    let start = Instant::now();
    fs::create_dir_all(opts.results.join("found"))?;
    let mut out = Vec::new();
    for k in 0.. {
        if opts.runs.is_some_and(|n| k >= n)
            || opts.budget.is_some_and(|b| start.elapsed() >= b)
            || crate::signals::interrupted()
        {
            break;
        }
        let seed = run_seed(opts.seed, k);
        let (sc, drawn) = gen::draw(seed);
        let ropts = RunOptions {
            results: opts.results.join("runs"),
            ..opts.run.clone()
        };
        let file = PathBuf::from(format!("{}.json", sc.name.clone().unwrap_or_default()));
        let result = crate::scenario::run::run(&sc, &file, paths, &ropts);
        eprintln!(
            "{} run {k} seed {seed:#018x} ({:.0} s){}",
            if result.passed { "PASS" } else { "FAIL" },
            result.seconds,
            result
                .error
                .as_ref()
                .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                .unwrap_or_default()
        );
        let mut finding = Finding {
            seed,
            result,
            shrunk: None,
            shrink_runs: 0,
        };
        if !finding.result.passed {
            save(&opts.results.join("found"), &drawn, seed, "drawn")?;
            if opts.shrink_runs > 0 {
                let (small, runs) =
                    shrink::shrink(&drawn, &finding.result, paths, opts, opts.shrink_runs);
                finding.shrink_runs = runs;
                finding.shrunk = Some(save(&opts.results.join("found"), &small, seed, "shrunk")?);
            }
        }
        out.push(finding);
    }
    Ok(out)
}

/// Writes `sc` as `DIR/explore-SEED.KIND.json`, a scenario file `acq run` takes.
fn save(dir: &Path, sc: &serde_json::Value, seed: u64, kind: &str) -> Result<PathBuf> {
    let path = dir.join(format!("explore-{seed:016x}.{kind}.json"));
    let mut sc = sc.clone();
    sc["name"] = format!("explore-{seed:016x}-{kind}").into();
    let text = serde_json::to_string_pretty(&sc)?;
    fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The failure's kind, for shrinking: a smaller draw must fail the same way. The first
/// failed check's name without its numbers, or the error's first words.
pub fn signature(r: &ScenarioResult) -> Option<String> {
    if r.passed {
        return None;
    }
    // A step's error names its command and exit status: keep those (80 characters of
    // the first line), or every failed command would look alike.
    let text = match (&r.error, r.checks.iter().find(|c| !c.ok)) {
        (_, Some(c)) => c.name.clone(),
        (Some(e), None) => e
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(80)
            .collect(),
        (None, None) => String::new(),
    };
    Some(
        text.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Parses a budget: `90s`, `20m`, `1h` (a bare number is seconds).
pub fn parse_budget(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a budget like 90s, 20m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{s}`: the unit is s, m or h")),
    };
    if secs == 0 {
        return Err("a budget of 0 runs nothing".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_bad_ones_say_why() {
        assert_eq!(parse_budget("20m"), Ok(Duration::from_secs(1200)));
        assert_eq!(parse_budget("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_budget("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_budget("5d").unwrap_err().contains("unit"));
        assert!(parse_budget("m").is_err());
        assert!(parse_budget("0s").is_err());
    }

    #[test]
    fn run_seeds_differ_and_repeat() {
        let a: Vec<u64> = (0..100).map(|k| run_seed(1, k)).collect();
        let mut b = a.clone();
        b.sort();
        b.dedup();
        assert_eq!(b.len(), 100);
        assert_eq!(a, (0..100).map(|k| run_seed(1, k)).collect::<Vec<_>>());
    }
}

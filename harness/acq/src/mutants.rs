//! `acq mutants`: how many plausible driver bugs the scenarios catch.
//!
//! A mutant (`tests/mutants/NAME.toml`) is one bug a driver developer could plausibly
//! write: a few exact text edits to files of `driver/`, a sentence saying what the bug is,
//! and the scenarios expected to notice it (tried first). For each mutant the driver is
//! copied (with the hardware contract it includes), edited, built against the guest kernel, and the scenarios run with the mutated
//! `acq.ko` until one fails: the mutant is then *caught* by that scenario (which must
//! pass with the unmodified driver: that is checked once per scenario). A mutant every
//! scenario passes *survived*: a bug the suite would let through. The score is the share
//! caught. docs/explore.md explains how to use it on your own driver changes.
//!
//! Edits are text, not line-numbered diffs, so a mutant keeps applying while the code
//! around it moves; each `find` must occur exactly once in its file, and a mutant whose
//! text is gone is reported as stale (a host test checks that none is).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths::{KernelFlavor, Paths, CONTRACT};
use crate::process::Child;
use crate::scenario::run::{RunOptions, ScenarioResult};
use crate::scenario::Scenario;

/// One planted bug.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    /// The file name without `.toml`.
    #[serde(skip)]
    pub name: String,
    /// What the bug is, in a sentence or two.
    pub description: String,
    /// Scenario names expected to catch it: run first.
    #[serde(default)]
    pub catch: Vec<String>,
    /// The guest kernel flavor it is built for and run on, when it is not the run's own
    /// (`debug` for a bug only KASAN or kmemleak can see: a leak is invisible on `test`).
    #[serde(default)]
    pub kernel: Option<KernelFlavor>,
    /// The edits, applied in order.
    #[serde(rename = "edit")]
    pub edits: Vec<Edit>,
}

/// One exact text replacement in one file of `driver/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// Path relative to `driver/`.
    pub file: String,
    /// Text that occurs exactly once in the file.
    pub find: String,
    /// What replaces it.
    pub replace: String,
}

/// Loads every `*.toml` of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Mutant>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no mutant (*.toml)", dir.display());
    }
    files.iter().map(|f| load(f)).collect()
}

/// Loads one mutant file.
pub fn load(file: &Path) -> Result<Mutant> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut m: Mutant =
        toml::from_str(&text).with_context(|| format!("{}: not a mutant", file.display()))?;
    m.name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if m.edits.is_empty() {
        bail!("{}: a mutant needs at least one [[edit]]", file.display());
    }
    Ok(m)
}

impl Mutant {
    /// Copies the driver's sources from `driver` to `dest` and applies the edits. Fails,
    /// naming the edit, if a `find` does not occur exactly once.
    pub fn apply(&self, driver: &Path, dest: &Path) -> Result<()> {
        if dest.exists() {
            fs::remove_dir_all(dest).with_context(|| format!("clearing {}", dest.display()))?;
        }
        copy_sources(driver, dest)?;
        for (i, e) in self.edits.iter().enumerate() {
            let path = dest.join(&e.file);
            let text = fs::read_to_string(&path).with_context(|| {
                format!("mutant {} edit {}: reading {}", self.name, i + 1, e.file)
            })?;
            let n = text.matches(&e.find).count();
            if n != 1 {
                bail!(
                    "mutant {} edit {}: the text to replace occurs {n} times in driver/{} (needs exactly 1): the driver changed, update tests/mutants/{}.toml",
                    self.name,
                    i + 1,
                    e.file,
                    self.name
                );
            }
            fs::write(&path, text.replacen(&e.find, &e.replace, 1))?;
        }
        Ok(())
    }
}

/// Copies the files a module build reads (sources, headers, Kbuild), not build products.
fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            if !name.starts_with('.') {
                copy_sources(&p, &to.join(&name))?;
            }
        } else if name == "Kbuild"
            || name == "Makefile"
            || [".rs", ".c", ".h"].iter().any(|x| name.ends_with(x))
        {
            fs::copy(&p, to.join(&name))?;
        }
    }
    Ok(())
}

/// What became of one mutant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// A scenario failed with the mutant in the driver.
    Caught {
        /// The scenario.
        by: String,
        /// Its first failed check, or the error that stopped it.
        why: String,
    },
    /// Every scenario passed.
    Survived,
    /// The mutant no longer applies, or does not build: fix the mutant.
    Invalid {
        /// What went wrong.
        error: String,
    },
    /// Ctrl-C.
    Interrupted,
}

/// One mutant's result.
#[derive(Debug, Clone, Serialize)]
pub struct MutantResult {
    /// The mutant's name.
    pub name: String,
    /// What the bug is.
    pub description: String,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Scenarios run before the verdict.
    pub scenarios_run: usize,
    /// Wall-clock seconds, build included.
    pub seconds: f64,
}

/// How `acq mutants` runs.
#[derive(Debug, Clone)]
pub struct MutantOptions {
    /// Where each mutant's driver copy, build log and scenario results go.
    pub results: PathBuf,
    /// Scenario runs (accelerator, verbosity); `results` and `driver` are set per mutant.
    pub run: RunOptions,
}

/// Runs every mutant against `scenarios` (file, scenario), the mutant's `catch` list first.
pub fn run_all(
    mutants: &[Mutant],
    scenarios: &[(PathBuf, Scenario)],
    paths: &Paths,
    opts: &MutantOptions,
) -> Vec<MutantResult> {
    let mut out = Vec::new();
    let mut baseline = Baseline::default();
    for m in mutants {
        if crate::signals::interrupted() {
            break;
        }
        let r = run_one(m, scenarios, paths, opts, &mut baseline);
        eprintln!("{}", line(&r));
        out.push(r);
    }
    out
}

/// Whether each scenario passes with the unmodified driver, run once each when a mutant
/// first fails it: a scenario that fails anyway (a broken setup, a flaky check) catches
/// nothing, and must not count.
#[derive(Default)]
struct Baseline(std::collections::HashMap<(String, KernelFlavor), bool>);

impl Baseline {
    fn passes(&mut self, file: &Path, sc: &Scenario, paths: &Paths, opts: &MutantOptions) -> bool {
        let name = sc.name.clone().unwrap_or_default();
        let key = (name.clone(), paths.kernel_flavor);
        if let Some(p) = self.0.get(&key) {
            return *p;
        }
        let run = RunOptions {
            results: opts
                .results
                .join(format!("baseline-{}", paths.kernel_flavor)),
            driver: None,
            kernel_flavor: Some(paths.kernel_flavor),
            ..opts.run.clone()
        };
        let passed = crate::scenario::run::run(sc, file, paths, &run).passed;
        if !passed {
            eprintln!("  {name} fails with the unmodified driver too: it does not count");
        }
        self.0.insert(key, passed);
        passed
    }
}

fn run_one(
    m: &Mutant,
    scenarios: &[(PathBuf, Scenario)],
    paths: &Paths,
    opts: &MutantOptions,
    baseline: &mut Baseline,
) -> MutantResult {
    let start = Instant::now();
    let dir = opts.results.join(&m.name);
    let mut res = MutantResult {
        name: m.name.clone(),
        description: m.description.clone(),
        outcome: Outcome::Survived,
        scenarios_run: 0,
        seconds: 0.0,
    };
    // A mutant of another flavor is built for that kernel and its scenarios run there.
    let flavored;
    let paths = match m.kernel {
        Some(f) if f != paths.kernel_flavor => match paths.with_kernel(f) {
            Ok(p) => {
                flavored = p;
                &flavored
            }
            Err(e) => {
                res.outcome = Outcome::Invalid {
                    error: format!("{e:#}"),
                };
                return res;
            }
        },
        _ => paths,
    };
    // The baseline needs the unmodified driver of the same flavor: without it every
    // scenario would "fail anyway" and the mutant pass for a survivor.
    if !paths.driver_module().exists() {
        res.outcome = Outcome::Invalid {
            error: format!(
                "{} does not exist: run `{}`",
                paths.driver_module().display(),
                paths.driver_target()
            ),
        };
        return res;
    }
    let ko = match prepare(m, paths, &dir) {
        Ok(ko) => ko,
        Err(e) => {
            res.outcome = Outcome::Invalid {
                error: format!("{e:#}"),
            };
            res.seconds = start.elapsed().as_secs_f64();
            return res;
        }
    };
    let name_of = |sc: &Scenario| sc.name.clone().unwrap_or_default();
    let mut order: Vec<&(PathBuf, Scenario)> = Vec::new();
    for c in &m.catch {
        order.extend(scenarios.iter().filter(|(_, sc)| &name_of(sc) == c));
    }
    order.extend(
        scenarios
            .iter()
            .filter(|(_, sc)| !m.catch.contains(&name_of(sc))),
    );
    let run_opts = RunOptions {
        results: dir.join("scenarios"),
        driver: Some(ko),
        kernel_flavor: Some(paths.kernel_flavor),
        ..opts.run.clone()
    };
    for (file, sc) in order {
        if crate::signals::interrupted() {
            res.outcome = Outcome::Interrupted;
            break;
        }
        let r = crate::scenario::run::run(sc, file, paths, &run_opts);
        res.scenarios_run += 1;
        if !r.passed && baseline.passes(file, sc, paths, opts) {
            res.outcome = Outcome::Caught {
                by: r.name.clone(),
                why: first_failure(&r),
            };
            break;
        }
    }
    res.seconds = start.elapsed().as_secs_f64();
    res
}

/// Applies the mutant into `dir/tree/driver`, writes `dir/mutant.diff` and builds it; returns
/// the module.
pub fn prepare(m: &Mutant, paths: &Paths, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    // Absolute: the build runs in the toolroot's namespace, from another directory.
    let dir = &fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    // The copy keeps the repository's layout: the module includes the hardware contract
    // by path (`../device-model/acq-hw/src/regs.rs`), the one file it shares with the model.
    let tree = dir.join("tree");
    let src = tree.join("driver");
    m.apply(&paths.repo.join("driver"), &src)?;
    let contract = Path::new(CONTRACT);
    if let Some(parent) = contract.parent() {
        fs::create_dir_all(tree.join(parent))?;
    }
    fs::copy(paths.repo.join(contract), tree.join(contract))
        .with_context(|| format!("copying {}", contract.display()))?;
    // The mutation as a diff, for people (diffutils is part of every Debian system).
    if let Ok(o) = Command::new("diff")
        .arg("-ru")
        .arg(paths.repo.join("driver"))
        .arg(&src)
        .args([
            "-x", "*.o", "-x", ".*", "-x", "*.ko", "-x", "*.mod", "-x", "*.mod.c",
        ])
        .args(["-x", "Module.symvers", "-x", "modules.order"])
        .output()
    {
        let _ = fs::write(dir.join("mutant.diff"), o.stdout);
    }
    // qemu/module.sh builds against the flavor's kernel with the make arguments it was
    // built with (LLVM=-19 for the debug flavor).
    let mut cmd = Command::new("bash");
    cmd.arg(paths.repo.join("qemu/module.sh"))
        .args(["--flavor", paths.kernel_flavor.name(), "--tree"])
        .arg(&tree);
    let log = dir.join("build.log");
    let f = fs::File::create(&log)?;
    cmd.stdout(f.try_clone()?).stderr(f);
    let mut child = Child::spawn(&format!("build of mutant {}", m.name), &mut cmd)?;
    let status = child.wait_timeout(Duration::from_secs(600));
    let text = fs::read_to_string(&log).unwrap_or_default();
    if !status.is_some_and(|s| s.success()) {
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("error"))
            .take(3)
            .collect();
        bail!(
            "mutant {} does not build ({}): {}",
            m.name,
            log.display(),
            if status.is_none() {
                "timed out after 600 s".to_string()
            } else {
                errors.join(" / ")
            }
        );
    }
    let ko = src.join("acq.ko");
    if !ko.exists() {
        bail!(
            "mutant {}: the build made no acq.ko ({})",
            m.name,
            log.display()
        );
    }
    Ok(ko)
}

/// The first thing that failed in a scenario run, in one line of at most 200 characters.
fn first_failure(r: &ScenarioResult) -> String {
    let s = match &r.error {
        Some(e) => e.lines().next().unwrap_or_default().to_string(),
        None => r
            .checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .unwrap_or_default(),
    };
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn line(r: &MutantResult) -> String {
    match &r.outcome {
        Outcome::Caught { by, why } => format!(
            "CAUGHT   {} by {} after {} scenario(s), {:.0} s: {}",
            r.name, by, r.scenarios_run, r.seconds, why
        ),
        Outcome::Survived => format!(
            "SURVIVED {}: {} scenario(s) passed, {:.0} s",
            r.name, r.scenarios_run, r.seconds
        ),
        Outcome::Invalid { error } => format!("INVALID  {}: {error}", r.name),
        Outcome::Interrupted => format!("STOPPED  {} (interrupted)", r.name),
    }
}

/// Mutants caught, and mutants that ran to a verdict (caught or survived; invalid and
/// interrupted ones count neither way).
fn verdicts(results: &[MutantResult]) -> (usize, usize) {
    let caught = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Caught { .. }))
        .count();
    let survived = results
        .iter()
        .filter(|r| r.outcome == Outcome::Survived)
        .count();
    (caught, caught + survived)
}

/// Caught share of the mutants that ran to a verdict.
pub fn score(results: &[MutantResult]) -> Option<f64> {
    let (caught, judged) = verdicts(results);
    (judged > 0).then(|| caught as f64 / judged as f64)
}

/// The report: one line per mutant, the survivors described, the score.
pub fn table(results: &[MutantResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<34} {:<9} {:>8}  caught by",
        "mutant", "result", "seconds"
    );
    for r in results {
        let (word, by) = match &r.outcome {
            Outcome::Caught { by, .. } => ("caught", by.as_str()),
            Outcome::Survived => ("SURVIVED", "-"),
            Outcome::Invalid { .. } => ("INVALID", "-"),
            Outcome::Interrupted => ("stopped", "-"),
        };
        let _ = writeln!(s, "{:<34} {:<9} {:>8.0}  {by}", r.name, word, r.seconds);
    }
    for r in results {
        match &r.outcome {
            Outcome::Survived => {
                let _ = writeln!(s, "\nsurvived: {}: {}", r.name, r.description);
            }
            Outcome::Invalid { error } => {
                let _ = writeln!(s, "\ninvalid: {}: {error}", r.name);
            }
            _ => {}
        }
    }
    match score(results) {
        Some(x) => {
            let (caught, judged) = verdicts(results);
            let _ = writeln!(
                s,
                "\nscore: {caught} of {judged} caught ({:.0}%)",
                x * 100.0
            );
        }
        None => {
            let _ = writeln!(s, "\nscore: no mutant ran to a verdict");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        crate::paths::find_repo().unwrap()
    }

    #[test]
    fn every_mutant_in_the_catalogue_applies_to_the_driver() {
        let repo = repo();
        let mutants = load_dir(&repo.join("tests/mutants")).unwrap();
        assert!(
            mutants.len() >= 12,
            "the catalogue has {} mutants",
            mutants.len()
        );
        let scenarios: Vec<String> = fs::read_dir(repo.join("tests/scenarios"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        let tmp = std::env::temp_dir().join(format!("acq-mutants-test-{}", std::process::id()));
        for m in &mutants {
            m.apply(&repo.join("driver"), &tmp).unwrap();
            assert!(
                !m.description.trim().is_empty(),
                "{}: no description",
                m.name
            );
            for c in &m.catch {
                assert!(scenarios.contains(c), "{}: no scenario named {c}", m.name);
            }
        }
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn an_edit_whose_text_is_gone_or_ambiguous_is_refused_by_name() {
        let tmp = std::env::temp_dir().join(format!("acq-mutants-edit-{}", std::process::id()));
        let src = tmp.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a.rs"), "fn f() { g(); g(); }\n").unwrap();
        let m = |find: &str| Mutant {
            name: "m".into(),
            description: "d".into(),
            catch: vec![],
            kernel: None,
            edits: vec![Edit {
                file: "a.rs".into(),
                find: find.into(),
                replace: "h();".into(),
            }],
        };
        let e = m("g();")
            .apply(&src, &tmp.join("out"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("occurs 2 times in driver/a.rs"), "{e}");
        let e = m("x();")
            .apply(&src, &tmp.join("out"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("occurs 0 times"), "{e}");
        m("fn f() { g();").apply(&src, &tmp.join("out")).unwrap();
        let got = fs::read_to_string(tmp.join("out/a.rs")).unwrap();
        assert_eq!(got, "h(); g(); }\n");
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn the_score_counts_only_verdicts() {
        let r = |outcome| MutantResult {
            name: "m".into(),
            description: String::new(),
            outcome,
            scenarios_run: 1,
            seconds: 1.0,
        };
        let caught = || {
            r(Outcome::Caught {
                by: "s".into(),
                why: "w".into(),
            })
        };
        let v = vec![
            caught(),
            caught(),
            caught(),
            r(Outcome::Survived),
            r(Outcome::Invalid { error: "e".into() }),
        ];
        assert_eq!(score(&v), Some(0.75));
        assert_eq!(score(&[r(Outcome::Interrupted)]), None);
        assert!(table(&v).contains("score: 3 of 4 caught (75%)"));
    }
}

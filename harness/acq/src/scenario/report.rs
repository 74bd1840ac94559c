//! Reports of a scenario run: a table for people, `summary.json` and `junit.xml` for
//! machines, all under the results directory.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Result;

use super::run::ScenarioResult;

/// The human table: one line per scenario, then the failed checks of each failure.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<32} {:<6} {:>8} {:>10} {:>12}  accel",
        "scenario", "result", "seconds", "MB/s", "verified"
    );
    for r in results {
        let mbps: Vec<String> = r
            .streams
            .iter()
            .filter_map(|v| v.get("mb_per_s").and_then(|m| m.as_f64()))
            .map(|m| format!("{m:.1}"))
            .collect();
        let verified: u64 = r
            .streams
            .iter()
            .filter_map(|v| v.get("verified_bytes").and_then(|m| m.as_u64()))
            .sum();
        let _ = writeln!(
            s,
            "{:<32} {:<6} {:>8.1} {:>10} {:>12}  {}",
            r.name,
            if r.passed { "PASS" } else { "FAIL" },
            r.seconds,
            if mbps.is_empty() {
                "-".into()
            } else {
                mbps.join(",")
            },
            human_bytes(verified),
            r.accel
        );
    }
    for r in results.iter().filter(|r| !r.passed) {
        let _ = writeln!(s, "\n{} FAILED ({}):", r.name, r.file);
        if let Some(e) = &r.error {
            let _ = writeln!(s, "  error: {e}");
        }
        for c in r.checks.iter().filter(|c| !c.ok) {
            let _ = writeln!(s, "  check failed: {}: {}", c.name, c.detail);
        }
        let _ = writeln!(s, "  results: {}", r.results);
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let _ = writeln!(s, "\n{} passed, {} failed", passed, results.len() - passed);
    s
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{b} B")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML: a test suite with one test case per scenario; failed checks in the failure.
pub fn junit(results: &[ScenarioResult]) -> String {
    let failures = results.iter().filter(|r| !r.passed).count();
    let total: f64 = results.iter().map(|r| r.seconds).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuite name=\"pcie-acq scenarios\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">",
        results.len()
    );
    for r in results {
        let _ = write!(
            s,
            "  <testcase classname=\"scenarios\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
            xml_escape(&r.name),
            xml_escape(&r.file),
            r.seconds
        );
        if r.passed {
            s.push_str("/>\n");
            continue;
        }
        let mut msg = String::new();
        if let Some(e) = &r.error {
            let _ = writeln!(msg, "error: {e}");
        }
        for c in r.checks.iter().filter(|c| !c.ok) {
            let _ = writeln!(msg, "{}: {}", c.name, c.detail);
        }
        let first = msg.lines().next().unwrap_or("failed").to_owned();
        let _ = writeln!(
            s,
            ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>",
            xml_escape(&first),
            xml_escape(&msg)
        );
    }
    s.push_str("</testsuite>\n");
    s
}

/// Writes `summary.json` and `junit.xml` into `dir`.
pub fn write_all(dir: &Path, results: &[ScenarioResult]) -> Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    fs::write(dir.join("junit.xml"), junit(results))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::run::Check;

    fn result(name: &str, passed: bool) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            file: format!("tests/scenarios/{name}.json"),
            passed,
            seconds: 1.5,
            accel: "tcg".into(),
            kernel: "test".into(),
            dma: None,
            memory_mib: 1024,
            guest_booted_by: None,
            error: None,
            checks: vec![Check {
                name: "EIO seen 1 time(s)".into(),
                ok: passed,
                detail: "seen 0 time(s) <&>".into(),
            }],
            streams: vec![serde_json::json!({"mb_per_s": 12.5, "verified_bytes": 1048576})],
            faults_fired: vec![],
            counters: vec![],
            disk_counters: vec![],
            results: "results/x".into(),
        }
    }

    #[test]
    fn table_and_junit_report_failures() {
        let rs = [result("good", true), result("bad", false)];
        let t = table(&rs);
        assert!(t.contains("good"), "{t}");
        assert!(t.contains("PASS") && t.contains("FAIL"), "{t}");
        assert!(t.contains("check failed: EIO seen 1 time(s)"), "{t}");
        assert!(t.contains("1 passed, 1 failed"), "{t}");
        let j = junit(&rs);
        assert!(j.contains("tests=\"2\" failures=\"1\""), "{j}");
        assert!(j.contains("&lt;&amp;&gt;"), "{j}");
        assert!(
            j.contains("<testcase classname=\"scenarios\" name=\"good\""),
            "{j}"
        );
    }
}

//! Shared helpers of the end-to-end tests: boot a guest the way `acq vm` does, and check
//! the guest's kernel log for the reports that mean a driver bug.

use std::path::PathBuf;
use std::time::Duration;

use acq::paths::Paths;
use acq::vm::{Vm, VmConfig};
use anyhow::{bail, Result};

/// Seconds a simple guest command may take under TCG.
pub const CMD: Duration = Duration::from_secs(60);

/// Boots a guest with `modules` in its image; the run directory is named after the test.
pub fn boot(test: &str, modules: Vec<PathBuf>) -> Result<(Vm, Paths)> {
    let paths = Paths::discover()?;
    let cfg = VmConfig {
        modules,
        run_dir: paths.repo.join(format!("target/acq-runs/test-{test}")),
        ..VmConfig::default()
    };
    Ok((Vm::boot(&cfg, &paths)?, paths))
}

/// Lines of `dmesg` that report a kernel bug: WARN, BUG, Oops, lockdep, list corruption,
/// sleeping in atomic context.
pub fn kernel_bug_reports(dmesg: &str) -> Vec<String> {
    const PATTERNS: &[&str] = &[
        "WARNING:",
        "BUG:",
        "Oops",
        "possible recursive locking",
        "possible circular locking",
        "inconsistent lock state",
        "suspicious RCU usage",
        "list_add corruption",
        "list_del corruption",
        "sleeping function called from invalid context",
        "Call Trace:",
    ];
    dmesg
        .lines()
        .filter(|l| PATTERNS.iter().any(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
}

/// Fails when the guest's kernel log has any bug report.
pub fn assert_dmesg_clean(vm: &mut Vm) -> Result<()> {
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    let bad = kernel_bug_reports(&dmesg);
    if !bad.is_empty() {
        vm.mark_failed();
        bail!("the guest kernel reported bugs:\n{}", bad.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_report_patterns_match() {
        let log = "[ 1.0] ok\n[ 2.0] WARNING: CPU: 0 PID: 1 at x\n[ 3.0] BUG: sleeping function called from invalid context\n";
        assert_eq!(kernel_bug_reports(log).len(), 2);
        assert!(kernel_bug_reports("[ 1.0] all fine\n").is_empty());
    }
}

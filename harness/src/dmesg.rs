//! Reading the guest's kernel log for the reports that mean a driver bug.

/// Substrings of kernel log lines that report a bug: WARN, BUG, Oops, lockdep, list
/// corruption, sleeping in atomic context, and acq.ko's lost wake-ups.
pub const BUG_PATTERNS: &[&str] = &[
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
    // The hung-task detector and RCU stall warnings (a task stuck in the driver).
    "blocked for more than",
    "detected stall",
    // acq.ko's own report of a wake-up it lost (driver/interrupts.rs, `Sleepers`).
    "lost wake-up",
];

/// The lines of `dmesg` that report a kernel bug.
pub fn kernel_bug_reports(dmesg: &str) -> Vec<String> {
    dmesg
        .lines()
        .filter(|l| BUG_PATTERNS.iter().any(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
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

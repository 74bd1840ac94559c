//! Reading the guest's kernel log for the reports that mean a driver bug, and kmemleak's
//! report on the debug kernel flavor.

/// Substrings of kernel log lines that report a bug: WARN, BUG (KASAN's "BUG: KASAN:" and
/// the soft-lockup detector's "BUG: soft lockup" among them), Oops, lockdep, list
/// corruption, sleeping in atomic context, hung tasks, kmemleak, and acq.ko's lost
/// wake-ups.
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
    // kmemleak switching itself off (debug flavor): every leak would pass after it. (Its
    // "new suspected memory leaks" line is not a pattern: the harness reads the report
    // itself, after a baseline that forgets what the boot leaked.)
    "leak detector disabled",
    "Memory pool empty",
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

/// kmemleak's interface (debug kernel flavor, debugfs).
pub const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";

/// A guest shell command run once a guest has booted, before its snapshot is taken
/// (crate::vm): scan and forget what the kernel leaked while booting, so a later report
/// is about the run. The cards and files come after it. Prints nothing on a kernel
/// without kmemleak. Two scans, as below. (Leaving out the objects allocated before the
/// driver loaded, by their allocation jiffies, would save these 14 s of a KASAN guest under
/// TCG, but hides a boot-time object the driver leaks a reference to: the card's pci_dev
/// after a surprise removal. Tried and reverted.)
pub fn kmemleak_baseline_cmd() -> String {
    format!(
        "[ -w {KMEMLEAK} ] || exit 0; echo scan > {KMEMLEAK} && echo scan > {KMEMLEAK} && echo clear > {KMEMLEAK}"
    )
}

/// A guest shell command run after the driver is unloaded: scan, and print every object
/// that nothing references any more. kmemleak reports an object only when it is older
/// than 5 s and unchanged since the scan before (its checksum): so the command waits 5 s
/// (an object the remove path itself leaked would be too young) and scans twice (one scan
/// reports nothing new; a planted leak in probe survived a single scan). Exit status 3
/// means no kmemleak here. (Waiting the 5 s beside the first scan instead of before it
/// would save 5 s a debug scenario, but missed a 4 KiB buffer planted in remove, which
/// this order finds: tried and reverted.)
pub fn kmemleak_scan_cmd() -> String {
    format!(
        "[ -w {KMEMLEAK} ] || exit 3; sleep 5; {CYCLE_STACKS}; echo scan > {KMEMLEAK} && echo scan > {KMEMLEAK} && cat {KMEMLEAK}"
    )
}

/// Forks a few short-lived processes on each CPU before a scan. The kernel keeps the
/// stacks of exited tasks in a per-CPU cache (two a CPU, vmalloc'd, still allocated) and
/// clears one only when a new task takes it: kmemleak scans them as live memory, so a
/// pointer left in the stack of the `insmod` that leaked an object (its probe's frame)
/// hides the leak. Seen: a leak-at-probe object unreported when few processes ran
/// between the probe and the scan.
const CYCLE_STACKS: &str =
    "for c in $(seq 0 $(($(nproc) - 1))); do taskset -c $c sh -c 'for i in 1 2 3 4; do sh -c :; done' 2>/dev/null; done";

/// A guest shell command printing the kernel's `jiffies` (the scheduler's debugfs file,
/// debug flavor): the clock kmemleak stamps each object's allocation with.
pub const JIFFIES_CMD: &str = "grep -m1 '^jiffies ' /sys/kernel/debug/sched/debug | tr -dc 0-9";

/// One object of a kmemleak report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The `unreferenced object` line with the first frames of its allocation backtrace.
    pub summary: String,
    /// When it was allocated, in guest jiffies (the report's `jiffies N`).
    pub jiffies: Option<u64>,
}

/// The objects of a kmemleak report, in its order.
pub fn kmemleak_objects(report: &str) -> Vec<Leak> {
    let mut leaks: Vec<Leak> = Vec::new();
    let mut frames = 0;
    let mut in_trace = false;
    for line in report.lines().map(str::trim) {
        if line.starts_with("unreferenced object") {
            leaks.push(Leak {
                summary: line.to_owned(),
                jiffies: None,
            });
            frames = 0;
            in_trace = false;
        } else if line.starts_with("comm ") {
            // `comm "insmod", pid 93, jiffies 4294892340`
            if let Some(last) = leaks.last_mut() {
                last.jiffies = line
                    .rsplit_once("jiffies ")
                    .and_then(|(_, j)| j.split_whitespace().next()?.parse().ok());
            }
        } else if line.starts_with("backtrace") {
            in_trace = true;
        } else if in_trace && frames < 4 && !line.is_empty() {
            if let Some(last) = leaks.last_mut() {
                last.summary.push_str(" <- ");
                last.summary.push_str(
                    line.trim_start_matches("[<")
                        .split("] ")
                        .last()
                        .unwrap_or(line),
                );
            }
            frames += 1;
        }
    }
    leaks
}

/// The leaks in a kmemleak report: each `unreferenced object` line with the first frames
/// of its allocation backtrace, one string per object.
pub fn kmemleak_leaks(report: &str) -> Vec<String> {
    kmemleak_objects(report)
        .into_iter()
        .map(|l| l.summary)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_report_patterns_match() {
        let log = "[ 1.0] ok\n[ 2.0] WARNING: CPU: 0 PID: 1 at x\n[ 3.0] BUG: sleeping function called from invalid context\n";
        assert_eq!(kernel_bug_reports(log).len(), 2);
        let debug = "[ 4.0] BUG: KASAN: slab-use-after-free in acq_remove+0x10/0x20\n[ 5.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s!\n[ 6.0] kmemleak: Memory pool empty, consider increasing CONFIG_DEBUG_KMEMLEAK_MEM_POOL_SIZE\n[ 6.1] kmemleak: Kernel memory leak detector disabled\n[ 7.0] kmemleak: Kernel memory leak detector initialized (mem pool available: 15000)\n[ 8.0] kmemleak: 1 new suspected memory leaks (see /sys/kernel/debug/kmemleak)\n";
        assert_eq!(kernel_bug_reports(debug).len(), 4);
        assert!(kernel_bug_reports("[ 1.0] all fine\n").is_empty());
    }

    #[test]
    fn kmemleak_reports_become_one_line_per_object() {
        let report = "unreferenced object 0xffff888004a1c000 (size 64):
  comm \"insmod\", pid 93, jiffies 4294892340
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace (crc 0):
    [<ffffffff81234567>] __kmalloc_noprof+0x1a/0x20
    [<ffffffffa0001234>] 0xffffffffa0001234
    [<ffffffff81000001>] do_one_initcall+0x5/0x10
    [<ffffffff81000002>] do_init_module+0x5/0x10
    [<ffffffff81000003>] load_module+0x5/0x10
unreferenced object 0xffff888004a1d000 (size 32):
  comm \"rmmod\", pid 95, jiffies 4294892999
  backtrace (crc 0):
    [<ffffffff81234567>] kmalloc_trace+0x1a/0x20
";
        let leaks = kmemleak_leaks(report);
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert!(leaks[0].starts_with("unreferenced object 0xffff888004a1c000 (size 64)"));
        assert!(leaks[0].contains("<- __kmalloc_noprof+0x1a/0x20 <- 0xffffffffa0001234"));
        assert!(
            !leaks[0].contains("load_module"),
            "at most four frames: {}",
            leaks[0]
        );
        assert!(leaks[1].contains("kmalloc_trace"));
        assert!(kmemleak_leaks("").is_empty());
        let objects = kmemleak_objects(report);
        assert_eq!(objects[0].jiffies, Some(4294892340));
        assert_eq!(objects[1].jiffies, Some(4294892999));
        assert_eq!(objects[1].summary, leaks[1]);
    }
}

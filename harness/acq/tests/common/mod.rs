//! What the acq crate's integration tests share.

use std::process::Command;

/// Whether this process may make a mount namespace (root, as make test's CI is): the
/// toolroot and the tests that mount a small tmpfs need one.
pub fn mount_namespaces_allowed() -> bool {
    Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

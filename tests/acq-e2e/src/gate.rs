//! Which of a test file's guests run at once. make test-vm runs four tests of a file at a
//! time (`--test-threads`), each with its own guest, on a 2-CPU host. Under TCG a guest's
//! clock runs on while its vCPU waits for a host CPU, so a test that judges the driver by
//! how long something takes (a wake-up, a second reader, a submission, a signal's effect)
//! or by a consumer keeping up with no overflow, with less than about a second to spare,
//! would measure the host's load as much as the driver. Such a test holds [`alone`];
//! every other test of its file holds [`beside_others`] while its guest runs (an ioctl
//! given a second beside a call stuck for three, say). (Cargo runs one test binary at a time, and
//! each binary has its own gate: `alone` means no other guest at all.)

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static GUESTS: RwLock<()> = RwLock::new(());

/// Held while no other test of this binary runs a guest.
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    GUESTS.write().unwrap_or_else(PoisonError::into_inner)
}

/// Held while a test runs a guest that other tests' guests may run beside.
pub fn beside_others() -> RwLockReadGuard<'static, ()> {
    GUESTS.read().unwrap_or_else(PoisonError::into_inner)
}

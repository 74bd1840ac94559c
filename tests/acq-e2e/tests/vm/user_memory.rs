//! The driver never waits for user memory while holding what others need (seed 003's
//! class of hang, docs/driver.md "Locks and user memory").
//!
//! A read() from `/dev/acq0` or a write() to `/dev/acq0-out` is given a buffer that
//! faults for 3 s (userfaultfd: what a FUSE file or a file on a hung disk does to a
//! copy). While that call waits inside the driver's copy, an ioctl on the same
//! descriptor, or the driver's unbind, must complete at once; then the stuck call
//! completes with the stream's data. v1 copied under the card's mutex: the ioctl, the
//! interrupt thread, the watchdog and unbind all waited for the user's page fault.
//!
//! Needs `make driver guest build`.

use acq_e2e::gate::{beside_others, quiet};
use acq_e2e::{assert_dmesg_clean, boot_streaming_guest, json_true, kernel_bug_reports, CMD};
use anyhow::{ensure, Result};

/// What the other call may take while one call waits in its copy (it takes a few
/// milliseconds; waiting for the copy takes the whole 3 s fault).
const PROMPT_MS: u64 = 1000;

/// Runs `acq-ctl CMD` and checks the scene: the fault happened, the other call did not
/// wait for it, the stuck call completed with the stream's data.
fn check(vm: &mut acq::vm::Vm, cmd: &str) -> Result<String> {
    let out = vm.sh_ok(&format!("acq-ctl {cmd}"), CMD)?;
    eprintln!("{cmd}: {}", out.trim());
    ensure!(
        json_true(&out, "fault_seen"),
        "{cmd}: the call never faulted on its buffer: {out}"
    );
    let probe_ms = acq_e2e::json_num(&out, "probe_ms");
    ensure!(
        probe_ms.is_some_and(|ms| ms < PROMPT_MS as f64),
        "{cmd}: the other call waited for the user's page fault: {out}"
    );
    ensure!(
        json_true(&out, "data_ok"),
        "{cmd}: the stuck call did not complete with the stream's data: {out}"
    );
    Ok(out)
}

#[test]
fn an_ioctl_does_not_wait_for_a_reader_stuck_in_its_copy() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot_streaming_guest("user-memory-read")?;
    check(&mut vm, "slow-read")?;
    // The card streams on afterwards.
    vm.sh_ok(
        "acq-stream --device /dev/acq0 --mode read --bytes 4M --verify",
        CMD,
    )?;
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)
}

#[test]
fn an_ioctl_does_not_wait_for_a_writer_stuck_in_its_copy() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot_streaming_guest("user-memory-write")?;
    check(&mut vm, "slow-write")?;
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// Unbind while a reader waits in its copy: the unbind completes at once (it frees the
/// card's DMA memory), and the reader still gets its block, intact: its copy holds a
/// reference on the page it copies from. Then the module unloads.
#[test]
fn unbind_does_not_wait_for_a_reader_stuck_in_its_copy() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot_streaming_guest("user-memory-unbind")?;
    check(&mut vm, "slow-read-unbind")?;
    let gone = vm.sh("ls /dev/acq0", CMD)?;
    ensure!(!gone.success(), "/dev/acq0 still exists after the unbind");
    vm.sh_ok("rmmod acq", CMD)?;
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    let bad = kernel_bug_reports(&dmesg);
    ensure!(bad.is_empty(), "kernel reports: {bad:?}");
    vm.shutdown(CMD)
}

/// Seed 003's hang, on this card: a playback write() whose source is the card's own
/// capture mapping. It completes, and the playback card verifies the block (the
/// capture stream's first block is what it expects). Refuted rather than fixed: the
/// mapping's pages are inserted at mmap() time (no fault handler that could need the
/// card's locks), and playback copies under its own lock; this test keeps it so.
#[test]
fn a_playback_write_from_the_capture_mapping_completes() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot_streaming_guest("user-memory-mmap-write")?;
    let out = vm.sh_ok("acq-ctl mmap-to-playback", CMD)?;
    eprintln!("mmap-to-playback: {}", out.trim());
    ensure!(
        acq_e2e::json_field(&out, "hung") == Some(false.into())
            && acq_e2e::json_field(&out, "write") == Some(4096.into()),
        "the write from the capture mapping did not complete: {out}"
    );
    ensure!(
        acq_e2e::json_u64(&out, "card_verified") >= 4096
            && acq_e2e::json_u64(&out, "mismatch_blocks") == 0,
        "the playback card did not receive the captured block intact: {out}"
    );
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// Two readers on one descriptor: while the first waits in a blocking read() for a slow
/// card's block (2 s), a second one with O_NONBLOCK gets EAGAIN at once, and a
/// blocking one ends with EINTR at its signal (1 s), not when the first is done. The first cut of the copy-without-the-mutex change serialised readers
/// on an uninterruptible mutex: the second reader slept in D state until the first
/// returned, whatever its flags or signals.
#[test]
fn a_second_reader_never_waits_for_the_first() -> Result<()> {
    let _gate = quiet();
    let mut vm = boot_streaming_guest("user-memory-second-reader")?;
    let out = vm.sh_ok("acq-ctl second-reader", CMD)?;
    eprintln!("second-reader: {}", out.trim());
    ensure!(
        acq_e2e::json_str(&out, "nowait").as_deref() == Some("EAGAIN")
            && acq_e2e::json_u64(&out, "nowait_ms") < 500,
        "an O_NONBLOCK read waited for the other reader: {out}"
    );
    ensure!(
        acq_e2e::json_str(&out, "blocking").as_deref() == Some("EINTR")
            && acq_e2e::json_u64(&out, "blocking_ms") < 1400,
        "a blocked second reader did not end at its signal: {out}"
    );
    ensure!(
        acq_e2e::json_u64(&out, "first") == 4096,
        "the first reader did not get its block: {out}"
    );
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)
}

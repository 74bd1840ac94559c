//! `acq-stream --direction out`: play a stream into the card's playback node
//! (`/dev/acqN-out`, docs/driver.md "Playback") and report, as one JSON line, what the
//! card verified.
//!
//! ```text
//! acq-stream --direction out [--device /dev/acq0-out] --bytes N
//!            [--source pattern|zero|FILE] [--mode write|writev|splice|sendfile|vmsplice]
//!            [--write-size N] [--buffers K] [--gift] [--reuse-before-release]
//!            [--pipe-size N] [--block B] [--ring-log2 L] [--rate R] [--pattern P]
//!            [--seed S] [--irq-count C] [--irq-time-us T] [--nonblock]
//!            [--corrupt-at OFFSET] [--pause-at N --pause-ms MS] [--verify]
//!            [--timeout SECONDS]
//! ```
//!
//! Sources: `pattern` is the card's pattern generated here (from stream offset 0, so the
//! card verifies every byte); `zero` reads `/dev/zero`; anything else is a file read
//! from its start. Mode `write` copies the source into write() calls (`writev` into
//! writev() calls of 4 KiB pieces); `sendfile` moves a file with sendfile(); mode `splice`
//! moves it with splice(): a file (or `/dev/zero`) is spliced into a pipe and the pipe
//! into the card, and the pattern source is written into a pipe by a second thread and
//! spliced from that pipe ("splice from a pipe"). Mode `vmsplice` lends `--buffers`
//! buffers of `--write-size` bytes to the card with vmsplice() and splice(), reusing each
//! only once the driver released it (the `vmsplice` module says how; `--gift` and
//! `--reuse-before-release` are its variants).
//!
//! `--corrupt-at` flips bit 0 of the pattern byte at that stream offset (a deliberately
//! bad source, which the card must catch there). `--pause-at` stops writing once for
//! `--pause-ms` at that byte count (an underrun when the card plays at a set rate).
//!
//! The card's counters (`ACQ_IOC_PB_GET_STATS`) are read after `ACQ_IOC_PB_DRAIN`, so
//! they cover everything written. With `--verify` the run passes only if the card
//! verified every byte written and saw no mismatch.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use acq_guest::acqdev::{self, errno_name};
use acq_guest::regs;
use acq_guest::uapi::{self, AcqConfig, AcqPbStats};
use acq_wire::consumer::ConsumerReport;

mod args;
use args::*;
mod dev;
pub use dev::*;
mod loops;
use loops::*;
#[cfg(test)]
mod tests;

mod vmsplice;

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    let dev = PbDev::open(&a.device, a.nonblock).map_err(|e| format!("open {}: {e}", a.device))?;
    let mut cfg = dev.config().map_err(|e| format!("PB_GET_CONFIG: {e}"))?;
    acqdev::apply(&mut cfg, &a.card);
    dev.set_config(&cfg)
        .map_err(|e| format!("PB_SET_CONFIG {}: {e}", acqdev::config_json(&cfg)))?;
    let before = dev.stats().map_err(|e| format!("PB_GET_STATS: {e}"))?;
    let file = match a.source.path() {
        Some(p) => Some(std::fs::File::open(p).map_err(|e| format!("open {p}: {e}"))?),
        None => None,
    };
    let mut prod = Producer {
        cfg,
        corrupt_at: a.corrupt_at,
        file,
    };
    let mut st = Run {
        errnos: BTreeMap::new(),
        total: 0,
        paused: false,
        start: Instant::now(),
        timed_out: false,
    };
    let mut vs = vmsplice::VmspliceStats::default();
    let r = match a.mode {
        Mode::Write | Mode::Writev => write_loop(a, &dev, &mut prod, &mut st),
        Mode::Splice => splice_loop(a, &dev, prod, &mut st),
        Mode::Sendfile => sendfile_loop(a, &dev, &prod, &mut st),
        Mode::Vmsplice => vmsplice::vmsplice_loop(a, &dev, &mut prod, &mut st).map(|v| vs = v),
    };
    // Pipe pages still held for blocks the card has not completed (zero-copy splice at a
    // rate: the driver releases them on completion, not when splice() returned).
    let held_at_end = dev.stats().map(|s| s.held_pages).unwrap_or(0);
    // Everything written reaches the card before the counters are read.
    let drained = dev.drain();
    let secs = st.start.elapsed().as_secs_f64();
    let fatal = r.err();
    let after = match dev.stats() {
        Ok(s) => s,
        // The card is gone (the loop ended on ENODEV): report what was counted before.
        Err(_) if fatal.is_some() => before,
        Err(e) => return Err(format!("PB_GET_STATS: {e}")),
    };
    let verified = after.card_verified.wrapping_sub(before.card_verified);
    let received = after.card_bytes.wrapping_sub(before.card_bytes);
    let mismatch = after.card_mismatch.wrapping_sub(before.card_mismatch);
    let underruns = after.card_underruns.wrapping_sub(before.card_underruns);
    let first_bad = (after.card_first_bad != u64::MAX).then_some(after.card_first_bad);
    let verify_ok = !a.verify || (verified == st.total && mismatch == 0 && first_bad.is_none());
    let ok = fatal.is_none()
        && drained.is_ok()
        && !st.timed_out
        && st.total >= a.bytes
        && received == st.total - st.total % u64::from(cfg.block_size.max(1))
        && verify_ok;
    let report = ConsumerReport {
        ok,
        verified_bytes: verified,
        errors: u64::from(mismatch),
        errno: st.errnos.clone(),
        fatal,
        timed_out: st.timed_out,
        config: Some(acqdev::card_config(&cfg)),
        ..ConsumerReport::moved(st.total, secs)
    };
    let detail = serde_json::json!({
        "direction": "out",
        "device": a.device,
        "mode": a.mode.as_str(),
        "driver_errors": after.errors.wrapping_sub(before.errors),
        "source": a.source.name(),
        "verify": a.verify,
        "card": {
            "received_bytes": received,
            "verified_bytes": verified,
            "mismatch_blocks": mismatch,
            "first_bad_offset": first_bad,
            "underruns": underruns,
        },
        "underruns": after.underruns.wrapping_sub(before.underruns),
        "zero_copy_bytes": after.zero_copy_bytes.wrapping_sub(before.zero_copy_bytes),
        "held_pages_at_end": held_at_end,
        "copied_bytes": after.copied_bytes.wrapping_sub(before.copied_bytes),
        "release_waits": vs.release_waits,
        "release_wait_ms": vs.release_wait_ms,
        "gifted_buffers": vs.gifted,
        "drain": drained.err(),
        "stats": pb_stats_json(&after),
    });
    let report = acq_guest::result::line(&report, detail);
    Ok((report, ok))
}

/// Entry point of `acq-stream --direction out ...` (`argv` without the program name).
pub fn main(argv: &[String]) -> ExitCode {
    let usage = || format!("usage: {}", Args::usage());
    if let Some(done) = acq_guest::result::help(argv, usage) {
        return done;
    }
    let a = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("acq-stream: {e}");
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    let context = serde_json::json!({"direction": "out", "device": a.device});
    acq_guest::result::finish(run(&a), context)
}

//! acq-vfio: a userspace driver for the acquisition card through VFIO, written from
//! docs/device.md alone. It captures, verifies every byte against the card's pattern, and
//! prints one JSON result line in the format of acq-stream (docs/vfio.md).
//!
//! ```text
//! acq-vfio [--device auto|DDDD:BB:DD.F] [--bind] --mode read --bytes N [--verify]
//!          [--sink FILE] [--block B] [--ring-log2 L] [--rate R] [--pattern P] [--seed S]
//!          [--irq-count C] [--irq-time-us T] [--timeout SECONDS] [--progress]
//! ```
//!
//! `--bind` binds the card to vfio-pci first (driver_override; no-IOMMU mode only when the
//! card has no IOMMU group). Behind an IOMMU the card is opened through vfio-ioctls'
//! type-1 container, otherwise in no-IOMMU mode (`"iommu"` in the result). Exit status: 0
//! ok, 1 verification or device failure, 2 bad arguments.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use acq_guest::vfio::dma::{Chunk, PAGE};
use acq_guest::vfio::{self, Device, EventFd, Mapping};
use acq_hw::regs::{self, comp, ctrl, desc, err, event, irq, reg, status};
use vfio_bindings::bindings::vfio as vb;

mod args;
use args::*;
mod card;
use card::*;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(done) = acq_guest::result::help(&argv, usage_text) {
        return done;
    }
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let context = serde_json::json!({ "device": args.device });
    acq_guest::result::finish(run(&args), context)
}

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    let bdf = find_card(&a.device)?;
    if a.bind {
        // Behind a (virtual) IOMMU the card already has a group: type-1, no unsafe mode.
        let noiommu = !vfio::has_iommu_group(&bdf);
        vfio::bind_vfio_pci(&bdf, noiommu).map_err(|e| format!("bind {bdf} to vfio-pci: {e}"))?;
    }
    let mut card = Card::open(&bdf, a)?;
    let mut st = Stats::default();
    let result = stream(&mut card, a, &mut st);
    card.close();
    let (total, verified, mismatches, first_mismatch, errnos, secs, timed_out, fatal) = match result
    {
        Ok(r) => r,
        Err(e) => (
            0,
            0,
            0,
            serde_json::Value::Null,
            BTreeMap::new(),
            0.0,
            false,
            Some(e),
        ),
    };
    let ok = fatal.is_none() && mismatches == 0 && !timed_out && total >= a.bytes;
    let report = serde_json::json!({
        "device": bdf,
        "driver": "vfio",
        "iommu": card.dev.iommu.name(),
        "bar0": match card.regs { Regs::Mapped(_) => "mmap", Regs::Fd => "pread/pwrite" },
        "unsafe_interrupts": card.dev.iommu == vfio::Iommu::Type1 && vfio::unsafe_interrupts_allowed(),
        "mode": "read",
        "bytes": total,
        "seconds": secs,
        "mb_per_s": if secs > 0.0 { total as f64 / secs / 1e6 } else { 0.0 },
        "verify": a.verify,
        "verified_bytes": verified,
        "errors": mismatches,
        "first_mismatch": first_mismatch,
        "overflows": st.overflows,
        "lost_bytes": st.lost_bytes,
        "errno": errnos,
        "signals": 0,
        "short_reads": 0,
        "restarted": st.sessions > 1,
        "timed_out": timed_out,
        "stopped_by_signal": false,
        "fatal": fatal,
        "config": {
            "block_size": a.block, "ring_log2": a.ring_log2, "rate": a.rate,
            "pattern": a.pattern, "seed": a.seed, "irq_mod_count": a.irq_count,
            "irq_mod_time_us": a.irq_time_us,
        },
        "stats": {
            "sessions": st.sessions, "blocks": st.blocks,
            "error_completions": st.error_completions,
            "recoveries": st.recoveries, "external_resets": st.external_resets, "function_resets": st.function_resets,
            "irqs_capture": st.irqs_capture, "irqs_error": st.irqs_error,
            "idle_timeouts": st.idle_timeouts, "late_completions": st.late_completions,
            "doorbells": st.doorbells, "sequence_errors": st.sequence_errors,
            "error_codes": st.error_codes,
        },
        "ok": ok,
    });
    Ok((report, ok))
}

type StreamResult = (
    u64,
    u64,
    u64,
    serde_json::Value,
    BTreeMap<String, u64>,
    f64,
    bool,
    Option<String>,
);

/// How long the loop sleeps on the eventfds before it looks at the ring and the card
/// anyway (bounds the cost of a lost interrupt).
const IDLE_MS: i32 = 20;

fn stream(card: &mut Card, a: &Args, st: &mut Stats) -> Result<StreamResult, String> {
    let mut sink = match a.sink.as_deref() {
        None | Some("/dev/null") => None,
        Some(p) => Some(BufWriter::with_capacity(
            1 << 20,
            File::create(p).map_err(|e| format!("create {p}: {e}"))?,
        )),
    };
    let mut errnos: BTreeMap<String, u64> = BTreeMap::new();
    let mut total: u64 = 0;
    let mut verified: u64 = 0;
    let mut mismatches: u64 = 0;
    let mut first_mismatch = serde_json::Value::Null;
    let mut timed_out = false;
    let mut fatal = None;
    // Stall watchdog, as the kernel driver's: no completion for 2 s plus four block times.
    let block_time = if a.rate > 0 {
        Duration::from_secs_f64(4.0 * a.block as f64 / a.rate as f64)
    } else {
        Duration::ZERO
    };
    let stall = Duration::from_secs(2) + block_time;

    card.start(a, st)?;
    let start = Instant::now();
    let mut last_progress = start;
    let mut last_completion = Instant::now();
    // Offset where the next data block is expected (the invariant of section 6.2).
    let mut expect: u64 = 0;
    // True while polling (irq_armed = 0).
    let mut polling = false;

    'outer: while total < a.bytes {
        if let Some(t) = a.timeout {
            if start.elapsed().as_secs_f64() > t {
                timed_out = true;
                break;
            }
        }
        // Drain the ring, at most one ring's worth at a time so that vector 1 is looked at
        // (non-blocking) even while the ring never runs empty.
        let mut budget = card.n;
        while budget > 0 {
            let Some(c) = card.next_completion() else {
                break;
            };
            budget -= 1;
            last_completion = Instant::now();
            let id = c.id;
            if c.flags & comp::F_ERROR != 0 {
                // The buffer holds nothing; the block stays in the card's FIFO.
                st.error_completions += 1;
                *errnos.entry("EIO".into()).or_default() += 1;
                *st.error_codes
                    .entry(format!(
                        "completion_{}",
                        err_name(comp::error_code(c.flags))
                    ))
                    .or_default() += 1;
            } else {
                st.blocks += 1;
                if c.flags & comp::F_OVERFLOW != 0 {
                    st.overflows += 1;
                    st.lost_bytes += c.lost_bytes;
                    *errnos.entry("EPIPE".into()).or_default() += 1;
                }
                if c.stream_offset != expect + c.lost_bytes {
                    st.sequence_errors += 1;
                }
                expect = c.stream_offset + c.length as u64;
                let buf = card
                    .bufs
                    .get(id as usize)
                    .ok_or_else(|| format!("completion with unknown id {id}"))?;
                let len = (c.length as usize).min(buf.len);
                let take = len.min((a.bytes - total) as usize);
                // SAFETY: the device completed this buffer and does not own it until it is
                // reposted below; `take` is within the chunk.
                let data = unsafe { std::slice::from_raw_parts(buf.ptr, take) };
                if a.verify {
                    if let Some(i) = regs::pattern_check(a.pattern, a.seed, c.stream_offset, data) {
                        mismatches += 1;
                        if first_mismatch.is_null() {
                            let at = c.stream_offset + i as u64;
                            first_mismatch = serde_json::json!({
                                "stream_offset": at,
                                "got": data[i],
                                "want": regs::pattern_byte(a.pattern, a.seed, at),
                            });
                        }
                    } else {
                        verified += take as u64;
                    }
                }
                if let Some(f) = sink.as_mut() {
                    f.write_all(data).map_err(|e| format!("write sink: {e}"))?;
                }
                total += take as u64;
            }
            card.advance();
            card.repost(id, st);
            if total >= a.bytes {
                break 'outer;
            }
        }
        // Vector 1 is looked at without sleeping too: the ring may never run empty.
        let mut halted = false;
        if card.efd[1].take() > 0 {
            st.irqs_error += 1;
            halted = card.service_errors(st);
        }
        let mut reset_needed = false;
        if !halted {
            if budget == 0 {
                continue;
            }
            // The ring is empty: give every consumed buffer back before sleeping.
            card.flush_reposts(st);
            // Nothing new: re-arm (section 9.3), then sleep on the eventfds.
            card.ev(event::OFF_IRQ_ARMED)
                .store(event::ARMED_CAPTURE, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if card.next_completion().is_some() {
                polling = true;
                card.ev(event::OFF_IRQ_ARMED).store(0, Ordering::Relaxed);
                continue;
            }
            let ready = vfio::wait_readable(&[card.efd[0].raw_fd(), card.efd[1].raw_fd()], IDLE_MS);
            if ready[0] && card.efd[0].take() > 0 {
                st.irqs_capture += 1;
            }
            if ready[1] && card.efd[1].take() > 0 {
                st.irqs_error += 1;
                halted = card.service_errors(st);
            }
            if !ready[0] && !ready[1] {
                st.idle_timeouts += 1;
                if card.next_completion().is_some() {
                    // An interrupt was lost (or moderation is slower than IDLE_MS): only
                    // latency was lost.
                    st.late_completions += 1;
                    continue;
                }
                // Quiet: is the card still running? (One trapped read per idle period.)
                let s = card.rd(reg::STATUS);
                let gone = s == u32::MAX && card.rd(reg::ID) != regs::id::MAGIC;
                let stopped = !gone && s & status::RUNNING == 0;
                if !gone && s & status::HALTED != 0 {
                    halted = card.service_errors(st);
                }
                let stalled = !gone && !stopped && last_completion.elapsed() > stall;
                if !gone && !stopped && s & status::NEED_DOORBELL != 0 {
                    // Defensive: the device waits although buffers are posted.
                    card.wr(reg::DOORBELL, 1);
                    st.doorbells += 1;
                }
                // Reset by someone else (no interrupt tells), hung or stalled.
                reset_needed = gone || stalled;
                if stopped && !halted {
                    st.external_resets += 1;
                }
                halted |= gone || stopped || stalled;
            }
        }
        if halted {
            // Recover in a new session, reported once as EIO (like the kernel driver).
            st.recoveries += 1;
            *errnos.entry("EIO".into()).or_default() += 1;
            card.stop();
            let hung = reset_needed || card.rd(reg::ID) != regs::id::MAGIC;
            if hung && card.soft_reset().is_err() {
                st.function_resets += 1;
                card.dev
                    .reset()
                    .map_err(|e| format!("VFIO_DEVICE_RESET: {e}"))?;
            }
            if let Err(e) = card.start(a, st) {
                fatal = Some(e);
                break;
            }
            expect = 0;
            last_completion = Instant::now();
            continue;
        }
        // Woken: poll with interrupts suppressed (NAPI style) until the ring is empty.
        if !polling {
            card.ev(event::OFF_IRQ_ARMED).store(0, Ordering::Relaxed);
        }
        polling = false;
        if a.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "{:>8.1} MiB  {:>8.2} MB/s",
                total as f64 / 1048576.0,
                total as f64 / secs / 1e6
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(f) = sink.as_mut() {
        f.flush().map_err(|e| format!("write sink: {e}"))?;
    }
    Ok((
        total,
        verified,
        mismatches,
        first_mismatch,
        errnos,
        secs,
        timed_out,
        fatal,
    ))
}

//! After the steps: each expectation, the capture disks' accounts to the byte, the kernel
//! log, and a note when a card outran its consumer.

use super::*;

use acq_wire::consumer::ConsumerReport;
use acq_wire::counters::{CardCounters, DiskCounters};
use serde::Deserialize;

/// Checks every stream to a capture disk: the consumer's account of the disk against the
/// disk's and the card's counters, to the byte, and `expect.sink`.
/// The stream steps with their results. `res.streams` holds the foreground stream and
/// play steps' results in step order, then the background play steps'; a play step's
/// result is skipped here.
pub(super) fn stream_results<'a>(
    sc: &'a Scenario,
    res: &ScenarioResult,
) -> Vec<(&'a StreamStep, StreamView)> {
    sc.steps
        .iter()
        .filter(|s| match s {
            Step::Stream(_) | Step::Share(_) => true,
            Step::Play(p) => !p.background,
            _ => false,
        })
        .zip(&res.streams)
        .filter_map(|(s, v)| match s {
            Step::Stream(st) => Some((st, StreamView::of(v))),
            _ => None,
        })
        .collect()
}

/// A consumer's result as the checks read it: the report the guest tool wrote (its type
/// is the tools' own, `acq_wire::consumer::ConsumerReport`) and what the harness added
/// to it (the signal it had sent and the bound, the host's check of a file on a disk).
#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamView {
    /// The tool's report.
    #[serde(flatten)]
    pub report: ConsumerReport,
    /// The signal sent to a consumer it ends ...
    #[serde(default)]
    pub signal_sent: Option<String>,
    /// ... and how soon the consumer had to be gone.
    #[serde(default)]
    pub exit_within_ms: u64,
    /// A `disk_file` stream: the file checked on the host.
    #[serde(default)]
    pub host_verify: Option<HostVerify>,
}

impl StreamView {
    /// Reads a result line; one that is not a report reads as a report of that error
    /// (which fails the stream's checks, naming the line).
    pub(super) fn of(v: &Value) -> StreamView {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| StreamView {
            report: ConsumerReport {
                error: Some(format!(
                    "the result line is not a consumer report ({e}): {v}"
                )),
                ..ConsumerReport::default()
            },
            ..StreamView::default()
        })
    }
}

pub(super) fn check_disk_streams(sc: &Scenario, res: &mut ScenarioResult) {
    let streams = stream_results(sc, res);
    let steps: Vec<&StreamStep> = streams.iter().map(|(st, _)| *st).collect();
    let ex = &sc.expect.sink;
    let mut checks = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut lost, mut gaps, mut retries) = (0u64, 0u64, 0u64);
    let mut any = false;
    for (i, (st, s)) in streams.iter().enumerate() {
        let Some(d) = st.sink.disk() else { continue };
        any = true;
        let r = &s.report;
        if let (Sink::DiskFile(_), Some(h)) = (st.sink, &s.host_verify) {
            checks.push(Check {
                name: format!("stream {i}: the file's blocks on disk {d} verified on the host"),
                ok: h.error.is_none() && r.bytes > 0 && h.verified == r.bytes && h.mismatches == 0,
                detail: serde_json::to_string(h).unwrap_or_default(),
            });
        }
        let Some(io) = &r.sink_io else {
            checks.push(Check {
                name: format!("stream {i}: consumer reports its disk account"),
                ok: false,
                detail: format!(
                    "no sink_io in the result: {}",
                    r.error.as_deref().unwrap_or("null")
                ),
            });
            continue;
        };
        for (k, v) in &io.errno {
            *errors.entry(k.clone()).or_default() += v;
        }
        lost += io.lost_bytes;
        gaps += io.gap_bytes;
        retries += io.retries;
        checks.push(Check {
            name: format!("stream {i}: stopped by the sink = {}", ex.stopped),
            ok: io.stopped == ex.stopped,
            detail: format!(
                "stopped {}; {} of {} bytes taken from the card",
                io.stopped, r.bytes, st.bytes
            ),
        });
        let synced = io.sync.as_deref() == Some("ok");
        checks.push(Check {
            name: format!("stream {i}: final fsync succeeded = {}", ex.synced),
            ok: synced == ex.synced,
            detail: format!("sync {}", io.sync.as_deref().unwrap_or("not done")),
        });
        // The card's loss as the consumer met it (EPIPE gaps) is what the driver counted
        // from the card's completions.
        checks.push(Check {
            name: format!("stream {i}: consumer gaps = driver lost_bytes"),
            ok: r.lost_bytes == Some(io.gap_bytes),
            detail: format!(
                "gaps {} bytes, driver lost_bytes {:?}",
                io.gap_bytes, r.lost_bytes
            ),
        });
        // The model counts for its whole life: comparable when this is the card's only
        // stream (the device is closed right after it, which stops the card).
        if steps.iter().filter(|x| x.card == st.card).count() == 1 {
            let got = res
                .counters
                .get(st.card)
                .and_then(|c| CardCounters::deserialize(c).ok())
                .map(|c| c.stats.lost_bytes);
            checks.push(Check {
                name: format!("stream {i}: consumer gaps = card{}.lost_bytes", st.card),
                ok: got == Some(io.gap_bytes),
                detail: format!("gaps {} bytes, card {got:?}", io.gap_bytes),
            });
        }
        if !matches!(st.sink, Sink::Disk(_)) {
            continue;
        }
        let disk = res
            .disk_counters
            .get(d)
            .and_then(|c| DiskCounters::deserialize(c).ok());
        for (mine, theirs, what, got) in [
            (
                io.written_bytes_unique,
                "written_bytes_unique",
                "bytes on the disk",
                disk.as_ref().map(|c| c.data.written_bytes_unique),
            ),
            (
                io.hole_bytes,
                "hole_bytes",
                "hole bytes",
                disk.as_ref().map(|c| c.data.hole_bytes),
            ),
            (
                io.failed_bytes,
                "failed_write_bytes",
                "failed write bytes",
                disk.as_ref().map(|c| c.requests.failed_write_bytes),
            ),
        ] {
            checks.push(Check {
                name: format!("stream {i}: consumer {what} = disk{d}.{theirs}"),
                ok: got == Some(mine),
                detail: format!("consumer {mine}, disk {got:?}"),
            });
        }
        let bad = disk.as_ref().map(|c| c.data.bytes_mismatched);
        checks.push(Check {
            name: format!("stream {i}: disk{d} holds only the card's stream"),
            ok: bad == Some(0),
            detail: format!("bytes_mismatched {bad:?}"),
        });
    }
    if any {
        errno_counts(&ex.errors, &errors, "sink ", &mut checks);
        for (what, range, got) in [
            ("lost at the sink", ex.lost_bytes, lost),
            ("lost by the card (gaps)", ex.gap_bytes, gaps),
            ("retries", ex.retries, retries),
        ] {
            checks.push(Check {
                name: format!("sink: {what} {range}"),
                ok: range.contains(got),
                detail: got.to_string(),
            });
        }
    }
    res.checks.extend(checks);
}

/// One check per errno named in `want` or seen in `got`: seen exactly as often as wanted
/// (an errno nobody named must not occur). `who` prefixes the check names.
pub(super) fn errno_counts(
    want: &BTreeMap<String, u64>,
    got: &BTreeMap<String, u64>,
    who: &str,
    checks: &mut Vec<Check>,
) {
    let mut names: Vec<&String> = want.keys().chain(got.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let w = want.get(name).copied().unwrap_or(0);
        let g = got.get(name).copied().unwrap_or(0);
        checks.push(Check {
            name: format!("{who}{name} seen {w} time(s)"),
            ok: w == g,
            detail: format!("seen {g} time(s)"),
        });
    }
}

/// A failing scenario whose card produced faster than its consumer took the data says so:
/// the overflows (EPIPE, lost bytes) are then the consumer's pace, not a driver bug, and
/// the author needs a lower card rate or a faster consumer mode (docs/scenarios.md,
/// "Rates a consumer sustains"). Added only to a run that already failed and saw gaps.
pub(super) fn explain_outrun_consumers(sc: &Scenario, res: &mut ScenarioResult) {
    if res.checks.iter().all(|c| c.ok) {
        return;
    }
    let mut notes = Vec::new();
    for (i, (st, s)) in stream_results(sc, res).into_iter().enumerate() {
        let gaps = s.report.errno.get("EPIPE").copied().unwrap_or(0);
        let rate = sc
            .cards
            .get(st.card)
            .and_then(|c| c.device.rate)
            .map_or(0, |r| r.0);
        let took = s.report.mb_per_s * 1e6;
        if let Some(note) = outrun_note(i, gaps, rate, took) {
            notes.push(note);
        }
    }
    res.checks.extend(notes);
}

/// The note for stream `i` when its consumer (`took` bytes/s) fell behind a card set to
/// `rate` bytes/s and saw `gaps` EPIPEs.
pub(super) fn outrun_note(i: usize, gaps: u64, rate: u64, took: f64) -> Option<Check> {
    if gaps == 0 || rate == 0 || took <= 0.0 || took >= 0.9 * rate as f64 {
        return None;
    }
    Some(Check {
        name: format!("stream {i}: the consumer kept up with its card"),
        ok: false,
        detail: format!(
            "the card produced {:.1} MB/s, the consumer took {:.1} MB/s and saw {gaps} EPIPE: \
             it cannot keep up at this rate here; lower the card's rate or use a faster \
             consumer mode (docs/scenarios.md, \"Rates a consumer sustains\")",
            rate as f64 / 1e6,
            took / 1e6
        ),
    })
}

/// Checks the expectations against what the run measured.
pub(super) fn check_expectations(ex: &Expect, res: &mut ScenarioResult, dmesg: &str) {
    let mut checks = Vec::new();
    let streams: Vec<StreamView> = res.streams.iter().map(StreamView::of).collect();
    for (i, view) in streams.iter().enumerate() {
        let s = &view.report;
        // A stream may end on purpose: a fatal errno the scenario expects (ENODEV after a
        // surprise removal) is checked by the errno counts below instead.
        let expected_fatal = s
            .errno
            .keys()
            .any(|k| ex.errors.contains_key(k) && !RECOVERABLE.contains(&k.as_str()));
        if let Some(f) = s
            .fatal
            .as_ref()
            .or(s.error.as_ref())
            .filter(|_| !expected_fatal)
        {
            checks.push(Check {
                name: format!("stream {i} ends without a fatal error"),
                ok: false,
                detail: f.clone(),
            });
        }
        let never_sent = s.signal.is_none();
        if let Some(sig) = view
            .signal_sent
            .as_ref()
            .filter(|_| ex.all_faults_fire || !never_sent)
        {
            let bound = view.exit_within_ms;
            checks.push(Check {
                name: format!(
                    "stream {i}: the consumer is gone within {bound} ms of SIG{}",
                    sig.to_uppercase()
                ),
                ok: s.exit_ms.is_some_and(|ms| ms <= bound),
                detail: match (&s.signal, s.exit_ms) {
                    (None, _) => "the consumer ended before the signal was due".into(),
                    (Some(_), Some(ms)) => format!("gone after {ms} ms"),
                    (Some(_), None) => "still there 30 s after the signal".into(),
                },
            });
        }
        if s.control.is_some() {
            // The second process's ioctls got answers the contract allows, and the
            // consumer met a session end (0) only where one of them ended the session.
            let faults: Vec<String> = ex
                .errors_allowed
                .iter()
                .chain(ex.errors.keys())
                .cloned()
                .collect();
            let verdict = super::control::judge(s, &faults);
            checks.push(Check {
                name: format!("stream {i}: the control actions met the contract"),
                ok: verdict.is_ok(),
                detail: verdict.unwrap_or_else(|e| e),
            });
        }
        if s.timed_out {
            checks.push(Check {
                name: format!("stream {i} finishes in time"),
                ok: false,
                detail: format!("timed out after {} bytes", s.bytes),
            });
        }
    }
    if let Some(min) = ex.min_throughput_mbps {
        for (i, s) in streams.iter().enumerate() {
            let mbps = s.report.mb_per_s;
            checks.push(Check {
                name: format!("stream {i} throughput >= {min} MB/s"),
                ok: mbps >= min,
                detail: format!("{mbps:.1} MB/s"),
            });
        }
    }
    let verified: u64 = streams.iter().map(|s| s.report.verified_bytes).sum();
    if let Some(min) = ex.verified_bytes_min {
        checks.push(Check {
            name: format!("verified bytes >= {min}"),
            ok: verified >= min.0,
            detail: format!("{verified} bytes verified"),
        });
    }
    let mismatches: u64 = streams.iter().map(|s| s.report.errors).sum();
    checks.push(Check {
        name: format!("verification mismatches {}", ex.mismatches),
        ok: ex.mismatches.contains(mismatches),
        detail: format!("{mismatches} consumer chunk(s) failed verification"),
    });
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for s in &streams {
        for (k, v) in &s.report.errno {
            *seen.entry(k.clone()).or_default() += v;
        }
    }
    for name in &ex.errors_allowed {
        if !ex.errors.contains_key(name) {
            seen.remove(name);
        }
    }
    errno_counts(&ex.errors, &seen, "", &mut checks);
    for (name, range) in &ex.errors_at {
        let offsets: Vec<u64> = streams
            .iter()
            .filter_map(|s| s.report.errno_events.as_ref())
            .flatten()
            .filter(|e| e.errno == *name)
            .map(|e| e.offset)
            .collect();
        // No occurrence at all is a failure here too: a placement was asked for.
        let ok = !offsets.is_empty() && offsets.iter().all(|&o| range.contains(o));
        checks.push(Check {
            name: format!("{name} at stream offset {range}"),
            ok,
            detail: if offsets.is_empty() {
                "never seen".into()
            } else {
                format!("at {offsets:?}")
            },
        });
    }
    if ex.recovered {
        for (i, s) in streams.iter().enumerate() {
            let s = &s.report;
            let ok = s.ok || (s.bytes > 0 && s.fatal.is_none() && !s.timed_out);
            checks.push(Check {
                name: format!("stream {i} recovered and reached its byte count"),
                ok,
                detail: format!(
                    "{} bytes, fatal: {}",
                    s.bytes,
                    s.fatal.as_deref().unwrap_or("null")
                ),
            });
        }
    }
    for (key, range) in &ex.counters {
        let got = counter_key(key).and_then(|(who, idx, name)| {
            let all = match who {
                CounterOf::Card => &res.counters,
                CounterOf::Disk => &res.disk_counters,
                CounterOf::Stream => &res.streams,
            };
            all.get(idx)?.get(name)?.as_u64()
        });
        checks.push(Check {
            name: format!("{key} {range}"),
            ok: got.is_some_and(|g| range.contains(g)),
            detail: got.map_or_else(|| "no such counter".into(), |g| g.to_string()),
        });
    }
    for (text, range) in &ex.dmesg_lines {
        let n = dmesg.lines().filter(|l| l.contains(text.as_str())).count() as u64;
        checks.push(Check {
            name: format!("kernel log lines with {text:?} {range}"),
            ok: range.contains(n),
            detail: n.to_string(),
        });
    }
    checks.push(kernel_log_check(
        "kernel log clean (no WARN/BUG/lockdep)",
        dmesg,
        ex,
    ));
    res.checks.extend(checks);
}

/// The check that `log` has no kernel bug report but those the scenario allows
/// (`dmesg_allow`).
pub(super) fn kernel_log_check(name: &str, log: &str, ex: &Expect) -> Check {
    let bad: Vec<String> = crate::dmesg::kernel_bug_reports(log)
        .into_iter()
        .filter(|l| !ex.dmesg_allow.iter().any(|a| l.contains(a.as_str())))
        .collect();
    Check {
        name: name.into(),
        ok: bad.is_empty(),
        detail: if bad.is_empty() {
            "clean".into()
        } else {
            bad.join(" | ")
        },
    }
}

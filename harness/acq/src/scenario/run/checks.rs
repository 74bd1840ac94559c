//! After the steps: each expectation, the capture disks' accounts to the byte, the kernel
//! log, and a note when a card outran its consumer.

use super::*;

/// Checks every stream to a capture disk: the consumer's account of the disk against the
/// disk's and the card's counters, to the byte, and `expect.sink`.
/// The stream steps with their results. `res.streams` holds the foreground stream and
/// play steps' results in step order, then the background play steps'; a play step's
/// result is skipped here.
pub(super) fn stream_results<'a>(
    sc: &'a Scenario,
    res: &'a ScenarioResult,
) -> Vec<(&'a StreamStep, &'a Value)> {
    sc.steps
        .iter()
        .filter(|s| match s {
            Step::Stream(_) | Step::Share(_) => true,
            Step::Play(p) => !p.background,
            _ => false,
        })
        .zip(&res.streams)
        .filter_map(|(s, v)| match s {
            Step::Stream(st) => Some((st, v)),
            _ => None,
        })
        .collect()
}

pub(super) fn check_disk_streams(sc: &Scenario, res: &mut ScenarioResult) {
    let (steps, results): (Vec<&StreamStep>, Vec<Value>) = stream_results(sc, res)
        .into_iter()
        .map(|(st, v)| (st, v.clone()))
        .unzip();
    let ex = &sc.expect.sink;
    let mut checks = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut lost, mut gaps, mut retries) = (0u64, 0u64, 0u64);
    let mut any = false;
    for (i, (st, s)) in steps.iter().zip(&results).enumerate() {
        let Some(d) = st.sink.disk() else { continue };
        any = true;
        if let (Sink::DiskFile(_), Some(h)) = (st.sink, s.get("host_verify")) {
            let bytes = num(s, "bytes");
            checks.push(Check {
                name: format!("stream {i}: the file's blocks on disk {d} verified on the host"),
                ok: h.get("error").is_none()
                    && bytes > 0
                    && num(h, "verified") == bytes
                    && num(h, "mismatches") == 0,
                detail: h.to_string(),
            });
        }
        let Some(io) = s.get("sink_io").filter(|v| v.is_object()) else {
            checks.push(Check {
                name: format!("stream {i}: consumer reports its disk account"),
                ok: false,
                detail: format!(
                    "no sink_io in the result: {}",
                    s.get("error").unwrap_or(&Value::Null)
                ),
            });
            continue;
        };
        if let Some(m) = io.get("errno").and_then(Value::as_object) {
            for (k, v) in m {
                *errors.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        lost += num(io, "lost_bytes");
        gaps += num(io, "gap_bytes");
        retries += num(io, "retries");
        let stopped = io.get("stopped") == Some(&Value::Bool(true));
        checks.push(Check {
            name: format!("stream {i}: stopped by the sink = {}", ex.stopped),
            ok: stopped == ex.stopped,
            detail: format!(
                "stopped {stopped}; {} of {} bytes taken from the card",
                num(s, "bytes"),
                st.bytes
            ),
        });
        let synced = io.get("sync").and_then(Value::as_str) == Some("ok");
        checks.push(Check {
            name: format!("stream {i}: final fsync succeeded = {}", ex.synced),
            ok: synced == ex.synced,
            detail: format!("sync {}", io.get("sync").unwrap_or(&Value::Null)),
        });
        // The card's loss as the consumer met it (EPIPE gaps) is what the driver counted
        // from the card's completions.
        checks.push(Check {
            name: format!("stream {i}: consumer gaps = driver lost_bytes"),
            ok: num(io, "gap_bytes") == num(s, "lost_bytes"),
            detail: format!(
                "gaps {} bytes, driver lost_bytes {}",
                num(io, "gap_bytes"),
                num(s, "lost_bytes")
            ),
        });
        // The model counts for its whole life: comparable when this is the card's only
        // stream (the device is closed right after it, which stops the card).
        if steps.iter().filter(|x| x.card == st.card).count() == 1 {
            let card = res.counters.get(st.card);
            let got = card
                .and_then(|c| c.get("lost_bytes"))
                .and_then(Value::as_u64);
            checks.push(Check {
                name: format!("stream {i}: consumer gaps = card{}.lost_bytes", st.card),
                ok: got == Some(num(io, "gap_bytes")),
                detail: format!("gaps {} bytes, card {got:?}", num(io, "gap_bytes")),
            });
        }
        if !matches!(st.sink, Sink::Disk(_)) {
            continue;
        }
        let disk = res.disk_counters.get(d).cloned().unwrap_or(Value::Null);
        for (mine, theirs, what) in [
            (
                "written_bytes_unique",
                "written_bytes_unique",
                "bytes on the disk",
            ),
            ("hole_bytes", "hole_bytes", "hole bytes"),
            ("failed_bytes", "failed_write_bytes", "failed write bytes"),
        ] {
            let got = disk.get(theirs).and_then(Value::as_u64);
            checks.push(Check {
                name: format!("stream {i}: consumer {what} = disk{d}.{theirs}"),
                ok: got == Some(num(io, mine)),
                detail: format!("consumer {}, disk {got:?}", num(io, mine)),
            });
        }
        let bad = disk.get("bytes_mismatched").and_then(Value::as_u64);
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

pub(super) fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
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
        let gaps = s
            .get("errno")
            .and_then(|m| m.get("EPIPE"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let rate = sc
            .cards
            .get(st.card)
            .and_then(|c| c.device.rate)
            .map_or(0, |r| r.0);
        let took = s.get("mb_per_s").and_then(Value::as_f64).unwrap_or(0.0) * 1e6;
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
    let streams = &res.streams;
    for (i, s) in streams.iter().enumerate() {
        // A stream may end on purpose: a fatal errno the scenario expects (ENODEV after a
        // surprise removal) is checked by the errno counts below instead.
        let expected_fatal = s.get("errno").and_then(Value::as_object).is_some_and(|m| {
            m.keys()
                .any(|k| ex.errors.contains_key(k) && !RECOVERABLE.contains(&k.as_str()))
        });
        let fatal = s
            .get("fatal")
            .filter(|f| !f.is_null())
            .or_else(|| s.get("error"));
        if let Some(f) = fatal.filter(|_| !expected_fatal) {
            checks.push(Check {
                name: format!("stream {i} ends without a fatal error"),
                ok: false,
                detail: f.to_string(),
            });
        }
        let never_sent = s.get("signal").is_none();
        if let Some(sig) = s
            .get("signal_sent")
            .and_then(Value::as_str)
            .filter(|_| ex.all_faults_fire || !never_sent)
        {
            let bound = num(s, "exit_within_ms");
            let exit = s.get("exit_ms").and_then(Value::as_u64);
            checks.push(Check {
                name: format!(
                    "stream {i}: the consumer is gone within {bound} ms of SIG{}",
                    sig.to_uppercase()
                ),
                ok: exit.is_some_and(|ms| ms <= bound),
                detail: match (s.get("signal"), exit) {
                    (None, _) => "the consumer ended before the signal was due".into(),
                    (Some(_), Some(ms)) => format!("gone after {ms} ms"),
                    (Some(_), None) => "still there 30 s after the signal".into(),
                },
            });
        }
        if s.get("control").is_some() {
            // The second process's ioctls got answers the contract allows, and the
            // consumer met a session end (0) only where one of them ended the session.
            let faults: Vec<String> = ex
                .errors_allowed
                .iter()
                .chain(ex.errors.keys())
                .cloned()
                .collect();
            let verdict = crate::scenario::control::judge(s, &faults);
            checks.push(Check {
                name: format!("stream {i}: the control actions met the contract"),
                ok: verdict.is_ok(),
                detail: verdict.unwrap_or_else(|e| e),
            });
        }
        if s.get("timed_out") == Some(&Value::Bool(true)) {
            checks.push(Check {
                name: format!("stream {i} finishes in time"),
                ok: false,
                detail: format!("timed out after {} bytes", num(s, "bytes")),
            });
        }
    }
    if let Some(min) = ex.min_throughput_mbps {
        for (i, s) in streams.iter().enumerate() {
            let mbps = s.get("mb_per_s").and_then(Value::as_f64).unwrap_or(0.0);
            checks.push(Check {
                name: format!("stream {i} throughput >= {min} MB/s"),
                ok: mbps >= min,
                detail: format!("{mbps:.1} MB/s"),
            });
        }
    }
    let verified: u64 = streams.iter().map(|s| num(s, "verified_bytes")).sum();
    if let Some(min) = ex.verified_bytes_min {
        checks.push(Check {
            name: format!("verified bytes >= {min}"),
            ok: verified >= min.0,
            detail: format!("{verified} bytes verified"),
        });
    }
    let mismatches: u64 = streams.iter().map(|s| num(s, "errors")).sum();
    checks.push(Check {
        name: format!("verification mismatches {}", ex.mismatches),
        ok: ex.mismatches.contains(mismatches),
        detail: format!("{mismatches} consumer chunk(s) failed verification"),
    });
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for s in streams {
        if let Some(m) = s.get("errno").and_then(Value::as_object) {
            for (k, v) in m {
                *seen.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
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
            .filter_map(|s| s.get("errno_events").and_then(Value::as_array))
            .flatten()
            .filter(|e| e.get("errno").and_then(Value::as_str) == Some(name.as_str()))
            .map(|e| num(e, "offset"))
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
            let ok = s.get("ok") == Some(&Value::Bool(true))
                || (num(s, "bytes") > 0
                    && s.get("fatal").is_none_or(Value::is_null)
                    && s.get("timed_out") != Some(&Value::Bool(true)));
            checks.push(Check {
                name: format!("stream {i} recovered and reached its byte count"),
                ok,
                detail: format!(
                    "{} bytes, fatal: {}",
                    num(s, "bytes"),
                    s.get("fatal").unwrap_or(&Value::Null)
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

//! Several streams at once in one guest: 1, 2 and 4 cards capturing side by side
//! (aggregate and per card: does one card's load starve another?), the same for
//! playback, and one card capturing and playing at the same time. A second VM boot with
//! four cards, each served by its own device model.

use super::*;

use acq_wire::consumer::{
    CaptureArgs, CaptureMode, ConsumerReport, PlayMode, PlaybackArgs, SourcePath,
};

/// The most cards the scaling runs attach.
pub(super) const CARDS: usize = 4;

/// One row of the scaling table.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRun {
    /// What ran (`capture x4`).
    pub label: String,
    /// Streams at once.
    pub streams: usize,
    /// All the streams' bytes over the longest stream's time, MB/s (median repetition).
    pub aggregate_mb_per_s: Option<f64>,
    /// Each stream's own rate in that repetition, MB/s, in card order.
    pub per_stream_mb_per_s: Vec<f64>,
    /// The slowest stream's rate over the fastest's (1: every card got the same); only
    /// for streams of one kind (a capture and a playback differ by nature).
    pub fairness: Option<f64>,
    /// Guest CPU seconds per GiB over all the streams (captures report theirs).
    pub cpu_s_per_gib: Option<f64>,
    /// Every repetition's aggregate.
    pub samples: Vec<f64>,
    /// Why there is no figure.
    pub note: Option<String>,
}

/// A stream of one row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// read() of `/dev/acqN`.
    Capture(usize),
    /// write() of the pattern to `/dev/acqN-out`, the card verifying it.
    Playback(usize),
}

impl Stream {
    fn is_capture(self) -> bool {
        matches!(self, Stream::Capture(_))
    }

    fn argv(self, bytes: u64) -> Vec<String> {
        let mut v = vec!["acq-stream".to_owned()];
        match self {
            Stream::Capture(c) => v.extend(
                CaptureArgs::new(format!("/dev/acq{c}"), CaptureMode::Read, bytes).to_argv(),
            ),
            Stream::Playback(c) => {
                let mut a = PlaybackArgs::new(
                    format!("/dev/acq{c}-out"),
                    PlayMode::Write,
                    SourcePath::Pattern,
                    bytes,
                );
                a.verify = true;
                v.extend(a.to_argv());
            }
        }
        v
    }
}

/// The rows: `(label, streams)`.
fn rows() -> Vec<(String, Vec<Stream>)> {
    let mut rows = Vec::new();
    for n in [1, 2, CARDS] {
        rows.push((
            format!("capture x{n}"),
            (0..n).map(Stream::Capture).collect(),
        ));
    }
    for n in [1, 2, CARDS] {
        rows.push((
            format!("playback x{n}"),
            (0..n).map(Stream::Playback).collect(),
        ));
    }
    rows.push((
        "capture + playback, one card".into(),
        vec![Stream::Capture(0), Stream::Playback(0)],
    ));
    rows
}

/// Boots a guest with [`CARDS`] cards and measures every row.
pub(super) fn run(paths: &Paths, opts: &BenchOptions) -> Result<Vec<ScaleRun>> {
    let cfg = VmConfig {
        accel: opts.accel,
        cards: (0..CARDS).map(|_| Card::Model { config: None }).collect(),
        modules: vec![paths.driver_module()],
        run_dir: opts.results.join("vm-scaling"),
        ..VmConfig::default()
    };
    let mut vm = Vm::boot(&cfg, paths)?;
    vm.sh_ok(
        &format!(
            "insmod /lib/modules/acq.ko && for i in $(seq 100); do [ -c /dev/acq{} ] && exit 0; sleep 0.1; done; exit 1",
            CARDS - 1
        ),
        Duration::from_secs(60),
    )?;
    eprintln!(
        "bench: scaling, {CARDS} cards, {} per stream",
        human(opts.bytes)
    );
    let mut out = Vec::new();
    for (label, streams) in rows() {
        let mut reps: Vec<ScaleRun> = Vec::new();
        for _ in 0..opts.repeat.max(1) {
            let r = measure(&mut vm, &label, &streams, opts.bytes)?;
            let failed = r.aggregate_mb_per_s.is_none();
            reps.push(r);
            if failed {
                break;
            }
        }
        let samples: Vec<f64> = reps.iter().filter_map(|r| r.aggregate_mb_per_s).collect();
        let mut row = match reps.iter().position(|r| r.aggregate_mb_per_s.is_none()) {
            Some(i) => reps.swap_remove(i),
            None => {
                reps.sort_by(|a, b| {
                    let key = |r: &ScaleRun| r.aggregate_mb_per_s.unwrap_or(0.0);
                    key(a).total_cmp(&key(b))
                });
                let mid = reps.len().saturating_sub(1) / 2;
                reps.swap_remove(mid)
            }
        };
        // A row without a figure shows none (not the spread of the repetitions before the
        // one that failed).
        row.samples = if row.aggregate_mb_per_s.is_some() {
            samples
        } else {
            Vec::new()
        };
        eprintln!(
            "  {:<34} {}",
            row.label,
            row.aggregate_mb_per_s.map_or_else(
                || row.note.clone().unwrap_or_default(),
                |m| format!("{m:8.1} MB/s aggregate")
            )
        );
        out.push(row);
    }
    vm.shutdown(Duration::from_secs(60))?;
    Ok(out)
}

/// Runs the streams at once and reads each one's result line.
fn measure(vm: &mut Vm, label: &str, streams: &[Stream], bytes: u64) -> Result<ScaleRun> {
    let mut sh = String::new();
    for (i, s) in streams.iter().enumerate() {
        let _ = write!(
            sh,
            "{} >/tmp/scale.{i} 2>/dev/null & ",
            s.argv(bytes).join(" ")
        );
    }
    sh.push_str("wait");
    for i in 0..streams.len() {
        let _ = write!(sh, "; tail -n 1 /tmp/scale.{i}");
    }
    let out = vm.sh(&sh, Duration::from_secs(600))?;
    let reports: Vec<Result<ConsumerReport, String>> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
        .collect();
    let alike = streams
        .iter()
        .all(|s| s.is_capture() == streams[0].is_capture());
    Ok(summarise(label, streams.len(), alike, &reports))
}

/// A row from its streams' reports: no figure unless every stream reported ok; the
/// slowest-to-fastest ratio only for streams that are `alike`.
fn summarise(
    label: &str,
    streams: usize,
    alike: bool,
    reports: &[Result<ConsumerReport, String>],
) -> ScaleRun {
    let mut row = ScaleRun {
        label: label.to_owned(),
        streams,
        aggregate_mb_per_s: None,
        per_stream_mb_per_s: Vec::new(),
        fairness: None,
        cpu_s_per_gib: None,
        samples: Vec::new(),
        note: None,
    };
    let ok: Vec<&ConsumerReport> = reports
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|r| r.ok && r.seconds > 0.0)
        .collect();
    if reports.len() != streams || ok.len() != streams {
        row.note = Some(format!(
            "{} of {streams} stream(s) reported ok{}",
            ok.len(),
            reports
                .iter()
                .find_map(|r| match r {
                    Err(e) => Some(format!(": {e}")),
                    Ok(r) if !r.ok => r
                        .error
                        .as_ref()
                        .or(r.fatal.as_ref())
                        .map(|e| format!(": {e}")),
                    Ok(_) => None,
                })
                .unwrap_or_default()
        ));
        return row;
    }
    let total: u64 = ok.iter().map(|r| r.bytes).sum();
    let longest = ok.iter().map(|r| r.seconds).fold(0.0, f64::max);
    row.aggregate_mb_per_s = Some(total as f64 / longest / 1e6);
    row.per_stream_mb_per_s = ok.iter().map(|r| r.mb_per_s).collect();
    let (lo, hi) = row
        .per_stream_mb_per_s
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    row.fairness = (alike && hi > 0.0).then(|| lo / hi);
    let cpu: Option<f64> = ok.iter().map(|r| Some(r.cpu_user_s? + r.cpu_sys_s?)).sum();
    row.cpu_s_per_gib = cpu.filter(|_| total > 0).map(|c| c * GIB / total as f64);
    row
}

/// The scaling table (part of the report's text).
pub fn table(rows: &[ScaleRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n| streams at once | aggregate MB/s (median) | min-max | per stream MB/s | slowest / fastest | CPU s/GiB |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            r.aggregate_mb_per_s.map_or_else(
                || r.note.clone().unwrap_or("-".into()),
                |m| format!("{m:.1}")
            ),
            spread(&r.samples).map_or("-".into(), |(lo, hi)| format!("{lo:.0}-{hi:.0}")),
            r.per_stream_mb_per_s
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.fairness.map_or("-".into(), |f| format!("{f:.2}")),
            r.cpu_s_per_gib.map_or("-".into(), |c| format!("{c:.2}")),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(bytes: u64, seconds: f64, cpu: Option<f64>) -> Result<ConsumerReport, String> {
        Ok(ConsumerReport {
            ok: true,
            cpu_user_s: cpu,
            cpu_sys_s: cpu.map(|_| 0.0),
            ..ConsumerReport::moved(bytes, seconds)
        })
    }

    #[test]
    fn a_row_adds_the_streams_over_the_longest_and_says_who_starved() {
        let r = summarise(
            "capture x2",
            2,
            true,
            &[
                report(100_000_000, 1.0, Some(0.5)),
                report(100_000_000, 4.0, Some(0.5)),
            ],
        );
        assert_eq!(r.aggregate_mb_per_s, Some(50.0));
        assert_eq!(r.per_stream_mb_per_s, [100.0, 25.0]);
        assert_eq!(r.fairness, Some(0.25));
        assert!((r.cpu_s_per_gib.unwrap() - GIB / 200_000_000.0).abs() < 1e-9);
        // Playback reports no CPU: none for the row rather than a part.
        let p = summarise(
            "p",
            2,
            true,
            &[report(1, 1.0, None), report(1, 1.0, Some(1.0))],
        );
        // A capture beside a playback: no fairness between them.
        let mixed = summarise("m", 2, false, &[report(4, 1.0, None), report(1, 1.0, None)]);
        assert_eq!(mixed.fairness, None);
        assert_eq!(mixed.aggregate_mb_per_s, Some(5e-6));
        assert_eq!(p.cpu_s_per_gib, None);
        // A stream that failed or never reported leaves the row without a figure.
        let mut bad = report(1, 1.0, None).unwrap();
        bad.ok = false;
        let f = summarise("x", 2, true, &[report(1, 1.0, None), Ok(bad)]);
        assert!(f.aggregate_mb_per_s.is_none() && f.note.unwrap().contains("1 of 2"));
        let g = summarise("x", 2, true, &[report(1, 1.0, None)]);
        assert!(g.aggregate_mb_per_s.is_none());
        let h = summarise("x", 1, true, &[Err("not json".into())]);
        assert!(h.note.unwrap().contains("not json"));
        // A stream that failed says why.
        let mut why = report(1, 1.0, None).unwrap();
        why.ok = false;
        why.fatal = Some("read: EIO".into());
        let w = summarise("x", 1, true, &[Ok(why)]);
        assert!(w.note.unwrap().contains("read: EIO"));
    }

    #[test]
    fn every_stream_is_a_command_line_the_tool_takes() {
        for (_, streams) in rows() {
            for s in streams {
                let argv = s.argv(1 << 20);
                let ok = match s {
                    Stream::Capture(_) => CaptureArgs::parse(argv[1..].to_vec()).is_ok(),
                    Stream::Playback(_) => PlaybackArgs::parse(argv[1..].to_vec()).is_ok(),
                };
                assert!(ok, "{argv:?}");
            }
        }
    }
}

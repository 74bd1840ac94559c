//! The report: the table, the plot, and the generated part of docs/performance.md.

use super::*;

/// The human table (also what goes into docs/performance.md).
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} | accelerator {} | kernel {} | {} | {} per run\n",
        r.date,
        r.accel,
        r.kernel,
        r.machine,
        human(r.bytes)
    );
    let _ = writeln!(
        s,
        "| run | MB/s (median) | min-max | CPU s/GiB | IRQs/GiB | blocks/IRQ | reg accesses/GiB |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    for run in &r.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            run.label,
            run.mb_per_s.map_or_else(
                || run.note.clone().unwrap_or("-".into()),
                |m| format!("{m:.1}")
            ),
            spread(&run.samples).map_or("-".into(), |(lo, hi)| format!("{lo:.0}-{hi:.0}")),
            f(run.cpu_s_per_gib, 2),
            f(run.irqs_per_gib, 0),
            f(run.blocks_per_irq, 1),
            f(run.reg_accesses_per_gib, 1)
        );
    }
    if !r.model.is_empty() {
        let _ = writeln!(s, "\n| model fill (host, no VM) | memset GB/s | memcpy GB/s | engine GB/s | engine / memset |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for m in &r.model {
            let _ = writeln!(
                s,
                "| {} KiB blocks | {:.2} | {:.2} | {:.2} | {:.0}% |",
                m.block / 1024,
                m.memset_gbps,
                m.memcpy_gbps,
                m.engine_gbps,
                if m.memset_gbps > 0.0 {
                    100.0 * m.engine_gbps / m.memset_gbps
                } else {
                    0.0
                }
            );
        }
    }
    if !r.scaling.is_empty() {
        s.push_str(&scaling::table(&r.scaling));
    }
    let _ = writeln!(s, "\n| target | ratio | met |");
    let _ = writeln!(s, "|---|---:|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            t["target"].as_str().unwrap_or(""),
            t["ratio"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.2}")),
            match t["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            }
        );
    }
    s
}

/// Throughput against pipe size, one line per source (the card and its /dev/zero peer),
/// with the modes that have no pipe as horizontal references, as SVG.
pub fn plot(r: &Report, out: &Path) -> Result<()> {
    let pipe_sweep = |src: &str| -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = r
            .runs
            .iter()
            .filter(|x| x.source == src && x.mode == "splice" && x.block.is_none() && !x.bar2)
            .filter_map(|x| Some((x.pipe_size? as f64 / 1024.0, x.mb_per_s?)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts.dedup_by(|a, b| a.0 == b.0);
        pts
    };
    let refs: Vec<(String, f64)> = ["acq0 read", "acq0 mmap", "zero read"]
        .iter()
        .filter_map(|l| Some((format!("{l} (no pipe)"), find(&r.runs, l)?.mb_per_s?)))
        .collect();
    sweep(
        r,
        out,
        PLOTS[0].1,
        "pipe size (KiB)",
        &[
            ("splice /dev/acq0", pipe_sweep("acq0")),
            ("splice /dev/zero (peer)", pipe_sweep("zero")),
        ],
        &refs,
    )
}

/// The plots of one report, each a sweep: `(file name, caption)` in order, the first the
/// pipe-size sweep ([`plot`]).
pub const PLOTS: [(&str, &str); 4] = [
    ("bench.svg", "splice throughput against pipe size"),
    (
        "bench-block.svg",
        "splice throughput against DMA block size",
    ),
    (
        "bench-irq.svg",
        "read throughput against interrupt moderation",
    ),
    (
        "bench-scaling.svg",
        "aggregate throughput against streams at once",
    ),
];

/// Writes every plot of [`PLOTS`] into `dir`.
pub fn plots(r: &Report, dir: &Path) -> Result<()> {
    plot(r, &dir.join(PLOTS[0].0))?;
    let runs = |prefix: &str, key: fn(&Run) -> Option<u64>| -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = r
            .runs
            .iter()
            .filter(|x| x.label.starts_with(prefix))
            .filter_map(|x| Some((key(x)? as f64, x.mb_per_s?)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts
    };
    sweep(
        r,
        &dir.join(PLOTS[1].0),
        PLOTS[1].1,
        "block size (bytes)",
        &[(
            "splice /dev/acq0, 1 MiB pipe",
            runs("acq0 splice pipe=1M block=", |x| x.block),
        )],
        &[],
    )?;
    sweep(
        r,
        &dir.join(PLOTS[2].0),
        PLOTS[2].1,
        "completions per interrupt (irq_count)",
        &[(
            "read /dev/acq0",
            runs("acq0 read irq_count=", |x| x.irq_count),
        )],
        &[],
    )?;
    let scale = |prefix: &str| -> Vec<(f64, f64)> {
        r.scaling
            .iter()
            .filter(|x| x.label.starts_with(prefix))
            .filter_map(|x| Some((x.streams as f64, x.aggregate_mb_per_s?)))
            .collect()
    };
    sweep(
        r,
        &dir.join(PLOTS[3].0),
        PLOTS[3].1,
        "cards streaming at once",
        &[
            ("capture (read), one per card", scale("capture x")),
            ("playback (write), one per card", scale("playback x")),
        ],
        &[],
    )
}

/// One sweep as SVG: MB/s against a parameter on a log scale, a line per series, and
/// `refs` (figures without the parameter) as horizontal lines.
fn sweep(
    r: &Report,
    out: &Path,
    caption: &str,
    x_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    refs: &[(String, f64)],
) -> Result<()> {
    use plotters::prelude::*;
    let xs = || series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let (xmin, xmax) = xs().fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let (xmin, xmax) = if xmin.is_finite() && xmax > 0.0 {
        (xmin / 1.5, xmax * 1.5)
    } else {
        (0.5, 2.0)
    };
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .chain(refs.iter().map(|r| r.1))
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("plot: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{caption} ({}, {})", r.accel, r.date),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("MB/s")
        .draw()
        .map_err(e)?;
    let colours = [
        RGBColor(200, 40, 40),
        RGBColor(40, 80, 200),
        RGBColor(30, 150, 60),
    ];
    for ((name, pts), color) in series.iter().zip(colours.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(e)?;
    }
    let ref_colours = [BLACK, RGBColor(30, 150, 60), RGBColor(120, 120, 120)];
    for ((label, m), color) in refs.iter().zip(ref_colours.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                vec![(xmin, *m), (xmax, *m)],
                color.stroke_width(1),
            ))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// The name a plot of [`PLOTS`] has in docs/ (`bench.svg` -> `performance.svg`,
/// `bench-block.svg` -> `performance-block.svg`).
pub fn doc_plot_name(file: &str) -> String {
    file.replacen("bench", "performance", 1)
}

/// Rewrites the part of `doc` between the bench markers.
pub fn update_doc(doc: &Path, table: &str) -> Result<()> {
    let text = fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} ... {END} markers", doc.display());
    };
    let new = format!(
        "{}{BEGIN}\n\n{table}\n{}\n{}",
        &text[..b],
        PLOTS
            .iter()
            .map(|(file, caption)| format!("![{caption}]({})\n", doc_plot_name(file)))
            .collect::<String>(),
        &text[e..]
    );
    fs::write(doc, new)?;
    Ok(())
}

pub(super) fn human(b: u64) -> String {
    crate::scenario::format::Size(b).to_string()
}

pub(super) fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub(super) fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {n} host CPUs")
}

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

/// Throughput against pipe size, one line per source, as SVG.
pub fn plot(r: &Report, out: &Path) -> Result<()> {
    use plotters::prelude::*;
    /// (source, colour, (pipe KiB, MB/s) points)
    type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);
    let series: Vec<Series> = ["acq0", "zero"]
        .iter()
        .zip([RGBColor(200, 40, 40), RGBColor(40, 80, 200)])
        .map(|(src, color)| {
            let mut pts: Vec<(f64, f64)> = r
                .runs
                .iter()
                .filter(|x| x.source == *src && x.mode == "splice" && x.block.is_none() && !x.bar2)
                .filter_map(|x| Some((x.pipe_size? as f64 / 1024.0, x.mb_per_s?)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts.dedup_by(|a, b| a.0 == b.0);
            (*src, color, pts)
        })
        .collect();
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .chain(r.runs.iter().filter_map(|x| x.mb_per_s))
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("plot: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("splice throughput vs pipe size ({}, {})", r.accel, r.date),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((48f64..3072f64).log_scale(), 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("pipe size (KiB)")
        .y_desc("MB/s")
        .draw()
        .map_err(e)?;
    for (src, color, pts) in &series {
        let name = if *src == "acq0" {
            "splice /dev/acq0"
        } else {
            "splice /dev/zero (peer)"
        };
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(e)?;
    }
    // Non-splice modes have no pipe: horizontal references.
    for (label, color) in [
        ("acq0 read", BLACK),
        ("acq0 mmap", RGBColor(30, 150, 60)),
        ("zero read", RGBColor(120, 120, 120)),
    ] {
        if let Some(m) = find(&r.runs, label).and_then(|x| x.mb_per_s) {
            chart
                .draw_series(LineSeries::new(
                    vec![(48.0, m), (3072.0, m)],
                    color.stroke_width(1),
                ))
                .map_err(e)?
                .label(format!("{label} (no pipe)"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
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

/// Rewrites the part of `doc` between the bench markers.
pub fn update_doc(doc: &Path, table: &str) -> Result<()> {
    let text = fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} ... {END} markers", doc.display());
    };
    let new = format!(
        "{}{BEGIN}\n\n{table}\n![splice throughput against pipe size](performance.svg)\n\n{}",
        &text[..b],
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

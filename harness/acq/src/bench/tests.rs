use super::*;

#[test]
fn model_bench_text_parses() {
    let text = "block 65536 B x 256 buffers (16384 KiB working set)\n  host memset            5.92 GB/s\n  host memcpy            5.51 GB/s\n  generate counter       5.83 GB/s   98.5% of memset\n  engine counter         1.79 GB/s   30.3% of memset   32.5% of memcpy\nblock 4096 B x 256 buffers\n  host memset 40.0 GB/s\n  engine counter 10.0 GB/s\n";
    let m = parse_model_bench(text);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].block, 65536);
    assert!((m[0].memset_gbps - 5.92).abs() < 1e-9);
    assert!((m[0].memcpy_gbps - 5.51).abs() < 1e-9);
    assert!((m[0].engine_gbps - 1.79).abs() < 1e-9);
    assert_eq!(m[1].block, 4096);
    assert!((m[1].engine_gbps - 10.0).abs() < 1e-9);
}

#[test]
fn repetitions_give_the_median_run_and_keep_every_figure() {
    let mk = |mbps: Option<f64>, note: Option<&str>| Run {
        label: "acq0 read".into(),
        source: String::new(),
        mode: String::new(),
        pipe_size: None,
        block: None,
        irq_count: None,
        bar2: false,
        mb_per_s: mbps,
        samples: mbps.into_iter().collect(),
        cpu_s_per_gib: mbps.map(|m| 1000.0 / m),
        irqs_per_gib: None,
        reg_accesses_per_gib: None,
        blocks_per_irq: None,
        blocks_per_reg_access: None,
        deltas: None,
        note: note.map(Into::into),
    };
    let r = median_run(vec![
        mk(Some(379.0), None),
        mk(Some(550.0), None),
        mk(Some(500.0), None),
    ]);
    assert_eq!(r.mb_per_s, Some(500.0));
    assert_eq!(r.cpu_s_per_gib, Some(2.0), "the median run's own figures");
    assert_eq!(r.samples, [379.0, 550.0, 500.0]);
    assert_eq!(spread(&r.samples), Some((379.0, 550.0)));
    let even = median_run(vec![mk(Some(4.0), None), mk(Some(2.0), None)]);
    assert_eq!(even.mb_per_s, Some(2.0));
    let failed = median_run(vec![mk(Some(4.0), None), mk(None, Some("failed"))]);
    assert_eq!(failed.mb_per_s, None);
    assert_eq!(failed.note.as_deref(), Some("failed"));
    assert!(failed.samples.is_empty(), "a failed row shows no spread");
    assert_eq!(spread(&[1.0]), None);
}

#[test]
fn targets_report_ratios_and_unmeasured() {
    let mk = |label: &str, mbps: Option<f64>| Run {
        label: label.into(),
        source: String::new(),
        mode: String::new(),
        pipe_size: None,
        block: None,
        irq_count: None,
        bar2: false,
        mb_per_s: mbps,
        samples: mbps.into_iter().collect(),
        cpu_s_per_gib: None,
        irqs_per_gib: None,
        reg_accesses_per_gib: None,
        blocks_per_irq: Some(32.0),
        blocks_per_reg_access: Some(1000.0),
        deltas: None,
        note: None,
    };
    let mut runs = vec![mk("acq0 read", Some(50.0)), mk("zero read", Some(200.0))];
    runs[0].deltas = Some((1000.0, 50.0, 40.0));
    let mut long = mk("acq0 read x2", Some(50.0));
    long.deltas = Some((2000.0, 100.0, 40.0));
    runs.push(long);
    let t = targets(&runs, &[], &[]);
    let read = t
        .iter()
        .find(|v| v["target"].as_str().unwrap().starts_with("read"))
        .unwrap();
    assert_eq!(read["ratio"].as_f64(), Some(0.25));
    assert_eq!(read["met"], false);
    let splice = &t[0];
    assert!(splice["met"].is_null());
    let irq = t
        .iter()
        .find(|v| v["target"].as_str().unwrap().contains("interrupt"))
        .unwrap();
    assert_eq!(irq["met"], true);
}

#[test]
fn every_kind_of_row_is_a_command_line_the_tool_takes() {
    use acq_wire::consumer::{CaptureArgs, PlaybackArgs, ShareArgs, ShareSource};
    let mut bar2 = Spec::acq("read", None);
    bar2.bar2 = true;
    let mut disk = Spec::acq("splice", Some(1 << 20));
    disk.sink = Some(RAW_DISK);
    disk.direct = true;
    disk.irq_count = Some(16);
    let mut small = Spec::acq("splice", Some(1 << 20));
    small.block = Some(1024);
    for s in [
        bar2,
        disk,
        small,
        Spec::acq("mmap", None),
        Spec::zero("splice", Some(64 << 10)),
        Spec::file("read", None),
    ] {
        let argv = specs::argv(1 << 20, &s);
        assert_eq!(argv[0], "acq-stream");
        CaptureArgs::parse(argv[1..].to_vec()).unwrap_or_else(|e| panic!("{}: {e}", s.label()));
    }
    for mode in ["write", "splice", "vmsplice"] {
        let argv = specs::argv(1 << 20, &Spec::play(mode));
        PlaybackArgs::parse(argv[1..].to_vec()).unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
    for (mode, copy) in [("dma-buf", false), ("read+write", true)] {
        let argv = specs::argv(1 << 20, &Spec::share(mode));
        assert_eq!(argv[0], "acq-share");
        let a = ShareArgs::parse(argv[1..].to_vec()).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(a.bytes, 1 << 20);
        assert_eq!(matches!(a.source, ShareSource::Copy { .. }), copy, "{mode}");
    }
    // The guest memcpy row names its byte count (acq-ctl memcpy refuses a line without one).
    let memcpy = Spec {
        source: MEMCPY,
        ..Spec::acq("memcpy", None)
    };
    let argv = specs::argv(1 << 20, &memcpy);
    assert!(
        argv.windows(2).any(|w| w == ["--bytes", "1048576"]),
        "{argv:?}"
    );
}

#[test]
fn every_sweep_gets_its_plot_and_the_doc_shows_them_all() {
    let run = |label: &str, block: Option<u64>, irq: Option<u64>, mbps: f64| Run {
        label: label.into(),
        source: "acq0".into(),
        mode: "splice".into(),
        pipe_size: Some(1 << 20),
        block,
        irq_count: irq,
        bar2: false,
        mb_per_s: Some(mbps),
        samples: vec![mbps],
        cpu_s_per_gib: None,
        irqs_per_gib: None,
        reg_accesses_per_gib: None,
        blocks_per_irq: None,
        blocks_per_reg_access: None,
        deltas: None,
        note: None,
    };
    let scale = |label: &str, n: usize, mbps: f64| ScaleRun {
        label: label.into(),
        streams: n,
        aggregate_mb_per_s: Some(mbps),
        per_stream_mb_per_s: vec![mbps / n as f64; n],
        fairness: Some(1.0),
        cpu_s_per_gib: None,
        samples: vec![mbps],
        note: None,
    };
    let r = Report {
        date: "now".into(),
        accel: "tcg".into(),
        kernel: "bench".into(),
        machine: "here".into(),
        bytes: 1 << 20,
        runs: vec![
            run("acq0 splice pipe=1M block=1024", Some(1024), None, 100.0),
            run("acq0 splice pipe=1M block=4096", Some(4096), None, 400.0),
            run("acq0 read irq_count=1", None, Some(1), 300.0),
            run("acq0 read irq_count=64", None, Some(64), 320.0),
        ],
        model: Vec::new(),
        scaling: vec![scale("capture x1", 1, 300.0), scale("capture x4", 4, 500.0)],
        targets: Vec::new(),
    };
    let dir = std::env::temp_dir().join(format!("acq-plots-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    plots(&r, &dir).unwrap();
    for (file, _) in PLOTS {
        let svg = fs::read_to_string(dir.join(file)).unwrap();
        assert!(svg.contains("<svg"), "{file}");
    }
    let doc = dir.join("performance.md");
    fs::write(
        &doc,
        "intro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nrest\n",
    )
    .unwrap();
    update_doc(&doc, &table(&r)).unwrap();
    let text = fs::read_to_string(&doc).unwrap();
    for (file, caption) in PLOTS {
        assert!(
            text.contains(&format!("![{caption}]({})", doc_plot_name(file))),
            "{text}"
        );
    }
    assert!(
        text.contains("| capture x4 | 500.0 |") && !text.contains("old"),
        "{text}"
    );
    let _ = fs::remove_dir_all(&dir);
}

//! The runner's tests that need no VM: expectations, results, the timeline's bookkeeping.

use super::*;

#[test]
fn a_forced_dma_path_adds_to_what_the_scenario_asks() {
    let args = vec!["quiet".to_string()];
    assert_eq!(DmaPath::Viommu.apply(false, &args), (true, args.clone()));
    let (iommu, with) = DmaPath::Swiotlb.apply(true, &args);
    assert!(iommu, "swiotlb keeps a scenario's own IOMMU");
    assert_eq!(with, ["quiet", "swiotlb=force"]);
    // Not twice when the scenario asks for it already.
    assert_eq!(DmaPath::Swiotlb.apply(false, &with).1, with);
}

fn result_with(streams: Vec<Value>) -> ScenarioResult {
    ScenarioResult {
        name: "t".into(),
        file: "t.json".into(),
        passed: false,
        seconds: 0.0,
        accel: "tcg".into(),
        kernel: "test".into(),
        dma: None,
        memory_mib: 1024,
        guest_booted_by: None,
        error: None,
        checks: Vec::new(),
        streams,
        faults_fired: Vec::new(),
        counters: Vec::new(),
        disk_counters: Vec::new(),
        results: String::new(),
    }
}

#[test]
fn a_consumer_slower_than_its_card_is_named_as_the_cause() {
    // 50 MB/s card, read() with verification took 22 MB/s and saw 90 gaps.
    let c = outrun_note(0, 90, 50_000_000, 22e6).expect("a note");
    assert!(!c.ok);
    assert!(
        c.detail.contains("50.0 MB/s") && c.detail.contains("22.0 MB/s"),
        "{}",
        c.detail
    );
    assert!(outrun_note(0, 0, 50_000_000, 22e6).is_none(), "no gaps");
    assert!(outrun_note(0, 90, 0, 22e6).is_none(), "an unlimited card");
    assert!(outrun_note(0, 3, 50_000_000, 48e6).is_none(), "kept up");
}

fn expect(json: &str) -> Expect {
    serde_json::from_str(json).expect("valid expect")
}

fn check<'a>(res: &'a ScenarioResult, prefix: &str) -> &'a Check {
    res.checks
        .iter()
        .find(|c| c.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no check named {prefix}...: {:?}", res.checks))
}

#[test]
fn a_file_on_a_disk_is_verified_where_its_extents_lie() {
    // A 3-block file: file block 0 at disk block 5, file blocks 1-2 at disk block 1;
    // the stream starts at offset 4096 (the consumer's first segment).
    let (pattern, seed) = (1u32, 9u64);
    let mut disk = vec![0u8; 8 * 4096];
    let put = |disk: &mut Vec<u8>, at: usize, stream: u64, len: usize| {
        acq_hw::regs::pattern_fill(pattern, seed, stream, &mut disk[at..at + len]);
    };
    put(&mut disk, 5 * 4096, 4096, 4096);
    put(&mut disk, 4096, 8192, 8192);
    let dir = std::env::temp_dir().join(format!("acq-verify-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let store = dir.join("store.img");
    let result = acq_wire::consumer::ConsumerReport {
        bytes: 3 * 4096,
        extents: Some(vec![[0, 5 * 4096, 4096], [4096, 4096, 8192]]),
        segment_map: Some(vec![[0, 4096]]),
        config: Some(acq_wire::consumer::CardConfig {
            pattern,
            seed,
            ..Default::default()
        }),
        ..Default::default()
    };
    fs::write(&store, &disk).unwrap();
    let v = verify_file_on_disk(&result, &store).unwrap();
    assert_eq!((v.verified, v.mismatches), (3 * 4096, 0), "{v:?}");

    // One flipped bit in file block 2 (disk block 2) is found at its file offset.
    disk[2 * 4096 + 100] ^= 1;
    fs::write(&store, &disk).unwrap();
    let v = verify_file_on_disk(&result, &store).unwrap();
    assert_eq!(v.mismatches, 1, "{v:?}");
    assert_eq!(v.first_mismatch, Some(2 * 4096 + 100), "{v:?}");
    // Without extents there is nothing to verify: an error, not a pass.
    let bare = acq_wire::consumer::ConsumerReport {
        bytes: 1,
        ..Default::default()
    };
    assert!(verify_file_on_disk(&bare, &store).is_err());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn errors_at_checks_every_occurrence_against_the_range() {
    let ex =
        expect(r#"{"errors": {"EIO": 2}, "errors_at": {"EIO": {"min": "16M", "max": "20M"}}}"#);
    let stream = |offsets: &[u64]| {
        let events: Vec<Value> = offsets
            .iter()
            .map(|o| json!({"errno": "EIO", "offset": o, "bytes": o}))
            .collect();
        json!({"errno": {"EIO": offsets.len()}, "errno_events": events, "bytes": 1})
    };

    let mut inside = result_with(vec![stream(&[17 << 20, 19 << 20])]);
    check_expectations(&ex, &mut inside, "");
    assert!(check(&inside, "EIO at stream offset").ok);
    assert!(check(&inside, "EIO seen 2").ok);

    // One occurrence too early is enough to fail.
    let mut early = result_with(vec![stream(&[1 << 20, 19 << 20])]);
    check_expectations(&ex, &mut early, "");
    let c = check(&early, "EIO at stream offset");
    assert!(!c.ok);
    assert!(c.detail.contains("1048576"), "{}", c.detail);

    // Never seen: the placement check fails as well as the count.
    let mut none = result_with(vec![stream(&[])]);
    check_expectations(&ex, &mut none, "");
    assert_eq!(check(&none, "EIO at stream offset").detail, "never seen");
    assert!(!check(&none, "EIO seen 2").ok);
}

fn opts(reuse: bool) -> RunOptions {
    RunOptions {
        reuse_guests: reuse,
        ..RunOptions::new(PathBuf::from("results"))
    }
}

fn scenario(json: &str) -> Scenario {
    crate::scenario::parse(json, "t.json").expect("a valid scenario")
}

#[test]
fn scenarios_share_a_guest_only_when_they_need_the_same_one() {
    let o = opts(true);
    let plain = r#"{"steps": [{"stream": {"mode": "read", "bytes": "1M"}}]}"#;
    let shape = guest_shape(&scenario(plain), &o).expect("a plain stream shares");
    // Another workload, other device settings, other faults: the same guest.
    let other = scenario(
        r#"{"cards": [{"device": {"pattern": "prbs", "seed": 3}}],
            "steps": [{"stream": {"mode": "splice", "bytes": "2M"}}],
            "faults": [{"at": {"bytes": "1M"}, "inject": {"dma_error": {"count": 1}}}]}"#,
    );
    assert_eq!(guest_shape(&other, &o).as_deref(), Some(shape.as_str()));
    // What the VM or a card's model is made with: another guest.
    for differs in [
        r#"{"vm": {"cpus": 1}, "steps": [{"stream": {"mode": "read", "bytes": "1M"}}]}"#,
        r#"{"vm": {"kernel_args": ["init_on_free=1"]}, "steps": [{"stream": {"mode": "read", "bytes": "1M"}}]}"#,
        r#"{"cards": [{"msix_vectors": 0}], "steps": [{"stream": {"mode": "read", "bytes": "1M"}}]}"#,
        r#"{"cards": [{}, {}], "steps": [{"stream": {"mode": "read", "bytes": "1M"}}]}"#,
    ] {
        let s = guest_shape(&scenario(differs), &o);
        assert!(
            s.is_some() && s.as_deref() != Some(shape.as_str()),
            "{differs}"
        );
    }
    // A run's overrides are part of the shape: --memory gives every scenario one.
    let mut o512 = opts(true);
    o512.memory_mib = Some(512);
    let a = guest_shape(&scenario(plain), &o512);
    let b = guest_shape(
        &scenario(
            r#"{"vm": {"memory_mib": 2048}, "steps": [{"stream": {"mode": "read", "bytes": "1M"}}]}"#,
        ),
        &o512,
    );
    assert_eq!(a, b);
    assert_ne!(a.as_deref(), Some(shape.as_str()));
    // --dma and --kernel-flavor make another guest too.
    let mut viommu = opts(true);
    viommu.dma = Some(DmaPath::Viommu);
    assert_ne!(
        guest_shape(&scenario(plain), &viommu).as_deref(),
        Some(shape.as_str())
    );
    let mut debug = opts(true);
    debug.kernel_flavor = Some(crate::paths::KernelFlavor::Debug);
    assert_ne!(
        guest_shape(&scenario(plain), &debug).as_deref(),
        Some(shape.as_str())
    );
    // A guest of its own: no card, the driver loaded by the scenario, capture disks, a
    // card unplugged, config space rewritten, stray DMA into the guest's memory, BAR2
    // mode (BAR2 keeps its contents across a reset).
    for alone in [
        r#"{"cards": [], "load_driver": false, "steps": [{"exec": {"cmd": "true"}}]}"#,
        r#"{"load_driver": false, "steps": [{"exec": {"cmd": "true"}}]}"#,
        r#"{"cards": [{"device": {"transfer": "bar2", "ring_log2": 7}}], "steps": [{"stream": {"mode": "read", "bytes": "1M"}}]}"#,
        r#"{"steps": [{"config": {"device": {"transfer": "bar2", "ring_log2": 7}}}, {"stream": {"mode": "read", "bytes": "1M"}}]}"#,
        r#"{"disks": [{"size": "8M"}], "steps": [{"stream": {"mode": "read", "bytes": "1M", "sink": {"disk": 0}}}]}"#,
        r#"{"cards": [{"msix_vectors": 0}], "steps": [{"stream": {"mode": "read", "bytes": "4M"}}],
            "faults": [{"at": {"bytes": "1M"}, "inject": "surprise_removal"}], "expect": {"errors_allowed": ["ENODEV"]}}"#,
        r#"{"steps": [{"stream": {"mode": "read", "bytes": "4M"}}],
            "faults": [{"at": {"bytes": "1M"}, "inject": {"config_change": {"kind": "bar_size"}}}]}"#,
        r#"{"steps": [{"stream": {"mode": "read", "bytes": "4M"}}],
            "faults": [{"at": {"bytes": "1M"}, "inject": {"stray_dma": {"target": "desc_ring"}}}]}"#,
    ] {
        match crate::scenario::parse(alone, "t.json") {
            Ok(sc) => assert_eq!(guest_shape(&sc, &o), None, "{alone}"),
            Err(e) => panic!("{alone}: {e}"),
        }
    }
}

#[test]
fn batches_share_guests_by_shape_and_keep_every_job_busy() {
    let a = Some("a".to_string());
    let b = Some("b".to_string());
    // Without --reuse-guests: one scenario a batch, in order.
    assert_eq!(
        batches(&[a.clone(), a.clone(), None], 2, false),
        [vec![0], vec![1], vec![2]]
    );
    // The debug set's make-up: 13 of one shape, 2 of another, 9 of their own, 2 jobs.
    let mut shapes = vec![a.clone(); 13];
    shapes.extend([b.clone(), b.clone()]);
    shapes.extend(vec![None; 9]);
    let out = batches(&shapes, 2, true);
    let lens: Vec<usize> = out.iter().map(Vec::len).collect();
    assert_eq!(lens, [7, 6, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert_eq!(out[0], (0..7).collect::<Vec<_>>(), "in the run's order");
    assert_eq!(out[2], [13, 14]);
    // Every scenario exactly once.
    let mut all: Vec<usize> = out.concat();
    all.sort_unstable();
    assert_eq!(all, (0..shapes.len()).collect::<Vec<_>>());
    // Scenarios of one shape apart in the list still share; a share is never above the
    // run's length over the jobs.
    let out = batches(&[a.clone(), None, a.clone(), a.clone(), a], 4, true);
    assert_eq!(out, [vec![0, 2], vec![3, 4], vec![1]]);
}

#[test]
fn a_scenarios_card_statistics_count_from_its_start() {
    let base = json!({"sessions": 3, "error_completions": 2, "status": 5, "resets": 4});
    let now = json!({"sessions": 4, "error_completions": 2, "status": 1, "resets": 6,
                     "pb_first_bad_offset": null, "faults_pending": {"hang": false}});
    let got = since(now, Some(&base));
    // Statistics from the start, registers and flags as they are now.
    assert_eq!(got["sessions"], 1);
    assert_eq!(got["error_completions"], 0);
    assert_eq!(got["resets"], 2);
    assert_eq!(got["status"], 1);
    assert_eq!(got["faults_pending"], json!({"hang": false}));
    // No baseline (the model could not be read at the start): as read.
    assert_eq!(since(json!({"sessions": 4}), None)["sessions"], 4);
}

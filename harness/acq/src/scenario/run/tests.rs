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

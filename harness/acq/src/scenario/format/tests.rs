//! The scenario format's tests: parsing, refusals with their locations, the schema.

#[test]
fn files_that_are_not_scenarios_are_refused_with_a_reason() {
    let dir = std::env::temp_dir().join(format!("acq-load-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("x.json")).unwrap();
    let fifo = dir.join("fifo.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A FIFO nobody writes: reading it would block for ever.
    let e = super::load(&fifo).unwrap_err();
    assert!(e.reason.contains("not a regular file"), "{e}");
    let e = super::load(&dir.join("x.json")).unwrap_err();
    assert!(e.reason.contains("a directory"), "{e}");
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; (super::MAX_SCENARIO_BYTES + 1) as usize]).unwrap();
    let e = super::load(&big).unwrap_err();
    assert!(e.reason.contains("larger than a scenario"), "{e}");
    // A real file whose fault can never fire, and one with an array for a step.
    let never = dir.join("never.json");
    std::fs::write(
        &never,
        r#"{"steps": [{"stream": {"bytes": "64M"}}],
            "faults": [{"at": {"bytes": "1G"}, "inject": "hang"}]}"#,
    )
    .unwrap();
    let e = super::load(&never).unwrap_err();
    assert!(e.to_string().contains("never.json"), "{e}");
    assert!(e.reason.contains("never reached"), "{e}");
    let array = dir.join("array.json");
    std::fs::write(&array, r#"{"steps": [[1]]}"#).unwrap();
    let e = super::load(&array).unwrap_err();
    assert!(e.reason.contains("a step is one object"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bom_an_array_and_an_empty_file_get_a_clear_message() {
    let e = super::parse("\u{feff}{\"steps\": []}", "f").unwrap_err();
    assert!(e.reason.contains("byte order mark"), "{e}");
    let e = super::parse("[]", "f").unwrap_err();
    assert!(e.reason.contains("one JSON object"), "{e}");
    let e = super::parse("  \n", "f").unwrap_err();
    assert!(e.reason.contains("empty"), "{e}");
}

use super::*;

const MINIMAL: &str = r#"{"steps": [{"stream": {"bytes": "16M"}}]}"#;

#[test]
fn the_kernel_flavor_is_chosen_by_name() {
    let sc = parse(
        r#"{"steps": [{"sleep_ms": 1}], "vm": {"kernel": "debug"}}"#,
        "t.json",
    )
    .unwrap();
    assert_eq!(sc.vm.kernel, KernelFlavor::Debug);
    let e = parse(
        r#"{"steps": [{"sleep_ms": 1}], "vm": {"kernel": "kasan"}}"#,
        "t.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("kasan") && e.contains("debug") && e.contains("bench"),
        "{e}"
    );
}

#[test]
fn minimal_scenario_gets_defaults() {
    let sc = parse(MINIMAL, "t.json").unwrap();
    assert_eq!(sc.cards.len(), 1);
    assert_eq!(sc.vm.cpus, 2);
    assert_eq!(sc.vm.kernel, KernelFlavor::Test);
    assert!(sc.load_driver);
    let Step::Stream(st) = &sc.steps[0] else {
        panic!()
    };
    assert_eq!(st.bytes, Size(16 << 20));
    assert_eq!(st.mode, Mode::Read);
    assert!(st.verify);
    assert_eq!(
        sc.expect.mismatches,
        CountRange {
            min: 0,
            max: Some(0)
        }
    );
}

#[test]
fn full_scenario_parses() {
    let text = r#"{
        "name": "dma-error", "timeout_s": 120,
        "vm": {"cpus": 1, "memory_mib": 512, "accel": "tcg"},
        "cards": [{"bar2_size": "2M", "device": {"block_size": "2K", "pattern": "prbs", "seed": 7, "irq_count": 16}}],
        "steps": [{"stream": {"mode": "splice", "bytes": 1073741824, "pipe_size": "1M"}},
                  {"exec": {"cmd": "true"}}, {"sleep_ms": 10},
                  {"config": {"device": {"rate": "1M"}}}, {"reset": {}},
                  {"stream": {"bytes": "8M", "restart_at": "4M"}}],
        "faults": [{"at": {"bytes": "256M"}, "inject": {"dma_error": {"count": 1}}},
                   {"card": 0, "at": {"time_ms": 100}, "inject": "hang"}],
        "expect": {"errors": {"EIO": 1}, "recovered": true,
                   "counters": {"card0.errors": {"min": 1, "max": 1}}}
    }"#;
    let sc = parse(text, "t.json").unwrap();
    assert_eq!(sc.faults[0].at, FaultAt::Bytes(Size(256 << 20)));
    assert_eq!(
        sc.faults[0].inject,
        Fault::Card(CardFault::DmaError { count: 1 })
    );
    assert_eq!(sc.faults[1].inject, Fault::Card(CardFault::Hang));
    assert_eq!(sc.vm.accel, AccelChoice::Tcg);
    assert_eq!(sc.expect.errors["EIO"], 1);
}

fn error_of(text: &str) -> String {
    parse(text, "bad.json").unwrap_err().to_string()
}

#[test]
fn a_card_the_model_or_the_driver_would_refuse_is_refused_by_the_check() {
    // Each passed `acq check` before and failed once the VM was up: the driver takes a
    // page at most per block, the model refuses a FIFO outside its range or smaller than
    // a block, and an MSI-X table that does not fit.
    for (card, field) in [
        (
            r#"{"device": {"block_size": "64K"}}"#,
            "cards[0].device.block_size",
        ),
        (r#"{"fifo_depth": "1K"}"#, "cards[0].fifo_depth"),
        (r#"{"fifo_depth": "65K"}"#, "cards[0].fifo_depth"),
        (
            r#"{"fifo_depth": "64K", "device": {"block_size": 4096}}"#,
            "",
        ),
        (r#"{"msix_vectors": 2}"#, "cards[0].msix_vectors"),
        (r#"{"msix_vectors": 300}"#, "cards[0].msix_vectors"),
    ] {
        let text = format!(r#"{{"cards": [{card}], "steps": [{{"sleep_ms": 1}}]}}"#);
        match (parse(&text, "t.json"), field) {
            (Ok(_), "") => {}
            (Err(e), f) if !f.is_empty() => assert_eq!(e.location, f, "{card}: {}", e.reason),
            (r, f) => panic!("{card}: {f:?} expected, got {r:?}"),
        }
    }
    // A `config` step's settings reach the driver as a card's do.
    let e =
        error_of(r#"{"cards": [{}], "steps": [{"config": {"device": {"block_size": "64K"}}}]}"#);
    assert!(e.contains("steps[0].config.device.block_size"), "{e}");
    // Without the driver (a VFIO userspace scenario) the card's own limit holds.
    assert!(parse(
        r#"{"load_driver": false, "cards": [{"device": {"block_size": "64K"}}], "steps": [{"sleep_ms": 1}]}"#,
        "t.json"
    )
    .is_ok());
}

#[test]
fn a_card_pattern_is_the_one_pattern_vocabulary() {
    use acq_hw::regs::pattern::{make, SINE};
    // `sine:4` was refused here while every tool took it.
    let sc = parse(
        r#"{"cards": [{"device": {"pattern": "sine:4"}}, {"device": {"pattern": 1}}],
            "steps": [{"stream": {"bytes": "4M"}}]}"#,
        "t.json",
    )
    .unwrap();
    let d = &sc.cards[0].device;
    assert_eq!(invoke::device_args(d).pattern, Some(make(SINE, 4)));
    assert_eq!(d.pattern.unwrap().to_string(), "sine:4");
    assert_eq!(sc.cards[1].device.pattern.unwrap().to_string(), "prbs");
    for bad in [r#""sine:17""#, r#""square""#, "99"] {
        let e = error_of(&format!(
            r#"{{"cards": [{{"device": {{"pattern": {bad}}}}}], "steps": [{{"sleep_ms": 1}}]}}"#
        ));
        assert!(e.contains("cards[0].device.pattern"), "{bad}: {e}");
    }
}

#[test]
fn errors_name_file_location_and_reason() {
    let e = error_of(r#"{"steps": [{"stream": {"bytes": "16M", "mdoe": "read"}}]}"#);
    assert!(e.starts_with("bad.json: steps[0].stream"), "{e}");
    assert!(e.contains("unknown field `mdoe`"), "{e}");

    let e = error_of(r#"{"steps": [{"stream": {"bytes": "16Q"}}]}"#);
    assert!(e.contains("steps[0].stream.bytes"), "{e}");
    assert!(e.contains("`16Q` is not a size"), "{e}");

    let e = error_of(r#"{"steps": [{"stream": {"card": 3, "bytes": 1}}]}"#);
    assert!(
        e.contains("steps[0].stream.card: card 3 does not exist"),
        "{e}"
    );

    let e = error_of(r#"{"steps": [], "vm": {"accel": "xen"}}"#);
    assert!(e.contains("vm.accel"), "{e}");

    let e = error_of(
        r#"{"steps": [{"sleep_ms": 1}], "vm": {"kernel_args": ["swiotlb=force", "a b"]}}"#,
    );
    assert!(
        e.contains("vm.kernel_args[1]") && e.contains("not one word"),
        "{e}"
    );

    let e = error_of(r#"{"steps": [{"sleep_ms": 1}], "expect": {"errors": {"EBOGUS": 1}}}"#);
    assert!(e.contains("unknown errno name `EBOGUS`"), "{e}");

    let e = error_of(
        r#"{"steps": [{"sleep_ms": 1}], "expect": {"errors_at": {"EBOGUS": {"min": 1}}}}"#,
    );
    assert!(e.contains("expect.errors_at.EBOGUS"), "{e}");
    let e = error_of(
        r#"{"steps": [{"sleep_ms": 1}], "expect": {"errors_at": {"EIO": {"min": "2M", "max": "1M"}}}}"#,
    );
    assert!(e.contains("max 1M is below min 2M"), "{e}");

    let e = error_of(
        r#"{"steps": [{"sleep_ms": 1}], "faults": [{"at": {"bytes": 1}, "inject": {"melt": {}}}]}"#,
    );
    assert!(e.contains("faults[0].inject"), "{e}");

    let e = error_of(r#"{"steps": [{"sleep_ms": 1}"#);
    assert!(e.contains("EOF"), "{e}");

    let e = error_of(r#"{"steps": [{"stream": {"bytes": 8, "pipe_size": "1M"}}]}"#);
    assert!(e.contains("only applies to mode splice"), "{e}");

    let e =
        error_of(r#"{"steps": [{"stream": {"mode": "splice", "bytes": "8M", "pause_at": "1M"}}]}"#);
    assert!(
        e.contains("steps[0].stream.pause_at") && e.contains("only applies to mode read"),
        "{e}"
    );
    let e = error_of(r#"{"steps": [{"stream": {"bytes": "8M", "pause_at": "8M"}}]}"#);
    assert!(e.contains("must be less than `bytes`"), "{e}");
    let e = error_of(
        r#"{"steps": [{"stream": {"bytes": "8M", "pause_at": "1M", "pause_ms": 60001}}]}"#,
    );
    assert!(
        e.contains("steps[0].stream.pause_ms") && e.contains("above 60000"),
        "{e}"
    );
}

#[test]
fn disks_sinks_and_disk_faults() {
    let text = r#"{
        "disks": [{"size": "64M"}],
        "steps": [{"stream": {"bytes": "32M", "sink": {"disk": 0}}}],
        "faults": [{"disk": 0, "at": {"bytes": "8M"}, "inject": {"disk_write_error": {"count": 2}}}],
        "expect": {"counters": {"disk0.bytes_verified": {"min": 1}}}
    }"#;
    let sc = parse(text, "t.json").unwrap();
    let Step::Stream(st) = &sc.steps[0] else {
        panic!()
    };
    assert_eq!(st.sink, Sink::Disk(0));
    assert!(sc.faults[0].inject.is_disk());
    assert_eq!(
        counter_key("disk0.bytes_verified"),
        Some((CounterOf::Disk, 0, "bytes_verified"))
    );
    let e = error_of(r#"{"steps": [{"stream": {"bytes": "32M", "sink": {"disk": 0}}}]}"#);
    assert!(e.contains("disk 0 does not exist"), "{e}");
    let e = error_of(
        r#"{"disks": [{"size": "16M"}], "steps": [{"stream": {"bytes": "32M", "sink": {"disk": 0}}}]}"#,
    );
    assert!(e.contains("do not fit on disk 0"), "{e}");
    let e = error_of(r#"{"steps": [{"sleep_ms": 1}], "expect": {"counters": {"disk0.x": {}}}}"#);
    assert!(e.contains("expect.counters.disk0.x"), "{e}");
}

#[test]
fn a_counter_the_card_or_disk_does_not_have_is_refused_by_the_check() {
    // Before, a typo here passed `acq check` and failed after the whole run with "no
    // such counter".
    for (key, other) in [
        ("card0.irq", "irqs_capture"),
        ("disk0.bytes_verfied", "bytes_verified"),
    ] {
        let e = error_of(&format!(
            r#"{{"disks": [{{"size": "16M"}}], "steps": [{{"sleep_ms": 1}}],
                "expect": {{"counters": {{"{key}": {{"min": 1}}}}}}}}"#
        ));
        assert!(e.contains(&format!("expect.counters.{key}")), "{e}");
        assert!(e.contains("no such counter") && e.contains(other), "{e}");
    }
    // The right names, a register among them, and any name of a stream's result line.
    assert!(parse(
        r#"{"disks": [{"size": "16M"}], "steps": [{"stream": {"bytes": "4M"}}],
            "expect": {"counters": {"card0.irqs": {"min": 1}, "card0.status": {"max": 99},
                                    "disk0.hole_bytes": {"max": 0},
                                    "stream0.anything": {"max": 0}}}}"#,
        "t.json"
    )
    .is_ok());
}

#[test]
fn disk_stream_options_and_sink_expectations() {
    let text = r#"{
        "disks": [{"size": "64M"}, {"size": "64M", "store": true, "verify": false}],
        "steps": [
            {"stream": {"bytes": "32M", "sink": {"disk": 0}, "direct": true,
                        "on_sink_error": "retry", "sink_retries": 2, "sink_retry_ms": 5}},
            {"stream": {"mode": "splice", "bytes": "8M", "sink": {"disk_file": 1}}}
        ],
        "expect": {"sink": {"errors": {"EIO": 1}, "stopped": true,
                            "lost_bytes": {"min": 4096, "max": 4096}}}
    }"#;
    let sc = parse(text, "t.json").unwrap();
    let Step::Stream(st) = &sc.steps[0] else {
        panic!()
    };
    assert!(st.direct);
    assert_eq!(st.on_sink_error, Some(SinkErrorPolicy::Retry));
    assert_eq!((st.sink_retries, st.sink_retry_ms), (Some(2), Some(5)));
    let Step::Stream(st) = &sc.steps[1] else {
        panic!()
    };
    assert_eq!(st.sink.disk(), Some(1));
    assert!(sc.expect.sink.stopped);
    assert_eq!(sc.expect.sink.errors.get("EIO"), Some(&1));
    assert!(sc.expect.sink.gap_bytes.contains(u64::MAX));
    assert!(sc.expect.sink.synced);
    // Defaults: nothing lost allowed.
    // Defaults, with or without an `expect.sink` object: nothing lost, synced.
    let d = Expect::default().sink;
    assert!(!d.lost_bytes.contains(1));
    assert!(d.errors.is_empty() && d.synced && !d.stopped);
    assert!(d.gap_bytes.contains(u64::MAX) && d.retries.contains(7));
    let sc = parse(
        r#"{"steps": [{"sleep_ms": 1}], "expect": {"sink": {}}}"#,
        "t.json",
    )
    .unwrap();
    assert_eq!(sc.expect.sink, d);

    let two = r#"{"disks": [{"size": "64M"}], "steps": [
        {"stream": {"bytes": "8M", "sink": {"disk": 0}}},
        {"stream": {"bytes": "8M", "sink": {"disk": 0}}}]}"#;
    assert!(
        error_of(two).contains("one stream per disk"),
        "{}",
        error_of(two)
    );
    let fs = r#"{"disks": [{"size": "64M"}],
        "steps": [{"stream": {"bytes": "8M", "sink": {"disk_file": 0}}}]}"#;
    assert!(error_of(fs).contains("\"store\": true"), "{}", error_of(fs));
    let raw = r#"{"disks": [{"size": "64M", "verify": false}],
        "steps": [{"stream": {"bytes": "8M", "sink": {"disk": 0}}}]}"#;
    assert!(
        error_of(raw).contains("verify must be true"),
        "{}",
        error_of(raw)
    );
    let retry = r#"{"disks": [{"size": "64M"}], "steps": [{"stream": {"mode": "splice",
        "bytes": "8M", "sink": {"disk": 0}, "on_sink_error": "retry"}}]}"#;
    assert!(
        error_of(retry).contains("needs \"direct\""),
        "{}",
        error_of(retry)
    );
    let nodisk = r#"{"steps": [{"stream": {"bytes": "8M", "direct": true}}]}"#;
    assert!(
        error_of(nodisk).contains("need a disk sink"),
        "{}",
        error_of(nodisk)
    );
    let bad = r#"{"disks": [{"size": "64M"}], "steps": [{"stream": {"bytes": "8M",
        "sink": {"disk": 0}, "on_sink_error": "ignore"}}]}"#;
    assert!(error_of(bad).contains("on_sink_error"), "{}", error_of(bad));
}

#[test]
fn arrays_where_a_step_or_a_fault_belongs_are_explained() {
    // Before: "steps[0] (line 1, column 11): expected value".
    let e = error_of(r#"{"steps": [[[[]]]]}"#);
    assert!(
        e.contains("steps[0]") && e.contains("a step is one object"),
        "{e}"
    );
    let e = error_of(
        r#"{"steps": [{"sleep_ms": 1}], "faults": [{"at": {"time_ms": 1}, "inject": [1]}]}"#,
    );
    assert!(
        e.contains("inject") && e.contains("a fault is its name"),
        "{e}"
    );
}

#[test]
fn a_bar2_card_whose_ring_does_not_fit_its_bar2_is_refused() {
    // Passed before, and the stream failed in the VM with EINVAL from SET_CONFIG
    // (acq explore's shrinker produced such a file: the default ring of 2^8 x 4 KiB).
    let e = error_of(
        r#"{"cards": [{"device": {"transfer": "bar2"}}],
            "steps": [{"stream": {"bytes": "1M"}}]}"#,
    );
    assert!(
        e.contains("cards[0].device.transfer") && e.contains("2^8 blocks"),
        "{e}"
    );
    for ok in [
        r#"{"cards": [{"device": {"transfer": "bar2", "ring_log2": 7}}], "steps": [{"stream": {"bytes": "1M"}}]}"#,
        r#"{"cards": [{"bar2_size": "2M", "device": {"transfer": "bar2"}}], "steps": [{"stream": {"bytes": "1M"}}]}"#,
    ] {
        assert!(parse(ok, "t.json").is_ok(), "{ok}");
    }
}

#[test]
fn vmsplice_options_belong_to_mode_vmsplice() {
    let play = |p: &str| format!(r#"{{"steps": [{{"play": {{"bytes": "1M", {p}}}}}]}}"#);
    let sc = parse(
        &play(r#""mode": "vmsplice", "buffers": 8, "gift": true"#),
        "t.json",
    )
    .expect("vmsplice with gift");
    let Step::Play(p) = &sc.steps[0] else {
        panic!("a play step")
    };
    assert!(p.mode == PlayMode::Vmsplice && p.gift && p.buffers == Some(8));
    for (bad, field, why) in [
        (
            r#""mode": "splice", "gift": true"#,
            "play.gift",
            "mode vmsplice",
        ),
        (r#""buffers": 2"#, "play.buffers", "mode vmsplice"),
        (
            r#""mode": "vmsplice", "buffers": 0"#,
            "play.buffers",
            "1 .. 1024",
        ),
        (
            r#""mode": "vmsplice", "gift": true, "reuse_before_release": true, "verify": false"#,
            "play.reuse_before_release",
            "nothing to reuse",
        ),
        (
            r#""mode": "vmsplice", "reuse_before_release": true"#,
            "play.verify",
            "set verify false",
        ),
    ] {
        let e = error_of(&play(bad));
        assert!(e.contains(field) && e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn a_fault_at_a_step_names_one_that_exists() {
    let steps = r#""steps": [{"exec": {"cmd": "rmmod acq"}}, {"exec": {"cmd": "insmod x"}}]"#;
    let sc = parse(
        &format!(r#"{{{steps}, "faults": [{{"at": {{"step": 1}}, "inject": "hang"}}]}}"#),
        "t.json",
    )
    .expect("a fault before step 1 of 2");
    assert_eq!(sc.faults[0].at, FaultAt::Step(1));
    let e = error_of(&format!(
        r#"{{{steps}, "faults": [{{"at": {{"step": 2}}, "inject": "hang"}}]}}"#
    ));
    assert!(
        e.contains("faults[0].at.step") && e.contains("step 2 does not exist"),
        "{e}"
    );
}

#[test]
fn a_fault_past_the_end_of_what_the_steps_move_is_refused() {
    // Passed before: a fault at 1G in a 64 MiB stream never fires.
    let e = error_of(
        r#"{"steps": [{"stream": {"bytes": "64M"}}],
            "faults": [{"at": {"bytes": "1G"}, "inject": "hang"}]}"#,
    );
    assert!(
        e.contains("faults[0].at.bytes") && e.contains("never reached"),
        "{e}"
    );
    assert!(e.contains("64M"), "{e}");
    // Two streams on the card add up; a playback fault counts the play steps.
    let ok = r#"{"steps": [{"stream": {"bytes": "64M"}}, {"stream": {"bytes": "64M"}}],
        "faults": [{"at": {"bytes": "96M"}, "inject": "hang"}]}"#;
    assert!(parse(ok, "t.json").is_ok());
    let e = error_of(
        r#"{"steps": [{"stream": {"bytes": "64M"}}, {"play": {"bytes": "1M"}}],
            "faults": [{"at": {"bytes": "8M"}, "channel": "playback", "inject": {"stall": {"ms": 1}}}]}"#,
    );
    assert!(e.contains("never reached") && e.contains("plays to"), "{e}");
    // An exec step may stream by itself: no bound.
    let ok = r#"{"steps": [{"exec": {"cmd": "dd if=/dev/acq0 of=/dev/null bs=1M count=2048"}}],
        "faults": [{"at": {"bytes": "1G"}, "inject": "hang"}]}"#;
    assert!(
        parse(ok, "t.json").is_ok(),
        "{:?}",
        parse(ok, "t.json").err()
    );
}

#[test]
fn play_steps_and_playback_faults() {
    let text = r#"{
        "steps": [{"play": {"bytes": "32M", "mode": "splice", "rate": "4M"}}],
        "faults": [{"at": {"bytes": "8M"}, "channel": "playback", "inject": {"stall": {"ms": 100}}}]
    }"#;
    let sc = parse(text, "t.json").unwrap();
    let Step::Play(p) = &sc.steps[0] else {
        panic!()
    };
    assert_eq!(p.mode, PlayMode::Splice);
    assert_eq!(p.source, PlaySource::Pattern);
    assert!(p.verify);
    assert_eq!(p.rate, Some(Size(4 << 20)));
    assert_eq!(sc.faults[0].channel, Channel::Playback);
    let e = error_of(
        r#"{"steps": [{"play": {"bytes": "1M"}}], "faults": [{"at": {"time_ms": 1}, "channel": "playback", "inject": "hang"}]}"#,
    );
    assert!(e.contains("no playback form"), "{e}");
    let e = error_of(r#"{"steps": [{"play": {"bytes": "1M", "source": "zero"}}]}"#);
    assert!(e.contains("verify false"), "{e}");
    let e = error_of(r#"{"steps": [{"play": {"bytes": "1M", "card": 3}}]}"#);
    assert!(e.contains("card 3 does not exist"), "{e}");
}

#[test]
fn surprise_removal_needs_a_card_without_msix() {
    let f = r#""faults": [{"at": {"time_ms": 1}, "inject": "surprise_removal"}]"#;
    let steps = r#""steps": [{"stream": {"bytes": "1M"}}]"#;
    let e = error_of(&format!("{{{steps}, {f}}}"));
    assert!(
        e.contains("faults[0].inject") && e.contains("\"msix_vectors\": 0"),
        "{e}"
    );
    let e = error_of(&format!(
        r#"{{"cards": [{{"msix_vectors": 8}}], {steps}, {f}}}"#
    ));
    assert!(e.contains("MSI-X"), "{e}");
    let ok = format!(r#"{{"cards": [{{"msix_vectors": 0}}], {steps}, {f}}}"#);
    assert!(parse(&ok, "t.json").is_ok());
}

#[test]
fn sizes() {
    assert_eq!(Size::parse("4K").unwrap(), Size(4096));
    assert_eq!(Size::parse("1G").unwrap(), Size(1 << 30));
    assert_eq!(Size::parse("12").unwrap(), Size(12));
    assert!(Size::parse("-1").is_err());
    assert!(Size::parse("99999999999999G").is_err());
    assert_eq!(Size(256 << 20).to_string(), "256M");
    assert_eq!(Size(1000).to_string(), "1000");
}

#[test]
fn count_range() {
    assert!(CountRange { min: 1, max: None }.contains(99));
    assert!(!CountRange {
        min: 1,
        max: Some(2)
    }
    .contains(3));
    assert!(!CountRange::default().contains(1));
}

#[test]
fn checked_in_schema_is_current() {
    let path = crate::paths::find_repo()
        .unwrap()
        .join("docs/scenario.schema.json");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == schema_json(),
        "docs/scenario.schema.json is stale: run `target/release/acq schema > docs/scenario.schema.json`"
    );
}

/// The fault catalogue's limits are the scenario check's (`acq check`), not only the
/// model's at run time: a scenario that would fail when its fault fires is refused at once.
#[test]
fn faults_outside_the_catalogue_are_refused_by_the_check() {
    for (inject, channel, want) in [
        (
            r#"{"irq_storm": {"rate": 500000, "ms": 10}}"#,
            "capture",
            "faults[0].inject: `rate` 500000 is not in 1..=200000",
        ),
        (
            r#"{"stall": {"ms": 3600001}}"#,
            "capture",
            "faults[0].inject: `ms` 3600001 is above 3600000",
        ),
        (
            r#"{"slow_stop": {"ms": 20000}}"#,
            "capture",
            "faults[0].inject: `ms` 20000 is above 10000",
        ),
        (
            r#"{"spurious_irq": {"count": 2000000}}"#,
            "capture",
            "faults[0].inject: `count` 2000000 is above 1048576",
        ),
        (
            r#"{"overflow": {"count": 1}}"#,
            "playback",
            "faults[0].channel: fault `overflow` has no playback form",
        ),
        (
            r#""reset""#,
            "playback",
            "faults[0].channel: reset is not a card fault",
        ),
        (
            r#"{"dma_error": {"cout": 1}}"#,
            "capture",
            "`dma_error`: unknown field `cout`",
        ),
        (
            r#"{"bad_completion": {"kind": "sideways"}}"#,
            "capture",
            "unknown variant `sideways`",
        ),
        (
            r#"{"melt": {}}"#,
            "capture",
            "unknown fault `melt` (card: dma_error",
        ),
    ] {
        let text = format!(
            r#"{{"steps": [{{"play": {{"bytes": "1M"}}}}],
                "faults": [{{"at": {{"time_ms": 1}}, "channel": "{channel}", "inject": {inject}}}]}}"#
        );
        let e = error_of(&text);
        assert!(e.contains(want), "{inject}: {e}");
    }
}

#[test]
fn a_step_the_consumer_would_refuse_is_refused_by_the_check() {
    // Each of these passed `acq check` and failed only when acq-stream refused its
    // command line, minutes into a run (the VM booted, the driver loaded).
    for (step, want) in [
        (
            r#"{"stream": {"bytes": "1M", "chunk": 0}}"#,
            "steps[0].stream.chunk: must be 1 .. 1G, not 0 (acq-stream --read-size)",
        ),
        (
            r#"{"stream": {"bytes": "1M", "mode": "splice", "pipe_size": "1K"}}"#,
            "steps[0].stream.pipe_size: must be 4K .. 1G, not 1024",
        ),
        (
            r#"{"stream": {"bytes": "1M", "sink": {"disk": 0}, "sink_retries": 5000}}"#,
            "steps[0].stream.sink_retries: at most 1000",
        ),
        (
            r#"{"stream": {"bytes": "1M", "sink": {"disk": 0}, "sink_retry_ms": 120000}}"#,
            "steps[0].stream.sink_retry_ms: at most 60000",
        ),
        (
            r#"{"play": {"bytes": "1M", "chunk": "2G"}}"#,
            "steps[0].play.chunk: must be 1 .. 1G, not 2147483648 (acq-stream --write-size)",
        ),
        (
            r#"{"play": {"bytes": "1M", "mode": "splice", "pipe_size": "2G"}}"#,
            "steps[0].play.pipe_size: must be 4K .. 1G",
        ),
        (
            r#"{"play": {"bytes": "1M", "pause_at": "2M"}}"#,
            "steps[0].play.pause_at: must be less than --bytes",
        ),
        (
            r#"{"play": {"bytes": "1M", "pause_at": "512K", "pause_ms": 70000}}"#,
            "steps[0].play.pause_ms: at most 60000",
        ),
    ] {
        let text = format!(r#"{{"disks": [{{"size": "16M"}}], "steps": [{step}]}}"#);
        let e = error_of(&text);
        assert!(e.contains(want), "{step}: {e}");
    }
}

#[test]
fn a_bar2_the_model_would_refuse_is_refused_by_the_check() {
    // 2G passed the check (a power of two of at least 1M) and the model refused it when
    // it started, after the check had said ok.
    for (size, ok) in [
        ("1M", true),
        ("1G", true),
        ("2G", false),
        ("3M", false),
        ("512K", false),
    ] {
        let text = format!(
            r#"{{"cards": [{{"bar2_size": "{size}"}}], "steps": [{{"stream": {{"bytes": "1M"}}}}]}}"#
        );
        let r = parse(&text, "t.json");
        assert_eq!(r.is_ok(), ok, "{size}: {r:?}");
        if !ok {
            assert!(error_of(&text).contains("cards[0].bar2_size: "), "{size}");
        }
    }
}

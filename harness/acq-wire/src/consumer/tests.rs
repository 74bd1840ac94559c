//! Both ends of each command line agree: what the harness builds, the tool reads back
//! into the same value; what a tool refuses names the flag.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::plan::STOP_MS_DEFAULT;
use super::*;

fn every_capture_setting() -> CaptureArgs {
    let mut a = CaptureArgs::new("/dev/acq3", CaptureMode::Read, 64 << 20);
    a.verify = true;
    a.sink = SinkPath::File("/mnt/vda/capture".into());
    a.card = DeviceArgs {
        block: Some(65536),
        ring_log2: Some(6),
        rate: Some(50_000_000),
        pattern: Some(crate::parse_pattern("sine:4").unwrap()),
        seed: Some(7),
        irq_count: Some(4),
        irq_time_us: Some(250),
        transfer: Some(Transfer::Bar2),
    };
    a.read_size = 65536;
    a.nonblock = true;
    a.progress = true;
    a.restart_at = Some(1 << 20);
    a.pause_at = Some(2 << 20);
    a.pause_ms = 2500;
    a.timeout = Some(12.5);
    a.stop_on_signal = true;
    a.signal = Some(SignalPlan {
        sig: Signal::Stop,
        at: At::Bytes(3 << 20),
        stop_ms: 700,
    });
    a.loopback = true;
    a.sink_opts = SinkOpts {
        policy: Some(SinkPolicy::Retry),
        retries: 9,
        retry_ms: 10,
        direct: true,
        base: Some(4096),
    };
    a
}

fn roundtrip_capture(a: &CaptureArgs) {
    a.check().expect("a valid line");
    let back = CaptureArgs::parse(a.to_argv()).expect("the tool reads what the harness wrote");
    assert_eq!(&back, a, "argv {:?}", a.to_argv());
}

#[test]
fn a_capture_line_reads_back_into_the_same_value() {
    roundtrip_capture(&CaptureArgs::new("/dev/acq0", CaptureMode::Mmap, 1));
    roundtrip_capture(&every_capture_setting());
    // The splice-only and control-only settings, which exclude some of the above.
    let mut s = CaptureArgs::new("/dev/acq1", CaptureMode::Splice, 1 << 30);
    s.tee = Some(SinkPath::File("/tmp/acq1.tee".into()));
    s.pipe_size = Some(1 << 20);
    s.hold_at = Some(4 << 20);
    s.hold_s = 0.25;
    s.reopen_at = Some(8 << 20);
    roundtrip_capture(&s);
    let mut c = CaptureArgs::new("/dev/acq0", CaptureMode::Splice, 32 << 20);
    c.controls = vec![
        ControlPlan {
            action: ControlAction::Reset,
            at: At::Ms(300),
        },
        ControlPlan {
            action: ControlAction::SetConfig(Change {
                block_size: Some(8192),
                irq_count: None,
                irq_time_us: Some(9),
                rate: Some(1 << 30),
            }),
            at: At::Bytes(1 << 20),
        },
        ControlPlan {
            action: ControlAction::Open,
            at: At::Bytes(0),
        },
    ];
    c.signal = Some(SignalPlan {
        sig: Signal::Kill,
        at: At::Ms(40),
        stop_ms: STOP_MS_DEFAULT,
    });
    roundtrip_capture(&c);
    let mut raw = CaptureArgs::new("/dev/zero", CaptureMode::Splice, 1 << 20);
    raw.raw = true;
    raw.sink = SinkPath::Tcp;
    roundtrip_capture(&raw);
}

#[test]
fn a_playback_line_reads_back_into_the_same_value() {
    let mut p = PlaybackArgs::new(
        "/dev/acq2-out",
        PlayMode::Vmsplice,
        SourcePath::Pattern,
        1 << 26,
    );
    p.write_size = 65536;
    p.pipe_size = Some(1 << 20);
    p.card = DeviceArgs {
        block: Some(4096),
        rate: Some(0),
        pattern: Some(1),
        seed: Some(73),
        ..DeviceArgs::default()
    };
    p.nonblock = true;
    p.corrupt_at = Some(1 << 20);
    p.pause_at = Some(2 << 20);
    p.pause_ms = 3000;
    p.verify = true;
    p.timeout = Some(90.0);
    p.buffers = Some(16);
    p.gift = true;
    for a in [
        p,
        PlaybackArgs::new("/dev/acq0-out", PlayMode::Write, SourcePath::Zero, 1),
        PlaybackArgs::new(
            "/dev/acq0-out",
            PlayMode::Sendfile,
            SourcePath::File("/tmp/f".into()),
            9,
        ),
    ] {
        a.check().expect("a valid line");
        assert_eq!(PlaybackArgs::parse(a.to_argv()).expect("reads back"), a);
    }
}

#[test]
fn control_plans_print_as_they_parse() {
    for text in [
        "stop@2M",
        "start@150ms",
        "set_config:block_size=8192,rate=1000@0",
        "open@4096",
    ] {
        let plan = ControlPlan::parse(text).unwrap();
        assert_eq!(
            ControlPlan::parse(&plan.to_string()).unwrap(),
            plan,
            "{text}"
        );
    }
    for (bad, says) in [
        ("stop", "ACTION@WHEN"),
        ("nap@1M", "unknown action"),
        ("set_config:colour=1@1M", "unknown key"),
        // The pattern and seed are what the consumer verifies against: not changeable.
        ("set_config:seed=1@1M", "unknown key"),
        ("set_config:block_size@1M", "KEY=N"),
        ("set_config:block_size=8G@1M", "too large"),
        ("reset:x=1@1M", "only set_config"),
        ("stop@soon", "bad byte count"),
    ] {
        let e = ControlPlan::parse(bad).unwrap_err();
        assert_eq!(e.flag, "--control");
        assert!(e.why.contains(says), "{bad}: {e}");
    }
}

#[test]
fn a_share_line_reads_back_into_the_same_value() {
    let mut card = ShareArgs::new("/dev/acq1", "/dev/acq0-out", 8 << 20);
    card.card = DeviceArgs {
        block: Some(8192),
        ring_log2: Some(10),
        pattern: Some(1),
        seed: Some(7),
        ..DeviceArgs::default()
    };
    card.play_rate = Some(1 << 20);
    card.map_verify = true;
    card.close_capture_after = Some(4 << 20);
    card.hold_s = Some(2);
    let mut heap = ShareArgs::new("", "/dev/acq1-out", 1 << 20);
    heap.source = ShareSource::Heap {
        path: "/dev/dma_heap/system".into(),
        pages: 16,
    };
    let mut copy = ShareArgs::new("", "/dev/acq1-out", 1 << 20);
    copy.source = ShareSource::Copy {
        from: "/dev/acq3".into(),
    };
    for a in [card, heap, copy] {
        a.check().expect("a valid line");
        assert_eq!(ShareArgs::parse(a.to_argv()).expect("reads back"), a);
    }
}

#[test]
fn a_refused_share_line_names_its_flag() {
    for (text, flag, says) in [
        ("--to /dev/acq1-out", "--bytes", "non-zero multiple"),
        ("--bytes 1000", "--bytes", "block size 4096"),
        ("--bytes 1M --block 7", "--block", "multiple of 8"),
        ("--bytes 1M --rate 1M", "", "unknown argument \"--rate\""),
        (
            "--bytes 1M --copy --map-verify",
            "--map-verify",
            "card's ring",
        ),
        (
            "--heap /dev/dma_heap/system --bytes 1M --hold-s 5",
            "--hold-s",
            "card's ring",
        ),
        (
            "--heap /dev/dma_heap/system --from /dev/acq0 --bytes 1M",
            "--from",
            "heap",
        ),
        (
            "--heap /dev/dma_heap/system --copy --bytes 1M",
            "--copy",
            "--heap",
        ),
        ("--bytes 1M --heap-pages 4", "--heap-pages", "needs --heap"),
        (
            "--bytes 1M --close-capture-after 1M",
            "--close-capture-after",
            "below --bytes",
        ),
        (
            "--bytes 2M --close-capture-after 1M --until-gone",
            "--until-gone",
            "both end",
        ),
        ("--bytes 1M --hold-s 61", "--hold-s", "1 ..= 60"),
        ("--bytes 1M --sauce", "", "unknown argument"),
    ] {
        let e = ShareArgs::parse(line(text)).expect_err(text);
        assert_eq!(e.flag, flag, "{text}: {e}");
        assert!(e.why.contains(says), "{text}: {e}");
    }
    // A card setting the tool does not set, in a value built in code.
    let mut a = ShareArgs::new("/dev/acq0", "/dev/acq1-out", 1 << 20);
    a.card.rate = Some(1);
    let e = a.check().expect_err("rate");
    assert!(e.why.contains("only --pattern, --seed"), "{e}");
}

#[test]
fn a_consume_line_reads_back_into_the_same_value() {
    let mut all = ConsumeArgs::new(ConsumeMethod::Readv, 48 << 20);
    all.device = "/dev/acq2".into();
    all.chunk = 1 << 20;
    all.iovecs = 32;
    all.rate = 150 << 20;
    all.ring_log2 = 10;
    all.block = Some(2048);
    all.pause_at = Some(2 << 20);
    all.pause_ms = 2000;
    all.out = "/tmp/x".into();
    all.stop_after_ms = Some(500);
    all.timeout = 90;
    all.until_gone = true;
    let mut threads = ConsumeArgs::new(ConsumeMethod::Read, 1 << 20);
    threads.threads = 4;
    for a in [all, threads]
        .into_iter()
        .chain(ConsumeMethod::ALL.map(|m| ConsumeArgs::new(m, 4096)))
    {
        a.check().expect("a valid line");
        assert_eq!(ConsumeArgs::parse(a.to_argv()).expect("reads back"), a);
    }
}

#[test]
fn a_refused_consume_line_names_its_flag() {
    for (text, flag, says) in [
        ("--bytes 1M", "--method", "required"),
        ("--method read", "--bytes", "N > 0"),
        ("--method rread --bytes 1M", "--method", "not a method"),
        ("--method read --bytes 1M --chunk 4", "--chunk", "8 .. 1G"),
        (
            "--method readv --bytes 1M --iovecs 0",
            "--iovecs",
            "1 .. 1024",
        ),
        (
            "--method splice --bytes 1M --threads 2",
            "--threads",
            "--method read",
        ),
        (
            "--method read --bytes 1M --threads 17",
            "--threads",
            "1 .. 16",
        ),
        (
            "--method read --bytes 1M --pause-at 1M",
            "--pause-at",
            "less than --bytes",
        ),
        (
            "--method read --bytes 1M --timeout 0",
            "--timeout",
            "more than 0",
        ),
        (
            "--method read --bytes 1M --verify=1",
            "",
            "unknown argument \"--verify\"",
        ),
    ] {
        let e = ConsumeArgs::parse(line(text)).expect_err(text);
        assert_eq!(e.flag, flag, "{text}: {e}");
        assert!(e.why.contains(says), "{text}: {e}");
    }
    // `--flag=value`, as clap took it.
    let a = ConsumeArgs::parse(line("--method=read --bytes=1M --rate=16M")).unwrap();
    assert_eq!(
        (a.method, a.bytes, a.rate),
        (ConsumeMethod::Read, 1 << 20, 16 << 20)
    );
}

fn line(text: &str) -> Vec<String> {
    text.split_whitespace().map(ToString::to_string).collect()
}

#[test]
fn a_refused_line_names_its_flag() {
    for (text, flag, says) in [
        ("--bytes 1M", "--mode", "required"),
        ("--mode read", "--bytes", "N > 0"),
        (
            "--mode read --bytes 1M --read-size 0",
            "--read-size",
            "1 .. 1G",
        ),
        (
            "--mode read --bytes 1M --read-size 2G",
            "--read-size",
            "1 .. 1G",
        ),
        (
            "--mode splice --bytes 1M --pipe-size 1K",
            "--pipe-size",
            "4K .. 1G",
        ),
        (
            "--mode read --bytes 1M --pipe-size 64K",
            "--pipe-size",
            "splice",
        ),
        ("--mode read --bytes 1M --tee /dev/null", "--tee", "splice"),
        (
            "--mode splice --bytes 1M --tee tcp",
            "--tee",
            "/dev/null or a file",
        ),
        (
            "--mode splice --bytes 1M --sink /a --tee /a",
            "--tee",
            "different",
        ),
        (
            "--mode read --bytes 1M --ring-log2 16",
            "--ring-log2",
            "out of range",
        ),
        (
            "--mode read --bytes 1M --block 100",
            "--block",
            "multiple of 8",
        ),
        (
            "--mode read --bytes 1M --pattern sine:17",
            "--pattern",
            "channel",
        ),
        (
            "--mode read --bytes 1M --transfer pio",
            "--transfer",
            "dma or bar2",
        ),
        (
            "--mode read --bytes 1M --restart-at 1M",
            "--restart-at",
            "less than --bytes",
        ),
        (
            "--mode splice --bytes 1M --pause-at 1K",
            "--pause-at",
            "--mode read",
        ),
        (
            "--mode read --bytes 1M --pause-ms 60001",
            "--pause-ms",
            "60000",
        ),
        (
            "--mode read --bytes 1M --signal int",
            "--signal",
            "--signal-at",
        ),
        (
            "--mode read --bytes 1M --signal-at-ms 5",
            "--signal",
            "--signal-at",
        ),
        (
            "--mode read --bytes 1M --signal hup --signal-at-bytes 2M",
            "--signal-at-bytes",
            "less than",
        ),
        (
            "--mode read --bytes 1M --signal nap --signal-at-ms 1",
            "--signal",
            "unknown signal",
        ),
        (
            "--mode mmap --bytes 1M --control stop@1K",
            "--control",
            "read or splice",
        ),
        (
            "--mode read --bytes 1M --sink /f --control stop@1K",
            "--control",
            "/dev/null sink",
        ),
        (
            "--mode read --bytes 1M --control stop@1K --reopen-at 2K",
            "--reopen-at",
            "shares the file",
        ),
        (
            "--mode read --bytes 1M --direct",
            "--direct",
            "file or disk",
        ),
        (
            "--mode read --bytes 1M --sink /f --sink-retries 1001",
            "--sink-retries",
            "1000",
        ),
        (
            "--mode read --bytes 1M --sink /f --on-sink-error later",
            "--on-sink-error",
            "stop, retry or skip",
        ),
        (
            "--mode read --bytes 1M --raw --verify",
            "--verify",
            "not --raw",
        ),
        (
            "--mode read --bytes 1M --timeout -1",
            "--timeout",
            "seconds above 0",
        ),
        ("--mode read --bytes lots", "--bytes", "not a size"),
        ("--mode read --bytes", "--bytes", "needs a value"),
        (
            "--mode read --bytes 1M --direction out",
            "--direction",
            "not in",
        ),
        (
            "--mode read --bytes 1M --colour red",
            "",
            "unknown argument",
        ),
    ] {
        let e = CaptureArgs::parse(line(text)).expect_err(text);
        assert_eq!(e.flag, flag, "{text}: {e}");
        assert!(e.why.contains(says), "{text}: {e}");
    }
    for (text, flag, says) in [
        ("--direction out", "--bytes", "N > 0"),
        (
            "--direction out --bytes 1M --transfer bar2",
            "--transfer",
            "capture channel's",
        ),
        (
            "--direction out --bytes 1M --write-size 0",
            "--write-size",
            "1 .. 1G",
        ),
        (
            "--direction out --bytes 1M --pipe-size 64K",
            "--pipe-size",
            "splice or vmsplice",
        ),
        ("--direction out --bytes 1M --gift", "--gift", "vmsplice"),
        (
            "--direction out --bytes 1M --buffers 8",
            "--buffers",
            "vmsplice",
        ),
        (
            "--direction out --mode vmsplice --bytes 1M --buffers 0",
            "--buffers",
            "1 .. 1024",
        ),
        (
            "--direction out --mode vmsplice --bytes 1M --gift --reuse-before-release",
            "--reuse-before-release",
            "gift",
        ),
        (
            "--direction out --bytes 1M --source zero --corrupt-at 5",
            "--corrupt-at",
            "pattern",
        ),
        (
            "--direction out --bytes 1M --corrupt-at 1M",
            "--corrupt-at",
            "less than",
        ),
        (
            "--direction out --mode sendfile --bytes 1M",
            "--mode",
            "--source FILE",
        ),
        (
            "--direction out --mode tee --bytes 1M",
            "--mode",
            "not a playback mode",
        ),
        (
            "--direction out --bytes 1M --source ./f",
            "--source",
            "absolute",
        ),
    ] {
        let e = PlaybackArgs::parse(line(text)).expect_err(text);
        assert_eq!(e.flag, flag, "{text}: {e}");
        assert!(e.why.contains(says), "{text}: {e}");
    }
}

#[test]
fn a_report_reads_back_and_a_sparse_line_reads_with_defaults() {
    let r = ConsumerReport {
        ok: true,
        bytes: 5,
        errno: [("EPIPE".into(), 2)].into_iter().collect(),
        errno_events: Some(vec![ErrnoEvent {
            errno: "EPIPE".into(),
            offset: 4,
            bytes: 3,
            ms: 2,
            resume: Some(9),
        }]),
        sink_io: Some(SinkIoReport {
            sync: Some("ok".into()),
            lost: vec![[1, 2]],
            ..SinkIoReport::default()
        }),
        ..ConsumerReport::default()
    };
    let text = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<ConsumerReport>(&text).unwrap(), r);
    // The signal helper's line of a killed consumer, and a line with fields this type
    // does not know.
    let killed: ConsumerReport =
        serde_json::from_str(r#"{"signal":"term","sent_ms":512,"exit_ms":3,"tool":"x"}"#).unwrap();
    assert_eq!(killed.signal.as_deref(), Some("term"));
    assert_eq!(killed.exit_ms, Some(3));
    assert!(!killed.ok);
    // A field of the wrong type is an error, not a default.
    assert!(serde_json::from_str::<ConsumerReport>(r#"{"bytes":"many"}"#).is_err());
}

#[test]
fn the_direction_is_found_as_the_parsers_walk_the_line() {
    for (text, want) in [
        (
            "--direction out --device /dev/acq0-out --bytes 1M",
            Direction::Out,
        ),
        ("--bytes 1M --direction=out", Direction::Out),
        ("--direction in --bytes 1M", Direction::In),
        ("--mode read --bytes 1M", Direction::In),
        ("--direction", Direction::In),
    ] {
        assert_eq!(Direction::of(&line(text)), want, "{text}");
    }
    // What Direction::of sends to the playback parser, it takes (--direction=out
    // reached the capture parser before and was refused there).
    let p = PlaybackArgs::parse(line("--direction=out --bytes 1M")).unwrap();
    assert_eq!(p.bytes, 1 << 20);
}

#[test]
fn help_is_asked_for_anywhere_on_the_line() {
    assert!(asks_for_help(&line("--help")));
    assert!(asks_for_help(&line("--mode read -h --bytes 1M")));
    assert!(!asks_for_help(&line("--mode read --bytes 1M")));
    // A flag that starts like it is not it.
    assert!(!asks_for_help(&line("--helpful --hold-s 1")));
    // A flag's value counts too (no tool takes "-h" as a value).
    assert!(asks_for_help(&line("--out -h")));
}

use super::*;

fn args(s: &str) -> Result<Args, String> {
    let v: Vec<String> = s.split_whitespace().map(String::from).collect();
    parse(&v)
}

#[test]
fn options_parse_and_bad_ones_are_refused() {
    let a = args("--direction out --bytes 1M --source /tmp/x --mode splice").unwrap();
    assert!(a.mode == Mode::Splice && a.source == SourceSpec::File("/tmp/x".into()));
    assert_eq!(a.device, "/dev/acq0-out");
    assert!(args("--bytes 1M --source zero --corrupt-at 5")
        .unwrap_err()
        .contains("--corrupt-at"));
    assert!(args("--bytes 1M --mode mmap").unwrap_err().contains("mmap"));
    assert!(args("--source pattern").unwrap_err().contains("--bytes"));
    assert!(args("--bytes 1M --source rel/path").is_err());
    let v = args("--bytes 1M --mode vmsplice --buffers 8 --gift").unwrap();
    assert!(v.mode == Mode::Vmsplice && v.buffers == 8 && v.gift);
    assert!(args("--bytes 1M --mode splice --gift")
        .unwrap_err()
        .contains("vmsplice"));
    assert!(args("--bytes 1M --mode vmsplice --gift --reuse-before-release").is_err());
    assert!(args("--bytes 1M --mode vmsplice --buffers 0").is_err());
}

#[test]
fn corrupted_pattern_flips_one_byte() {
    let cfg = AcqConfig {
        pattern: regs::pattern::PRBS,
        seed: 7,
        ..AcqConfig::default()
    };
    let mut p = Producer {
        cfg,
        corrupt_at: Some(4096 + 10),
        file: None,
    };
    let mut buf = vec![0u8; 8192];
    p.fill(0, &mut buf).unwrap();
    assert_eq!(
        regs::pattern_check(cfg.pattern, 7, 0, &buf),
        Some(4096 + 10)
    );
}

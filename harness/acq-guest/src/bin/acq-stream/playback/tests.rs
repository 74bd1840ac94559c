use super::*;

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

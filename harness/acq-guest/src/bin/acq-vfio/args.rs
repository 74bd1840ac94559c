//! The command line (hand-parsed: the tool is small and static).

use super::*;

pub(super) struct Args {
    pub(super) device: String,
    pub(super) bind: bool,
    pub(super) bytes: u64,
    pub(super) verify: bool,
    pub(super) sink: Option<String>,
    pub(super) block: u32,
    pub(super) ring_log2: u32,
    pub(super) rate: u64,
    pub(super) pattern: u32,
    pub(super) seed: u64,
    pub(super) irq_count: u32,
    pub(super) irq_time_us: u32,
    pub(super) timeout: Option<f64>,
    pub(super) progress: bool,
}

pub(super) fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-vfio: {msg}");
    eprintln!(
        "usage: acq-vfio [--device auto|DDDD:BB:DD.F] [--bind] --mode read --bytes N [--verify] \
         [--sink PATH] [--block B] [--ring-log2 L] [--rate R] [--pattern counter|prbs|sine[:CH]|N] \
         [--seed S] [--irq-count C] [--irq-time-us T] [--timeout SECONDS] [--progress]"
    );
    ExitCode::from(2)
}

pub(super) fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: "auto".into(),
        bind: false,
        bytes: 0,
        verify: false,
        sink: None,
        block: 4096,
        ring_log2: 8,
        rate: 0,
        pattern: 0,
        seed: 0,
        irq_count: 16,
        irq_time_us: 1000,
        timeout: None,
        progress: false,
    };
    let mut mode = None;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(opt) = it.next() {
        let mut val = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let size = |name: &str, v: String| -> Result<u64, String> {
            acqdev::parse_size(&v).ok_or_else(|| format!("bad value for {name}: {v:?}"))
        };
        let small = |name: &str, v: u64| -> Result<u32, String> {
            u32::try_from(v).map_err(|_| format!("{name} too large: {v}"))
        };
        match opt.as_str() {
            "--device" => a.device = val(opt)?,
            "--bind" => a.bind = true,
            "--mode" => mode = Some(val(opt)?),
            "--bytes" => a.bytes = size(opt, val(opt)?)?,
            "--verify" => a.verify = true,
            "--sink" => a.sink = Some(val(opt)?),
            "--block" => a.block = small(opt, size(opt, val(opt)?)?)?,
            "--ring-log2" => a.ring_log2 = small(opt, size(opt, val(opt)?)?)?,
            "--rate" => a.rate = size(opt, val(opt)?)?,
            "--pattern" => {
                let v = val(opt)?;
                a.pattern = acqdev::parse_pattern(&v).ok_or_else(|| format!("bad pattern {v:?}"))?
            }
            "--seed" => a.seed = size(opt, val(opt)?)?,
            "--irq-count" => a.irq_count = small(opt, size(opt, val(opt)?)?)?,
            "--irq-time-us" => a.irq_time_us = small(opt, size(opt, val(opt)?)?)?,
            "--timeout" => {
                let v = val(opt)?;
                a.timeout = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|t| *t > 0.0)
                        .ok_or_else(|| format!("bad --timeout {v:?}"))?,
                )
            }
            "--progress" => a.progress = true,
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match mode.as_deref() {
        Some("read") => {}
        Some(m) => return Err(format!("mode {m:?} is not supported (only: read)")),
        None => return Err("--mode is required (read)".into()),
    }
    if a.bytes == 0 {
        return Err("--bytes N (N > 0) is required".into());
    }
    if !regs::limits::ring_log2_valid(a.ring_log2) {
        return Err(format!("--ring-log2 {} is out of range 1..15", a.ring_log2));
    }
    if !a.block.is_multiple_of(8) || a.block < 64 || a.block > regs::limits::BLOCK_SIZE_MAX {
        return Err(format!(
            "--block {} is not a multiple of 8 in 64 .. 4M",
            a.block
        ));
    }
    Ok(a)
}

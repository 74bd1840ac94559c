//! The command line, walked with the shared `Argv` and the card settings' one parser
//! (`acq_wire::consumer::DeviceArgs`).

use super::*;

use acq_wire::consumer::device::DEVICE_USAGE;
use acq_wire::consumer::{ArgError, Argv, DeviceArgs};

#[derive(Debug)]
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

pub(super) fn usage_text() -> String {
    format!(
        "usage: acq-vfio [--device auto|DDDD:BB:DD.F] [--bind] --mode read --bytes N [--verify] \
         [--sink PATH] {} [--timeout SECONDS] [--progress]\n(--transfer: this tool streams by DMA)",
        DEVICE_USAGE.replace(" [--transfer dma|bar2 | --bar2]", "")
    )
}

pub(super) fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-vfio: {msg}");
    eprintln!("{}", usage_text());
    ExitCode::from(2)
}

pub(super) fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    parse(argv).map_err(|e| e.to_string())
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, ArgError> {
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
    let mut card = DeviceArgs::default();
    let mut mode = None;
    let mut argv = Argv::new(args);
    while let Some(flag) = argv.next_flag() {
        let f = flag.as_str();
        if f != "--transfer" && f != "--bar2" && card.take(f, &mut argv)? {
            continue;
        }
        match f {
            "--device" => a.device = argv.value(f)?,
            "--bind" => a.bind = true,
            "--mode" => mode = Some(argv.value(f)?),
            "--bytes" => a.bytes = argv.size(f)?,
            "--verify" => a.verify = true,
            "--sink" => a.sink = Some(argv.value(f)?),
            "--timeout" => a.timeout = Some(argv.secs(f)?),
            "--progress" => a.progress = true,
            other => return Err(ArgError::line(format!("unknown argument {other:?}"))),
        }
    }
    match mode.as_deref() {
        Some("read") => {}
        Some(m) => {
            return Err(ArgError::new(
                "--mode",
                format!("{m:?} is not supported (only: read)"),
            ))
        }
        None => return Err(ArgError::new("--mode", "is required (read)")),
    }
    if a.bytes == 0 {
        return Err(ArgError::new("--bytes", "N > 0 is required"));
    }
    card.check()?;
    // This tool programs the card itself: what the driver would default to, it sets.
    a.block = card.block.unwrap_or(a.block);
    a.ring_log2 = card.ring_log2.unwrap_or(a.ring_log2);
    a.rate = card.rate.unwrap_or(a.rate);
    a.pattern = card.pattern.unwrap_or(a.pattern);
    a.seed = card.seed.unwrap_or(a.seed);
    a.irq_count = card.irq_count.unwrap_or(a.irq_count);
    a.irq_time_us = card.irq_time_us.unwrap_or(a.irq_time_us);
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, ArgError> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn settings_parse_with_the_shared_rules() {
        let a = args("--mode read --bytes 1M --block 64K --pattern prbs --seed 0x10").unwrap();
        assert_eq!((a.block, a.pattern, a.seed, a.ring_log2), (65536, 1, 16, 8));
        for (text, flag) in [
            ("--mode read --bytes 1M --ring-log2 16", "--ring-log2"),
            ("--mode read --bytes 1M --block 100", "--block"),
            ("--mode read --bytes 1M --transfer bar2", ""),
            ("--mode mmap --bytes 1M", "--mode"),
            ("--mode read", "--bytes"),
        ] {
            assert_eq!(args(text).unwrap_err().flag, flag, "{text}");
        }
    }
}

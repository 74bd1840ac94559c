//! Fill-rate benchmark (`acq-device bench`, `cargo bench -p acq-device`).
//!
//! Measured in one run, over the same memfd-backed "guest RAM" (a ring of N buffers of
//! BLOCK_SIZE bytes):
//! - `memset`: the host filling every buffer with a constant;
//! - `memcpy`: the host copying a BLOCK_SIZE source into every buffer;
//! - `generate`: the pattern generator alone writing every buffer (no protocol);
//! - `engine`: the whole capture engine in DMA mode at RATE = 0 (descriptor fetch, data,
//!   completion, event page) with a polling fake driver on another thread that reposts
//!   each buffer as soon as its completion appears.
//!
//! Each figure is printed with its ratio to memset and memcpy.

use std::fmt;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::ModelConfig;
use crate::device::Device;
use crate::memfd::Memfd;
use crate::pattern::Generator;
use crate::regs::{self, comp, ctrl, desc, event, reg, status, Descriptor};
use crate::transport::{DmaRequest, PciFunction};

/// Benchmark parameters.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Buffer (block) sizes to measure, in bytes.
    #[arg(long = "block-size", value_name = "BYTES", value_delimiter = ',', default_values_t = [4096u32, 16384, 65536])]
    pub block_sizes: Vec<u32>,
    /// log2 of the number of buffers in the ring.
    #[arg(long, default_value_t = 8)]
    pub ring_log2: u32,
    /// Seconds per measurement (split over `--repeat` rounds).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Rounds: every figure is measured this many times, interleaved, and the best is
    /// kept (other processes on the machine only ever slow a round down).
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Patterns to measure (`acq_wire::pattern`: counter, prbs, sine, sine:CH).
    #[arg(long, value_delimiter = ',', default_values_t = ["counter".to_string(), "prbs".into(), "sine:4".into()])]
    pub patterns: Vec<String>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            block_sizes: vec![4096, 16384, 65536],
            ring_log2: 8,
            seconds: 1.0,
            repeat: 3,
            patterns: vec!["counter".into(), "prbs".into(), "sine:4".into()],
        }
    }
}

/// One measured rate.
#[derive(Clone, Debug)]
pub struct Rate {
    /// What was measured.
    pub name: String,
    /// Bytes per second.
    pub bytes_per_s: f64,
}

/// Results for one block size.
#[derive(Clone, Debug)]
pub struct Section {
    /// Block size in bytes.
    pub block: u32,
    /// Number of buffers.
    pub ring: u32,
    /// memset rate.
    pub memset: f64,
    /// memcpy rate.
    pub memcpy: f64,
    /// The model's rates.
    pub rates: Vec<Rate>,
}

/// The whole benchmark report.
#[derive(Clone, Debug)]
pub struct Report {
    /// One section per block size.
    pub sections: Vec<Section>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gbs = |r: f64| r / 1e9;
        for s in &self.sections {
            writeln!(
                f,
                "block {} B x {} buffers ({} KiB working set)",
                s.block,
                s.ring,
                u64::from(s.block) * u64::from(s.ring) / 1024
            )?;
            writeln!(f, "  {:<18} {:>8.2} GB/s", "host memset", gbs(s.memset))?;
            writeln!(f, "  {:<18} {:>8.2} GB/s", "host memcpy", gbs(s.memcpy))?;
            for r in &s.rates {
                writeln!(
                    f,
                    "  {:<18} {:>8.2} GB/s  {:>5.1}% of memset  {:>5.1}% of memcpy",
                    r.name,
                    gbs(r.bytes_per_s),
                    100.0 * r.bytes_per_s / s.memset,
                    100.0 * r.bytes_per_s / s.memcpy
                )?;
            }
        }
        Ok(())
    }
}

fn pattern_id(name: &str) -> std::io::Result<u32> {
    acq_wire::parse_pattern(name).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("pattern `{name}` is {e}"),
        )
    })
}

/// Runs `pass` (one pass over every buffer, returning bytes written) for `secs` and
/// returns bytes per second.
fn timed(secs: f64, mut pass: impl FnMut() -> u64) -> f64 {
    pass(); // warm up (page faults, caches)
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut bytes = 0u64;
    while start.elapsed() < limit {
        bytes += pass();
    }
    bytes as f64 / start.elapsed().as_secs_f64()
}

// Fake guest RAM layout for the engine measurement.
const GPA: u64 = 0x1_0000_0000;
const DESC_OFF: u64 = 0x0;
const EVENT_OFF: u64 = 0x10_0000;
const COMP_OFF: u64 = 0x10_1000;
const DATA_OFF: u64 = 0x20_0000;
/// Pause instructions the fake driver spins between two looks at an empty ring: a few
/// microseconds on the CI's CPU, well under the time the engine takes to fill the whole
/// ring (256 blocks of 4 KiB: 45-60 us). It was 2000 (60-80 us there): the engine ran out
/// of buffers every ring and slept until the doorbell, which cost the 4 KiB figure about
/// a fifth (0.32 of memset; about 0.41 at 200). Fewer (20) hammer the completion line the
/// engine writes next and are slower again. (A pause's length varies between CPUs: a
/// time-based back-off would carry over better.)
const BACKOFF_SPINS: u32 = 200;

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> std::io::Result<Report> {
    let patterns = args
        .patterns
        .iter()
        .map(|p| Ok((p.clone(), pattern_id(p)?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let n = regs::ring::entries(args.ring_log2.clamp(1, 15));
    let mut sections = Vec::new();
    for &block in &args.block_sizes {
        let block = block.clamp(regs::limits::BLOCK_SIZE_MIN, regs::limits::BLOCK_SIZE_MAX) & !7;
        let ram_size = DATA_OFF as usize + n as usize * block as usize;
        let ram = Memfd::new("acq-bench-ram", ram_size)?;
        let region = ram.region();
        let base = vm_memory::GuestMemoryRegion::get_host_address(
            &*region,
            vm_memory::MemoryRegionAddress(DATA_OFF),
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let bufs = n as usize;
        let bsz = block as usize;

        let reps = args.repeat.max(1);
        let secs = args.seconds / f64::from(reps);
        let src = vec![0xA5u8; bsz];
        let mut memset = 0f64;
        let mut memcpy = 0f64;
        let mut best = vec![0f64; 2 * patterns.len()];
        for _ in 0..reps {
            memset = memset.max(timed(secs, || {
                for i in 0..bufs {
                    // SAFETY: buffer i lies inside the mapping (DATA_OFF + n * block <= size).
                    unsafe { std::ptr::write_bytes(black_box(base.add(i * bsz)), 0x5A, bsz) };
                }
                (bufs * bsz) as u64
            }));
            memcpy = memcpy.max(timed(secs, || {
                for i in 0..bufs {
                    // SAFETY: as above; `src` is a private buffer of `bsz` bytes, no overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            black_box(src.as_ptr()),
                            base.add(i * bsz),
                            bsz,
                        )
                    };
                }
                (bufs * bsz) as u64
            }));
            for (j, (_, pat)) in patterns.iter().enumerate() {
                let gen = Generator::new(*pat, 0x0123_4567_89AB_CDEF);
                let mut offset = 0u64;
                let r = timed(secs, || {
                    for i in 0..bufs {
                        // SAFETY: as above.
                        unsafe { gen.fill_raw(offset, base.add(i * bsz), bsz) };
                        offset += bsz as u64;
                    }
                    (bufs * bsz) as u64
                });
                best[j] = best[j].max(r);
                let r = engine_rate(&ram, n, block, *pat, secs)?;
                best[patterns.len() + j] = best[patterns.len() + j].max(r);
            }
        }
        let mut rates = Vec::new();
        for (j, (name, _)) in patterns.iter().enumerate() {
            rates.push(Rate {
                name: format!("generate {name}"),
                bytes_per_s: best[j],
            });
        }
        for (j, (name, _)) in patterns.iter().enumerate() {
            rates.push(Rate {
                name: format!("engine {name}"),
                bytes_per_s: best[patterns.len() + j],
            });
        }
        sections.push(Section {
            block,
            ring: n,
            memset,
            memcpy,
            rates,
        });
    }
    Ok(Report { sections })
}

/// Delivered bytes per second of the whole engine with a polling fake driver.
fn engine_rate(ram: &Memfd, n: u32, block: u32, pattern: u32, secs: f64) -> std::io::Result<f64> {
    let dev = Device::new(ModelConfig::default())?;
    dev.dma_map(
        DmaRequest {
            address: GPA,
            size: ram.len() as u64,
            offset: 0,
            read: true,
            write: true,
        },
        Some(ram.file().try_clone()?),
    )?;
    let wr = |off: usize, v: u32| dev.bar_write(0, off as u64, &v.to_le_bytes());
    let ring_log2 = n.trailing_zeros();
    ram.fill(EVENT_OFF, 256, 0);
    ram.fill(COMP_OFF, n as usize * comp::SIZE, 0);
    for i in 0..n {
        let d = Descriptor {
            addr: GPA + DATA_OFF + u64::from(i) * u64::from(block),
            len: block,
            id: i as u16,
            flags: 0,
        };
        ram.write_bytes(
            DESC_OFF + u64::from(i) * desc::SIZE as u64,
            &d.to_le_bytes(),
        );
    }
    ram.store_u32(EVENT_OFF + event::OFF_PROD as u64, n, Ordering::Release);
    wr(reg::DESC_BASE_LO, (GPA + DESC_OFF) as u32)?;
    wr(reg::DESC_BASE_HI, ((GPA + DESC_OFF) >> 32) as u32)?;
    wr(reg::COMP_BASE_LO, (GPA + COMP_OFF) as u32)?;
    wr(reg::COMP_BASE_HI, ((GPA + COMP_OFF) >> 32) as u32)?;
    wr(reg::EVENT_BASE_LO, (GPA + EVENT_OFF) as u32)?;
    wr(reg::EVENT_BASE_HI, ((GPA + EVENT_OFF) >> 32) as u32)?;
    wr(reg::RING_LOG2, ring_log2)?;
    wr(reg::BLOCK_SIZE, block)?;
    wr(reg::PATTERN, pattern)?;
    // Moderation as a high-rate driver sets it (the fake driver polls and never arms).
    wr(reg::IRQ_MOD_COUNT, 32)?;
    wr(reg::IRQ_MOD_TIME_US, 50)?;

    let stop = AtomicBool::new(false);
    let (b0, b1, dt) = std::thread::scope(|scope| -> std::io::Result<(u64, u64, f64)> {
        let driver = scope.spawn(|| -> std::io::Result<()> {
            let comp_tail = |slot: u32| {
                COMP_OFF + u64::from(slot) * comp::SIZE as u64 + comp::OFF_TAIL_DWORD as u64
            };
            let mut head = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Consume every completion that is ready, then repost them at once.
                let first = head;
                loop {
                    let tail = ram
                        .load_u32(comp_tail(head & (n - 1)), Ordering::Acquire)
                        .unwrap_or(0);
                    if comp::tail_phase(tail) != regs::ring::phase(head, ring_log2) {
                        break;
                    }
                    head = head.wrapping_add(1);
                }
                if head == first {
                    // Back off instead of hammering the line the engine writes next.
                    for _ in 0..BACKOFF_SPINS {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                ram.store_u32(
                    EVENT_OFF + event::OFF_PROD as u64,
                    head.wrapping_add(n),
                    Ordering::Release,
                );
                std::sync::atomic::fence(Ordering::SeqCst);
                if ram.load_u32(
                    EVENT_OFF + event::OFF_NEED_DOORBELL as u64,
                    Ordering::Acquire,
                ) != Some(0)
                {
                    dev.bar_write(0, reg::DOORBELL as u64, &1u32.to_le_bytes())?;
                }
            }
            Ok(())
        });
        wr(reg::CTRL, ctrl::ENABLE)?;
        std::thread::sleep(Duration::from_millis(50)); // warm up
        let b0 = dev.shared().stats.bytes.load(Ordering::Relaxed);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let b1 = dev.shared().stats.bytes.load(Ordering::Relaxed);
        let dt = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        wr(reg::CTRL, 0)?;
        driver
            .join()
            .map_err(|_| std::io::Error::other("fake driver panicked"))??;
        Ok((b0, b1, dt))
    })?;
    let mut st = [0u8; 4];
    dev.bar_read(0, reg::STATUS as u64, &mut st)?;
    if u32::from_le_bytes(st) & status::ERROR != 0 {
        return Err(std::io::Error::other(
            "the engine reported an error during the benchmark",
        ));
    }
    Ok((b1 - b0) as f64 / dt)
}

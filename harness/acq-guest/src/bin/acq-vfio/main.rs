//! acq-vfio: a userspace driver for the acquisition card through VFIO, written from
//! docs/device.md alone. It captures, verifies every byte against the card's pattern, and
//! prints one JSON result line in the format of acq-stream (docs/vfio.md).
//!
//! ```text
//! acq-vfio [--device auto|DDDD:BB:DD.F] [--bind] --mode read --bytes N [--verify]
//!          [--sink FILE] [--block B] [--ring-log2 L] [--rate R] [--pattern P] [--seed S]
//!          [--irq-count C] [--irq-time-us T] [--timeout SECONDS] [--progress]
//! ```
//!
//! `--bind` binds the card to vfio-pci first (driver_override; no-IOMMU mode only when the
//! card has no IOMMU group). Behind an IOMMU the card is opened through vfio-ioctls'
//! type-1 container, otherwise in no-IOMMU mode (`"iommu"` in the result). Exit status: 0
//! ok, 1 verification or device failure, 2 bad arguments.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use acq_guest::acqdev;
use acq_guest::regs::{self, comp, ctrl, desc, err, event, irq, reg, status};
use acq_guest::vfio::dma::{Chunk, PAGE};
use acq_guest::vfio::{self, Device, EventFd, Mapping};
use vfio_bindings::bindings::vfio as vb;

struct Args {
    device: String,
    bind: bool,
    bytes: u64,
    verify: bool,
    sink: Option<String>,
    block: u32,
    ring_log2: u32,
    rate: u64,
    pattern: u32,
    seed: u64,
    irq_count: u32,
    irq_time_us: u32,
    timeout: Option<f64>,
    progress: bool,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("acq-vfio: {msg}");
    eprintln!(
        "usage: acq-vfio [--device auto|DDDD:BB:DD.F] [--bind] --mode read --bytes N [--verify] \
         [--sink PATH] [--block B] [--ring-log2 L] [--rate R] [--pattern counter|prbs|sine[:CH]|N] \
         [--seed S] [--irq-count C] [--irq-time-us T] [--timeout SECONDS] [--progress]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
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

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let context = serde_json::json!({ "device": args.device });
    acq_guest::result::finish(run(&args), context)
}

/// BAR0's register window: mmapped when vfio-pci allows it, else pread/pwrite on the
/// device fd (both are one 32-bit access on the bus).
enum Regs {
    Mapped(Mapping),
    Fd,
}

/// Counters of the run, reported in the JSON line.
#[derive(Default)]
struct Stats {
    sessions: u64,
    blocks: u64,
    error_completions: u64,
    overflows: u64,
    lost_bytes: u64,
    irqs_capture: u64,
    irqs_error: u64,
    idle_timeouts: u64,
    late_completions: u64,
    doorbells: u64,
    recoveries: u64,
    external_resets: u64,
    function_resets: u64,
    sequence_errors: u64,
    error_codes: BTreeMap<String, u64>,
}

/// The card opened through VFIO, with its DMA structures and interrupt eventfds.
struct Card {
    dev: Device,
    regs: Regs,
    /// Eventfds of MSI-X vectors 0 (capture) and 1 (errors).
    efd: [EventFd; 2],
    desc: Chunk,
    comp: Chunk,
    event: Chunk,
    bufs: Vec<Chunk>,
    log2: u32,
    n: u32,
    block: u32,
    // Driver state of the session (docs/device.md 15).
    head: u32,
    phase: u16,
    prod: u32,
    /// Buffers consumed but not yet reposted.
    pending: Vec<u16>,
}

fn err_name(code: u8) -> String {
    match code {
        err::DESC_ADDR => "DESC_ADDR".into(),
        err::DESC_LEN => "DESC_LEN".into(),
        err::DMA_WRITE => "DMA_WRITE".into(),
        err::DESC_READ => "DESC_READ".into(),
        err::COMP_WRITE => "COMP_WRITE".into(),
        err::EVENT_PAGE => "EVENT_PAGE".into(),
        err::PROD_INDEX => "PROD_INDEX".into(),
        err::CONFIG => "CONFIG".into(),
        c => format!("0x{c:02x}"),
    }
}

impl Card {
    fn rd(&self, off: usize) -> u32 {
        match &self.regs {
            Regs::Mapped(m) => m.read32(off),
            Regs::Fd => {
                let mut b = [0u8; 4];
                match self
                    .dev
                    .read_region(vb::VFIO_PCI_BAR0_REGION_INDEX, off as u64, &mut b)
                {
                    Ok(()) => u32::from_le_bytes(b),
                    Err(_) => u32::MAX,
                }
            }
        }
    }

    fn wr(&self, off: usize, v: u32) {
        match &self.regs {
            Regs::Mapped(m) => m.write32(off, v),
            Regs::Fd => {
                let _ = self.dev.write_region(
                    vb::VFIO_PCI_BAR0_REGION_INDEX,
                    off as u64,
                    &v.to_le_bytes(),
                );
            }
        }
    }

    fn atomic(chunk: &Chunk, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= chunk.len);
        // SAFETY: aligned and inside the chunk, which lives as long as the borrow; the
        // memory is shared with the device, so it is only accessed atomically or volatile.
        unsafe { &*(chunk.ptr.add(off) as *const AtomicU32) }
    }

    fn ev(&self, off: usize) -> &AtomicU32 {
        Self::atomic(&self.event, off)
    }

    fn write_bytes(chunk: &Chunk, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= chunk.len);
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: inside the chunk (checked above).
            unsafe { std::ptr::write_volatile(chunk.ptr.add(off + i), *b) };
        }
    }

    fn read_bytes<const L: usize>(chunk: &Chunk, off: usize) -> [u8; L] {
        assert!(off + L <= chunk.len);
        let mut out = [0u8; L];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: inside the chunk (checked above).
            *b = unsafe { std::ptr::read_volatile(chunk.ptr.add(off + i)) };
        }
        out
    }

    /// Opens the card (docs/device.md 15, probe steps 1-6 and the allocations).
    fn open(bdf: &str, a: &Args) -> Result<Card, String> {
        let dev = match Device::open(bdf) {
            // Behind an IOMMU without interrupt remapping type-1 needs vfio_iommu_type1's
            // allow_unsafe_interrupts: with --bind, the same kind of opt-in as no-IOMMU
            // mode, acq-vfio sets it and tries again (reported as "unsafe_interrupts").
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && a.bind => {
                vfio::allow_unsafe_interrupts()
                    .and_then(|()| Device::open(bdf))
                    .map_err(|e| format!("open {bdf}: {e}"))?
            }
            r => r.map_err(|e| format!("open {bdf}: {e}"))?,
        };
        dev.enable_bus_master()
            .map_err(|e| format!("enable bus master: {e}"))?;
        let regs = match dev.mmap(
            vb::VFIO_PCI_BAR0_REGION_INDEX,
            0,
            regs::bar::REG_WINDOW_SIZE as usize,
        ) {
            Ok(m) => Regs::Mapped(m),
            Err(_) => Regs::Fd,
        };
        // BAR2 is mapped to check that it is reachable (DMA mode does not use it).
        let bar2 = dev
            .region_info(vb::VFIO_PCI_BAR2_REGION_INDEX)
            .map_err(|e| format!("BAR2 info: {e}"))?;
        let _bar2_map = dev
            .mmap(vb::VFIO_PCI_BAR2_REGION_INDEX, 0, PAGE)
            .map_err(|e| format!("mmap BAR2 ({} bytes): {e}", bar2.size))?;
        let efd = [
            EventFd::new().map_err(|e| format!("eventfd: {e}"))?,
            EventFd::new().map_err(|e| format!("eventfd: {e}"))?,
        ];
        let n = 1u32 << a.ring_log2;
        let chunk = |len: usize| Chunk::alloc(&dev, len).map_err(|e| format!("DMA memory: {e}"));
        let desc = chunk(n as usize * desc::SIZE)?;
        let comp = chunk(n as usize * comp::SIZE)?;
        let event = chunk(event::SIZE)?;
        let bufs = (0..n)
            .map(|_| chunk(a.block as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let card = Card {
            dev,
            regs,
            efd,
            desc,
            comp,
            event,
            bufs,
            log2: a.ring_log2,
            n,
            block: a.block,
            head: 0,
            phase: 1,
            prod: 0,
            pending: Vec::new(),
        };
        let id = card.rd(reg::ID);
        if id != regs::id::MAGIC {
            return Err(format!("ID reads 0x{id:08x}, not the card"));
        }
        let version = card.rd(reg::VERSION);
        if regs::version::major(version) != 1 {
            return Err(format!("unsupported VERSION 0x{version:08x}"));
        }
        let caps = card.rd(reg::CAPS);
        if caps & regs::caps::CAPTURE_DMA == 0 {
            return Err(format!("CAPS 0x{caps:08x} lacks CAPTURE_DMA"));
        }
        let fifo = card.rd(reg::FIFO_DEPTH);
        if a.block > fifo {
            return Err(format!("--block {} exceeds FIFO_DEPTH {fifo}", a.block));
        }
        card.soft_reset()?;
        let vectors = card
            .dev
            .irq_count(vb::VFIO_PCI_MSIX_IRQ_INDEX)
            .map_err(|e| format!("MSI-X info: {e}"))?;
        if vectors < 2 {
            return Err(format!("MSI-X has {vectors} vectors, need 2"));
        }
        card.dev
            .set_irq_eventfds(vb::VFIO_PCI_MSIX_IRQ_INDEX, &[&card.efd[0], &card.efd[1]])
            .map_err(|e| format!("enable MSI-X: {e}"))?;
        Ok(card)
    }

    fn soft_reset(&self) -> Result<(), String> {
        self.wr(reg::CTRL, ctrl::SOFT_RESET);
        let id = self.rd(reg::ID);
        if id != regs::id::MAGIC {
            return Err(format!("ID reads 0x{id:08x} after soft reset"));
        }
        Ok(())
    }

    /// Writes descriptor `index` for buffer `id`.
    fn post_desc(&self, index: u32, id: u16) {
        let slot = regs::ring::slot(index, self.log2) as usize;
        let d = regs::Descriptor {
            addr: self.bufs[id as usize].bus,
            len: self.block,
            id,
            flags: 0,
        };
        Self::write_bytes(&self.desc, slot * desc::SIZE, &d.to_le_bytes());
    }

    /// Starts a session (docs/device.md 15, steps 3 and 5-9; "Restarting a session").
    fn start(&mut self, a: &Args, st: &mut Stats) -> Result<(), String> {
        self.soft_reset()?;
        self.comp.zero();
        self.event.zero();
        for i in 0..self.n {
            self.post_desc(i, i as u16);
        }
        self.head = 0;
        self.phase = 1;
        self.prod = self.n;
        self.pending.clear();
        fence(Ordering::Release);
        self.ev(event::OFF_PROD).store(self.prod, Ordering::Relaxed);
        self.ev(event::OFF_IRQ_ARMED)
            .store(event::ARMED_CAPTURE, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let split = |v: u64| (v as u32, (v >> 32) as u32);
        for (lo, v) in [
            (reg::DESC_BASE_LO, self.desc.bus),
            (reg::COMP_BASE_LO, self.comp.bus),
            (reg::EVENT_BASE_LO, self.event.bus),
            (reg::RATE_LO, a.rate),
            (reg::SEED_LO, a.seed),
        ] {
            let (l, h) = split(v);
            self.wr(lo, l);
            self.wr(lo + 4, h);
        }
        self.wr(reg::RING_LOG2, self.log2);
        self.wr(reg::BLOCK_SIZE, self.block);
        self.wr(reg::PATTERN, a.pattern);
        self.wr(reg::IRQ_MOD_COUNT, a.irq_count);
        self.wr(reg::IRQ_MOD_TIME_US, a.irq_time_us);
        self.wr(reg::IRQ_MASK, 0);
        // Drop interrupts of an earlier session.
        self.efd[0].take();
        self.efd[1].take();
        self.wr(reg::CTRL, ctrl::ENABLE);
        let s = self.rd(reg::STATUS);
        if s & status::HALTED != 0 || s & status::RUNNING == 0 {
            let code = self.rd(reg::ERROR_CODE);
            return Err(format!(
                "the card refused the session: STATUS 0x{s:x}, ERROR_CODE {} detail {}",
                err_name(err::code(code)),
                err::detail(code)
            ));
        }
        st.sessions += 1;
        Ok(())
    }

    /// Stops the engine (docs/device.md 15, teardown step 1).
    fn stop(&self) {
        self.wr(reg::CTRL, 0);
        let t = Instant::now();
        while self.rd(reg::STATUS) & status::RUNNING != 0 {
            if t.elapsed() > Duration::from_millis(10) {
                let _ = self.soft_reset();
                break;
            }
        }
    }

    /// Teardown: stop, mask, disable MSI-X, soft reset. After this the device does no DMA,
    /// so the memory can go.
    fn close(&self) {
        self.stop();
        self.wr(reg::IRQ_MASK, irq::ALL);
        let _ = self.dev.set_irq_eventfds(vb::VFIO_PCI_MSIX_IRQ_INDEX, &[]);
        let _ = self.soft_reset();
    }

    /// Queues buffer `id` for reposting; posts the queue once it holds a quarter of the
    /// ring. Posting one buffer per completion would ring DOORBELL (a trapped write) once
    /// per block whenever the card is faster than the driver: it runs dry after every
    /// single buffer.
    fn repost(&mut self, id: u16, st: &mut Stats) {
        self.pending.push(id);
        if self.pending.len() as u32 >= (self.n / 4).max(1) {
            self.flush_reposts(st);
        }
    }

    /// Posts the queued buffers (section 8): descriptors, RELEASE, `prod`, FULL, and
    /// DOORBELL only if the device went to sleep.
    fn flush_reposts(&mut self, st: &mut Stats) {
        if self.pending.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.pending);
        for (i, id) in ids.iter().enumerate() {
            self.post_desc(self.prod.wrapping_add(i as u32), *id);
        }
        fence(Ordering::Release);
        self.prod = self.prod.wrapping_add(ids.len() as u32);
        self.ev(event::OFF_PROD).store(self.prod, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.ev(event::OFF_NEED_DOORBELL).load(Ordering::Relaxed) != 0 {
            self.wr(reg::DOORBELL, 1);
            st.doorbells += 1;
        }
        self.pending = ids;
        self.pending.clear();
    }

    /// The completion at `head` if the device wrote it: (record, tail dword).
    fn next_completion(&self) -> Option<regs::Completion> {
        let slot = regs::ring::slot(self.head, self.log2) as usize;
        let off = slot * comp::SIZE;
        let tail = Self::atomic(&self.comp, off + comp::OFF_TAIL_DWORD).load(Ordering::Relaxed);
        if comp::tail_phase(tail) != self.phase {
            return None;
        }
        fence(Ordering::Acquire);
        let bytes: [u8; 32] = Self::read_bytes(&self.comp, off);
        Some(regs::Completion::from_le_bytes(&bytes))
    }

    fn advance(&mut self) {
        self.head = self.head.wrapping_add(1);
        if regs::ring::slot(self.head, self.log2) == 0 {
            self.phase ^= 1;
        }
    }

    /// Vector-1 work (registers allowed): acknowledge the causes, record and clear the
    /// error. Returns true if the engine halted.
    fn service_errors(&self, st: &mut Stats) -> bool {
        let causes = self.rd(reg::IRQ_STATUS);
        if causes != u32::MAX && causes != 0 {
            self.wr(reg::IRQ_STATUS, causes);
        }
        let s = self.rd(reg::STATUS);
        if s == u32::MAX {
            return true;
        }
        if s & status::ERROR != 0 {
            let code = err::code(self.rd(reg::ERROR_CODE));
            *st.error_codes.entry(err_name(code)).or_default() += 1;
        }
        if s & status::W1C_MASK != 0 {
            self.wr(reg::STATUS, s & status::W1C_MASK);
        }
        s & status::HALTED != 0
    }
}

/// The card's PCI address: given, or the only function with the card's IDs.
fn find_card(dev: &str) -> Result<String, String> {
    if dev != "auto" {
        return Ok(dev.to_string());
    }
    let found = vfio::find_functions(regs::pci::VENDOR_ID, regs::pci::DEVICE_ID);
    found
        .first()
        .cloned()
        .ok_or_else(|| "no card found in /sys/bus/pci/devices".to_string())
}

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    let bdf = find_card(&a.device)?;
    if a.bind {
        // Behind a (virtual) IOMMU the card already has a group: type-1, no unsafe mode.
        let noiommu = !vfio::has_iommu_group(&bdf);
        vfio::bind_vfio_pci(&bdf, noiommu).map_err(|e| format!("bind {bdf} to vfio-pci: {e}"))?;
    }
    let mut card = Card::open(&bdf, a)?;
    let mut st = Stats::default();
    let result = stream(&mut card, a, &mut st);
    card.close();
    let (total, verified, mismatches, first_mismatch, errnos, secs, timed_out, fatal) = match result
    {
        Ok(r) => r,
        Err(e) => (
            0,
            0,
            0,
            serde_json::Value::Null,
            BTreeMap::new(),
            0.0,
            false,
            Some(e),
        ),
    };
    let ok = fatal.is_none() && mismatches == 0 && !timed_out && total >= a.bytes;
    let report = serde_json::json!({
        "device": bdf,
        "driver": "vfio",
        "iommu": card.dev.iommu.name(),
        "bar0": match card.regs { Regs::Mapped(_) => "mmap", Regs::Fd => "pread/pwrite" },
        "unsafe_interrupts": card.dev.iommu == vfio::Iommu::Type1 && vfio::unsafe_interrupts_allowed(),
        "mode": "read",
        "bytes": total,
        "seconds": secs,
        "mb_per_s": if secs > 0.0 { total as f64 / secs / 1e6 } else { 0.0 },
        "verify": a.verify,
        "verified_bytes": verified,
        "errors": mismatches,
        "first_mismatch": first_mismatch,
        "overflows": st.overflows,
        "lost_bytes": st.lost_bytes,
        "errno": errnos,
        "signals": 0,
        "short_reads": 0,
        "restarted": st.sessions > 1,
        "timed_out": timed_out,
        "stopped_by_signal": false,
        "fatal": fatal,
        "config": {
            "block_size": a.block, "ring_log2": a.ring_log2, "rate": a.rate,
            "pattern": a.pattern, "seed": a.seed, "irq_mod_count": a.irq_count,
            "irq_mod_time_us": a.irq_time_us,
        },
        "stats": {
            "sessions": st.sessions, "blocks": st.blocks,
            "error_completions": st.error_completions,
            "recoveries": st.recoveries, "external_resets": st.external_resets, "function_resets": st.function_resets,
            "irqs_capture": st.irqs_capture, "irqs_error": st.irqs_error,
            "idle_timeouts": st.idle_timeouts, "late_completions": st.late_completions,
            "doorbells": st.doorbells, "sequence_errors": st.sequence_errors,
            "error_codes": st.error_codes,
        },
        "ok": ok,
    });
    Ok((report, ok))
}

type StreamResult = (
    u64,
    u64,
    u64,
    serde_json::Value,
    BTreeMap<String, u64>,
    f64,
    bool,
    Option<String>,
);

/// How long the loop sleeps on the eventfds before it looks at the ring and the card
/// anyway (bounds the cost of a lost interrupt).
const IDLE_MS: i32 = 20;

fn stream(card: &mut Card, a: &Args, st: &mut Stats) -> Result<StreamResult, String> {
    let mut sink = match a.sink.as_deref() {
        None | Some("/dev/null") => None,
        Some(p) => Some(BufWriter::with_capacity(
            1 << 20,
            File::create(p).map_err(|e| format!("create {p}: {e}"))?,
        )),
    };
    let mut errnos: BTreeMap<String, u64> = BTreeMap::new();
    let mut total: u64 = 0;
    let mut verified: u64 = 0;
    let mut mismatches: u64 = 0;
    let mut first_mismatch = serde_json::Value::Null;
    let mut timed_out = false;
    let mut fatal = None;
    // Stall watchdog, as the kernel driver's: no completion for 2 s plus four block times.
    let block_time = if a.rate > 0 {
        Duration::from_secs_f64(4.0 * a.block as f64 / a.rate as f64)
    } else {
        Duration::ZERO
    };
    let stall = Duration::from_secs(2) + block_time;

    card.start(a, st)?;
    let start = Instant::now();
    let mut last_progress = start;
    let mut last_completion = Instant::now();
    // Offset where the next data block is expected (the invariant of section 6.2).
    let mut expect: u64 = 0;
    // True while polling (irq_armed = 0).
    let mut polling = false;

    'outer: while total < a.bytes {
        if let Some(t) = a.timeout {
            if start.elapsed().as_secs_f64() > t {
                timed_out = true;
                break;
            }
        }
        // Drain the ring, at most one ring's worth at a time so that vector 1 is looked at
        // (non-blocking) even while the ring never runs empty.
        let mut budget = card.n;
        while budget > 0 {
            let Some(c) = card.next_completion() else {
                break;
            };
            budget -= 1;
            last_completion = Instant::now();
            let id = c.id;
            if c.flags & comp::F_ERROR != 0 {
                // The buffer holds nothing; the block stays in the card's FIFO.
                st.error_completions += 1;
                *errnos.entry("EIO".into()).or_default() += 1;
                *st.error_codes
                    .entry(format!(
                        "completion_{}",
                        err_name(comp::error_code(c.flags))
                    ))
                    .or_default() += 1;
            } else {
                st.blocks += 1;
                if c.flags & comp::F_OVERFLOW != 0 {
                    st.overflows += 1;
                    st.lost_bytes += c.lost_bytes;
                    *errnos.entry("EPIPE".into()).or_default() += 1;
                }
                if c.stream_offset != expect + c.lost_bytes {
                    st.sequence_errors += 1;
                }
                expect = c.stream_offset + c.length as u64;
                let buf = card
                    .bufs
                    .get(id as usize)
                    .ok_or_else(|| format!("completion with unknown id {id}"))?;
                let len = (c.length as usize).min(buf.len);
                let take = len.min((a.bytes - total) as usize);
                // SAFETY: the device completed this buffer and does not own it until it is
                // reposted below; `take` is within the chunk.
                let data = unsafe { std::slice::from_raw_parts(buf.ptr, take) };
                if a.verify {
                    if let Some(i) = regs::pattern_check(a.pattern, a.seed, c.stream_offset, data) {
                        mismatches += 1;
                        if first_mismatch.is_null() {
                            let at = c.stream_offset + i as u64;
                            first_mismatch = serde_json::json!({
                                "stream_offset": at,
                                "got": data[i],
                                "want": regs::pattern_byte(a.pattern, a.seed, at),
                            });
                        }
                    } else {
                        verified += take as u64;
                    }
                }
                if let Some(f) = sink.as_mut() {
                    f.write_all(data).map_err(|e| format!("write sink: {e}"))?;
                }
                total += take as u64;
            }
            card.advance();
            card.repost(id, st);
            if total >= a.bytes {
                break 'outer;
            }
        }
        // Vector 1 is looked at without sleeping too: the ring may never run empty.
        let mut halted = false;
        if card.efd[1].take() > 0 {
            st.irqs_error += 1;
            halted = card.service_errors(st);
        }
        let mut reset_needed = false;
        if !halted {
            if budget == 0 {
                continue;
            }
            // The ring is empty: give every consumed buffer back before sleeping.
            card.flush_reposts(st);
            // Nothing new: re-arm (section 9.3), then sleep on the eventfds.
            card.ev(event::OFF_IRQ_ARMED)
                .store(event::ARMED_CAPTURE, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if card.next_completion().is_some() {
                polling = true;
                card.ev(event::OFF_IRQ_ARMED).store(0, Ordering::Relaxed);
                continue;
            }
            let ready = vfio::wait_readable(&[card.efd[0].raw_fd(), card.efd[1].raw_fd()], IDLE_MS);
            if ready[0] && card.efd[0].take() > 0 {
                st.irqs_capture += 1;
            }
            if ready[1] && card.efd[1].take() > 0 {
                st.irqs_error += 1;
                halted = card.service_errors(st);
            }
            if !ready[0] && !ready[1] {
                st.idle_timeouts += 1;
                if card.next_completion().is_some() {
                    // An interrupt was lost (or moderation is slower than IDLE_MS): only
                    // latency was lost.
                    st.late_completions += 1;
                    continue;
                }
                // Quiet: is the card still running? (One trapped read per idle period.)
                let s = card.rd(reg::STATUS);
                let gone = s == u32::MAX && card.rd(reg::ID) != regs::id::MAGIC;
                let stopped = !gone && s & status::RUNNING == 0;
                if !gone && s & status::HALTED != 0 {
                    halted = card.service_errors(st);
                }
                let stalled = !gone && !stopped && last_completion.elapsed() > stall;
                if !gone && !stopped && s & status::NEED_DOORBELL != 0 {
                    // Defensive: the device waits although buffers are posted.
                    card.wr(reg::DOORBELL, 1);
                    st.doorbells += 1;
                }
                // Reset by someone else (no interrupt tells), hung or stalled.
                reset_needed = gone || stalled;
                if stopped && !halted {
                    st.external_resets += 1;
                }
                halted |= gone || stopped || stalled;
            }
        }
        if halted {
            // Recover in a new session, reported once as EIO (like the kernel driver).
            st.recoveries += 1;
            *errnos.entry("EIO".into()).or_default() += 1;
            card.stop();
            let hung = reset_needed || card.rd(reg::ID) != regs::id::MAGIC;
            if hung && card.soft_reset().is_err() {
                st.function_resets += 1;
                card.dev
                    .reset()
                    .map_err(|e| format!("VFIO_DEVICE_RESET: {e}"))?;
            }
            if let Err(e) = card.start(a, st) {
                fatal = Some(e);
                break;
            }
            expect = 0;
            last_completion = Instant::now();
            continue;
        }
        // Woken: poll with interrupts suppressed (NAPI style) until the ring is empty.
        if !polling {
            card.ev(event::OFF_IRQ_ARMED).store(0, Ordering::Relaxed);
        }
        polling = false;
        if a.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "{:>8.1} MiB  {:>8.2} MB/s",
                total as f64 / 1048576.0,
                total as f64 / secs / 1e6
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(f) = sink.as_mut() {
        f.flush().map_err(|e| format!("write sink: {e}"))?;
    }
    Ok((
        total,
        verified,
        mismatches,
        first_mismatch,
        errnos,
        secs,
        timed_out,
        fatal,
    ))
}

//! The card through VFIO, from docs/device.md alone: BAR0 registers, the rings and event
//! page in DMA memory, the session protocol and its errors.

use super::*;

/// BAR0's register window: mmapped when vfio-pci allows it, else pread/pwrite on the
/// device fd (both are one 32-bit access on the bus).
pub(super) enum Regs {
    Mapped(Mapping),
    Fd,
}

/// Counters of the run, reported in the JSON line.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) sessions: u64,
    pub(super) blocks: u64,
    pub(super) error_completions: u64,
    pub(super) overflows: u64,
    pub(super) lost_bytes: u64,
    pub(super) irqs_capture: u64,
    pub(super) irqs_error: u64,
    pub(super) idle_timeouts: u64,
    pub(super) late_completions: u64,
    pub(super) doorbells: u64,
    pub(super) recoveries: u64,
    pub(super) external_resets: u64,
    pub(super) function_resets: u64,
    pub(super) sequence_errors: u64,
    pub(super) error_codes: BTreeMap<String, u64>,
}

/// The card opened through VFIO, with its DMA structures and interrupt eventfds.
pub(super) struct Card {
    pub(super) dev: Device,
    pub(super) regs: Regs,
    /// Eventfds of MSI-X vectors 0 (capture) and 1 (errors).
    pub(super) efd: [EventFd; 2],
    pub(super) desc: Chunk,
    pub(super) comp: Chunk,
    pub(super) event: Chunk,
    pub(super) bufs: Vec<Chunk>,
    pub(super) log2: u32,
    pub(super) n: u32,
    pub(super) block: u32,
    // Driver state of the session (docs/device.md 15).
    pub(super) head: u32,
    pub(super) phase: u16,
    pub(super) prod: u32,
    /// Buffers consumed but not yet reposted.
    pub(super) pending: Vec<u16>,
}

pub(super) fn err_name(code: u8) -> String {
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
    pub(super) fn rd(&self, off: usize) -> u32 {
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

    pub(super) fn wr(&self, off: usize, v: u32) {
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

    pub(super) fn atomic(chunk: &Chunk, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= chunk.len);
        // SAFETY: aligned and inside the chunk, which lives as long as the borrow; the
        // memory is shared with the device, so it is only accessed atomically or volatile.
        unsafe { &*(chunk.ptr.add(off) as *const AtomicU32) }
    }

    pub(super) fn ev(&self, off: usize) -> &AtomicU32 {
        Self::atomic(&self.event, off)
    }

    pub(super) fn write_bytes(chunk: &Chunk, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= chunk.len);
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: inside the chunk (checked above).
            unsafe { std::ptr::write_volatile(chunk.ptr.add(off + i), *b) };
        }
    }

    pub(super) fn read_bytes<const L: usize>(chunk: &Chunk, off: usize) -> [u8; L] {
        assert!(off + L <= chunk.len);
        let mut out = [0u8; L];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: inside the chunk (checked above).
            *b = unsafe { std::ptr::read_volatile(chunk.ptr.add(off + i)) };
        }
        out
    }

    /// Opens the card (docs/device.md 15, probe steps 1-6 and the allocations).
    pub(super) fn open(bdf: &str, a: &Args) -> Result<Card, String> {
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

    pub(super) fn soft_reset(&self) -> Result<(), String> {
        self.wr(reg::CTRL, ctrl::SOFT_RESET);
        let id = self.rd(reg::ID);
        if id != regs::id::MAGIC {
            return Err(format!("ID reads 0x{id:08x} after soft reset"));
        }
        Ok(())
    }

    /// Writes descriptor `index` for buffer `id`.
    pub(super) fn post_desc(&self, index: u32, id: u16) {
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
    pub(super) fn start(&mut self, a: &Args, st: &mut Stats) -> Result<(), String> {
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
    pub(super) fn stop(&self) {
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
    pub(super) fn close(&self) {
        self.stop();
        self.wr(reg::IRQ_MASK, irq::ALL);
        let _ = self.dev.set_irq_eventfds(vb::VFIO_PCI_MSIX_IRQ_INDEX, &[]);
        let _ = self.soft_reset();
    }

    /// Queues buffer `id` for reposting; posts the queue once it holds a quarter of the
    /// ring. Posting one buffer per completion would ring DOORBELL (a trapped write) once
    /// per block whenever the card is faster than the driver: it runs dry after every
    /// single buffer.
    pub(super) fn repost(&mut self, id: u16, st: &mut Stats) {
        self.pending.push(id);
        if self.pending.len() as u32 >= (self.n / 4).max(1) {
            self.flush_reposts(st);
        }
    }

    /// Posts the queued buffers (section 8): descriptors, RELEASE, `prod`, FULL, and
    /// DOORBELL only if the device went to sleep.
    pub(super) fn flush_reposts(&mut self, st: &mut Stats) {
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
    pub(super) fn next_completion(&self) -> Option<regs::Completion> {
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

    pub(super) fn advance(&mut self) {
        self.head = self.head.wrapping_add(1);
        if regs::ring::slot(self.head, self.log2) == 0 {
            self.phase ^= 1;
        }
    }

    /// Vector-1 work (registers allowed): acknowledge the causes, record and clear the
    /// error. Returns true if the engine halted.
    pub(super) fn service_errors(&self, st: &mut Stats) -> bool {
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
pub(super) fn find_card(dev: &str) -> Result<String, String> {
    if dev != "auto" {
        return Ok(dev.to_string());
    }
    let found = vfio::find_functions(regs::pci::VENDOR_ID, regs::pci::DEVICE_ID);
    found
        .first()
        .cloned()
        .ok_or_else(|| "no card found in /sys/bus/pci/devices".to_string())
}

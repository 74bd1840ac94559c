//! The BAR0 register file (docs/device.md section 5), driven by `regs::REGISTERS`.
//!
//! Access rules: only naturally aligned 32-bit accesses inside the register window are
//! valid; anything else there reads all-ones, drops the write and counts in
//! CNT_REG_ERRORS. Reserved offsets read 0 and ignore writes. The MSI-X table and PBA part
//! of BAR0 reads 0 at any width and ignores writes (QEMU emulates the table; the PBA is
//! always 0 from the device's side).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, info};

use crate::channel::{Engine, SessionConfig};
use crate::faults::{Action, Site};
use crate::regs::{
    self, bar, caps, ctrl, err, id, irq, limits, loopback, pattern, pb_ctrl, pb_status, reg,
    status, version, Ctrl, PbCtrl,
};
use crate::shared::Shared;

/// A BAR0 access outside BAR0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BAR0 access {offset:#x}+{len} is outside the {size:#x}-byte BAR")]
pub struct OutOfRange {
    /// Offset of the access.
    pub offset: u64,
    /// Length of the access.
    pub len: usize,
    /// Size of BAR0.
    pub size: u64,
}

const NREGS: usize = reg::PB_END / 4;

/// Register values that only the host side writes.
#[derive(Debug)]
struct RegFile {
    /// Stored values of the RW registers (SCRATCH, CTRL, session configuration), by
    /// offset / 4.
    stored: [u32; NREGS],
    /// Upper half of CNT_BYTES latched by the last read of CNT_BYTES_LO.
    latch_bytes: u32,
    /// Upper half of CNT_LOST latched by the last read of CNT_LOST_LO.
    latch_lost: u32,
    /// Upper halves latched by PB_CNT_VERIFIED_LO, PB_FIRST_BAD_LO, PB_CNT_BYTES_LO.
    latch_pb_verified: u32,
    latch_pb_first_bad: u32,
    latch_pb_bytes: u32,
    /// A slow stop (fault `slow_stop`): STATUS.RUNNING reads 1 until then, although the
    /// engine already stopped (the spec lets a card take 10 ms).
    stopping_until: Option<std::time::Instant>,
}

impl RegFile {
    fn new() -> RegFile {
        let mut stored = [0u32; NREGS];
        for r in regs::REGISTERS.iter() {
            if r.offset == reg::SCRATCH
                || r.offset == reg::CTRL
                || r.offset == reg::PB_CTRL
                || reg::is_session_config(r.offset)
                || reg::is_pb_session_config(r.offset)
            {
                stored[r.offset / 4] = r.reset;
            }
        }
        RegFile {
            stored,
            latch_bytes: 0,
            latch_lost: 0,
            latch_pb_verified: 0,
            latch_pb_first_bad: u32::MAX,
            latch_pb_bytes: 0,
            stopping_until: None,
        }
    }

    fn get(&self, off: usize) -> u32 {
        self.stored[off / 4]
    }

    /// True while a slow stop still shows STATUS.RUNNING.
    fn still_stopping(&mut self) -> bool {
        match self.stopping_until {
            Some(t) if std::time::Instant::now() < t => true,
            Some(_) => {
                self.stopping_until = None;
                false
            }
            None => false,
        }
    }

    fn set(&mut self, off: usize, v: u32) {
        self.stored[off / 4] = v;
    }

    fn get64(&self, lo: usize) -> u64 {
        regs::join64(self.get(lo), self.get(lo + 4))
    }

    /// The latched session configuration (CTRL.MODE_BAR2 and registers 0x40..0x70).
    fn session(&self) -> SessionConfig {
        SessionConfig {
            bar2_mode: self.get(reg::CTRL) & ctrl::MODE_BAR2 != 0,
            desc_base: self.get64(reg::DESC_BASE_LO),
            comp_base: self.get64(reg::COMP_BASE_LO),
            event_base: self.get64(reg::EVENT_BASE_LO),
            ring_log2: self.get(reg::RING_LOG2),
            block: self.get(reg::BLOCK_SIZE),
            rate: self.get64(reg::RATE_LO),
            pattern: self.get(reg::PATTERN),
            seed: self.get64(reg::SEED_LO),
            loopback: false,
        }
    }

    /// The latched playback session configuration (registers 0x220..0x250).
    fn pb_session(&self) -> SessionConfig {
        SessionConfig {
            bar2_mode: false,
            desc_base: self.get64(reg::PB_DESC_BASE_LO),
            comp_base: self.get64(reg::PB_COMP_BASE_LO),
            event_base: self.get64(reg::PB_EVENT_BASE_LO),
            ring_log2: self.get(reg::PB_RING_LOG2),
            block: self.get(reg::PB_BLOCK_SIZE),
            rate: self.get64(reg::PB_RATE_LO),
            pattern: self.get(reg::PB_PATTERN),
            seed: self.get64(reg::PB_SEED_LO),
            loopback: false,
        }
    }
}

/// Checks a session configuration (section 7.1 step 2); `Err(detail)` names the first
/// failing check. `event_bytes` is the size of the channel's event area.
pub fn validate(
    cfg: &SessionConfig,
    fifo_depth: u32,
    bar2_size: u64,
    event_bytes: usize,
) -> Result<(), u16> {
    use regs::err::cfg as d;
    if !limits::ring_log2_valid(cfg.ring_log2) {
        return Err(d::RING_LOG2);
    }
    if !limits::block_size_valid(cfg.block, fifo_depth) {
        return Err(d::BLOCK_SIZE);
    }
    if !cfg.bar2_mode {
        // Each structure must also end inside the bus address space: the engine
        // addresses entries as base + index * size and must never wrap round to 0.
        let slots = 1u64 << cfg.ring_log2;
        let fits = |base: u64, bytes: usize| {
            limits::ring_base_valid(base) && limits::ring_fits(base, slots * bytes as u64)
        };
        if !fits(cfg.desc_base, regs::desc::SIZE) {
            return Err(d::DESC_BASE);
        }
        if !fits(cfg.comp_base, regs::comp::SIZE) {
            return Err(d::COMP_BASE);
        }
        if !(limits::ring_base_valid(cfg.event_base)
            && limits::ring_fits(cfg.event_base, event_bytes as u64))
        {
            return Err(d::EVENT_BASE);
        }
    }
    if !pattern::valid(cfg.pattern) {
        return Err(d::PATTERN);
    }
    if cfg.bar2_mode && !regs::bar2::layout_fits(bar2_size, cfg.ring_log2, cfg.block) {
        return Err(d::BAR2_LAYOUT);
    }
    Ok(())
}

/// BAR0 of one card: the register file, and the two channel engines its registers start
/// and stop. (The driver's `Card` is the whole device; this is only what BAR0 reaches.)
#[derive(Debug)]
pub struct Bar0 {
    shared: Arc<Shared>,
    engine: Engine,
    /// The playback engine (v1.1).
    pb_engine: Engine,
    regs: Mutex<RegFile>,
}

impl Bar0 {
    /// A card in its reset state, with its engine thread started.
    pub fn new(shared: Arc<Shared>) -> std::io::Result<Bar0> {
        let engine = crate::capture::spawn(Arc::clone(&shared))?;
        let pb_engine = crate::playback::spawn(Arc::clone(&shared))?;
        Ok(Bar0 {
            shared,
            engine,
            pb_engine,
            regs: Mutex::new(RegFile::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RegFile> {
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reg_error(&self, what: &str, offset: u64) {
        debug!(offset, "bad register access: {what}");
        self.shared.cnt.reg_errors.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.reg_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn check(offset: u64, len: usize) -> Result<(), OutOfRange> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= bar::BAR0_SIZE => Ok(()),
            _ => Err(OutOfRange {
                offset,
                len,
                size: bar::BAR0_SIZE,
            }),
        }
    }

    /// A BAR0 read of `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), OutOfRange> {
        Self::check(offset, data.len())?;
        self.shared.stats.reg_reads.fetch_add(1, Ordering::Relaxed);
        if self.shared.faults.hook(Site::RegisterRead) == Action::AllOnes {
            data.fill(0xFF);
            return Ok(());
        }
        if offset >= bar::REG_WINDOW_SIZE {
            data.fill(0); // MSI-X table (never reached) and PBA (always 0)
            return Ok(());
        }
        if !reg::access_ok(offset, data.len()) {
            self.reg_error("read width or alignment", offset);
            data.fill(0xFF);
            return Ok(());
        }
        let mut rf = self.lock();
        let v = self.read_reg(&mut rf, offset as usize);
        data.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn read_reg(&self, rf: &mut RegFile, off: usize) -> u32 {
        let sh = &self.shared;
        let ld = |a: &std::sync::atomic::AtomicU32| a.load(Ordering::SeqCst);
        match off {
            reg::ID => id::MAGIC,
            reg::VERSION => version::VALUE,
            reg::CAPS => caps::V1_1,
            reg::STATUS if rf.still_stopping() => ld(&sh.status) | status::RUNNING,
            reg::STATUS => ld(&sh.status),
            reg::ERROR_CODE => ld(&sh.error_code),
            reg::DOORBELL => 0,
            reg::IRQ_STATUS => ld(&sh.irq_status),
            reg::IRQ_MASK => ld(&sh.irq_mask),
            reg::IRQ_MOD_COUNT => ld(&sh.mod_count),
            reg::IRQ_MOD_TIME_US => ld(&sh.mod_time_us),
            reg::FIFO_DEPTH => sh.model.fifo_depth,
            reg::BAR2_SIZE => sh.model.bar2_size as u32,
            reg::DEV_PROD => ld(&sh.dev_prod),
            reg::DEV_CONS => ld(&sh.dev_cons),
            reg::BAR2_WR_PTR => ld(&sh.bar2_wr_ptr),
            reg::BAR2_DATA_OFF => ld(&sh.bar2_data_off),
            reg::CNT_BLOCKS => ld(&sh.cnt.blocks),
            reg::CNT_ERRORS => ld(&sh.cnt.errors),
            reg::CNT_IRQS => ld(&sh.cnt.irqs),
            reg::CNT_DOORBELLS => ld(&sh.cnt.doorbells),
            reg::CNT_BYTES_LO => {
                let v = sh.cnt.bytes.load(Ordering::SeqCst);
                rf.latch_bytes = regs::hi32(v);
                regs::lo32(v)
            }
            reg::CNT_BYTES_HI => rf.latch_bytes,
            reg::CNT_LOST_LO => {
                let v = sh.cnt.lost.load(Ordering::SeqCst);
                rf.latch_lost = regs::hi32(v);
                regs::lo32(v)
            }
            reg::CNT_LOST_HI => rf.latch_lost,
            reg::CNT_REG_ERRORS => ld(&sh.cnt.reg_errors),
            reg::PB_STATUS => ld(&sh.pb.status),
            reg::PB_ERROR_CODE => ld(&sh.pb.error_code),
            reg::PB_DOORBELL => 0,
            reg::PB_IRQ_MOD_COUNT => ld(&sh.pb.mod_count),
            reg::PB_IRQ_MOD_TIME_US => ld(&sh.pb.mod_time_us),
            reg::LOOPBACK => ld(&sh.loopback_reg),
            reg::PB_DEV_PROD => ld(&sh.pb.dev_prod),
            reg::PB_DEV_CONS => ld(&sh.pb.dev_cons),
            reg::PB_CNT_BLOCKS => ld(&sh.pb.blocks),
            reg::PB_CNT_UNDERRUNS => ld(&sh.pb.underruns),
            reg::PB_CNT_MISMATCH => ld(&sh.pb.mismatch),
            reg::PB_CNT_VERIFIED_LO => {
                let v = sh.pb.verified.load(Ordering::SeqCst);
                rf.latch_pb_verified = regs::hi32(v);
                regs::lo32(v)
            }
            reg::PB_CNT_VERIFIED_HI => rf.latch_pb_verified,
            reg::PB_FIRST_BAD_LO => {
                let v = sh.pb.first_bad.load(Ordering::SeqCst);
                rf.latch_pb_first_bad = regs::hi32(v);
                regs::lo32(v)
            }
            reg::PB_FIRST_BAD_HI => rf.latch_pb_first_bad,
            reg::PB_CNT_BYTES_LO => {
                let v = sh.pb.bytes.load(Ordering::SeqCst);
                rf.latch_pb_bytes = regs::hi32(v);
                regs::lo32(v)
            }
            reg::PB_CNT_BYTES_HI => rf.latch_pb_bytes,
            o if o == reg::SCRATCH
                || o == reg::CTRL
                || o == reg::PB_CTRL
                || reg::is_session_config(o)
                || reg::is_pb_session_config(o) =>
            {
                rf.get(o)
            }
            _ => 0, // reserved
        }
    }

    /// A BAR0 write of `data` at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        Self::check(offset, data.len())?;
        self.shared.stats.reg_writes.fetch_add(1, Ordering::Relaxed);
        if self.shared.faults.hook(Site::RegisterWrite) == Action::Ignore {
            return Ok(());
        }
        if offset >= bar::REG_WINDOW_SIZE {
            return Ok(());
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.reg_error("write width", offset);
            return Ok(());
        };
        if !reg::access_ok(offset, 4) {
            self.reg_error("write alignment", offset);
            return Ok(());
        }
        let v = u32::from_le_bytes(bytes);
        let mut rf = self.lock();
        self.write_reg(&mut rf, offset as usize, v);
        Ok(())
    }

    fn write_reg(&self, rf: &mut RegFile, off: usize, v: u32) {
        let sh = &self.shared;
        let Some(info) = regs::reg_info(off) else {
            return; // reserved: ignored, not counted
        };
        let v = v & info.write_mask;
        match off {
            reg::SCRATCH => rf.set(off, v),
            reg::CTRL => self.write_ctrl(rf, v),
            reg::STATUS => sh.clear_status(v),
            reg::DOORBELL => {
                sh.cnt.doorbells.fetch_add(1, Ordering::Relaxed);
                sh.stats.doorbells.fetch_add(1, Ordering::Relaxed);
                self.engine.doorbell();
            }
            reg::IRQ_STATUS => {
                sh.irq_status.fetch_and(!v, Ordering::SeqCst);
            }
            reg::IRQ_MASK => sh.irq_mask.store(v, Ordering::SeqCst),
            reg::IRQ_MOD_COUNT => sh.mod_count.store(v, Ordering::SeqCst),
            reg::IRQ_MOD_TIME_US => sh.mod_time_us.store(v, Ordering::SeqCst),
            reg::PB_CTRL => self.write_pb_ctrl(rf, v),
            reg::PB_STATUS => sh.clear_pb_status(v),
            reg::PB_DOORBELL => {
                sh.stats.pb_doorbells.fetch_add(1, Ordering::Relaxed);
                self.pb_engine.doorbell();
            }
            reg::PB_IRQ_MOD_COUNT => sh.pb.mod_count.store(v, Ordering::SeqCst),
            reg::PB_IRQ_MOD_TIME_US => sh.pb.mod_time_us.store(v, Ordering::SeqCst),
            reg::LOOPBACK => sh.loopback_reg.store(v, Ordering::SeqCst),
            o if reg::is_pb_session_config(o) => {
                let enabled = PbCtrl(rf.get(reg::PB_CTRL)).enable();
                let running = sh.pb.status.load(Ordering::SeqCst) & pb_status::RUNNING != 0;
                if enabled || running {
                    self.reg_error(
                        "playback session configuration written while enabled",
                        off as u64,
                    );
                } else {
                    rf.set(o, v);
                }
            }
            o if reg::is_session_config(o) => {
                let enabled = Ctrl(rf.get(reg::CTRL)).enable();
                let running = sh.status.load(Ordering::SeqCst) & status::RUNNING != 0;
                if enabled || running {
                    self.reg_error("session configuration written while enabled", off as u64);
                } else {
                    rf.set(o, v);
                }
            }
            _ => {} // RO: ignored, not counted
        }
    }

    fn write_ctrl(&self, rf: &mut RegFile, v: u32) {
        if v & ctrl::SOFT_RESET != 0 {
            info!("soft reset");
            self.reset_locked(rf);
            return;
        }
        let cur = rf.get(reg::CTRL);
        let enabled = Ctrl(cur).enable();
        let mut new = cur;
        if (v ^ cur) & ctrl::MODE_BAR2 != 0 {
            if enabled {
                self.reg_error("MODE_BAR2 changed while enabled", reg::CTRL as u64);
            } else {
                new ^= ctrl::MODE_BAR2;
            }
        }
        match (enabled, v & ctrl::ENABLE != 0) {
            (false, true) => {
                if self.shared.status.load(Ordering::SeqCst) & status::RUNNING != 0
                    || rf.still_stopping()
                {
                    self.reg_error("ENABLE set while a stop is in progress", reg::CTRL as u64);
                } else {
                    new |= ctrl::ENABLE;
                    rf.set(reg::CTRL, new);
                    self.enable(rf);
                    return;
                }
            }
            (true, false) => {
                self.engine.stop();
                self.shared
                    .status
                    .fetch_and(!status::HALTED, Ordering::SeqCst);
                new &= !ctrl::ENABLE;
                if let Action::Stall(d) = self.shared.faults.hook(Site::Stop) {
                    info!(ms = d.as_millis() as u64, "fault: slow stop");
                    rf.stopping_until = Some(std::time::Instant::now() + d);
                }
            }
            _ => {}
        }
        rf.set(reg::CTRL, new);
    }

    fn write_pb_ctrl(&self, rf: &mut RegFile, v: u32) {
        let enabled = PbCtrl(rf.get(reg::PB_CTRL)).enable();
        match (enabled, v & pb_ctrl::ENABLE != 0) {
            (false, true) => {
                if self.shared.pb.status.load(Ordering::SeqCst) & pb_status::RUNNING != 0 {
                    self.reg_error(
                        "PB_CTRL.ENABLE set while a stop is in progress",
                        reg::PB_CTRL as u64,
                    );
                    return;
                }
                rf.set(reg::PB_CTRL, pb_ctrl::ENABLE);
                self.pb_enable(rf);
            }
            (true, false) => {
                self.pb_engine.stop();
                self.shared
                    .pb
                    .status
                    .fetch_and(!pb_status::HALTED, Ordering::SeqCst);
                rf.set(reg::PB_CTRL, 0);
            }
            _ => {}
        }
    }

    /// PB_CTRL.ENABLE 0->1: latch and validate the playback configuration (the capture
    /// checks, in the same order and with the same details), then start the engine.
    fn pb_enable(&self, rf: &RegFile) {
        let sh = &self.shared;
        let cfg = rf.pb_session();
        match validate(
            &cfg,
            sh.model.fifo_depth,
            sh.model.bar2_size,
            regs::pb_event::SIZE,
        ) {
            Ok(()) => self.pb_engine.start(cfg),
            Err(detail) => {
                info!(detail, "playback enable refused: CONFIG error");
                sh.record_pb_error(err::CONFIG, detail);
                sh.pb.status.fetch_or(pb_status::HALTED, Ordering::SeqCst);
                sh.stats.pb_halts.fetch_add(1, Ordering::Relaxed);
                sh.raise(irq::PB_EVENT);
            }
        }
    }

    /// ENABLE 0->1: latch and validate the session configuration, then start the engine.
    fn enable(&self, rf: &RegFile) {
        let sh = &self.shared;
        let mut cfg = rf.session();
        cfg.loopback = sh.loopback_reg.load(Ordering::SeqCst) & loopback::ENABLE != 0;
        match validate(
            &cfg,
            sh.model.fifo_depth,
            sh.model.bar2_size,
            regs::event::SIZE,
        ) {
            Ok(()) => self.engine.start(cfg),
            Err(detail) => {
                info!(detail, "enable refused: CONFIG error");
                sh.record_error(err::CONFIG, detail);
                sh.status.fetch_or(status::HALTED, Ordering::SeqCst);
                sh.stats.halts.fetch_add(1, Ordering::Relaxed);
                sh.raise(irq::ERROR);
                sh.raise(irq::HALTED);
            }
        }
    }

    fn reset_locked(&self, rf: &mut RegFile) {
        self.engine.stop();
        self.pb_engine.stop();
        self.shared.faults.clear();
        self.shared.reset_registers();
        *rf = RegFile::new();
        self.shared.stats.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Resets the function (soft reset, FLR, vfio-user reset): the engine stops before this
    /// returns, every register returns to its reset value, faults are cleared.
    pub fn reset(&self) {
        let mut rf = self.lock();
        self.reset_locked(&mut rf);
    }

    /// Stops the engine (process shutdown), leaving the registers as they are.
    pub fn stop_engine(&self) {
        self.engine.stop();
        self.pb_engine.stop();
    }

    /// True while a session is active.
    pub fn engine_busy(&self) -> bool {
        self.engine.busy()
    }

    /// True while a playback session is active.
    pub fn pb_engine_busy(&self) -> bool {
        self.pb_engine.busy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    fn cfg() -> SessionConfig {
        SessionConfig {
            bar2_mode: false,
            desc_base: 0x1000,
            comp_base: 0x2000,
            event_base: 0x3000,
            ring_log2: 8,
            block: 4096,
            rate: 0,
            pattern: 0,
            seed: 0,
            loopback: false,
        }
    }

    const E: usize = regs::event::SIZE;

    #[test]
    fn validation_order_and_details() {
        let f = 1 << 20;
        let b2 = 1 << 20;
        assert_eq!(validate(&cfg(), f, b2, E), Ok(()));
        let bad = |m: fn(&mut SessionConfig)| {
            let mut c = cfg();
            m(&mut c);
            validate(&c, f, b2, E)
        };
        assert_eq!(bad(|c| c.ring_log2 = 0), Err(1));
        assert_eq!(bad(|c| c.ring_log2 = 16), Err(1));
        assert_eq!(bad(|c| c.block = 100), Err(2));
        assert_eq!(bad(|c| c.block = 2 << 20), Err(2));
        assert_eq!(bad(|c| c.desc_base = 0x1020), Err(3));
        assert_eq!(bad(|c| c.comp_base = 0), Err(4));
        assert_eq!(bad(|c| c.event_base = 8), Err(5));
        // Structures that would wrap the bus address space (the event page used to be
        // written at bus address 0 from EVENT_BASE = 2^64 - 64).
        assert_eq!(bad(|c| c.event_base = 0xFFFF_FFFF_FFFF_FFC0), Err(5));
        assert_eq!(bad(|c| c.event_base = 0xFFFF_FFFF_FFFF_FF00), Ok(()));
        assert_eq!(bad(|c| c.desc_base = 0xFFFF_FFFF_FFFF_F040), Err(3));
        assert_eq!(bad(|c| c.desc_base = 0xFFFF_FFFF_FFFF_F000), Ok(()));
        assert_eq!(bad(|c| c.comp_base = 0xFFFF_FFFF_FFFF_F000), Err(4));
        assert_eq!(bad(|c| c.pattern = 3), Err(6));
        assert_eq!(
            bad(|c| {
                c.bar2_mode = true;
                c.desc_base = 0;
                c.ring_log2 = 9;
            }),
            Err(7)
        );
        // Several problems: the first check in order wins.
        assert_eq!(
            bad(|c| {
                c.block = 3;
                c.pattern = 9;
            }),
            Err(2)
        );
    }

    #[test]
    fn register_file_rules() {
        let sh = Shared::new(ModelConfig::default()).unwrap();
        let card = Bar0::new(Arc::clone(&sh)).unwrap();
        let rd = |off: u64| {
            let mut b = [0u8; 4];
            card.read(off, &mut b).unwrap();
            u32::from_le_bytes(b)
        };
        let wr = |off: u64, v: u32| card.write(off, &v.to_le_bytes()).unwrap();
        for r in regs::REGISTERS.iter() {
            assert_eq!(rd(r.offset as u64), r.reset, "{} reset value", r.name);
        }
        wr(reg::ID as u64, 5);
        assert_eq!(rd(reg::ID as u64), id::MAGIC);
        wr(reg::PATTERN as u64, 0xFFFF_FFFF);
        assert_eq!(rd(reg::PATTERN as u64), pattern::REG_MASK);
        let mut b2 = [0u8; 2];
        card.read(0, &mut b2).unwrap();
        assert_eq!(b2, [0xFF, 0xFF]);
        assert_eq!(rd(reg::CNT_REG_ERRORS as u64), 1);
        assert_eq!(rd(0x1000), 0);
        assert_eq!(rd(0x3000), 0);
        assert_eq!(rd(reg::CNT_REG_ERRORS as u64), 1);
        assert!(card.read(0x3FFE, &mut [0u8; 4]).is_err());
    }
}

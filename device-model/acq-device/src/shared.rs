//! Card state shared by the register file (host side) and the capture engine (device
//! side): status, error and interrupt-cause registers, counters, and the paths to the
//! outside world (DMA maps, BAR2 memory, interrupt lines, fault plan).
//!
//! Everything the engine touches per block is an atomic, so the hot path takes no lock
//! that a register access needs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::ModelConfig;
use crate::dma::{DmaSpace, MemView};
use crate::faults::{Action, FaultPlan, Site};
use crate::irq::IrqLines;
use crate::memfd::Memfd;
use crate::regs::{err, irq, msix, pb_status, status};

/// The counters that BAR0 exposes (32-bit ones wrap; cleared by reset).
#[derive(Debug, Default)]
pub struct RegCounters {
    /// CNT_BLOCKS.
    pub blocks: AtomicU32,
    /// CNT_ERRORS.
    pub errors: AtomicU32,
    /// CNT_IRQS.
    pub irqs: AtomicU32,
    /// CNT_DOORBELLS.
    pub doorbells: AtomicU32,
    /// CNT_BYTES.
    pub bytes: AtomicU64,
    /// CNT_LOST.
    pub lost: AtomicU64,
    /// CNT_REG_ERRORS.
    pub reg_errors: AtomicU32,
}

impl RegCounters {
    fn clear(&self) {
        for c in [
            &self.blocks,
            &self.errors,
            &self.irqs,
            &self.doorbells,
            &self.reg_errors,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.bytes.store(0, Ordering::Relaxed);
        self.lost.store(0, Ordering::Relaxed);
    }
}

/// The playback channel's registers and BAR0 counters (v1.1; cleared by reset).
#[derive(Debug)]
pub struct PbRegs {
    /// PB_STATUS.
    pub status: AtomicU32,
    /// PB_ERROR_CODE.
    pub error_code: AtomicU32,
    /// PB_IRQ_MOD_COUNT.
    pub mod_count: AtomicU32,
    /// PB_IRQ_MOD_TIME_US.
    pub mod_time_us: AtomicU32,
    /// PB_DEV_PROD.
    pub dev_prod: AtomicU32,
    /// PB_DEV_CONS.
    pub dev_cons: AtomicU32,
    /// PB_CNT_BLOCKS.
    pub blocks: AtomicU32,
    /// PB_CNT_UNDERRUNS.
    pub underruns: AtomicU32,
    /// PB_CNT_MISMATCH.
    pub mismatch: AtomicU32,
    /// PB_CNT_VERIFIED.
    pub verified: AtomicU64,
    /// PB_CNT_BYTES.
    pub bytes: AtomicU64,
    /// PB_FIRST_BAD (all-ones: none in this session).
    pub first_bad: AtomicU64,
}

impl Default for PbRegs {
    fn default() -> PbRegs {
        PbRegs {
            status: AtomicU32::new(0),
            error_code: AtomicU32::new(0),
            mod_count: AtomicU32::new(0),
            mod_time_us: AtomicU32::new(0),
            dev_prod: AtomicU32::new(0),
            dev_cons: AtomicU32::new(0),
            blocks: AtomicU32::new(0),
            underruns: AtomicU32::new(0),
            mismatch: AtomicU32::new(0),
            verified: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            first_bad: AtomicU64::new(u64::MAX),
        }
    }
}

impl PbRegs {
    fn clear(&self) {
        for c in [
            &self.status,
            &self.error_code,
            &self.mod_count,
            &self.mod_time_us,
            &self.dev_prod,
            &self.dev_cons,
            &self.blocks,
            &self.underruns,
            &self.mismatch,
        ] {
            c.store(0, Ordering::SeqCst);
        }
        self.verified.store(0, Ordering::SeqCst);
        self.bytes.store(0, Ordering::SeqCst);
        self.first_bad.store(u64::MAX, Ordering::SeqCst);
    }
}

/// The loopback path (docs/device.md 19.7): bytes the playback channel accepted, waiting
/// for the capture channel of a loopback session. Holds whole bytes (unlike the capture
/// source's FIFO, which holds block numbers), since looped data is whatever the host sent.
#[derive(Debug, Default)]
pub struct LoopFifo {
    /// A loopback capture session is running: the playback channel feeds this FIFO.
    pub active: bool,
    /// Capacity in bytes (the capture FIFO depth).
    pub capacity: usize,
    /// The bytes, oldest first.
    pub data: std::collections::VecDeque<u8>,
}

impl LoopFifo {
    /// Room for `n` more bytes.
    pub fn has_room(&self, n: usize) -> bool {
        self.data.len() + n <= self.capacity
    }
}

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Model statistics for the control socket: 64-bit, counted since the process
        /// started, never reset (take differences). The list is `acq_wire::card_stats!`,
        /// the one the control socket's reply type is made from.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

acq_wire::card_stats!(stats);

/// A snapshot of [`Stats`]: the statistics part of the control socket's `counters` reply.
pub type StatsSnapshot = acq_wire::counters::CardStats;

/// The state shared by the register file and the engine.
#[derive(Debug)]
pub struct Shared {
    /// Model settings.
    pub model: ModelConfig,
    /// STATUS.
    pub status: AtomicU32,
    /// ERROR_CODE.
    pub error_code: AtomicU32,
    /// IRQ_STATUS.
    pub irq_status: AtomicU32,
    /// IRQ_MASK.
    pub irq_mask: AtomicU32,
    /// IRQ_MOD_COUNT.
    pub mod_count: AtomicU32,
    /// IRQ_MOD_TIME_US.
    pub mod_time_us: AtomicU32,
    /// DEV_PROD.
    pub dev_prod: AtomicU32,
    /// DEV_CONS.
    pub dev_cons: AtomicU32,
    /// BAR2_WR_PTR.
    pub bar2_wr_ptr: AtomicU32,
    /// BAR2_DATA_OFF.
    pub bar2_data_off: AtomicU32,
    /// BAR0 counters.
    pub cnt: RegCounters,
    /// Control-socket statistics.
    pub stats: Stats,
    /// DMA maps of the current connection.
    pub dma: DmaSpace,
    /// BAR2 sample memory.
    pub bar2: Memfd,
    /// BAR2 as a memory view at bus address 0 (BAR2 mode).
    pub bar2_view: MemView,
    /// Interrupt lines.
    pub irq: IrqLines,
    /// Fault plan.
    pub faults: FaultPlan,
    /// Playback channel registers (v1.1).
    pub pb: PbRegs,
    /// LOOPBACK register.
    pub loopback_reg: AtomicU32,
    /// The loopback path from the playback to the capture channel.
    pub loopback: Mutex<LoopFifo>,
    /// Serialises updates of ERROR_CODE with STATUS.ERROR.
    error_lock: Mutex<()>,
}

impl Shared {
    /// Fresh state for a card with settings `model` (BAR2 memory allocated here).
    pub fn new(model: ModelConfig) -> std::io::Result<Arc<Shared>> {
        let bar2 = Memfd::new("acq-bar2", model.bar2_size as usize)?;
        let bar2_view = MemView::single(bar2.region());
        let irq = if model.msix_enable_fails {
            IrqLines::new(model.msix_vectors, model.msi).refusing_msix()
        } else {
            IrqLines::new(model.msix_vectors, model.msi)
        };
        Ok(Arc::new(Shared {
            status: AtomicU32::new(0),
            error_code: AtomicU32::new(0),
            irq_status: AtomicU32::new(0),
            irq_mask: AtomicU32::new(irq::ALL),
            mod_count: AtomicU32::new(0),
            mod_time_us: AtomicU32::new(0),
            dev_prod: AtomicU32::new(0),
            dev_cons: AtomicU32::new(0),
            bar2_wr_ptr: AtomicU32::new(0),
            bar2_data_off: AtomicU32::new(0),
            cnt: RegCounters::default(),
            stats: Stats::default(),
            dma: DmaSpace::new(),
            bar2,
            bar2_view,
            irq,
            faults: FaultPlan::new(),
            pb: PbRegs::default(),
            loopback_reg: AtomicU32::new(0),
            loopback: Mutex::new(LoopFifo::default()),
            error_lock: Mutex::new(()),
            model,
        }))
    }

    /// Returns the registers the engine shares to their reset values (the engine must be
    /// stopped).
    pub fn reset_registers(&self) {
        for (r, v) in [
            (&self.status, 0),
            (&self.error_code, 0),
            (&self.irq_status, 0),
            (&self.irq_mask, irq::ALL),
            (&self.mod_count, 0),
            (&self.mod_time_us, 0),
            (&self.dev_prod, 0),
            (&self.dev_cons, 0),
            (&self.bar2_wr_ptr, 0),
            (&self.bar2_data_off, 0),
        ] {
            r.store(v, Ordering::SeqCst);
        }
        self.cnt.clear();
        self.pb.clear();
        self.loopback_reg.store(0, Ordering::SeqCst);
        *self.loop_fifo() = LoopFifo::default();
    }

    /// The loopback FIFO.
    pub fn loop_fifo(&self) -> std::sync::MutexGuard<'_, LoopFifo> {
        self.loopback.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records playback error `code` with `detail` in PB_ERROR_CODE and PB_STATUS.ERROR
    /// and counts it (the caller raises cause PB_EVENT).
    pub fn record_pb_error(&self, code: u8, detail: u16) {
        let _g = self.error_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.pb
            .error_code
            .store(err::make(code, detail), Ordering::SeqCst);
        self.pb.status.fetch_or(pb_status::ERROR, Ordering::SeqCst);
        self.stats.pb_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// PB_STATUS write-1-to-clear (clearing ERROR also clears PB_ERROR_CODE).
    pub fn clear_pb_status(&self, bits: u32) {
        let bits = bits & pb_status::W1C_MASK;
        let _g = self.error_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.pb.status.fetch_and(!bits, Ordering::SeqCst);
        if bits & pb_status::ERROR != 0 {
            self.pb.error_code.store(0, Ordering::SeqCst);
        }
    }

    /// Records error `code` with `detail` in ERROR_CODE and STATUS.ERROR and counts it
    /// (the caller raises cause ERROR).
    pub fn record_error(&self, code: u8, detail: u16) {
        let _g = self.error_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.error_code
            .store(err::make(code, detail), Ordering::SeqCst);
        self.status.fetch_or(status::ERROR, Ordering::SeqCst);
        self.cnt.errors.fetch_add(1, Ordering::Relaxed);
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// STATUS write-1-to-clear (clearing ERROR also clears ERROR_CODE).
    pub fn clear_status(&self, bits: u32) {
        let bits = bits & status::W1C_MASK;
        let _g = self.error_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.status.fetch_and(!bits, Ordering::SeqCst);
        if bits & status::ERROR != 0 {
            self.error_code.store(0, Ordering::SeqCst);
        }
    }

    /// Raises interrupt cause `cause` (one `irq::*` bit): latches it in IRQ_STATUS and, if
    /// unmasked, sends a message on its vector. Returns true if a message was sent.
    pub fn raise(&self, cause: u32) -> bool {
        self.irq_status.fetch_or(cause, Ordering::SeqCst);
        if self.irq_mask.load(Ordering::SeqCst) & cause != 0 {
            self.stats.irqs_suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let vector = irq::vector_of(cause);
        self.send(vector)
    }

    /// Sends one message on `vector` through the interrupt fault hook.
    pub fn send(&self, vector: u16) -> bool {
        let site = if vector == msix::VEC_PLAYBACK {
            Site::PbInterrupt
        } else {
            Site::Interrupt
        };
        match self.faults.hook(site) {
            Action::Proceed => {}
            _ => {
                self.stats.irqs_dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        if !self.irq.trigger(vector) {
            self.stats.irqs_suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.cnt.irqs.fetch_add(1, Ordering::Relaxed);
        self.stats.irqs.fetch_add(1, Ordering::Relaxed);
        if vector == msix::VEC_CAPTURE {
            self.stats.irqs_capture.fetch_add(1, Ordering::Relaxed);
        } else if vector == msix::VEC_PLAYBACK {
            self.stats.irqs_playback.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.irqs_error.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

//! The card as a whole: configuration space, BAR0 register file, BAR2 sample memory, DMA
//! maps and interrupt lines, behind the transport-neutral [`PciFunction`] trait, plus the
//! model's control operations (counters, faults, reset).

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::{info, warn};

use crate::bar0::Bar0;
use crate::config::ModelConfig;
use crate::config_space::ConfigSpace;
use crate::faults::{CardFault, Fault, Pending};
use crate::regs::{self, bar, pci};
use crate::shared::Shared;
use crate::transport::{DmaRequest, IrqRequest, PciFunction, PciLayout};
use acq_wire::counters::CardCounters;

/// One pcie-acq card.
#[derive(Debug)]
pub struct Device {
    shared: Arc<Shared>,
    bar0: Bar0,
    config: Mutex<ConfigSpace>,
    /// A vfio-user client made a device request and has not gone away (its
    /// disconnection's reset is done once this is false again).
    client: std::sync::atomic::AtomicBool,
    /// Vectors with an interrupt storm running (a bit per vector).
    storms: Arc<std::sync::atomic::AtomicU32>,
    /// Bumped by `clear_faults`: a storm started under another value ends.
    storm_epoch: Arc<std::sync::atomic::AtomicU64>,
}

/// What the control socket reports for `{"cmd":"counters"}`: the shared reply type, and
/// the faults still armed.
#[derive(Clone, Debug, Serialize)]
pub struct Counters {
    /// The counters and registers (`acq_wire::counters::CardCounters`).
    #[serde(flatten)]
    pub card: CardCounters,
    /// Faults still armed.
    pub faults_pending: Pending,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

impl Device {
    /// A card with settings `model`, in its reset state.
    pub fn new(model: ModelConfig) -> io::Result<Arc<Device>> {
        model.validate().map_err(invalid)?;
        let config = ConfigSpace::new(&model);
        let shared = Shared::new(model)?;
        let bar0 = Bar0::new(Arc::clone(&shared))?;
        Ok(Arc::new(Device {
            shared,
            bar0,
            config: Mutex::new(config),
            client: std::sync::atomic::AtomicBool::new(false),
            storms: Arc::default(),
            storm_epoch: Arc::default(),
        }))
    }

    /// The card's shared state (tests, benches).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The regions and interrupts the transport announces.
    pub fn layout(&self) -> PciLayout {
        PciLayout {
            config_size: pci::CONFIG_SPACE_SIZE as u64,
            bar0_size: bar::BAR0_SIZE,
            bar2_size: self.shared.model.bar2_size,
            bar2_fd: self.shared.bar2.raw_fd(),
            irqs: (0..self.shared.irq.num_indexes())
                .map(|i| self.shared.irq.info(i))
                .collect(),
        }
    }

    /// Function-level reset: configuration space and card (engine stopped first).
    pub fn function_reset(&self) {
        self.bar0.reset();
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
    }

    /// The counters the control socket reports.
    pub fn counters(&self) -> Counters {
        let mut stats = self.shared.stats.snapshot();
        stats.faults_fired = self.shared.faults.fired();
        Counters {
            card: CardCounters {
                stats,
                status: self.shared.status.load(Ordering::SeqCst),
                error_code: self.shared.error_code.load(Ordering::SeqCst),
                running: self.bar0.engine_busy(),
                pb_status: self.shared.pb.status.load(Ordering::SeqCst),
                pb_error_code: self.shared.pb.error_code.load(Ordering::SeqCst),
                pb_running: self.bar0.pb_engine_busy(),
                pb_first_bad_offset: match self.shared.pb.first_bad.load(Ordering::SeqCst) {
                    u64::MAX => None,
                    v => Some(v),
                },
                client_connected: self.client.load(Ordering::Acquire),
            },
            faults_pending: self.shared.faults.pending(),
        }
    }

    /// `Err` unless `vector` (MSI-X numbering) exists. An MSI-only card maps the ones it
    /// signals onto its single MSI message.
    fn check_vector(&self, vector: u16) -> Result<(), String> {
        let vectors = match self.shared.model.msix_vectors {
            0 => regs::msix::VECTORS,
            n => n,
        };
        if vector >= vectors {
            return Err(format!(
                "vector {vector} does not exist (the card has {vectors})"
            ));
        }
        Ok(())
    }

    /// Arms a fault (a spurious interrupt is sent at once).
    pub fn inject(&self, fault: Fault) -> Result<(), String> {
        info!(?fault, "fault injected");
        match fault.fault {
            CardFault::SpuriousIrq { count, vector } => {
                // Vectors are MSI-X numbers; an MSI-only card maps the ones it signals
                // onto its single MSI message.
                self.check_vector(vector)?;
                for _ in 0..count {
                    if self.shared.send(vector) {
                        self.shared
                            .stats
                            .irqs_spurious
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            CardFault::ConfigChange { kind: what } => {
                self.config
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .change(what);
                Ok(())
            }
            CardFault::IrqStorm { vector, rate, ms } => {
                self.check_vector(vector)?;
                // One storm per vector at a time: a client cannot pile up threads.
                let bit = 1u32 << vector.min(31);
                // The epoch is read before the storm counts as running: a clear_faults in
                // between ends it at its first check (read after, it would run its `ms`
                // while that clear_faults waited for it).
                let epoch = Arc::clone(&self.storm_epoch);
                let started = epoch.load(Ordering::Acquire);
                let storms = Arc::clone(&self.storms);
                if storms.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
                    return Err(format!("vector {vector} has a storm running already"));
                }
                let shared = Arc::clone(&self.shared);
                std::thread::Builder::new()
                    .name("acq-irq-storm".into())
                    .spawn(move || {
                        storm(&shared, vector, rate, ms, &|| {
                            epoch.load(Ordering::Acquire) != started
                        });
                        storms.fetch_and(!bit, Ordering::AcqRel);
                    })
                    .map_err(|e| {
                        self.storms.fetch_and(!bit, Ordering::AcqRel);
                        format!("starting the storm: {e}")
                    })?;
                Ok(())
            }
            _ => self.shared.faults.inject(fault),
        }
    }

    /// Disarms every fault and ends every interrupt storm: when this returns `Ok`, no
    /// storm sends another message (a storm checks every 100 us or so). `Err` if one still
    /// runs after a second (its thread starved of the CPU).
    pub fn clear_faults(&self) -> Result<(), String> {
        self.shared.faults.clear();
        self.storm_epoch.fetch_add(1, Ordering::AcqRel);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let running = self.storms.load(Ordering::Acquire);
            if running == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "an interrupt storm still runs a second after clear_faults (vectors {running:#x})"
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Stops DMA for good (process shutdown).
    pub fn shutdown(&self) {
        self.bar0.stop_engine();
    }
}

impl PciFunction for Device {
    fn config_read(&self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        self.shared
            .stats
            .config_reads
            .fetch_add(1, Ordering::Relaxed);
        let c = self.config.lock().unwrap_or_else(|e| e.into_inner());
        c.read(offset, data).map_err(invalid)
    }

    fn config_write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.shared
            .stats
            .config_writes
            .fetch_add(1, Ordering::Relaxed);
        let effect = {
            let mut c = self.config.lock().unwrap_or_else(|e| e.into_inner());
            c.write(offset, data).map_err(invalid)?
        };
        if effect.flr {
            info!("function level reset (Initiate FLR)");
            self.function_reset();
        }
        Ok(())
    }

    fn bar_read(&self, bar: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        match bar {
            bar::BAR0_INDEX => self.bar0.read(offset, data).map_err(invalid),
            bar::BAR2_INDEX => {
                let b = self.shared.bar2.read_bytes(offset, data.len());
                if b.len() != data.len() {
                    return Err(invalid(format!(
                        "BAR2 read {offset:#x}+{} out of range",
                        data.len()
                    )));
                }
                data.copy_from_slice(&b);
                Ok(())
            }
            other => Err(invalid(format!("BAR{other} does not exist"))),
        }
    }

    fn bar_write(&self, bar: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        match bar {
            bar::BAR0_INDEX => self.bar0.write(offset, data).map_err(invalid),
            bar::BAR2_INDEX => {
                if self.shared.bar2.write_bytes(offset, data) {
                    Ok(())
                } else {
                    Err(invalid(format!(
                        "BAR2 write {offset:#x}+{} out of range",
                        data.len()
                    )))
                }
            }
            other => Err(invalid(format!("BAR{other} does not exist"))),
        }
    }

    fn dma_map(&self, req: DmaRequest, file: Option<File>) -> io::Result<()> {
        self.shared
            .dma
            .map(req.address, req.size, file, req.offset, req.read, req.write)
            .map_err(|e| {
                warn!("DMA map refused: {e}");
                invalid(e)
            })?;
        self.shared.stats.dma_maps.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn dma_unmap(&self, address: u64, size: u64, all: bool) -> io::Result<()> {
        self.shared.stats.dma_unmaps.fetch_add(1, Ordering::Relaxed);
        if all {
            self.shared.dma.unmap_all();
            return Ok(());
        }
        self.shared.dma.unmap(address, size).map_err(|e| {
            warn!("DMA unmap refused: {e}");
            invalid(e)
        })
    }

    fn set_irqs(&self, req: IrqRequest, fds: Vec<File>) -> io::Result<()> {
        self.shared
            .irq
            .set(req.index, req.flags, req.start, req.count, fds)
            .map_err(|e| {
                warn!("SET_IRQS refused: {e}");
                invalid(e)
            })
    }

    fn reset(&self) {
        info!("device reset (vfio-user)");
        self.function_reset();
    }

    fn connected(&self) {
        self.client.store(true, Ordering::Release);
        self.shared
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
    }

    fn disconnected(&self) {
        // A new connection must find a reset device without maps or interrupts.
        self.function_reset();
        self.shared.irq.clear();
        self.shared.dma.unmap_all();
        self.client.store(false, Ordering::Release);
    }
}

impl crate::control::ControlTarget for Device {
    fn counters(&self) -> serde_json::Value {
        serde_json::to_value(Device::counters(self)).unwrap_or_default()
    }

    fn inject(&self, fault: Fault) -> Result<(), String> {
        Device::inject(self, fault)
    }

    fn clear_faults(&self) -> Result<(), String> {
        Device::clear_faults(self)
    }

    /// The card resets itself (the `reset` fault: a firmware or logic reset mid-stream):
    /// engine stopped, registers at their reset values, faults disarmed. Config space is
    /// left alone: only the host resets it (FLR, vfio-user reset), and a card that cleared
    /// its own command register behind the host's back made the next probe's read-modify-
    /// write of it turn memory decoding off: BAR2 did not map and the card read ID 0 for
    /// good (found by `acq soak`; tests/scenarios/fault-reset-then-reload.json).
    fn reset(&self) {
        info!("card reset (control socket; config space kept)");
        self.bar0.reset();
    }
}

/// Sends `rate` messages a second on `vector` for `ms` milliseconds, each counted as
/// spurious. Paced by the clock: a message is due every `1/rate` s; the thread wakes
/// every 100 us or so and sends what is due, at most one millisecond's worth at a time;
/// it ends early once `cleared` says so (the control socket's `clear_faults`).
fn storm(shared: &Shared, vector: u16, rate: u64, ms: u64, cleared: &dyn Fn() -> bool) {
    let start = std::time::Instant::now();
    let end = std::time::Duration::from_millis(ms);
    let mut sent = 0u64;
    info!(vector, rate, ms, "interrupt storm");
    loop {
        let t = start.elapsed();
        if t >= end || cleared() {
            break;
        }
        let due = (t.as_micros() as u64).saturating_mul(rate) / 1_000_000;
        let burst = due.saturating_sub(sent).min((rate / 1000).max(1));
        for _ in 0..burst {
            if shared.send(vector) {
                shared.stats.irqs_spurious.fetch_add(1, Ordering::Relaxed);
            }
        }
        sent += burst;
        // Sleep between bursts: a spinning storm thread would starve the VMM of the CPU
        // it needs to deliver the storm.
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    info!(vector, sent, "interrupt storm over");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `clear_faults` ends a storm still running (a harness hands the card to the next
    /// scenario after it: a storm of the one before must not reach that one), and the
    /// vector takes a new storm at once.
    #[test]
    fn clearing_the_faults_ends_an_interrupt_storm() {
        let d = Device::new(ModelConfig::default()).expect("a card");
        let storm = || {
            Fault::capture(CardFault::IrqStorm {
                vector: 1,
                rate: 1000,
                ms: 60_000,
            })
        };
        d.inject(storm()).expect("a storm starts");
        assert_ne!(d.storms.load(Ordering::Acquire), 0, "the storm runs");
        let e = d.inject(storm()).expect_err("one storm a vector");
        assert!(e.contains("already"), "{e}");
        let t = std::time::Instant::now();
        d.clear_faults().expect("the storm ends");
        assert_eq!(d.storms.load(Ordering::Acquire), 0, "the storm still runs");
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
        d.inject(storm()).expect("a new storm on the same vector");
        d.clear_faults().expect("the storm ends");
        assert_eq!(d.storms.load(Ordering::Acquire), 0);
    }
}

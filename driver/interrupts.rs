// SPDX-License-Identifier: GPL-2.0

//! The interrupt handlers (MSI-X vectors 0..2, or one MSI vector) and the vector-1 work
//! in the IRQ thread: error, overflow and halt causes.

use super::*;

/// MSI-X vector 0 (completions): count and wake the readers, nothing else.
pub(crate) struct CaptureIrq {
    card: Arc<Card>,
}

/// MSI-X vector 2 (playback completions and events): count and wake the writers.
pub(crate) struct PlaybackIrq {
    card: Arc<Card>,
}

impl irq::Handler for PlaybackIrq {
    fn handle(&self) -> IrqReturn {
        self.card.irqs.fetch_add(1, Relaxed);
        self.card.pb_wait.notify_all();
        IrqReturn::Handled
    }
}

impl irq::Handler for CaptureIrq {
    fn handle(&self) -> IrqReturn {
        self.card.irqs.fetch_add(1, Relaxed);
        self.card.wait.notify_all();
        IrqReturn::Handled
    }
}

/// MSI-X vector 1 (errors), or the single MSI vector: wake the readers and the thread.
pub(crate) struct EventIrq {
    card: Arc<Card>,
    msi: bool,
}

impl irq::ThreadedHandler for EventIrq {
    fn handle(&self) -> ThreadedIrqReturn {
        self.card.irqs.fetch_add(1, Relaxed);
        if self.msi {
            self.card.wait.notify_all();
            // One message for every cause: playback completions too.
            self.card.pb_wait.notify_all();
        }
        ThreadedIrqReturn::WakeThread
    }

    fn handle_threaded(&self) -> IrqReturn {
        self.card.handle_events(self.msi);
        IrqReturn::Handled
    }
}

/// The interrupt vectors of a card and the handlers on them.
///
/// Fields drop in order: the handlers are freed before the vectors they borrow.
pub(crate) struct Irqs<'b> {
    playback: Option<Pin<KBox<irq::Registration<'b, PlaybackIrq>>>>,
    capture: Option<Pin<KBox<irq::Registration<'b, CaptureIrq>>>>,
    events: Option<Pin<KBox<irq::ThreadedRegistration<'b, EventIrq>>>>,
    _vectors: KBox<pci::IrqVectorRegistration<'b>>,
}

impl<'b> Irqs<'b> {
    /// MSI-X with vectors 0 and 1 if possible, else one MSI vector.
    pub(crate) fn alloc(pdev: &'b pci::Device<Bound>) -> Result<(KBox<pci::IrqVectorRegistration<'b>>, u32)> {
        let msix = pci::IrqTypes::default().with(pci::IrqType::MsiX);
        let msi = pci::IrqTypes::default().with(pci::IrqType::Msi);
        if module_parameters::force_msi.value() {
            let v = pdev.alloc_irq_vectors(1, 1, msi)?;
            return Ok((KBox::new(v, GFP_KERNEL)?, uapi::ACQ_IRQ_MSI));
        }
        match pdev.alloc_irq_vectors(2, u32::from(regs::msix::VECTORS), msix) {
            Ok(v) => Ok((KBox::new(v, GFP_KERNEL)?, uapi::ACQ_IRQ_MSIX)),
            Err(_) => {
                let v = pdev.alloc_irq_vectors(1, 1, msi)?;
                Ok((KBox::new(v, GFP_KERNEL)?, uapi::ACQ_IRQ_MSI))
            }
        }
    }

    pub(crate) fn request(
        vectors: KBox<pci::IrqVectorRegistration<'b>>,
        mode: u32,
        card: &Arc<Card>,
    ) -> Result<Self> {
        // SAFETY: the registration lives in its own heap allocation, which `Self` owns and
        // never moves out of or mutates; `Self` drops the handlers (which borrow it) before
        // it (field order), so the reference stays valid for as long as it is used.
        let vref: &'b pci::IrqVectorRegistration<'b> =
            unsafe { &*ptr::from_ref::<pci::IrqVectorRegistration<'b>>(&*vectors) };
        let mut this = Self {
            playback: None,
            capture: None,
            events: None,
            _vectors: vectors,
        };
        let msi = mode == uapi::ACQ_IRQ_MSI;
        let ev_index = if msi {
            0
        } else {
            usize::from(regs::msix::VEC_ERROR)
        };
        let ev = EventIrq {
            card: card.clone(),
            msi,
        };
        // SAFETY: the registration is kept in `Self` and dropped normally, never leaked.
        let reg = unsafe {
            irq::ThreadedRegistration::new(
                vref.index(ev_index)?.into(),
                irq::Flags::TRIGGER_NONE,
                c"acq-events",
                Ok::<_, Error>(ev),
            )
        };
        this.events = Some(KBox::pin_init(reg, GFP_KERNEL)?);
        if !msi {
            let cap = CaptureIrq { card: card.clone() };
            // SAFETY: as above.
            let reg = unsafe {
                irq::Registration::new(
                    vref.index(usize::from(regs::msix::VEC_CAPTURE))?.into(),
                    irq::Flags::TRIGGER_NONE,
                    c"acq-capture",
                    Ok::<_, Error>(cap),
                )
            };
            this.capture = Some(KBox::pin_init(reg, GFP_KERNEL)?);
            // Vector 2, if the PCI core gave us that many: without it, writers find
            // completions by their periodic re-check.
            if card.caps & regs::caps::PLAYBACK_DMA != 0 {
                if let Ok(v) = vref.index(usize::from(regs::msix::VEC_PLAYBACK)) {
                    let pb = PlaybackIrq { card: card.clone() };
                    // SAFETY: as above.
                    let reg = unsafe {
                        irq::Registration::new(
                            v.into(),
                            irq::Flags::TRIGGER_NONE,
                            c"acq-playback",
                            Ok::<_, Error>(pb),
                        )
                    };
                    this.playback = Some(KBox::pin_init(reg, GFP_KERNEL)?);
                }
            }
        }
        Ok(this)
    }
}

impl Card {
    /// Vector-1 work (IRQ thread): read and clear the error/overflow/halt causes.
    pub(crate) fn handle_events(&self, msi: bool) {
        let mut g = self.inner.lock();
        let Some(hw) = g.hw.as_ref() else {
            return;
        };
        let events = self.event_read(g.bar2, hw, regs::event::OFF_EVENTS);
        if msi && events == g.last_events {
            // Only completions: the hard handler already woke the readers.
            return;
        }
        g.last_events = events;
        let Some((status, code)) = self.with_regs(|r| {
            let causes = r.rd(regs::reg::IRQ_STATUS);
            r.wr(regs::reg::IRQ_STATUS, causes);
            let status = r.rd(regs::reg::STATUS);
            let code = r.rd(regs::reg::ERROR_CODE);
            r.wr(regs::reg::STATUS, status & regs::status::W1C_MASK);
            (status, code)
        }) else {
            return;
        };
        if status == u32::MAX {
            return;
        }
        if status & regs::status::HALTED != 0 && g.running {
            // Fatal: the engine stopped. Readers get EIO once (POLLERR until then); the
            // next read() or poll() starts a new session.
            pr_err!("acq{}: engine halted, ERROR_CODE {:#x}\n", self.index, code);
            let _ = self.with_regs(|r| r.stop());
            g.running = false;
            g.halted = true;
            g.err = true;
            g.stats.errors += 1;
        }
        drop(g);
        self.wait.notify_all();
    }
}

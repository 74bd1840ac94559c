// SPDX-License-Identifier: GPL-2.0

//! The interrupt handlers (MSI-X vectors 0..2, or one MSI vector), the vector-1 work in
//! the IRQ thread (error, overflow and halt causes), and wake-ups that cannot be lost.

use super::*;

/// Tasks about to sleep on a channel's condition variable, so that an interrupt never
/// wakes nobody while one of them goes to sleep.
///
/// A waiter checks the ring under its channel's mutex, then sleeps on the condition
/// variable, which registers it on the wait queue only inside the wait. A hard
/// interrupt handler cannot take that mutex, so a wake-up it sends between the check and
/// the registration finds nobody and is lost (the waiter would sleep until its periodic
/// re-check). The protocol that closes the window:
///
/// * the waiter announces itself ([`Sleepers::sleep`]: a fully ordered increment), checks
///   the ring once more, then sleeps;
/// * the hard handler wakes the queue, then (after a full barrier) looks for announced
///   sleepers; if there are any, its thread takes the channel's mutex (held by such a
///   waiter until it is registered on the queue) and wakes the queue again.
///
/// If the handler saw no sleeper, the waiter's increment came after the handler's look,
/// so its second check comes after the completion the interrupt announced (the card
/// writes completions before it signals them) and finds it. Waking the thread only when
/// somebody is about to sleep keeps the common case (a reader busy copying) at one hard
/// interrupt, as before.
pub(crate) struct Sleepers {
    /// Tasks between their announcement and the end of their wait.
    waiting: Atomic<u32>,
    /// When this channel's first interrupt since the last waiter went to sleep came (ns
    /// since `epoch`; 0: none yet), set by [`Sleepers::interrupt`]: a waiter that times
    /// out and finds completions tells a lost wake-up (an interrupt came well before its
    /// deadline and did not wake it) from a lost interrupt (none came: the periodic
    /// re-check is the remedy for that).
    first_irq: Atomic<i64>,
    epoch: Instant<Monotonic>,
    /// Wake-ups after changes of state ([`Sleepers::wake`]): a waiter that times out and
    /// finds such a change tells a late wake-up from a missing one.
    wakes: Atomic<u32>,
    /// Lost wake-ups found so far (statistics `lost_wakeups`).
    lost: Atomic<u32>,
    /// Wake-ups a hard handler handed to its IRQ thread (for an announced waiter). A wait
    /// in which this count moved is taken as woken (or about to be: an interrupt storm can
    /// keep the thread from running past a waiter's deadline), whatever its result says:
    /// the verdict trusts the thread's half of the protocol, which only the wake-window
    /// test checks (by latency).
    thread_wakes: Atomic<u32>,
    /// Waits in a row that found completions at their re-check with no interrupt at all
    /// (lost interrupts), and whether that was reported: a channel whose interrupts never
    /// arrive (a VMM that failed to enable MSI-X, say: it logs it, the guest is not told)
    /// still streams at the re-check's pace, and the kernel log should say why.
    silent: Atomic<u32>,
    silent_reported: Atomic<bool>,
    /// For the kernel log: which card and channel.
    index: u32,
    channel: &'static str,
}

/// What a waiter's check of its channel found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum News {
    /// Nothing: sleep.
    Nothing,
    /// Completions, which the card announces with an interrupt.
    Completions,
    /// A change of state (stopped, failed, removed, a session ended): whoever makes it
    /// makes it under the channel's mutex, then calls [`Sleepers::wake`].
    State,
}

impl News {
    /// Whether a waiter may go on.
    pub(crate) fn any(self) -> bool {
        self != News::Nothing
    }
}

impl Sleepers {
    pub(crate) fn new(index: u32, channel: &'static str) -> Self {
        Self {
            waiting: Atomic::new(0),
            first_irq: Atomic::new(0),
            epoch: Instant::now(),
            wakes: Atomic::new(0),
            lost: Atomic::new(0),
            thread_wakes: Atomic::new(0),
            silent: Atomic::new(0),
            silent_reported: Atomic::new(false),
            index,
            channel,
        }
    }

    /// Sleeps on `cv` (releasing `g`'s lock) for at most `jiffies`, unless `news` finds
    /// some once this task is announced. Returns the wait's outcome (`Woken` with the
    /// whole period left when `news` found some).
    ///
    /// A wait that times out and then finds news it should have been woken for (a
    /// completion whose interrupt came while it slept and was not handed to the IRQ
    /// thread, or a change of state whose maker never called [`Sleepers::wake`]) is a
    /// lost wake-up, a driver bug the re-check period would otherwise hide (a consumer
    /// only gets slower): it is counted, and logged so that every test fails. A wait
    /// woken in time that ran late is not one (see the verdict below).
    pub(crate) fn sleep<T>(
        &self,
        cv: &CondVar,
        g: &mut MutexGuard<'_, T>,
        jiffies: Jiffies,
        news: impl Fn(&mut MutexGuard<'_, T>) -> News,
    ) -> CondVarTimeoutResult {
        let start = self.now_ns();
        // When the wait itself began (after the test-only window below): its deadline.
        let mut wait_start = start;
        // The hand-overs so far, read before the announcement: every interrupt that counts
        // as this wait's (it sets `first_irq` after our store below) sees the announcement
        // and counts a hand-over after this read (the full barrier orders the two).
        let handed_before = self.thread_wakes.load(Relaxed);
        // Announced first: an interrupt that counts as this wait's (`first_irq`) sees
        // the announcement and has its thread wake us under the mutex (see `any`).
        self.waiting.fetch_add(1, Full);
        self.first_irq.store(0, Relaxed);
        let wakes = self.wakes.load(Acquire);
        let r = if news(g).any() {
            CondVarTimeoutResult::Woken { jiffies }
        } else {
            // Test only (`debug_wake_window_ms`, 0 by default): an interrupt that lands
            // here must still wake this waiter (its thread waits for the mutex we hold).
            let window = module_parameters::debug_wake_window_ms.value();
            if window > 0 {
                kernel::time::delay::fsleep(kernel::time::Delta::from_millis(i64::from(window)));
            }
            wait_start = self.now_ns();
            cv.wait_interruptible_timeout(g, jiffies)
        };
        self.waiting.fetch_sub(1, Relaxed);
        let returned = self.now_ns();
        let irq = self.first_irq.load(Relaxed);
        if irq != 0 && irq >= start {
            self.silent.store(0, Relaxed);
        }
        if let CondVarTimeoutResult::Timeout = r {
            let found = news(g);
            if found == News::Completions && irq == 0 {
                self.lost_interrupt();
            }
            let lost = match found {
                News::Nothing => false,
                // Completions, and an interrupt that came while we were announced and
                // still had more than `IRQ_SLACK_NS` to sleep, with no hand-over to the
                // IRQ thread counted on this channel since our announcement (a handler
                // that saw us would have counted one): nothing reached us but our timer.
                // (One that came at the deadline, or after it while we took the mutex
                // back, found us off the queue; none at all is a lost interrupt, which the
                // re-check is there for.)
                //
                // An interrupt handed to the thread did wake us, if the thread does its
                // part (it notifies after taking the mutex we release only once on the
                // wait queue: a thread that did not is for the wake-window test to see),
                // or its wake-up is still on its way (an interrupt storm keeps the thread
                // from running): this wait's `Timeout` then says only that we ran late. A task
                // woken in time but given a CPU only after its deadline (a real-time task
                // or an interrupt storm's IRQ threads on its CPU: `acq-ctl woken-late`)
                // returns `Timeout` too (schedule_timeout() reports the time left when the
                // task runs), and no clock tells that from a wake-up that never came.
                // Nor is a task that ran only long after its deadline judged: starved,
                // woken or not.
                News::Completions => {
                    let irq = self.first_irq.load(Relaxed);
                    let deadline = wait_start.saturating_add(jiffies_to_ns(jiffies));
                    let starved = returned > deadline.saturating_add(LATE_RUN_NS);
                    // Relaxed: the full barriers around `waiting` order it (see above).
                    let handed = self.thread_wakes.load(Relaxed) != handed_before;
                    !starved
                        && !handed
                        && irq != 0
                        && irq >= start
                        && irq.saturating_add(IRQ_SLACK_NS) < deadline
                }
                // A change of state nobody woke us for. Its maker may be between its
                // unlock and its wake-up when our timer fired: give it a moment (other
                // wake-ups may end that wait early: wait again until the moment is over).
                News::State => {
                    let until = self.now_ns().saturating_add(STATE_WAKE_GRACE_NS);
                    loop {
                        if self.wakes.load(Acquire) != wakes {
                            break false;
                        }
                        let left = until.saturating_sub(self.now_ns());
                        if left <= 0 {
                            break true;
                        }
                        let step = msecs_to_jiffies((left / 1_000_000).clamp(1, 1000) as u32);
                        if let CondVarTimeoutResult::Signal { .. } =
                            cv.wait_interruptible_timeout(g, step)
                        {
                            break false;
                        }
                    }
                }
            };
            if lost {
                let n = self.lost.fetch_add(1, Relaxed).wrapping_add(1);
                pr_err!(
                    "acq{}: {}: lost wake-up #{}: a waiter found news at its re-check that nobody woke it for\n",
                    self.index,
                    self.channel,
                    n
                );
            }
        }
        r
    }

    /// Counts a wait that found completions at its re-check with no interrupt at all (a
    /// lost interrupt; a wait an interrupt ended restarts the count), and says once in the
    /// kernel log when [`SILENT_WAITS`] in a row did: interrupts are not reaching the
    /// driver. (A stalled card, with nothing to find, is not counted.)
    fn lost_interrupt(&self) {
        let n = self.silent.fetch_add(1, Relaxed).wrapping_add(1);
        if n >= SILENT_WAITS && !self.silent_reported.xchg(true, Relaxed) {
            pr_warn!(
                "acq{}: {}: {} waits in a row ended at their re-check with no interrupt: interrupts do not reach the driver (MSI-X or MSI not enabled by the VMM or the platform?); streaming on at the re-check's pace\n",
                self.index,
                self.channel,
                n
            );
        }
    }

    /// Wakes every waiter on `cv` after a change of state made under the channel's mutex
    /// (a stop, an error, a reset, a removal). A completion interrupt's wake-up is not
    /// one of these: it is judged by [`Sleepers::interrupt`].
    pub(crate) fn wake(&self, cv: &CondVar) {
        self.wakes.fetch_add(1, Release);
        cv.notify_all();
    }

    /// For a hard handler, first thing: an interrupt of this channel came now.
    pub(crate) fn interrupt(&self) {
        // Only the first one since the waiter went to sleep needs the clock: a fast
        // stream's interrupts cost one load here, not a clock read each.
        if self.first_irq.load(Relaxed) == 0 {
            let _ = self.first_irq.cmpxchg(0, self.now_ns().max(1), Relaxed);
        }
    }

    /// Nanoseconds since this channel's creation (monotonic).
    fn now_ns(&self) -> i64 {
        (Instant::<Monotonic>::now() - self.epoch).as_nanos()
    }

    /// Lost wake-ups found so far.
    pub(crate) fn lost(&self) -> u32 {
        self.lost.load(Relaxed)
    }

    /// For a hard handler, after it woke the queue: must its thread wake it again under
    /// the mutex? (If so, the wake-up is counted as handed to the thread.)
    fn any(&self) -> bool {
        let any = self.announced();
        if any {
            self.thread_wakes.fetch_add(1, Relaxed);
        }
        any
    }

    /// Has a waiter announced itself (not yet past its wait)?
    fn announced(&self) -> bool {
        smp_mb(Full);
        self.waiting.load(Relaxed) != 0
    }
}

/// Waits in a row without an interrupt before the kernel log says interrupts do not
/// arrive: 2 s of a reader's 200 ms re-checks, far more than a `drop_irq` fault loses.
const SILENT_WAITS: u32 = 10;

/// An interrupt this long before a waiter's deadline must have woken it: more than the
/// timer's granularity (a jiffy at HZ 100 is 10 ms) and the hard handler's own latency.
const IRQ_SLACK_NS: i64 = 20_000_000;
/// A waiter that runs this long after its deadline was starved of CPU (woken or not): its
/// `Timeout` says nothing about a wake-up.
const LATE_RUN_NS: i64 = 50_000_000;
/// How long a waiter that timed out and found a change of state waits for its maker's
/// wake-up before it calls the wake-up lost.
const STATE_WAKE_GRACE_NS: i64 = 50_000_000;

/// A wait of `j` jiffies in nanoseconds.
fn jiffies_to_ns(j: Jiffies) -> i64 {
    let hz = u64::from(bindings::CONFIG_HZ).max(1);
    // Jiffies is c_ulong (usize here): a lossless widening to u64.
    i64::try_from((j as u64).saturating_mul(1_000_000_000) / hz).unwrap_or(i64::MAX)
}

/// Claims the ownership flag `busy(g)` (a channel's reader or writer, for one call):
/// waits on `cv`, interruptibly (re-checking every `period`), while another call holds it;
/// `EAGAIN` at once with `nonblock`. The holder clears it under the lock and notifies `cv`.
pub(crate) fn claim_flag<T: Unpin>(
    cv: &CondVar,
    g: &mut MutexGuard<'_, T>,
    nonblock: bool,
    period: Jiffies,
    busy: impl Fn(&mut T) -> &mut bool,
) -> Result {
    while *busy(&mut *g) {
        if nonblock {
            return Err(EAGAIN);
        }
        if let CondVarTimeoutResult::Signal { .. } = cv.wait_interruptible_timeout(g, period) {
            return Err(ERESTARTSYS);
        }
    }
    *busy(&mut *g) = true;
    Ok(())
}

/// MSI-X vector 0 (completions): count and wake the readers, nothing else (the thread
/// only for a reader about to sleep: see [`Sleepers`]).
pub(crate) struct CaptureIrq {
    card: Arc<Card>,
}

/// MSI-X vector 2 (playback completions and events): count and wake the writers.
pub(crate) struct PlaybackIrq {
    card: Arc<Card>,
}

impl irq::ThreadedHandler for PlaybackIrq {
    fn handle(&self) -> ThreadedIrqReturn {
        self.card.irqs.fetch_add(1, Relaxed);
        self.card.pb_sleepers.interrupt();
        self.card.pb_wait.notify_all();
        if self.card.pb_sleepers.any() {
            ThreadedIrqReturn::WakeThread
        } else {
            ThreadedIrqReturn::Handled
        }
    }

    fn handle_threaded(&self) -> IrqReturn {
        self.card.pb_wake_locked();
        IrqReturn::Handled
    }
}

impl irq::ThreadedHandler for CaptureIrq {
    fn handle(&self) -> ThreadedIrqReturn {
        self.card.irqs.fetch_add(1, Relaxed);
        self.card.sleepers.interrupt();
        self.card.wait.notify_all();
        if self.card.sleepers.any() {
            ThreadedIrqReturn::WakeThread
        } else {
            ThreadedIrqReturn::Handled
        }
    }

    fn handle_threaded(&self) -> IrqReturn {
        self.card.wake_locked();
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
            self.card.sleepers.interrupt();
            self.card.pb_sleepers.interrupt();
            self.card.wait.notify_all();
            // One message for every cause: playback completions too.
            self.card.pb_wait.notify_all();
            // Counted as handed to the thread, which wakes them again under the mutex.
            let _ = self.card.sleepers.any();
            let _ = self.card.pb_sleepers.any();
        }
        ThreadedIrqReturn::WakeThread
    }

    fn handle_threaded(&self) -> IrqReturn {
        self.card.handle_events(self.msi);
        if self.msi {
            // The one vector carries completions too: the wake-ups the hard handler sent,
            // again under each channel's mutex for a waiter about to sleep (see
            // [`Sleepers`]).
            let card = &self.card;
            if card.sleepers.announced() {
                card.wake_locked();
            }
            if card.pb_sleepers.announced() {
                card.pb_wake_locked();
            }
        }
        IrqReturn::Handled
    }
}

/// The interrupt vectors of a card and the handlers on them.
///
/// Fields drop in order: the handlers are freed before the vectors they borrow.
pub(crate) struct Irqs<'b> {
    playback: Option<Pin<KBox<irq::ThreadedRegistration<'b, PlaybackIrq>>>>,
    capture: Option<Pin<KBox<irq::ThreadedRegistration<'b, CaptureIrq>>>>,
    events: Option<Pin<KBox<irq::ThreadedRegistration<'b, EventIrq>>>>,
    _vectors: KBox<pci::IrqVectorRegistration<'b>>,
}

impl<'b> Irqs<'b> {
    /// MSI-X with vectors 0 and 1 if possible, else one MSI vector.
    pub(crate) fn alloc(
        pdev: &'b pci::Device<Bound>,
    ) -> Result<(KBox<pci::IrqVectorRegistration<'b>>, u32)> {
        let msix = pci::IrqTypes::default().with(pci::IrqType::MsiX);
        let msi = pci::IrqTypes::default().with(pci::IrqType::Msi);
        // A card without MSI (or without both) cannot interrupt: the card has no INTx
        // pin, and a driver that only polled would hide a broken card. Refused, and said.
        let only_msi = |why: &str| -> Result<_> {
            match pdev.alloc_irq_vectors(1, 1, msi) {
                Ok(v) => Ok((KBox::new(v, GFP_KERNEL)?, uapi::ACQ_IRQ_MSI)),
                Err(e) => {
                    dev_err!(
                        pdev.as_ref(),
                        "{}, and MSI cannot be enabled either ({:?}): the card cannot interrupt, not binding\n",
                        why,
                        e
                    );
                    Err(ENODEV)
                }
            }
        };
        if module_parameters::force_msi.value() {
            return only_msi("MSI-X not tried (force_msi)");
        }
        match pdev.alloc_irq_vectors(2, u32::from(regs::msix::VECTORS), msix) {
            Ok(v) => Ok((KBox::new(v, GFP_KERNEL)?, uapi::ACQ_IRQ_MSIX)),
            Err(e) => {
                dev_info!(
                    pdev.as_ref(),
                    "MSI-X not usable ({:?}: capability missing or too few vectors)\n",
                    e
                );
                only_msi("no usable MSI-X")
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
                irq::ThreadedRegistration::new(
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
                        irq::ThreadedRegistration::new(
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
            // Every recorded cause is acknowledged (W1C), then the status's W1C bits.
            let causes: regs::IrqStatus = r.read();
            r.write(causes);
            let status: regs::Status = r.read();
            let code = r.rd(regs::reg::ERROR_CODE);
            r.write(regs::Status(status.0 & regs::status::W1C_MASK));
            (status, code)
        }) else {
            return;
        };
        if status.is_all_ones() {
            return;
        }
        if status.halted() && g.running {
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
        self.sleepers.wake(&self.wait);
    }
}

impl Card {
    /// Wakes the capture waiters under the capture mutex: any waiter that announced
    /// itself before has released it only from inside its wait (see [`Sleepers`]).
    pub(crate) fn wake_locked(&self) {
        drop(self.inner.lock());
        self.wait.notify_all();
    }

    /// The same for the playback waiters.
    pub(crate) fn pb_wake_locked(&self) {
        drop(self.pb.lock());
        self.pb_wait.notify_all();
    }
}

//! The engine thread of one channel, and its hand-over with the register file: ENABLE
//! 0->1 starts a session and returns once it runs, ENABLE 1->0 stops it and returns once
//! the engine does no more DMA, DOORBELL wakes a waiting engine. Sessions run on the
//! thread one after the other; the thread lives as long as the card.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::SessionConfig;

#[derive(Debug, Default)]
pub(crate) struct CtlState {
    start: Option<SessionConfig>,
    started: bool,
    busy: bool,
    stop: bool,
    doorbell: bool,
    exit: bool,
}

/// Start/stop/doorbell hand-over between the register file and an engine thread.
#[derive(Debug, Default)]
pub(crate) struct Ctl {
    state: Mutex<CtlState>,
    cv: Condvar,
    /// Mirror of `state.stop`, polled once per block without the lock.
    stop: AtomicBool,
}

impl Ctl {
    pub(crate) fn lock(&self) -> MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait<'a>(&self, g: MutexGuard<'a, CtlState>) -> MutexGuard<'a, CtlState> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// True once a stop was requested (polled without the lock).
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Takes a latched DOORBELL (true if one was written since the last take).
    pub(crate) fn take_doorbell(&self) -> bool {
        std::mem::take(&mut self.lock().doorbell)
    }

    /// Forgets a latched DOORBELL.
    pub(crate) fn clear_doorbell(&self) {
        self.lock().doorbell = false;
    }

    /// Waits until a stop is requested (a hung engine).
    pub(crate) fn wait_for_stop(&self) {
        let mut g = self.lock();
        while !g.stop {
            g = self.wait(g);
        }
    }

    /// Sleeps until `deadline`, a stop request, or (if `doorbell`) a latched DOORBELL.
    pub(crate) fn sleep(&self, deadline: Instant, doorbell: bool) {
        let mut g = self.lock();
        loop {
            if g.stop || (doorbell && g.doorbell) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Handle of a card's engine thread.
#[derive(Debug)]
pub struct Engine {
    ctl: Arc<Ctl>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts an engine thread named `name` that runs `session(cfg, ctl)` for every
    /// session; `session` calls `ctl.started()` once the session is running (or failed to
    /// start). A panic in a session ends it (the register file must not wait forever).
    pub(crate) fn spawn_with<F>(name: &str, session: F) -> std::io::Result<Engine>
    where
        F: Fn(SessionConfig, &Ctl) + Send + 'static,
    {
        let ctl = Arc::new(Ctl::default());
        let c = Arc::clone(&ctl);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || engine_main(&c, &session))?;
        Ok(Engine {
            ctl,
            thread: Some(thread),
        })
    }

    /// Starts a session; returns once STATUS.RUNNING is set (or the engine halted at once,
    /// on an event page it cannot write).
    pub fn start(&self, cfg: SessionConfig) {
        let mut g = self.ctl.lock();
        g.start = Some(cfg);
        g.started = false;
        self.ctl.cv.notify_all();
        while !g.started && !g.exit {
            g = self.ctl.wait(g);
        }
    }

    /// Stops the session, if any; returns once the engine does no more DMA
    /// (STATUS.RUNNING reads 0).
    pub fn stop(&self) {
        let mut g = self.ctl.lock();
        if !g.busy {
            return;
        }
        g.stop = true;
        self.ctl.stop.store(true, Ordering::SeqCst);
        self.ctl.cv.notify_all();
        while g.busy {
            g = self.ctl.wait(g);
        }
    }

    /// A DOORBELL write: wakes the engine if it waits for one.
    pub fn doorbell(&self) {
        let mut g = self.ctl.lock();
        g.doorbell = true;
        self.ctl.cv.notify_all();
    }

    /// True while a session is active (the engine may do DMA).
    pub fn busy(&self) -> bool {
        self.ctl.lock().busy
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
        {
            let mut g = self.ctl.lock();
            g.exit = true;
            self.ctl.cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Ctl {
    /// The session is running (or failed to start): `Engine::start` may return.
    pub(crate) fn started(&self) {
        let mut g = self.lock();
        g.started = true;
        self.cv.notify_all();
    }
}

fn engine_main(ctl: &Ctl, session: &dyn Fn(SessionConfig, &Ctl)) {
    loop {
        let cfg = {
            let mut g = ctl.lock();
            loop {
                if g.exit {
                    return;
                }
                if let Some(cfg) = g.start.take() {
                    g.busy = true;
                    g.stop = false;
                    g.doorbell = false;
                    ctl.stop.store(false, Ordering::SeqCst);
                    break cfg;
                }
                g = ctl.wait(g);
            }
        };
        // A bug in a session must not take the card down with it (the register file would
        // wait for the engine forever): it ends the session as a halt.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session(cfg, ctl)));
        if r.is_err() {
            tracing::error!("engine panicked; session ended");
        }
        let mut g = ctl.lock();
        g.started = true;
        g.busy = false;
        g.stop = false;
        g.doorbell = false;
        ctl.stop.store(false, Ordering::SeqCst);
        ctl.cv.notify_all();
    }
}

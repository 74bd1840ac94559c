//! The fault timeline: a thread that fires each fault at its time, stream offset or step
//! (through the card's model control socket, QMP or a capture disk's), and records when.

use super::*;
use crate::scenario::format::HostFault;
use acq_wire::counters::CardCounters;

/// The fault timeline: a thread that fires each fault when its time or stream offset comes.
pub(super) struct Timeline {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
    state: Arc<Mutex<TimelineState>>,
}

#[derive(Default)]
pub(super) struct TimelineState {
    pending: Vec<FaultSpec>,
    fired: Vec<Value>,
    errors: Vec<String>,
}

impl Timeline {
    /// `origins`: each card's bytes delivered and received (`bytes`, `pb_bytes`) when the
    /// scenario started, from which `at: {"bytes": N}` counts (a guest handed over from
    /// another scenario has a card that moved bytes before).
    pub(super) fn start(
        faults: Vec<FaultSpec>,
        controls: Vec<PathBuf>,
        disks: Vec<PathBuf>,
        origins: Vec<(u64, u64)>,
        guest: GuestHandle,
        dir: PathBuf,
    ) -> Timeline {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(TimelineState {
            pending: faults,
            ..Default::default()
        }));
        let handle = if state.lock().map(|s| s.pending.is_empty()).unwrap_or(true) {
            None
        } else {
            let (stop, state) = (Arc::clone(&stop), Arc::clone(&state));
            Some(thread::spawn(move || {
                timeline_thread(&stop, &state, &controls, &disks, &origins, &guest, &dir)
            }))
        };
        Timeline {
            stop,
            handle,
            state,
        }
    }

    /// Stops the thread; returns (fired, never fired, injection errors).
    pub(super) fn stop(mut self) -> (Vec<Value>, Vec<FaultSpec>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (
            std::mem::take(&mut s.fired),
            std::mem::take(&mut s.pending),
            std::mem::take(&mut s.errors),
        )
    }
}

pub(super) fn timeline_thread(
    stop: &AtomicBool,
    state: &Mutex<TimelineState>,
    controls: &[PathBuf],
    disks: &[PathBuf],
    origins: &[(u64, u64)],
    guest: &GuestHandle,
    dir: &Path,
) {
    let t0 = Instant::now();
    let transcript = dir.join("control.log");
    let mut conns: Vec<Option<ModelControl>> = controls.iter().map(|_| None).collect();
    while !stop.load(Ordering::SeqCst) {
        let pending = match state.lock() {
            Ok(s) => s.pending.clone(),
            Err(_) => return,
        };
        if pending.is_empty() {
            return;
        }
        let mut produced: BTreeMap<usize, u64> = BTreeMap::new();
        for (idx, f) in pending.iter().enumerate() {
            let due = match f.at {
                FaultAt::TimeMs(ms) => t0.elapsed() >= Duration::from_millis(ms),
                // Injected by the step loop, never given to the timeline.
                FaultAt::Step(_) => false,
                FaultAt::Bytes(b) => {
                    // Capture faults follow the bytes the card delivered, playback faults
                    // the bytes it received.
                    let origin = origins.get(f.card).copied().unwrap_or_default();
                    let (key, moved, from): (_, fn(&CardCounters) -> u64, _) = match f.channel {
                        Channel::Capture => (f.card, |c| c.stats.bytes, origin.0),
                        Channel::Playback => (f.card + 1000, |c| c.stats.pb_bytes, origin.1),
                    };
                    let p = match produced.get(&key) {
                        Some(p) => *p,
                        None => {
                            let p = control(&mut conns, controls, f.card, &transcript)
                                .and_then(|c| c.card_counters())
                                .map(|c| moved(&c).saturating_sub(from))
                                .unwrap_or(0);
                            produced.insert(key, p);
                            p
                        }
                    };
                    p >= b.0
                }
            };
            if !due {
                continue;
            }
            let when = t0.elapsed().as_millis() as u64;
            let r = if f.inject.is_disk() {
                inject_disk(disks, f, &transcript)
            } else {
                inject(&mut conns, controls, f, guest, &transcript)
            };
            if let Ok(mut s) = state.lock() {
                s.pending.retain(|p| p != f);
                match r {
                    Ok(()) => s.fired.push(fired_record(
                        f,
                        when,
                        produced
                            .get(&match f.channel {
                                Channel::Capture => f.card,
                                Channel::Playback => f.card + 1000,
                            })
                            .copied(),
                    )),
                    Err(e) => s.errors.push(format!(
                        "injecting {} on card {}: {e:#}",
                        f.inject.name(),
                        f.card
                    )),
                }
            }
            let _ = idx;
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// What the result says of a fault that fired `when` ms after the steps started (at
/// stream offset `at_bytes`, for a fault that waited for one).
pub(super) fn fired_record(f: &FaultSpec, when: u64, at_bytes: Option<u64>) -> Value {
    let mut v = json!({
        "fault": f.inject.name(), "card": f.card, "at_ms": when, "channel": f.channel,
        "at_bytes": at_bytes,
    });
    if let (FaultAt::Step(n), Some(o)) = (f.at, v.as_object_mut()) {
        o.insert("at_step".into(), json!(n));
    }
    v
}

/// A capture-disk fault, through the sink's control socket (docs/sink.md).
pub(super) fn inject_disk(disks: &[PathBuf], f: &FaultSpec, transcript: &Path) -> Result<()> {
    let Fault::Disk(fault) = f.inject else {
        bail!("{} is not a disk fault", f.inject.name());
    };
    let (name, param, value) = fault.control();
    let req = json!({"cmd": "inject", "fault": name, param: value});
    let path = disks
        .get(f.disk)
        .with_context(|| format!("no disk {}", f.disk))?;
    ModelControl::connect(path, Some(transcript))?.request(&req)?;
    Ok(())
}

pub(super) fn control<'a>(
    conns: &'a mut [Option<ModelControl>],
    paths: &[PathBuf],
    card: usize,
    transcript: &Path,
) -> Result<&'a mut ModelControl> {
    let slot = conns.get_mut(card).context("no such card")?;
    if slot.is_none() {
        *slot = Some(ModelControl::connect(&paths[card], Some(transcript))?);
    }
    slot.as_mut().context("control connection")
}

pub(super) fn inject(
    conns: &mut [Option<ModelControl>],
    paths: &[PathBuf],
    f: &FaultSpec,
    guest: &GuestHandle,
    transcript: &Path,
) -> Result<()> {
    let req = match f.inject {
        Fault::Disk(_) => return inject_disk(&[], f, transcript),
        Fault::Host(HostFault::SurpriseRemoval) => {
            // QMP device_del: the guest's ACPI hotplug driver unbinds the driver while
            // the stream runs (readers wake with ENODEV) and ejects the slot; QEMU then
            // removes the card. The model keeps serving its control socket.
            let qmp_log = transcript.with_file_name("qmp.log");
            return guest.unplug_card(f.card, &qmp_log, Duration::from_secs(60));
        }
        ref card_fault => card_fault
            .card_request(f.channel)
            .context("a card fault without a control request")?,
    };
    control(conns, paths, f.card, transcript)?.request(&req)?;
    Ok(())
}

//! Checks a parsed scenario against the shared limits and against itself: every
//! problem named with its JSON path.

use super::limits::*;
use super::share::{ShareSource, ShareStep};
use super::*;
use acq_wire::consumer::playback::BUFFERS_MAX;
use acq_wire::consumer::ArgError;
use acq_wire::counters::{CardCounters, DiskCounters};

/// A problem: where in the file (a JSON path) and why.
type Problem = (String, String);

/// `Err` of a problem at `loc`.
fn err(loc: &str, why: String) -> Result<(), Problem> {
    Err((loc.to_owned(), why))
}

/// Checks what the types alone cannot: ranges and cross-references, each part of the
/// scenario by its own function below.
pub(super) fn validate(sc: &Scenario) -> Result<(), Problem> {
    if !(1..=VM_CPUS_MAX).contains(&sc.vm.cpus) {
        return err(
            "vm.cpus",
            format!("{} is not in 1..={VM_CPUS_MAX}", sc.vm.cpus),
        );
    }
    if !VM_MEMORY_MIB.contains(&sc.vm.memory_mib) {
        return err(
            "vm.memory_mib",
            format!("{} is not in {VM_MEMORY_MIB:?}", sc.vm.memory_mib),
        );
    }
    if sc.vm.kernel_args.len() > KERNEL_ARGS_MAX {
        return err(
            "vm.kernel_args",
            format!(
                "{} arguments; at most {KERNEL_ARGS_MAX}",
                sc.vm.kernel_args.len()
            ),
        );
    }
    for (i, a) in sc.vm.kernel_args.iter().enumerate() {
        if a.is_empty()
            || a.len() > KERNEL_ARG_LEN_MAX
            || a.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return err(
                &format!("vm.kernel_args[{i}]"),
                format!("{a:?} is not one word of 1 to {KERNEL_ARG_LEN_MAX} characters"),
            );
        }
    }
    if sc.cards.len() > CARDS_MAX {
        return err(
            "cards",
            format!("{} cards; at most {CARDS_MAX}", sc.cards.len()),
        );
    }
    if sc.steps.is_empty() {
        return err("steps", "a scenario needs at least one step".into());
    }
    if sc.timeout_s == 0 {
        return err("timeout_s", "must be at least 1".into());
    }
    for (i, c) in sc.cards.iter().enumerate() {
        card(i, c, sc.load_driver)?;
    }
    let ncards = sc.cards.len();
    let ndisks = sc.disks.len();
    if ndisks > DISKS_MAX {
        return err("disks", format!("{ndisks} disks; at most {DISKS_MAX}"));
    }
    for (i, d) in sc.disks.iter().enumerate() {
        disk(i, d, ncards)?;
    }
    let mut disk_streams = Vec::new();
    for (i, s) in sc.steps.iter().enumerate() {
        match s {
            Step::Share(sh) => share(sc, i, sh)?,
            Step::Play(p) => play(sc, i, p)?,
            _ => {}
        }
        let card = match s {
            Step::Config(c) => Some(c.card),
            Step::Reset(c) => Some(c.card),
            Step::Play(p) => Some(p.card),
            _ => None,
        };
        if let Some(c) = card.filter(|&c| c >= ncards) {
            return err(
                &format!("steps[{i}]"),
                format!("card {c} does not exist ({ncards} card(s))"),
            );
        }
        if let (Step::Config(c), Some(card)) = (s, sc.cards.get(card.unwrap_or(0))) {
            // What the step sets goes to the driver as the card's settings did.
            device(
                &format!("steps[{i}].config.device"),
                &c.device,
                fifo_of(card),
                sc.load_driver,
            )?;
        }
        if let Step::Stream(st) = s {
            stream(sc, i, st, &mut disk_streams)?;
        }
    }
    if sc.faults.iter().any(|_| !sc.load_driver) {
        return err(
            "faults",
            "faults need the driver (load_driver: true)".into(),
        );
    }
    let any_exec = sc.steps.iter().any(|s| matches!(s, Step::Exec(_)));
    for (i, f) in sc.faults.iter().enumerate() {
        fault(sc, i, f, any_exec)?;
    }
    expect(sc)
}

/// A card's FIFO depth (the model's default if the scenario sets none).
fn fifo_of(c: &CardSpec) -> u64 {
    c.fifo_depth
        .map_or(u64::from(acq_hw::regs::limits::FIFO_DEPTH_DEFAULT), |f| f.0)
}

/// Device settings (a card's, or a `config` step's) at `loc`: the ring and block against
/// the contract, the driver's limits (`driver`: it is loaded) and the card's FIFO.
fn device(loc: &str, d: &DeviceSettings, fifo: u64, driver: bool) -> Result<(), Problem> {
    if let Some(r) = d.ring_log2 {
        if !(acq_hw::regs::limits::RING_LOG2_MIN..=DRIVER_RING_LOG2_MAX).contains(&r) {
            return err(
                &format!("{loc}.ring_log2"),
                format!(
                    "{r} is not in {}..={DRIVER_RING_LOG2_MAX} (the driver's largest ring)",
                    acq_hw::regs::limits::RING_LOG2_MIN
                ),
            );
        }
    }
    if let Some(Size(b)) = d.block_size {
        use acq_hw::regs::limits::{BLOCK_SIZE_ALIGN, BLOCK_SIZE_MAX, BLOCK_SIZE_MIN};
        if !b.is_multiple_of(u64::from(BLOCK_SIZE_ALIGN))
            || !(u64::from(BLOCK_SIZE_MIN)..=u64::from(BLOCK_SIZE_MAX)).contains(&b)
        {
            return err(
                &format!("{loc}.block_size"),
                format!(
                    "{b} must be a multiple of {BLOCK_SIZE_ALIGN} from {BLOCK_SIZE_MIN} to {}",
                    Size(u64::from(BLOCK_SIZE_MAX))
                ),
            );
        }
        if driver && b > DRIVER_BLOCK_SIZE_MAX {
            return err(
                &format!("{loc}.block_size"),
                format!(
                    "{b} is above {DRIVER_BLOCK_SIZE_MAX}, the driver's largest block (a page)"
                ),
            );
        }
        if b > fifo {
            return err(
                &format!("{loc}.block_size"),
                format!("{b} is above the card's FIFO ({fifo} bytes)"),
            );
        }
    }
    Ok(())
}

/// A card: its device settings against the contract's limits, BAR2 mode against its BAR.
fn card(i: usize, c: &CardSpec, driver: bool) -> Result<(), Problem> {
    use acq_hw::regs::limits;
    if let Some(Size(f)) = c.fifo_depth {
        if !u32::try_from(f).is_ok_and(limits::fifo_depth_valid) {
            return err(
                &format!("cards[{i}].fifo_depth"),
                format!(
                    "{f} is not a multiple of 4K from {} to {}",
                    Size(u64::from(limits::FIFO_DEPTH_MIN)),
                    Size(u64::from(limits::FIFO_DEPTH_MAX))
                ),
            );
        }
    }
    if let Some(v) = c.msix_vectors {
        if v != 0 && !(acq_hw::regs::msix::VECTORS..=MSIX_VECTORS_MAX).contains(&v) {
            return err(
                &format!("cards[{i}].msix_vectors"),
                format!(
                    "{v} is not 0 (MSI only) or {}..={MSIX_VECTORS_MAX}",
                    acq_hw::regs::msix::VECTORS
                ),
            );
        }
    }
    device(&format!("cards[{i}].device"), &c.device, fifo_of(c), driver)?;
    if let Some(Size(b)) = c.bar2_size {
        // The model's own rule (it refuses any other size when it starts).
        if !acq_hw::regs::bar::bar2_size_valid(b) {
            return err(
                &format!("cards[{i}].bar2_size"),
                format!("{b} must be a power of two from 1M to 1G"),
            );
        }
    }
    if c.device.transfer == Some(Transfer::Bar2) {
        // The contract's own rule (docs/device.md, BAR2 streaming): the completion
        // ring and every block of the ring in BAR2. Driver defaults: 2^8 x 4 KiB.
        use acq_hw::regs;
        let bar2 = c.bar2_size.map_or(regs::bar::BAR2_SIZE_DEFAULT, |s| s.0);
        let log2 = c.device.ring_log2.unwrap_or(8);
        let block = c.device.block_size.map_or(4096, |s| s.0);
        let block = u32::try_from(block).unwrap_or(u32::MAX);
        if !regs::bar2::layout_fits(bar2, log2, block) {
            return err(
                &format!("cards[{i}].device.transfer"),
                format!(
                    "BAR2 mode needs the completion ring and 2^{log2} blocks of {block} bytes in BAR2 ({bar2} bytes): use a smaller ring_log2 or block_size, or a larger bar2_size"
                ),
            );
        }
    }
    Ok(())
}

/// A capture disk.
fn disk(i: usize, d: &DiskSpec, ncards: usize) -> Result<(), Problem> {
    if d.card >= ncards.max(1) {
        return err(
            &format!("disks[{i}].card"),
            format!("card {} does not exist ({ncards} card(s))", d.card),
        );
    }
    if !DISK_BLOCK_SIZES.contains(&d.block_size) {
        return err(
            &format!("disks[{i}].block_size"),
            format!("{} is not one of {DISK_BLOCK_SIZES:?}", d.block_size),
        );
    }
    if d.size.0 == 0 || !d.size.0.is_multiple_of(d.block_size as u64) {
        return err(
            &format!("disks[{i}].size"),
            format!("{} must be a non-zero multiple of the block size", d.size),
        );
    }
    Ok(())
}

/// A share step (card to card through a dma-buf).
fn share(sc: &Scenario, i: usize, sh: &ShareStep) -> Result<(), Problem> {
    let ncards = sc.cards.len();
    sh.validate(ncards, &sc.cards)
        .or_else(|(f, why)| err(&format!("steps[{i}].share.{f}"), why))?;
    if let Some(card) = sc.cards.get(sh.settings_card()) {
        if let Err(e) = invoke::share_args(sh, card).check() {
            return err(
                &format!("steps[{i}].share{}", field_of(&e.flag, SHARE_FIELDS)),
                arg_why(&e, "acq-share"),
            );
        }
    }
    let unplugged = sc
        .faults
        .iter()
        .any(|f| f.card == sh.from && matches!(f.inject, Fault::Host(HostFault::SurpriseRemoval)));
    if sh.until_gone && !unplugged {
        return err(
            &format!("steps[{i}].share.until_gone"),
            format!(
                "no surprise_removal fault on card {}: the step could only time out",
                sh.from
            ),
        );
    }
    Ok(())
}

/// A play step: its own options, then the playback tool's rules on the command line it
/// becomes.
fn play(sc: &Scenario, i: usize, p: &PlayStep) -> Result<(), Problem> {
    if p.bytes.0 == 0 {
        return err(
            &format!("steps[{i}].play.bytes"),
            "must be more than 0".into(),
        );
    }
    if p.pipe_size.is_some() && !matches!(p.mode, PlayMode::Splice | PlayMode::Vmsplice) {
        return err(
            &format!("steps[{i}].play.pipe_size"),
            "only applies to modes splice and vmsplice".into(),
        );
    }
    if p.mode != PlayMode::Vmsplice {
        for (set, name) in [
            (p.buffers.is_some(), "buffers"),
            (p.gift, "gift"),
            (p.reuse_before_release, "reuse_before_release"),
        ] {
            if set {
                return err(
                    &format!("steps[{i}].play.{name}"),
                    "only applies to mode vmsplice".into(),
                );
            }
        }
    }
    if let Some(b) = p.buffers.filter(|b| !(1..=BUFFERS_MAX).contains(b)) {
        return err(
            &format!("steps[{i}].play.buffers"),
            format!("must be 1 .. {BUFFERS_MAX}, not {b}"),
        );
    }
    if p.gift && p.reuse_before_release {
        return err(
            &format!("steps[{i}].play.reuse_before_release"),
            "a gifted buffer is given away: there is nothing to reuse".into(),
        );
    }
    if p.verify && p.reuse_before_release {
        return err(
            &format!("steps[{i}].play.verify"),
            "reuse before release makes the card see mismatches: set verify false".into(),
        );
    }
    if p.verify && p.source == PlaySource::Zero {
        return err(
            &format!("steps[{i}].play.verify"),
            "source zero never matches the pattern: set verify false".into(),
        );
    }
    if let Some(card) = sc.cards.get(p.card) {
        if let Err(e) = invoke::playback_args(p, card).check() {
            return err(
                &format!("steps[{i}].play{}", field_of(&e.flag, PLAY_FIELDS)),
                arg_why(&e, "acq-stream"),
            );
        }
    }
    Ok(())
}

/// A stream step: its sink (one stream per disk, the disk fits it), its moments (each
/// before its end), then acq-stream's rules on the command line it becomes.
fn stream(
    sc: &Scenario,
    i: usize,
    st: &StreamStep,
    disk_streams: &mut Vec<usize>,
) -> Result<(), Problem> {
    let (ncards, ndisks) = (sc.cards.len(), sc.disks.len());
    if let Some(d) = st.sink.disk() {
        if d >= ndisks {
            return err(
                &format!("steps[{i}].stream.sink"),
                format!("disk {d} does not exist ({ndisks} disk(s))"),
            );
        }
        if disk_streams.contains(&d) {
            return err(
                &format!("steps[{i}].stream.sink"),
                format!(
                    "disk {d} already has a stream: one stream per disk (the disk's \
                     counters are checked against it)"
                ),
            );
        }
        disk_streams.push(d);
        let disk = &sc.disks[d];
        if matches!(st.sink, Sink::DiskFile(_)) && (!disk.store || disk.verify) {
            return err(
                &format!("disks[{d}]"),
                "a file system on the disk needs \"store\": true and \"verify\": false".into(),
            );
        }
        if matches!(st.sink, Sink::Disk(_)) && !disk.verify {
            return err(
                &format!("disks[{d}].verify"),
                "a raw disk stream is checked by the disk: verify must be true".into(),
            );
        }
        if st.mode == Mode::Splice && st.on_sink_error == Some(SinkErrorPolicy::Retry) && !st.direct
        {
            return err(
                &format!("steps[{i}].stream.on_sink_error"),
                "retry in mode splice needs \"direct\": true (a buffered splice no \
                 longer has the data when write-back fails)"
                    .into(),
            );
        }
        if st.bytes.0 > sc.disks[d].size.0 {
            return err(
                &format!("steps[{i}].stream.bytes"),
                format!("{} do not fit on disk {d} ({})", st.bytes, sc.disks[d].size),
            );
        }
    }
    if st.card >= ncards {
        return err(
            &format!("steps[{i}].stream.card"),
            format!("card {} does not exist ({ncards} card(s))", st.card),
        );
    }
    if st.bytes.0 == 0 {
        return err(
            &format!("steps[{i}].stream.bytes"),
            "must be more than 0".into(),
        );
    }
    if st.sink.disk().is_none()
        && (st.direct
            || st.on_sink_error.is_some()
            || st.sink_retries.is_some()
            || st.sink_retry_ms.is_some())
    {
        return err(
            &format!("steps[{i}].stream"),
            "direct, on_sink_error, sink_retries and sink_retry_ms need a disk sink".into(),
        );
    }
    if st.restart_at.is_some_and(|r| r >= st.bytes) {
        return err(
            &format!("steps[{i}].stream.restart_at"),
            "must be less than `bytes`".into(),
        );
    }
    if let Some(p) = st.pause_at {
        if st.mode != Mode::Read {
            return err(
                &format!("steps[{i}].stream.pause_at"),
                "only applies to mode read".into(),
            );
        }
        if p >= st.bytes {
            return err(
                &format!("steps[{i}].stream.pause_at"),
                "must be less than `bytes`".into(),
            );
        }
        if st.pause_ms > PAUSE_MS_MAX {
            return err(
                &format!("steps[{i}].stream.pause_ms"),
                format!("{} is above {PAUSE_MS_MAX}", st.pause_ms),
            );
        }
    }
    if let Some(sig) = &st.signal {
        if let Err((field, why)) = sig.validate(st.bytes) {
            return err(&format!("steps[{i}].stream.signal.{field}"), why);
        }
    }
    if !st.control.is_empty() {
        let at = format!("steps[{i}].stream.control");
        if let Err((field, why)) = super::control::validate(&st.control, st.bytes) {
            return err(&format!("{at}{field}"), why);
        }
        if st.mode == Mode::Mmap || st.sink != Sink::Null || st.tee.is_some() {
            return err(
                &at,
                "needs mode read or splice, the null sink and no tee (a RESET clears \
                 the driver's statistics, which a file or disk sink's account is \
                 checked against)"
                    .into(),
            );
        }
        if st.reopen_at.is_some() {
            return err(
                &format!("steps[{i}].stream.reopen_at"),
                "not with `control`: the second process shares the file, so a close \
                 would not end the session"
                    .into(),
            );
        }
    }
    if let Some(r) = st.reopen_at {
        if r >= st.bytes || st.mode == Mode::Mmap {
            return err(
                &format!("steps[{i}].stream.reopen_at"),
                "must be less than `bytes`, in mode read or splice".into(),
            );
        }
    }
    if let Some(t) = st.tee {
        if st.mode != Mode::Splice {
            return err(
                &format!("steps[{i}].stream.tee"),
                "only applies to mode splice".into(),
            );
        }
        if !matches!(t, Sink::Null | Sink::Tmpfs) {
            return err(
                &format!("steps[{i}].stream.tee"),
                "a tee sink is \"null\" or \"tmpfs\"".into(),
            );
        }
    }
    if st.pipe_size.is_some() && st.mode != Mode::Splice {
        return err(
            &format!("steps[{i}].stream.pipe_size"),
            "only applies to mode splice".into(),
        );
    }
    // What is left, the consumer's own rules on the command line this step becomes
    // (ranges of chunk and pipe sizes, the sink options' limits, the card's).
    if let Err(e) = invoke::capture_args(sc, st, false).check() {
        return err(
            &format!("steps[{i}].stream{}", field_of(&e.flag, STREAM_FIELDS)),
            arg_why(&e, "acq-stream"),
        );
    }
    Ok(())
}

/// What the steps move through each card, per channel: a fault at a byte offset
/// beyond that can never fire (an `exec` step may stream by itself: then no bound).
fn moved(sc: &Scenario, card: usize, channel: Channel) -> u64 {
    sc.steps
        .iter()
        .map(|s| match (s, channel) {
            (Step::Stream(st), Channel::Capture) if st.card == card => st.bytes.0,
            (Step::Play(p), Channel::Playback) if p.card == card => p.bytes.0,
            // A share step moves its bytes out of `from`'s capture (a heap buffer
            // comes from no card) and into `to`'s playback.
            (Step::Share(sh), Channel::Capture)
                if sh.from == card && sh.source != ShareSource::Heap =>
            {
                sh.bytes.0
            }
            (Step::Share(sh), Channel::Playback) if sh.to == card => sh.bytes.0,
            _ => 0,
        })
        .fold(0u64, u64::saturating_add)
}

/// A fault: when it fires (a step that exists, a byte offset the steps reach), what it
/// hits, and the catalogue's own limits.
fn fault(sc: &Scenario, i: usize, f: &FaultSpec, any_exec: bool) -> Result<(), Problem> {
    let (ncards, ndisks) = (sc.cards.len(), sc.disks.len());
    if let FaultAt::Step(n) = f.at {
        if n >= sc.steps.len() {
            return err(
                &format!("faults[{i}].at.step"),
                format!(
                    "step {n} does not exist (steps 0..{}): the fault would never fire",
                    sc.steps.len()
                ),
            );
        }
    }
    if let (FaultAt::Bytes(b), false, false) = (f.at, any_exec, f.inject.is_disk()) {
        let total = moved(sc, f.card, f.channel);
        if b.0 >= total {
            let what = match f.channel {
                Channel::Capture => "streams from",
                Channel::Playback => "plays to",
            };
            return err(
                &format!("faults[{i}].at.bytes"),
                format!(
                    "{b} is never reached: the steps move {} through card {} ({what} it), \
                     so the fault would never fire",
                    Size(total),
                    f.card
                ),
            );
        }
    }
    if f.inject.is_disk() && f.disk >= ndisks {
        return err(
            &format!("faults[{i}].disk"),
            format!("disk {} does not exist ({ndisks} disk(s))", f.disk),
        );
    }
    if f.card >= ncards {
        return err(
            &format!("faults[{i}].card"),
            format!("card {} does not exist ({ncards} card(s))", f.card),
        );
    }
    if f.inject == Fault::Host(HostFault::SurpriseRemoval)
        && sc.cards.get(f.card).and_then(|c| c.msix_vectors) != Some(0)
    {
        return err(
            &format!("faults[{i}].inject"),
            format!(
                "surprise_removal unplugs card {c} with QMP device_del, and QEMU 11.1's \
                 vfio-user-pci aborts when it frees an unplugged card that has MSI-X \
                 (upstream fix \"vfio-user: Do not delete the subregion\"): give card {c} \
                 \"msix_vectors\": 0 (MSI only)",
                c = f.card
            ),
        );
    }
    // The catalogue's own checks: the limits, and which faults have a playback form
    // (the card's control socket refuses the same).
    match f.inject {
        Fault::Card(c) => {
            if let Err(e) = CardFault::check_channel(c.name(), f.channel) {
                return err(&format!("faults[{i}].channel"), e);
            }
            if let Err(e) = c.check_limits() {
                return err(&format!("faults[{i}].inject"), e);
            }
            // The vectors the card has (MSI-X numbering; an MSI-only card maps them
            // all onto its one message), as the model checks them.
            if let CardFault::SpuriousIrq { vector, .. } | CardFault::IrqStorm { vector, .. } = c {
                let vectors = match sc.cards.get(f.card).and_then(|c| c.msix_vectors) {
                    None | Some(0) => acq_hw::regs::msix::VECTORS,
                    Some(n) => n,
                };
                if vector >= vectors {
                    return err(
                        &format!("faults[{i}].inject"),
                        format!(
                            "vector {vector} does not exist (card {} has {vectors})",
                            f.card
                        ),
                    );
                }
            }
        }
        _ if f.channel == Channel::Playback => {
            return err(
                &format!("faults[{i}].channel"),
                format!("{} is not a card fault: it has no channel", f.inject.name()),
            );
        }
        _ => {}
    }
    Ok(())
}

/// The expectations: errno names, counter keys, kernel log texts.
fn expect(sc: &Scenario) -> Result<(), Problem> {
    let (ncards, ndisks) = (sc.cards.len(), sc.disks.len());
    let named = sc.expect.errors.keys().map(|n| ("errors", n));
    let placed = sc.expect.errors_at.keys().map(|n| ("errors_at", n));
    let allowed = sc
        .expect
        .errors_allowed
        .iter()
        .map(|n| ("errors_allowed", n));
    for (field, name) in named.chain(placed).chain(allowed) {
        if errno_value(name).is_none() {
            return err(
                &format!("expect.{field}.{name}"),
                format!(
                    "unknown errno name `{name}` (known: {})",
                    ERRNOS.map(|e| e.0).join(", ")
                ),
            );
        }
    }
    for (name, r) in &sc.expect.errors_at {
        if r.max.is_some_and(|m| m < r.min) {
            return err(
                &format!("expect.errors_at.{name}"),
                format!("max {} is below min {}", r.max.unwrap_or(r.min), r.min),
            );
        }
    }
    let nstreams = sc
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Stream(_) | Step::Play(_) | Step::Share(_)))
        .count();
    for key in sc.expect.counters.keys() {
        let ok = match counter_key(key) {
            Some((CounterOf::Card, n, _)) => n < ncards,
            Some((CounterOf::Disk, n, _)) => n < ndisks,
            Some((CounterOf::Stream, n, _)) => n < nstreams,
            None => false,
        };
        if !ok {
            return err(
                &format!("expect.counters.{key}"),
                format!(
                    "counter keys are `cardN.NAME` (N < {ncards}), `diskN.NAME` (N < {ndisks}) \
                     or `streamN.NAME` (N < {nstreams})"
                ),
            );
        }
        // A card's and a disk's counters are the control sockets' reply types: a name
        // that is not one of them would only fail after the run, as "no such counter".
        // (A stream's are its tool's result line, whose fields vary by tool.)
        let known = match counter_key(key) {
            Some((CounterOf::Card, _, name)) => CardCounters::has_number(name)
                .then_some(())
                .ok_or_else(|| CardCounters::NUMBERS.concat().join(", ")),
            Some((CounterOf::Disk, _, name)) => DiskCounters::NUMBERS
                .contains(&name)
                .then_some(())
                .ok_or_else(|| DiskCounters::NUMBERS.join(", ")),
            _ => Ok(()),
        };
        if let Err(names) = known {
            return err(
                &format!("expect.counters.{key}"),
                format!("no such counter; the numbers there are: {names}"),
            );
        }
    }
    for (text, range) in &sc.expect.dmesg_lines {
        if text.trim().is_empty() {
            return err(
                "expect.dmesg_lines",
                "an empty text matches every line: name what the line says".into(),
            );
        }
        if range.min == 0 && range.max.is_none() {
            return err(
                &format!("expect.dmesg_lines.{text}"),
                "a range of 0 and no max holds for any log: give a min or a max".into(),
            );
        }
    }
    Ok(())
}

/// The scenario field each `acq-stream` flag comes from. The card's settings (`--block`,
/// `--ring-log2`, ...) are checked at `cards[N].device` first, with the same or stricter
/// limits; a flag not listed names the step as a whole.
const STREAM_FIELDS: &[(&str, &str)] = &[
    ("--bytes", "bytes"),
    ("--read-size", "chunk"),
    ("--pipe-size", "pipe_size"),
    ("--tee", "tee"),
    ("--restart-at", "restart_at"),
    ("--reopen-at", "reopen_at"),
    ("--pause-at", "pause_at"),
    ("--pause-ms", "pause_ms"),
    ("--control", "control"),
    ("--signal", "signal"),
    ("--signal-at-bytes", "signal.at.bytes"),
    ("--signal-stop-ms", "signal.stop_ms"),
    ("--on-sink-error", "on_sink_error"),
    ("--sink-retries", "sink_retries"),
    ("--sink-retry-ms", "sink_retry_ms"),
    ("--direct", "direct"),
];

/// The same for `acq-stream --direction out` and a play step.
const PLAY_FIELDS: &[(&str, &str)] = &[
    ("--bytes", "bytes"),
    ("--write-size", "chunk"),
    ("--pipe-size", "pipe_size"),
    ("--buffers", "buffers"),
    ("--gift", "gift"),
    ("--reuse-before-release", "reuse_before_release"),
    ("--pause-at", "pause_at"),
    ("--pause-ms", "pause_ms"),
];

const SHARE_FIELDS: &[(&str, &str)] = &[
    ("--bytes", "bytes"),
    ("--play-rate", "play_rate"),
    ("--map-verify", "map_verify"),
    ("--close-capture-after", "close_capture_after"),
    ("--until-gone", "until_gone"),
    ("--hold-s", "hold_s"),
];

/// `.field` for a flag the step sets, or nothing.
fn field_of(flag: &str, fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .find(|(f, _)| *f == flag)
        .map_or_else(String::new, |(_, name)| format!(".{name}"))
}

/// Why, naming the consumer's flag too (a card setting's flag names its `device` field).
fn arg_why(e: &ArgError, tool: &str) -> String {
    if e.flag.is_empty() {
        e.why.clone()
    } else {
        format!("{} ({tool} {})", e.why, e.flag)
    }
}

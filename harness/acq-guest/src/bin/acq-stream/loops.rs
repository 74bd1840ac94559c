//! The consumer loops: read(), splice() and mmap() with ACQ_IOC_MMAP_SYNC.

use super::*;
use acq_guest::mapping::ReadOnlyMap;

pub(crate) fn read_loop(
    a: &Args,
    cfg: &AcqConfig,
    src: &mut Source,
    sink: &mut Sink,
    st: &mut State,
    tty: bool,
    progress: bool,
) -> Result<(), String> {
    let mut buf = vec![0u8; a.read_size as usize];
    let mut paused = false;
    while st.total < a.bytes {
        if st.expired(a) {
            break;
        }
        if let Some(at) = a.pause_at {
            if !paused && st.total >= at {
                paused = true;
                std::thread::sleep(std::time::Duration::from_millis(a.pause_ms));
            }
        }
        if let Some(at) = a.restart_at {
            if !st.restarted && st.total >= at {
                st.restarted = true;
                if let Some(dev) = src.card() {
                    dev.stop().map_err(|e| format!("STOP: {e}"))?;
                    match dev.start() {
                        // The controller's START came between our STOP and START.
                        Err(e)
                            if e.raw_os_error() == Some(libc::EBUSY) && st.controller.is_some() => {
                        }
                        r => r.map_err(|e| format!("START: {e}"))?,
                    }
                    let s = dev.stats().map_err(|e| format!("GET_STATS: {e}"))?;
                    st.offset = s.read_offset;
                    st.session = Some(s.session);
                }
            }
        }
        st.maybe_reopen(a, src)?;
        let want = buf
            .len()
            .min((a.bytes - st.total).min(usize::MAX as u64) as usize);
        match src.read(&mut buf[..want]) {
            Ok(0) => {
                if !st.session_ended("read") {
                    break;
                }
            }
            Ok(n) => {
                if st.controller.is_some() {
                    st.attribute(src, cfg, n, Some(&buf[..n]))?;
                }
                st.first_data(src, n)?;
                if n < want {
                    st.short_reads += 1;
                }
                st.mark();
                let data = &buf[..n];
                if a.verify {
                    // One segment: this read() starts at `offset`.
                    let segs = [(st.total, st.offset)];
                    st.inline.verify(cfg, &segs, st.total, data);
                }
                let flow = sink.put(st.offset, data)?;
                st.offset += n as u64;
                st.total += n as u64;
                if flow == Flow::Stop {
                    break;
                }
            }
            Err(e) => {
                if !st.errno_event(src, &e, "read")? {
                    break;
                }
            }
        }
        if !st.after(a, tty, progress) {
            break;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn splice_loop(
    a: &Args,
    cfg: &AcqConfig,
    src: &mut Source,
    sink: &mut Sink,
    tee_sink: Option<&Sink>,
    p1: &Pipe,
    p2: Option<&Pipe>,
    inline: bool,
    st: &mut State,
    tty: bool,
    progress: bool,
) -> Result<(), String> {
    let mut buf = vec![0u8; if inline { p1.size } else { 0 }];
    // With a controller each call's data is placed by the driver's statistics.
    let controlled = st.controller.is_some();
    while st.total < a.bytes {
        if st.expired(a) {
            break;
        }
        st.maybe_reopen(a, src)?;
        let want = p1
            .size
            .min((a.bytes - st.total).min(usize::MAX as u64) as usize);
        let n = match splice(src.fd(), p1.w.as_raw_fd(), want, libc::SPLICE_F_MOVE) {
            Ok(0) => {
                if !st.session_ended("splice") || !st.after(a, tty, progress) {
                    break;
                }
                continue;
            }
            Ok(n) => n,
            Err(e) => {
                if !st.errno_event(src, &e, "splice")? {
                    break;
                }
                if !st.after(a, tty, progress) {
                    break;
                }
                continue;
            }
        };
        // With the data read back (inline verification) the placement can use it: it
        // is done after the read-back below.
        if controlled && !inline {
            st.attribute(src, cfg, n, None)?;
        }
        if !(controlled && inline) {
            st.first_data(src, n)?;
            st.mark();
        }
        if n < want {
            st.short_reads += 1;
        }
        if let Some(at) = a.hold_at {
            if !st.held && st.total + n as u64 > at {
                // Keep the device's pages in the pipe without reading them: the card
                // runs out of buffers and overflows.
                st.held = true;
                std::thread::sleep(Duration::from_secs_f64(a.hold_s));
            }
        }
        if let Some(p2) = p2 {
            tee_all(p1.r.as_raw_fd(), p2.w.as_raw_fd(), n)?;
        }
        let flow = sink.splice_from(p1.r.as_raw_fd(), st.offset, n)?;
        if let Some(p2) = p2 {
            if inline {
                let data = &mut buf[..n];
                read_exact_fd(p2.r.as_raw_fd(), data)?;
                if controlled {
                    st.attribute(src, cfg, n, Some(data))?;
                    st.first_data(src, n)?;
                    st.mark();
                }
                let segs = [(st.total, st.offset)];
                st.inline.verify(cfg, &segs, st.total, data);
            } else if let Some(t) = tee_sink {
                drain(p2.r.as_raw_fd(), t.fd(), n, &t.spec.name())?;
            }
        }
        st.offset += n as u64;
        st.total += n as u64;
        if flow == Flow::Stop || !st.after(a, tty, progress) {
            break;
        }
    }
    Ok(())
}

pub(crate) fn mmap_loop(
    a: &Args,
    cfg: &AcqConfig,
    src: &Source,
    sink: &mut Sink,
    st: &mut State,
    tty: bool,
    progress: bool,
) -> Result<(), String> {
    let Some(dev) = src.card() else {
        return Err("mmap needs the card".into());
    };
    let entries = 1usize << cfg.ring_log2;
    let map =
        ReadOnlyMap::new(dev.raw_fd(), (entries + 1) * 4096).map_err(|e| format!("mmap: {e}"))?;
    let mut release = 0u32;
    while st.total < a.bytes {
        if st.expired(a) {
            break;
        }
        let mut req = acq_guest::uapi::AcqMmapSync {
            release,
            timeout_ms: 1000,
            ..Default::default()
        };
        release = 0;
        let r = dev.ioctl_raw(
            acq_guest::uapi::ACQ_IOC_MMAP_SYNC,
            &mut req as *mut acq_guest::uapi::AcqMmapSync as usize,
        );
        if let Err(code) = r {
            let e = std::io::Error::from_raw_os_error(code);
            if !st.errno_event(src, &e, "ACQ_IOC_MMAP_SYNC")? {
                break;
            }
            if !st.after(a, tty, progress) {
                break;
            }
            continue;
        }
        if st.session.is_none() {
            st.session = src.stats()?.map(|s| s.session);
        }
        st.offset = req.stream_offset;
        let bs = req.block_size as usize;
        let mut taken = 0u32;
        let mut stop = false;
        while taken < req.count && st.total < a.bytes {
            let slot = (req.head as usize + taken as usize) % entries;
            let want = bs.min((a.bytes - st.total).min(usize::MAX as u64) as usize);
            let data = map.bytes((slot + 1) * 4096, want);
            st.mark();
            if a.verify {
                let segs = [(st.total, st.offset)];
                st.inline.verify(cfg, &segs, st.total, data);
            }
            let flow = sink.put(st.offset, data)?;
            st.offset += data.len() as u64;
            st.total += data.len() as u64;
            taken += 1;
            if flow == Flow::Stop {
                stop = true;
                break;
            }
        }
        release = taken;
        if stop {
            // Give the blocks back before leaving: the pool must be whole at the end.
            let mut req = acq_guest::uapi::AcqMmapSync {
                release,
                timeout_ms: 0,
                ..Default::default()
            };
            let _ = dev.ioctl_raw(
                acq_guest::uapi::ACQ_IOC_MMAP_SYNC,
                &mut req as *mut acq_guest::uapi::AcqMmapSync as usize,
            );
            break;
        }
        if !st.after(a, tty, progress) {
            break;
        }
    }
    Ok(())
}

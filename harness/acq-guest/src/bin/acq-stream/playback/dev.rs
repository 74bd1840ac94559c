//! The playback file: /dev/acqN-out opened, configured and asked for its counters.

use super::*;

/// The open playback node.
pub(super) struct PbDev {
    pub(super) fd: OwnedFd,
}

impl PbDev {
    pub(super) fn open(path: &str, nonblock: bool) -> std::io::Result<PbDev> {
        let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = libc::O_WRONLY | libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 };
        // SAFETY: `c` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PbDev { fd })
    }

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(super) fn ioctl(&self, cmd: u32, arg: usize) -> Result<(), String> {
        // SAFETY: `arg` is null or points at a structure of the size encoded in `cmd`
        // (the callers below); the driver writes no more than that.
        let r = unsafe { libc::ioctl(self.raw(), cmd as _, arg) };
        if r < 0 {
            Err(errno_name(last_errno()))
        } else {
            Ok(())
        }
    }

    pub(super) fn config(&self) -> Result<AcqConfig, String> {
        let mut c = AcqConfig::default();
        self.ioctl(
            uapi::ACQ_IOC_PB_GET_CONFIG,
            &mut c as *mut AcqConfig as usize,
        )?;
        Ok(c)
    }

    pub(super) fn set_config(&self, c: &AcqConfig) -> Result<(), String> {
        self.ioctl(uapi::ACQ_IOC_PB_SET_CONFIG, c as *const AcqConfig as usize)
    }

    pub(super) fn stats(&self) -> Result<AcqPbStats, String> {
        let mut s = AcqPbStats::default();
        self.ioctl(
            uapi::ACQ_IOC_PB_GET_STATS,
            &mut s as *mut AcqPbStats as usize,
        )?;
        Ok(s)
    }

    pub(super) fn drain(&self) -> Result<(), String> {
        self.ioctl(uapi::ACQ_IOC_PB_DRAIN, 0)
    }

    /// Waits until the node takes more data (poll for POLLOUT), at most 10 s.
    pub(super) fn wait_writable(&self) -> Result<(), String> {
        let mut p = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 10_000) };
        match r {
            r if r < 0 && last_errno() == libc::EINTR => Ok(()),
            r if r < 0 => Err(format!("poll: {}", errno_name(last_errno()))),
            0 => Err("poll: not writable for 10 s".into()),
            _ => Ok(()),
        }
    }
}

pub(super) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The card's counters as JSON.
pub fn pb_stats_json(s: &AcqPbStats) -> serde_json::Value {
    serde_json::json!({
        "bytes": s.bytes,
        "blocks": s.blocks,
        "zero_copy_bytes": s.zero_copy_bytes,
        "copied_bytes": s.copied_bytes,
        "underruns": s.underruns,
        "underrun_bytes": s.underrun_bytes,
        "mismatch_blocks": s.mismatch_blocks,
        "errors": s.errors,
        "session": s.session,
        "in_flight": s.in_flight,
        "state": s.state,
        "card_verified": s.card_verified,
        "card_bytes": s.card_bytes,
        "card_first_bad": (s.card_first_bad != u64::MAX).then_some(s.card_first_bad),
        "card_mismatch": s.card_mismatch,
        "card_underruns": s.card_underruns,
        "held_pages": s.held_pages,
        "lost_wakeups": s.lost_wakeups,
    })
}

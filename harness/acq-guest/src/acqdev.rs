//! A thin safe wrapper of `/dev/acqN` for the guest tools: open, read, poll and the
//! driver's ioctls (see `driver/uapi.rs` and docs/driver.md).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::uapi::{self, AcqConfig, AcqInfo, AcqStats};
use acq_wire::consumer::{CardConfig, DeviceArgs, Transfer};
use acq_wire::counters::DriverStats;

/// An open card.
pub struct AcqDev {
    fd: OwnedFd,
}

impl AcqDev {
    /// Opens `path` read-only, optionally with O_NONBLOCK.
    pub fn open(path: &str, nonblock: bool) -> io::Result<AcqDev> {
        let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 };
        // SAFETY: `c` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(AcqDev { fd })
    }

    /// The raw descriptor (for poll()).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// One read() call into `buf`.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(self.raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// poll() for `events` with a timeout in milliseconds; returns `revents`.
    pub fn poll(&self, events: i16, timeout_ms: i32) -> io::Result<i16> {
        let mut p = libc::pollfd {
            fd: self.raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(p.revents)
        }
    }

    /// A raw ioctl with a pointer (or integer) argument; returns the errno on failure.
    pub fn ioctl_raw(&self, cmd: u32, arg: usize) -> Result<i32, i32> {
        // SAFETY: the caller chose `arg`; the driver validates every argument and never
        // writes outside the size encoded in `cmd`. Bad pointers come back as EFAULT.
        let r = unsafe { libc::ioctl(self.raw_fd(), cmd as _, arg) };
        if r < 0 {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(r)
        }
    }

    fn ioctl_none(&self, cmd: u32) -> io::Result<()> {
        self.ioctl_raw(cmd, 0)
            .map(|_| ())
            .map_err(io::Error::from_raw_os_error)
    }

    /// `ACQ_IOC_START`.
    pub fn start(&self) -> io::Result<()> {
        self.ioctl_none(uapi::ACQ_IOC_START)
    }

    /// `ACQ_IOC_STOP`.
    pub fn stop(&self) -> io::Result<()> {
        self.ioctl_none(uapi::ACQ_IOC_STOP)
    }

    /// `ACQ_IOC_RESET`.
    pub fn reset(&self) -> io::Result<()> {
        self.ioctl_none(uapi::ACQ_IOC_RESET)
    }

    /// `ACQ_IOC_GET_CONFIG`.
    pub fn config(&self) -> io::Result<AcqConfig> {
        let mut c = AcqConfig::default();
        self.ioctl_raw(uapi::ACQ_IOC_GET_CONFIG, &mut c as *mut AcqConfig as usize)
            .map_err(io::Error::from_raw_os_error)?;
        Ok(c)
    }

    /// `ACQ_IOC_SET_CONFIG`.
    pub fn set_config(&self, c: &AcqConfig) -> io::Result<()> {
        self.ioctl_raw(uapi::ACQ_IOC_SET_CONFIG, c as *const AcqConfig as usize)
            .map(|_| ())
            .map_err(io::Error::from_raw_os_error)
    }

    /// `ACQ_IOC_GET_STATS`.
    pub fn stats(&self) -> io::Result<AcqStats> {
        let mut s = AcqStats::default();
        self.ioctl_raw(uapi::ACQ_IOC_GET_STATS, &mut s as *mut AcqStats as usize)
            .map_err(io::Error::from_raw_os_error)?;
        Ok(s)
    }

    /// `ACQ_IOC_GET_INFO`.
    pub fn info(&self) -> io::Result<AcqInfo> {
        let mut i = AcqInfo::default();
        self.ioctl_raw(uapi::ACQ_IOC_GET_INFO, &mut i as *mut AcqInfo as usize)
            .map_err(io::Error::from_raw_os_error)?;
        Ok(i)
    }
}

/// JSON view of the statistics.
pub fn stats_json(s: &AcqStats) -> serde_json::Value {
    serde_json::to_value(driver_stats(s)).unwrap_or_default()
}

/// The statistics as the harness reads them (`acq_wire::counters::DriverStats`).
pub fn driver_stats(s: &AcqStats) -> DriverStats {
    DriverStats {
        bytes: s.bytes,
        blocks: s.blocks,
        overflows: s.overflows,
        lost_bytes: s.lost_bytes,
        errors: s.errors,
        interrupts: s.interrupts,
        read_offset: s.read_offset,
        session: s.session,
        watchdog_resets: s.watchdog_resets,
        lost_wakeups: s.lost_wakeups,
        state: s.state,
        pool_pages: s.pool_pages,
        pool_free: s.pool_free,
        spliced_bytes: s.spliced_bytes,
    }
}

/// JSON view of a configuration.
pub fn config_json(c: &AcqConfig) -> serde_json::Value {
    serde_json::to_value(card_config(c)).unwrap_or_default()
}

/// The configuration as a result line reports it.
pub fn card_config(c: &AcqConfig) -> CardConfig {
    CardConfig {
        block_size: c.block_size,
        ring_log2: c.ring_log2,
        rate: c.rate,
        seed: c.seed,
        pattern: c.pattern,
        irq_mod_count: c.irq_mod_count,
        irq_mod_time_us: c.irq_mod_time_us,
        flags: c.flags,
        transfer: transfer_name(c.flags).into(),
    }
}

/// The transfer mode a configuration selects: `"dma"` or `"bar2"` (`ACQ_CFG_BAR2`).
pub fn transfer_name(flags: u32) -> &'static str {
    if flags & uapi::ACQ_CFG_BAR2 != 0 {
        "bar2"
    } else {
        "dma"
    }
}

/// Sets the transfer mode of a configuration from its name (`dma` or `bar2`).
pub fn set_transfer(c: &mut AcqConfig, name: &str) -> Result<(), String> {
    set_transfer_mode(c, Transfer::parse(name)?);
    Ok(())
}

/// Sets the transfer mode of a configuration (`ACQ_CFG_BAR2`).
pub fn set_transfer_mode(c: &mut AcqConfig, t: Transfer) {
    match t {
        Transfer::Dma => c.flags &= !uapi::ACQ_CFG_BAR2,
        Transfer::Bar2 => c.flags |= uapi::ACQ_CFG_BAR2,
    }
}

/// Applies the settings a command line gave (`--block`, `--rate`, ...) to a
/// configuration read from the card; the rest keep their value.
pub fn apply(c: &mut AcqConfig, d: &DeviceArgs) {
    if let Some(v) = d.block {
        c.block_size = v;
    }
    if let Some(v) = d.ring_log2 {
        c.ring_log2 = v;
    }
    if let Some(t) = d.transfer {
        set_transfer_mode(c, t);
    }
    if let Some(v) = d.rate {
        c.rate = v;
    }
    if let Some(v) = d.pattern {
        c.pattern = v;
    }
    if let Some(v) = d.seed {
        c.seed = v;
    }
    if let Some(v) = d.irq_count {
        c.irq_mod_count = v;
    }
    if let Some(v) = d.irq_time_us {
        c.irq_mod_time_us = v;
    }
}

/// A hint for a refused `ACQ_IOC_SET_CONFIG` in BAR2 mode: the usual cause.
pub fn bar2_hint(c: &AcqConfig, e: &io::Error) -> &'static str {
    if c.flags & uapi::ACQ_CFG_BAR2 != 0 && e.raw_os_error() == Some(libc::EINVAL) {
        " (BAR2 mode: the card's BAR2 must hold the completion ring and 2^ring_log2 blocks, \
         e.g. --ring-log2 7 or less with 4 KiB blocks in a 1 MiB BAR2, and the card needs \
         BAR2 streaming; the kernel log says which)"
    } else {
        ""
    }
}

/// JSON view of the card information.
pub fn info_json(i: &AcqInfo) -> serde_json::Value {
    serde_json::json!({
        "abi_version": i.abi_version,
        "index": i.index,
        "hw_version": i.hw_version,
        "caps": i.caps,
        "fifo_depth": i.fifo_depth,
        "irq_mode": if i.irq_mode == uapi::ACQ_IRQ_MSIX { "msix" } else { "msi" },
        "max_ring_log2": i.max_ring_log2,
        "max_block_size": i.max_block_size,
    })
}

/// Parses a byte count or rate: the project's one size grammar (`acq_wire::size`).
pub fn parse_size(s: &str) -> Option<u64> {
    acq_wire::parse_size(s).ok()
}

/// Parses a pattern: the project's one pattern vocabulary (`acq_wire::pattern`).
pub fn parse_pattern(s: &str) -> Option<u32> {
    acq_wire::parse_pattern(s).ok()
}

/// Name of an errno value for reports.
pub fn errno_name(e: i32) -> String {
    match e {
        libc::EPIPE => "EPIPE".into(),
        libc::EIO => "EIO".into(),
        libc::EINTR => "EINTR".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::ENOTTY => "ENOTTY".into(),
        libc::ESPIPE => "ESPIPE".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        libc::ERESTART => "ERESTART".into(),
        other => format!("errno{other}"),
    }
}

/// The PCI address of the (first) card the driver `acq` is bound to, for its sysfs
/// `unbind`.
pub fn bound_card() -> io::Result<String> {
    for e in std::fs::read_dir("/sys/bus/pci/drivers/acq")? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("0000:") {
            return Ok(name);
        }
    }
    Err(io::Error::other("no card bound to acq"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_patterns_parse() {
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("0x10"), Some(16));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_pattern("prbs"), Some(1));
        assert_eq!(parse_pattern("sine:4"), Some(0x302));
        assert_eq!(parse_pattern("sine:17"), None);
    }

    #[test]
    fn ioctl_numbers_match_linux_encoding() {
        // _IOR(0xAC, 6, 80) = 2 << 30 | 80 << 16 | 0xAC << 8 | 6
        assert_eq!(uapi::ACQ_IOC_GET_STATS, 0x8060_AC06);
        assert_eq!(uapi::ACQ_IOC_GET_STATS_V1, 0x8050_AC06);
        assert_eq!(uapi::ACQ_IOC_START, 0x0000_AC01);
        assert_eq!(uapi::ACQ_IOC_SET_CONFIG, 0x4028_AC05);
    }
}

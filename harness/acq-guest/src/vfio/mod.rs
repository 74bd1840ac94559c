//! A small userspace VFIO layer for acq-vfio (docs/vfio.md): container and group (legacy
//! VFIO API, type-1 or the no-IOMMU backend), the device fd, region access (pread, pwrite,
//! mmap), MSI-X on eventfds, device reset, and DMA memory ([`dma`]).
//!
//! Two backends behind one [`Device`]:
//!
//! * **type-1** (an IOMMU group `/dev/vfio/N`, e.g. in a VM with a virtual IOMMU): the
//!   vfio-ioctls crate opens the container, group and device (`VfioContainer`,
//!   `VfioDevice`), and does region info, MSI-X and the DMA maps.
//! * **no-IOMMU** (`/dev/vfio/noiommu-N`): vfio-ioctls cannot open it (`VfioContainer::new`
//!   insists on the type-1 v2 extension and `get_group` always sets type-1 v2; `VfioDevice`
//!   only comes from its own container or iommufd), so the ioctls are issued here with
//!   vfio-bindings' structures, each through one of the two wrappers below.
//!
//! Region reads and writes and the function reset go through the device fd in both cases:
//! vfio-ioctls' `region_read`, `region_write` and `reset` only log failures, and acq-vfio
//! must know whether a config write or an FLR happened.

pub mod dma;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_bindings::bindings::vfio as b;
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`: every VFIO ioctl is `_IO` (no size or direction bits).
const fn vfio_io(n: u32) -> libc::c_ulong {
    (((b::VFIO_TYPE as u32) << 8) | (b::VFIO_BASE + n)) as libc::c_ulong
}
const VFIO_GET_API_VERSION: libc::c_ulong = vfio_io(0);
const VFIO_CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
const VFIO_SET_IOMMU: libc::c_ulong = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);
const VFIO_DEVICE_GET_IRQ_INFO: libc::c_ulong = vfio_io(9);
const VFIO_DEVICE_SET_IRQS: libc::c_ulong = vfio_io(10);
const VFIO_DEVICE_RESET: libc::c_ulong = vfio_io(11);

/// An ioctl whose argument is an integer (or none).
fn ioctl_val(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: only used with the VFIO requests above that take an integer argument (or
    // ignore it); the kernel does not dereference it.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An ioctl whose argument points to `len` bytes at `arg`, which the kernel may read and
/// write. The callers pass the structure the request is defined with (argsz set).
///
/// # Safety
/// `arg` must be valid for reads and writes of the structure the request expects.
unsafe fn ioctl_ptr(fd: RawFd, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<i32> {
    // SAFETY: the caller guarantees that `arg` is valid for this request.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The IOMMU backend the container uses; it decides what a DMA (bus) address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iommu {
    /// No IOMMU (`enable_unsafe_noiommu_mode`): bus address = physical address.
    NoIommu,
    /// Type-1 (v2) IOMMU: we choose IOVAs and map them with VFIO_IOMMU_MAP_DMA.
    Type1,
}

impl Iommu {
    pub fn name(self) -> &'static str {
        match self {
            Iommu::NoIommu => "noiommu",
            Iommu::Type1 => "type1",
        }
    }
}

/// Region information (VFIO_DEVICE_GET_REGION_INFO).
#[derive(Clone, Copy, Debug)]
pub struct RegionInfo {
    pub flags: u32,
    pub size: u64,
    pub offset: u64,
}

/// An open VFIO device with its group and container.
pub struct Device {
    pub bdf: String,
    pub iommu: Iommu,
    backend: Backend,
}

enum Backend {
    /// vfio-ioctls. `VfioDevice`'s drop closes the device fd and releases the group; the
    /// container goes with the last `Arc` (DMA chunks hold one, so their IOVAs are unmapped
    /// before it closes).
    Type1 {
        device: VfioDevice,
        container: Arc<VfioContainer>,
    },
    /// Raw ioctls. Field order = drop order: the device fd first, then the group, then the
    /// container.
    NoIommu {
        device: File,
        _group: File,
        _container: File,
    },
}

fn vfio_err(what: &str, e: vfio_ioctls::VfioError) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// The sysfs directory of a PCI function.
pub fn sysfs_dir(bdf: &str) -> PathBuf {
    Path::new("/sys/bus/pci/devices").join(bdf)
}

fn read_trim(p: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(p)?.trim().to_string())
}

/// PCI addresses of the functions with this vendor and device ID, sorted.
pub fn find_functions(vendor: u16, device: u16) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/bus/pci/devices") else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        let v = read_trim(&p.join("vendor")).unwrap_or_default();
        let d = read_trim(&p.join("device")).unwrap_or_default();
        if v == format!("0x{vendor:04x}") && d == format!("0x{device:04x}") {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// The name of the driver bound to `bdf`, if any.
pub fn bound_driver(bdf: &str) -> Option<String> {
    std::fs::read_link(sysfs_dir(bdf).join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// vfio_iommu_type1's switch for IOMMUs without interrupt remapping (MSI not isolated: the
/// device could send any MSI). QEMU's intel-iommu with intremap=off is one.
pub const UNSAFE_INTERRUPTS: &str =
    "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts";

/// Whether type-1 groups without MSI isolation are allowed (the parameter reads Y).
pub fn unsafe_interrupts_allowed() -> bool {
    read_trim(Path::new(UNSAFE_INTERRUPTS)).is_ok_and(|v| v == "Y" || v == "1")
}

/// Allows type-1 groups without MSI isolation (see [`UNSAFE_INTERRUPTS`]).
pub fn allow_unsafe_interrupts() -> io::Result<()> {
    std::fs::write(UNSAFE_INTERRUPTS, "1")
        .map_err(|e| io::Error::new(e.kind(), format!("{UNSAFE_INTERRUPTS}: {e}")))
}

/// Whether `bdf` sits behind an IOMMU (it has an IOMMU group before vfio-pci creates a
/// no-IOMMU one): then vfio-pci gives it a type-1 group and no-IOMMU mode is not needed.
pub fn has_iommu_group(bdf: &str) -> bool {
    sysfs_dir(bdf).join("iommu_group").exists()
}

/// Binds `bdf` to vfio-pci: enables no-IOMMU mode when `noiommu` (before the bind, so the
/// group is created as a no-IOMMU group), unbinds the current driver, sets driver_override
/// and asks the PCI core to probe. Waits up to 5 s for the IOMMU group.
pub fn bind_vfio_pci(bdf: &str, noiommu: bool) -> io::Result<()> {
    let dir = sysfs_dir(bdf);
    if noiommu {
        let p = Path::new("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode");
        if read_trim(p).map(|v| v != "Y" && v != "1").unwrap_or(true) {
            std::fs::write(p, "1")
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        }
    }
    match bound_driver(bdf).as_deref() {
        Some("vfio-pci") => return Ok(()),
        Some(_) => std::fs::write(dir.join("driver/unbind"), bdf)?,
        None => {}
    }
    std::fs::write(dir.join("driver_override"), "vfio-pci")?;
    std::fs::write("/sys/bus/pci/drivers_probe", bdf)?;
    for _ in 0..500 {
        if bound_driver(bdf).as_deref() == Some("vfio-pci") && dir.join("iommu_group").exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(io::Error::other(format!(
        "{bdf}: not bound to vfio-pci (driver {:?})",
        bound_driver(bdf)
    )))
}

impl Device {
    /// Opens `bdf` (already bound to vfio-pci) through its group: a no-IOMMU group
    /// (`/dev/vfio/noiommu-N`) if there is one, else an IOMMU group (`/dev/vfio/N`, type-1).
    pub fn open(bdf: &str) -> io::Result<Device> {
        let link = std::fs::read_link(sysfs_dir(bdf).join("iommu_group")).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{bdf}: no IOMMU group ({e}): bind vfio-pci"),
            )
        })?;
        let group_id = link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let noiommu_path = format!("/dev/vfio/noiommu-{group_id}");
        if !Path::new(&noiommu_path).exists() {
            return Device::open_type1(bdf);
        }
        Device::open_noiommu(bdf, &noiommu_path)
    }

    /// Type-1 through vfio-ioctls: the container (API version, type-1 v2 extension), the
    /// group (viable, attached, `VFIO_SET_IOMMU`) and the device fd.
    fn open_type1(bdf: &str) -> io::Result<Device> {
        let container =
            Arc::new(VfioContainer::new(None).map_err(|e| vfio_err("VFIO container", e))?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(&sysfs_dir(bdf), ops, false).map_err(|e| match e {
            // vfio_iommu_type1 refuses a group whose MSIs the IOMMU cannot isolate (no
            // interrupt remapping) unless allow_unsafe_interrupts is set.
            vfio_ioctls::VfioError::ContainerSetIOMMU(ref errno)
                if errno.errno() == libc::EPERM =>
            {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "VFIO_SET_IOMMU (type-1): {e}: the IOMMU has no interrupt remapping; \
                         set {UNSAFE_INTERRUPTS} (--bind does)"
                    ),
                )
            }
            e => vfio_err("VFIO device (type-1 group)", e),
        })?;
        Ok(Device {
            bdf: bdf.to_string(),
            iommu: Iommu::Type1,
            backend: Backend::Type1 { device, container },
        })
    }

    /// No-IOMMU through raw ioctls (vfio-ioctls cannot: see the module comment).
    fn open_noiommu(bdf: &str, group_path: &str) -> io::Result<Device> {
        let ext = b::VFIO_NOIOMMU_IOMMU;
        let rw = |p: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(|e| io::Error::new(e.kind(), format!("open {p}: {e}")))
        };
        let container = rw("/dev/vfio/vfio")?;
        let version = ioctl_val(container.as_raw_fd(), VFIO_GET_API_VERSION, 0)?;
        if version as u32 != b::VFIO_API_VERSION {
            return Err(io::Error::other(format!("VFIO API version {version}")));
        }
        if ioctl_val(container.as_raw_fd(), VFIO_CHECK_EXTENSION, ext as _)? != 1 {
            return Err(io::Error::other(
                "the VFIO container does not support the no-IOMMU backend",
            ));
        }
        let group = rw(group_path)?;
        let mut status = b::vfio_group_status {
            argsz: std::mem::size_of::<b::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: VFIO_GROUP_GET_STATUS takes a struct vfio_group_status, which lives on
        // the stack for the whole call.
        unsafe {
            ioctl_ptr(
                group.as_raw_fd(),
                VFIO_GROUP_GET_STATUS,
                (&mut status as *mut b::vfio_group_status).cast(),
            )?;
        }
        if status.flags & b::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(io::Error::other(format!(
                "{group_path}: group not viable (every device in it must be bound to vfio-pci)"
            )));
        }
        let mut cfd: i32 = container.as_raw_fd();
        // SAFETY: VFIO_GROUP_SET_CONTAINER takes a pointer to an int (the container fd).
        unsafe {
            ioctl_ptr(
                group.as_raw_fd(),
                VFIO_GROUP_SET_CONTAINER,
                (&mut cfd as *mut i32).cast(),
            )?;
        }
        ioctl_val(container.as_raw_fd(), VFIO_SET_IOMMU, ext as _)?;
        let name = CString::new(bdf).map_err(|_| io::Error::other("bad PCI address"))?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD takes a NUL-terminated string that it only reads.
        let fd = unsafe {
            ioctl_ptr(
                group.as_raw_fd(),
                VFIO_GROUP_GET_DEVICE_FD,
                name.as_ptr() as *mut libc::c_void,
            )?
        };
        // SAFETY: the ioctl returned a new file descriptor that nothing else owns.
        let device = unsafe { File::from_raw_fd(fd) };
        Ok(Device {
            bdf: bdf.to_string(),
            iommu: Iommu::NoIommu,
            backend: Backend::NoIommu {
                device,
                _group: group,
                _container: container,
            },
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        match &self.backend {
            Backend::Type1 { device, .. } => device.as_raw_fd(),
            Backend::NoIommu { device, .. } => device.as_raw_fd(),
        }
    }

    /// The type-1 container, for DMA maps (None without an IOMMU).
    pub fn container(&self) -> Option<Arc<VfioContainer>> {
        match &self.backend {
            Backend::Type1 { container, .. } => Some(container.clone()),
            Backend::NoIommu { .. } => None,
        }
    }

    pub fn region_info(&self, index: u32) -> io::Result<RegionInfo> {
        if let Backend::Type1 { device, .. } = &self.backend {
            // vfio-ioctls read every region's info when it opened the device.
            let size = device.get_region_size(index);
            if size == 0 {
                return Err(io::Error::other(format!(
                    "region {index} is missing or empty"
                )));
            }
            return Ok(RegionInfo {
                flags: device.get_region_flags(index),
                size,
                offset: device.get_region_offset(index),
            });
        }
        // SAFETY: a zeroed vfio_region_info (plain integers) is valid.
        let mut info: b::vfio_region_info = unsafe { std::mem::zeroed() };
        info.argsz = std::mem::size_of::<b::vfio_region_info>() as u32;
        info.index = index;
        // SAFETY: VFIO_DEVICE_GET_REGION_INFO takes a struct vfio_region_info with argsz
        // set to its size; the kernel writes at most argsz bytes.
        unsafe {
            ioctl_ptr(
                self.raw_fd(),
                VFIO_DEVICE_GET_REGION_INFO,
                (&mut info as *mut b::vfio_region_info).cast(),
            )?;
        }
        Ok(RegionInfo {
            flags: info.flags,
            size: info.size,
            offset: info.offset,
        })
    }

    /// Number of interrupts of an IRQ index (VFIO_DEVICE_GET_IRQ_INFO).
    pub fn irq_count(&self, index: u32) -> io::Result<u32> {
        if let Backend::Type1 { device, .. } = &self.backend {
            return device
                .get_irq_info(index)
                .map(|i| i.count)
                .ok_or_else(|| io::Error::other(format!("no IRQ index {index}")));
        }
        let mut info = b::vfio_irq_info {
            argsz: std::mem::size_of::<b::vfio_irq_info>() as u32,
            flags: 0,
            index,
            count: 0,
        };
        // SAFETY: VFIO_DEVICE_GET_IRQ_INFO takes a struct vfio_irq_info (argsz set).
        unsafe {
            ioctl_ptr(
                self.raw_fd(),
                VFIO_DEVICE_GET_IRQ_INFO,
                (&mut info as *mut b::vfio_irq_info).cast(),
            )?;
        }
        Ok(info.count)
    }

    /// Connects eventfds to interrupts `0..fds.len()` of an IRQ index (for MSI-X this
    /// enables MSI-X with that many vectors); an empty `fds` disables the index.
    pub fn set_irq_eventfds(&self, index: u32, fds: &[&EventFd]) -> io::Result<()> {
        if let Backend::Type1 { device, .. } = &self.backend {
            return if fds.is_empty() {
                device
                    .disable_irq(index)
                    .map_err(|e| vfio_err("VFIO_DEVICE_SET_IRQS", e))
            } else {
                let fds = fds.iter().map(|e| &e.0).collect();
                device
                    .enable_irq(index, fds)
                    .map_err(|e| vfio_err("VFIO_DEVICE_SET_IRQS", e))
            };
        }
        // struct vfio_irq_set: five u32 (argsz, flags, index, start, count), then the data
        // (here one s32 eventfd per interrupt).
        const HDR: usize = 5;
        const _: () = assert!(std::mem::size_of::<b::vfio_irq_set>() == HDR * 4);
        let mut words: Vec<u32> = vec![0; HDR + fds.len()];
        words[0] = (words.len() * 4) as u32;
        words[1] = if fds.is_empty() {
            b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_ACTION_TRIGGER
        } else {
            b::VFIO_IRQ_SET_DATA_EVENTFD | b::VFIO_IRQ_SET_ACTION_TRIGGER
        };
        words[2] = index;
        words[3] = 0;
        words[4] = fds.len() as u32;
        for (w, fd) in words[HDR..].iter_mut().zip(fds) {
            *w = fd.raw_fd() as u32;
        }
        // SAFETY: VFIO_DEVICE_SET_IRQS reads argsz bytes of a struct vfio_irq_set; the
        // buffer holds exactly that (header and one s32 per interrupt).
        unsafe {
            ioctl_ptr(
                self.raw_fd(),
                VFIO_DEVICE_SET_IRQS,
                words.as_mut_ptr().cast(),
            )?;
        }
        Ok(())
    }

    /// VFIO_DEVICE_RESET: a function-level reset (vfio-pci saves and restores config
    /// space around it, MSI-X included).
    pub fn reset(&self) -> io::Result<()> {
        ioctl_val(self.raw_fd(), VFIO_DEVICE_RESET, 0).map(|_| ())
    }

    /// The device fd as a `File` for positioned reads and writes (both backends).
    fn device_file(&self) -> std::mem::ManuallyDrop<File> {
        // SAFETY: the fd stays open as long as self (which the returned value borrows in
        // practice: it is only used within the calling method), and ManuallyDrop never
        // closes it.
        std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(self.raw_fd()) })
    }

    pub fn read_region(&self, index: u32, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.region_info(index)?;
        self.device_file().read_exact_at(buf, r.offset + off)
    }

    pub fn write_region(&self, index: u32, off: u64, buf: &[u8]) -> io::Result<()> {
        let r = self.region_info(index)?;
        self.device_file().write_all_at(buf, r.offset + off)
    }

    /// Sets Memory Space and Bus Master in the PCI Command register.
    pub fn enable_bus_master(&self) -> io::Result<()> {
        let cfg = b::VFIO_PCI_CONFIG_REGION_INDEX;
        let mut cmd = [0u8; 2];
        self.read_region(cfg, 4, &mut cmd)?;
        let v = u16::from_le_bytes(cmd) | 0x2 | 0x4;
        self.write_region(cfg, 4, &v.to_le_bytes())
    }

    /// Maps `len` bytes of a region from `off` (the region must be mmappable there).
    pub fn mmap(&self, index: u32, off: u64, len: usize) -> io::Result<Mapping> {
        let r = self.region_info(index)?;
        if r.flags & b::VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(io::Error::other(format!("region {index} is not mmappable")));
        }
        // SAFETY: a fresh shared mapping of the device fd; the kernel checks the range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.raw_fd(),
                (r.offset + off) as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }
}

/// An mmapped part of a region. 32-bit accesses only (the card's BAR0 rule).
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    pub fn read32(&self, off: usize) -> u32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as self.
        unsafe { std::ptr::read_volatile(self.ptr.add(off) as *const u32) }
    }

    pub fn write32(&self, off: usize, v: u32) {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as self.
        unsafe { std::ptr::write_volatile(self.ptr.add(off) as *mut u32, v) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what mmap returned.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A non-blocking eventfd (one per MSI-X vector); vmm-sys-util's, which is what
/// vfio-ioctls' `enable_irq` takes.
pub struct EventFd(vmm_sys_util::eventfd::EventFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map(EventFd)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Reads and clears the counter; 0 if nothing was signalled.
    pub fn take(&self) -> u64 {
        self.0.read().unwrap_or(0)
    }
}

/// Waits up to `timeout_ms` for any of `fds` to become readable; returns which are.
pub fn wait_readable(fds: &[RawFd], timeout_ms: i32) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a valid array of p.len() pollfds.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    p.iter().map(|x| x.revents & libc::POLLIN != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_vfio_h() {
        // _IO(';', 100 + n) from <linux/vfio.h>.
        assert_eq!(VFIO_GET_API_VERSION, 0x3B64);
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3B65);
        assert_eq!(VFIO_SET_IOMMU, 0x3B66);
        assert_eq!(VFIO_GROUP_GET_STATUS, 0x3B67);
        assert_eq!(VFIO_GROUP_SET_CONTAINER, 0x3B68);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3B6A);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3B6C);
        assert_eq!(VFIO_DEVICE_GET_IRQ_INFO, 0x3B6D);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3B6E);
        assert_eq!(VFIO_DEVICE_RESET, 0x3B6F);
    }

    #[test]
    fn eventfd_counts_and_clears() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.take(), 0);
        // SAFETY: writes 8 bytes from a local to the eventfd.
        let n = unsafe { libc::write(e.raw_fd(), [2u64][..].as_ptr().cast(), 8) };
        assert_eq!(n, 8);
        assert_eq!(wait_readable(&[e.raw_fd()], 0), vec![true]);
        assert_eq!(e.take(), 2);
        assert_eq!(wait_readable(&[e.raw_fd()], 0), vec![false]);
    }
}

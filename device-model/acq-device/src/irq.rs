//! Interrupt lines: the eventfds the VMM gave us for MSI and MSI-X, with VFIO `SET_IRQS`
//! semantics (independent of the transport that carried the request).
//!
//! Which message a cause uses: with MSI-X enabled, its own vector; with MSI, message 0 for
//! every cause; with neither, no message (docs/device.md section 9.1).

use std::fs::File;
use std::io::Write;
use std::sync::RwLock;

use thiserror::Error;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK, VFIO_PCI_ERR_IRQ_INDEX,
    VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_NUM_IRQS,
    VFIO_PCI_REQ_IRQ_INDEX,
};

/// A refused `SET_IRQS` request.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IrqError {
    /// The IRQ index does not exist.
    #[error("IRQ index {0} does not exist")]
    Index(u32),
    /// `start + count` is past the index's vectors.
    #[error("vectors {start}..{start}+{count} are outside the {have} of index {index}")]
    Range {
        /// IRQ index.
        index: u32,
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
        /// Vectors the index has.
        have: u32,
    },
    /// A flag combination this device does not implement.
    #[error("unsupported SET_IRQS flags {0:#x} for index {1}")]
    Flags(u32, u32),
    /// The card refuses MSI-X (the `msix_enable_fails` setting).
    #[error("this card's MSI-X cannot be enabled (model setting msix_enable_fails)")]
    MsixRefused,
    /// A file descriptor that came with the request is not an eventfd.
    #[error("the file descriptor for vector {vector} is not an eventfd ({what})")]
    NotEventfd {
        /// The vector it was meant for.
        vector: u32,
        /// What it is instead.
        what: String,
    },
}

/// Takes a client's interrupt file descriptor for `vector`: it must be an eventfd, and is
/// made non-blocking. A blocking eventfd whose counter is near its maximum would block
/// the writer (the vfio-user thread or the engine) until the client reads it, that is
/// for ever with a hostile or stuck client. QEMU creates its eventfds non-blocking
/// already, so the flag changes nothing for it.
fn adopt_eventfd(fd: File, vector: u32) -> Result<File, IrqError> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    let what = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown: {e}"));
    if what != "anon_inode:[eventfd]" {
        return Err(IrqError::NotEventfd { vector, what });
    }
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own (open for the calls); they only
    // read and set the file status flags.
    let ok = unsafe {
        let fl = libc::fcntl(raw, libc::F_GETFL);
        fl >= 0 && libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
    };
    if !ok {
        return Err(IrqError::NotEventfd {
            vector,
            what: format!("fcntl: {}", std::io::Error::last_os_error()),
        });
    }
    Ok(fd)
}

/// Takes every descriptor of a request for vectors `start ..`, or refuses them all.
fn adopt_all(fds: Vec<File>, start: u32) -> Result<Vec<File>, IrqError> {
    fds.into_iter()
        .zip(start..)
        .map(|(fd, v)| adopt_eventfd(fd, v))
        .collect()
}

#[derive(Debug, Default)]
struct Lines {
    msi: Vec<Option<File>>,
    msix: Vec<Option<File>>,
    /// Error and request notifiers (QEMU connects them; the card never signals them).
    notifiers: [Option<File>; 2],
    /// The index (MSI or MSI-X) that was set up last and not disabled since.
    active: Option<u32>,
}

/// The device's interrupt lines.
#[derive(Debug)]
pub struct IrqLines {
    lines: RwLock<Lines>,
    msix_vectors: u32,
    msi_messages: u32,
    msix_refused: bool,
}

impl IrqLines {
    /// Lines for one MSI message (none if `!msi`) and `msix_vectors` MSI-X vectors, none
    /// connected.
    pub fn new(msix_vectors: u16, msi: bool) -> IrqLines {
        let msi_messages = u32::from(msi);
        IrqLines {
            lines: RwLock::new(Lines {
                msi: (0..msi_messages).map(|_| None).collect(),
                msix: (0..msix_vectors).map(|_| None).collect(),
                notifiers: [None, None],
                active: None,
            }),
            msix_vectors: u32::from(msix_vectors),
            msi_messages,
            msix_refused: false,
        }
    }

    /// Lines whose MSI-X vectors can never be connected (`SET_IRQS` for them fails).
    pub fn refusing_msix(mut self) -> IrqLines {
        self.msix_refused = true;
        self
    }

    /// `(count, flags)` of IRQ index `index`, as in `VFIO_DEVICE_GET_IRQ_INFO`.
    pub fn info(&self, index: u32) -> (u32, u32) {
        match index {
            VFIO_PCI_MSI_IRQ_INDEX => (self.msi_messages, VFIO_IRQ_INFO_EVENTFD),
            VFIO_PCI_MSIX_IRQ_INDEX => (self.msix_vectors, VFIO_IRQ_INFO_EVENTFD),
            VFIO_PCI_ERR_IRQ_INDEX | VFIO_PCI_REQ_IRQ_INDEX => (1, VFIO_IRQ_INFO_EVENTFD),
            _ => (0, 0),
        }
    }

    /// Number of IRQ indexes (as in VFIO for PCI).
    pub fn num_indexes(&self) -> u32 {
        VFIO_PCI_NUM_IRQS
    }

    /// Applies a `SET_IRQS` request. `fds` are the eventfds that came with it, for vectors
    /// `start ..` in order; vectors of the range without an fd are disconnected (that is
    /// how QEMU "unassigns").
    pub fn set(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> Result<(), IrqError> {
        let data = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
        let action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
        if self.msix_refused
            && index == VFIO_PCI_MSIX_IRQ_INDEX
            && action == VFIO_IRQ_SET_ACTION_TRIGGER
            && data == VFIO_IRQ_SET_DATA_EVENTFD
        {
            return Err(IrqError::MsixRefused);
        }
        match index {
            VFIO_PCI_MSI_IRQ_INDEX | VFIO_PCI_MSIX_IRQ_INDEX => {}
            VFIO_PCI_ERR_IRQ_INDEX | VFIO_PCI_REQ_IRQ_INDEX => {
                // Error and request notifiers: kept (QEMU wants them accepted), never
                // signalled: the card reports errors through its own registers.
                let i = (index - VFIO_PCI_ERR_IRQ_INDEX) as usize;
                let mut l = self.lines.write().unwrap_or_else(|e| e.into_inner());
                return match (action, data, count) {
                    (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_NONE, 0) => {
                        l.notifiers[i] = None;
                        Ok(())
                    }
                    (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, 1) if start == 0 => {
                        l.notifiers[i] = adopt_all(fds, 0)?.into_iter().next();
                        Ok(())
                    }
                    _ => Err(IrqError::Flags(flags, index)),
                };
            }
            VFIO_PCI_INTX_IRQ_INDEX => {
                // INTx is not supported: only "disable everything" is accepted, as a no-op.
                if count == 0 && data == VFIO_IRQ_SET_DATA_NONE {
                    return Ok(());
                }
                return Err(IrqError::Flags(flags, index));
            }
            other => return Err(IrqError::Index(other)),
        }
        let have = self.info(index).0;
        if start.checked_add(count).is_none_or(|end| end > have) {
            return Err(IrqError::Range {
                index,
                start,
                count,
                have,
            });
        }
        let mut l = self.lines.write().unwrap_or_else(|e| e.into_inner());
        match (action, data) {
            (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK, _) => {
                // MSI/MSI-X masking is done by the VMM (QEMU emulates the table): nothing to
                // do here.
                Ok(())
            }
            (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_NONE) if count == 0 => {
                // Disable: drop every eventfd of this index.
                let v = if index == VFIO_PCI_MSI_IRQ_INDEX {
                    &mut l.msi
                } else {
                    &mut l.msix
                };
                v.iter_mut().for_each(|fd| *fd = None);
                if l.active == Some(index) {
                    l.active = None;
                }
                Ok(())
            }
            (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_NONE) => {
                // Loopback trigger of connected vectors.
                let v = if index == VFIO_PCI_MSI_IRQ_INDEX {
                    &l.msi
                } else {
                    &l.msix
                };
                for fd in v.iter().skip(start as usize).take(count as usize).flatten() {
                    let _ = signal(fd);
                }
                Ok(())
            }
            (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD) => {
                let fds = adopt_all(fds, start)?;
                let v = if index == VFIO_PCI_MSI_IRQ_INDEX {
                    &mut l.msi
                } else {
                    &mut l.msix
                };
                let mut fds = fds.into_iter();
                for slot in v.iter_mut().skip(start as usize).take(count as usize) {
                    // Replacing the old File closes it: QEMU sends a fresh dup every time.
                    *slot = fds.next();
                }
                l.active = Some(index);
                Ok(())
            }
            _ => Err(IrqError::Flags(flags, index)),
        }
    }

    /// Disconnects everything (device reset by disconnection).
    pub fn clear(&self) {
        let mut l = self.lines.write().unwrap_or_else(|e| e.into_inner());
        l.msi.iter_mut().for_each(|fd| *fd = None);
        l.msix.iter_mut().for_each(|fd| *fd = None);
        l.notifiers = [None, None];
        l.active = None;
    }

    /// Sends a message for `vector` (MSI-X numbering) on whatever is enabled. Returns true
    /// if a message was sent.
    pub fn trigger(&self, vector: u16) -> bool {
        let l = self.lines.read().unwrap_or_else(|e| e.into_inner());
        let fd = match l.active {
            Some(VFIO_PCI_MSIX_IRQ_INDEX) => {
                l.msix.get(usize::from(vector)).and_then(Option::as_ref)
            }
            Some(VFIO_PCI_MSI_IRQ_INDEX) => l.msi.first().and_then(Option::as_ref),
            _ => None,
        };
        fd.is_some_and(|fd| signal(fd).is_ok())
    }
}

/// Adds one to the client's eventfd. A full counter (EAGAIN: the descriptor is
/// non-blocking) means the client has not read the earlier messages yet; it will see
/// this one with them, so it counts as sent.
fn signal(mut fd: &File) -> std::io::Result<()> {
    match fd.write(&1u64.to_ne_bytes()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};

    fn eventfd() -> (File, File) {
        // SAFETY: eventfd() has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let g = f.try_clone().unwrap();
        (f, g)
    }

    fn count(mut f: &File) -> u64 {
        let mut b = [0u8; 8];
        match f.read(&mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            _ => 0,
        }
    }

    const EVENTFD: u32 = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;

    #[test]
    fn msix_vectors_one_per_message() {
        let l = IrqLines::new(4, true);
        let (a, a2) = eventfd();
        let (b, b2) = eventfd();
        assert!(!l.trigger(0));
        l.set(VFIO_PCI_MSIX_IRQ_INDEX, EVENTFD, 0, 1, vec![])
            .unwrap();
        l.set(VFIO_PCI_MSIX_IRQ_INDEX, EVENTFD, 0, 1, vec![a])
            .unwrap();
        l.set(VFIO_PCI_MSIX_IRQ_INDEX, EVENTFD, 1, 1, vec![b])
            .unwrap();
        assert!(l.trigger(0));
        assert!(l.trigger(1));
        assert!(l.trigger(1));
        assert!(!l.trigger(2));
        assert_eq!(count(&a2), 1);
        assert_eq!(count(&b2), 2);
        let disable = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
        l.set(VFIO_PCI_MSIX_IRQ_INDEX, disable, 0, 0, vec![])
            .unwrap();
        assert!(!l.trigger(0));
    }

    #[test]
    fn a_card_that_refuses_msix_still_offers_msi() {
        let l = IrqLines::new(4, true).refusing_msix();
        let (a, _a2) = eventfd();
        let (m, m2) = eventfd();
        assert!(matches!(
            l.set(VFIO_PCI_MSIX_IRQ_INDEX, EVENTFD, 0, 1, vec![a]),
            Err(IrqError::MsixRefused)
        ));
        l.set(VFIO_PCI_MSI_IRQ_INDEX, EVENTFD, 0, 1, vec![m])
            .unwrap();
        assert!(l.trigger(0));
        assert_eq!(count(&m2), 1);
        // Without MSI as well the card has nothing to signal with.
        assert_eq!(IrqLines::new(0, false).info(VFIO_PCI_MSI_IRQ_INDEX).0, 0);
    }

    #[test]
    fn a_full_blocking_eventfd_never_blocks_the_card() {
        let l = IrqLines::new(4, true);
        // SAFETY: plain eventfd creation (blocking, as a hostile client would send it).
        let fd = unsafe { libc::eventfd(0, 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor that nothing else owns.
        let mut f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // The counter at its maximum: one more write would block a blocking writer.
        f.write_all(&(u64::MAX - 1).to_ne_bytes()).unwrap();
        let g = f.try_clone().unwrap();
        l.set(VFIO_PCI_MSIX_IRQ_INDEX, EVENTFD, 0, 1, vec![g])
            .unwrap();
        let t = std::time::Instant::now();
        assert!(l.trigger(0), "a full counter still has the message pending");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_descriptor_that_is_not_an_eventfd_is_refused() {
        let l = IrqLines::new(4, true);
        let mut p = [0; 2];
        // SAFETY: `p` has room for the two descriptors pipe() returns.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        // SAFETY: fresh descriptors that nothing else owns.
        let (r, w) = unsafe {
            (
                File::from(OwnedFd::from_raw_fd(p[0])),
                File::from(OwnedFd::from_raw_fd(p[1])),
            )
        };
        drop(r);
        let e = l
            .set(VFIO_PCI_MSIX_IRQ_INDEX, EVENTFD, 1, 1, vec![w])
            .unwrap_err();
        assert!(
            matches!(&e, IrqError::NotEventfd { vector: 1, what } if what.starts_with("pipe:")),
            "{e}"
        );
    }

    #[test]
    fn msi_takes_every_cause() {
        let l = IrqLines::new(4, true);
        let (a, a2) = eventfd();
        l.set(VFIO_PCI_MSI_IRQ_INDEX, EVENTFD, 0, 1, vec![a])
            .unwrap();
        assert!(l.trigger(0));
        assert!(l.trigger(1));
        assert_eq!(count(&a2), 2);
    }

    #[test]
    fn bad_requests_are_refused() {
        let l = IrqLines::new(4, true);
        assert!(l
            .set(VFIO_PCI_MSIX_IRQ_INDEX, EVENTFD, 3, 2, vec![])
            .is_err());
        assert!(l.set(9, EVENTFD, 0, 1, vec![]).is_err());
        assert!(l
            .set(VFIO_PCI_INTX_IRQ_INDEX, EVENTFD, 0, 1, vec![])
            .is_err());
    }
}

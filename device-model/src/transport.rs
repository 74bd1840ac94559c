//! The vfio-user transport: the only module that touches the `vfio_user` crate.
//!
//! It announces the card's regions (config space, BAR0 trapped, BAR2 mmappable through
//! one sparse area covering it, so that the crate sends the memfd) and interrupts, and
//! forwards every request to a [`PciFunction`], which knows nothing about the protocol.
//! Connections are served one after the other; when a client goes away (or a request
//! makes the crate panic) the function is told, resets, and the next client is accepted.

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, error, info, warn};
use vfio_bindings::bindings::vfio::{
    vfio_region_info, vfio_region_sparse_mmap_area, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_BAR5_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{
    DmaMapFlags, DmaUnmapFlags, IrqInfo, Server, ServerBackend, ServerRegion, SparseArea,
};

/// Regions and interrupts of a PCI function, as the transport announces them.
#[derive(Clone, Debug)]
pub struct PciLayout {
    /// Configuration space size.
    pub config_size: u64,
    /// BAR0 size (trapped).
    pub bar0_size: u64,
    /// BAR2 size (mmappable).
    pub bar2_size: u64,
    /// The file descriptor backing BAR2 (mapped by the client at offset 0).
    pub bar2_fd: RawFd,
    /// `(count, flags)` of each VFIO IRQ index, in index order.
    pub irqs: Vec<(u32, u32)>,
}

/// A DMA map request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRequest {
    /// Bus address.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Offset into the file.
    pub offset: u64,
    /// The device may read.
    pub read: bool,
    /// The device may write.
    pub write: bool,
}

/// A VFIO `SET_IRQS` request (without its file descriptors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqRequest {
    /// IRQ index (MSI, MSI-X, ...).
    pub index: u32,
    /// `VFIO_IRQ_SET_*` flags.
    pub flags: u32,
    /// First vector.
    pub start: u32,
    /// Number of vectors.
    pub count: u32,
}

/// A PCI function as the transport sees it. Errors are answered to the client as errors
/// (and logged); they never end the connection.
pub trait PciFunction: Send + Sync {
    /// Configuration space read.
    fn config_read(&self, offset: u64, data: &mut [u8]) -> io::Result<()>;
    /// Configuration space write.
    fn config_write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// BAR `bar` read.
    fn bar_read(&self, bar: u32, offset: u64, data: &mut [u8]) -> io::Result<()>;
    /// BAR `bar` write.
    fn bar_write(&self, bar: u32, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Adds a DMA map (`file` is `None` for memory the client cannot share).
    fn dma_map(&self, req: DmaRequest, file: Option<File>) -> io::Result<()>;
    /// Removes DMA maps (`all`: every map).
    fn dma_unmap(&self, address: u64, size: u64, all: bool) -> io::Result<()>;
    /// Connects or disconnects interrupt eventfds.
    fn set_irqs(&self, req: IrqRequest, fds: Vec<File>) -> io::Result<()>;
    /// Device reset requested by the client; done when this returns.
    fn reset(&self);
    /// A client made its first request.
    fn connected(&self);
    /// The client went away.
    fn disconnected(&self);
}

/// Transport errors.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The socket could not be created.
    #[error("creating the vfio-user socket {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: vfio_user::Error,
    },
}

/// Adapts a [`PciFunction`] to the crate's backend trait.
struct Adapter<'a> {
    dev: &'a dyn PciFunction,
    greeted: bool,
}

impl Adapter<'_> {
    fn greet(&mut self) {
        if !self.greeted {
            self.greeted = true;
            info!("vfio-user client connected");
            self.dev.connected();
        }
    }
}

fn bar_of(region: u32) -> Option<u32> {
    (VFIO_PCI_BAR0_REGION_INDEX..=VFIO_PCI_BAR5_REGION_INDEX)
        .contains(&region)
        .then_some(region)
}

fn no_region(region: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("region {region} has no accesses"),
    )
}

fn logged<T>(what: &str, r: io::Result<T>) -> io::Result<T> {
    if let Err(e) = &r {
        warn!("{what}: {e}");
    }
    r
}

impl ServerBackend for Adapter<'_> {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        self.greet();
        let r = match (region, bar_of(region)) {
            (VFIO_PCI_CONFIG_REGION_INDEX, _) => self.dev.config_read(offset, data),
            (_, Some(bar)) => self.dev.bar_read(bar, offset, data),
            _ => Err(no_region(region)),
        };
        tracing::trace!(region, offset, len = data.len(), ?data, "region read");
        logged("region read", r)
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.greet();
        let r = match (region, bar_of(region)) {
            (VFIO_PCI_CONFIG_REGION_INDEX, _) => self.dev.config_write(offset, data),
            (_, Some(bar)) => self.dev.bar_write(bar, offset, data),
            _ => Err(no_region(region)),
        };
        tracing::trace!(region, offset, ?data, "region write");
        logged("region write", r)
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        self.greet();
        let req = DmaRequest {
            address,
            size,
            offset,
            read: flags.contains(DmaMapFlags::READ),
            write: flags.contains(DmaMapFlags::WRITE),
        };
        if fd.is_none() {
            info!(
                address,
                size, "DMA map without a file descriptor: unreachable for the device"
            );
        }
        self.dev.dma_map(req, fd)
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        self.greet();
        debug!(address, size, ?flags, "DMA unmap");
        self.dev
            .dma_unmap(address, size, flags.contains(DmaUnmapFlags::UNMAP_ALL))
    }

    fn reset(&mut self) -> io::Result<()> {
        self.greet();
        self.dev.reset();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        self.greet();
        self.dev.set_irqs(
            IrqRequest {
                index,
                flags,
                start,
                count,
            },
            fds,
        )
    }
}

fn region(index: u32, size: u64, flags: u32) -> vfio_region_info {
    vfio_region_info {
        argsz: std::mem::size_of::<vfio_region_info>() as u32,
        flags,
        index,
        cap_offset: 0,
        size,
        offset: 0,
    }
}

fn regions(l: &PciLayout) -> Vec<ServerRegion> {
    let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|i| match i {
            VFIO_PCI_BAR0_REGION_INDEX => ServerRegion {
                region_info: region(i, l.bar0_size, rw),
                sparse_areas: Vec::new(),
                mmap_fd: None,
            },
            VFIO_PCI_BAR2_REGION_INDEX => ServerRegion {
                region_info: region(i, l.bar2_size, rw | VFIO_REGION_INFO_FLAG_MMAP),
                // QEMU receives the fd only with sparse areas: one covering the region.
                sparse_areas: vec![SparseArea {
                    area: vfio_region_sparse_mmap_area {
                        offset: 0,
                        size: l.bar2_size,
                    },
                }],
                mmap_fd: Some(l.bar2_fd),
            },
            VFIO_PCI_CONFIG_REGION_INDEX => ServerRegion {
                region_info: region(i, l.config_size, rw),
                sparse_areas: Vec::new(),
                mmap_fd: None,
            },
            _ => ServerRegion {
                region_info: region(i, 0, 0),
                sparse_areas: Vec::new(),
                mmap_fd: None,
            },
        })
        .collect()
}

/// A vfio-user server socket.
pub struct VfioUserServer {
    server: Server,
    path: PathBuf,
}

impl std::fmt::Debug for VfioUserServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioUserServer")
            .field("path", &self.path)
            .finish()
    }
}

impl VfioUserServer {
    /// Creates the socket at `path` (which must not exist). Clients can connect from now on.
    pub fn bind(path: &Path, layout: &PciLayout) -> Result<VfioUserServer, TransportError> {
        let irqs = layout
            .irqs
            .iter()
            .enumerate()
            .map(|(i, &(count, flags))| IrqInfo {
                index: i as u32,
                flags,
                count,
            })
            .collect();
        let server = Server::new(path, true, irqs, regions(layout)).map_err(|source| {
            TransportError::Bind {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(VfioUserServer {
            server,
            path: path.to_owned(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves one client, from accept to disconnection, then tells `dev`.
    pub fn serve_one(&self, dev: &Arc<dyn PciFunction>) {
        let mut adapter = Adapter {
            dev: dev.as_ref(),
            greeted: false,
        };
        let r = catch_unwind(AssertUnwindSafe(|| self.server.run(&mut adapter)));
        let greeted = adapter.greeted;
        match r {
            Ok(Ok(())) => info!("vfio-user client disconnected"),
            Ok(Err(vfio_user::Error::SocketAccept(e))) => {
                error!("accepting a vfio-user client: {e}");
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            Ok(Err(e)) => warn!("vfio-user connection ended: {e}"),
            Err(_) => error!("vfio-user connection dropped after a panic while serving it"),
        }
        if greeted {
            info!("resetting the device for the next client");
        }
        dev.disconnected();
    }

    /// Serves clients one after the other, forever.
    pub fn serve(&self, dev: &Arc<dyn PciFunction>) -> ! {
        loop {
            self.serve_one(dev);
        }
    }
}

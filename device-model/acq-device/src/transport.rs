//! The vfio-user server: the socket, one client at a time, and the translation of each
//! request into a call of a [`PciFunction`], which knows nothing about the protocol.
//!
//! It announces the card's regions (config space, BAR0 trapped, BAR2 mmappable through
//! one sparse area covering it, with its memfd) and interrupts. The message layer is our
//! own ([`crate::vfio`]): whole messages are read before they are parsed, so a refused
//! request never puts the stream out of step; errors go back as error replies with a
//! real errno; VERSION comes first or the client is dropped; a client that stalls in a
//! message, sends no VERSION in time, or takes no replies is dropped; a second client
//! while one is served is turned away at once instead of waiting unseen. When a client
//! goes away the function is told, resets, and the next client is accepted.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acq_daemon::daemon::listen_ready;
use thiserror::Error;
use tracing::{debug, error, info, warn};
use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_BAR5_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_FLAG_CAPS,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};

use crate::vfio::conn::{wait_readable, wait_readable_any, Conn, ConnError, Message};
use crate::vfio::wire::{self, cmd, dma_flag, Body, Request, RequestError};

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
        source: io::Error,
    },
}

/// How long a new client has to send VERSION.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The errno an error of the function is answered with.
fn errno_of(e: &io::Error) -> i32 {
    if let Some(n) = e.raw_os_error() {
        return n;
    }
    match e.kind() {
        io::ErrorKind::InvalidInput => libc::EINVAL,
        io::ErrorKind::Unsupported => libc::ENOTSUP,
        io::ErrorKind::PermissionDenied => libc::EPERM,
        io::ErrorKind::NotFound => libc::ENOENT,
        io::ErrorKind::OutOfMemory => libc::ENOMEM,
        _ => libc::EIO,
    }
}

/// What a request produced: a reply body (and a descriptor to attach), or an errno.
enum Outcome {
    Reply(Vec<u8>, Option<RawFd>),
    Error(i32, String),
}

impl From<RequestError> for Outcome {
    fn from(e: RequestError) -> Outcome {
        Outcome::Error(e.errno(), e.to_string())
    }
}

fn from_io(what: &str, r: io::Result<Vec<u8>>) -> Outcome {
    match r {
        Ok(body) => Outcome::Reply(body, None),
        Err(e) => Outcome::Error(errno_of(&e), format!("{what}: {e}")),
    }
}

/// The state of one connection: what turns each whole request into its reply. Public
/// so that the fuzzer drives it without a socket.
pub struct Session<'a> {
    dev: &'a dyn PciFunction,
    layout: &'a PciLayout,
    negotiated: bool,
    /// The function was told of this client (at its first device request).
    greeted: bool,
}

/// What one request produced.
#[derive(Debug)]
pub struct Response {
    /// The reply's bytes (`None`: the request asked for none).
    pub reply: Option<Vec<u8>>,
    /// A descriptor to send with it.
    pub fd: Option<RawFd>,
    /// Why the connection must end after the reply, if it must.
    pub end: Option<String>,
}

impl<'a> Session<'a> {
    /// A new connection's state: nothing negotiated yet.
    pub fn new(dev: &'a dyn PciFunction, layout: &'a PciLayout) -> Session<'a> {
        Session {
            dev,
            layout,
            negotiated: false,
            greeted: false,
        }
    }

    /// The client made a device request: the function was told of it.
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    fn greet(&mut self) {
        if !self.greeted {
            self.greeted = true;
            info!("vfio-user client connected");
            self.dev.connected();
        }
    }

    fn region_info(&self, argsz: u32, index: u32) -> Outcome {
        let l = self.layout;
        let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        let (mut flags, size, mmap) = match index {
            VFIO_PCI_BAR0_REGION_INDEX => (rw, l.bar0_size, false),
            VFIO_PCI_BAR2_REGION_INDEX => (rw | VFIO_REGION_INFO_FLAG_MMAP, l.bar2_size, true),
            VFIO_PCI_CONFIG_REGION_INDEX => (rw, l.config_size, false),
            i if i < VFIO_PCI_NUM_REGIONS => (0, 0, false),
            i => {
                return Outcome::Error(
                    libc::EINVAL,
                    format!("region {i} does not exist ({VFIO_PCI_NUM_REGIONS} regions)"),
                )
            }
        };
        const INFO: u32 = 32;
        // BAR2: one sparse mmap area over the whole region. QEMU maps a region only
        // through its sparse areas, and the descriptor travels with the full answer.
        let caps = mmap.then(|| {
            Body::default()
                .u16(VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16)
                .u16(1)
                .u32(0)
                .u32(1)
                .u32(0)
                .u64(0)
                .u64(size)
                .0
        });
        let (full, cap_offset) = match &caps {
            Some(c) => {
                flags |= VFIO_REGION_INFO_FLAG_CAPS;
                (INFO + c.len() as u32, INFO)
            }
            None => (INFO, 0),
        };
        let body = Body::default()
            .u32(full)
            .u32(flags)
            .u32(index)
            .u32(cap_offset)
            .u64(size)
            .u64(0);
        match caps {
            // The client's buffer holds the capabilities: send them, and the fd.
            Some(c) if argsz >= full => Outcome::Reply(body.bytes(&c).0, Some(l.bar2_fd)),
            // Too small: argsz tells the client how much to ask for.
            _ => Outcome::Reply(body.0, None),
        }
    }

    fn handle(&mut self, req: Request<'_>, fds: Vec<File>) -> Outcome {
        let dev = self.dev;
        match req {
            Request::Version { .. } => {
                Outcome::Error(libc::EINVAL, "VERSION was negotiated already".into())
            }
            Request::GetInfo => Outcome::Reply(
                Body::default()
                    .u32(16)
                    .u32(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET)
                    .u32(VFIO_PCI_NUM_REGIONS)
                    .u32(self.layout.irqs.len() as u32)
                    .0,
                None,
            ),
            Request::GetRegionInfo { argsz, index } => self.region_info(argsz, index),
            Request::GetIrqInfo { index } => match self.layout.irqs.get(index as usize) {
                Some(&(count, flags)) => Outcome::Reply(
                    Body::default().u32(16).u32(flags).u32(index).u32(count).0,
                    None,
                ),
                None => Outcome::Error(libc::EINVAL, format!("IRQ index {index} does not exist")),
            },
            Request::RegionRead {
                region,
                offset,
                count,
            } => {
                self.greet();
                let mut data = vec![0u8; count as usize];
                let r = match (region, bar_of(region)) {
                    (VFIO_PCI_CONFIG_REGION_INDEX, _) => dev.config_read(offset, &mut data),
                    (_, Some(bar)) => dev.bar_read(bar, offset, &mut data),
                    _ => Err(no_region(region)),
                };
                tracing::trace!(region, offset, count, ?data, "region read");
                from_io(
                    "region read",
                    r.map(|()| {
                        Body::default()
                            .u64(offset)
                            .u32(region)
                            .u32(count)
                            .bytes(&data)
                            .0
                    }),
                )
            }
            Request::RegionWrite {
                region,
                offset,
                data,
            } => {
                self.greet();
                tracing::trace!(region, offset, ?data, "region write");
                let r = match (region, bar_of(region)) {
                    (VFIO_PCI_CONFIG_REGION_INDEX, _) => dev.config_write(offset, data),
                    (_, Some(bar)) => dev.bar_write(bar, offset, data),
                    _ => Err(no_region(region)),
                };
                let count = data.len() as u32;
                from_io(
                    "region write",
                    r.map(|()| Body::default().u64(offset).u32(region).u32(count).0),
                )
            }
            Request::DmaMap {
                flags,
                offset,
                address,
                size,
            } => {
                self.greet();
                let file = fds.into_iter().next();
                if file.is_none() {
                    info!(
                        address,
                        size, "DMA map without a file descriptor: unreachable for the device"
                    );
                }
                let req = DmaRequest {
                    address,
                    size,
                    offset,
                    read: flags & dma_flag::READ != 0,
                    write: flags & dma_flag::WRITE != 0,
                };
                from_io("DMA map", dev.dma_map(req, file).map(|()| Vec::new()))
            }
            Request::DmaUnmap {
                flags,
                address,
                size,
            } => {
                self.greet();
                debug!(address, size, flags, "DMA unmap");
                let r = dev.dma_unmap(address, size, flags & dma_flag::UNMAP_ALL != 0);
                let echo = Body::default().u32(24).u32(flags).u64(address).u64(size).0;
                from_io("DMA unmap", r.map(|()| echo))
            }
            Request::SetIrqs {
                flags,
                index,
                start,
                count,
            } => {
                self.greet();
                let req = IrqRequest {
                    index,
                    flags,
                    start,
                    count,
                };
                from_io("SET_IRQS", dev.set_irqs(req, fds).map(|()| Vec::new()))
            }
            Request::Reset => {
                self.greet();
                dev.reset();
                Outcome::Reply(Vec::new(), None)
            }
        }
    }

    /// Answers one whole message.
    pub fn respond(&mut self, m: Message) -> Response {
        let h = m.header;
        let name = cmd::name(h.command);
        let parsed = wire::parse(&h, &m.body, m.fds.len());
        let (outcome, fatal) = match (self.negotiated, parsed) {
            (_, Err(e)) if !self.negotiated => (Outcome::from(e), true),
            (_, Err(e)) => (Outcome::from(e), false),
            (false, Ok(Request::Version { major, minor, caps })) => {
                info!(major, minor, ?caps, "vfio-user version negotiated");
                self.negotiated = true;
                (Outcome::Reply(wire::version_body(), None), false)
            }
            (false, Ok(_)) => (
                Outcome::Error(
                    libc::EINVAL,
                    format!("{name} before VERSION: VERSION must come first"),
                ),
                true,
            ),
            (true, Ok(req)) => (self.handle(req, m.fds), false),
        };
        let (bytes, fd, err) = match outcome {
            Outcome::Reply(body, fd) => (wire::reply(&h, &body), fd, None),
            Outcome::Error(errno, why) => {
                warn!(command = name, id = h.id, errno, "request refused: {why}");
                (wire::error_reply(&h, errno), None, Some(why))
            }
        };
        // NO_REPLY: no answer at all, not even an error (QEMU would take an unexpected
        // reply for a protocol failure); the error is in our log.
        Response {
            reply: (!h.no_reply()).then_some(bytes),
            fd,
            end: if fatal { err } else { None },
        }
    }

    /// Serves one message. `Err` ends the connection (after the error reply is sent).
    fn serve_message(&mut self, conn: &Conn, m: Message) -> Result<(), String> {
        let r = self.respond(m);
        if let Some(bytes) = r.reply {
            conn.send(&bytes, r.fd)
                .map_err(|e| format!("sending a reply: {e}"))?;
        }
        r.end.map_or(Ok(()), Err)
    }
}

/// A vfio-user server socket.
#[derive(Debug)]
pub struct VfioUserServer {
    listener: UnixListener,
    path: PathBuf,
    layout: PciLayout,
}

impl VfioUserServer {
    /// Creates the socket at `path` (which must not exist). Clients can connect from now on.
    pub fn bind(path: &Path, layout: &PciLayout) -> Result<VfioUserServer, TransportError> {
        let listener = listen_ready(path).map_err(|source| TransportError::Bind {
            path: path.to_owned(),
            source,
        })?;
        Ok(VfioUserServer {
            listener,
            path: path.to_owned(),
            layout: layout.clone(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves one client, from accept to disconnection, then tells `dev`.
    pub fn serve_one(&self, dev: &Arc<dyn PciFunction>) {
        let stream = match self.listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                error!("accepting a vfio-user client: {e}");
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        };
        let mut session = Session::new(dev.as_ref(), &self.layout);
        let r = catch_unwind(AssertUnwindSafe(|| self.serve_conn(stream, &mut session)));
        match r {
            Ok(Ok(())) => info!("vfio-user client disconnected"),
            Ok(Err(why)) => warn!("vfio-user connection dropped: {why}"),
            Err(_) => error!("vfio-user connection dropped after a panic while serving it"),
        }
        if session.greeted() {
            info!("resetting the device for the next client");
        }
        dev.disconnected();
    }

    fn serve_conn(&self, stream: UnixStream, s: &mut Session<'_>) -> Result<(), String> {
        let conn = Conn::new(stream).map_err(|e| format!("setting up the socket: {e}"))?;
        let version_by = Instant::now() + VERSION_TIMEOUT;
        loop {
            let timeout =
                (!s.negotiated).then(|| version_by.saturating_duration_since(Instant::now()));
            match self.wait(&conn, timeout)? {
                Ready::Timeout => {
                    return Err(format!(
                        "no VERSION within {} s of connecting",
                        VERSION_TIMEOUT.as_secs()
                    ))
                }
                Ready::Listener => self.turn_away(),
                Ready::Client => match conn.recv() {
                    Ok(m) => s.serve_message(&conn, m)?,
                    Err(ConnError::Closed) => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                },
            }
        }
    }

    /// Waits for the client (first) or a new connection on the listener.
    fn wait(&self, conn: &Conn, timeout: Option<Duration>) -> Result<Ready, String> {
        let seen = wait_readable_any([conn.raw_fd(), self.listener.as_raw_fd()], timeout)
            .map_err(|e| format!("poll: {e}"))?;
        ready_from(seen, || wait_readable(conn.raw_fd(), Some(Duration::ZERO)))
            .map_err(|e| format!("poll: {e}"))
    }

    /// Accepts and closes a second client: the card serves one at a time.
    fn turn_away(&self) {
        match self.listener.accept() {
            Ok((extra, _)) => {
                warn!(
                    "a second vfio-user client connected while one is served: closed \
                     (one client at a time)"
                );
                drop(extra);
            }
            Err(e) => {
                // Out of descriptors, say: the pending connection stays, and the listener
                // stays readable. Pause rather than spin on it.
                warn!("turning a second vfio-user client away: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Serves clients one after the other, forever.
    pub fn serve(&self, dev: &Arc<dyn PciFunction>) -> ! {
        loop {
            self.serve_one(dev);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ready {
    Client,
    Listener,
    Timeout,
}

/// What one poll pass that saw `[client, listener]` readable means. The client comes first:
/// a client that closed and a new one that connected right after must end the old session,
/// not turn the new one away. poll() looks at the descriptors one after the other, so a
/// pass can see the new connection and miss the old client's end that came before it (it
/// landed after the client's descriptor was looked at): before a new client is turned away,
/// `client_again` looks at the old one alone.
fn ready_from(
    [client, listener]: [bool; 2],
    client_again: impl FnOnce() -> std::io::Result<bool>,
) -> std::io::Result<Ready> {
    Ok(if client {
        Ready::Client
    } else if listener {
        if client_again()? {
            Ready::Client
        } else {
            Ready::Listener
        }
    } else {
        Ready::Timeout
    })
}

impl Drop for VfioUserServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn look_again(s: &UnixStream) -> impl FnOnce() -> std::io::Result<bool> + '_ {
        move || wait_readable(s.as_raw_fd(), Some(Duration::ZERO))
    }

    #[test]
    fn a_client_that_ended_before_a_new_one_came_is_served_first() {
        let (served, client) = UnixStream::pair().unwrap();
        drop(client);
        // The pass saw the new connection but not the old client's end that came before.
        assert_eq!(
            ready_from([false, true], look_again(&served)).unwrap(),
            Ready::Client
        );
    }

    #[test]
    fn a_second_client_beside_a_live_one_is_turned_away() {
        let (served, _client) = UnixStream::pair().unwrap();
        assert_eq!(
            ready_from([false, true], look_again(&served)).unwrap(),
            Ready::Listener
        );
        assert_eq!(
            ready_from([true, true], look_again(&served)).unwrap(),
            Ready::Client
        );
        assert_eq!(
            ready_from([false, false], look_again(&served)).unwrap(),
            Ready::Timeout
        );
    }
}

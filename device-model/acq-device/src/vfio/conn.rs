//! One vfio-user connection as a stream of whole messages: a header, exactly `size - 16`
//! body bytes, and the file descriptors that came with them, or an error that ends the
//! connection. A message that started must finish within [`MESSAGE_TIMEOUT`] (a client
//! that stops half-way cannot hold the device), and a reply that the client does not
//! take within [`SEND_TIMEOUT`] ends the connection too.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use thiserror::Error;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::wire::{FramingError, Header, HEADER_SIZE};

/// How long the rest of a message may take once its first byte arrived.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may wait for room in the socket.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// File descriptors received per read at most; more end the connection (the kernel
/// closes the ones that do not fit, so the message could not be served as sent).
pub const MAX_RECV_FDS: usize = 16;

/// Why a connection ends.
#[derive(Debug, Error)]
pub enum ConnError {
    /// The client closed the connection between messages.
    #[error("the client closed the connection")]
    Closed,
    /// The client closed the connection in the middle of a message.
    #[error("the connection closed after {got} of {want} bytes of a message")]
    Truncated {
        /// Bytes of the message (or header) received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// A message did not complete in time.
    #[error("the client sent {got} of {want} bytes of a message and nothing for {secs} s")]
    Stalled {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
        /// The timeout.
        secs: u64,
    },
    /// The header's size cannot be framed.
    #[error("{0}")]
    Framing(#[from] FramingError),
    /// More file descriptors than [`MAX_RECV_FDS`] in one read.
    #[error("more than {MAX_RECV_FDS} file descriptors came with one message")]
    TooManyFds,
    /// The client did not take a reply in time.
    #[error("the client took no reply for {} s", SEND_TIMEOUT.as_secs())]
    SendStalled,
    /// Any other socket error.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// A whole message.
#[derive(Debug)]
pub struct Message {
    /// Its header.
    pub header: Header,
    /// `header.size - 16` bytes.
    pub body: Vec<u8>,
    /// The descriptors that came with it (closed when dropped).
    pub fds: Vec<File>,
}

/// Waits until one of `fds` is readable (or hung up) for at most `timeout` (`None`: for
/// ever), through EINTR. Returns which are: `ready[i]` for `fds[i]`, all false on
/// timeout.
pub fn wait_readable_any<const N: usize>(
    fds: [RawFd; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        // SAFETY: `p` is an array of N valid pollfds for the duration of the call.
        let n = unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(p.map(|q| q.revents != 0));
    }
}

/// Waits until `fd` is readable (or hung up) for at most `timeout` (`None`: for ever).
/// Returns false on timeout.
pub fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    Ok(wait_readable_any([fd], timeout)?[0])
}

/// A connection.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
}

impl Conn {
    /// Wraps an accepted stream.
    pub fn new(stream: UnixStream) -> io::Result<Conn> {
        stream.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Conn { stream })
    }

    /// The socket's descriptor (to wait on it beside others).
    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Fills `buf` completely, collecting descriptors into `fds`. `started`: bytes of the
    /// message already received before `buf` (for the error text); `deadline`: when the
    /// message must be complete (`None` until its first byte arrived).
    fn fill(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<File>,
        started: usize,
        want: usize,
        deadline: &mut Option<Instant>,
    ) -> Result<(), ConnError> {
        let mut got = 0;
        while got < buf.len() {
            if let Some(d) = *deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() || !wait_readable(self.raw_fd(), Some(left))? {
                    return Err(ConnError::Stalled {
                        got: started + got,
                        want,
                        secs: MESSAGE_TIMEOUT.as_secs(),
                    });
                }
            }
            let rest = &mut buf[got..];
            let mut iov = [libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            }];
            let mut raw = [-1 as RawFd; MAX_RECV_FDS];
            // SAFETY: the iovec describes `rest`, a live, writable buffer of exactly
            // `iov_len` bytes borrowed for the call; `raw` has room for MAX_RECV_FDS.
            let r = unsafe { self.stream.recv_with_fds(&mut iov, &mut raw) };
            let (n, nfds) = match r {
                Ok(x) => x,
                Err(e) if e.errno() == libc::EINTR => continue,
                Err(e) if e.errno() == libc::ENOBUFS => return Err(ConnError::TooManyFds),
                Err(e) => return Err(io::Error::from_raw_os_error(e.errno()).into()),
            };
            for &fd in &raw[..nfds] {
                // SAFETY: the kernel just installed `fd` for us (SCM_RIGHTS); nothing else
                // owns it.
                fds.push(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            if n == 0 {
                if started + got == 0 {
                    return Err(ConnError::Closed);
                }
                return Err(ConnError::Truncated {
                    got: started + got,
                    want,
                });
            }
            got += n;
            deadline.get_or_insert_with(|| Instant::now() + MESSAGE_TIMEOUT);
        }
        Ok(())
    }

    /// Receives one whole message (blocking until its first byte, then at most
    /// [`MESSAGE_TIMEOUT`] for the rest).
    pub fn recv(&self) -> Result<Message, ConnError> {
        let mut fds = Vec::new();
        let mut deadline = None;
        let mut hb = [0u8; HEADER_SIZE];
        self.fill(&mut hb, &mut fds, 0, HEADER_SIZE, &mut deadline)?;
        let header = Header::decode(&hb);
        let len = header.body_len()?;
        let mut body = vec![0u8; len];
        self.fill(
            &mut body,
            &mut fds,
            HEADER_SIZE,
            HEADER_SIZE + len,
            &mut deadline,
        )?;
        Ok(Message { header, body, fds })
    }

    /// Sends one whole message, with `fd` attached to its first byte.
    pub fn send(&self, msg: &[u8], fd: Option<RawFd>) -> Result<(), ConnError> {
        let mut sent = 0;
        let mut fds: &[RawFd] = match &fd {
            Some(f) => std::slice::from_ref(f),
            None => &[],
        };
        while sent < msg.len() {
            match self.stream.send_with_fds(&[&msg[sent..]], fds) {
                Ok(n) => {
                    sent += n;
                    fds = &[];
                }
                Err(e) if e.errno() == libc::EINTR => {}
                Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EWOULDBLOCK => {
                    return Err(ConnError::SendStalled)
                }
                Err(e) => return Err(io::Error::from_raw_os_error(e.errno()).into()),
            }
        }
        Ok(())
    }
}

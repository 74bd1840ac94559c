//! vfio-user messages as bytes: the header, the requests a server accepts, and the replies
//! it sends. Pure functions over whole messages (no I/O), so that every rule here can be
//! tested, and fuzzed, without a socket.
//!
//! The framing rule that keeps a connection in step: the connection layer always reads a
//! whole message (`size` bytes, header included) before anything here looks at it, so a
//! request that is refused has still been consumed, and the next one starts where the
//! client put it.

use serde_json::{json, Value};
use thiserror::Error;

/// Size of the message header.
pub const HEADER_SIZE: usize = 16;
/// The largest REGION_READ/REGION_WRITE payload we accept and announce
/// (`max_data_xfer_size`).
pub const MAX_DATA_XFER: u32 = 1 << 20;
/// The largest VERSION capability string we accept.
pub const MAX_CAPS_JSON: usize = 4096;
/// The largest message we accept at all: a REGION_WRITE of [`MAX_DATA_XFER`] bytes.
/// Anything larger cannot be a valid request, and the connection is closed rather
/// than reading gigabytes to stay in step.
pub const MAX_MESSAGE: usize = HEADER_SIZE + 16 + MAX_DATA_XFER as usize;
/// File descriptors we announce per message (`max_msg_fds`). QEMU then sends MSI-X
/// eventfds one vector per message.
pub const MAX_MSG_FDS: u32 = 1;

/// Command numbers (vfio-user specification, "Commands").
pub mod cmd {
    /// Version and capability negotiation; must be the first message.
    pub const VERSION: u16 = 1;
    /// Add a DMA region.
    pub const DMA_MAP: u16 = 2;
    /// Remove DMA regions.
    pub const DMA_UNMAP: u16 = 3;
    /// Device flags and counts.
    pub const DEVICE_GET_INFO: u16 = 4;
    /// One region's description.
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    /// ioeventfds/ioregionfds of a region (not supported).
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    /// One interrupt index's description.
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    /// Connect, trigger or disconnect interrupts.
    pub const DEVICE_SET_IRQS: u16 = 8;
    /// Read a region.
    pub const REGION_READ: u16 = 9;
    /// Write a region.
    pub const REGION_WRITE: u16 = 10;
    /// Server-to-client DMA read (never valid from a client).
    pub const DMA_READ: u16 = 11;
    /// Server-to-client DMA write (never valid from a client).
    pub const DMA_WRITE: u16 = 12;
    /// Reset the device.
    pub const DEVICE_RESET: u16 = 13;

    /// The command's name, for logs.
    pub fn name(c: u16) -> &'static str {
        match c {
            VERSION => "VERSION",
            DMA_MAP => "DMA_MAP",
            DMA_UNMAP => "DMA_UNMAP",
            DEVICE_GET_INFO => "DEVICE_GET_INFO",
            DEVICE_GET_REGION_INFO => "DEVICE_GET_REGION_INFO",
            DEVICE_GET_REGION_IO_FDS => "DEVICE_GET_REGION_IO_FDS",
            DEVICE_GET_IRQ_INFO => "DEVICE_GET_IRQ_INFO",
            DEVICE_SET_IRQS => "DEVICE_SET_IRQS",
            REGION_READ => "REGION_READ",
            REGION_WRITE => "REGION_WRITE",
            DMA_READ => "DMA_READ",
            DMA_WRITE => "DMA_WRITE",
            DEVICE_RESET => "DEVICE_RESET",
            _ => "unknown",
        }
    }
}

/// Header flag bits.
pub mod flag {
    /// Message type mask (bits 0-3).
    pub const TYPE_MASK: u32 = 0xF;
    /// Type: command.
    pub const COMMAND: u32 = 0;
    /// Type: reply.
    pub const REPLY: u32 = 1;
    /// The sender wants no reply (and gets none, not even an error: as QEMU does).
    pub const NO_REPLY: u32 = 1 << 4;
    /// The reply reports an error (`error` holds the errno).
    pub const ERROR: u32 = 1 << 5;
}

/// `DMA_MAP` flags.
pub mod dma_flag {
    /// The device may read.
    pub const READ: u32 = 1 << 0;
    /// The device may write.
    pub const WRITE: u32 = 1 << 1;
    /// `DMA_UNMAP`: also return a dirty-page bitmap (not supported).
    pub const GET_DIRTY_PAGE_INFO: u32 = 1 << 1;
    /// `DMA_UNMAP`: remove every map (address and size must be 0).
    pub const UNMAP_ALL: u32 = 1 << 2;
}

/// `DEVICE_SET_IRQS` data type flags (as in VFIO).
pub mod irq_flag {
    /// No data.
    pub const DATA_NONE: u32 = 1 << 0;
    /// One byte per vector.
    pub const DATA_BOOL: u32 = 1 << 1;
    /// One file descriptor per vector.
    pub const DATA_EVENTFD: u32 = 1 << 2;
    /// Mask of the data type bits.
    pub const DATA_MASK: u32 = DATA_NONE | DATA_BOOL | DATA_EVENTFD;
}

/// A message header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Message id; a reply carries the id of its command.
    pub id: u16,
    /// Command number.
    pub command: u16,
    /// Size of the whole message, header included.
    pub size: u32,
    /// Flags ([`flag`]).
    pub flags: u32,
    /// errno of an error reply.
    pub error: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}

impl Header {
    /// Decodes a header.
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Header {
        Header {
            id: u16_at(b, 0),
            command: u16_at(b, 2),
            size: u32_at(b, 4),
            flags: u32_at(b, 8),
            error: u32_at(b, 12),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    /// The sender asked for no reply.
    pub fn no_reply(&self) -> bool {
        self.flags & flag::NO_REPLY != 0
    }

    /// The body size, if the size field covers at least the header and at most
    /// [`MAX_MESSAGE`]; otherwise the message cannot be framed and the connection must
    /// end.
    pub fn body_len(&self) -> Result<usize, FramingError> {
        let size = self.size as usize;
        if size < HEADER_SIZE {
            return Err(FramingError::TooShort(self.size));
        }
        if size > MAX_MESSAGE {
            return Err(FramingError::TooLong(self.size));
        }
        Ok(size - HEADER_SIZE)
    }
}

/// A header whose size field makes the message impossible to frame.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    /// The size is smaller than a header.
    #[error("message size {0} is smaller than the 16-byte header")]
    TooShort(u32),
    /// The size is larger than any valid request.
    #[error("message size {0} is larger than any request ({MAX_MESSAGE} bytes at most)")]
    TooLong(u32),
}

/// The client's capabilities, as far as the server uses them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCaps {
    /// File descriptors the client accepts per message (default 1).
    pub max_msg_fds: u64,
    /// Largest data transfer the client accepts (default 1 MiB).
    pub max_data_xfer_size: u64,
}

/// A request, parsed from a whole message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// VERSION.
    Version {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
        /// Capabilities.
        caps: ClientCaps,
    },
    /// DMA_MAP.
    DmaMap {
        /// Flags ([`dma_flag`]).
        flags: u32,
        /// Offset into the file.
        offset: u64,
        /// Bus address.
        address: u64,
        /// Size.
        size: u64,
    },
    /// DMA_UNMAP.
    DmaUnmap {
        /// Flags ([`dma_flag`]).
        flags: u32,
        /// Bus address.
        address: u64,
        /// Size.
        size: u64,
    },
    /// DEVICE_GET_INFO.
    GetInfo,
    /// DEVICE_GET_REGION_INFO.
    GetRegionInfo {
        /// The client's buffer size (region info plus room for capabilities).
        argsz: u32,
        /// Region index.
        index: u32,
    },
    /// DEVICE_GET_IRQ_INFO.
    GetIrqInfo {
        /// IRQ index.
        index: u32,
    },
    /// DEVICE_SET_IRQS (data type NONE or EVENTFD; the descriptors travel beside).
    SetIrqs {
        /// VFIO flags.
        flags: u32,
        /// IRQ index.
        index: u32,
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
    },
    /// REGION_READ.
    RegionRead {
        /// Region index.
        region: u32,
        /// Offset in the region.
        offset: u64,
        /// Bytes to read.
        count: u32,
    },
    /// REGION_WRITE.
    RegionWrite {
        /// Region index.
        region: u32,
        /// Offset in the region.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// DEVICE_RESET.
    Reset,
}

/// A request the server refuses; the connection stays in step and goes on.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// The message is a reply, or has the error flag, where a command was expected.
    #[error("flags {0:#x} do not make a command")]
    NotACommand(u32),
    /// A command the server does not implement.
    #[error("command {0} ({name}) is not supported", name = cmd::name(*.0))]
    Unsupported(u16),
    /// A command only a server sends.
    #[error("{} is sent by the server, never by a client", cmd::name(*.0))]
    ServerOnly(u16),
    /// The body has the wrong size for the command.
    #[error("{} needs a body of {need} bytes, this one has {got}", cmd::name(*command))]
    BodySize {
        /// The command.
        command: u16,
        /// What it needs (for variable bodies: what this header implies).
        need: usize,
        /// What came.
        got: usize,
    },
    /// File descriptors on a command that takes none, or more than it takes.
    #[error("{} carries {got} file descriptors, at most {max} allowed", cmd::name(*command))]
    Fds {
        /// The command.
        command: u16,
        /// How many came.
        got: usize,
        /// How many it may carry.
        max: usize,
    },
    /// A transfer larger than announced.
    #[error("a transfer of {0} bytes exceeds max_data_xfer_size {MAX_DATA_XFER}")]
    TooBig(u32),
    /// A malformed VERSION.
    #[error("VERSION: {0}")]
    Version(String),
    /// VERSION after the negotiation, or anything before it.
    #[error("{0}")]
    Sequence(&'static str),
    /// SET_IRQS with a data type other than NONE or EVENTFD.
    #[error("DEVICE_SET_IRQS data type {0:#x} is not supported (NONE or EVENTFD only)")]
    IrqData(u32),
    /// DMA_UNMAP asking for dirty pages.
    #[error("DMA_UNMAP with dirty page tracking is not supported")]
    DirtyPages,
}

impl RequestError {
    /// The errno of the error reply.
    pub fn errno(&self) -> i32 {
        match self {
            RequestError::Unsupported(_) | RequestError::IrqData(_) | RequestError::DirtyPages => {
                libc::ENOTSUP
            }
            RequestError::TooBig(_) => libc::E2BIG,
            _ => libc::EINVAL,
        }
    }
}

fn exact(command: u16, body: &[u8], need: usize) -> Result<(), RequestError> {
    if body.len() != need {
        return Err(RequestError::BodySize {
            command,
            need,
            got: body.len(),
        });
    }
    Ok(())
}

fn parse_caps(raw: &[u8]) -> Result<ClientCaps, RequestError> {
    let mut caps = ClientCaps {
        max_msg_fds: 1,
        max_data_xfer_size: u64::from(MAX_DATA_XFER),
    };
    if raw.is_empty() {
        return Ok(caps);
    }
    if raw.len() > MAX_CAPS_JSON {
        return Err(RequestError::Version(format!(
            "the capability string has {} bytes, at most {MAX_CAPS_JSON}",
            raw.len()
        )));
    }
    let Some((&0, text)) = raw.split_last() else {
        return Err(RequestError::Version(
            "the capability string is not NUL-terminated".into(),
        ));
    };
    let text = std::str::from_utf8(text)
        .map_err(|_| RequestError::Version("the capability string is not UTF-8".into()))?;
    let v: Value = serde_json::from_str(text)
        .map_err(|e| RequestError::Version(format!("the capability string is not JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(RequestError::Version(
            "the capability string is not a JSON object".into(),
        ));
    };
    let Some(c) = obj.get("capabilities") else {
        return Ok(caps);
    };
    let Some(c) = c.as_object() else {
        return Err(RequestError::Version(
            "`capabilities` is not an object".into(),
        ));
    };
    let num = |k: &str, dflt: u64| match c.get(k) {
        None => Ok(dflt),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| RequestError::Version(format!("`{k}` is not a number: {v}"))),
    };
    caps.max_msg_fds = num("max_msg_fds", caps.max_msg_fds)?;
    caps.max_data_xfer_size = num("max_data_xfer_size", caps.max_data_xfer_size)?;
    Ok(caps)
}

/// Parses a whole request: its header, its body (`size - 16` bytes) and the number of
/// file descriptors that came with it.
pub fn parse<'a>(h: &Header, body: &'a [u8], nfds: usize) -> Result<Request<'a>, RequestError> {
    if h.flags & flag::TYPE_MASK != flag::COMMAND || h.flags & flag::ERROR != 0 {
        return Err(RequestError::NotACommand(h.flags));
    }
    let c = h.command;
    let fds = |max: usize| {
        if nfds > max {
            return Err(RequestError::Fds {
                command: c,
                got: nfds,
                max,
            });
        }
        Ok(())
    };
    match c {
        cmd::VERSION => {
            fds(0)?;
            if body.len() < 4 {
                return Err(RequestError::BodySize {
                    command: c,
                    need: 4,
                    got: body.len(),
                });
            }
            Ok(Request::Version {
                major: u16_at(body, 0),
                minor: u16_at(body, 2),
                caps: parse_caps(&body[4..])?,
            })
        }
        cmd::DMA_MAP => {
            fds(1)?;
            exact(c, body, 32)?;
            Ok(Request::DmaMap {
                flags: u32_at(body, 4),
                offset: u64_at(body, 8),
                address: u64_at(body, 16),
                size: u64_at(body, 24),
            })
        }
        cmd::DMA_UNMAP => {
            fds(0)?;
            exact(c, body, 24)?;
            let flags = u32_at(body, 4);
            if flags & dma_flag::GET_DIRTY_PAGE_INFO != 0 {
                return Err(RequestError::DirtyPages);
            }
            Ok(Request::DmaUnmap {
                flags,
                address: u64_at(body, 8),
                size: u64_at(body, 16),
            })
        }
        cmd::DEVICE_GET_INFO => {
            fds(0)?;
            exact(c, body, 16)?;
            Ok(Request::GetInfo)
        }
        cmd::DEVICE_GET_REGION_INFO => {
            fds(0)?;
            exact(c, body, 32)?;
            Ok(Request::GetRegionInfo {
                argsz: u32_at(body, 0),
                index: u32_at(body, 8),
            })
        }
        cmd::DEVICE_GET_IRQ_INFO => {
            fds(0)?;
            exact(c, body, 16)?;
            Ok(Request::GetIrqInfo {
                index: u32_at(body, 8),
            })
        }
        cmd::DEVICE_SET_IRQS => {
            if body.len() < 20 {
                return Err(RequestError::BodySize {
                    command: c,
                    need: 20,
                    got: body.len(),
                });
            }
            let (flags, index, start, count) = (
                u32_at(body, 4),
                u32_at(body, 8),
                u32_at(body, 12),
                u32_at(body, 16),
            );
            match flags & irq_flag::DATA_MASK {
                irq_flag::DATA_NONE => {
                    fds(0)?;
                    exact(c, body, 20)?;
                }
                irq_flag::DATA_EVENTFD => {
                    fds(count as usize)?;
                    exact(c, body, 20)?;
                }
                other => return Err(RequestError::IrqData(other)),
            }
            Ok(Request::SetIrqs {
                flags,
                index,
                start,
                count,
            })
        }
        cmd::REGION_READ | cmd::REGION_WRITE => {
            fds(0)?;
            if body.len() < 16 {
                return Err(RequestError::BodySize {
                    command: c,
                    need: 16,
                    got: body.len(),
                });
            }
            let (offset, region, count) = (u64_at(body, 0), u32_at(body, 8), u32_at(body, 12));
            if count > MAX_DATA_XFER {
                return Err(RequestError::TooBig(count));
            }
            if c == cmd::REGION_READ {
                exact(c, body, 16)?;
                return Ok(Request::RegionRead {
                    region,
                    offset,
                    count,
                });
            }
            exact(c, body, 16 + count as usize)?;
            Ok(Request::RegionWrite {
                region,
                offset,
                data: &body[16..],
            })
        }
        cmd::DEVICE_RESET => {
            fds(0)?;
            exact(c, body, 0)?;
            Ok(Request::Reset)
        }
        cmd::DMA_READ | cmd::DMA_WRITE => Err(RequestError::ServerOnly(c)),
        other => Err(RequestError::Unsupported(other)),
    }
}

/// A reply to the command with header `to`, carrying `body`.
pub fn reply(to: &Header, body: &[u8]) -> Vec<u8> {
    let h = Header {
        id: to.id,
        command: to.command,
        size: (HEADER_SIZE + body.len()) as u32,
        flags: flag::REPLY,
        error: 0,
    };
    let mut m = Vec::with_capacity(HEADER_SIZE + body.len());
    m.extend_from_slice(&h.encode());
    m.extend_from_slice(body);
    m
}

/// An error reply to the command with header `to`.
pub fn error_reply(to: &Header, errno: i32) -> Vec<u8> {
    Header {
        id: to.id,
        command: to.command,
        size: HEADER_SIZE as u32,
        flags: flag::REPLY | flag::ERROR,
        error: errno as u32,
    }
    .encode()
    .to_vec()
}

/// The server's VERSION reply body: version 0.0 and its capabilities.
pub fn version_body() -> Vec<u8> {
    let caps = json!({
        "capabilities": {
            "max_msg_fds": MAX_MSG_FDS,
            "max_data_xfer_size": MAX_DATA_XFER,
            "max_dma_maps": crate::dma::MAX_DMA_MAPS,
            "migration": { "pgsize": 4096 },
        }
    })
    .to_string();
    let mut b = Vec::with_capacity(4 + caps.len() + 1);
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(caps.as_bytes());
    b.push(0);
    b
}

/// Little-endian body builder for replies.
#[derive(Debug, Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    /// Appends a u32.
    pub fn u32(mut self, v: u32) -> Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u64.
    pub fn u64(mut self, v: u64) -> Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u16.
    pub fn u16(mut self, v: u16) -> Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends bytes.
    pub fn bytes(mut self, b: &[u8]) -> Body {
        self.0.extend_from_slice(b);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(command: u16, body: usize) -> Header {
        Header {
            id: 7,
            command,
            size: (HEADER_SIZE + body) as u32,
            flags: 0,
            error: 0,
        }
    }

    #[test]
    fn header_round_trip_and_framing_limits() {
        let h = Header {
            id: 0xBEEF,
            command: 10,
            size: 40,
            flags: flag::NO_REPLY,
            error: 0,
        };
        assert_eq!(Header::decode(&h.encode()), h);
        assert_eq!(h.body_len(), Ok(24));
        let short = Header { size: 15, ..h };
        assert_eq!(short.body_len(), Err(FramingError::TooShort(15)));
        let long = Header {
            size: u32::MAX,
            ..h
        };
        assert_eq!(long.body_len(), Err(FramingError::TooLong(u32::MAX)));
    }

    #[test]
    fn region_write_payload_must_match_its_count() {
        let mut body = Body::default().u64(0x10).u32(0).u32(8).0;
        body.extend_from_slice(&[1, 2, 3, 4]);
        let e = parse(&hdr(cmd::REGION_WRITE, body.len()), &body, 0).unwrap_err();
        assert_eq!(
            e,
            RequestError::BodySize {
                command: cmd::REGION_WRITE,
                need: 24,
                got: 20
            }
        );
        assert_eq!(e.errno(), libc::EINVAL);
        body.extend_from_slice(&[5, 6, 7, 8]);
        assert_eq!(
            parse(&hdr(cmd::REGION_WRITE, body.len()), &body, 0),
            Ok(Request::RegionWrite {
                region: 0,
                offset: 0x10,
                data: &[1, 2, 3, 4, 5, 6, 7, 8]
            })
        );
        let huge = Body::default().u64(0).u32(0).u32(MAX_DATA_XFER + 1).0;
        assert_eq!(
            parse(&hdr(cmd::REGION_READ, 16), &huge, 0)
                .unwrap_err()
                .errno(),
            libc::E2BIG
        );
    }

    #[test]
    fn unknown_and_server_only_commands_are_refused_with_their_errno() {
        let e = parse(&hdr(99, 8), &[0; 8], 0).unwrap_err();
        assert_eq!(e.errno(), libc::ENOTSUP);
        assert!(e.to_string().contains("99"), "{e}");
        assert_eq!(
            parse(&hdr(cmd::DMA_WRITE, 0), &[], 0).unwrap_err(),
            RequestError::ServerOnly(cmd::DMA_WRITE)
        );
    }

    #[test]
    fn set_irqs_accepts_none_and_eventfd_only() {
        let b = |flags: u32, count: u32| {
            Body::default()
                .u32(20)
                .u32(flags)
                .u32(2)
                .u32(0)
                .u32(count)
                .0
        };
        let bool_body = {
            let mut v = b(irq_flag::DATA_BOOL | 0x20, 2);
            v.extend_from_slice(&[1, 1]);
            v
        };
        let e = parse(&hdr(cmd::DEVICE_SET_IRQS, 22), &bool_body, 0).unwrap_err();
        assert_eq!(e, RequestError::IrqData(irq_flag::DATA_BOOL));
        assert_eq!(e.errno(), libc::ENOTSUP);
        let ok = b(irq_flag::DATA_EVENTFD | 0x20, 1);
        assert!(parse(&hdr(cmd::DEVICE_SET_IRQS, 20), &ok, 1).is_ok());
        assert!(matches!(
            parse(&hdr(cmd::DEVICE_SET_IRQS, 20), &ok, 2),
            Err(RequestError::Fds { got: 2, max: 1, .. })
        ));
    }

    #[test]
    fn version_capabilities_are_checked() {
        let v = |caps: &[u8]| Body::default().u16(0).u16(0).bytes(caps).0;
        let ok = v(b"{\"capabilities\":{\"max_msg_fds\":8}}\0");
        match parse(&hdr(cmd::VERSION, ok.len()), &ok, 0) {
            Ok(Request::Version { caps, .. }) => assert_eq!(caps.max_msg_fds, 8),
            other => panic!("{other:?}"),
        }
        for bad in [
            &b"{\"capabilities\":1}\0"[..],
            b"{\"capabilities\":{}}",
            b"[]\0",
            b"\xff\0",
            b"{\0",
            b"{\"capabilities\":{\"max_msg_fds\":-1}}\0",
        ] {
            let body = v(bad);
            let e = parse(&hdr(cmd::VERSION, body.len()), &body, 0).unwrap_err();
            assert!(matches!(e, RequestError::Version(_)), "{bad:?}: {e}");
        }
        let nested = format!("{}{}\0", "[".repeat(200), "]".repeat(200));
        let body = v(nested.as_bytes());
        assert!(parse(&hdr(cmd::VERSION, body.len()), &body, 0).is_err());
    }

    #[test]
    fn replies_carry_the_command_and_id() {
        let to = hdr(cmd::REGION_READ, 16);
        let r = error_reply(&to, libc::EINVAL);
        let h = Header::decode(r[..16].try_into().unwrap());
        assert_eq!((h.id, h.command, h.size), (7, cmd::REGION_READ, 16));
        assert_eq!(h.flags, flag::REPLY | flag::ERROR);
        assert_eq!(h.error, libc::EINVAL as u32);
        assert!(parse(&h, &[], 0).is_err(), "a reply is not a command");
    }
}

//! `acq-device` against a hostile vfio-user client: raw messages on a real socket, the
//! way a fuzzer or a broken VMM would send them. Each case was found to crash, hang or
//! desynchronise the model before its own message layer (issue 16); each must now give
//! an error reply (or a dropped connection) and leave the next request, the next client
//! and SIGTERM working, with the process's descriptors back at their baseline.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use acq_device::memfd::Memfd;
use acq_device::regs::{id, reg};
use acq_device::vfio::wire::{cmd, flag, Body, Header, HEADER_SIZE};
use common::{temp_dir, wait_for, with_timeout, Proc};
use serde_json::Value;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

static BIN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| common::package_bin("acq-device"));

impl Proc {
    fn acq_device(dir: &Path) -> Proc {
        let (sock, ctl) = (dir.join("acq.sock"), dir.join("acq.ctl"));
        let args = [
            "--socket".as_ref(),
            sock.as_os_str(),
            "--control".as_ref(),
            ctl.as_os_str(),
        ];
        Proc::start(&BIN, args, &sock, "the vfio-user socket")
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0.id()))
            .unwrap()
            .count()
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.0.id()))
            .unwrap()
            .count()
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// SIGTERM ends it with status 0 within `secs`.
    fn terminate(mut self, secs: u64) {
        // SAFETY: kill() on our own child, not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                assert!(s.success(), "exit status {s:?}");
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "no exit {secs} s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn control(dir: &Path, req: &str) -> Value {
    let mut s = UnixStream::connect(dir.join("acq.ctl")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A vfio-user client that writes whatever it is told to.
struct Raw {
    s: UnixStream,
    id: u16,
}

/// A reply: header and body.
type Reply = (Header, Vec<u8>);

impl Raw {
    fn connect(sock: &Path) -> Raw {
        // The socket file appears at bind(), a moment before listen(): a connection in
        // between is refused (`Proc::start` waits only for the file).
        let t = Instant::now();
        let s = loop {
            match UnixStream::connect(sock) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && t.elapsed() < Duration::from_secs(5) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => break r.unwrap(),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { s, id: 0 }
    }

    /// Connects and negotiates.
    fn negotiated(sock: &Path) -> Raw {
        let mut c = Raw::connect(sock);
        let caps = b"{\"capabilities\":{\"max_msg_fds\":1}}\0";
        let (h, _) = c.call(
            cmd::VERSION,
            &Body::default().u16(0).u16(0).bytes(caps).0,
            &[],
        );
        assert_eq!(h.flags & flag::ERROR, 0, "VERSION refused");
        c
    }

    /// The bytes of a command (`size` as given, or the true size).
    fn message(&mut self, command: u16, body: &[u8], size: Option<u32>) -> Vec<u8> {
        self.id = self.id.wrapping_add(1);
        let h = Header {
            id: self.id,
            command,
            size: size.unwrap_or((HEADER_SIZE + body.len()) as u32),
            flags: 0,
            error: 0,
        };
        let mut m = h.encode().to_vec();
        m.extend_from_slice(body);
        m
    }

    fn send(&mut self, bytes: &[u8], fds: &[RawFd]) {
        self.s.send_with_fds(&[bytes], fds).unwrap();
    }

    fn recv(&mut self) -> Option<Reply> {
        let mut hb = [0u8; HEADER_SIZE];
        self.s.read_exact(&mut hb).ok()?;
        let h = Header::decode(&hb);
        let mut body = vec![0u8; h.size as usize - HEADER_SIZE];
        self.s.read_exact(&mut body).ok()?;
        Some((h, body))
    }

    fn call(&mut self, command: u16, body: &[u8], fds: &[RawFd]) -> Reply {
        let m = self.message(command, body, None);
        self.send(&m, fds);
        let r = self.recv().expect("a reply");
        assert_eq!(r.0.id, self.id, "the reply answers the request just sent");
        r
    }

    /// Reads the card's ID register: the proof that the stream is still in step.
    fn read_id(&mut self) -> u32 {
        let body = Body::default().u64(reg::ID as u64).u32(0).u32(4).0;
        let (h, b) = self.call(cmd::REGION_READ, &body, &[]);
        assert_eq!(
            h.flags & flag::ERROR,
            0,
            "ID read refused: errno {}",
            h.error
        );
        u32::from_le_bytes(b[16..20].try_into().unwrap())
    }

    /// True once the server closed the connection (within the read timeout).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0))
            || matches!(self.s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

fn errno(r: &Reply) -> Option<i32> {
    (r.0.flags & flag::ERROR != 0).then_some(r.0.error as i32)
}

fn dma_map_body(addr: u64, size: u64, offset: u64) -> Vec<u8> {
    Body::default()
        .u32(32)
        .u32(3)
        .u64(offset)
        .u64(addr)
        .u64(size)
        .0
}

#[test]
fn malformed_messages_get_errors_and_the_stream_stays_in_step() {
    with_timeout(60, || {
        let dir = temp_dir("hostile-wire");
        let mut p = Proc::acq_device(&dir);
        let sock = dir.join("acq.sock");
        let mut c = Raw::negotiated(&sock);
        assert_eq!(c.read_id(), id::MAGIC);
        let base_fds = p.fds();
        let base_threads = p.threads();

        // A header split across two writes.
        let body = Body::default().u64(reg::ID as u64).u32(0).u32(4).0;
        let m = c.message(cmd::REGION_READ, &body, None);
        c.send(&m[..7], &[]);
        std::thread::sleep(Duration::from_millis(50));
        c.send(&m[7..], &[]);
        let r = c.recv().unwrap();
        assert_eq!((r.0.id, errno(&r)), (c.id, None));
        assert_eq!(c.read_id(), id::MAGIC);

        // An unknown command with a body.
        let r = c.call(77, &[0xAA; 40], &[]);
        assert_eq!(errno(&r), Some(libc::ENOTSUP));
        assert_eq!(c.read_id(), id::MAGIC);

        // A REGION_WRITE whose payload is shorter than its count.
        let short = Body::default()
            .u64(reg::SCRATCH as u64)
            .u32(0)
            .u32(8)
            .bytes(&[1, 2, 3, 4])
            .0;
        let r = c.call(cmd::REGION_WRITE, &short, &[]);
        assert_eq!(errno(&r), Some(libc::EINVAL));
        assert_eq!(c.read_id(), id::MAGIC);

        // SET_IRQS with a DATA_BOOL payload.
        let mut b = Body::default()
            .u32(22)
            .u32(0x2 | 0x20)
            .u32(2)
            .u32(0)
            .u32(2)
            .0;
        b.extend_from_slice(&[1, 1]);
        let r = c.call(cmd::DEVICE_SET_IRQS, &b, &[]);
        assert_eq!(errno(&r), Some(libc::ENOTSUP));
        assert_eq!(c.read_id(), id::MAGIC);

        // A second, malformed VERSION: an error reply, not a panic.
        let r = c.call(
            cmd::VERSION,
            &Body::default().u16(0).u16(0).bytes(b"{{{").0,
            &[],
        );
        assert_eq!(errno(&r), Some(libc::EINVAL));
        assert_eq!(c.read_id(), id::MAGIC);

        // A client's DMA_WRITE (a server-to-client command), a REGION_READ beyond the
        // transfer limit, a reply where a command belongs.
        assert_eq!(
            errno(&c.call(cmd::DMA_WRITE, &[0; 16], &[])),
            Some(libc::EINVAL)
        );
        let big = Body::default().u64(0).u32(0).u32(64 << 20).0;
        assert_eq!(
            errno(&c.call(cmd::REGION_READ, &big, &[])),
            Some(libc::E2BIG)
        );
        assert_eq!(c.read_id(), id::MAGIC);

        // File descriptors on a command that takes none are refused and closed.
        let ram = Memfd::new("stray", 4096).unwrap();
        let r = c.call(cmd::DEVICE_GET_INFO, &[0; 16], &[ram.raw_fd()]);
        assert_eq!(errno(&r), Some(libc::EINVAL));
        assert_eq!(c.read_id(), id::MAGIC);
        assert_eq!(p.fds(), base_fds, "the stray descriptor was closed");

        // A size below the header cannot be framed: the connection ends, the next
        // client is served.
        let m = c.message(cmd::REGION_READ, &[], Some(8));
        c.send(&m, &[]);
        assert!(c.closed(), "an unframable message ends the connection");
        let mut c = Raw::negotiated(&sock);
        assert_eq!(c.read_id(), id::MAGIC);
        // So does a size no request can have (4 GiB).
        let m = c.message(cmd::REGION_WRITE, &[], Some(u32::MAX));
        c.send(&m, &[]);
        assert!(c.closed());
        drop(c);

        // Anything before VERSION: an error, then the connection ends.
        let mut c = Raw::connect(&sock);
        let body = Body::default().u64(reg::ID as u64).u32(0).u32(4).0;
        let r = c.call(cmd::REGION_READ, &body, &[]);
        assert_eq!(errno(&r), Some(libc::EINVAL));
        assert!(c.closed());
        drop(c);

        wait_for(5.0, "descriptors back to the baseline", || {
            p.fds() <= base_fds
        });
        assert_eq!(p.threads(), base_threads, "threads back to the baseline");
        assert!(p.alive());
        p.terminate(10);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn idle_and_stalled_clients_do_not_hold_the_card() {
    with_timeout(60, || {
        let dir = temp_dir("hostile-idle");
        let p = Proc::acq_device(&dir);
        let sock = dir.join("acq.sock");

        // A client that connects and says nothing is dropped after the VERSION timeout;
        // a second client meanwhile is turned away at once, not left waiting unseen.
        let mut idle = Raw::connect(&sock);
        std::thread::sleep(Duration::from_millis(100));
        let mut second = Raw::connect(&sock);
        let t = Instant::now();
        assert!(second.closed(), "the second client is closed");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(idle.closed(), "the silent client is dropped");
        assert!(t.elapsed() < Duration::from_secs(8));
        let mut c = Raw::negotiated(&sock);
        assert_eq!(c.read_id(), id::MAGIC);

        // A client that stops half-way through a message is dropped after the message
        // timeout, and the next one is served.
        let body = Body::default().u64(reg::ID as u64).u32(0).u32(4).0;
        let m = c.message(cmd::REGION_READ, &body, None);
        c.send(&m[..20], &[]);
        let t = Instant::now();
        assert!(c.closed(), "the stalled client is dropped");
        assert!(t.elapsed() < Duration::from_secs(8));
        let mut c = Raw::negotiated(&sock);
        assert_eq!(c.read_id(), id::MAGIC);
        drop(c);
        p.terminate(10);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn dma_maps_beyond_or_able_to_leave_their_file_are_refused() {
    with_timeout(60, || {
        let dir = temp_dir("hostile-dma");
        let mut p = Proc::acq_device(&dir);
        let sock = dir.join("acq.sock");
        let mut c = Raw::negotiated(&sock);
        let ram = Memfd::new("small", 1536 << 10).unwrap();

        // A 1 TiB file offset on a 1.5 MiB memfd; a 32 MiB map over it.
        let r = c.call(
            cmd::DMA_MAP,
            &dma_map_body(0x1000_0000, 1 << 20, 1 << 40),
            &[ram.raw_fd()],
        );
        assert_eq!(errno(&r), Some(libc::EINVAL));
        let r = c.call(
            cmd::DMA_MAP,
            &dma_map_body(0x1000_0000, 32 << 20, 0),
            &[ram.raw_fd()],
        );
        assert_eq!(errno(&r), Some(libc::EINVAL));
        // A memfd that could shrink and cannot be sealed.
        // SAFETY: a valid NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"unsealable".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor nothing else owns.
        let unsealable = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        unsealable.set_len(1 << 20).unwrap();
        let r = c.call(cmd::DMA_MAP, &dma_map_body(0x2000_0000, 1 << 20, 0), &[fd]);
        assert_eq!(errno(&r), Some(libc::EINVAL));
        // A memfd that can be sealed is sealed: shrinking it later fails.
        // SAFETY: as above.
        let fd = unsafe { libc::memfd_create(c"sealable".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: as above.
        let sealable = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        sealable.set_len(1 << 20).unwrap();
        let r = c.call(
            cmd::DMA_MAP,
            &dma_map_body(0x3000_0000, 1 << 20, 0),
            &[sealable.as_raw_fd()],
        );
        assert_eq!(errno(&r), None);
        let e = sealable.set_len(4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        // The card serves on: a stream into the map works.
        assert_eq!(c.read_id(), id::MAGIC);
        assert!(p.alive());
        drop(c);
        p.terminate(10);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_full_blocking_eventfd_and_huge_fault_counts_do_not_wedge_the_card() {
    with_timeout(60, || {
        let dir = temp_dir("hostile-irq");
        let p = Proc::acq_device(&dir);
        let sock = dir.join("acq.sock");
        let mut c = Raw::negotiated(&sock);
        let threads = p.threads();

        // A blocking eventfd at its maximum count on vector 1.
        // SAFETY: plain eventfd creation; checked.
        let fd = unsafe { libc::eventfd(0, 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor nothing else owns.
        let mut efd = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        efd.write_all(&(u64::MAX - 1).to_ne_bytes()).unwrap();
        let set = Body::default()
            .u32(20)
            .u32(0x4 | 0x20)
            .u32(2)
            .u32(1)
            .u32(1)
            .0;
        let r = c.call(cmd::DEVICE_SET_IRQS, &set, &[fd]);
        assert_eq!(errno(&r), None);
        // A pipe is not an eventfd.
        let mut pp = [0; 2];
        // SAFETY: `pp` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(pp.as_mut_ptr()) }, 0);
        let set0 = Body::default()
            .u32(20)
            .u32(0x4 | 0x20)
            .u32(2)
            .u32(0)
            .u32(1)
            .0;
        let r = c.call(cmd::DEVICE_SET_IRQS, &set0, &[pp[1]]);
        assert_eq!(errno(&r), Some(libc::EINVAL));
        // SAFETY: closing our own pipe ends.
        unsafe {
            libc::close(pp[0]);
            libc::close(pp[1]);
        }

        let t = Instant::now();
        let r = control(
            &dir,
            r#"{"cmd":"inject","fault":"spurious_irq","vector":1,"count":5}"#,
        );
        assert_eq!(r["ok"], Value::Bool(true), "{r}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the spurious_irq answer"
        );
        assert_eq!(c.read_id(), id::MAGIC, "the vfio-user thread still serves");

        let t = Instant::now();
        let r = control(
            &dir,
            r#"{"cmd":"inject","fault":"spurious_irq","count":1000000000000}"#,
        );
        assert_eq!(r["ok"], Value::Bool(false), "{r}");
        assert!(r["error"].as_str().unwrap().contains("count"), "{r}");
        assert!(t.elapsed() < Duration::from_secs(2));
        let r = control(
            &dir,
            r#"{"cmd":"inject","fault":"stall","ms":18446744073709551615}"#,
        );
        assert_eq!(r["ok"], Value::Bool(false), "{r}");
        // Each control connection has its thread while it lasts.
        wait_for(5.0, "no thread left spinning", || p.threads() == threads);
        drop(c);
        drop(efd);
        p.terminate(10);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

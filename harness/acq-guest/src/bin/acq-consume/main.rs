//! acq-consume: reads `/dev/acqN` through one chosen system call and checks the driver's
//! errno contract from the data alone (docs/driver.md, "The errno contract").
//!
//! The card streams the COUNTER pattern with seed 0, so every 8-byte word carries its own
//! stream offset: a jump in the words is a gap the card lost, visible without asking the
//! driver. The one invariant, for every method: **each gap in the data is reported by
//! exactly one `EPIPE`, returned at exactly the consumer offset where the gap starts**
//! (after every byte before it, before any byte after it). `EIO`s are counted and
//! reported with the driver's own error count; the test that injected the errors knows
//! how many to expect. After an `EIO` the stream goes on seamlessly, or, when the card was
//! reset (the driver's session changed), from offset 0 of the new session (`restarts`).
//!
//! ```text
//! acq-consume --method read|readv|sendfile-file|sendfile-pipe|splice|io-uring-read|
//!                      io-uring-readv|poll-read|epoll-read|preadv2-nowait|stdin
//!             --bytes N [--device /dev/acq0] [--chunk N] [--iovecs K] [--rate R]
//!             [--ring-log2 L] [--pause-at N --pause-ms MS] [--out FILE] [--timeout S]
//!             [--stop-after-ms MS] [--until-gone] [--threads N]
//! ```
//!
//! `stdin` verifies a stream that a standard tool (dd, cat, head, tee) wrote into a pipe:
//! no errno is seen there, so every gap counts as a failure. Before streaming, every
//! method but `stdin` checks that pread() fails with `ESPIPE` (the device is a stream);
//! `sendfile-file` checks that the kernel refuses it (`EINVAL`) and consumed nothing.
//! `--stop-after-ms` makes one call while a second thread stops the card: the call must
//! end and the card stay stopped. The io_uring methods report `max_submit_ms`, the
//! longest io_uring_enter() that only submitted (it must never wait for data);
//! `preadv2-nowait` reports `nowait_eagain`, the calls that found nothing ready and
//! returned at once instead of waiting.
//! `--until-gone` ends the run at the first ENODEV (the test unplugs the card) and checks
//! that the next call gets ENODEV too. `--threads N` reads with N threads at once
//! (threads.rs).
//! Prints one JSON line; exit status 0 when the invariant held, 1 when not, 2 on bad
//! arguments.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use acq_guest::acqdev::{self, AcqDev};
use acq_guest::regs;
use clap::{Parser, ValueEnum};

mod threads;
use serde_json::json;

/// The system call the stream is read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Method {
    /// read() of `--chunk` bytes.
    Read,
    /// readv() of `--iovecs` buffers of `--chunk / --iovecs` bytes.
    Readv,
    /// sendfile() into a file (`--out`): must be refused with EINVAL (the kernel allows
    /// no direct splice from a stream), consuming nothing.
    SendfileFile,
    /// sendfile() into a pipe, drained and verified after each call.
    SendfilePipe,
    /// splice() into a pipe, drained and verified after each call.
    Splice,
    /// io_uring READ of `--chunk` bytes.
    IoUringRead,
    /// io_uring READV of `--iovecs` buffers.
    IoUringReadv,
    /// O_NONBLOCK read(), poll() for POLLIN on EAGAIN.
    PollRead,
    /// O_NONBLOCK read(), epoll_wait() on EAGAIN.
    EpollRead,
    /// preadv2() at the file position (offset -1) with RWF_NOWAIT on a blocking
    /// descriptor, poll() on EAGAIN: the per-call non-blocking read (io_uring's inline
    /// attempt takes the same path in the driver).
    Preadv2Nowait,
    /// A pipe from a standard tool on standard input.
    Stdin,
}

#[derive(Parser, Debug)]
#[command(
    name = "acq-consume",
    about = "Reads /dev/acqN with one system call and checks the errno contract"
)]
struct Args {
    #[arg(long, value_enum)]
    method: Method,
    /// Bytes to consume (K, M, G suffixes).
    #[arg(long, value_parser = parse_size)]
    bytes: u64,
    #[arg(long, default_value = "/dev/acq0")]
    device: String,
    /// Bytes per call.
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    chunk: u64,
    /// Buffers per readv().
    #[arg(long, default_value_t = 16)]
    iovecs: usize,
    /// Card rate in bytes per second (0: as fast as the card can).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    rate: u64,
    #[arg(long, default_value_t = 8)]
    ring_log2: u32,
    /// Card block size (default: the driver's).
    #[arg(long, value_parser = parse_size)]
    block: Option<u64>,
    /// Pause once the consumer reached this offset (the ring then overflows).
    #[arg(long, value_parser = parse_size)]
    pause_at: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// The file sendfile-file writes (removed afterwards).
    #[arg(long, default_value = "/tmp/acq-consume.out")]
    out: String,
    /// A second thread issues ACQ_IOC_STOP on the same descriptor after this many
    /// milliseconds, while one read() (or splice()) of `--chunk` bytes waits for data: the
    /// call must end (with the bytes it has, or 0) and the card stay stopped.
    #[arg(long)]
    stop_after_ms: Option<u64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The card goes away while the consumer reads (the test unplugs it): the run ends at
    /// the first ENODEV, and one more call must get ENODEV too (gone is for good).
    /// Reported as `enodev` and `enodev_again`.
    #[arg(long)]
    until_gone: bool,
    /// Threads reading the one descriptor at once (`read` only; see threads.rs).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn parse_size(s: &str) -> Result<u64, String> {
    acqdev::parse_size(s).ok_or_else(|| {
        format!("bad size {s:?} (a decimal or 0x hex number, optionally with K, M or G)")
    })
}

/// Follows the COUNTER words of the consumed bytes (seed 0: word value = stream offset / 8).
#[derive(Default)]
struct Scanner {
    /// Consumer offset of the next byte.
    pos: u64,
    /// Bytes of an unfinished word.
    part: Vec<u8>,
    /// Value the next word should have.
    expect: u64,
    /// Consumer offsets where a gap starts, and bytes lost in each.
    gaps: Vec<u64>,
    lost: u64,
    /// Words that went backwards or repeated: corruption, never a gap.
    backwards: u64,
    first_backwards: Option<u64>,
}

impl Scanner {
    fn feed(&mut self, mut data: &[u8]) {
        // Finish a word split across two calls first.
        if !self.part.is_empty() {
            let take = (8 - self.part.len()).min(data.len());
            self.part.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.part.len() < 8 {
                return;
            }
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.part);
            self.part.clear();
            self.word(u64::from_le_bytes(w));
        }
        let words = data.chunks_exact(8);
        let rest = words.remainder();
        for w in words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        self.part.extend_from_slice(rest);
    }

    /// The next whole word, at consumer offset `pos`.
    fn word(&mut self, v: u64) {
        let at = self.pos;
        self.pos += 8;
        if v != self.expect {
            if v > self.expect {
                self.gaps.push(at);
                self.lost += (v - self.expect) * 8;
            } else {
                self.backwards += 1;
                self.first_backwards.get_or_insert(at);
            }
        }
        self.expect = v.wrapping_add(1);
    }

    /// Consumer offset including an unfinished word.
    fn offset(&self) -> u64 {
        self.pos + self.part.len() as u64
    }
}

/// What the consumer saw.
#[derive(Default)]
struct Account {
    scan: Scanner,
    calls: u64,
    epipe_at: Vec<u64>,
    eio: u64,
    /// EIOs after which the stream went on in a new session (a reset card).
    restarts: u64,
    eintr: u64,
    /// `--until-gone`: ENODEV ends the run instead of failing it.
    until_gone: bool,
    /// ENODEV seen (`--until-gone`: the run ends at the first).
    enodev: u64,
    other: Vec<String>,
}

impl Account {
    /// One call's result: bytes (already fed to the scanner) or an errno.
    fn result(&mut self, r: io::Result<usize>) -> Result<(), String> {
        self.calls += 1;
        match r {
            Ok(0) => Err("end of file from a device that never ends".into()),
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EPIPE) => {
                    self.epipe_at.push(self.scan.offset());
                    Ok(())
                }
                Some(libc::EIO) => {
                    self.eio += 1;
                    Ok(())
                }
                Some(libc::EINTR) | Some(libc::EAGAIN) => {
                    self.eintr += 1;
                    Ok(())
                }
                Some(libc::ENODEV) if self.until_gone => {
                    self.enodev += 1;
                    Ok(())
                }
                _ => {
                    self.other
                        .push(acqdev::errno_name(e.raw_os_error().unwrap_or(0)));
                    Err(format!("unexpected error {e}"))
                }
            },
        }
    }
}

fn errno() -> io::Error {
    io::Error::last_os_error()
}

fn check(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

/// A pipe, both ends, the read end non-blocking (drained after each fill).
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(errno());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: plain fcntl calls on descriptors we own.
        unsafe {
            libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int);
        }
        Ok(Pipe { r, w })
    }

    /// Reads exactly `n` bytes (what the last fill put in) into the scanner.
    fn drain(&self, n: usize, buf: &mut [u8], scan: &mut Scanner) -> io::Result<()> {
        let mut left = n;
        while left > 0 {
            let want = left.min(buf.len());
            // SAFETY: `buf` is valid for `want` bytes of writes.
            let k =
                check(unsafe { libc::read(self.r.as_raw_fd(), buf.as_mut_ptr().cast(), want) })?;
            if k == 0 {
                return Err(io::Error::other("pipe closed"));
            }
            scan.feed(&buf[..k]);
            left -= k;
        }
        Ok(())
    }
}

/// splice() of up to `len` bytes from `fd` into the pipe's write end.
fn splice_into(fd: RawFd, p: &Pipe, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors and null offsets: no memory is passed.
    check(unsafe {
        libc::splice(
            fd,
            std::ptr::null_mut(),
            p.w.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            0,
        )
    })
}

/// io_uring reads of the device (one request in flight at a time).
struct Uring {
    ring: io_uring::IoUring,
    /// The longest io_uring_enter() that only submitted.
    max_submit_ms: u64,
}

impl Uring {
    fn new() -> io::Result<Uring> {
        Ok(Uring {
            ring: io_uring::IoUring::new(4)?,
            max_submit_ms: 0,
        })
    }

    fn run(&mut self, sqe: io_uring::squeue::Entry) -> io::Result<usize> {
        // SAFETY: the buffers the entry points at live on the caller's stack/heap until
        // this call returns, and we wait for the completion before returning.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        // Submit, then wait: io_uring_enter() must not block in the submission (its
        // non-blocking attempt at a file that poll() reports ready), only in the wait.
        let t = Instant::now();
        self.ring.submit()?;
        self.max_submit_ms = self.max_submit_ms.max(t.elapsed().as_millis() as u64);
        self.ring.submit_and_wait(1)?;
        let cqe = self
            .ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::other("io_uring: no completion"))?;
        let r = cqe.result();
        if r < 0 {
            Err(io::Error::from_raw_os_error(-r))
        } else {
            Ok(r as usize)
        }
    }
}

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut acc = Account {
        until_gone: a.until_gone,
        ..Account::default()
    };
    let chunk = a.chunk.clamp(8, 1 << 30) as usize;
    let mut buf = vec![0u8; chunk];
    let mut extra = json!({});

    if a.method == Method::Stdin {
        let mut stdin = io::stdin().lock();
        while acc.scan.offset() < a.bytes {
            let n = stdin.read(&mut buf).map_err(|e| format!("stdin: {e}"))?;
            if n == 0 {
                break;
            }
            acc.scan.feed(&buf[..n]);
            acc.calls += 1;
        }
        return Ok(report(a, &acc, None, extra));
    }

    let nonblock = matches!(a.method, Method::PollRead | Method::EpollRead);
    let dev = AcqDev::open(&a.device, nonblock).map_err(|e| format!("{}: {e}", a.device))?;
    let mut cfg = dev
        .config()
        .map_err(|e| format!("ACQ_IOC_GET_CONFIG: {e}"))?;
    cfg.pattern = regs::pattern::COUNTER;
    cfg.seed = 0;
    cfg.rate = a.rate;
    cfg.ring_log2 = a.ring_log2;
    if let Some(b) = a.block {
        cfg.block_size = u32::try_from(b).map_err(|_| format!("--block {b} is too large"))?;
    }
    dev.stop().map_err(|e| format!("ACQ_IOC_STOP: {e}"))?;
    dev.set_config(&cfg)
        .map_err(|e| format!("ACQ_IOC_SET_CONFIG: {e}"))?;
    let before = dev.stats().map_err(|e| format!("ACQ_IOC_GET_STATS: {e}"))?;
    let fd = dev.raw_fd();

    if let Some(ms) = a.stop_after_ms {
        return stopped_while_reading(a, &dev, ms, before.session, chunk, &mut buf, extra);
    }
    if a.threads > 1 {
        if a.method != Method::Read {
            return Err("--threads works with --method read only".into());
        }
        return Ok(threads::run(
            fd,
            a.threads.min(64),
            chunk,
            a.bytes,
            deadline,
        ));
    }

    // The device is a stream: pread() must fail with ESPIPE and consume nothing.
    // SAFETY: `buf` is valid for 8 bytes of writes.
    let pr = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 8, 0) };
    let pread_errno = if pr < 0 {
        errno().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    extra["pread"] = acqdev::errno_name(pread_errno).into();

    if a.method == Method::SendfileFile {
        // The kernel refuses a direct splice (sendfile into a file or a socket) from a file
        // that cannot seek, such as a stream: the pages the destination did not take would
        // be dropped. It must fail with EINVAL and consume nothing: the next read() starts
        // the stream at offset 0.
        let out = File::create(&a.out).map_err(|e| format!("{}: {e}", a.out))?;
        // SAFETY: plain descriptors; a null offset.
        let r = check(unsafe { libc::sendfile(out.as_raw_fd(), fd, std::ptr::null_mut(), chunk) });
        drop(out);
        let _ = std::fs::remove_file(&a.out);
        let refused = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINVAL));
        extra["sendfile_file"] = match &r {
            Ok(n) => format!("accepted {n} bytes").into(),
            Err(e) => acqdev::errno_name(e.raw_os_error().unwrap_or(0)).into(),
        };
        // SAFETY: `buf` is valid for `chunk` bytes of writes.
        let n = check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), chunk) })
            .map_err(|e| format!("read after sendfile: {e}"))?;
        acc.scan.feed(&buf[..n]);
        acc.calls = 2;
        let (mut rep, _) = report(a, &acc, Some(pread_errno), extra);
        let ok = refused
            && pread_errno == libc::ESPIPE
            && acc.scan.gaps.is_empty()
            && acc.scan.backwards == 0;
        rep["ok"] = ok.into();
        rep["gaps_match_epipe"] = true.into();
        return Ok((rep, ok));
    }

    let pipe = match a.method {
        Method::SendfilePipe | Method::Splice => {
            Some(Pipe::new(1 << 20).map_err(|e| format!("pipe: {e}"))?)
        }
        _ => None,
    };
    let mut uring = match a.method {
        Method::IoUringRead | Method::IoUringReadv => {
            Some(Uring::new().map_err(|e| format!("io_uring_setup: {e}"))?)
        }
        _ => None,
    };
    let epfd = if a.method == Method::EpollRead {
        // SAFETY: epoll_create1 has no memory arguments.
        let e = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if e < 0 {
            return Err(format!("epoll_create1: {}", errno()));
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: `ev` is a valid event for the duration of the call.
        if unsafe { libc::epoll_ctl(e, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(format!("epoll_ctl: {}", errno()));
        }
        // SAFETY: `e` was just created and is owned by nobody else.
        Some(unsafe { OwnedFd::from_raw_fd(e) })
    } else {
        None
    };

    let mut paused = false;
    let mut empty = EmptyReadiness::default();
    // Preadv2Nowait: the calls that found no block ready and did not wait.
    let mut nowait_eagain = 0u64;
    // The session the reads run in; a read() starts the first one.
    let mut session = before.session.wrapping_add(1);
    let mut consumed = 0u64;
    while consumed < a.bytes {
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {} s at {} bytes",
                a.timeout, consumed
            ));
        }
        if let (Some(at), false) = (a.pause_at, paused) {
            if consumed >= at {
                paused = true;
                std::thread::sleep(Duration::from_millis(a.pause_ms));
            }
        }
        let want = chunk.min((a.bytes - consumed) as usize).max(8);
        let r: io::Result<usize> = match a.method {
            Method::Read | Method::PollRead | Method::EpollRead => {
                // SAFETY: `buf` is valid for `want <= chunk` bytes of writes.
                let r = check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), want) });
                if let Ok(n) = r {
                    acc.scan.feed(&buf[..n]);
                }
                let eagain = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EAGAIN));
                empty.read(eagain)?;
                if nonblock && eagain {
                    empty.polled(wait_readable(fd, epfd.as_ref().map(|e| e.as_raw_fd()))?);
                    continue;
                }
                r
            }
            Method::Preadv2Nowait => {
                let r = preadv2_nowait(fd, &mut buf[..want]);
                if let Ok(n) = r {
                    acc.scan.feed(&buf[..n]);
                }
                let eagain = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EAGAIN));
                empty.read(eagain)?;
                if eagain {
                    nowait_eagain += 1;
                    empty.polled(wait_readable(fd, None)?);
                    continue;
                }
                r
            }
            Method::Readv | Method::IoUringReadv => {
                let k = a.iovecs.clamp(1, 1024);
                let each = (want / k).max(8);
                let iov: Vec<libc::iovec> = buf
                    .chunks_mut(each)
                    .take(k)
                    .map(|c| libc::iovec {
                        iov_base: c.as_mut_ptr().cast(),
                        iov_len: c.len(),
                    })
                    .collect();
                let r = match uring.as_mut() {
                    Some(u) => u.run(
                        io_uring::opcode::Readv::new(
                            io_uring::types::Fd(fd),
                            iov.as_ptr(),
                            iov.len() as u32,
                        )
                        .offset(u64::MAX)
                        .build(),
                    ),
                    None => {
                        // SAFETY: every iovec points into `buf`, valid for its length.
                        check(unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int) })
                    }
                };
                if let Ok(n) = r {
                    acc.scan.feed(&buf[..n]);
                }
                r
            }
            Method::IoUringRead => {
                let u = uring.as_mut().ok_or("no ring")?;
                let r = u.run(
                    io_uring::opcode::Read::new(
                        io_uring::types::Fd(fd),
                        buf.as_mut_ptr(),
                        want as u32,
                    )
                    .offset(u64::MAX)
                    .build(),
                );
                if let Ok(n) = r {
                    acc.scan.feed(&buf[..n]);
                }
                r
            }
            Method::SendfilePipe | Method::Splice => {
                let p = pipe.as_ref().ok_or("no pipe")?;
                let want = want.min(1 << 20);
                let r = if a.method == Method::Splice {
                    splice_into(fd, p, want)
                } else {
                    // SAFETY: plain descriptors; a null offset uses f_pos.
                    check(unsafe {
                        libc::sendfile(p.w.as_raw_fd(), fd, std::ptr::null_mut(), want)
                    })
                };
                if let Ok(n) = r {
                    p.drain(n, &mut buf, &mut acc.scan)
                        .map_err(|e| format!("draining the pipe: {e}"))?;
                }
                r
            }
            Method::Stdin | Method::SendfileFile => unreachable!("handled above"),
        };
        if let Ok(n) = r {
            consumed += n as u64;
        }
        let eio = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EIO));
        acc.result(r)?;
        if acc.enodev > 0 {
            // Gone for good: the next call of any kind says so too.
            // SAFETY: `buf` is valid for 8 bytes of writes.
            let again = check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) });
            extra["enodev_again"] =
                matches!(&again, Err(e) if e.raw_os_error() == Some(libc::ENODEV)).into();
            break;
        }
        if eio {
            // After an EIO the stream goes on seamlessly (an error completion), or in a new
            // session from offset 0 (the card was reset): the driver's session tells which.
            let s = dev.stats().map_err(|e| format!("ACQ_IOC_GET_STATS: {e}"))?;
            if s.session != session {
                session = s.session;
                acc.restarts += 1;
                acc.scan.expect = 0;
            }
        }
    }

    if let Some(u) = &uring {
        extra["max_submit_ms"] = u.max_submit_ms.into();
    }
    if a.method == Method::Preadv2Nowait {
        extra["nowait_eagain"] = nowait_eagain.into();
    }
    let after = dev.stats().map_err(|e| format!("ACQ_IOC_GET_STATS: {e}"))?;
    extra["driver_overflows"] = (after.overflows - before.overflows).into();
    extra["driver_errors"] = (after.errors - before.errors).into();
    extra["pread_ok"] = (pread_errno == libc::ESPIPE).into();
    let _ = io::stdout().flush();
    Ok(report(a, &acc, Some(pread_errno), extra))
}

/// `--stop-after-ms`: one blocking call, STOP from a second thread meanwhile.
fn stopped_while_reading(
    a: &Args,
    dev: &AcqDev,
    ms: u64,
    session_before: u64,
    chunk: usize,
    buf: &mut [u8],
    mut extra: serde_json::Value,
) -> Result<(serde_json::Value, bool), String> {
    let fd = dev.raw_fd();
    let start = Instant::now();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        // SAFETY: a plain ioctl without an argument on a descriptor the main thread keeps
        // open until this thread is joined.
        unsafe { libc::ioctl(fd, acq_guest::uapi::ACQ_IOC_STOP as _, 0) }
    });
    let r = match a.method {
        Method::Splice => {
            let p = Pipe::new(chunk.min(1 << 20)).map_err(|e| format!("pipe: {e}"))?;
            splice_into(fd, &p, chunk)
        }
        // The call is the wait for data, 3 s: the STOP wakes it, and the poll() that
        // follows must not start the card again.
        Method::PollRead | Method::EpollRead => wait_once(fd, a.method == Method::EpollRead, 3000),
        // SAFETY: `buf` is valid for `chunk` bytes of writes.
        _ => check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), chunk) }),
    };
    let took = start.elapsed().as_millis() as u64;
    let stop_rc = stopper.join().map_err(|_| "the STOP thread panicked")?;
    let after = dev.stats().map_err(|e| format!("ACQ_IOC_GET_STATS: {e}"))?;
    let stayed_stopped = after.state == acq_guest::uapi::ACQ_STATE_STOPPED;
    let ended_early = matches!(r, Ok(n) if n < chunk);
    extra["method"] = format!("{:?}", a.method).to_lowercase().into();
    extra["call"] = match &r {
        Ok(n) => json!(n),
        Err(e) => json!(acqdev::errno_name(e.raw_os_error().unwrap_or(0))),
    };
    extra["call_ms"] = took.into();
    extra["stop_rc"] = stop_rc.into();
    extra["state"] = after.state.into();
    extra["sessions_started"] = (after.session - session_before).into();
    let waited = matches!(a.method, Method::PollRead | Method::EpollRead);
    let ok = stop_rc == 0 && (ended_early || waited) && stayed_stopped;
    extra["ok"] = ok.into();
    Ok((extra, ok))
}

/// `preadv2(fd, buf, 1, -1, RWF_NOWAIT)`: a read at the file position that must not
/// block (EAGAIN when no block is ready; EOPNOTSUPP from a file that cannot promise that).
fn preadv2_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    /// include/uapi/linux/fs.h.
    const RWF_NOWAIT: libc::c_long = 0x8;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, valid for writes of its length; the offset -1
    // (low word, high word 0 on a 64-bit kernel) means the file position.
    let r = unsafe {
        libc::syscall(
            libc::SYS_preadv2,
            fd,
            &iov as *const libc::iovec,
            1,
            -1i64,
            0,
            RWF_NOWAIT,
        )
    };
    check(r as isize)
}

/// One poll() (or epoll_wait() on a new epoll set) for POLLIN of at most `timeout_ms`:
/// the number of ready descriptors.
fn wait_once(fd: RawFd, epoll: bool, timeout_ms: i32) -> io::Result<usize> {
    if !epoll {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd.
        return check(unsafe { libc::poll(&mut p, 1, timeout_ms) } as isize);
    }
    // SAFETY: epoll_create1 has no memory arguments.
    let e = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)? as RawFd;
    // SAFETY: `e` was just created and is owned by nobody else.
    let e = unsafe { OwnedFd::from_raw_fd(e) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: `ev` is a valid event for the duration of the call.
    check(unsafe { libc::epoll_ctl(e.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize)?;
    // SAFETY: `ev` has room for the one event asked for.
    check(unsafe { libc::epoll_wait(e.as_raw_fd(), &mut ev, 1, timeout_ms) } as isize)
}

/// Waits up to 5 s for POLLIN (or an error) through epoll or poll(); returns whether the
/// file reported it.
fn wait_readable(fd: RawFd, epfd: Option<RawFd>) -> Result<bool, String> {
    match epfd {
        Some(e) => {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: `ev` has room for the one event asked for.
            let r = unsafe { libc::epoll_wait(e, &mut ev, 1, 5000) };
            if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
                return Err(format!("epoll_wait: {}", errno()));
            }
            Ok(r > 0)
        }
        None => {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `p` is one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, 5000) };
            if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
                return Err(format!("poll: {}", errno()));
            }
            Ok(r > 0)
        }
    }
}

/// Readiness that read() does not find. POLLIN promises that a read will not block, so
/// EAGAIN right after it, again and again, is a driver reporting data it does not have,
/// and an event loop spinning on it. (Once can happen honestly: the block was taken by a
/// session end in between; three times in a row cannot.)
#[derive(Default)]
struct EmptyReadiness {
    /// The last wait reported readiness, and no read() has run since.
    pending: bool,
    /// Readiness-then-EAGAIN in a row.
    streak: u32,
}

impl EmptyReadiness {
    fn polled(&mut self, ready: bool) {
        self.pending = ready;
    }

    fn read(&mut self, eagain: bool) -> Result<(), String> {
        if !eagain {
            self.streak = 0;
        } else if self.pending {
            self.streak += 1;
            if self.streak >= 3 {
                return Err(
                    "poll()/epoll reported POLLIN 3 times in a row and each read() after it found nothing (EAGAIN): readiness the driver does not have".into(),
                );
            }
        }
        self.pending = false;
        Ok(())
    }
}

fn report(
    a: &Args,
    acc: &Account,
    pread_errno: Option<i32>,
    mut extra: serde_json::Value,
) -> (serde_json::Value, bool) {
    let s = &acc.scan;
    let matched = s.gaps == acc.epipe_at;
    let pread_ok = pread_errno.is_none_or(|e| e == libc::ESPIPE);
    // Done: every byte asked for, or (`--until-gone`) one ENODEV that stayed.
    let done = if a.until_gone {
        acc.enodev == 1 && extra["enodev_again"] == json!(true)
    } else {
        s.offset() >= a.bytes
    };
    let ok = matched && s.backwards == 0 && acc.other.is_empty() && pread_ok && done;
    let first = |v: &[u64]| v.iter().take(8).copied().collect::<Vec<_>>();
    let o = extra.as_object_mut().expect("an object");
    for (k, v) in [
        ("method", json!(format!("{:?}", a.method).to_lowercase())),
        ("ok", json!(ok)),
        ("bytes", json!(s.offset())),
        ("calls", json!(acc.calls)),
        ("gaps", json!(s.gaps.len())),
        ("lost_bytes", json!(s.lost)),
        ("epipe", json!(acc.epipe_at.len())),
        ("gaps_match_epipe", json!(matched)),
        ("first_gaps", json!(first(&s.gaps))),
        ("first_epipe", json!(first(&acc.epipe_at))),
        ("eio", json!(acc.eio)),
        ("enodev", json!(acc.enodev)),
        ("restarts", json!(acc.restarts)),
        ("eintr_eagain", json!(acc.eintr)),
        ("backwards", json!(s.backwards)),
        ("first_backwards", json!(s.first_backwards)),
        ("other_errors", json!(acc.other)),
    ] {
        o.insert(k.into(), v);
    }
    (extra, ok)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let context = json!({ "method": format!("{:?}", args.method).to_lowercase(), "ok": false });
    acq_guest::result::finish(run(&args), context)
}

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
use acq_hw::regs;
use acq_wire::consumer::ConsumerReport;

mod args;
use args::*;
mod account;
use account::*;
mod calls;
use calls::*;

mod threads;
use serde_json::json;

fn run(a: &Args) -> Result<(serde_json::Value, bool), String> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.timeout);
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
        return Ok(report(a, &acc, None, start, extra));
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
        // `--method read` only (ConsumeArgs::check).
        return Ok(threads::run(fd, a.threads, chunk, a.bytes, deadline));
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
        let (mut rep, _) = report(a, &acc, Some(pread_errno), start, extra);
        let ok = refused
            && pread_errno == libc::ESPIPE
            && acc.scan.gaps.is_empty()
            && acc.scan.backwards == 0;
        rep["ok"] = ok.into();
        rep["gaps_match_epipe"] = true.into();
        return Ok((rep, ok));
    }

    let pipe = match a.method {
        Method::SendfilePipe | Method::Splice => Some(Pipe::new(Some(1 << 20))?),
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
    Ok(report(a, &acc, Some(pread_errno), start, extra))
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
            let p = Pipe::new(Some(chunk.min(1 << 20)))?;
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
    extra["method"] = a.method.as_str().into();
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

/// The result line: what the harness reads (`ConsumerReport`: ok, bytes, time, the errno
/// counts) and the account beside it.
fn report(
    a: &Args,
    acc: &Account,
    pread_errno: Option<i32>,
    start: Instant,
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
        ("method", json!(a.method.as_str())),
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
    let mut errno = std::collections::BTreeMap::new();
    for (name, n) in [
        ("EPIPE", acc.epipe_at.len() as u64),
        ("EIO", acc.eio),
        ("ENODEV", acc.enodev),
    ] {
        if n > 0 {
            errno.insert(name.to_string(), n);
        }
    }
    let typed = ConsumerReport {
        ok,
        errno,
        // Every byte went through the scanner; a word that went backwards is a failed
        // check (a gap is not: it is the card's loss, reported by EPIPE).
        verified_bytes: s.offset(),
        errors: s.backwards,
        ..ConsumerReport::moved(s.offset(), start.elapsed().as_secs_f64())
    };
    (acq_guest::result::line(&typed, extra), ok)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let usage = || format!("usage: {}", Args::usage());
    if let Some(done) = acq_guest::result::help(&argv, usage) {
        return done;
    }
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("acq-consume: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let context = json!({ "method": args.method.as_str(), "ok": false });
    acq_guest::result::finish(run(&args), context)
}

//! Where the stream goes: /dev/null, a tmpfs file, a loopback TCP socket, a block device
//! or a file on one (with the sink error policy), and the second copy for tee.

use super::*;

/// Brings the loopback interface up (the guest's init does not), for the TCP sink.
pub(crate) fn loopback_up() {
    // SAFETY: plain socket and ioctl calls on a zeroed `ifreq` naming "lo".
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if s < 0 {
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *c as libc::c_char;
        }
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        }
        libc::close(s);
    }
}

/// An open sink. The TCP sink is a connection to a thread of this process that receives
/// (and, with `--verify`, verifies) everything.
pub(crate) struct Sink {
    pub(crate) spec: SinkSpec,
    pub(crate) file: Option<File>,
    pub(crate) tcp: Option<TcpStream>,
    pub(crate) receiver: Option<JoinHandle<Result<Check, String>>>,
    /// Positions, error policy and account (disks, and files with the sink options).
    pub(crate) io: Option<SinkIo>,
    pub(crate) direct: bool,
    /// O_DIRECT copy of unaligned data.
    pub(crate) bounce: Option<AlignedBuf>,
    /// Where the rest of a failed splice goes (the pipe must be emptied).
    pub(crate) devnull: Option<File>,
}

impl Sink {
    pub(crate) fn open(
        spec: &SinkSpec,
        verify: Option<(AcqConfig, Segments)>,
    ) -> Result<Sink, String> {
        let mut sink = Sink {
            spec: spec.clone(),
            file: None,
            tcp: None,
            receiver: None,
            io: None,
            direct: false,
            bounce: None,
            devnull: None,
        };
        match spec {
            SinkSpec::Null => {
                sink.file = Some(File::create("/dev/null").map_err(|e| format!("/dev/null: {e}"))?)
            }
            SinkSpec::File(p) => {
                sink.file = Some(File::create(p).map_err(|e| format!("create {p}: {e}"))?)
            }
            SinkSpec::Tcp => {
                loopback_up();
                let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
                let addr = l.local_addr().map_err(|e| format!("listen: {e}"))?;
                sink.receiver = Some(std::thread::spawn(move || -> Result<Check, String> {
                    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut check = Check::default();
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) => return Ok(check),
                            Ok(n) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(format!("tcp receive: {e}")),
                        };
                        match &verify {
                            Some((cfg, segs)) => {
                                let segs = segs.lock().map_err(|_| "segments lock")?.clone();
                                let pos = check.bytes;
                                check.verify(cfg, &segs, pos, &buf[..n]);
                            }
                            None => check.bytes += n as u64,
                        }
                    }
                }));
                let c = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
                sink.tcp = Some(c);
            }
        }
        Ok(sink)
    }

    pub(crate) fn fd(&self) -> RawFd {
        match (&self.file, &self.tcp) {
            (Some(f), _) => f.as_raw_fd(),
            (None, Some(t)) => t.as_raw_fd(),
            _ => -1,
        }
    }

    pub(crate) fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match (&mut self.file, &mut self.tcp) {
            (Some(f), _) => f.write_all(data),
            (None, Some(t)) => t.write_all(data),
            _ => Ok(()),
        }
    }

    /// Takes over the writes of a disk (or of a file given sink options): see `sinkio`.
    pub(crate) fn attach_io(&mut self, o: &SinkOpts, mode: Mode) -> Result<(), String> {
        use std::os::unix::fs::FileTypeExt;
        let (Some(f), SinkSpec::File(path)) = (&self.file, &self.spec) else {
            return Ok(());
        };
        let blk = f
            .metadata()
            .map_err(|e| format!("stat {path}: {e}"))?
            .file_type()
            .is_block_device();
        if !blk && o.policy.is_none() && !o.direct && o.base.is_none() {
            return Ok(());
        }
        if o.base.is_some() && !blk {
            return Err(format!(
                "--sink-base needs a block device sink; {path} is not one"
            ));
        }
        if o.direct {
            // SAFETY: fcntl on our own descriptor.
            let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
            let set = if fl < 0 {
                -1
            } else {
                // SAFETY: as above; O_DIRECT is one of the flags F_SETFL may change.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_DIRECT) }
            };
            if set < 0 {
                return Err(format!(
                    "O_DIRECT on {path}: {} (the file system may not support it)",
                    std::io::Error::last_os_error()
                ));
            }
        }
        let policy = o.policy.unwrap_or(Policy::Stop);
        if mode == Mode::Splice && policy == Policy::Retry && !o.direct {
            // A buffered splice has moved the pages out of the pipe into the page cache by
            // the time write-back fails: there is nothing left to write again.
            return Err(
                "--on-sink-error retry with --mode splice needs --direct (a buffered splice \
                 no longer has the data when write-back fails)"
                    .into(),
            );
        }
        self.direct = o.direct;
        self.io = Some(SinkIo::new(sinkio::Settings {
            policy,
            retries: o.retries,
            backoff: Duration::from_millis(o.retry_ms),
            positional: blk,
            base: o.base,
            sync_each: !o.direct,
        }));
        Ok(())
    }

    /// True when the sink is written by stream position (a disk checked on the host).
    pub(crate) fn positional(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.set.positional)
    }

    /// Writes `data`, stream offset `off`. `Flow::Stop`: the sink failed and the policy
    /// says stop.
    pub(crate) fn put(&mut self, off: u64, data: &[u8]) -> Result<Flow, String> {
        let fd = self.fd();
        let Some(io) = self.io.as_mut() else {
            self.write_all(data)
                .map_err(|e| format!("write sink: {e}"))?;
            return Ok(Flow::Continue);
        };
        let direct = self.direct;
        let sync_each = io.set.sync_each;
        let data: &[u8] = if direct && !AlignedBuf::aligned(data) {
            if self
                .bounce
                .as_mut()
                .is_none_or(|b| b.as_mut_slice().len() < data.len())
            {
                self.bounce = Some(AlignedBuf::new(data.len()));
            }
            let b = self
                .bounce
                .as_mut()
                .map(|b| b.as_mut_slice())
                .unwrap_or_default();
            b[..data.len()].copy_from_slice(data);
            &b[..data.len()]
        } else {
            data
        };
        io.put(off, data.len() as u64, |pos, done| {
            let n = sinkio::pwrite(fd, pos, &data[done as usize..])
                .map_err(|e| io_failure(e, direct, pos))?;
            if sync_each && n > 0 {
                sinkio::sync_range(fd, pos, n).map_err(Failure::Io)?;
            }
            Ok(n)
        })
    }

    /// Moves `n` bytes (stream offset `off`) from pipe `pipe` to the sink.
    pub(crate) fn splice_from(&mut self, pipe: RawFd, off: u64, n: usize) -> Result<Flow, String> {
        let fd = self.fd();
        let Some(io) = self.io.as_mut() else {
            drain(pipe, fd, n, &self.spec.name())?;
            return Ok(Flow::Continue);
        };
        let direct = self.direct;
        let sync_each = io.set.sync_each;
        // What left the pipe: after a failure the rest must be taken out too.
        let mut taken = 0usize;
        let flow = io.put(off, n as u64, |pos, done| {
            let k = sinkio::splice_at(pipe, fd, pos, n - done as usize)
                .map_err(|e| io_failure(e, direct, pos))?;
            taken += k;
            if sync_each && k > 0 {
                sinkio::sync_range(fd, pos, k as u64).map_err(Failure::Io)?;
            }
            Ok(k as u64)
        })?;
        if taken < n {
            if self.devnull.is_none() {
                self.devnull =
                    Some(File::create("/dev/null").map_err(|e| format!("/dev/null: {e}"))?);
            }
            let null = self.devnull.as_ref().map_or(-1, |f| f.as_raw_fd());
            drain(pipe, null, n - taken, "/dev/null")?;
        }
        Ok(flow)
    }

    /// Closes the sink; for TCP, waits for the receiver and returns its check. A sink
    /// with an account is synced under its policy (a failure is reported, not fatal).
    pub(crate) fn finish(mut self) -> Result<(Option<Check>, Option<SinkIo>), String> {
        if let (Some(f), Some(io)) = (&self.file, self.io.as_mut()) {
            io.final_sync(|| f.sync_all());
            self.file = None;
        }
        if let Some(f) = self.file.take() {
            f.sync_all().or_else(|e| {
                // /dev/null cannot be synced; a file can.
                if matches!(self.spec, SinkSpec::Null) {
                    Ok(())
                } else {
                    Err(format!("sync {}: {e}", self.spec.name()))
                }
            })?;
        }
        drop(self.tcp.take());
        let check = match self.receiver.take() {
            Some(h) => h
                .join()
                .map_err(|_| "tcp receiver panicked".to_string())?
                .map(Some)?,
            None => None,
        };
        Ok((check, self.io.take()))
    }
}

/// A failed sink write: EINVAL under O_DIRECT is a usage error (alignment) no policy fixes.
pub(crate) fn io_failure(e: std::io::Error, direct: bool, pos: u64) -> Failure {
    if direct && e.raw_os_error() == Some(libc::EINVAL) {
        Failure::Fatal(format!(
            "O_DIRECT write at sink position {pos}: {e} (offsets, lengths and buffers must be \
             whole logical blocks of the disk)"
        ))
    } else {
        Failure::Io(e)
    }
}

//! `acq-consume`: a reader of `/dev/acqN` through one chosen system call, which checks the
//! driver's errno contract from the data alone, as a type: built by the harness (`acq
//! soak`, `acq explore`), parsed and checked by the tool with the same rules. Its result
//! line is a [`ConsumerReport`](super::ConsumerReport) (`errno` counts its EPIPEs, EIOs
//! and ENODEVs) with the tool's own fields beside.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::argv::{push, push_if, ArgError, Argv};

/// The system call the stream is read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeMethod {
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

impl ConsumeMethod {
    /// Every method.
    pub const ALL: [ConsumeMethod; 11] = [
        ConsumeMethod::Read,
        ConsumeMethod::Readv,
        ConsumeMethod::SendfileFile,
        ConsumeMethod::SendfilePipe,
        ConsumeMethod::Splice,
        ConsumeMethod::IoUringRead,
        ConsumeMethod::IoUringReadv,
        ConsumeMethod::PollRead,
        ConsumeMethod::EpollRead,
        ConsumeMethod::Preadv2Nowait,
        ConsumeMethod::Stdin,
    ];

    /// The name `--method` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumeMethod::Read => "read",
            ConsumeMethod::Readv => "readv",
            ConsumeMethod::SendfileFile => "sendfile-file",
            ConsumeMethod::SendfilePipe => "sendfile-pipe",
            ConsumeMethod::Splice => "splice",
            ConsumeMethod::IoUringRead => "io-uring-read",
            ConsumeMethod::IoUringReadv => "io-uring-readv",
            ConsumeMethod::PollRead => "poll-read",
            ConsumeMethod::EpollRead => "epoll-read",
            ConsumeMethod::Preadv2Nowait => "preadv2-nowait",
            ConsumeMethod::Stdin => "stdin",
        }
    }

    /// The method named `s`.
    pub fn parse(s: &str) -> Result<ConsumeMethod, String> {
        ConsumeMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ConsumeMethod::ALL.iter().map(|m| m.as_str()).collect();
                format!("{s:?} is not a method ({})", names.join(", "))
            })
    }
}

/// The most buffers one readv() takes (the kernel's UIO_MAXIOV).
pub const IOVECS_MAX: usize = 1024;

/// The most threads `--threads` reads with.
pub const THREADS_MAX: usize = 16;

/// Everything `acq-consume` is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumeArgs {
    /// `--method`.
    pub method: ConsumeMethod,
    /// `--bytes`: bytes to consume.
    pub bytes: u64,
    /// `--device`.
    pub device: String,
    /// `--chunk`: bytes per call.
    pub chunk: u64,
    /// `--iovecs`: buffers per readv().
    pub iovecs: usize,
    /// `--rate`: the card's rate in bytes per second (0: as fast as it can).
    pub rate: u64,
    /// `--ring-log2`.
    pub ring_log2: u32,
    /// `--block`: the card's block size (none: the driver's).
    pub block: Option<u64>,
    /// `--pause-at`: pause once the consumer reached this offset (the ring overflows).
    pub pause_at: Option<u64>,
    /// `--pause-ms`.
    pub pause_ms: u64,
    /// `--out`: the file `sendfile-file` writes (removed afterwards).
    pub out: String,
    /// `--stop-after-ms`: a second thread issues ACQ_IOC_STOP on the same descriptor after
    /// this many milliseconds, while one call of `--chunk` bytes waits for data: the call
    /// must end (with the bytes it has, or 0) and the card stay stopped.
    pub stop_after_ms: Option<u64>,
    /// `--timeout`: give up after this many seconds.
    pub timeout: u64,
    /// `--until-gone`: the card goes away while the consumer reads (the test unplugs it):
    /// the run ends at the first ENODEV, and one more call must get ENODEV too.
    pub until_gone: bool,
    /// `--threads`: threads reading the one descriptor at once (`read` only).
    pub threads: usize,
}

impl ConsumeArgs {
    /// Reads `bytes` from `/dev/acq0` by `method`, every other setting at its default.
    pub fn new(method: ConsumeMethod, bytes: u64) -> ConsumeArgs {
        ConsumeArgs {
            method,
            bytes,
            device: "/dev/acq0".into(),
            chunk: 64 << 10,
            iovecs: 16,
            rate: 0,
            ring_log2: 8,
            block: None,
            pause_at: None,
            pause_ms: 0,
            out: "/tmp/acq-consume.out".into(),
            stop_after_ms: None,
            timeout: 300,
            until_gone: false,
            threads: 1,
        }
    }

    /// The usage text.
    pub fn usage() -> String {
        let names: Vec<&str> = ConsumeMethod::ALL.iter().map(|m| m.as_str()).collect();
        format!(
            "acq-consume --method {} --bytes N [--device /dev/acq0] [--chunk N] [--iovecs K] \
             [--rate R] [--ring-log2 L] [--block B] [--pause-at N --pause-ms MS] [--out FILE] \
             [--timeout S] [--stop-after-ms MS] [--until-gone] [--threads N]",
            names.join("|")
        )
    }

    /// The command line (without the program name) that [`ConsumeArgs::parse`] reads back
    /// into `self`. Settings at their default are left out.
    pub fn to_argv(&self) -> Vec<String> {
        let d = ConsumeArgs::new(self.method, 0);
        let mut v = Vec::new();
        push(&mut v, "--method", self.method.as_str());
        push(&mut v, "--bytes", self.bytes);
        for (flag, value, default) in [
            ("--device", &self.device, &d.device),
            ("--out", &self.out, &d.out),
        ] {
            if value != default {
                push(&mut v, flag, value);
            }
        }
        for (flag, value, default) in [
            ("--chunk", self.chunk, d.chunk),
            ("--iovecs", self.iovecs as u64, d.iovecs as u64),
            ("--rate", self.rate, d.rate),
            (
                "--ring-log2",
                u64::from(self.ring_log2),
                u64::from(d.ring_log2),
            ),
            ("--pause-ms", self.pause_ms, d.pause_ms),
            ("--timeout", self.timeout, d.timeout),
            ("--threads", self.threads as u64, d.threads as u64),
        ] {
            if value != default {
                push(&mut v, flag, value);
            }
        }
        for (flag, value) in [
            ("--block", self.block),
            ("--pause-at", self.pause_at),
            ("--stop-after-ms", self.stop_after_ms),
        ] {
            if let Some(x) = value {
                push(&mut v, flag, x);
            }
        }
        push_if(&mut v, "--until-gone", self.until_gone);
        v
    }

    /// Parses a command line (without the program name) and checks it.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<ConsumeArgs, ArgError> {
        let mut a = ConsumeArgs::new(ConsumeMethod::Read, 0);
        let mut method = None;
        let mut argv = Argv::new(args);
        let count = |v: u64, flag: &str| {
            usize::try_from(v).map_err(|_| ArgError::new(flag, format!("{v} is too large")))
        };
        while let Some(flag) = argv.next_flag() {
            let f = flag.as_str();
            match f {
                "--method" => method = Some(argv.with(f, ConsumeMethod::parse)?),
                "--bytes" => a.bytes = argv.size(f)?,
                "--device" => a.device = argv.value(f)?,
                "--chunk" => a.chunk = argv.size(f)?,
                "--iovecs" => a.iovecs = count(argv.size(f)?, f)?,
                "--rate" => a.rate = argv.size(f)?,
                "--ring-log2" => a.ring_log2 = argv.small(f)?,
                "--block" => a.block = Some(argv.size(f)?),
                "--pause-at" => a.pause_at = Some(argv.size(f)?),
                "--pause-ms" => a.pause_ms = argv.size(f)?,
                "--out" => a.out = argv.value(f)?,
                "--stop-after-ms" => a.stop_after_ms = Some(argv.size(f)?),
                "--timeout" => a.timeout = argv.size(f)?,
                "--until-gone" => a.until_gone = true,
                "--threads" => a.threads = count(argv.size(f)?, f)?,
                other => return Err(ArgError::line(format!("unknown argument {other:?}"))),
            }
        }
        a.method = method.ok_or_else(|| ArgError::new("--method", "is required"))?;
        a.check()?;
        Ok(a)
    }

    /// Checks the options against each other and against their limits.
    pub fn check(&self) -> Result<(), ArgError> {
        let no = |flag: &str, why: &str| Err(ArgError::new(flag, why.to_string()));
        if self.bytes == 0 {
            return no("--bytes", "N > 0 is required");
        }
        if !(8..=super::capture::CHUNK_MAX).contains(&self.chunk) {
            return no("--chunk", "must be 8 .. 1G");
        }
        if !(1..=IOVECS_MAX).contains(&self.iovecs) {
            return no("--iovecs", "must be 1 .. 1024 (UIO_MAXIOV)");
        }
        if !(1..=THREADS_MAX).contains(&self.threads) {
            return no("--threads", "must be 1 .. 16");
        }
        if self.threads > 1 && self.method != ConsumeMethod::Read {
            return no("--threads", "needs --method read");
        }
        if self.pause_at.is_some_and(|p| p >= self.bytes) {
            return no(
                "--pause-at",
                "must be less than --bytes (it would never happen)",
            );
        }
        if self.timeout == 0 {
            return no("--timeout", "must be more than 0");
        }
        Ok(())
    }
}

//! The command line: the system call to read with and the run's settings.

use super::*;
use clap::{Parser, ValueEnum};

/// The system call the stream is read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(super) enum Method {
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
pub(super) struct Args {
    #[arg(long, value_enum)]
    pub(super) method: Method,
    /// Bytes to consume (K, M, G suffixes).
    #[arg(long, value_parser = parse_size)]
    pub(super) bytes: u64,
    #[arg(long, default_value = "/dev/acq0")]
    pub(super) device: String,
    /// Bytes per call.
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    pub(super) chunk: u64,
    /// Buffers per readv().
    #[arg(long, default_value_t = 16)]
    pub(super) iovecs: usize,
    /// Card rate in bytes per second (0: as fast as the card can).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub(super) rate: u64,
    #[arg(long, default_value_t = 8)]
    pub(super) ring_log2: u32,
    /// Card block size (default: the driver's).
    #[arg(long, value_parser = parse_size)]
    pub(super) block: Option<u64>,
    /// Pause once the consumer reached this offset (the ring then overflows).
    #[arg(long, value_parser = parse_size)]
    pub(super) pause_at: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub(super) pause_ms: u64,
    /// The file sendfile-file writes (removed afterwards).
    #[arg(long, default_value = "/tmp/acq-consume.out")]
    pub(super) out: String,
    /// A second thread issues ACQ_IOC_STOP on the same descriptor after this many
    /// milliseconds, while one read() (or splice()) of `--chunk` bytes waits for data: the
    /// call must end (with the bytes it has, or 0) and the card stay stopped.
    #[arg(long)]
    pub(super) stop_after_ms: Option<u64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub(super) timeout: u64,
    /// The card goes away while the consumer reads (the test unplugs it): the run ends at
    /// the first ENODEV, and one more call must get ENODEV too (gone is for good).
    /// Reported as `enodev` and `enodev_again`.
    #[arg(long)]
    pub(super) until_gone: bool,
    /// Threads reading the one descriptor at once (`read` only; see threads.rs).
    #[arg(long, default_value_t = 1)]
    pub(super) threads: usize,
}

pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    acqdev::parse_size(s).ok_or_else(|| {
        format!("bad size {s:?} (a decimal or 0x hex number, optionally with K, M or G)")
    })
}

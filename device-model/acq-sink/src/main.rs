//! `acq-sink`: the capture disk, a virtio-blk device served over vhost-user that verifies
//! every written byte against the card's sample stream (docs/sink.md).
//!
//! The vhost-user socket is created last, once the disk is ready: its existence means
//! "ready to accept". SIGTERM (or SIGINT) removes both sockets and exits with status 0.

use std::path::PathBuf;

use acq_daemon::daemon::{self, clear_stale_socket, TermSignals};
use acq_sink::backend::SharedDisk;
use acq_sink::config::{parse_pattern, SinkConfig};
use acq_sink::control;
use acq_sink::disk::Disk;
use acq_sink::server::SinkServer;
use acq_wire::Size;
use anyhow::{Context, Result};
use clap::Parser;
use tracing::info;

/// The pcie-acq capture disk: a vhost-user-blk backend that checks every write against the
/// card's sample stream (stream offset = disk offset + base) and injects disk faults.
///
/// Attach it with `-chardev socket,id=sink0,path=PATH -device
/// vhost-user-blk-pci,chardev=sink0,num-queues=1` (guest RAM must be shared memory).
#[derive(Debug, Parser)]
#[command(name = "acq-sink", version)]
struct Cli {
    /// vhost-user socket to create (it appears once the disk is ready).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Control socket to create (JSON lines: counters, fault injection).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Settings (JSON object: size, block_size, pattern, seed, base, store, verify).
    /// Flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Disk size in bytes (K/M/G suffixes) [default: 64M].
    #[arg(long, value_name = "BYTES")]
    size: Option<String>,
    /// Logical block size: 512 or 4096 [default: 512].
    #[arg(long, value_name = "BYTES")]
    block_size: Option<String>,
    /// Stream the writes are checked against: counter, prbs, sine[:CH] or a PATTERN
    /// register value [default: counter].
    #[arg(long, value_name = "PATTERN")]
    pattern: Option<String>,
    /// The stream's seed [default: 0].
    #[arg(long, value_name = "S")]
    seed: Option<String>,
    /// Stream offset of disk offset 0 [default: 0].
    #[arg(long, value_name = "OFFSET")]
    base: Option<String>,
    /// Store the written data in this sparse file (reads then come from it).
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
    /// Do not check writes against the stream (only count and store them).
    #[arg(long)]
    no_verify: bool,
}

fn num(flag: &str, v: &Option<String>) -> Result<Option<u64>> {
    v.as_deref()
        .map(|s| {
            Size::parse(s)
                .map(|n| n.0)
                .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
        })
        .transpose()
}

fn settings(cli: &Cli) -> Result<SinkConfig> {
    let mut c = match &cli.config {
        Some(p) => SinkConfig::load(p).context("sink settings")?,
        None => SinkConfig::default(),
    };
    if let Some(v) = num("size", &cli.size)? {
        c.size = v;
    }
    if let Some(v) = num("block-size", &cli.block_size)? {
        c.block_size = u32::try_from(v).context("--block-size")?;
    }
    if let Some(p) = &cli.pattern {
        c.pattern = parse_pattern(p).map_err(|e| anyhow::anyhow!("--pattern: {e}"))?;
    }
    if let Some(v) = num("seed", &cli.seed)? {
        c.seed = v;
    }
    if let Some(v) = num("base", &cli.base)? {
        c.base = v;
    }
    if cli.store.is_some() {
        c.store = cli.store.clone();
    }
    if cli.no_verify {
        c.verify = false;
    }
    c.validate().context("sink settings")?;
    Ok(c)
}

fn main() {
    daemon::main("acq-sink", Cli::parse(), run);
}

fn run(cli: Cli) -> Result<()> {
    let cfg = settings(&cli)?;
    let signals = TermSignals::block();
    let disk = Disk::new(cfg.clone()).with_context(|| match &cfg.store {
        Some(p) => format!("creating the store file {}", p.display()),
        None => "creating the disk".into(),
    })?;
    let sink = SharedDisk::new(disk);
    info!(
        size = cfg.size,
        block_size = cfg.block_size,
        pattern = format_args!("{:#x}", cfg.pattern),
        seed = format_args!("{:#x}", cfg.seed),
        base = cfg.base,
        store = ?cfg.store,
        verify = cfg.verify,
        "disk ready"
    );

    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(path) = &cli.control {
        clear_stale_socket(path)?;
        control::spawn(path, sink.clone())
            .with_context(|| format!("creating {}", path.display()))?;
        files.push(path.clone());
        info!("control socket {}", path.display());
    }

    clear_stale_socket(&cli.socket)?;
    let server = SinkServer::bind(&cli.socket)?;
    files.push(cli.socket.clone());
    info!("vhost-user socket {} (ready)", cli.socket.display());

    let report = sink.clone();
    std::thread::Builder::new()
        .name("sink-signals".into())
        .spawn(move || {
            let sig = signals.wait();
            info!(signal = sig, counters = %report.report(), "terminating");
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            std::process::exit(0);
        })
        .context("starting the signal thread")?;

    server.serve(&sink)?;
    Ok(())
}

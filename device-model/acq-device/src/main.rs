//! `acq-device`: serves one pcie-acq card over vfio-user.
//!
//! The vfio-user socket is created last, once the card is ready: its existence means
//! "ready to accept". SIGTERM (or SIGINT) stops the engine, removes both sockets and exits
//! with status 0.

use std::path::PathBuf;
use std::sync::Arc;

use acq_daemon::daemon::{self, clear_stale_socket, TermSignals};
use acq_device::bench;
use acq_device::config::ModelConfig;
use acq_device::control::{ControlServer, ControlTarget};
use acq_device::device::Device;
use acq_device::transport::{PciFunction, VfioUserServer};
use acq_wire::Size;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing::info;

/// A virtual PCIe data-acquisition card (pcie-acq), served to QEMU over vfio-user.
///
/// Attach it with
/// `-device '{"driver":"vfio-user-pci","socket":{"path":"PATH","type":"unix"}}'`
/// (guest RAM must be a shared memfd: see docs/device.md).
#[derive(Debug, Parser)]
#[command(
    name = "acq-device",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// vfio-user socket to create (it appears once the card is ready).
    #[arg(long, value_name = "PATH", required = true)]
    socket: Option<PathBuf>,
    /// Control socket to create (JSON lines: counters, fault injection, reset).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Model settings (JSON). Flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    model: ModelFlags,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Model settings as flags (numbers: decimal, 0x hex, or with K/M/G).
#[derive(Debug, Args)]
struct ModelFlags {
    /// PCI vendor ID [default: 0x1234].
    #[arg(long, value_name = "ID")]
    vendor_id: Option<String>,
    /// PCI device ID [default: 0xAC01].
    #[arg(long, value_name = "ID")]
    device_id: Option<String>,
    /// PCI subsystem vendor ID [default: 0x1234].
    #[arg(long, value_name = "ID")]
    subsystem_vendor_id: Option<String>,
    /// PCI subsystem ID [default: 0x0001].
    #[arg(long, value_name = "ID")]
    subsystem_id: Option<String>,
    /// BAR2 size: power of two, 1M..1G [default: 1M].
    #[arg(long, value_name = "BYTES")]
    bar2_size: Option<String>,
    /// FIFO depth: multiple of 4K, 64K..64M [default: 1M].
    #[arg(long, value_name = "BYTES")]
    fifo_depth: Option<String>,
    /// MSI-X vectors: 4..256 [default: 4].
    #[arg(long, value_name = "N")]
    msix_vectors: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure the model's fill rate into guest RAM against memset and memcpy.
    Bench(bench::BenchArgs),
}

fn num<T: TryFrom<u64>>(flag: &str, v: &Option<String>, dst: &mut T) -> Result<()> {
    if let Some(s) = v {
        let n = Size::parse(s)
            .map(|n| n.0)
            .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
        *dst = T::try_from(n).map_err(|_| anyhow::anyhow!("--{flag}: {n} is out of range"))?;
    }
    Ok(())
}

fn model_config(cli: &Cli) -> Result<ModelConfig> {
    let mut c = match &cli.config {
        Some(p) => {
            ModelConfig::load(p).with_context(|| format!("model settings {}", p.display()))?
        }
        None => ModelConfig::default(),
    };
    let f = &cli.model;
    num("vendor-id", &f.vendor_id, &mut c.vendor_id)?;
    num("device-id", &f.device_id, &mut c.device_id)?;
    num(
        "subsystem-vendor-id",
        &f.subsystem_vendor_id,
        &mut c.subsystem_vendor_id,
    )?;
    num("subsystem-id", &f.subsystem_id, &mut c.subsystem_id)?;
    num("bar2-size", &f.bar2_size, &mut c.bar2_size)?;
    num("fifo-depth", &f.fifo_depth, &mut c.fifo_depth)?;
    num("msix-vectors", &f.msix_vectors, &mut c.msix_vectors)?;
    c.validate().context("model settings")?;
    Ok(c)
}

fn main() {
    daemon::main("acq-device", Cli::parse(), run);
}

fn run(cli: Cli) -> Result<()> {
    if let Some(Cmd::Bench(args)) = &cli.cmd {
        let report = bench::run(args).context("benchmark")?;
        println!("{report}");
        return Ok(());
    }
    let Some(socket) = cli.socket.clone() else {
        bail!("--socket is required");
    };
    let model = model_config(&cli)?;
    let signals = TermSignals::block();

    let device = Device::new(model.clone()).context("creating the card")?;
    info!(
        vendor = format_args!("{:#06x}", model.vendor_id),
        device = format_args!("{:#06x}", model.device_id),
        bar2_size = model.bar2_size,
        fifo_depth = model.fifo_depth,
        msix_vectors = model.msix_vectors,
        msi = model.msi,
        "card ready"
    );

    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(path) = &cli.control {
        clear_stale_socket(path)?;
        let server =
            ControlServer::bind(path).with_context(|| format!("creating {}", path.display()))?;
        files.push(path.clone());
        let target: Arc<dyn ControlTarget> = device.clone();
        server
            .spawn(target)
            .context("starting the control thread")?;
        info!("control socket {}", path.display());
    }

    clear_stale_socket(&socket)?;
    let server = VfioUserServer::bind(&socket, &device.layout())?;
    files.push(socket.clone());
    info!("vfio-user socket {} (ready)", socket.display());

    let dev = Arc::clone(&device);
    std::thread::Builder::new()
        .name("acq-signals".into())
        .spawn(move || {
            let sig = signals.wait();
            info!(signal = sig, "terminating");
            dev.shutdown();
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            std::process::exit(0);
        })
        .context("starting the signal thread")?;

    let function: Arc<dyn PciFunction> = device;
    server.serve(&function)
}

//! The pcie-acq device model: a PCIe data-acquisition card emulated in its own process and
//! served to QEMU over vfio-user (docs/device.md is the specification).
//!
//! Layers, from the wire inwards:
//! - [`vfio`]: the vfio-user message layer (whole messages, parsed without I/O, and the
//!   framed socket with its deadlines); [`transport`]: the server that turns each request
//!   into a call of the PCI function;
//! - [`device`]: the PCI function: [`config_space`], BAR0 ([`bar0`]: the register file), BAR2, DMA maps
//!   ([`dma`], whose files [`mapfile`] checks) and interrupt lines ([`irq`]);
//! - [`channel`]: the ring protocol both DMA channels speak, once: one engine thread per
//!   channel, descriptors, completions, doorbells, moderation, halts; [`capture`] (fed by
//!   the [`source`] and its FIFO, writing [`pattern`] data into host memory) and
//!   [`playback`] (reading, verifying and playing out host data) add only their transfer;
//! - [`faults`]: the fault plan every failure site consults;
//! - [`control`]: the model's JSON-lines control socket;
//! - [`regs`]: the hardware contract shared with the kernel driver (crate `acq-hw`);
//! - [`pattern`] and [`jsonl`]: the sample stream at memory speed and the control sockets'
//!   framing, from the crate both host servers share (`acq-daemon`).

pub mod bar0;
pub mod bench;
pub mod capture;
pub mod channel;
pub mod config;
pub mod config_space;
pub mod control;
pub mod device;
pub mod dma;
pub mod faults;
pub mod irq;
pub mod mapfile;
/// The sample stream and the JSON-lines framing, shared with the capture disk (`acq-sink`).
pub use acq_daemon::{jsonl, pattern};
pub mod memfd;
pub mod playback;
/// The hardware contract (the `acq-hw` crate), re-exported so that `crate::regs` reads the
/// same here as in the kernel module, which includes the file by path.
pub use acq_hw::regs;
pub mod shared;
pub mod source;
pub mod transport;
pub mod vfio;

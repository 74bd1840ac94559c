//! The pcie-acq device model: a PCIe data-acquisition card emulated in its own process and
//! served to QEMU over vfio-user (docs/device.md is the specification).
//!
//! Layers, from the wire inwards:
//! - [`vfio`]: the vfio-user message layer (whole messages, parsed without I/O, and the
//!   framed socket with its deadlines); [`transport`]: the server that turns each request
//!   into a call of the PCI function;
//! - [`device`]: the PCI function: [`config_space`], BAR0 ([`card`]), BAR2, DMA maps
//!   ([`dma`], whose files [`mapfile`] checks) and interrupt lines ([`irq`]);
//! - [`engine`]: the capture DMA engine thread, fed by the [`source`] and its FIFO, writing
//!   [`pattern`] data into host memory;
//! - [`faults`]: the fault plan every failure site consults;
//! - [`control`]: the model's JSON-lines control socket;
//! - [`jsonl`]: the JSON-lines socket framing both control sockets share;
//! - [`regs`]: the hardware contract shared with the kernel driver (crate `acq-hw`);
//! - [`daemon`]: what the card's and the capture disk's (`acq-sink`) mains share.

pub mod bench;
pub mod card;
pub mod config;
pub mod config_space;
pub mod control;
pub mod daemon;
pub mod device;
pub mod dma;
pub mod engine;
pub mod faults;
pub mod irq;
pub mod jsonl;
pub mod mapfile;
pub mod memfd;
pub mod pattern;
pub mod playback;
/// The hardware contract (the `acq-hw` crate), re-exported so that `crate::regs` reads the
/// same here as in the kernel module, which includes the file by path.
pub use acq_hw::regs;
pub mod shared;
pub mod source;
pub mod transport;
pub mod vfio;

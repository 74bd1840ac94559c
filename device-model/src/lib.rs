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
//! - [`regs`]: the hardware contract shared with the kernel driver;
//! - [`sink`]: `acq-sink`, the capture disk (a vhost-user-blk backend, docs/sink.md).

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
pub mod regs;
pub mod shared;
pub mod sink;
pub mod source;
pub mod transport;
pub mod vfio;

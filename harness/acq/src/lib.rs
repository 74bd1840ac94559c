//! The pcie-acq harness: everything the `acq` CLI does, as a library the end-to-end tests
//! use too.
//!
//! - [`paths`]: where the toolroot, guest kernel and guest binaries are.
//! - [`accel`]: KVM where it really works, TCG otherwise.
//! - [`initramfs`]: the guest image, a cpio archive built from `qemu/initramfs.list`.
//! - [`file_id`]: which version of a file a path names, for the work done once on it.
//! - [`vm`]: boots QEMU, talks to the guest agent ([`agent`]), tears everything down.
//! - [`process`]: child processes that are always reaped; [`signals`]: Ctrl-C.
//! - [`scenario`]: scenario files and their runner; [`mutants`]: the suite's power,
//!   measured with planted driver bugs.

pub mod accel;
pub mod agent;
pub mod bench;
pub mod control;
pub mod devices;
pub mod disks;
pub mod dmesg;
pub mod explore;
pub mod file_id;
pub mod handover;
pub mod initramfs;
pub mod mutants;
pub mod paths;
pub mod process;
pub mod scenario;
pub mod signals;
pub mod snapshot;
pub mod soak;
pub mod tsc;
pub mod vm;

//! The pcie-acq card's hardware contract as a crate, for the device model, the capture disk,
//! the guest tools and the harness.
//!
//! The contract itself is one file, [`regs`] (`src/regs.rs`), with no dependencies: the
//! kernel module includes that file by path (`#[path]`), so model, driver and tools compile
//! the same source. Nothing else belongs in this crate.
#![no_std]

pub mod regs;

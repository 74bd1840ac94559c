//! The formats the harness, the guest tools and the device model share, defined once.
//! No dependencies, `no_std`: every crate of the project can use it, the guest's static
//! tools included.

#![no_std]

pub mod size;

pub use size::{parse_size, SizeError};

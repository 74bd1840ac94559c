//! The formats the harness, the guest tools and the device model share, defined once: the
//! size grammar, the pattern vocabulary, the fault catalogue, the control sockets'
//! counters and the agent protocol. `no_std` (with `alloc` for error messages): every
//! crate of the project can use it, the guest's static tools included. The `schema`
//! feature derives JSON Schemas (for the scenario format's).

#![no_std]

extern crate alloc;

pub mod agent;
pub mod consumer;
pub mod counters;
pub mod faults;
pub mod pattern;
pub mod size;

pub use pattern::{parse_pattern, Pattern, PatternError};
pub use size::{parse_size, Size, SizeError};

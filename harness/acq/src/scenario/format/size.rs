//! Byte counts as scenario files write them: a number or a string with a binary suffix
//! (`acq_wire::Size`, the project's one size grammar), and patterns as they name them
//! (`acq_wire::Pattern`, the one pattern vocabulary: `counter`, `prbs`, `sine`, `sine:4`).

pub use acq_wire::{Pattern, Size};

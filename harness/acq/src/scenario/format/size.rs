//! Byte counts as scenario files write them: a number or a string with a binary suffix
//! (`acq_wire::Size`, the project's one size grammar).

pub use acq_wire::Size;

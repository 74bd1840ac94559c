//! Scenarios: files that describe a VM, its cards, a workload, a fault timeline and
//! expectations ([`format`]), and the runner that carries them out.

pub mod control;
pub mod format;

pub use format::{load, parse, LoadError, Scenario};
pub mod report;
pub mod run;
pub mod share;
pub mod signal;

//! Scenarios: files that describe a VM, its cards, a workload, a fault timeline and
//! expectations ([`format`]), and the runner that carries them out.

pub mod format;

pub use format::{load, parse, LoadError, Scenario};
pub mod report;
pub mod run;

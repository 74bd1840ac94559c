//! The command line: `acq_wire::consumer::ConsumeArgs`, the type the harness builds it
//! from (`acq soak`, `acq explore`), parsed and checked with the same rules.

pub(super) use acq_wire::consumer::{ConsumeArgs as Args, ConsumeMethod as Method};

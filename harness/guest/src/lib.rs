//! Guest-side pieces of pcie-acq that the host harness shares: the agent's wire protocol.
//!
//! The binaries in `src/bin/` run inside the VM as static executables.

pub mod proto;

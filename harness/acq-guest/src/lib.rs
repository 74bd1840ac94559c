//! The guest tools' library: what the stream tools (`src/bin/`, static executables that
//! run inside the VM) share: the driver's user API, the device files, the consumers and
//! writers, the helper processes. The host harness does not depend on it: what host and
//! guest agree on is in `acq-wire` (the agent protocol, sizes, faults) and `acq-hw`.

/// The card's hardware contract (register map, pattern generators): the `acq-hw` crate,
/// whose one file the kernel driver includes by path.
pub use acq_hw::regs;

/// The driver's user API (ioctl numbers and structures), shared by path with the driver.
#[path = "../../../driver/uapi.rs"]
pub mod uapi;

pub mod acqdev;
/// `acq-stream --control`: STOP, START, RESET, SET_CONFIG and a second open() from a second
/// process sharing the consumer's file.
pub mod controller;
/// A helper process forked beside the consumer, with a pipe, and its reaping.
pub mod forked;
/// A read-only shared mapping (a ring, a BAR), every access bounds-checked.
pub mod mapping;
/// A pipe and splice(), for every consumer and the producer.
pub mod pipe;
/// The JSON result line and exit status of the stream tools.
pub mod result;
/// `acq-stream --signal`: a signal for the consumer at a time or byte offset, from outside.
pub mod signaler;
/// acq-stream's sink writes: positions, error policy, byte-exact account.
pub mod sinkio;

/// `acq-ctl slow-read|slow-write|slow-read-unbind`: nothing waits for a user copy.
pub mod slowcopy;
/// userfaultfd buffers: a user copy that waits as long as a test likes.
pub mod uffd;

/// A small userspace VFIO layer (acq-vfio, docs/vfio.md).
pub mod vfio;

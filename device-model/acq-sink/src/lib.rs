//! `acq-sink`: the capture disk. A virtio-blk device served over vhost-user (the
//! `vhost-user-backend` crate) that checks every written byte against the card's sample
//! stream on the host, and fails on cue (docs/sink.md).
//!
//! Layers, from the wire inwards:
//! - [`server`]: the vhost-user listener, one connection at a time, a fresh device each;
//! - [`backend`]: virtio-blk requests on guest memory, fault decisions, counters;
//! - [`disk`]: verification against the stream, written extents, the store file;
//! - [`faults`]: the fault plan; [`extents`]: the interval set behind holes;
//! - [`control`]: the JSON-lines control socket; [`config`]: settings.

pub mod backend;
pub mod config;
pub mod control;
pub mod disk;
pub mod extents;
pub mod faults;
pub mod server;

//! What the project's two host servers, the card (`acq-device`) and the capture disk
//! (`acq-sink`), are both made of, so that neither depends on the other:
//!
//! - [`pattern`]: the card's sample stream (`acq_hw::regs::pattern_word`) generated and
//!   checked at memory speed: the card writes it into guest memory, the disk verifies
//!   every written byte against it;
//! - [`jsonl`]: the JSON-lines framing of both control sockets;
//! - [`daemon`]: a server as a process: logging, a stale socket file, SIGTERM/SIGINT, and
//!   the `main` both binaries share.

pub mod daemon;
pub mod jsonl;
pub mod pattern;

//! The vfio-user message layer we own: [`wire`] parses and builds whole messages (pure,
//! fuzzable), [`conn`] reads and writes them on a socket with their file descriptors
//! and deadlines. The server that uses them is [`crate::transport`].

pub mod conn;
pub mod wire;

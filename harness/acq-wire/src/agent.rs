//! The agent protocol: JSON lines over a virtio-serial port.
//!
//! The host sends [`Request`]s, one JSON object per line; the agent answers with
//! [`Event`]s. Output of a command arrives as it is produced ([`Event::Output`]), so the
//! host can show progress of a long stream, and ends with one [`Event::Exit`].

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// Name of the virtio-serial port the agent listens on (`-device virtserialport,name=...`).
pub const PORT_NAME: &str = "org.pcie-acq.agent";

/// A request from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Run `argv` (no shell) and report its output and exit status.
    Exec {
        /// Chosen by the host; echoed in every event about this command.
        id: u64,
        /// Program and arguments; `argv[0]` is looked up in `PATH`.
        argv: Vec<String>,
        /// The agent kills the command (SIGKILL) after this many milliseconds.
        timeout_ms: u64,
    },
    /// Write a file into the guest (a kernel module or a tool for a guest restored from a
    /// snapshot, whose image was built without them). Answered by [`Event::Written`].
    Put {
        /// Chosen by the host; echoed in the answer.
        id: u64,
        /// Absolute guest path; missing parent directories are created.
        path: String,
        /// Permission bits of the new file.
        mode: u32,
        /// The contents, hex-encoded ([`to_hex`]): JSON strings carry no raw bytes.
        hex: String,
    },
    /// Flush file systems and power the guest off.
    Shutdown {
        /// Echoed in the acknowledgement.
        id: u64,
    },
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// An event from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The agent is up and listening; sent once, first.
    Ready {
        /// `uname -r` of the guest kernel.
        kernel: String,
        /// Guest uptime when the agent became ready, in milliseconds.
        uptime_ms: u64,
    },
    /// A chunk of a command's output (lossily decoded as UTF-8).
    Output {
        /// The request's id.
        id: u64,
        /// Which stream.
        stream: Stream,
        /// The bytes, as text.
        data: String,
    },
    /// The command ended. Exactly one per `Exec`, after all its `Output` events.
    Exit {
        /// The request's id.
        id: u64,
        /// Exit code, or `128 + signal` when killed by a signal (as a shell reports it).
        status: i32,
        /// Set when the agent killed the command for exceeding its timeout.
        timed_out: bool,
        /// Wall-clock run time in milliseconds.
        elapsed_ms: u64,
    },
    /// The request could not be carried out (malformed line, program not found, ...).
    Error {
        /// The request's id, when the line was parsed far enough to have one.
        id: Option<u64>,
        /// What went wrong.
        message: String,
    },
    /// A `Put` file is in place (written whole, then renamed over the path).
    Written {
        /// The request's id.
        id: u64,
        /// Bytes written.
        bytes: u64,
    },
    /// Acknowledges `Shutdown`; the guest powers off right after.
    ShuttingDown {
        /// The request's id.
        id: u64,
    },
}

/// Lower-case hex of `bytes`, two digits a byte (the encoding of [`Request::Put`]).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The bytes of [`to_hex`]'s output (either case), or what is wrong with `hex`.
pub fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(alloc::format!(
            "odd number of hex digits ({})",
            digits.len()
        ));
    }
    let value = |at: usize| {
        let c = digits[at];
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| alloc::format!("not a hex digit at offset {at}: {:?}", c as char))
    };
    (0..digits.len() / 2)
        .map(|i| Ok(value(2 * i)? << 4 | value(2 * i + 1)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn request_round_trips_and_rejects_unknown_fields() {
        let r = Request::Exec {
            id: 7,
            argv: vec!["uname".into(), "-r".into()],
            timeout_ms: 1000,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        let bad = r#"{"op":"exec","id":1,"argv":[],"timeout_ms":1,"shell":true}"#;
        let err = serde_json::from_str::<Request>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `shell`"), "{err}");
    }

    #[test]
    fn hex_round_trips_and_names_a_bad_digit() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
        assert_eq!(from_hex("00FFa5").unwrap(), vec![0, 255, 0xa5]);
        assert_eq!(from_hex("abc").unwrap_err(), "odd number of hex digits (3)");
        assert_eq!(
            from_hex("0g").unwrap_err(),
            "not a hex digit at offset 1: 'g'"
        );
    }

    #[test]
    fn event_tags_are_stable() {
        let e = Event::Exit {
            id: 1,
            status: 0,
            timed_out: false,
            elapsed_ms: 5,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["ev"], "exit");
        assert_eq!(v["status"], 0);
    }
}

// SPDX-License-Identifier: GPL-2.0

//! A rate limit for kernel-log messages a misbehaving card can cause once per block (the
//! C side's `dev_warn_ratelimited`; Rust-for-Linux 7.3 has no rate-limited print). A card
//! that lies on every completion must not flood the log, and the console with it, while
//! the driver goes on serving the stream.

use super::*;

/// Messages printed per period at most.
const BURST: u32 = 10;
/// The period, in milliseconds.
const PERIOD_MS: i64 = 5000;

/// One message's limit, kept under the lock of the state it belongs to.
pub(crate) struct LogLimit {
    /// Start of the current period (None: no message yet).
    start: Option<Instant<Monotonic>>,
    /// Messages printed in the current period.
    printed: u32,
    /// Messages not printed since the last one that was.
    suppressed: u32,
}

impl LogLimit {
    pub(crate) const fn new() -> Self {
        Self {
            start: None,
            printed: 0,
            suppressed: 0,
        }
    }

    /// Whether one more message may be printed now: `Some(n)` with the number suppressed
    /// since the last one printed (to be said with it), `None` (counted) if not.
    pub(crate) fn admit(&mut self) -> Option<Suppressed> {
        let now = Instant::<Monotonic>::now();
        let new_period = match self.start {
            None => true,
            Some(s) => (now - s).as_millis() >= PERIOD_MS,
        };
        if new_period {
            self.start = Some(now);
            self.printed = 0;
        }
        if self.printed < BURST {
            self.printed += 1;
            Some(Suppressed(core::mem::take(&mut self.suppressed)))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

/// How many messages like this one were not printed: `Display`s as nothing for none, else
/// as a short note to append to the message.
pub(crate) struct Suppressed(u32);

// The kernel's own `Display` (7.3's `pr_*!` format through `kernel::fmt`).
impl kernel::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more like it not logged)"),
        }
    }
}

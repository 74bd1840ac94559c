//! The data's own account: the COUNTER words give every byte's stream offset, so gaps are
//! seen without the driver, and each must match one EPIPE at its offset.

use super::*;

/// Follows the COUNTER words of the consumed bytes (seed 0: word value = stream offset / 8).
#[derive(Default)]
pub(super) struct Scanner {
    /// Consumer offset of the next byte.
    pub(super) pos: u64,
    /// Bytes of an unfinished word.
    pub(super) part: Vec<u8>,
    /// Value the next word should have.
    pub(super) expect: u64,
    /// Consumer offsets where a gap starts, and bytes lost in each.
    pub(super) gaps: Vec<u64>,
    pub(super) lost: u64,
    /// Words that went backwards or repeated: corruption, never a gap.
    pub(super) backwards: u64,
    pub(super) first_backwards: Option<u64>,
}

impl Scanner {
    pub(super) fn feed(&mut self, mut data: &[u8]) {
        // Finish a word split across two calls first.
        if !self.part.is_empty() {
            let take = (8 - self.part.len()).min(data.len());
            self.part.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.part.len() < 8 {
                return;
            }
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.part);
            self.part.clear();
            self.word(u64::from_le_bytes(w));
        }
        let words = data.chunks_exact(8);
        let rest = words.remainder();
        for w in words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        self.part.extend_from_slice(rest);
    }

    /// The next whole word, at consumer offset `pos`.
    pub(super) fn word(&mut self, v: u64) {
        let at = self.pos;
        self.pos += 8;
        if v != self.expect {
            if v > self.expect {
                self.gaps.push(at);
                self.lost += (v - self.expect) * 8;
            } else {
                self.backwards += 1;
                self.first_backwards.get_or_insert(at);
            }
        }
        self.expect = v.wrapping_add(1);
    }

    /// Consumer offset including an unfinished word.
    pub(super) fn offset(&self) -> u64 {
        self.pos + self.part.len() as u64
    }
}

/// What the consumer saw.
#[derive(Default)]
pub(super) struct Account {
    pub(super) scan: Scanner,
    pub(super) calls: u64,
    pub(super) epipe_at: Vec<u64>,
    pub(super) eio: u64,
    /// EIOs after which the stream went on in a new session (a reset card).
    pub(super) restarts: u64,
    pub(super) eintr: u64,
    /// `--until-gone`: ENODEV ends the run instead of failing it.
    pub(super) until_gone: bool,
    /// ENODEV seen (`--until-gone`: the run ends at the first).
    pub(super) enodev: u64,
    pub(super) other: Vec<String>,
}

impl Account {
    /// One call's result: bytes (already fed to the scanner) or an errno.
    pub(super) fn result(&mut self, r: io::Result<usize>) -> Result<(), String> {
        self.calls += 1;
        match r {
            Ok(0) => Err("end of file from a device that never ends".into()),
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EPIPE) => {
                    self.epipe_at.push(self.scan.offset());
                    Ok(())
                }
                Some(libc::EIO) => {
                    self.eio += 1;
                    Ok(())
                }
                Some(libc::EINTR) | Some(libc::EAGAIN) => {
                    self.eintr += 1;
                    Ok(())
                }
                Some(libc::ENODEV) if self.until_gone => {
                    self.enodev += 1;
                    Ok(())
                }
                _ => {
                    self.other
                        .push(acqdev::errno_name(e.raw_os_error().unwrap_or(0)));
                    Err(format!("unexpected error {e}"))
                }
            },
        }
    }
}

pub(super) fn errno() -> io::Error {
    io::Error::last_os_error()
}

pub(super) fn check(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

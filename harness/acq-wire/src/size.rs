//! The size grammar, the one every command line, scenario file and card configuration of
//! the project takes: a decimal or `0x` hexadecimal number, optionally followed by `K`,
//! `M` or `G` (binary multiples, either case), with surrounding white space ignored.
//! `4096`, `0x1000`, `4K`, `0x1M` and `2g` are sizes; `1.5M`, `4KB`, `-1` and `` are not.

use core::fmt;

/// Why a text is not a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeError {
    /// Not a number in the grammar.
    Malformed,
    /// A size, but more than `u64::MAX` bytes.
    TooLarge,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SizeError::Malformed => {
                "not a size (a decimal or 0x hex number, optionally with K, M or G)"
            }
            SizeError::TooLarge => "too large (more than 2^64 - 1 bytes)",
        })
    }
}

/// The pattern a size written as text matches (for JSON Schemas).
pub const SIZE_PATTERN: &str = r"^\s*(0[xX][0-9a-fA-F]+|[0-9]+)[KMGkmg]?\s*$";

/// Parses a size (see the module's grammar).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let (digits, shift) = match t.as_bytes().last() {
        Some(b'K' | b'k') => (&t[..t.len() - 1], 10),
        Some(b'M' | b'm') => (&t[..t.len() - 1], 20),
        Some(b'G' | b'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let (radix, body) = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => (16, hex),
        None => (10, digits),
    };
    // from_str_radix takes a leading sign; a size has none.
    if body.is_empty() || !body.bytes().all(|b| (b as char).is_digit(radix)) {
        return Err(SizeError::Malformed);
    }
    let n = u64::from_str_radix(body, radix).map_err(|_| SizeError::TooLarge)?;
    n.checked_mul(1 << shift).ok_or(SizeError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar() {
        for (text, want) in [
            ("4096", 4096),
            ("0x1000", 4096),
            ("0X1000", 4096),
            ("4K", 4096),
            ("4k", 4096),
            ("256M", 256 << 20),
            ("0x1M", 1 << 20),
            ("2g", 2 << 30),
            (" 64K ", 64 << 10),
            ("0", 0),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for text in [
            "", "K", "0x", "0xK", "1.5M", "4KB", "-1", "+1", "0x-1", "1 K", "x", "0b1",
        ] {
            assert_eq!(parse_size(text), Err(SizeError::Malformed), "{text:?}");
        }
        assert_eq!(parse_size("18446744073709551616"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("17179869184G"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("17179869183G"), Ok(17179869183 << 30));
    }
}

//! The size grammar, the one every command line, scenario file and card configuration of
//! the project takes: a decimal or `0x` hexadecimal number, optionally followed by `K`,
//! `M` or `G` (binary multiples, either case), with surrounding white space ignored.
//! `4096`, `0x1000`, `4K`, `0x1M` and `2g` are sizes; `1.5M`, `4KB`, `-1` and `` are not.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

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

/// A byte count as a scenario file or a request writes it: a number, or a string in the
/// size grammar (`"64K"`, `"256M"`, `"0x1000"`). Written back as the shortest text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(with = "SizeSchema")
)]
pub struct Size(pub u64);

#[cfg(feature = "schema")]
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SizeSchema {
    Bytes(u64),
    /// A decimal or 0x hex number with an optional K, M or G suffix (powers of 1024):
    /// the project's one size grammar (`acq_wire::size`).
    Text(#[schemars(regex(pattern = SIZE_PATTERN))] String),
}

impl Size {
    /// Parses `"256M"`-style text; the error quotes the text.
    pub fn parse(text: &str) -> Result<Size, String> {
        parse_size(text)
            .map(Size)
            .map_err(|e| format!("`{text}` is {e}"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v >= 1 << 30 && v.is_multiple_of(1 << 30) {
            write!(f, "{}G", v >> 30)
        } else if v >= 1 << 20 && v.is_multiple_of(1 << 20) {
            write!(f, "{}M", v >> 20)
        } else if v >= 1 << 10 && v.is_multiple_of(1 << 10) {
            write!(f, "{}K", v >> 10)
        } else {
            write!(f, "{v}")
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a byte count: a number, or a string like \"64K\", \"256M\", \"0x1000\"",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
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

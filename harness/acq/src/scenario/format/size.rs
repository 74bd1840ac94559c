//! Byte counts as scenario files write them: a number or a string with a binary suffix.

use super::*;

/// A byte count: a number, or a string with a binary suffix (`"64K"`, `"256M"`, `"1G"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[schemars(with = "SizeSchema")]
pub struct Size(pub u64);

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SizeSchema {
    Bytes(u64),
    /// A decimal or 0x hex number with an optional K, M or G suffix (powers of 1024):
    /// the project's one size grammar (`acq_wire::size`).
    Text(#[schemars(regex(pattern = acq_wire::size::SIZE_PATTERN))] String),
}

impl Size {
    /// Parses `"256M"`-style text (the grammar of `acq_wire::size`).
    pub fn parse(text: &str) -> Result<Size, String> {
        acq_wire::parse_size(text)
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

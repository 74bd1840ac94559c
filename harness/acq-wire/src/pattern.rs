//! The pattern vocabulary: how every command line, scenario file and configuration names
//! the card's sample patterns (docs/device.md, "Sample patterns"). `sine` is one channel
//! wherever it is written; `sine:4` is four.

use core::fmt;

#[cfg(feature = "schema")]
use alloc::string::ToString;

use acq_hw::regs::pattern;

use crate::size::parse_size;

/// What the grammar accepts, for error messages and usage texts.
pub const PATTERNS: &str =
    "counter, prbs, sine, sine:CHANNELS (1..=16) or a PATTERN register value";

/// Why a text is not a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// Not a name, nor a number.
    Unknown,
    /// `sine:` with a channel count outside 1..=16.
    SineChannels,
    /// A number that is not a PATTERN value the card implements.
    Invalid,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::Unknown => write!(f, "not a pattern ({PATTERNS})"),
            PatternError::SineChannels => {
                f.write_str("a sine whose channel count is not in 1..=16")
            }
            PatternError::Invalid => {
                f.write_str("not a PATTERN register value the card implements")
            }
        }
    }
}

/// Parses a pattern (case and surrounding white space ignored) into its PATTERN register
/// value: `counter`, `prbs`, `sine` (one channel), `sine:CH`, or a number in the size
/// grammar that is a valid PATTERN value.
pub fn parse_pattern(text: &str) -> Result<u32, PatternError> {
    let t = text.trim();
    let named = |name: &str| t.eq_ignore_ascii_case(name);
    let p = if named("counter") {
        pattern::make(pattern::COUNTER, 1)
    } else if named("prbs") {
        pattern::make(pattern::PRBS, 1)
    } else if named("sine") {
        pattern::make(pattern::SINE, 1)
    } else if let Some(ch) = t
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("sine:"))
        .map(|_| &t[5..])
    {
        let ch: u32 = ch.parse().map_err(|_| PatternError::SineChannels)?;
        if !(1..=pattern::SINE_CHANNELS_MAX).contains(&ch) {
            return Err(PatternError::SineChannels);
        }
        pattern::make(pattern::SINE, ch)
    } else {
        let v = parse_size(t).map_err(|_| PatternError::Unknown)?;
        u32::try_from(v).map_err(|_| PatternError::Invalid)?
    };
    if !pattern::valid(p) || p & !pattern::REG_MASK != 0 {
        return Err(PatternError::Invalid);
    }
    Ok(p)
}

/// A pattern as a scenario file or a configuration writes it: its PATTERN register value,
/// read from a name of the pattern vocabulary or a number, written back as its name
/// (`counter`, `prbs`, `sine`, `sine:4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(with = "PatternSchema")
)]
pub struct Pattern(pub u32);

#[cfg(feature = "schema")]
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum PatternSchema {
    /// A PATTERN register value the card implements.
    Value(u32),
    /// `counter` (64-bit counter words), `prbs` (seekable PRBS-31), `sine` (one 16-bit
    /// sine channel), `sine:CHANNELS` (1 to 16 interleaved channels), or a PATTERN value in
    /// the size grammar (`0x402`).
    Name(#[schemars(regex(pattern = PATTERN_PATTERN))] alloc::string::String),
}

/// The text forms [`Pattern`] takes, as a JSON Schema pattern (case ignored by the parser;
/// the schema lists the lower-case names).
pub const PATTERN_PATTERN: &str =
    r"^\s*(counter|prbs|sine|sine:([1-9]|1[0-6])|(0[xX][0-9a-fA-F]+|[0-9]+)[KMGkmg]?)\s*$";

impl Pattern {
    /// Counter words (the card's reset value).
    pub const COUNTER: Pattern = Pattern(pattern::make(pattern::COUNTER, 1));
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        match (pattern::id(p), pattern::channels(p)) {
            (pattern::COUNTER, 1) => f.write_str("counter"),
            (pattern::PRBS, 1) => f.write_str("prbs"),
            (pattern::SINE, 1) => f.write_str("sine"),
            (pattern::SINE, ch) => write!(f, "sine:{ch}"),
            _ => write!(f, "{p:#x}"),
        }
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Error};
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Pattern;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a pattern: {PATTERNS}")
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Pattern, E> {
                let p = u32::try_from(v)
                    .ok()
                    .filter(|&p| pattern::valid(p) && p & !pattern::REG_MASK == 0)
                    .ok_or_else(|| E::custom(format_args!("{v}: {}", PatternError::Invalid)))?;
                Ok(Pattern(p))
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Pattern, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format_args!("{v}: {}", PatternError::Invalid)))?;
                self.visit_u64(v)
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Pattern, E> {
                parse_pattern(v)
                    .map(Pattern)
                    .map_err(|e| E::custom(format_args!("{v:?}: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vocabulary() {
        assert_eq!(parse_pattern("counter"), Ok(pattern::COUNTER));
        assert_eq!(parse_pattern(" PRBS "), Ok(pattern::PRBS));
        assert_eq!(parse_pattern("sine"), Ok(pattern::make(pattern::SINE, 1)));
        assert_eq!(parse_pattern("sine:4"), Ok(pattern::SINE | (3 << 8)));
        assert_eq!(
            parse_pattern("Sine:16"),
            Ok(pattern::make(pattern::SINE, 16))
        );
        assert_eq!(parse_pattern("2"), Ok(pattern::SINE));
        assert_eq!(parse_pattern("0x302"), Ok(pattern::make(pattern::SINE, 4)));
        assert_eq!(parse_pattern("sine:0"), Err(PatternError::SineChannels));
        assert_eq!(parse_pattern("sine:17"), Err(PatternError::SineChannels));
        assert_eq!(parse_pattern("sine:x"), Err(PatternError::SineChannels));
        assert_eq!(parse_pattern("square"), Err(PatternError::Unknown));
        assert_eq!(parse_pattern("7"), Err(PatternError::Invalid));
        assert_eq!(parse_pattern("0x10000"), Err(PatternError::Invalid));
    }
}

//! The pattern vocabulary: how every command line, scenario file and configuration names
//! the card's sample patterns (docs/device.md, "Sample patterns"). `sine` is one channel
//! wherever it is written; `sine:4` is four.

use core::fmt;

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

//! One way to walk a command line, for every guest tool: a flag, then its value in the
//! project's grammars (sizes, patterns, seconds), each error naming the flag.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::size::parse_size;

/// A command line that a tool refused: the flag at fault (empty when the line as a whole
/// is wrong) and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// The flag, as written on the command line (`--read-size`), or empty.
    pub flag: String,
    /// Why.
    pub why: String,
}

impl ArgError {
    /// An error of `flag`.
    pub fn new(flag: &str, why: impl Into<String>) -> ArgError {
        ArgError {
            flag: flag.to_string(),
            why: why.into(),
        }
    }

    /// An error of the whole line.
    pub fn line(why: impl Into<String>) -> ArgError {
        ArgError::new("", why)
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flag.is_empty() {
            f.write_str(&self.why)
        } else {
            write!(f, "{}: {}", self.flag, self.why)
        }
    }
}

/// Whether the command line asks for help: `-h` or `--help` as any argument, a flag's value
/// included (no tool takes a value that could be either). The tool then prints its usage
/// on stdout and exits 0, as a user of standard tools expects, instead of refusing the
/// line. The parsers never see it.
pub fn asks_for_help<S: AsRef<str>>(args: &[S]) -> bool {
    args.iter().any(|a| matches!(a.as_ref(), "-h" | "--help"))
}

/// The arguments after the program name, walked flag by flag.
pub struct Argv {
    args: alloc::vec::IntoIter<String>,
}

impl Argv {
    /// The arguments (without the program name). `--flag=value` is taken as `--flag value`,
    /// as the GNU tools and clap take it.
    pub fn new(args: impl IntoIterator<Item = String>) -> Argv {
        let mut split = Vec::new();
        for a in args {
            match a.strip_prefix("--").and_then(|f| f.split_once('=')) {
                Some((flag, value)) if !flag.is_empty() => {
                    split.push(format!("--{flag}"));
                    split.push(value.to_string());
                }
                _ => split.push(a),
            }
        }
        Argv {
            args: split.into_iter(),
        }
    }

    /// The next flag, or `None` at the end.
    pub fn next_flag(&mut self) -> Option<String> {
        self.args.next()
    }

    /// The value after `flag`.
    pub fn value(&mut self, flag: &str) -> Result<String, ArgError> {
        self.args
            .next()
            .ok_or_else(|| ArgError::new(flag, "needs a value"))
    }

    /// The value after `flag`, converted by `parse` (whose error says why).
    pub fn with<T>(
        &mut self,
        flag: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ArgError> {
        let v = self.value(flag)?;
        parse(&v).map_err(|why| ArgError::new(flag, why))
    }

    /// A number in the size grammar (`4096`, `0x1000`, `4K`, `1M`).
    pub fn size(&mut self, flag: &str) -> Result<u64, ArgError> {
        self.with(flag, |v| {
            parse_size(v).map_err(|e| format!("{v:?} is not a size: {e}"))
        })
    }

    /// A size that fits 32 bits.
    pub fn small(&mut self, flag: &str) -> Result<u32, ArgError> {
        let v = self.size(flag)?;
        u32::try_from(v).map_err(|_| ArgError::new(flag, format!("{v} is too large")))
    }

    /// A number of seconds, more than 0.
    pub fn secs(&mut self, flag: &str) -> Result<f64, ArgError> {
        self.with(flag, |v| {
            v.parse::<f64>()
                .ok()
                .filter(|t| *t > 0.0 && t.is_finite())
                .ok_or_else(|| format!("{v:?} is not a number of seconds above 0"))
        })
    }
}

/// Appends `flag value` to a command line.
pub(crate) fn push(out: &mut Vec<String>, flag: &str, value: impl fmt::Display) {
    out.push(flag.to_string());
    out.push(format!("{value}"));
}

/// Appends `flag` when `on`.
pub(crate) fn push_if(out: &mut Vec<String>, flag: &str, on: bool) {
    if on {
        out.push(flag.to_string());
    }
}

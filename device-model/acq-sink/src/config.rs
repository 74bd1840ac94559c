//! The sink's settings: disk size, block size, the stream it verifies against, the store
//! file. From a JSON file (`--config`) and flags (which override it).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;

use acq_hw::regs;
use acq_wire::counters::DiskSetup;
use acq_wire::Size;

/// Smallest disk: one 4 KiB block.
pub const MIN_SIZE: u64 = 4096;

/// Why settings were refused.
#[derive(Debug, Error)]
pub enum SinkConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A field is unknown.
    #[error("unknown setting `{0}` (known: size, block_size, pattern, seed, base, store, verify)")]
    Unknown(String),
    /// A value is out of range or of the wrong type.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The sink's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// Disk size in bytes (a multiple of 512, at least 4 KiB).
    pub size: u64,
    /// Logical block size the disk advertises (512 or 4096).
    pub block_size: u32,
    /// PATTERN register value of the stream the writes are checked against.
    pub pattern: u32,
    /// The stream's seed.
    pub seed: u64,
    /// Stream offset of disk offset 0.
    pub base: u64,
    /// Sparse host file that stores the written data (reads then come from it).
    pub store: Option<PathBuf>,
    /// Check writes against the pattern (off: only count and store them).
    pub verify: bool,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            size: 64 << 20,
            block_size: 512,
            pattern: regs::pattern::COUNTER,
            seed: 0,
            base: 0,
            store: None,
            verify: true,
        }
    }
}

/// Parses a pattern: the project's one pattern vocabulary (`acq_wire::pattern`).
pub fn parse_pattern(text: &str) -> Result<u32, String> {
    acq_wire::parse_pattern(text).map_err(|e| format!("`{text}` is {e}"))
}

fn number(field: &'static str, v: &Value) -> Result<u64, SinkConfigError> {
    let invalid = |reason: String| SinkConfigError::Invalid { field, reason };
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| invalid(format!("{n} is not a non-negative integer"))),
        Value::String(s) => Size::parse(s).map(|n| n.0).map_err(invalid),
        other => Err(invalid(format!("{other} is not a number"))),
    }
}

impl SinkConfig {
    /// The settings the control socket's `counters` reply carries.
    pub fn setup(&self) -> DiskSetup {
        DiskSetup {
            size: self.size,
            block_size: self.block_size,
            pattern: self.pattern,
            seed: self.seed,
            base: self.base,
            verify: self.verify,
        }
    }

    /// Loads settings from a JSON object file (missing fields keep their defaults).
    pub fn load(path: &Path) -> Result<SinkConfig, SinkConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| SinkConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|source| SinkConfigError::Json {
            path: path.to_owned(),
            source,
        })?;
        let Some(obj) = v.as_object() else {
            return Err(SinkConfigError::Invalid {
                field: "(file)",
                reason: "must be a JSON object".into(),
            });
        };
        let mut c = SinkConfig::default();
        c.apply(obj)?;
        Ok(c)
    }

    /// Applies the fields of `obj`.
    pub fn apply(&mut self, obj: &Map<String, Value>) -> Result<(), SinkConfigError> {
        for (k, v) in obj {
            match k.as_str() {
                "size" => self.size = number("size", v)?,
                "block_size" => {
                    self.block_size = u32::try_from(number("block_size", v)?).map_err(|_| {
                        SinkConfigError::Invalid {
                            field: "block_size",
                            reason: "out of range".into(),
                        }
                    })?
                }
                "seed" => self.seed = number("seed", v)?,
                "base" => self.base = number("base", v)?,
                "pattern" => {
                    self.pattern = match v {
                        Value::String(s) => parse_pattern(s),
                        other => number("pattern", other)
                            .map_err(|e| e.to_string())
                            .and_then(|n| parse_pattern(&n.to_string())),
                    }
                    .map_err(|reason| SinkConfigError::Invalid {
                        field: "pattern",
                        reason,
                    })?
                }
                "store" => {
                    self.store = match v {
                        Value::Null => None,
                        Value::String(s) => Some(PathBuf::from(s)),
                        other => {
                            return Err(SinkConfigError::Invalid {
                                field: "store",
                                reason: format!("{other} is not a path"),
                            })
                        }
                    }
                }
                "verify" => {
                    self.verify = v.as_bool().ok_or_else(|| SinkConfigError::Invalid {
                        field: "verify",
                        reason: format!("{v} is not true or false"),
                    })?
                }
                other => return Err(SinkConfigError::Unknown(other.to_owned())),
            }
        }
        Ok(())
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), SinkConfigError> {
        if self.size < MIN_SIZE || self.size & 511 != 0 {
            return Err(SinkConfigError::Invalid {
                field: "size",
                reason: format!(
                    "{} must be a multiple of 512 and at least {MIN_SIZE}",
                    self.size
                ),
            });
        }
        if self.block_size != 512 && self.block_size != 4096 {
            return Err(SinkConfigError::Invalid {
                field: "block_size",
                reason: format!("{} must be 512 or 4096", self.block_size),
            });
        }
        if self.size & (u64::from(self.block_size) - 1) != 0 {
            return Err(SinkConfigError::Invalid {
                field: "size",
                reason: format!("{} is not a multiple of the block size", self.size),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(v: Value) -> Result<SinkConfig, SinkConfigError> {
        let mut c = SinkConfig::default();
        c.apply(v.as_object().unwrap())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn patterns() {
        assert_eq!(parse_pattern("counter"), Ok(0));
        assert_eq!(parse_pattern("PRBS"), Ok(1));
        assert_eq!(parse_pattern("sine"), Ok(2));
        assert_eq!(parse_pattern("sine:4"), Ok(2 | (3 << 8)));
        assert_eq!(parse_pattern("0x302"), Ok(0x302));
        assert!(parse_pattern("sine:17").is_err());
        assert!(parse_pattern("7").is_err());
        assert!(parse_pattern("noise").is_err());
    }

    #[test]
    fn settings_from_json() {
        let c = apply(
            json!({"size":"1M","block_size":4096,"pattern":"prbs","seed":"0x10",
            "base":8192,"store":"/tmp/x","verify":false}),
        )
        .unwrap();
        assert_eq!(c.size, 1 << 20);
        assert_eq!(c.block_size, 4096);
        assert_eq!(c.pattern, 1);
        assert_eq!(c.seed, 16);
        assert_eq!(c.base, 8192);
        assert_eq!(c.store, Some(PathBuf::from("/tmp/x")));
        assert!(!c.verify);
        for (v, needle) in [
            (json!({"size":1000}), "multiple of 512"),
            (json!({"size":512}), "at least"),
            (json!({"block_size":1024}), "512 or 4096"),
            (json!({"block_size":4096,"size":8704}), "block size"),
            (json!({"colour":1}), "unknown setting `colour`"),
            (json!({"pattern":"x"}), "pattern"),
            (json!({"seed":-1}), "seed"),
            (json!({"verify":1}), "verify"),
        ] {
            let e = apply(v.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{v}: {e}");
        }
    }
}

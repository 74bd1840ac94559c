//! Model settings: what a real card would fix at manufacture (IDs, BAR2 size, FIFO depth,
//! MSI-X vector count), read from a JSON file and/or command-line flags.
//!
//! Numbers may be given as JSON numbers or as strings: decimal, `0x` hex, or with a
//! `K`/`M`/`G` suffix (powers of 1024), e.g. `"bar2_size": "4M"`, `"vendor_id": "0x1234"`.

use std::path::{Path, PathBuf};

use acq_wire::Size;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::regs;

/// Smallest MSI-X vector count the model accepts (the spec's four vectors).
pub const MSIX_VECTORS_MIN: u16 = regs::msix::VECTORS;
/// Largest MSI-X vector count the model accepts (the table must fit in 0x2000-0x2FFF).
pub const MSIX_VECTORS_MAX: u16 = 256;

/// The model's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// PCI vendor ID.
    pub vendor_id: u16,
    /// PCI device ID.
    pub device_id: u16,
    /// PCI subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// PCI subsystem ID.
    pub subsystem_id: u16,
    /// BAR2 size in bytes (power of two, 1 MiB .. 1 GiB).
    pub bar2_size: u64,
    /// FIFO depth in bytes (multiple of 4 KiB, 64 KiB .. 64 MiB).
    pub fifo_depth: u32,
    /// Number of MSI-X vectors (4 .. 256).
    pub msix_vectors: u16,
    /// Whether the card has an MSI capability. Without it and without MSI-X the card
    /// cannot interrupt at all (a probe-time fault: "a missing capability").
    pub msi: bool,
    /// The card refuses to connect MSI-X vectors (`SET_IRQS` fails): a capability that
    /// is there but cannot be enabled (a probe-time fault).
    pub msix_enable_fails: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vendor_id: regs::pci::VENDOR_ID,
            device_id: regs::pci::DEVICE_ID,
            subsystem_vendor_id: regs::pci::SUBSYSTEM_VENDOR_ID,
            subsystem_id: regs::pci::SUBSYSTEM_ID,
            bar2_size: regs::bar::BAR2_SIZE_DEFAULT,
            fifo_depth: regs::limits::FIFO_DEPTH_DEFAULT,
            msix_vectors: regs::msix::VECTORS,
            msi: true,
            msix_enable_fails: false,
        }
    }
}

/// Errors in model settings.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of the expected shape (names an unknown field, if that is it).
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
    /// One setting has a bad value.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The setting's name, as in the JSON file.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The JSON file: every field optional, nothing else allowed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    vendor_id: Option<Value>,
    device_id: Option<Value>,
    subsystem_vendor_id: Option<Value>,
    subsystem_id: Option<Value>,
    bar2_size: Option<Value>,
    fifo_depth: Option<Value>,
    msix_vectors: Option<Value>,
    msi: Option<bool>,
    msix_enable_fails: Option<bool>,
}

fn number(field: &'static str, v: &Value) -> Result<u64, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { field, reason };
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| invalid(format!("{n} is not a non-negative integer"))),
        Value::String(s) => Size::parse(s).map(|n| n.0).map_err(invalid),
        other => Err(invalid(format!(
            "expected a number or a string such as \"0x10\" or \"4M\", found {other}"
        ))),
    }
}

fn narrow<T: TryFrom<u64>>(field: &'static str, v: u64) -> Result<T, ConfigError> {
    T::try_from(v).map_err(|_| ConfigError::Invalid {
        field,
        reason: format!("{v} is out of range"),
    })
}

impl ModelConfig {
    /// Parses a JSON configuration (fields not given keep their defaults) and validates it.
    pub fn from_json(text: &str) -> Result<ModelConfig, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let mut c = ModelConfig::default();
        if let Some(v) = &raw.vendor_id {
            c.vendor_id = narrow("vendor_id", number("vendor_id", v)?)?;
        }
        if let Some(v) = &raw.device_id {
            c.device_id = narrow("device_id", number("device_id", v)?)?;
        }
        if let Some(v) = &raw.subsystem_vendor_id {
            c.subsystem_vendor_id =
                narrow("subsystem_vendor_id", number("subsystem_vendor_id", v)?)?;
        }
        if let Some(v) = &raw.subsystem_id {
            c.subsystem_id = narrow("subsystem_id", number("subsystem_id", v)?)?;
        }
        if let Some(v) = &raw.bar2_size {
            c.bar2_size = number("bar2_size", v)?;
        }
        if let Some(v) = &raw.fifo_depth {
            c.fifo_depth = narrow("fifo_depth", number("fifo_depth", v)?)?;
        }
        if let Some(v) = &raw.msix_vectors {
            c.msix_vectors = narrow("msix_vectors", number("msix_vectors", v)?)?;
        }
        if let Some(v) = raw.msi {
            c.msi = v;
        }
        if let Some(v) = raw.msix_enable_fails {
            c.msix_enable_fails = v;
        }
        c.validate()?;
        Ok(c)
    }

    /// Reads and parses a JSON configuration file.
    pub fn load(path: &Path) -> Result<ModelConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Checks every setting against the limits of the spec.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !regs::bar::bar2_size_valid(self.bar2_size) {
            return Err(ConfigError::Invalid {
                field: "bar2_size",
                reason: format!(
                    "{:#x} is not a power of two between {:#x} and {:#x}",
                    self.bar2_size,
                    regs::bar::BAR2_SIZE_MIN,
                    regs::bar::BAR2_SIZE_MAX
                ),
            });
        }
        if !regs::limits::fifo_depth_valid(self.fifo_depth) {
            return Err(ConfigError::Invalid {
                field: "fifo_depth",
                reason: format!(
                    "{:#x} is not a multiple of 4 KiB between {:#x} and {:#x}",
                    self.fifo_depth,
                    regs::limits::FIFO_DEPTH_MIN,
                    regs::limits::FIFO_DEPTH_MAX
                ),
            });
        }
        // 0: no MSI-X capability at all, the card signals through its one MSI message.
        if self.msix_vectors != 0
            && !(MSIX_VECTORS_MIN..=MSIX_VECTORS_MAX).contains(&self.msix_vectors)
        {
            return Err(ConfigError::Invalid {
                field: "msix_vectors",
                reason: format!(
                    "{} is neither 0 (no MSI-X, MSI only) nor between {MSIX_VECTORS_MIN} and \
                     {MSIX_VECTORS_MAX}",
                    self.msix_vectors
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = ModelConfig::from_json("{}").unwrap();
        assert_eq!(c, ModelConfig::default());
        assert_eq!(c.vendor_id, 0x1234);
        assert_eq!(c.bar2_size, 1 << 20);
        assert_eq!(c.fifo_depth, 1 << 20);
        assert_eq!(c.msix_vectors, 4);
    }

    #[test]
    fn numbers_in_every_notation() {
        let c = ModelConfig::from_json(
            r#"{"vendor_id":"0x1af4","device_id":4660,"bar2_size":"4M","fifo_depth":"256K","msix_vectors":8}"#,
        )
        .unwrap();
        assert_eq!(c.vendor_id, 0x1af4);
        assert_eq!(c.device_id, 4660);
        assert_eq!(c.bar2_size, 4 << 20);
        assert_eq!(c.fifo_depth, 256 << 10);
        assert_eq!(c.msix_vectors, 8);
    }

    #[test]
    fn errors_name_the_field() {
        let e = ModelConfig::from_json(r#"{"bar2_sise": 1}"#).unwrap_err();
        assert!(e.to_string().contains("bar2_sise"), "{e}");
        let e = ModelConfig::from_json(r#"{"bar2_size": "3M"}"#).unwrap_err();
        assert!(e.to_string().contains("`bar2_size`"), "{e}");
        let e = ModelConfig::from_json(r#"{"fifo_depth": 1000}"#).unwrap_err();
        assert!(e.to_string().contains("`fifo_depth`"), "{e}");
        let e = ModelConfig::from_json(r#"{"vendor_id": 70000}"#).unwrap_err();
        assert!(e.to_string().contains("`vendor_id`"), "{e}");
        let e = ModelConfig::from_json(r#"{"msix_vectors": 2}"#).unwrap_err();
        assert!(e.to_string().contains("`msix_vectors`"), "{e}");
        let e = ModelConfig::from_json(r#"{"device_id": true}"#).unwrap_err();
        assert!(e.to_string().contains("`device_id`"), "{e}");
        let e = ModelConfig::from_json(r#"{"device_id": "12x"}"#).unwrap_err();
        assert!(e.to_string().contains("`device_id`"), "{e}");
    }
}

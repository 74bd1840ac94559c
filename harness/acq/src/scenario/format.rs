//! The scenario file format (JSON): a VM, its cards, a workload, a fault timeline and the
//! expectations that must hold afterwards.
//!
//! These types are the format: `docs/scenario.schema.json` is generated from them
//! (`acq schema`), and a test keeps the checked-in copy in step. Unknown fields are
//! rejected everywhere, so a typo is an error, not a silently ignored setting.
//! `docs/scenarios.md` is the guide for people writing scenarios.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::accel::AccelChoice;
use crate::paths::KernelFlavor;

pub mod control;
mod expect;
mod faults;
pub mod invoke;
pub mod limits;
pub mod share;
pub mod signal;
mod size;
mod steps;
#[cfg(test)]
mod tests;
mod validate;

pub use expect::*;
pub use faults::*;
pub use size::*;
pub use steps::*;
use validate::validate;

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name used in reports (default: the file name without `.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the scenario shows, in a sentence or two.
    #[serde(default)]
    pub description: String,
    /// Time limit for the whole scenario in seconds, boot included. A scenario that runs
    /// over is killed and reported with the tail of the guest console.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// The virtual machine.
    #[serde(default)]
    pub vm: VmSpec,
    /// The cards, one device model each (`/dev/acq0`, `/dev/acq1`, ... in this order).
    #[serde(default = "default_cards")]
    pub cards: Vec<CardSpec>,
    /// Capture disks (`acq-sink`, docs/sink.md): `/dev/vda`, `/dev/vdb`, ... in this order.
    /// Each verifies on the host every byte written to it against a card's stream.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Load the driver (`acq.ko`) before the steps run. With cards it is in the guest
    /// either way, at /lib/modules/acq.ko, for an `exec` step to load.
    #[serde(default = "yes")]
    pub load_driver: bool,
    /// The workload, run in order.
    pub steps: Vec<Step>,
    /// Faults injected while the steps run.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// What must hold afterwards.
    #[serde(default)]
    pub expect: Expect,
}

fn default_timeout_s() -> u64 {
    600
}
fn default_cards() -> Vec<CardSpec> {
    vec![CardSpec::default()]
}
fn yes() -> bool {
    true
}

/// The virtual machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Number of vCPUs (1 to 8).
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Guest RAM in MiB (128 to 16384).
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Accelerator: `auto` (KVM where it really works, else TCG), `kvm` or `tcg`.
    #[serde(default = "default_accel")]
    #[schemars(with = "String")]
    pub accel: AccelChoice,
    /// Extra guest kernel command-line arguments, one word each (at most 16), e.g.
    /// `swiotlb=force`: every streaming DMA mapping then bounces, as in a
    /// confidential-computing guest.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// A virtual IOMMU (QEMU intel-iommu, on by default in the guest kernel): the cards'
    /// DMA then goes through translations the guest's DMA API programs.
    #[serde(default)]
    pub viommu: bool,
    /// The guest kernel flavor: `test` (lockdep and friends, the default), `debug` (also
    /// KASAN and kmemleak: any report fails the scenario) or `bench` (no debugging).
    /// `acq run --kernel-flavor` overrides it.
    #[serde(default)]
    pub kernel: KernelFlavor,
}

fn default_cpus() -> u32 {
    2
}
fn default_memory() -> u32 {
    1024
}
fn default_accel() -> AccelChoice {
    AccelChoice::Auto
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            cpus: default_cpus(),
            memory_mib: default_memory(),
            accel: default_accel(),
            kernel_args: Vec::new(),
            viommu: false,
            kernel: KernelFlavor::Test,
        }
    }
}

impl Serialize for AccelChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        })
    }
}

impl<'de> Deserialize<'de> for AccelChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            other => Err(de::Error::invalid_value(
                de::Unexpected::Str(other),
                &"one of auto, kvm, tcg",
            )),
        }
    }
}

/// One card: the device model's settings, and the device settings the driver programs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardSpec {
    /// Size of BAR2, the on-card sample memory (a power of two from 1 MiB to 1 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bar2_size: Option<Size>,
    /// Number of MSI-X vectors: 4..256, or 0 for a card without MSI-X (MSI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msix_vectors: Option<u16>,
    /// false: the card has no MSI capability. With `msix_vectors` 0 as well it cannot
    /// interrupt at all, and probe must refuse it with a clear message (a fault at probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msi: Option<bool>,
    /// true: the card's MSI-X capability is there but its vectors cannot be connected
    /// (the model refuses them: a capability that cannot be enabled, a fault at probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msix_enable_fails: Option<bool>,
    /// Depth of the card's FIFO in bytes: how much it buffers while the host posts no buffers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fifo_depth: Option<Size>,
    /// Device settings the driver programs before streaming.
    #[serde(default)]
    pub device: DeviceSettings,
}

/// Settings the driver programs through its ioctls (docs/driver.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    /// Bytes per DMA block (multiple of 8, 64 B to 4 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<Size>,
    /// Sample rate limit in bytes per second (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Size>,
    /// Sample pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Pattern>,
    /// Pattern seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Interrupt moderation: one interrupt per this many completions ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irq_count: Option<u32>,
    /// ... or after this many microseconds, whichever comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irq_time_us: Option<u32>,
    /// log2 of the ring entries (1 to 10; the driver's default is 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_log2: Option<u32>,
    /// How the card delivers data: `dma` into host memory (default) or `bar2` streaming
    /// through its on-card memory (the ring and blocks must fit `bar2_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

/// How the card delivers data (docs/driver.md, "BAR2 streaming mode"): the consumers'
/// own type.
pub use acq_wire::consumer::Transfer;

/// A capture disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Size of the disk.
    pub size: Size,
    /// The card whose stream the disk checks writes against (its pattern and seed).
    #[serde(default)]
    pub card: usize,
    /// Stream offset of disk offset 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Size>,
    /// Logical block size, 512 or 4096.
    #[serde(default = "default_disk_block")]
    pub block_size: u32,
    /// Keep the data in a sparse file (needed for a filesystem on the disk).
    #[serde(default)]
    pub store: bool,
    /// Check writes against the stream (off for a filesystem: only count).
    #[serde(default = "yes")]
    pub verify: bool,
}

fn default_disk_block() -> u32 {
    4096
}

/// A scenario file that failed to load: which file, where in it, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {location}: {reason}")]
pub struct LoadError {
    /// The file.
    pub file: String,
    /// The JSON path (`steps[1].stream.bytes`) and line:column of the problem.
    pub location: String,
    /// What was wrong.
    pub reason: String,
}

/// Largest scenario file `load` reads (a scenario is a few KiB of JSON).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// Parses and validates a scenario.
pub fn parse(text: &str, file: &str) -> Result<Scenario, LoadError> {
    let fail = |reason: &str| LoadError {
        file: file.to_owned(),
        location: "file".into(),
        reason: reason.into(),
    };
    if text.starts_with('\u{feff}') {
        return Err(fail(
            "the file starts with a UTF-8 byte order mark: save it as plain UTF-8 without one",
        ));
    }
    match text.trim_start().chars().next() {
        Some('{') => {}
        None => return Err(fail("the file is empty: a scenario is one JSON object")),
        Some(_) => {
            return Err(fail(
                "a scenario is one JSON object ({...}), not an array or another JSON value",
            ))
        }
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let sc: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        LoadError {
            file: file.to_owned(),
            location: format!("{path} (line {}, column {})", inner.line(), inner.column()),
            reason: explain(&path, strip_position(&inner.to_string())),
        }
    })?;
    validate(&sc).map_err(|(location, reason)| LoadError {
        file: file.to_owned(),
        location,
        reason,
    })?;
    Ok(sc)
}

/// Loads a scenario file: a regular file (a FIFO or a device would block or never end)
/// of at most [`MAX_SCENARIO_BYTES`].
pub fn load(path: &Path) -> Result<Scenario, LoadError> {
    use std::io::Read;
    let file = path.display().to_string();
    let fail = |reason: String| LoadError {
        file: file.clone(),
        location: "file".into(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(fail(format!("{kind}: a scenario is a .json file")));
    }
    if meta.len() > MAX_SCENARIO_BYTES {
        return Err(fail(format!(
            "{} bytes: larger than a scenario can be ({MAX_SCENARIO_BYTES} bytes at most)",
            meta.len()
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SCENARIO_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| fail(e.to_string()))?;
    let mut sc = parse(&text, &file)?;
    if sc.name.is_none() {
        sc.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    Ok(sc)
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// serde_json says only "expected value" where an enum written as a one-key object (a
/// step, a fault) finds something else, such as an array: say what belongs there.
fn explain(path: &str, reason: String) -> String {
    if reason != "expected value" {
        return reason;
    }
    let last = path.rsplit('.').next().unwrap_or(path);
    if last.starts_with("steps[") {
        return "a step is one object naming it: {\"stream\": {...}}, {\"play\": {...}}, \
                {\"exec\": {...}}, {\"sleep_ms\": N}, {\"config\": {...}} or {\"reset\": {...}}"
            .into();
    }
    if last == "inject" {
        return "a fault is its name (\"hang\") or one object naming it \
                ({\"dma_error\": {\"count\": 1}}); docs/faults.md lists them"
            .into();
    }
    "expected a JSON value of the kind this field takes (docs/scenario.schema.json)".into()
}

/// Whose counter an `expect.counters` key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOf {
    /// A card's device model.
    Card,
    /// A capture disk.
    Disk,
    /// A stream step's result.
    Stream,
}

/// Splits `card0.irqs` / `disk1.bytes_verified` into (whose, index, counter name).
pub fn counter_key(key: &str) -> Option<(CounterOf, usize, &str)> {
    let (who, rest) = if let Some(r) = key.strip_prefix("card") {
        (CounterOf::Card, r)
    } else if let Some(r) = key.strip_prefix("stream") {
        (CounterOf::Stream, r)
    } else {
        (CounterOf::Disk, key.strip_prefix("disk")?)
    };
    let (n, name) = rest.split_once('.')?;
    (!name.is_empty()).then_some(())?;
    Some((who, n.parse().ok()?, name))
}

/// The errno names expectations may use, with their Linux values.
pub const ERRNOS: [(&str, i32); 9] = [
    ("EIO", 5),
    ("EINTR", 4),
    ("EAGAIN", 11),
    ("ENODEV", 19),
    ("EINVAL", 22),
    ("EPIPE", 32),
    ("ETIMEDOUT", 110),
    ("EOVERFLOW", 75),
    ("ENOSPC", 28),
];

/// The value of an errno name from [`ERRNOS`].
pub fn errno_value(name: &str) -> Option<i32> {
    ERRNOS.iter().find(|e| e.0 == name).map(|e| e.1)
}

/// The JSON Schema of the format, as checked in at `docs/scenario.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Scenario);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

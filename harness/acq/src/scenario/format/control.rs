//! The `control` list of a stream step: ioctls (and a second open) on the streaming card
//! from a second process that shares the consumer's open file, as a monitoring tool or a
//! second thread of a user's program would (`acq-stream --control`,
//! harness/acq-guest/src/controller.rs), and the answers the driver's contract allows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use acq_wire::consumer::{self, Change, ControlPlan};

use super::{At, Size};

/// One action of the second process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlStep {
    /// When: `{"time_ms": N}` after the consumer started, or `{"bytes": "16M"}` once it
    /// received that many bytes. Actions run in list order, each after its moment.
    pub at: At,
    /// What: `"stop"`, `"start"`, `"reset"`, `"open"` (a second open(), which must fail
    /// with EBUSY) or `{"set_config": {...}}`.
    pub action: ControlAction,
}

/// An ioctl, or a second open().
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlAction {
    /// `ACQ_IOC_STOP`: ends the session; a read() waiting returns 0.
    Stop,
    /// `ACQ_IOC_START` (EBUSY while running).
    Start,
    /// `ACQ_IOC_RESET`: stop, soft reset, clear the statistics.
    Reset,
    /// A second open() of the device: the one-open rule says EBUSY.
    Open,
    /// `ACQ_IOC_SET_CONFIG` with these settings changed (EBUSY while running).
    SetConfig(ControlConfig),
}

/// Settings a `set_config` action changes. The pattern and seed are not among them: the
/// consumer verifies the stream against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Bytes per block (a multiple of 8, 64 to 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<Size>,
    /// Completions per interrupt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irq_count: Option<u32>,
    /// Interrupt moderation time (0 to 1,000,000 us).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irq_time_us: Option<u32>,
    /// Source rate, bytes per second (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Size>,
}

/// The most actions one stream takes.
const MAX_ACTIONS: usize = 16;

impl ControlAction {
    /// The answers the driver's contract allows (docs/driver.md, "ioctl()" and "Opening
    /// and closing"), besides the errnos the scenario's faults may cause.
    pub fn allowed(name: &str) -> &'static [&'static str] {
        match name {
            "stop" | "reset" => &["ok"],
            "start" | "set_config" => &["ok", "EBUSY"],
            "open" => &["EBUSY"],
            _ => &[],
        }
    }
}

/// Checks a stream's list against a stream of `bytes`: `Err((field, why))`.
pub fn validate(list: &[ControlStep], bytes: Size) -> Result<(), (String, String)> {
    if list.len() > MAX_ACTIONS {
        return Err((String::new(), format!("at most {MAX_ACTIONS} actions")));
    }
    for (k, c) in list.iter().enumerate() {
        if let At::Bytes(b) = c.at {
            if b >= bytes {
                return Err((
                    format!("[{k}].at.bytes"),
                    "must be less than the stream's `bytes`".into(),
                ));
            }
        }
        if let ControlAction::SetConfig(s) = &c.action {
            if s.block_size.is_none()
                && s.irq_count.is_none()
                && s.irq_time_us.is_none()
                && s.rate.is_none()
            {
                return Err((
                    format!("[{k}].action.set_config"),
                    "names no setting".into(),
                ));
            }
            if let Some(b) = s.block_size {
                use super::limits::DRIVER_BLOCK_SIZE_MAX;
                use acq_hw::regs::limits::{BLOCK_SIZE_ALIGN, BLOCK_SIZE_MIN};
                if !b.0.is_multiple_of(u64::from(BLOCK_SIZE_ALIGN))
                    || !(u64::from(BLOCK_SIZE_MIN)..=DRIVER_BLOCK_SIZE_MAX).contains(&b.0)
                {
                    return Err((
                        format!("[{k}].action.set_config.block_size"),
                        format!(
                            "{} is not a multiple of {BLOCK_SIZE_ALIGN} from {BLOCK_SIZE_MIN} \
                             to {DRIVER_BLOCK_SIZE_MAX}",
                            b.0
                        ),
                    ));
                }
            }
            let max = super::limits::DRIVER_IRQ_TIME_US_MAX;
            if s.irq_time_us.is_some_and(|t| t > max) {
                return Err((
                    format!("[{k}].action.set_config.irq_time_us"),
                    format!("at most {max}"),
                ));
            }
        }
    }
    Ok(())
}

/// What the second process is asked to do (`acq-stream --control ...`).
pub fn plans(list: &[ControlStep]) -> Vec<ControlPlan> {
    list.iter()
        .map(|c| ControlPlan {
            action: match c.action {
                ControlAction::Stop => consumer::ControlAction::Stop,
                ControlAction::Start => consumer::ControlAction::Start,
                ControlAction::Reset => consumer::ControlAction::Reset,
                ControlAction::Open => consumer::ControlAction::Open,
                ControlAction::SetConfig(s) => consumer::ControlAction::SetConfig(Change {
                    block_size: s.block_size.map(|b| u32::try_from(b.0).unwrap_or(u32::MAX)),
                    irq_count: s.irq_count,
                    irq_time_us: s.irq_time_us,
                    rate: s.rate.map(|r| r.0),
                }),
            },
            at: match c.at {
                At::TimeMs(ms) => consumer::At::Ms(ms),
                At::Bytes(b) => consumer::At::Bytes(b.0),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_parses_and_becomes_arguments() {
        let list: Vec<ControlStep> = serde_json::from_value(json!([
            {"at": {"bytes": "2M"}, "action": "stop"},
            {"at": {"time_ms": 500}, "action": {"set_config": {"block_size": 2048, "rate": "4M"}}},
            {"at": {"time_ms": 600}, "action": "open"}
        ]))
        .unwrap();
        assert!(validate(&list, Size(8 << 20)).is_ok());
        let texts: Vec<String> = plans(&list).iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "stop@2097152",
                "set_config:block_size=2048,rate=4194304@500ms",
                "open@600ms"
            ]
        );
        let e = validate(&list, Size(1 << 20)).unwrap_err();
        assert_eq!(e.0, "[0].at.bytes");
        let bad: Vec<ControlStep> = serde_json::from_value(
            json!([{"at": {"time_ms": 1}, "action": {"set_config": {"block_size": 100}}}]),
        )
        .unwrap();
        assert!(validate(&bad, Size(1 << 20))
            .unwrap_err()
            .1
            .contains("multiple of 8"));
        assert!(serde_json::from_value::<Vec<ControlStep>>(
            json!([{"at": {"time_ms": 1}, "action": "halt"}])
        )
        .is_err());
    }
}

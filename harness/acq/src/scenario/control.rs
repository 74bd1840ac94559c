//! The `control` list of a stream step: ioctls (and a second open) on the streaming card
//! from a second process that shares the consumer's open file, as a monitoring tool or a
//! second thread of a user's program would (`acq-stream --control`,
//! harness/acq-guest/src/controller.rs), and the answers the driver's contract allows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use acq_wire::consumer::{self, Change, ConsumerReport, ControlPlan, ControlReport};

use super::format::{At, Size};

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
                if b.0 % 8 != 0 || !(64..=4096).contains(&b.0) {
                    return Err((
                        format!("[{k}].action.set_config.block_size"),
                        format!("{} is not a multiple of 8 from 64 to 4096", b.0),
                    ));
                }
            }
            if s.irq_time_us.is_some_and(|t| t > 1_000_000) {
                return Err((
                    format!("[{k}].action.set_config.irq_time_us"),
                    "at most 1,000,000".into(),
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

/// What the consumer's report says of its controller, checked against the contract:
/// `Ok(summary)` or `Err(what broke it)`. `faults` are errnos the scenario's faults may
/// cause (an ioctl may meet a halted or resetting card).
pub fn judge(report: &ConsumerReport, faults: &[String]) -> Result<String, String> {
    let control: &ControlReport = report
        .control
        .as_ref()
        .ok_or("the consumer reported no controller")?;
    if let Some(e) = &control.error {
        return Err(e.clone());
    }
    let mut bad = Vec::new();
    let mut ends_allowed = 0u64;
    for a in &control.actions {
        let (name, result) = (a.action.as_str(), a.result.as_str());
        // An errno a fault explains is accepted for every action (a halted card, or ENODEV
        // for the open of a card that was removed); "opened" never.
        let allowed =
            ControlAction::allowed(name).contains(&result) || faults.iter().any(|f| f == result);
        if !allowed {
            bad.push(format!("{name} at {} bytes answered {result}", a.at_bytes));
        }
        if matches!(name, "stop" | "reset") && result == "ok" {
            ends_allowed += 1;
        }
    }
    // A read() or splice() returns 0 only when a STOP or RESET ended the session it
    // waited in: never more often than they were done.
    let ends = report.session_ends.unwrap_or(0);
    if ends > ends_allowed {
        bad.push(format!(
            "the consumer's calls returned 0 {ends} time(s) after {ends_allowed} STOP/RESET"
        ));
    }
    // As the only reader, the consumer's first call in a new session reads from offset 0:
    // the driver said otherwise (a session that went on, or skipped data, behind a new
    // session number).
    let misplaced = report.misplaced.unwrap_or(0);
    if misplaced > 0 {
        bad.push(format!(
            "{misplaced} call(s) opened a new session anywhere but at offset 0"
        ));
    }
    let summary = format!(
        "{} of {} action(s) done: {}; {ends} session end(s) seen",
        control.actions.len(),
        control.planned,
        control
            .actions
            .iter()
            .map(|a| format!("{}={}", a.action, a.result))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if bad.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{}; {summary}", bad.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn judge(v: &serde_json::Value, faults: &[String]) -> Result<String, String> {
        super::judge(&serde_json::from_value(v.clone()).unwrap(), faults)
    }

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

    #[test]
    fn answers_outside_the_contract_fail_the_judgement() {
        let ok = json!({"session_ends": 1, "control": {"planned": 3, "actions": [
            {"action": "stop", "at_bytes": 1, "result": "ok"},
            {"action": "start", "at_bytes": 2, "result": "EBUSY"},
            {"action": "open", "at_bytes": 3, "result": "EBUSY"}]}});
        assert!(judge(&ok, &[]).is_ok());
        let opened = json!({"session_ends": 0, "control": {"planned": 1, "actions": [
            {"action": "open", "at_bytes": 1, "result": "opened"}]}});
        assert!(judge(&opened, &[])
            .unwrap_err()
            .contains("open at 1 bytes answered opened"));
        let moved = json!({"session_ends": 1, "misplaced": 1, "control": {"planned": 1,
            "actions": [{"action": "stop", "at_bytes": 1, "result": "ok"}]}});
        assert!(judge(&moved, &[])
            .unwrap_err()
            .contains("anywhere but at offset 0"));
        let eof = json!({"session_ends": 2, "control": {"planned": 1, "actions": [
            {"action": "stop", "at_bytes": 1, "result": "ok"}]}});
        assert!(judge(&eof, &[])
            .unwrap_err()
            .contains("returned 0 2 time(s)"));
        let eio = json!({"session_ends": 0, "control": {"planned": 1, "actions": [
            {"action": "start", "at_bytes": 1, "result": "EIO"}]}});
        assert!(judge(&eio, &[]).is_err());
        assert!(judge(&eio, &["EIO".into()]).is_ok());
        assert!(judge(&json!({"control": {"error": "no report"}}), &[]).is_err());
    }
}

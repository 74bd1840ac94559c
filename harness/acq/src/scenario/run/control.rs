//! What the consumer's report says of its second process (`--control`), checked against
//! the driver's contract (docs/driver.md, "ioctl()" and "Sessions and the stream").

use acq_wire::consumer::{ConsumerReport, ControlReport};

use crate::scenario::format::control::ControlAction;

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
    use serde_json::json;

    fn judge(v: &serde_json::Value, faults: &[String]) -> Result<String, String> {
        super::judge(&serde_json::from_value(v.clone()).unwrap(), faults)
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

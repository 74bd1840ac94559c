//! The card's control socket: one request line, answered as the socket would.
//!
//! Properties: nothing panics or hangs (a request is bounded work); every answer is one
//! JSON object with a boolean `ok`, and an error names what was wrong; `clear_faults`
//! afterwards ends whatever the request started.

#![no_main]

use acq_device::control::{handle_line, ControlTarget};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let card = acq_fuzz::card();
    let target: &dyn ControlTarget = card.as_ref();
    let line = String::from_utf8_lossy(data);
    let answer = handle_line(target, &line);
    let v: serde_json::Value = serde_json::from_str(&answer).expect("the answer is JSON");
    match v["ok"].as_bool() {
        Some(true) => {}
        Some(false) => assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}"),
        None => panic!("no `ok` in {v}"),
    }
    // The next input finds a card with nothing armed and no storm running: the model
    // promises the storms end within a second of clear_faults.
    if let Err(e) = target.clear_faults() {
        panic!("clear_faults: {e}");
    }
});

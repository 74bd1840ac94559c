//! The guest agent protocol (JSON lines between `acq` and `acq-agent`), both directions.
//!
//! Properties: nothing panics; whatever decodes encodes back to the same message.

#![no_main]

use acq_wire::agent::{Event, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<Request>(data) {
        let s = serde_json::to_string(&r).expect("a request encodes");
        assert_eq!(serde_json::from_str::<Request>(&s).expect("and decodes"), r);
    }
    if let Ok(e) = serde_json::from_slice::<Event>(data) {
        let s = serde_json::to_string(&e).expect("an event encodes");
        assert_eq!(serde_json::from_str::<Event>(&s).expect("and decodes"), e);
    }
});

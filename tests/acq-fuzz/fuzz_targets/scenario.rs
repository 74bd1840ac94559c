//! The scenario format (`acq check` and `acq run` read it): any text.
//!
//! Properties: nothing panics; a scenario that parses serialises to JSON that parses
//! again to the same scenario (the format is what the types say, docs/scenario.schema.json).

#![no_main]

use acq::scenario::format::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, "fuzz.json") {
        Ok(sc) => {
            let again = serde_json::to_string(&sc).expect("a scenario serialises");
            let back = parse(&again, "again.json")
                .unwrap_or_else(|e| panic!("{again}\ndoes not parse back: {e}"));
            assert_eq!(back, sc, "{again}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});

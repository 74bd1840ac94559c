//! The `share` step: one card's capture ring played by another card's playback channel
//! with no CPU copy (dma-buf; docs/driver.md "Sharing the ring with another device"),
//! driven by the guest tool `acq-share`. Its type, its checks and its command line live
//! here, beside the formats of the other steps; the runner runs it
//! (`run/consumers.rs`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CardSpec, Size};

/// One card's ring played by another's playback channel (`acq-share`); the receiving card
/// verifies every byte against the exporting card's pattern and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareStep {
    /// The card whose capture ring is exported (its `device` pattern, seed, block size
    /// and ring size are used).
    #[serde(default)]
    pub from: usize,
    /// The card whose playback channel imports and plays it (may be `from` itself).
    #[serde(default = "default_to")]
    pub to: usize,
    /// Where the buffer comes from: `card` (card `from`'s ring, the default), `heap` (a
    /// buffer of the kernel's system DMA heap that the tool writes the pattern into), or
    /// `copy` (no dma-buf: read() from card `from`, write() to card `to`, for comparison).
    #[serde(default)]
    pub source: ShareSource,
    /// Bytes to move (a multiple of the block size).
    pub bytes: Size,
    /// The receiving card's output rate (0: as fast as the data comes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_rate: Option<Size>,
    /// Also map the dma-buf (read-only) and check every block there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub map_verify: bool,
    /// Close card `from`'s file once this many bytes were queued, with blocks still
    /// queued on card `to` (and the mapping held): they must still play and verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_capture_after: Option<Size>,
    /// End when card `from` is unplugged (a `surprise_removal` fault): what card `to` had
    /// queued must still play and verify from pages the dma-buf kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_gone: bool,
    /// At the end, hold only the dma-buf and its mapping for this many seconds (both
    /// device files closed), then check the mapping again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_s: Option<u64>,
    /// Seconds it may take.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

/// Where a `share` step's buffer comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShareSource {
    /// Card `from`'s capture ring, exported as a dma-buf.
    #[default]
    Card,
    /// A buffer of the system DMA heap (/dev/dma_heap/system).
    Heap,
    /// No dma-buf: read() then write() through a buffer.
    Copy,
}

fn default_to() -> usize {
    1
}

fn default_timeout() -> u64 {
    300
}

impl ShareStep {
    /// Checks the step against the scenario's cards; `Err((field, why))`.
    pub fn validate(&self, ncards: usize, cards: &[CardSpec]) -> Result<(), (String, String)> {
        let err = |f: &str, why: String| Err((f.to_owned(), why));
        if self.to >= ncards {
            return err(
                "to",
                format!("card {} does not exist ({ncards} cards)", self.to),
            );
        }
        if self.source != ShareSource::Heap && self.from >= ncards {
            return err(
                "from",
                format!("card {} does not exist ({ncards} cards)", self.from),
            );
        }
        if self.source != ShareSource::Heap
            && cards
                .get(self.from)
                .and_then(|c| c.device.transfer)
                .is_some_and(|t| t == super::Transfer::Bar2)
        {
            return err(
                "from",
                format!(
                    "card {} streams in BAR2 mode: acq-share moves its ring by DMA",
                    self.from
                ),
            );
        }
        // The rest (bytes against the block size, the options only a card's ring takes,
        // the early ends, hold_s) are acq-share's own rules on the command line the step
        // becomes (`ShareArgs::check`, run by the validation).
        if self.timeout_s == 0 {
            return err("timeout_s", "must be more than 0".into());
        }
        Ok(())
    }

    /// The card whose settings (pattern, seed, block and ring size) the step uses: the
    /// exporting card, or for a heap buffer the receiving one (checked to exist).
    pub fn settings_card(&self) -> usize {
        match self.source {
            ShareSource::Heap => self.to,
            ShareSource::Card | ShareSource::Copy => self.from,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    fn two_cards(step: &str) -> Result<super::super::Scenario, super::super::LoadError> {
        parse(
            &format!(r#"{{"cards": [{{}}, {{}}], "steps": [{{"share": {step}}}]}}"#),
            "t.json",
        )
    }

    #[test]
    fn a_share_step_builds_its_command_line() {
        let sc = parse(
            r#"{"cards": [{"msix_vectors": 0, "device": {"pattern": "prbs", "seed": 7, "ring_log2": 10}}, {}],
                "steps": [{"share": {"bytes": "8M", "map_verify": true, "play_rate": "1M",
                                     "until_gone": true}}],
                "faults": [{"card": 0, "at": {"time_ms": 1000}, "inject": "surprise_removal"}]}"#,
            "t.json",
        )
        .unwrap();
        let super::super::Step::Share(s) = &sc.steps[0] else {
            panic!("not a share step: {:?}", sc.steps[0]);
        };
        assert_eq!(
            super::super::invoke::share_args(s, &sc.cards[0])
                .to_argv()
                .join(" "),
            format!(
                "--from /dev/acq0 --to /dev/acq1-out --bytes 8388608 --ring-log2 10 \
                 --pattern {} --seed 7 --play-rate 1048576 --map-verify --until-gone",
                acq_wire::parse_pattern("prbs").unwrap()
            )
        );
    }

    #[test]
    fn bad_share_steps_are_refused_naming_the_field() {
        for (step, field) in [
            (r#"{"to": 2, "bytes": "1M"}"#, "steps[0].share.to"),
            (r#"{"from": 5, "bytes": "1M"}"#, "steps[0].share.from"),
            (r#"{"bytes": "1000"}"#, "steps[0].share.bytes"),
            (r#"{"bytes": 0}"#, "steps[0].share.bytes"),
            (
                r#"{"source": "heap", "bytes": "1M", "map_verify": true}"#,
                "steps[0].share.map_verify",
            ),
            (
                r#"{"bytes": "1M", "close_capture_after": "1M"}"#,
                "steps[0].share.close_capture_after",
            ),
            (
                r#"{"bytes": "2M", "close_capture_after": "1M", "until_gone": true}"#,
                "steps[0].share.until_gone",
            ),
            (r#"{"bytes": "1M", "hold_s": 0}"#, "steps[0].share.hold_s"),
            (r#"{"bytes": "1M", "hold_s": 61}"#, "steps[0].share.hold_s"),
        ] {
            let e = two_cards(step).expect_err(step);
            assert_eq!(e.location, field, "{step}: {}", e.reason);
        }
        assert!(two_cards(r#"{"source": "heap", "from": 9, "bytes": "1M"}"#).is_ok());
        let e = two_cards(r#"{"bytes": "1M", "until_gone": true}"#).expect_err("until_gone");
        assert_eq!(e.location, "steps[0].share.until_gone", "{}", e.reason);
        let e = parse(
            r#"{"cards": [{"device": {"transfer": "bar2", "ring_log2": 6}}, {}],
                "steps": [{"share": {"bytes": "1M"}}]}"#,
            "t.json",
        )
        .expect_err("bar2");
        assert_eq!(e.location, "steps[0].share.from", "{}", e.reason);
        // A byte-triggered fault on the exporting card is reached by a share step.
        assert!(parse(
            r#"{"cards": [{}, {}], "steps": [{"share": {"bytes": "8M"}}],
                "faults": [{"card": 0, "at": {"bytes": "4M"}, "inject": "hang"}]}"#,
            "t.json",
        )
        .is_ok());
        let e = two_cards(r#"{"bytes": "1M", "sauce": 1}"#).expect_err("unknown field");
        assert!(e.reason.contains("sauce"), "{}", e.reason);
    }
}

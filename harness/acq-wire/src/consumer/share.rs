//! `acq-share`: one card's capture ring played by another card's playback channel with
//! no CPU copy (dma-buf), as a type: built by the harness (a scenario's `share` step, the
//! bench's card-to-card rows), parsed and checked by the tool with the same rules. Its
//! result line is a [`ConsumerReport`](super::ConsumerReport) like every consumer's.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::argv::{push, push_if, ArgError, Argv};

/// Where the played buffer comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareSource {
    /// Card `--from`'s capture ring, exported as a dma-buf (the default).
    Card {
        /// `--from`: the exporting card's capture node (`/dev/acqN`).
        from: String,
    },
    /// `--heap PATH`: a buffer of a DMA heap (`/dev/dma_heap/system`), `pages` pages, that
    /// the tool writes the pattern into.
    Heap {
        /// The heap's device file.
        path: String,
        /// `--heap-pages`: the buffer's size in pages.
        pages: u32,
    },
    /// `--copy`: no dma-buf: read() from card `--from`, write() to card `--to`.
    Copy {
        /// `--from`: the card read from.
        from: String,
    },
}

impl ShareSource {
    /// The capture node the data comes from (none for a heap buffer).
    pub fn from(&self) -> Option<&str> {
        match self {
            ShareSource::Card { from } | ShareSource::Copy { from } => Some(from),
            ShareSource::Heap { .. } => None,
        }
    }

    fn is_card(&self) -> bool {
        matches!(self, ShareSource::Card { .. })
    }
}

/// `--from` when it is not given.
pub const FROM_DEFAULT: &str = "/dev/acq0";

/// The heap buffer's pages when `--heap-pages` is not given.
pub const HEAP_PAGES_DEFAULT: u32 = 64;

/// The most seconds `--hold-s` holds the dma-buf alone.
pub const HOLD_S_MAX: u64 = 60;

/// Everything `acq-share` is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareArgs {
    /// `--to`: the playing card's playback node (`/dev/acqM-out`).
    pub to: String,
    /// Where the buffer comes from.
    pub source: ShareSource,
    /// `--bytes`: a non-zero multiple of the block size.
    pub bytes: u64,
    /// The stream's settings, set on both cards: `--pattern`, `--seed`, `--block`,
    /// `--ring-log2` (the others are refused: the tool does not set them).
    pub card: super::DeviceArgs,
    /// `--play-rate`: the playing card's output rate in bytes/s (none: as fast as the data
    /// comes).
    pub play_rate: Option<u64>,
    /// `--map-verify`: also map the dma-buf read-only and check every block there.
    pub map_verify: bool,
    /// `--close-capture-after N`: close the exporting card's file once N bytes were
    /// queued, with blocks still queued on the playing card.
    pub close_capture_after: Option<u64>,
    /// `--until-gone`: end when the exporting card is unplugged.
    pub until_gone: bool,
    /// `--hold-s S`: at the end, hold only the dma-buf and its mapping for S seconds.
    pub hold_s: Option<u64>,
}

impl ShareArgs {
    /// Moves `bytes` from card `from`'s ring to playback node `to`, every other setting at
    /// its default.
    pub fn new(from: impl Into<String>, to: impl Into<String>, bytes: u64) -> ShareArgs {
        ShareArgs {
            to: to.into(),
            source: ShareSource::Card { from: from.into() },
            bytes,
            card: super::DeviceArgs::default(),
            play_rate: None,
            map_verify: false,
            close_capture_after: None,
            until_gone: false,
            hold_s: None,
        }
    }

    /// The usage text.
    pub fn usage() -> String {
        "acq-share --from /dev/acqN --to /dev/acqM-out --bytes N [--pattern P] [--seed S] \
         [--block B] [--ring-log2 L] [--map-verify] [--close-capture-after N] [--play-rate R] \
         [--until-gone] [--hold-s S] [--copy] | --heap /dev/dma_heap/system [--heap-pages N] \
         --to /dev/acqM-out --bytes N"
            .to_string()
    }

    /// The block size the stream moves (the card's 4096 unless `--block` says).
    pub fn block(&self) -> u32 {
        self.card.block.unwrap_or(4096)
    }

    /// The command line (without the program name) that [`ShareArgs::parse`] reads back
    /// into `self`.
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        match &self.source {
            ShareSource::Heap { path, pages } => {
                push(&mut v, "--heap", path);
                if *pages != HEAP_PAGES_DEFAULT {
                    push(&mut v, "--heap-pages", pages);
                }
            }
            ShareSource::Card { from } => push(&mut v, "--from", from),
            ShareSource::Copy { from } => {
                push(&mut v, "--from", from);
                v.push("--copy".into());
            }
        }
        push(&mut v, "--to", &self.to);
        push(&mut v, "--bytes", self.bytes);
        self.card.push_argv(&mut v);
        if let Some(r) = self.play_rate {
            push(&mut v, "--play-rate", r);
        }
        push_if(&mut v, "--map-verify", self.map_verify);
        if let Some(c) = self.close_capture_after {
            push(&mut v, "--close-capture-after", c);
        }
        push_if(&mut v, "--until-gone", self.until_gone);
        if let Some(h) = self.hold_s {
            push(&mut v, "--hold-s", h);
        }
        v
    }

    /// Parses a command line (without the program name) and checks it.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<ShareArgs, ArgError> {
        let mut a = ShareArgs::new(FROM_DEFAULT, "/dev/acq1-out", 0);
        let mut from: Option<String> = None;
        let mut heap: Option<String> = None;
        let mut heap_pages = HEAP_PAGES_DEFAULT;
        let mut copy = false;
        let mut argv = Argv::new(args);
        while let Some(flag) = argv.next_flag() {
            let f = flag.as_str();
            if matches!(f, "--pattern" | "--seed" | "--block" | "--ring-log2") {
                a.card.take(f, &mut argv)?;
                continue;
            }
            match f {
                "--from" => from = Some(argv.value(f)?),
                "--to" => a.to = argv.value(f)?,
                "--bytes" => a.bytes = argv.size(f)?,
                "--heap" => heap = Some(argv.value(f)?),
                "--heap-pages" => heap_pages = argv.small(f)?,
                "--copy" => copy = true,
                "--play-rate" => a.play_rate = Some(argv.size(f)?),
                "--map-verify" => a.map_verify = true,
                "--close-capture-after" => a.close_capture_after = Some(argv.size(f)?),
                "--until-gone" => a.until_gone = true,
                "--hold-s" => a.hold_s = Some(argv.size(f)?),
                other => return Err(ArgError::line(format!("unknown argument {other:?}"))),
            }
        }
        let from_or_default = |f: Option<String>| f.unwrap_or_else(|| FROM_DEFAULT.into());
        a.source = match (heap, copy) {
            (Some(_), true) => return Err(ArgError::new("--copy", "not with --heap")),
            (Some(_), false) if from.is_some() => {
                return Err(ArgError::new(
                    "--from",
                    "not with --heap (the buffer comes from the heap)",
                ))
            }
            (Some(path), false) => ShareSource::Heap {
                path,
                pages: heap_pages,
            },
            (None, true) => ShareSource::Copy {
                from: from_or_default(from),
            },
            (None, false) => ShareSource::Card {
                from: from_or_default(from),
            },
        };
        if heap_pages != HEAP_PAGES_DEFAULT && !matches!(a.source, ShareSource::Heap { .. }) {
            return Err(ArgError::new("--heap-pages", "needs --heap"));
        }
        a.check()?;
        Ok(a)
    }

    /// Checks the options against each other and against their limits (a scenario's
    /// `share` step is checked by this too).
    pub fn check(&self) -> Result<(), ArgError> {
        self.card.check()?;
        let block = u64::from(self.block());
        if self.bytes == 0 || !self.bytes.is_multiple_of(block) {
            return Err(ArgError::new(
                "--bytes",
                format!(
                    "{} is not a non-zero multiple of the block size {block}",
                    self.bytes
                ),
            ));
        }
        if let ShareSource::Heap { pages: 0, .. } = self.source {
            return Err(ArgError::new("--heap-pages", "must be more than 0"));
        }
        let card_only = [
            ("--map-verify", self.map_verify),
            ("--close-capture-after", self.close_capture_after.is_some()),
            ("--until-gone", self.until_gone),
            ("--hold-s", self.hold_s.is_some()),
        ];
        if let Some((flag, _)) = card_only
            .iter()
            .find(|(_, set)| *set && !self.source.is_card())
        {
            return Err(ArgError::new(
                flag,
                "only with a card's ring as the source (not --heap or --copy)",
            ));
        }
        if let Some(c) = self.close_capture_after {
            if c == 0 || c >= self.bytes {
                return Err(ArgError::new(
                    "--close-capture-after",
                    format!("{c} must be above 0 and below --bytes ({})", self.bytes),
                ));
            }
        }
        if self.until_gone && self.close_capture_after.is_some() {
            return Err(ArgError::new(
                "--until-gone",
                "not with --close-capture-after: both end the stream early",
            ));
        }
        if self.hold_s.is_some_and(|h| h == 0 || h > HOLD_S_MAX) {
            return Err(ArgError::new("--hold-s", "must be 1 ..= 60"));
        }
        let unset = super::DeviceArgs {
            block: None,
            ring_log2: None,
            pattern: None,
            seed: None,
            ..self.card.clone()
        };
        if unset.any() {
            return Err(ArgError::line(
                "acq-share sets only --pattern, --seed, --block and --ring-log2 of the cards",
            ));
        }
        Ok(())
    }
}

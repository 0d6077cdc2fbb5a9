//! Progress bars: a bar redraws what it shows many times, so its frames are not its observations.
//!
//! A frame (a tqdm postfix, a rich metrics column) is held until the bar moves on – to another item count, another
//! bar, or a line that is no frame – and then its values go to [`Names::bar`], which observes what changed. The
//! last frame at a count is the one that counts: Lightning draws each count twice, with the previous batch's
//! values first. Frames at count 0 show what is left from before (a sanity check's values) and are skipped.

use std::hash::{Hash, Hasher};

use super::Format;
use super::formats::{Frame, frame_pairs};
use super::names::{Names, Seen};
use crate::aggregate::FxHasher;
use crate::rules::{Match, ValueKind};
use crate::value;

/// Bytes of a frame's metrics text kept (a rich column wraps over a few lines).
const MAX_TEXT: usize = 4096;
/// Bytes of a frame's line kept as `--explain`'s sample.
const MAX_SAMPLE: usize = 200;

#[derive(Debug, Clone, Copy)]
struct Head {
    bar: u64,
    count: u64,
    line: u64,
    rich: bool,
}

/// The frame a bar showed last, not yet observed.
#[derive(Default)]
pub(super) struct Bars {
    pending: Option<Head>,
    text: Vec<u8>,
    sample: Vec<u8>,
}

impl Bars {
    /// A frame on line `line` (`seg` is its redraw).
    pub fn frame(
        &mut self,
        f: Frame<'_>,
        seg: &[u8],
        line: u64,
        names: &mut Names,
        emit: &mut dyn FnMut(Match<'_>, u64),
    ) {
        let mut h = FxHasher::default();
        f.bar.hash(&mut h);
        let bar = h.finish();
        // A bar without a counter: each line is its own count.
        let count = f.count.unwrap_or(line.wrapping_add(1 << 62));
        if self.pending.is_some_and(|p| (p.bar, p.count) != (bar, count)) {
            self.finish(names, emit);
        }
        if f.count == Some(0) {
            self.pending = None;
            return;
        }
        self.pending = Some(Head { bar, count, line, rich: f.rich });
        self.text.clear();
        self.text.extend_from_slice(&f.text[..f.text.len().min(MAX_TEXT)]);
        self.sample.clear();
        self.sample.extend_from_slice(&seg[..seg.len().min(MAX_SAMPLE)]);
    }

    /// The metrics column of the pending rich frame continues on this segment.
    pub fn append(&mut self, seg: &[u8]) {
        if self.pending.is_some_and(|p| p.rich) && self.text.len() + seg.len() < MAX_TEXT {
            self.text.push(b' ');
            self.text.extend_from_slice(value::trim(seg));
        }
    }

    /// Observes the pending frame, if any.
    pub fn finish(&mut self, names: &mut Names, emit: &mut dyn FnMut(Match<'_>, u64)) {
        let Some(head) = self.pending.take() else { return };
        let format = if head.rich { Format::Rich } else { Format::Tqdm };
        let sample = &self.sample;
        frame_pairs(&self.text, head.rich, &mut |p| {
            let seen = Seen {
                name: p.name,
                raw: p.raw,
                kind: ValueKind::Number,
                step: None,
                time: None,
                format,
                context: sample,
                line: head.line,
            };
            names.bar(seen, head.bar, head.count, emit);
        });
    }
}

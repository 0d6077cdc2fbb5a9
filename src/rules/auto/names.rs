//! What a name is: a metric, a parameter, or not known yet – decided from what the log did with it.
//!
//! A name read in a known metric context (a Keras epoch line, an XGBoost round, a Hugging Face log dict, a
//! progress bar's postfix, a results table) is a metric at once. A name read in a weak format (`name=value`,
//! `name: value`, a JSON or dict line without a framework's marks) is held back until the log treats it as a
//! metric: its value changes, or it is printed alone on a report line after training began. What is never
//! confirmed, and what sits inside a repr (`Namespace(lr=0.01)`, `Linear(in_features=784)`), is a parameter,
//! shown apart.
//!
//! Memory is bounded: at most [`MAX_NAMES`] names are tracked, [`MAX_HELD`] observations held back (at most
//! [`MAX_HELD_PER_NAME`] per name, their bytes in one arena of at most [`MAX_ARENA`] bytes). Observations that do
//! not fit are counted and dropped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Range;

use super::Format;
use crate::aggregate::FxHasher;
use crate::parser::within_bounds;
use crate::rules::{Match, Origin, ValueKind};

/// Names tracked (metrics, parameters and pending names together).
pub(super) const MAX_NAMES: usize = 4096;
/// Observations held back, in all.
pub(super) const MAX_HELD: usize = 4096;
/// Observations held back per name (a constant printed every epoch stays pending; its later copies are dropped).
pub(super) const MAX_HELD_PER_NAME: u32 = 64;
/// Bytes of held observations (values, timestamps, sample lines).
pub(super) const MAX_ARENA: usize = 1 << 20;
/// Bytes of a held observation's line kept for `--explain`.
const SAMPLE_BYTES: usize = 200;

/// A parameter: a value printed once (a hyper-parameter, a config echo), not a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name as printed.
    pub name: String,
    /// The value as printed.
    pub raw: String,
    /// The line it was printed on.
    pub line: u64,
    /// The format it was read in.
    pub format: Format,
}

/// An observation a weak format made, held back until its name is confirmed.
struct Held {
    id: u32,
    line: u64,
    raw: Range<usize>,
    time: Option<Range<usize>>,
    context: Range<usize>,
    step: Option<u64>,
    kind: ValueKind,
    format: Format,
}

/// The first value a weak format gave a name that is not confirmed yet.
struct Pending {
    hash: u64,
    raw: Range<usize>,
    line: u64,
    format: Format,
    held: u32,
}

/// Where a progress bar last showed a name: its value, and the bar and count it was shown at.
#[derive(Clone, Copy)]
struct BarMark {
    hash: u64,
    bar: u64,
    count: u64,
}

#[derive(Default)]
struct State {
    metric: bool,
    pending: Option<Pending>,
    /// The first value read inside a repr: a parameter whatever else happens.
    param: Option<(Range<usize>, u64, Format)>,
    bar: Option<BarMark>,
}

/// One observation to classify, borrowed from the segment it was read in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
    pub kind: ValueKind,
    pub step: Option<u64>,
    pub time: Option<&'a [u8]>,
    pub format: Format,
    pub context: &'a [u8],
    pub line: u64,
}

impl<'a> Seen<'a> {
    fn to_match(self, key: Option<u32>) -> Match<'a> {
        Match {
            name: self.name,
            raw: self.raw,
            step: self.step,
            time: self.time,
            kind: self.kind,
            origin: Origin::Auto(self.format),
            context: self.context,
            key,
        }
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The names of a run and what each is.
pub(super) struct Names {
    ids: FxMap<Box<[u8]>, u32>,
    names: Vec<Box<[u8]>>,
    states: Vec<State>,
    held: Vec<Held>,
    arena: Vec<u8>,
    /// A metric was observed: training has begun.
    pub started: bool,
    /// Observations dropped because a bound was reached.
    pub dropped: u64,
    /// Only these names are metrics (none: every name).
    pub only: Option<Vec<Box<[u8]>>>,
    /// Recently looked-up ids by [`recent_slot`] (`u32::MAX`: empty).
    recent: [u32; RECENT],
}

/// Slots of the recent-names cache.
const RECENT: usize = 64;

/// A name's slot in the recent-names cache: its length and three of its 8-byte words (start, middle, end), so that
/// names differing in one byte anywhere (`validation_0-logloss`, `validation_1-logloss`) mostly take different slots.
fn recent_slot(name: &[u8]) -> usize {
    let n = name.len();
    let word = |at: usize| -> u64 {
        match name.get(at..at + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().expect("eight bytes")),
            None => name[at.min(n)..].iter().fold(0, |w, &b| (w << 8) | u64::from(b)),
        }
    };
    let h = word(0) ^ word(n.saturating_sub(8)).rotate_left(21) ^ word((n / 2).saturating_sub(4)).rotate_left(42);
    ((h ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % RECENT
}

fn hash(raw: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    raw.hash(&mut h);
    h.finish()
}

impl Names {
    /// No names yet; `only`: the names kept as metrics (none: every name).
    pub fn new(only: Option<Vec<Box<[u8]>>>) -> Self {
        Names {
            ids: FxMap::default(),
            names: Vec::new(),
            states: Vec::new(),
            held: Vec::new(),
            arena: Vec::new(),
            started: false,
            dropped: 0,
            only,
            recent: [u32::MAX; RECENT],
        }
    }

    fn id(&mut self, name: &[u8]) -> Option<u32> {
        // A line's names are mostly the previous line's: a small direct-mapped cache on the name's length and
        // ends answers before the hash map (its entry is checked against the name, so it is never wrong).
        let slot = recent_slot(name);
        let cached = self.recent[slot] as usize;
        if cached < self.names.len() && *self.names[cached] == *name {
            return Some(cached as u32);
        }
        if let Some(&id) = self.ids.get(name) {
            self.recent[slot] = id;
            return Some(id);
        }
        if self.names.len() >= MAX_NAMES {
            self.dropped += 1;
            return None;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.into(), id);
        self.names.push(name.into());
        self.states.push(State::default());
        Some(id)
    }

    fn store(&mut self, bytes: &[u8]) -> Option<Range<usize>> {
        (self.arena.len() + bytes.len() <= MAX_ARENA).then(|| {
            let start = self.arena.len();
            self.arena.extend_from_slice(bytes);
            start..self.arena.len()
        })
    }

    fn wanted(&self, name: &[u8]) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|n| **n == *name))
    }

    fn emit(&mut self, id: u32, seen: Seen<'_>, emit: &mut dyn FnMut(Match<'_>, u64)) {
        // Values a weak format gave the name with a step before a metric context confirmed it (a report line such
        // as `epoch 1: loss=0.44 accuracy=0.81`) are observed with it, in the log's order: those printed before
        // this value first, those printed after it (a progress bar's frame is observed when the bar moves on,
        // lines after it was drawn) after it. Values printed without a step (a configuration echoed before
        // training, `learning_rate=0.002,`) stay parameters.
        let held = self.states[id as usize].pending.as_ref().is_some_and(|p| p.held > 0);
        let first_stepped = held && self.held.iter().find(|h| h.id == id).is_some_and(|h| h.step.is_some());
        if held {
            self.release_where(id, |h| h.step.is_some() && h.line <= seen.line, emit);
        }
        self.states[id as usize].metric = true;
        self.started = true;
        if self.wanted(seen.name) {
            emit(seen.to_match(Some(id)), seen.line);
        }
        if held {
            self.release_where(id, |h| h.step.is_some(), emit);
            self.held.retain(|h| h.id != id);
            let state = &mut self.states[id as usize];
            if first_stepped {
                state.pending = None;
            } else if let Some(p) = state.pending.as_mut() {
                p.held = 0;
            }
        }
    }

    /// A name or value over the parser's bounds is never tracked: it goes straight to the parser, which drops it
    /// whole and counts it (so a log of long names costs no memory here either).
    fn oversized(seen: &Seen<'_>, emit: &mut dyn FnMut(Match<'_>, u64)) -> bool {
        let over = !within_bounds(seen.name, seen.raw);
        if over {
            emit(seen.to_match(None), seen.line);
        }
        over
    }

    /// A name read in a known metric context: a metric, observed now.
    pub fn metric(&mut self, seen: Seen<'_>, emit: &mut dyn FnMut(Match<'_>, u64)) {
        if Self::oversized(&seen, emit) {
            return;
        }
        if let Some(id) = self.id(seen.name) {
            self.emit(id, seen, emit);
        } else if self.wanted(seen.name) {
            // Beyond the bound of tracked names a metric context still makes a metric.
            self.started = true;
            emit(seen.to_match(None), seen.line);
        }
    }

    /// A name shown by a progress bar at `bar`'s item `count`: observed when its value changed since the bar
    /// last showed it – or, for Lightning's per-step values (`*_step`), when the count moved on – since a bar
    /// redraws what it shows many times. Lightning's logger version, `v_num`, is no metric.
    pub fn bar(&mut self, seen: Seen<'_>, bar: u64, count: u64, emit: &mut dyn FnMut(Match<'_>, u64)) {
        if seen.name == b"v_num" || Self::oversized(&seen, emit) {
            return;
        }
        let Some(id) = self.id(seen.name) else { return };
        let h = hash(seen.raw);
        let state = &mut self.states[id as usize];
        let per_step = seen.name.ends_with(b"_step");
        let new = match state.bar {
            None => true,
            Some(m) => m.hash != h || (per_step && (m.bar, m.count) != (bar, count)),
        };
        state.bar = Some(BarMark { hash: h, bar, count });
        if new {
            self.emit(id, seen, emit);
        }
    }

    /// A name read inside a repr: a parameter (its first value is kept).
    pub fn param(&mut self, seen: Seen<'_>) {
        if !within_bounds(seen.name, seen.raw) {
            return;
        }
        let Some(id) = self.id(seen.name) else { return };
        if self.states[id as usize].param.is_none()
            && let Some(raw) = self.store(seen.raw)
        {
            self.states[id as usize].param = Some((raw, seen.line, seen.format));
        }
    }

    /// A name read in a weak format. `report`: the segment holds nothing but pairs (`accuracy=0.98`,
    /// `test accuracy: 0.95`), so after training began a new name on it is a final result.
    pub fn weak(&mut self, seen: Seen<'_>, report: bool, emit: &mut dyn FnMut(Match<'_>, u64)) {
        if Self::oversized(&seen, emit) {
            return;
        }
        if self.only.is_some() && self.wanted(seen.name) {
            // The caller named it a metric (a Katib Trial's objective): no need to wait for the log to show it.
            return self.metric(seen, emit);
        }
        let Some(id) = self.id(seen.name) else { return };
        let state = &self.states[id as usize];
        if state.metric {
            self.release(id, emit);
            return self.emit(id, seen, emit);
        }
        let h = hash(seen.raw);
        match &state.pending {
            None if self.started && report && state.param.is_none() => self.emit(id, seen, emit),
            None => {
                let Some(raw) = self.store(seen.raw) else {
                    self.dropped += 1;
                    return;
                };
                self.states[id as usize].pending =
                    Some(Pending { hash: h, raw, line: seen.line, format: seen.format, held: 0 });
                self.hold(id, seen);
            }
            Some(p) if p.hash != h => {
                self.release(id, emit);
                self.emit(id, seen, emit);
            }
            Some(_) => self.hold(id, seen),
        }
    }

    fn hold(&mut self, id: u32, seen: Seen<'_>) {
        let count = self.states[id as usize].pending.as_ref().map_or(0, |p| p.held);
        if count >= MAX_HELD_PER_NAME || self.held.len() >= MAX_HELD {
            self.dropped += 1;
            return;
        }
        let sample = &seen.context[..seen.context.len().min(SAMPLE_BYTES)];
        let (Some(raw), Some(context)) = (self.store(seen.raw), self.store(sample)) else {
            self.dropped += 1;
            return;
        };
        let time = seen.time.and_then(|t| self.store(t));
        self.held.push(Held {
            id,
            line: seen.line,
            raw,
            time,
            context,
            step: seen.step,
            kind: seen.kind,
            format: seen.format,
        });
        if let Some(p) = self.states[id as usize].pending.as_mut() {
            p.held += 1;
        }
    }

    /// The observations held back for `id`, now that it is a metric, in the order they were made.
    fn release(&mut self, id: u32, emit: &mut dyn FnMut(Match<'_>, u64)) {
        if self.states[id as usize].pending.take().is_none_or(|p| p.held == 0) {
            return;
        }
        self.release_where(id, |_| true, emit);
        self.states[id as usize].metric = true;
        self.started = true;
    }

    /// Observes the values held for `id` that `which` accepts, in their order, and forgets them.
    fn release_where(&mut self, id: u32, which: impl Fn(&Held) -> bool, emit: &mut dyn FnMut(Match<'_>, u64)) {
        let name = &self.names[id as usize];
        let wanted = self.only.as_ref().is_none_or(|only| only.iter().any(|n| **n == **name));
        let mut released = 0;
        for h in self.held.iter().filter(|h| h.id == id && which(h)) {
            released += 1;
            if wanted {
                let m = Match {
                    name,
                    raw: &self.arena[h.raw.clone()],
                    step: h.step,
                    time: h.time.clone().map(|t| &self.arena[t]),
                    kind: h.kind,
                    origin: Origin::Auto(h.format),
                    context: &self.arena[h.context.clone()],
                    key: Some(id),
                };
                emit(m, h.line);
            }
        }
        if released > 0 {
            self.held.retain(|h| h.id != id || !which(h));
            if let Some(p) = self.states[id as usize].pending.as_mut() {
                p.held -= released;
            }
        }
    }

    /// The parameters: values read inside reprs, and values a weak format gave a name that were never confirmed
    /// (nor released when the name became a metric), in the order of their lines.
    pub fn params(&self) -> Vec<Param> {
        let text = |r: &Range<usize>| String::from_utf8_lossy(&self.arena[r.clone()]).into_owned();
        let mut out: Vec<Param> = self
            .states
            .iter()
            .zip(&self.names)
            .filter_map(|(s, name)| {
                let (raw, line, format) = match (&s.param, &s.pending) {
                    (Some((raw, line, format)), _) => (raw, *line, *format),
                    (None, Some(p)) => (&p.raw, p.line, p.format),
                    _ => return None,
                };
                Some(Param { name: String::from_utf8_lossy(name).into_owned(), raw: text(raw), line, format })
            })
            .collect();
        out.sort_by_key(|p| p.line);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(name: &'a str, raw: &'a str, line: u64) -> Seen<'a> {
        Seen {
            name: name.as_bytes(),
            raw: raw.as_bytes(),
            kind: ValueKind::Number,
            step: None,
            time: None,
            format: Format::KatibPairs,
            context: b"ctx",
            line,
        }
    }

    fn run(names: &mut Names, f: impl FnOnce(&mut Names, &mut dyn FnMut(Match<'_>, u64))) -> Vec<(String, u64)> {
        let mut got = Vec::new();
        f(names, &mut |m, line| {
            got.push((format!("{}={}", String::from_utf8_lossy(m.name), String::from_utf8_lossy(m.raw)), line))
        });
        got
    }

    #[test]
    fn a_weak_name_is_held_until_its_value_changes_then_released_in_order() {
        let mut n = Names::new(None);
        assert!(run(&mut n, |n, e| n.weak(seen("lr", "0.01", 1), false, e)).is_empty());
        assert!(run(&mut n, |n, e| n.weak(seen("loss", "0.9", 2), false, e)).is_empty());
        let got = run(&mut n, |n, e| n.weak(seen("loss", "0.5", 3), false, e));
        assert_eq!(got, [("loss=0.9".into(), 2), ("loss=0.5".into(), 3)]);
        assert!(n.started);
        let params = n.params();
        assert_eq!(params.len(), 1);
        assert_eq!((params[0].name.as_str(), params[0].raw.as_str(), params[0].line), ("lr", "0.01", 1));
    }

    #[test]
    fn after_training_a_report_line_is_a_result_and_a_repr_a_parameter() {
        let mut n = Names::new(None);
        n.param(seen("in_features", "784", 1));
        run(&mut n, |n, e| n.metric(seen("loss", "0.5", 2), e));
        let got = run(&mut n, |n, e| n.weak(seen("test accuracy", "0.95", 3), true, e));
        assert_eq!(got.len(), 1);
        assert!(run(&mut n, |n, e| n.weak(seen("skipped", "0", 4), false, e)).is_empty());
        let params: Vec<_> = n.params().into_iter().map(|p| p.name).collect();
        assert_eq!(params, ["in_features", "skipped"]);
    }

    #[test]
    fn bars_observe_changes_and_per_step_values_per_count() {
        let mut n = Names::new(None);
        let mut count = 0;
        for (name, raw, c) in [("loss_step", "1.0", 1), ("val", "0.5", 1), ("loss_step", "1.0", 2), ("val", "0.5", 2)] {
            count += run(&mut n, |n, e| n.bar(seen(name, raw, 1), 7, c, e)).len();
        }
        assert_eq!(count, 3);
        assert!(run(&mut n, |n, e| n.bar(seen("v_num", "0", 1), 7, 3, e)).is_empty());
    }

    #[test]
    fn a_name_the_caller_wants_is_a_metric_at_once() {
        let mut n = Names::new(Some(vec![b"accuracy"[..].into()]));
        assert_eq!(run(&mut n, |n, e| n.weak(seen("accuracy", "0.5", 1), false, e)).len(), 1);
        assert!(run(&mut n, |n, e| n.weak(seen("loss", "0.5", 2), false, e)).is_empty());
        assert!(run(&mut n, |n, e| n.weak(seen("loss", "0.4", 3), false, e)).is_empty(), "not wanted");
    }

    #[test]
    fn holding_is_bounded_per_name() {
        let mut n = Names::new(None);
        for i in 0..200 {
            run(&mut n, |n, e| n.weak(seen("c", "1", i), false, e));
        }
        assert_eq!(n.held.len(), MAX_HELD_PER_NAME as usize);
        assert_eq!(n.dropped, 200 - 1 - u64::from(MAX_HELD_PER_NAME) + 1);
        let got = run(&mut n, |n, e| n.weak(seen("c", "2", 300), false, e));
        assert_eq!(got.len(), MAX_HELD_PER_NAME as usize + 1);
    }
}

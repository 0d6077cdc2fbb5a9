//! Recognition: with no rule flags, the log itself decides which formats apply.
//!
//! Every known format is tried on every line that can hold one, from the first line to the last, so a format
//! that first appears after an hour of training (an evaluation table after a progress bar) is read then. The
//! formats are in [`Format`]; the block-wide finders in `find.rs`, the parsers in `formats.rs`, the progress bars
//! in `bars.rs`, and what a name is (a metric, a parameter, not known yet) in `names.rs`.
//!
//! Invariants:
//! - Only lines a block-wide finder of `find.rs` hits are looked at (a pair's separator before a value, a
//!   terminal escape, a multi-line format's header), except inside a multi-line context (a results table,
//!   a metrics block, a wrapped rich column) and, while nothing was found yet, in the first
//!   [`SAMPLE_LINES`] lines, which are sampled for the "no metrics found" help. A line no finder hits has no
//!   effect whatever path it takes, so block and line-by-line scanning, and any chunking, give the same result.
//! - No allocation per line: segments are cleaned into one reused buffer, a segment's pairs are kept in reused
//!   vectors; only new names and held-back observations take memory, within fixed bounds (`names.rs`).
//! - A stream that looks binary in its first [`BINARY_WINDOW`] bytes is not read from there on (one warning).
//!
//! What it does not do: it never changes what explicit rules produce – it runs only when no rule flag, no
//! `--metrics`, no `--format json` and no `--katib-semantics` was given.

use memchr::memmem;

use super::presets::scan_at_step;
use super::{Match, ValueKind};
use crate::value;

mod bars;
mod find;
mod formats;
mod names;

use bars::Bars;
use find::{Finders, Hits, NO_HIT};
use formats::{Marks, Pair, Place, WeakPair};
pub use names::Param;
use names::{Names, Seen};

/// The lines of a stream, from its first, sampled for the "no metrics found" help while nothing was found.
pub const SAMPLE_LINES: u64 = 4096;
/// The bytes at the start of the input checked for binary content.
pub const BINARY_WINDOW: u64 = 4096;
/// Control bytes (other than tab, newline, carriage return, form feed, backspace and escape) in the window
/// that make the input binary.
const BINARY_CONTROLS: u32 = 32;
/// Lines sampled at most.
const MAX_SAMPLES: usize = 6;
/// Lines a multi-line context (a table, a block, a wrapped column) lasts at most.
const MAX_CONTEXT_LINES: u16 = 256;

/// A format recognised without being told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// TensorFlow's `Accuracy at step 120: 0.9134`.
    TfStep,
    /// Keras `fit`/`evaluate` lines and their `\r` redraws, `… 12ms/step - loss: 0.31 - accuracy: 0.90`.
    Keras,
    /// Hugging Face Trainer log dicts, `{'loss': 0.69, 'learning_rate': 4e-05, 'epoch': 1.0}`.
    HfTrainer,
    /// Hugging Face `log_metrics` blocks, `***** train metrics *****` then `  train_loss = 0.5964`.
    HfMetrics,
    /// XGBoost rounds, `[3]\tvalidation_0-logloss:0.61`.
    Xgboost,
    /// LightGBM rounds, `[10]\tvalid_0's binary_logloss: 0.3`.
    Lightgbm,
    /// PyTorch's tutorial loop, `[1,  2000] loss: 2.187`.
    TorchBatch,
    /// tqdm postfixes (PyTorch Lightning's default bar), `…it/s, v_num=0, train_loss=0.3]`.
    Tqdm,
    /// rich progress columns (Lightning's `RichProgressBar`), `… 6.20it/s v_num: 0.000 train_loss: 0.62`.
    Rich,
    /// Lightning's results tables after `validate`/`test`, `val_acc │ 0.9513888955116272`.
    ResultsTable,
    /// scikit-learn's MLP, `Iteration 3, loss = 0.41` and `Validation score: 0.9`.
    SklearnMlp,
    /// scikit-learn's SGD, `-- Epoch 3` then `Norm: …, Avg. loss: 0.05, Objective: 0.07`.
    SklearnSgd,
    /// Katib's metrics format, `{metricName: accuracy, metricValue: 0.9803}`.
    KatibMetricName,
    /// Katib's default format, `loss=0.2351` (a metric once its value changes).
    KatibPairs,
    /// `name: value` in a loop's own lines, `epoch 3: loss: 0.31 accuracy: 0.90` (a metric once it changes).
    ColonPairs,
    /// JSON lines, Katib's JSON format, `{"loss": "0.31", "global_step": "45"}` (a metric once it changes).
    JsonLine,
    /// A Python dict line without a framework's marks, `{'eta': 0.1, 'max_depth': 3}` (a metric once it changes).
    PyDict,
}

impl Format {
    /// Every format, in the order the help lists them.
    pub const ALL: [Format; 17] = [
        Format::TfStep,
        Format::Keras,
        Format::HfTrainer,
        Format::HfMetrics,
        Format::Xgboost,
        Format::Lightgbm,
        Format::TorchBatch,
        Format::Tqdm,
        Format::Rich,
        Format::ResultsTable,
        Format::SklearnMlp,
        Format::SklearnSgd,
        Format::KatibMetricName,
        Format::KatibPairs,
        Format::ColonPairs,
        Format::JsonLine,
        Format::PyDict,
    ];

    /// The format's name, as `--explain` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Format::TfStep => "tensorflow",
            Format::Keras => "keras",
            Format::HfTrainer => "hf-trainer",
            Format::HfMetrics => "hf-metrics-block",
            Format::Xgboost => "xgboost",
            Format::Lightgbm => "lightgbm",
            Format::TorchBatch => "pytorch-tutorial",
            Format::Tqdm => "tqdm",
            Format::Rich => "rich",
            Format::ResultsTable => "lightning-table",
            Format::SklearnMlp => "sklearn-mlp",
            Format::SklearnSgd => "sklearn-sgd",
            Format::KatibMetricName => "katib-metricname",
            Format::KatibPairs => "name=value",
            Format::ColonPairs => "name: value",
            Format::JsonLine => "json-line",
            Format::PyDict => "python-dict",
        }
    }

    /// What the format reads, in one line.
    pub fn example(self) -> &'static str {
        match self {
            Format::TfStep => "TensorFlow `Accuracy at step 120: 0.9134`",
            Format::Keras => "Keras `12ms/step - loss: 0.31 - accuracy: 0.90` (and its progress-bar redraws)",
            Format::HfTrainer => "Hugging Face Trainer `{'loss': 0.69, 'learning_rate': 4e-05, 'epoch': 1.0}`",
            Format::HfMetrics => "Hugging Face `***** train metrics *****` blocks",
            Format::Xgboost => "XGBoost `[3]\\tvalidation_0-logloss:0.61`",
            Format::Lightgbm => "LightGBM `[10]\\tvalid_0's binary_logloss: 0.3`",
            Format::TorchBatch => "PyTorch tutorial `[1,  2000] loss: 2.187`",
            Format::Tqdm => "tqdm / Lightning bars `…it/s, train_loss=0.3]`",
            Format::Rich => "rich / Lightning bars `…it/s train_loss: 0.3`",
            Format::ResultsTable => "Lightning results tables `val_acc  0.95`",
            Format::SklearnMlp => "scikit-learn `Iteration 3, loss = 0.41`, `Validation score: 0.9`",
            Format::SklearnSgd => "scikit-learn SGD `-- Epoch 3` / `Avg. loss: 0.05, Objective: 0.07`",
            Format::KatibMetricName => "Katib `{metricName: accuracy, metricValue: 0.98}`",
            Format::KatibPairs => "Katib `name=value` (once the value changes)",
            Format::ColonPairs => "`name: value` (once the value changes)",
            Format::JsonLine => "JSON lines `{\"loss\": 0.31}` (once the value changes)",
            Format::PyDict => "dict lines `{'loss': 0.31}` (once the value changes)",
        }
    }
}

/// Where a segment's observations come from: its line's number and timestamp, the segment itself.
#[derive(Clone, Copy)]
struct At<'a> {
    time: Option<&'a [u8]>,
    seg: &'a [u8],
    line: u64,
}

impl<'a> At<'a> {
    fn seen<'b>(self, name: &'b [u8], raw: &'b [u8], kind: ValueKind, step: Option<u64>, format: Format) -> Seen<'b>
    where
        'a: 'b,
    {
        Seen { name, raw, kind, step, time: self.time, format, context: self.seg, line: self.line }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No multi-line context.
    None,
    /// A rich frame's metrics column may continue on the next lines.
    Rich(u16),
    /// Inside Lightning's results table (`rows`: a row was read; the next rule closes it).
    Table { lines: u16, rows: bool },
    /// Inside a Hugging Face `log_metrics` block.
    HfMetrics(u16),
}

/// What the recognition saw, for the "no metrics found" help.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Lines that looked numeric but matched no format (line number, text).
    pub samples: Vec<(u64, String)>,
    /// The input looked binary from this byte on.
    pub binary_at: Option<u64>,
    /// Observations dropped at a bound of the recognition.
    pub dropped: u64,
}

/// The recognition's state for a run.
pub struct Auto {
    finders: Finders,
    /// The weak pairs of the segment being read (reused: no allocation per line).
    spots: Vec<Spot>,
    /// The pairs of the object being read (reused).
    pairs: Vec<(Span, Span, ValueKind)>,
    at_step: memmem::Finder<'static>,
    clean: Vec<u8>,
    mode: Mode,
    sgd_step: Option<u64>,
    bars: Bars,
    names: Names,
    time: String,
    /// Bytes looked at so far (the binary check's position).
    offset: u64,
    controls: u32,
    binary_at: Option<u64>,
    samples: Vec<(u64, String)>,
}

impl std::fmt::Debug for Auto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auto").field("mode", &self.mode).finish()
    }
}

impl Auto {
    /// Recognition of every format; `only`: the names to keep as metrics (none: every metric).
    pub fn new(only: Option<Vec<Box<[u8]>>>) -> Self {
        Auto {
            finders: Finders::new(),
            spots: Vec::new(),
            pairs: Vec::new(),
            at_step: memmem::Finder::new(b" at step "),
            clean: Vec::new(),
            mode: Mode::None,
            sgd_step: None,
            bars: Bars::default(),
            names: Names::new(only),
            time: String::new(),
            offset: 0,
            controls: 0,
            binary_at: None,
            samples: Vec::new(),
        }
    }

    /// The parameters seen so far (see [`Param`]).
    pub fn params(&self) -> Vec<Param> {
        self.names.params()
    }

    /// What was seen, for the "no metrics found" help.
    pub fn seen(&self) -> Findings {
        Findings { samples: self.samples.clone(), binary_at: self.binary_at, dropped: self.names.dropped }
    }

    /// A stream ended: what a progress bar showed last is observed, multi-line contexts end.
    pub fn end(&mut self, emit: &mut dyn FnMut(Match<'_>, u64)) {
        self.bars.finish(&mut self.names, emit);
        self.mode = Mode::None;
    }

    /// One line (without its `\n`), numbered `number`, read at `time` (a pod log's) when given.
    pub fn line(&mut self, line: &[u8], number: u64, time: Option<&[u8]>, emit: &mut dyn FnMut(Match<'_>, u64)) {
        let offset = self.offset;
        self.offset += line.len() as u64 + 1;
        if self.binary_from(line, offset).is_some() {
            return;
        }
        self.visit(line, number, time, emit);
    }

    /// A block of complete lines, each ending in `\n`, the first numbered `first`; returns the number of lines.
    ///
    /// # Performance
    /// The block-wide finders of `find.rs` (a `memchr3` with checks, a `memchr2`, a small Aho–Corasick search)
    /// find the lines that can hold a format; only those are parsed (see `benches/throughput.rs` and
    /// `docs/performance.md`).
    pub fn scan_block(&mut self, block: &[u8], first: u64, emit: &mut dyn FnMut(Match<'_>, u64)) -> u64 {
        let offset = self.offset;
        self.offset += block.len() as u64;
        let stop = self.binary_from(block, offset).unwrap_or(block.len());
        let (mut pos, mut number) = (0usize, first);
        let mut hits = Hits::new();
        let mut fresh = true;
        while pos < block.len() {
            if self.every_line(number) {
                let end = pos + memchr::memchr(b'\n', &block[pos..]).unwrap_or(block.len() - pos);
                if end >= stop {
                    break;
                }
                self.visit(&block[pos..end], number, None, emit);
                number += 1;
                pos = end + 1;
                fresh = true;
                continue;
            }
            let next = hits.next(&self.finders, block, pos, fresh);
            fresh = false;
            if next == NO_HIT {
                break;
            }
            // The lines before the hit's: counted, and the last one's end is the hit line's start (a short gap in
            // one pass, a long one with two vectorised searches).
            let mut start = pos;
            if next - pos <= 256 {
                for i in memchr::memchr_iter(b'\n', &block[pos..next]) {
                    number += 1;
                    start = pos + i + 1;
                }
            } else if let Some(i) = memchr::memrchr(b'\n', &block[pos..next]) {
                start = pos + i + 1;
                number += crate::lines::count_newlines(&block[pos..start]);
            }
            let end = next + memchr::memchr(b'\n', &block[next..]).unwrap_or(block.len() - next);
            if end >= stop {
                pos = start;
                break;
            }
            let header = hits.header_before(end);
            self.candidate(&block[start..end], number, None, header, emit);
            number += 1;
            pos = end + 1;
        }
        number + crate::lines::count_newlines(&block[pos.min(block.len())..]) - first
    }

    /// Every line must be looked at: inside a multi-line context, or while sampling.
    fn every_line(&self, number: u64) -> bool {
        self.mode != Mode::None || (!self.names.started && number <= SAMPLE_LINES && self.samples.len() < MAX_SAMPLES)
    }

    /// Where in `bytes` (at input position `offset`) the input turns out binary, if it does by then.
    fn binary_from(&mut self, bytes: &[u8], offset: u64) -> Option<usize> {
        if self.binary_at.is_some() {
            return Some(0);
        }
        let window = BINARY_WINDOW.checked_sub(offset)? as usize;
        for (i, &b) in bytes[..bytes.len().min(window)].iter().enumerate() {
            if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x08 | 0x1b) || b == 0x7f {
                self.controls += 1;
                if self.controls >= BINARY_CONTROLS {
                    let at = offset + i as u64;
                    self.binary_at = Some(at);
                    tracing::warn!(
                        controls = self.controls,
                        at,
                        "the input looks binary (control bytes in its first {BINARY_WINDOW} bytes): it is not read \
                         as a log from here on; give a rule flag (--preset, --filter, --metric) to parse it anyway"
                    );
                    return Some(i);
                }
            }
        }
        None
    }

    /// A line no finder hit has no effect (but may be sampled); any other is parsed.
    fn visit(&mut self, line: &[u8], number: u64, read_at: Option<&[u8]>, emit: &mut dyn FnMut(Match<'_>, u64)) {
        if self.mode == Mode::None && !self.finders.is_candidate(line) {
            if self.every_line(number) {
                self.sample(line, number);
            }
            return;
        }
        let header = self.finders.has_header(line);
        self.candidate(line, number, read_at, header, emit);
    }

    /// A line a finder hit (or inside a multi-line context); `read_at`: the time it was read at, if known;
    /// `header`: the line holds a multi-line format's header.
    fn candidate(
        &mut self,
        line: &[u8],
        number: u64,
        read_at: Option<&[u8]>,
        header: bool,
        emit: &mut dyn FnMut(Match<'_>, u64),
    ) {
        let mut found = 0u32;
        let mut counting = |m: Match<'_>, l: u64| {
            found += 1;
            emit(m, l)
        };
        if memchr::memchr3(b'\r', 0x1b, 0x08, line).is_some() {
            let mut clean = std::mem::take(&mut self.clean);
            clean_screen(line, &mut clean);
            for seg in clean.split(|&b| b == b'\r') {
                if !value::trim(seg).is_empty() {
                    self.segment(seg, line, number, read_at, header, &mut counting);
                }
            }
            self.clean = clean;
        } else if !value::trim(line).is_empty() || self.mode != Mode::None {
            self.segment(line, line, number, read_at, header, &mut counting);
        }
        if found == 0 && self.every_line(number) {
            self.sample(line, number);
        }
    }

    /// Keeps `line` for the "no metrics found" help when it looks like it holds a number by a name.
    fn sample(&mut self, line: &[u8], number: u64) {
        if self.samples.len() >= MAX_SAMPLES || !looks_numeric(line) {
            return;
        }
        let mut clean = Vec::new();
        clean_screen(line, &mut clean);
        let text = clean.rsplit(|&b| b == b'\r').find(|s| !value::trim(s).is_empty()).unwrap_or(&clean);
        let text = String::from_utf8_lossy(&text[..text.len().min(200)]).trim().to_string();
        self.samples.push((number, text));
    }

    /// One segment: a line, or one `\r` redraw of it (`line` is the whole line, for its timestamp).
    fn segment(
        &mut self,
        seg: &[u8],
        line: &[u8],
        number: u64,
        read_at: Option<&[u8]>,
        header: bool,
        emit: &mut dyn FnMut(Match<'_>, u64),
    ) {
        let line_time = value::line_timestamp(line);
        let at = At { time: line_time.or(read_at), seg, line: number };
        // Multi-line contexts first.
        match self.mode {
            // The wrapped rest of a rich frame's column (ignored with the frame when it was at count 0).
            Mode::Rich(n) => {
                if n < MAX_CONTEXT_LINES && formats::rich_continuation(seg) {
                    self.bars.append(seg);
                    self.mode = Mode::Rich(n + 1);
                    return;
                }
                self.mode = Mode::None;
            }
            Mode::Table { lines, rows } => match formats::results_row(seg) {
                Some(Some((name, raw))) if lines < MAX_CONTEXT_LINES => {
                    let s = at.seen(name, raw, ValueKind::Number, None, Format::ResultsTable);
                    self.names.metric(s, emit);
                    self.mode = Mode::Table { lines: lines + 1, rows: true };
                    return;
                }
                // A rule: between the header and the rows, or the table's last line.
                Some(None) if lines < MAX_CONTEXT_LINES => {
                    self.mode = if rows { Mode::None } else { Mode::Table { lines: lines + 1, rows } };
                    return;
                }
                _ => self.mode = Mode::None,
            },
            Mode::HfMetrics(n) => match formats::hf_metrics_row(seg) {
                Some((name, raw, kind)) if n < MAX_CONTEXT_LINES => {
                    if !raw.is_empty() && name != b"epoch" {
                        self.names.metric(at.seen(name, raw, kind, None, Format::HfMetrics), emit);
                    }
                    self.mode = Mode::HfMetrics(n + 1);
                    return;
                }
                _ => self.mode = Mode::None,
            },
            Mode::None => {}
        }
        let body = match line_time.filter(|_| seg.len() == line.len()) {
            Some(t) => &seg[formats::skip_blanks(seg, t.len())..],
            None => formats::strip_time(seg),
        };
        if let Some(frame) = formats::frame(body) {
            self.bars.frame(frame, seg, number, &mut self.names, emit);
            if frame.rich {
                self.mode = Mode::Rich(0);
            }
            if !value::trim(frame.rest).is_empty() {
                self.segment(frame.rest, line, number, read_at, header, emit);
            }
            return;
        }
        self.bars.finish(&mut self.names, emit);
        if self.anchored(body, header, at, emit) {
            return;
        }
        let marks = Marks::of(body);
        if self.anywhere(body, marks, at, emit) {
            return;
        }
        if !marks.has(Marks::CHATTER) {
            self.weak(body, at, emit);
        }
    }

    /// The formats that start their line.
    fn anchored(&mut self, body: &[u8], header: bool, at: At<'_>, emit: &mut dyn FnMut(Match<'_>, u64)) -> bool {
        let names = &mut self.names;
        match body.first() {
            Some(b'-') => {
                if let Some(n) = formats::sgd_epoch(body) {
                    self.sgd_step = Some(n);
                    return true;
                }
            }
            Some(b'*') if formats::hf_metrics_header(body) => {
                self.mode = Mode::HfMetrics(0);
                return true;
            }
            Some(b'I' | b'V') => {
                if let Some((name, raw, step)) = formats::sklearn_mlp(body) {
                    names.metric(at.seen(name, raw, ValueKind::Number, step, Format::SklearnMlp), emit);
                    return true;
                }
            }
            Some(b'N') => {
                let step = self.sgd_step;
                let mut out =
                    |p: Pair<'_>| names.metric(at.seen(p.name, p.raw, p.kind, step, Format::SklearnSgd), emit);
                if formats::sgd_values(body, &mut out) {
                    return true;
                }
            }
            Some(b'[') => {
                if let Some((round, lightgbm, fields)) = formats::boosting(body) {
                    let format = if lightgbm { Format::Lightgbm } else { Format::Xgboost };
                    let step = Some(round);
                    return formats::tab_pairs(fields, &mut |p| {
                        names.metric(at.seen(p.name, p.raw, p.kind, step, format), emit)
                    });
                }
                if let Some(rest) = formats::torch_batch(body) {
                    let mut any = false;
                    formats::colon_pairs(&body[rest..], &mut |p: WeakPair<'_>| {
                        any = true;
                        names.metric(at.seen(p.name, p.raw, ValueKind::Number, None, Format::TorchBatch), emit);
                    });
                    return any;
                }
            }
            Some(b'{') => return self.object(body, at, emit),
            _ => {}
        }
        if header && formats::results_header(body) {
            self.mode = Mode::Table { lines: 0, rows: false };
            return true;
        }
        false
    }

    /// A dict or JSON line: Hugging Face's log dicts (with `epoch`) are metrics, other dicts and JSON lines weak.
    fn object(&mut self, body: &[u8], at: At<'_>, emit: &mut dyn FnMut(Match<'_>, u64)) -> bool {
        let quote = match body {
            [b'{', q @ (b'\'' | b'"'), ..] => *q,
            _ => return false,
        };
        // One pass: the pairs kept aside until the object said what it is (its `epoch`, step, time).
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.clear();
        let info = formats::object(body, quote, &mut |p| pairs.push((span(body, p.name), span(body, p.raw), p.kind)));
        let Some(info) = info else {
            self.pairs = pairs;
            return false;
        };
        let json = quote == b'"';
        let time = match info.timestamp {
            Some((t, true)) if value::is_rfc3339(t) => Some(t),
            Some((t, false)) => {
                let epoch = value::parse_value(t).and_then(|v| value::epoch_to_rfc3339(v, false));
                self.time = epoch.unwrap_or_default();
                (!self.time.is_empty()).then_some(self.time.as_bytes())
            }
            _ => at.time,
        };
        // A Hugging Face dict's `epoch` is a fraction of an epoch, not the step; a JSON line's may be its step.
        let step = if json { info.step.or(info.epoch_step) } else { info.step };
        let format = match (json, info.epoch) {
            (true, _) => Format::JsonLine,
            (false, true) => Format::HfTrainer,
            (false, false) => Format::PyDict,
        };
        for &(name, raw, kind) in &pairs {
            let s = Seen { time, ..at.seen(&body[name.0..name.1], &body[raw.0..raw.1], kind, step, format) };
            if format == Format::HfTrainer {
                self.names.metric(s, emit);
            } else {
                self.names.weak(s, true, emit);
            }
        }
        self.pairs = pairs;
        true
    }

    /// The strong formats found anywhere in a line.
    fn anywhere(&mut self, body: &[u8], marks: Marks, at: At<'_>, emit: &mut dyn FnMut(Match<'_>, u64)) -> bool {
        let names = &mut self.names;
        let n = ValueKind::Number;
        let mut any = false;
        if marks.has(Marks::AT_STEP) {
            scan_at_step(body, &self.at_step, &mut |name, raw, step, _| {
                any = true;
                names.metric(at.seen(name, raw, n, step, Format::TfStep), emit);
            });
            if any {
                return true;
            }
        }
        if marks.has(Marks::METRIC_NAME)
            && formats::katib_metric_name(body, &mut |p| {
                names.metric(at.seen(p.name, p.raw, n, None, Format::KatibMetricName), emit)
            })
        {
            return true;
        }
        if marks.keras(body) {
            return formats::keras_pairs(body, &mut |p| {
                names.metric(at.seen(p.name, p.raw, n, None, Format::Keras), emit)
            });
        }
        false
    }

    /// `name=value` and `name: value` pairs: held until the log treats them as metrics; parameters in reprs.
    fn weak(&mut self, body: &[u8], at: At<'_>, emit: &mut dyn FnMut(Match<'_>, u64)) {
        let mut spots = std::mem::take(&mut self.spots);
        spots.clear();
        formats::eq_pairs(body, &mut |p| spots.push(Spot::of(body, p, Format::KatibPairs)));
        formats::colon_pairs(body, &mut |p| spots.push(Spot::of(body, p, Format::ColonPairs)));
        if !spots.is_empty() {
            // In the order printed (starts are distinct: the sort moves nothing it need not).
            spots.sort_unstable_by_key(|s| s.start);
            self.weak_pairs(body, &spots, at, emit);
        }
        self.spots = spots;
    }

    /// A segment's weak pairs, in order: the line's step (a counter pair such as `epoch=3`, or a leading
    /// `epoch 3:`), whether it is a report line (nothing but pairs), then each pair.
    fn weak_pairs(&mut self, body: &[u8], spots: &[Spot], at: At<'_>, emit: &mut dyn FnMut(Match<'_>, u64)) {
        let text = |r: Span| &body[r.0..r.1];
        let step = spots
            .iter()
            .find(|s| s.place == Place::Text && formats::is_step_name(text(s.name)))
            .and_then(|s| value::parse_step(text(s.raw)))
            .or_else(|| formats::leading_step(body));
        let report = !body[..spots[0].start].iter().any(u8::is_ascii_digit)
            && spots.windows(2).all(|w| body[w[0].end.min(w[1].start)..w[1].start].iter().all(|&b| is_gap(b)))
            && body[spots[spots.len() - 1].end..].iter().all(|&b| is_gap(b) || b == b'.');
        for s in spots {
            let name = text(s.name);
            if formats::is_step_name(name) || name.starts_with(b"best_") || name == b"v_num" {
                continue;
            }
            let seen = at.seen(name, text(s.raw), ValueKind::Number, step, s.format);
            match s.place {
                Place::Repr | Place::Code => self.names.param(seen),
                Place::Text => self.names.weak(seen, report, emit),
            }
        }
    }
}

/// Where a weak pair sits in its segment (byte ranges), kept between finding the pairs and observing them.
#[derive(Debug, Clone, Copy)]
struct Spot {
    name: Span,
    raw: Span,
    place: Place,
    start: usize,
    end: usize,
    format: Format,
}

impl Spot {
    fn of(body: &[u8], p: WeakPair<'_>, format: Format) -> Spot {
        Spot { name: span(body, p.name), raw: span(body, p.raw), place: p.place, start: p.start, end: p.end, format }
    }
}

/// Where a part of a segment sits in it: start and end.
type Span = (usize, usize);

/// Where `part`, a subslice of `body`, sits in it.
fn span(body: &[u8], part: &[u8]) -> Span {
    let from = part.as_ptr() as usize - body.as_ptr() as usize;
    (from, from + part.len())
}

/// A byte that may separate the pairs of a report line.
fn is_gap(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b',' | b';' | b'|' | b'-')
}

/// Whether a line seems to print a number by a name (`mse 0.31`, `val-acc=0.9`): a letter, some separator, a
/// digit.
fn looks_numeric(line: &[u8]) -> bool {
    line.windows(3)
        .any(|w| w[0].is_ascii_alphabetic() && matches!(w[1], b' ' | b':' | b'=' | b'\t') && w[2].is_ascii_digit())
        || line
            .windows(4)
            .any(|w| w[0].is_ascii_alphabetic() && matches!(w[1], b':' | b'=') && w[2] == b' ' && w[3].is_ascii_digit())
}

/// What a terminal shows of a line, one `\r`-separated redraw at a time: escape sequences dropped, a backspace
/// moves the cursor back one character (what follows overwrites), a `\r` starts a new redraw. Keras ends each
/// redraw of its bar with backspaces back to the start and a `\r`: the frame stays whole.
pub(super) fn clean_screen(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut seg_start = 0;
    let mut cursor = 0;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            0x1b => i = super::terminal::after_escape(line, i),
            0x08 => {
                // Back one character: over UTF-8 continuation bytes.
                while cursor > seg_start {
                    cursor -= 1;
                    if out[cursor] & 0xC0 != 0x80 {
                        break;
                    }
                }
                i += 1;
            }
            b'\r' => {
                out.push(b'\r');
                seg_start = out.len();
                cursor = seg_start;
                i += 1;
            }
            b => {
                if cursor < out.len() {
                    out[cursor] = b;
                } else {
                    out.push(b);
                }
                cursor += 1;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;

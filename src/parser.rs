//! The parser: rules → aggregator, shared by every byte stream of a run.
//!
//! A run has one [`Parser`] (one set of rules, one aggregate, one line numbering) and one
//! [`LineBuffer`](crate::lines::LineBuffer) per byte stream (a file, standard input, a child's stdout and its
//! stderr, a pod's log): a buffer hands complete lines to [`Parser::lines`], so lines of two streams never mix.
//! Sources of already-structured records (TensorBoard event files) skip the text rules and call
//! [`Parser::record`]. Every observation updates the [`Aggregator`] and is then shown to an [`ObservationSink`]
//! (JSON lines, the Katib report); sinks that only need the aggregate read it afterwards.
//!
//! Invariants: no I/O, no allocation for a line that does not match, and the same observations whatever the
//! chunking of the input. A value that is not a number is a counted parse error in native semantics and a raw
//! string observation in Katib semantics. Lines are numbered in the order the parser receives them, across
//! streams.

use crate::aggregate::{Aggregator, MetricId};
use crate::lines::{Line, LineSink};
use crate::rules::{LineIssues, Match, Origin, Param, Rules, Semantics, ValueKind};
use crate::value;

/// The longest metric name kept, in bytes: Katib's DB holds names of up to 255 characters (at most 4 bytes
/// each in UTF-8), and a name is a label value in every series of `/metrics`. A longer name is no metric: its
/// observations are dropped and counted ([`Counters::oversized`]), never cut (a cut name would be another
/// metric's).
pub const MAX_NAME_BYTES: usize = 1024;

/// The longest value text kept, in bytes (a number as printed is a few dozen): a longer value's observation is
/// dropped and counted ([`Counters::oversized`]), never cut (a cut number is another number).
pub const MAX_VALUE_BYTES: usize = 1024;

/// One observation, as sinks see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation<'a> {
    /// The metric's id in the aggregator.
    pub metric: MetricId,
    /// The metric's name as printed.
    pub name: &'a [u8],
    /// The value's text as printed.
    pub raw: &'a [u8],
    /// The value, when it parses as a number.
    pub value: Option<f64>,
    /// The step, when the rule captured one.
    pub step: Option<u64>,
    /// The line's own timestamp (verbatim), when it has one.
    pub time: Option<&'a [u8]>,
    /// The source line number.
    pub line: u64,
}

/// Receives every observation as it is made.
pub trait ObservationSink {
    /// Called once per observation, after the aggregator was updated.
    fn observe(&mut self, obs: &Observation<'_>);

    /// The stream started over: its file was truncated or replaced, so what it held before is no longer in it.
    /// Sinks that report a file's content (Katib's report: Katib reads the file once, at the end) forget it.
    fn restarted(&mut self) {}
}

/// A sink that ignores observations (the aggregate is all that is wanted).
impl ObservationSink for () {
    fn observe(&mut self, _: &Observation<'_>) {}
}

impl<A: ObservationSink, B: ObservationSink> ObservationSink for (A, B) {
    fn observe(&mut self, obs: &Observation<'_>) {
        self.0.observe(obs);
        self.1.observe(obs);
    }

    fn restarted(&mut self) {
        self.0.restarted();
        self.1.restarted();
    }
}

/// A sink whose observations without a time of their own get `time`.
struct Timed<'t, S> {
    sink: &'t mut S,
    time: &'t [u8],
}

impl<S: ObservationSink> ObservationSink for Timed<'_, S> {
    fn observe(&mut self, obs: &Observation<'_>) {
        self.sink.observe(&Observation { time: obs.time.or(Some(self.time)), ..*obs });
    }
}

/// Counters of what the parser saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Observations recorded.
    pub observations: u64,
    /// Matches whose value was not a number (native semantics), not recorded.
    pub parse_errors: u64,
    /// JSON-format lines that were not JSON objects.
    pub bad_json: u64,
    /// JSON `timestamp` values that were neither RFC 3339 nor a number.
    pub bad_timestamps: u64,
    /// Observations dropped because `--max-metrics` names were already known.
    pub dropped: u64,
    /// Observations dropped because the name is over [`MAX_NAME_BYTES`] or the value over [`MAX_VALUE_BYTES`].
    pub oversized: u64,
}

/// One structured record: a value that needs no text rule (a TensorBoard scalar).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a> {
    /// The metric's name.
    pub name: &'a [u8],
    /// The value's text, as it should be shown.
    pub raw: &'a [u8],
    /// The value, when it is a number (Katib's reports also carry values that are not: `[0.25 0.5]`).
    pub value: Option<f64>,
    /// The step, when the record has one.
    pub step: Option<u64>,
    /// Its RFC 3339 time, when it has one.
    pub time: Option<&'a [u8]>,
    /// Where it came from (a record index), reported as the observation's line.
    pub line: u64,
}

/// How a metric was first observed: what `--explain` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The rule or recognised format.
    pub origin: Origin,
    /// The line of the first observation.
    pub line: u64,
    /// That line (or its `\r` redraw), as printed, cut at [`SAMPLE_CHARS`] characters.
    pub sample: String,
}

/// Characters of a sample line kept for `--explain`.
pub const SAMPLE_CHARS: usize = 160;

impl Explained {
    fn new(origin: Origin, line: u64, context: &[u8]) -> Self {
        let text = String::from_utf8_lossy(context);
        let sample = text.trim().chars().take(SAMPLE_CHARS).collect();
        Explained { origin, line, sample }
    }
}

/// The rules and the aggregate of a run: lines and records in, observations out.
#[derive(Debug)]
pub struct Parser {
    rules: Rules,
    agg: Aggregator,
    /// Per metric (by id), how it was first observed.
    explained: Vec<Explained>,
    counters: Counters,
    /// Lines received so far (the last line's number).
    lines: u64,
    /// A line over the limit was dropped (Katib semantics) and said.
    said_long_line: bool,
}

impl Parser {
    /// A parser with the given rules, keeping at most `max_metrics` metric names.
    pub fn new(rules: Rules, max_metrics: usize) -> Self {
        Parser {
            rules,
            agg: Aggregator::new(max_metrics),
            explained: Vec::new(),
            counters: Counters::default(),
            lines: 0,
            said_long_line: false,
        }
    }

    /// A [`LineSink`] that parses every line a buffer hands it, observations to `sink`.
    pub fn lines<'a, S: ObservationSink>(&'a mut self, sink: &'a mut S) -> Lines<'a, S> {
        Lines { parser: self, sink }
    }

    /// Parses one complete line (without its `\n`) whose observations take `time` unless the line has a time of
    /// its own: the pod-log source passes the kubelet's timestamp, cut off the line, this way. A cut line
    /// ([`Line::truncated`]) is handled as [`Parser::lines`] handles it (dropped whole in Katib semantics).
    pub fn line_at(&mut self, line: Line<'_>, time: &[u8], sink: &mut impl ObservationSink) {
        if self.cut_in_katib(&line) {
            return;
        }
        self.line(line.bytes, Some(time), &mut Timed { sink, time });
    }

    /// One structured record, recorded as it is (no rule looks at it; `--metrics` still selects).
    pub fn record(&mut self, r: Record<'_>, sink: &mut impl ObservationSink) {
        if self.rules.names().is_some_and(|mut names| !names.any(|n| n == r.name))
            || oversized(r.name, r.raw, &mut self.counters)
        {
            return;
        }
        let Some(id) = self.agg.intern(r.name) else { return };
        if id.0 as usize == self.explained.len() {
            self.explained.push(Explained::new(Origin::Record, r.line, r.name));
        }
        self.agg.record(id, r.raw, r.value, r.step, r.line);
        self.counters.observations += 1;
        let obs = Observation {
            metric: id,
            name: r.name,
            raw: r.raw,
            value: r.value,
            step: r.step,
            time: r.time,
            line: r.line,
        };
        sink.observe(&obs);
    }

    /// The aggregate so far.
    pub fn aggregate(&self) -> &Aggregator {
        &self.agg
    }

    /// Lines received so far.
    pub fn lines_read(&self) -> u64 {
        self.lines
    }

    /// The rules in use.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The parser's counters.
    pub fn counters(&self) -> Counters {
        Counters { dropped: self.agg.dropped(), ..self.counters }
    }

    /// Per metric, in the aggregate's order, how it was first observed (`--explain`).
    pub fn explained(&self) -> &[Explained] {
        &self.explained
    }

    /// The values set apart as parameters by the recognition (empty with explicit rules).
    pub fn params(&self) -> Vec<Param> {
        self.rules.params()
    }

    /// Whether `line` was cut and the semantics are Katib's: Katib reads a line whole, so a part of it would not
    /// be what Katib reports, and the line is dropped whole (counted as too long by the line buffer).
    fn cut_in_katib(&mut self, line: &Line<'_>) -> bool {
        if !line.truncated || self.rules.semantics() != Semantics::Katib {
            return false;
        }
        self.lines += 1;
        if !self.said_long_line {
            self.said_long_line = true;
            tracing::warn!(
                line = self.lines,
                limit = line.bytes.len(),
                "line longer than the limit dropped whole (Katib semantics; later ones are only counted)"
            );
        }
        true
    }

    /// One line; `time`: the time it was read at (the pod log's), kept with observations held back.
    fn line(&mut self, bytes: &[u8], time: Option<&[u8]>, sink: &mut impl ObservationSink) {
        self.lines += 1;
        let number = self.lines;
        let Parser { rules, agg, explained, counters, .. } = self;
        let katib = rules.semantics() == Semantics::Katib;
        let mut state = State { katib, agg, explained, counters };
        let issues = rules.scan_at(bytes, number, time, &mut |m, n| state.observe(m, n, sink));
        note_issues(issues, number, counters);
    }

    /// A stream ended: what the rules held for it is observed.
    fn end_of_stream(&mut self, sink: &mut impl ObservationSink) {
        let Parser { rules, agg, explained, counters, .. } = self;
        let katib = rules.semantics() == Semantics::Katib;
        let mut state = State { katib, agg, explained, counters };
        rules.end_of_stream(&mut |m, n| state.observe(m, n, sink));
    }
}

/// A parser and an observation sink, borrowed as the [`LineSink`] a [`LineBuffer`](crate::lines::LineBuffer)
/// drains into.
pub struct Lines<'a, S> {
    parser: &'a mut Parser,
    sink: &'a mut S,
}

impl<S: ObservationSink> LineSink for Lines<'_, S> {
    fn line(&mut self, line: Line<'_>) {
        if self.parser.cut_in_katib(&line) {
            return;
        }
        self.parser.line(line.bytes, None, self.sink);
    }

    fn block(&mut self, block: &[u8], _first: u64) -> u64 {
        let first = self.parser.lines + 1;
        let Parser { rules, agg, explained, counters, lines, .. } = &mut *self.parser;
        let sink = &mut *self.sink;
        let katib = rules.semantics() == Semantics::Katib;
        let mut issues = Vec::new();
        let mut state = State { katib, agg, explained, counters };
        let count =
            rules.scan_block(block, first, &mut |m, number| state.observe(m, number, sink), &mut |found, number| {
                if found != LineIssues::default() {
                    issues.push((found, number));
                }
            });
        *lines += count;
        for (found, number) in issues {
            note_issues(found, number, counters);
        }
        count
    }

    fn end(&mut self) {
        self.parser.end_of_stream(self.sink);
    }
}

/// The parts of a [`Parser`] an observation updates.
struct State<'a> {
    katib: bool,
    agg: &'a mut Aggregator,
    explained: &'a mut Vec<Explained>,
    counters: &'a mut Counters,
}

impl State<'_> {
    fn observe(&mut self, m: Match<'_>, line: u64, sink: &mut impl ObservationSink) {
        if oversized(m.name, m.raw, self.counters) {
            return;
        }
        let value = match m.kind {
            ValueKind::Number => value::parse_number(m.raw),
            ValueKind::Text => value::parse_value(m.raw),
            ValueKind::Clock => value::parse_clock(m.raw),
        };
        if value.is_none() && !self.katib {
            self.counters.parse_errors += 1;
            return;
        }
        let Some(id) = self.agg.intern_keyed(m.key, m.name) else { return };
        if id.0 as usize == self.explained.len() {
            self.explained.push(Explained::new(m.origin, line, m.context));
        }
        self.agg.record(id, m.raw, value, m.step, line);
        self.counters.observations += 1;
        sink.observe(&Observation { metric: id, name: m.name, raw: m.raw, value, step: m.step, time: m.time, line });
    }
}

/// Whether a name and a value are within [`MAX_NAME_BYTES`] and [`MAX_VALUE_BYTES`].
pub(crate) fn within_bounds(name: &[u8], raw: &[u8]) -> bool {
    name.len() <= MAX_NAME_BYTES && raw.len() <= MAX_VALUE_BYTES
}

/// Whether the observation's name or value is over its limit; counts it (and says the first) when it is.
fn oversized(name: &[u8], raw: &[u8], counters: &mut Counters) -> bool {
    if within_bounds(name, raw) {
        return false;
    }
    if counters.oversized == 0 {
        let prefix = String::from_utf8_lossy(&name[..name.len().min(40)]).into_owned();
        tracing::warn!(
            name_bytes = name.len(),
            value_bytes = raw.len(),
            name = %prefix,
            "observation dropped: a metric name or value longer than {MAX_NAME_BYTES} bytes (later ones are only \
             counted)"
        );
    }
    counters.oversized += 1;
    true
}

fn note_issues(issues: LineIssues, line: u64, counters: &mut Counters) {
    if issues.bad_json {
        if counters.bad_json == 0 {
            tracing::warn!(line, "line is not a JSON object; skipped (later ones are only counted)");
        }
        counters.bad_json += 1;
    }
    if issues.bad_timestamp {
        counters.bad_timestamps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::LineBuffer;
    use crate::rules::{LineFormat, Preset, RuleSpec, ValueKind};

    /// A parser with one stream's line buffer, fed like a source feeds them.
    struct Stream {
        parser: Parser,
        buf: LineBuffer,
    }

    impl Stream {
        fn new(rules: Rules, max_line: usize, max_metrics: usize) -> Self {
            Stream { parser: Parser::new(rules, max_metrics), buf: LineBuffer::new(max_line) }
        }

        fn feed(&mut self, chunk: &[u8], sink: &mut impl ObservationSink) {
            self.buf.feed_into(chunk, &mut self.parser.lines(sink));
        }

        fn finish(&mut self, sink: &mut impl ObservationSink) {
            self.buf.finish_into(&mut self.parser.lines(sink));
        }
    }

    #[derive(Default)]
    struct Recorded(Vec<(String, String, Option<u64>, u64)>);

    impl ObservationSink for Recorded {
        fn observe(&mut self, o: &Observation<'_>) {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            self.0.push((s(o.name), s(o.raw), o.step, o.line));
        }
    }

    fn stream(specs: &[RuleSpec]) -> Stream {
        Stream::new(Rules::new(specs, &[], Semantics::Native, LineFormat::Text).unwrap(), 64, 100)
    }

    #[test]
    fn a_name_or_value_over_the_limit_is_dropped_whole_and_counted() {
        let mut c = Stream::new(
            Rules::new(&[RuleSpec::Preset(Preset::Katib)], &[], Semantics::Native, LineFormat::Text).unwrap(),
            8192,
            100,
        );
        let mut rec = Recorded::default();
        let (name, long_name) = ("n".repeat(MAX_NAME_BYTES), "n".repeat(MAX_NAME_BYTES + 1));
        let (value, long_value) = (format!("0.{}", "1".repeat(MAX_VALUE_BYTES - 2)), "1".repeat(MAX_VALUE_BYTES + 1));
        c.feed(format!("{name}={value}\n{long_name}=1\nloss={long_value}\nloss=2\n").as_bytes(), &mut rec);
        let kept: Vec<_> = rec.0.iter().map(|(n, r, ..)| (n.len(), r.len())).collect();
        assert_eq!(kept, [(MAX_NAME_BYTES, MAX_VALUE_BYTES), (4, 1)]);
        assert_eq!(c.parser.counters().oversized, 2);
        assert_eq!(c.parser.aggregate().metrics().len(), 2);
    }

    #[test]
    fn observations_carry_line_numbers_and_survive_garbage() {
        let mut c = stream(&[RuleSpec::Preset(Preset::Katib), RuleSpec::Preset(Preset::TfStep)]);
        let mut rec = Recorded::default();
        c.feed(b"\xff\xfe\x00 binary\nloss=0.5\n", &mut rec);
        c.feed(&[b'x'; 200], &mut rec);
        c.feed(b" loss=9\nAccuracy at step 3: nan\nloss=0.25", &mut rec);
        c.finish(&mut rec);
        let names: Vec<_> = rec.0.iter().map(|(n, r, s, l)| (n.as_str(), r.as_str(), *s, *l)).collect();
        assert_eq!(names, [("loss", "0.5", None, 2), ("Accuracy", "nan", Some(3), 4), ("loss", "0.25", None, 5)]);
        assert_eq!(c.buf.stats().too_long, 1);
        let loss = &c.parser.aggregate().metrics()[0];
        assert_eq!((loss.count, loss.min.as_ref().unwrap().0, loss.max.as_ref().unwrap().0), (2, 0.25, 0.5));
    }

    #[test]
    fn a_line_fed_with_a_time_carries_it_unless_it_has_its_own() {
        struct Times(Vec<Option<String>>);
        impl ObservationSink for Times {
            fn observe(&mut self, o: &Observation<'_>) {
                self.0.push(o.time.map(|t| String::from_utf8_lossy(t).into_owned()));
            }
        }
        let mut times = Times(Vec::new());
        let mut c = Parser::new(Rules::new(&[], &[], Semantics::Native, LineFormat::Text).unwrap(), 100);
        let line = |bytes| Line { bytes, number: 0, truncated: false };
        c.line_at(line(b"loss=0.5"), b"2026-11-28T15:00:00.5Z", &mut times);
        c.line_at(line(b"2026-01-01T00:00:00Z loss=0.4"), b"2026-11-28T15:00:01Z", &mut times);
        c.line_at(line(b"no metric here"), b"2026-11-28T15:00:02Z", &mut times);
        assert_eq!(times.0, [Some("2026-11-28T15:00:00.5Z".into()), Some("2026-01-01T00:00:00Z".into())]);
        assert_eq!(c.lines, 3);
    }

    #[test]
    fn native_non_numbers_are_parse_errors() {
        let mut c = stream(&[RuleSpec::Filter(r"(\w+): (\S+)".into())]);
        c.feed(b"genotype: Genotype(x)\nacc: 0.9\n", &mut ());
        assert_eq!((c.parser.counters().observations, c.parser.counters().parse_errors), (1, 1));
    }

    /// Block scanning (finders, skipped lines) must equal scanning every line, whatever the chunking.
    mod chunking {
        use super::*;
        use crate::lines::LineBuffer;
        use proptest::prelude::*;

        type Obs = Vec<(Vec<u8>, Vec<u8>, Option<u64>, u64)>;

        fn rule_sets() -> Vec<(Vec<RuleSpec>, Vec<String>, Semantics)> {
            vec![
                // No rules: the recognition.
                (vec![], vec![], Semantics::Native),
                (vec![], vec!["loss".into(), "Accuracy".into()], Semantics::Native),
                (
                    vec![
                        RuleSpec::Preset(crate::rules::Preset::Xgboost),
                        RuleSpec::Preset(crate::rules::Preset::Keras),
                        RuleSpec::Filter(r"^(?P<name>\w+): (?P<value>\S+)$".into()),
                    ],
                    vec![],
                    Semantics::Native,
                ),
                (vec![], vec!["loss".into(), "acc".into()], Semantics::Katib),
            ]
        }

        /// The reference: every line scanned on its own, values kept as the parser keeps them; in Katib semantics
        /// a line over the limit is dropped whole.
        fn by_lines(mut rules: Rules, max: usize, input: &[u8]) -> Obs {
            let katib = rules.semantics() == Semantics::Katib;
            let mut buf = LineBuffer::new(max);
            let mut out = Vec::new();
            let mut each = |line: Line<'_>| {
                let n = line.number;
                if katib && line.truncated {
                    return;
                }
                rules.scan_numbered(line.bytes, n, &mut |m, at| {
                    if katib || parses(&m) {
                        out.push((m.name.to_vec(), m.raw.to_vec(), m.step, at));
                    }
                });
            };
            buf.feed(input, &mut each);
            buf.finish(&mut each);
            rules.end_of_stream(&mut |m, at| {
                if katib || parses(&m) {
                    out.push((m.name.to_vec(), m.raw.to_vec(), m.step, at));
                }
            });
            out
        }

        /// The value parses as the parser parses it (native semantics keep only numbers).
        fn parses(m: &Match<'_>) -> bool {
            match m.kind {
                ValueKind::Clock => value::parse_clock(m.raw).is_some(),
                _ => value::parse_value(m.raw).is_some(),
            }
        }

        #[derive(Default)]
        struct Rec(Obs);
        impl ObservationSink for Rec {
            fn observe(&mut self, o: &Observation<'_>) {
                self.0.push((o.name.to_vec(), o.raw.to_vec(), o.step, o.line));
            }
        }

        /// `input` fed to `c` in pieces cut at `cuts` (clamped, in order), then finished: what it observed.
        fn feed_cut(c: &mut Stream, input: &[u8], cuts: Vec<usize>) -> Obs {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(input.len())).collect();
            cuts.sort_unstable();
            let mut rec = Rec::default();
            let mut at = 0;
            for cut in cuts {
                c.feed(&input[at..cut], &mut rec);
                at = cut;
            }
            c.feed(&input[at..], &mut rec);
            c.finish(&mut rec);
            rec.0
        }

        fn line() -> impl Strategy<Value = Vec<u8>> {
            let atoms = prop_oneof![
                Just(b"loss=0.5".to_vec()),
                Just(b"Accuracy at step 3: 0.9".to_vec()),
                Just(b" - acc: 0.1".to_vec()),
                Just(b"[7]\tvalidation_0-logloss:0.61".to_vec()),
                Just(b"acc: 2".to_vec()),
                Just(b"noise words ".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"\x1b[1m".to_vec()),
                Just(b"\x08".to_vec()),
                Just(b"=".to_vec()),
                Just(vec![b'x'; 40]),
                any::<u8>().prop_map(|b| vec![b]),
                // The recognised frameworks' shapes, whole and in pieces.
                Just(FRAMEWORK_LINES[0].to_vec()),
                (0..FRAMEWORK_LINES.len()).prop_map(|i| FRAMEWORK_LINES[i].to_vec()),
                (0..FRAMEWORK_LINES.len(), 0usize..40).prop_map(|(i, cut)| {
                    let l = FRAMEWORK_LINES[i];
                    l[..cut.min(l.len())].to_vec()
                }),
            ];
            proptest::collection::vec(atoms, 0..6).prop_map(|v| v.concat())
        }

        /// One line of each format the recognition reads, and of what it must not take.
        const FRAMEWORK_LINES: &[&[u8]] = &[
            b"epoch=1 loss=0.9 acc=0.5",
            b"lr=0.01 batch_size=64",
            b"Namespace(lr=0.01, epochs=3)",
            b"epoch 2: loss: 0.31 accuracy: 0.90",
            b"test accuracy: 0.95",
            b"{'loss': 0.69, 'grad_norm': 1.2, 'epoch': 0.25}",
            b"{\"loss\": \"0.5\", \"global_step\": \"5\", \"trial\": \"0\"}",
            b"12/12 - 1s - 9ms/step - loss: 0.3 - val_loss: 0.4",
            b"\r 1/3 \xe2\x94\x81 1s 10ms/step - loss: 0.9\x08\x08\x08\r 2/3 - 1s 9ms/step - loss: 0.8",
            b"\rEpoch 0:  50%| 1/2 [00:00, 9.0it/s, v_num=0, loss_step=2.0]\rEpoch 0: 100%| 2/2 [00:00, 9.0it/s, v_num=0, loss_step=1.5, val_loss=1.2]",
            b"Epoch 0/1 \xe2\x94\x81 2/4 0:00:00 \xe2\x80\xa2 5.00it/s v_num: 0.000 loss:",
            b"                          0.5 val_loss: 0.4",
            b"     Validate metric           DataLoader 0",
            b"\xe2\x94\x80\xe2\x94\x80\xe2\x94\x80",
            b"         val_acc            0.95",
            b"***** train metrics *****",
            b"  train_runtime            = 0:00:00.91",
            b"  train_loss               =     0.5964",
            b"[3]\tvalid_0's auc: 0.91",
            b"[1,    50] loss: 2.261",
            b"-- Epoch 2",
            b"Norm: 6.21, NNZs: 30, Bias: -0.43, T: 6390, Avg. loss: 0.0508, Objective: 0.0704",
            b"Iteration 3, loss = 0.41",
            b"{metricName: accuracy, metricValue: 0.98}",
            b"`Trainer.fit` stopped: `max_epochs=4` reached.",
            b"[LightGBM] [Warning] No further splits with positive gain, best gain: -inf",
            b"\x00\x01\x02\x03\x04\x05\x06\x07",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn chunked_block_scanning_equals_line_by_line(
                lines in proptest::collection::vec(line(), 0..30),
                cuts in proptest::collection::vec(0usize..2000, 0..6),
                max in prop_oneof![Just(16usize), Just(64), Just(4096)],
                set in 0usize..4,
            ) {
                let input = lines.join(&b'\n');
                let (specs, names, semantics) = rule_sets().swap_remove(set);
                let reference = by_lines(Rules::new(&specs, &names, semantics, LineFormat::Text).unwrap(), max, &input);
                let mut c = Stream::new(Rules::new(&specs, &names, semantics, LineFormat::Text).unwrap(), max, 1000);
                prop_assert_eq!(feed_cut(&mut c, &input, cuts), reference);
            }

            /// Explicit rules never carry anything from one line to the next (recognition is off with them): each
            /// line gives what a fresh set of the same rules gives it alone, whatever came before, whatever the
            /// chunking.
            #[test]
            fn explicit_rules_read_each_line_on_its_own(
                lines in proptest::collection::vec(line(), 0..30),
                cuts in proptest::collection::vec(0usize..2000, 0..6),
                set in 0usize..EXPLICIT.len(),
            ) {
                let input = lines.join(&b'\n');
                let (specs, names, semantics) = explicit(set);
                let mut want = Obs::new();
                let mut buf = LineBuffer::new(4096);
                let mut each = |line: Line<'_>| {
                    let mut fresh = Rules::new(&specs, &names, semantics, LineFormat::Text).unwrap();
                    let n = line.number;
                    fresh.scan(line.bytes, &mut |m| {
                        if semantics == Semantics::Katib || parses(&m) {
                            want.push((m.name.to_vec(), m.raw.to_vec(), m.step, n));
                        }
                    });
                };
                buf.feed(&input, &mut each);
                buf.finish(&mut each);
                let mut c = Stream::new(Rules::new(&specs, &names, semantics, LineFormat::Text).unwrap(), 4096, 1000);
                let got = feed_cut(&mut c, &input, cuts);
                prop_assert!(c.parser.params().is_empty());
                prop_assert_eq!(got, want);
            }
        }

        /// Explicit configurations: each preset alone, all of them, `--metrics` alone, a filter, a metric rule,
        /// Katib's semantics.
        const EXPLICIT: [&str; 13] = [
            "katib",
            "tf-step",
            "keras",
            "hf-trainer",
            "xgboost",
            "lightgbm",
            "sklearn",
            "tqdm",
            "all",
            "metrics",
            "filter",
            "metric",
            "katib-semantics",
        ];

        fn explicit(i: usize) -> (Vec<RuleSpec>, Vec<String>, Semantics) {
            let all = || crate::rules::Preset::ALL.iter().map(|&p| RuleSpec::Preset(p)).collect::<Vec<_>>();
            match EXPLICIT[i] {
                "all" => (all(), vec![], Semantics::Native),
                "metrics" => (vec![], vec!["loss".into(), "accuracy".into()], Semantics::Native),
                "filter" => {
                    (vec![RuleSpec::Filter(r"(?P<name>[\w.-]+): (?P<value>[\d.]+)".into())], vec![], Semantics::Native)
                }
                "metric" => (
                    vec![RuleSpec::Metric { name: "acc".into(), regex: r"accuracy[=:] ?(?P<value>[\d.]+)".into() }],
                    vec![],
                    Semantics::Native,
                ),
                "katib-semantics" => (vec![], vec!["loss".into(), "accuracy".into()], Semantics::Katib),
                _ => (vec![RuleSpec::Preset(crate::rules::Preset::ALL[i])], vec![], Semantics::Native),
            }
        }
    }

    #[test]
    fn katib_keeps_raw_strings() {
        let rules = Rules::new(&[], &["loss".into()], Semantics::Katib, LineFormat::Text).unwrap();
        let mut c = Stream::new(rules, 64, 100);
        let mut rec = Recorded::default();
        c.feed(b"loss=nan\nloss=0.5\n", &mut rec);
        assert_eq!(rec.0.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["", "0.5"]);
    }
}

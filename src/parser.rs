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
use crate::rules::{LineIssues, Match, Rules, Semantics};
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

/// The rules and the aggregate of a run: lines and records in, observations out.
#[derive(Debug)]
pub struct Parser {
    rules: Rules,
    agg: Aggregator,
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
        self.lines(&mut Timed { sink, time }).line(line);
    }

    /// One structured record, recorded as it is (no rule looks at it; `--metrics` still selects).
    pub fn record(&mut self, r: Record<'_>, sink: &mut impl ObservationSink) {
        if self.rules.names().is_some_and(|mut names| !names.any(|n| n == r.name))
            || oversized(r.name, r.raw, &mut self.counters)
        {
            return;
        }
        let Some(id) = self.agg.intern(r.name) else { return };
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

    /// The rules in use.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The parser's counters.
    pub fn counters(&self) -> Counters {
        Counters { dropped: self.agg.dropped(), ..self.counters }
    }

    fn line(&mut self, bytes: &[u8], sink: &mut impl ObservationSink) {
        self.lines += 1;
        let number = self.lines;
        let Parser { rules, agg, counters, .. } = self;
        let katib = rules.semantics() == Semantics::Katib;
        let issues = rules.scan(bytes, &mut |m| observe(m, number, katib, agg, counters, sink));
        note_issues(issues, number, counters);
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
        let p = &mut *self.parser;
        if line.truncated && p.rules.semantics() == Semantics::Katib {
            // Katib reads a line whole, so a part of it would not be what Katib reports: the line is dropped whole
            // (counted as too long by the line buffer).
            p.lines += 1;
            if !p.said_long_line {
                p.said_long_line = true;
                tracing::warn!(
                    line = p.lines,
                    limit = line.bytes.len(),
                    "line longer than the limit dropped whole (Katib semantics; later ones are only counted)"
                );
            }
            return;
        }
        p.line(line.bytes, self.sink);
    }

    fn block(&mut self, block: &[u8], _first: u64) -> u64 {
        let first = self.parser.lines + 1;
        let Parser { rules, agg, counters, lines, .. } = &mut *self.parser;
        let sink = &mut *self.sink;
        let katib = rules.semantics() == Semantics::Katib;
        let mut issues = Vec::new();
        let count = rules.scan_block(
            block,
            first,
            &mut |m, number| observe(m, number, katib, agg, counters, sink),
            &mut |found, number| {
                if found != LineIssues::default() {
                    issues.push((found, number));
                }
            },
        );
        *lines += count;
        for (found, number) in issues {
            note_issues(found, number, counters);
        }
        count
    }
}

fn observe(
    m: Match<'_>,
    line: u64,
    katib: bool,
    agg: &mut Aggregator,
    counters: &mut Counters,
    sink: &mut impl ObservationSink,
) {
    if oversized(m.name, m.raw, counters) {
        return;
    }
    let value = if m.numeric { value::parse_number(m.raw) } else { value::parse_value(m.raw) };
    if value.is_none() && !katib {
        counters.parse_errors += 1;
        return;
    }
    let Some(id) = agg.intern(m.name) else { return };
    agg.record(id, m.raw, value, m.step, line);
    counters.observations += 1;
    sink.observe(&Observation { metric: id, name: m.name, raw: m.raw, value, step: m.step, time: m.time, line });
}

/// Whether the observation's name or value is over its limit; counts it (and says the first) when it is.
fn oversized(name: &[u8], raw: &[u8], counters: &mut Counters) -> bool {
    if name.len() <= MAX_NAME_BYTES && raw.len() <= MAX_VALUE_BYTES {
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
    use crate::rules::{LineFormat, RuleSpec};

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
        let mut c = Stream::new(Rules::new(&[], &[], Semantics::Native, LineFormat::Text).unwrap(), 8192, 100);
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
        let mut c = stream(&[]);
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
                rules.scan(line.bytes, &mut |m| {
                    if katib || value::parse_value(m.raw).is_some() {
                        out.push((m.name.to_vec(), m.raw.to_vec(), m.step, n));
                    }
                });
            };
            buf.feed(input, &mut each);
            buf.finish(&mut each);
            out
        }

        #[derive(Default)]
        struct Rec(Obs);
        impl ObservationSink for Rec {
            fn observe(&mut self, o: &Observation<'_>) {
                self.0.push((o.name.to_vec(), o.raw.to_vec(), o.step, o.line));
            }
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
            ];
            proptest::collection::vec(atoms, 0..6).prop_map(|v| v.concat())
        }

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
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
                cuts.sort_unstable();
                let mut c = Stream::new(Rules::new(&specs, &names, semantics, LineFormat::Text).unwrap(), max, 1000);
                let mut rec = Rec::default();
                let mut at = 0;
                for cut in cuts {
                    c.feed(&input[at..cut], &mut rec);
                    at = cut;
                }
                c.feed(&input[at..], &mut rec);
                c.finish(&mut rec);
                prop_assert_eq!(rec.0, reference);
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

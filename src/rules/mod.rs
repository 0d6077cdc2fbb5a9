//! Rules: which bytes of a line are a metric's name, value and step.
//!
//! A [`Rules`] value is built once from the configuration and then scans lines; it is the hot path's middle stage.
//! Two semantics exist:
//!
//! - **Native** (the default): presets and user rules with named groups, `\r` redraws split into separate lines,
//!   ANSI escape sequences and backspaces removed before matching, a match counts only when its value is a
//!   number (`nan`, `inf`, `1e-3`, `.5`, `+1.` included). Without `--metrics` every name a rule captures is a
//!   metric; with it, only those names.
//! - **Katib** (`--katib-semantics`, and the drop-in): exactly Katib's file collector – ASCII classes, a line is
//!   looked at only if it contains one of the metric names, every filter applied find-all in order, the trimmed
//!   name must equal a metric name, the trimmed value is kept as printed whatever it is, `\r` kept.
//!
//! Invariants: no allocation per line in text mode (captures use slots kept in the [`Rules`] value, cleaning uses
//! one reused buffer); the line is never copied unless it holds `\r`, ESC or backspace.
//!
//! What it does not do: parse values, keep state between lines, or decide what a timestamp means beyond "the first
//! token is RFC 3339"; the collector and the aggregator do the rest.

use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use memchr::memmem;
use regex::bytes::{CaptureLocations, Regex};

use crate::value;

mod auto;
mod block;
mod json;
mod katib;
mod presets;
mod terminal;

use auto::Auto;
pub use auto::{BINARY_WINDOW, Findings, Format, Param, SAMPLE_LINES};

use block::{Finder, block_finders};
use json::scan_json;
pub use katib::{KATIB_DEFAULT_FILTER, go_regex, literal_braces};
pub use presets::Preset;
use presets::{preset_rule, scan_at_step, scan_pairs};
use terminal::clean_terminal;

/// Which semantics the rules follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    /// trialtail's own rules.
    Native,
    /// Katib's file metrics collector, to the letter.
    Katib,
}

/// How lines are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// Free text, matched by filters and presets.
    Text,
    /// One JSON object per line.
    Json,
}

/// A rule as the user wrote it, before compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSpec {
    /// `--filter REGEX`: groups `name`/`value`/`step`, or group 1 = name and group 2 = value.
    Filter(String),
    /// `--metric NAME=REGEX`: a fixed name; the `value` group or the only group is the value.
    Metric { name: String, regex: String },
    /// `--preset NAME`.
    Preset(Preset),
}

/// What went wrong building rules; each names the flag and the value.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("--filter {pattern:?}: invalid regex: {message}")]
    FilterRegex { pattern: String, message: String },
    #[error(
        "--filter {pattern:?}: needs (?P<name>…) and (?P<value>…) groups, or at least two groups (1 = name, 2 = value)"
    )]
    FilterGroups { pattern: String },
    #[error("--metric {name}={pattern:?}: invalid regex: {message}")]
    MetricRegex { name: String, pattern: String, message: String },
    #[error("--metric {name}={pattern:?}: needs a (?P<value>…) group or exactly one group")]
    MetricGroups { name: String, pattern: String },
    #[error("--metric {spec:?}: expected NAME=REGEX with a non-empty name")]
    MetricSyntax { spec: String },
    #[error("--katib-semantics: {what} cannot be used with Katib's semantics")]
    NotKatib { what: String },
    #[error("--katib-semantics needs --metrics: Katib only reports named metrics, the first being the objective")]
    KatibNeedsNames,
    #[error("--metrics: empty metric name in {list:?}")]
    EmptyName { list: String },
}

/// One match on a line, borrowed from the line or the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match<'a> {
    /// The metric's name as printed (or the rule's fixed name).
    pub name: &'a [u8],
    /// The value's text as printed (trimmed).
    pub raw: &'a [u8],
    /// The step the rule captured, if any.
    pub step: Option<u64>,
    /// The timestamp: the line's first token when it is RFC 3339, or the JSON `timestamp` key.
    pub time: Option<&'a [u8]>,
    /// How `raw` reads as a number.
    pub kind: ValueKind,
    /// The rule or recognised format that made the match (`--explain`).
    pub origin: Origin,
    /// The text the match was found in: the line, or one `\r` redraw of it (`--explain`'s sample line).
    pub context: &'a [u8],
    /// A small number the rules gave `name`, the same for every match of that name in a run (the recognition
    /// numbers its names): the parser keeps the metric's id under it instead of hashing the name again.
    pub key: Option<u32>,
}

/// How a match's value text reads as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Known to be a number in the native grammar (a scanner or JSON checked it): parsed without checking.
    Number,
    /// Anything: parsed and checked (a native value that is no number is a parse error).
    Text,
    /// A duration printed as `h:mm:ss` or `h:mm:ss.ff` (Hugging Face's runtimes): its seconds.
    Clock,
}

/// Which rule made a match: what `--explain` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The rule at this index (a `--filter`, `--metric` or `--preset`, or a default preset).
    Rule(u16),
    /// A JSON line (`--format json`).
    Json,
    /// A structured record ([`crate::parser::Parser::record`]).
    Record,
    /// A format recognised without being told (no rule flags).
    Auto(Format),
}

/// Problems found on a line that did not stop scanning it; counted by the collector.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LineIssues {
    /// A JSON-format line that is not a JSON object.
    pub bad_json: bool,
    /// A JSON `timestamp` that is neither RFC 3339 nor a number.
    pub bad_timestamp: bool,
}

enum NameFrom {
    Group(usize),
    Fixed(Box<[u8]>),
}

struct RegexRule {
    /// Must match first (anywhere); pairs are searched from its start. Its `step` group gives the line's step.
    context: Option<Regex>,
    context_step: Option<usize>,
    re: Regex,
    name: NameFrom,
    value: usize,
    step: Option<usize>,
    /// How name and value are trimmed.
    trim: Trim,
    /// Katib's reading of matches: Go's find-all iteration, a group that did not take part is an empty string,
    /// and a filter with fewer than two groups yields nothing (`len(kevList) < 3 → continue`).
    katib: bool,
}

/// How a rule trims the name and value it captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trim {
    /// As captured (the presets' groups take no spaces).
    None,
    /// RE2's `\s` set off both ends (native filters).
    Re2Space,
    /// Go's `strings.TrimSpace`: Unicode white space (Katib's filters).
    GoSpace,
}

/// A regex rule's reusable capture slots: for its pairs regex and its context regex.
struct Slots {
    pairs: Option<CaptureLocations>,
    context: Option<CaptureLocations>,
}

enum TextRule {
    /// Native `name=value` (the Katib preset), hand-written.
    Pairs,
    /// Native `Name at step N: V`, hand-written.
    AtStep(Box<memmem::Finder<'static>>),
    Regex(Box<RegexRule>),
}

/// The wanted metric names: exact set plus a substring prefilter.
struct Names {
    list: Vec<Box<[u8]>>,
    prefilter: AhoCorasick,
}

impl Names {
    fn contains(&self, name: &[u8]) -> bool {
        self.list.iter().any(|n| **n == *name)
    }
}

/// Compiled rules plus the scratch space they scan with.
pub struct Rules {
    semantics: Semantics,
    format: LineFormat,
    text: Vec<TextRule>,
    /// Per rule, the capture slots its regexes fill (reused for every line).
    slots: Vec<Slots>,
    names: Option<Names>,
    clean: Vec<u8>,
    /// How to find the lines of a block that can match; `None`: every line must be scanned.
    finders: Option<Vec<Finder>>,
    /// Per finder, its next hit in the current block.
    hits: Vec<usize>,
    /// No rule was given: every format is recognised from the log itself.
    auto: Option<Box<Auto>>,
    /// Each text rule in words (`--explain`).
    described: Vec<String>,
}

/// Every rule may match (the bit mask of [`Rules::scan_text`]).
const ALL_RULES: u64 = u64::MAX;

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("semantics", &self.semantics)
            .field("format", &self.format)
            .field("rules", &self.text.len())
            .finish()
    }
}

/// The compiled size any one regex may reach: the regex crate's `size_limit` (its default is 10 MiB), which
/// bounds the memory of the compiled program and the time compiling it takes.
pub const REGEX_SIZE_LIMIT: usize = 64 << 20;

/// The total length of the wanted names up to which their prefilter is a DFA (see [`Rules::new`]).
const DFA_NAME_BYTES: usize = 4 << 10;

/// Whether the native `--filter` `pattern` compiles to more than `limit` bytes (the regex crate's
/// `size_limit`, so finding out costs at most about `limit` in memory and time). A pattern that does not parse
/// is not too big: building the rules says what is wrong with it.
pub fn filter_too_big(pattern: &str, limit: usize) -> bool {
    let built = regex::bytes::RegexBuilder::new(&literal_braces(pattern)).size_limit(limit).build();
    matches!(built, Err(regex::Error::CompiledTooBig(_)))
}

fn compile(pattern: &str) -> Result<Regex, String> {
    regex::bytes::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| {
        // The regex crate's message draws a caret diagram over several lines; keep its last, one-line verdict.
        let text = e.to_string();
        text.rsplit_once("error: ").map_or(text.clone(), |(_, reason)| reason.trim().to_string())
    })
}

impl Rules {
    /// Compiles `specs` (or the default presets when empty) for `names` (empty = every name) and `semantics`.
    pub fn new(
        specs: &[RuleSpec],
        names: &[String],
        semantics: Semantics,
        format: LineFormat,
    ) -> Result<Self, RuleError> {
        let mut text = Vec::new();
        match semantics {
            Semantics::Katib => {
                if names.is_empty() {
                    return Err(RuleError::KatibNeedsNames);
                }
                let filters: Vec<String> = if specs.is_empty() {
                    vec![KATIB_DEFAULT_FILTER.to_string()]
                } else {
                    specs
                        .iter()
                        .map(|s| match s {
                            RuleSpec::Filter(f) => Ok(f.clone()),
                            RuleSpec::Metric { name, .. } => {
                                Err(RuleError::NotKatib { what: format!("--metric {name}=…") })
                            }
                            RuleSpec::Preset(p) => Err(RuleError::NotKatib { what: format!("--preset {}", p.name()) }),
                        })
                        .collect::<Result<_, _>>()?
                };
                for f in filters {
                    let invalid = |message| RuleError::FilterRegex { pattern: f.clone(), message };
                    let re = compile(&go_regex(&f).map_err(invalid)?).map_err(invalid)?;
                    if re.captures_len() < 3 {
                        tracing::warn!(
                            filter = %f,
                            "filter has fewer than two groups (name, value): Katib skips its matches, and so does trialtail"
                        );
                    }
                    text.push(TextRule::Regex(Box::new(RegexRule {
                        context: None,
                        context_step: None,
                        re,
                        name: NameFrom::Group(1),
                        value: 2,
                        step: None,
                        trim: Trim::GoSpace,
                        katib: true,
                    })));
                }
            }
            Semantics::Native => {
                let defaults: Vec<RuleSpec> = Preset::DEFAULT.iter().map(|&p| RuleSpec::Preset(p)).collect();
                for spec in if specs.is_empty() { &defaults[..] } else { specs } {
                    text.push(native_rule(spec)?);
                }
            }
        }
        let names = if names.is_empty() {
            None
        } else {
            // Katib takes its names as written, an empty one included (it makes every line a metric line).
            if let Some(list) = names.iter().find(|n| n.is_empty()).filter(|_| semantics == Semantics::Native) {
                return Err(RuleError::EmptyName { list: list.clone() });
            }
            let list: Vec<Box<[u8]>> = names.iter().map(|n| n.as_bytes().into()).collect();
            // aho-corasick picks a DFA for up to 100 names; building it takes time that grows with the names'
            // total length times the longest one (`dfa::Builder::finish_build_one_start` follows the NFA's
            // failure links from every state): a few names of 100 KB take minutes. Beyond
            // `DFA_NAME_BYTES` (longer than any real list), the contiguous NFA, built in linear time.
            let long = list.iter().map(|n| n.len()).sum::<usize>() > DFA_NAME_BYTES;
            let prefilter = AhoCorasick::builder()
                .kind(long.then_some(AhoCorasickKind::ContiguousNFA))
                .build(&list)
                .map_err(|e| RuleError::EmptyName { list: e.to_string() })?;
            Some(Names { list, prefilter })
        };
        let slots = text
            .iter()
            .map(|r| match r {
                TextRule::Regex(r) => Slots {
                    pairs: Some(r.re.capture_locations()),
                    context: r.context.as_ref().map(Regex::capture_locations),
                },
                _ => Slots { pairs: None, context: None },
            })
            .collect();
        let auto =
            (semantics == Semantics::Native && format == LineFormat::Text && specs.is_empty() && names.is_none())
                .then(|| Box::new(Auto::new(None)));
        let finders = if auto.is_some() { None } else { block_finders(semantics, format, &text, names.is_some()) };
        let hits = vec![0; finders.as_ref().map_or(0, Vec::len)];
        let text = if auto.is_some() { Vec::new() } else { text };
        let slots = if auto.is_some() { Vec::new() } else { slots };
        let described = if specs.is_empty() && semantics == Semantics::Native {
            Preset::DEFAULT.iter().map(|p| describe_spec(&RuleSpec::Preset(*p))).collect()
        } else {
            specs.iter().map(describe_spec).collect()
        };
        Ok(Rules { semantics, format, text, slots, names, clean: Vec::new(), finders, hits, auto, described })
    }

    /// Recognition of every format (as with no rule flags), keeping only the metrics in `names` (every metric
    /// when empty). For callers that know the metric names but not the log's format, such as a Katib Trial's
    /// objective; `--metrics` itself keeps its meaning (the `katib` and `tf-step` presets, those names).
    pub fn recognise(names: &[String]) -> Self {
        let only = (!names.is_empty()).then(|| names.iter().map(|n| n.as_bytes().into()).collect());
        Rules {
            semantics: Semantics::Native,
            format: LineFormat::Text,
            text: Vec::new(),
            slots: Vec::new(),
            names: None,
            clean: Vec::new(),
            finders: None,
            hits: Vec::new(),
            auto: Some(Box::new(Auto::new(only))),
            described: Vec::new(),
        }
    }

    /// The presets `katib` and `tf-step`: what `--metrics` alone reads (and what no flags read before the
    /// recognition); for tests that need plain, stateless rules.
    #[cfg(test)]
    pub(crate) fn classic() -> Self {
        let specs = [RuleSpec::Preset(Preset::Katib), RuleSpec::Preset(Preset::TfStep)];
        Rules::new(&specs, &[], Semantics::Native, LineFormat::Text).expect("presets compile")
    }

    /// Whether the formats are recognised from the log (no rule was given).
    pub fn recognising(&self) -> bool {
        self.auto.is_some()
    }

    /// The parameters the recognition set apart (values printed once, reprs): empty with explicit rules.
    pub fn params(&self) -> Vec<Param> {
        self.auto.as_ref().map_or_else(Vec::new, |a| a.params())
    }

    /// What the recognition saw (for the "no metrics found" help); `None` with explicit rules.
    pub fn findings(&self) -> Option<Findings> {
        self.auto.as_ref().map(|a| a.seen())
    }

    /// A stream ended: state kept across its lines (a progress bar's last frame) is observed. Explicit rules
    /// keep no such state.
    pub fn end_of_stream(&mut self, emit: &mut impl FnMut(Match<'_>, u64)) {
        if let Some(auto) = &mut self.auto {
            auto.end(emit);
        }
    }

    /// What made a match, in words (`--explain`).
    pub fn describe(&self, origin: Origin) -> String {
        match origin {
            Origin::Auto(f) => f.example().to_string(),
            Origin::Json => "--format json: a key of a JSON line".to_string(),
            Origin::Record => "a structured record".to_string(),
            Origin::Rule(i) if self.semantics == Semantics::Katib => format!("Katib filter #{}", i + 1),
            Origin::Rule(i) => match self.described.get(usize::from(i)) {
                Some(d) => d.clone(),
                None => format!("rule #{}", i + 1),
            },
        }
    }

    /// The semantics these rules follow.
    pub fn semantics(&self) -> Semantics {
        self.semantics
    }

    /// How lines are encoded.
    pub fn format(&self) -> LineFormat {
        self.format
    }

    /// The wanted names, in order, when given.
    pub fn names(&self) -> Option<impl Iterator<Item = &[u8]>> {
        self.names.as_ref().map(|n| n.list.iter().map(|b| &**b))
    }

    /// Scans one line and calls `emit` for every match, in line order, then rule order, then match order.
    /// With recognition, matches held back from earlier lines may come out too; use [`Rules::scan_numbered`]
    /// to know their lines.
    pub fn scan(&mut self, line: &[u8], emit: &mut impl FnMut(Match<'_>)) -> LineIssues {
        self.scan_numbered(line, 0, &mut |m, _| emit(m))
    }

    /// Scans line `number` and calls `emit` for every match with the number of the line it was made on: this line,
    /// or, with recognition, an earlier line whose observation was held back until its name proved a metric.
    pub fn scan_numbered(&mut self, line: &[u8], number: u64, emit: &mut impl FnMut(Match<'_>, u64)) -> LineIssues {
        self.scan_at(line, number, None, emit)
    }

    /// [`Rules::scan_numbered`] for a line read at `time` (the pod log's timestamp, cut off the line): an
    /// observation held back keeps it when the line has no time of its own.
    pub fn scan_at(
        &mut self,
        line: &[u8],
        number: u64,
        time: Option<&[u8]>,
        emit: &mut impl FnMut(Match<'_>, u64),
    ) -> LineIssues {
        if let Some(auto) = &mut self.auto {
            auto.line(line, number, time, emit);
            return LineIssues::default();
        }
        let emit = &mut |m: Match<'_>| emit(m, number);
        match self.format {
            LineFormat::Json => scan_json(line, self.names.as_ref(), self.semantics, emit),
            LineFormat::Text => {
                let dirty = self.semantics == Semantics::Native && memchr::memchr3(b'\r', 0x1b, 0x08, line).is_some();
                self.scan_text(line, dirty, ALL_RULES, emit);
                LineIssues::default()
            }
        }
    }

    /// A text line; `dirty`: it holds `\r`, ESC or backspace (native semantics clean it first). Only the rules
    /// whose bit is set in `active` run on a clean line (the block scan knows which rules can match it).
    fn scan_text(&mut self, line: &[u8], dirty: bool, active: u64, emit: &mut impl FnMut(Match<'_>)) {
        let Rules { text, slots, names, clean, semantics, .. } = self;
        let names = names.as_ref();
        if *semantics == Semantics::Katib {
            // Go matches a string: bytes that are not UTF-8 read as U+FFFD, one each.
            if names.is_none_or(|n| n.prefilter.is_match(line)) {
                let seg = value::go_lossy(line);
                scan_segment(seg.as_bytes(), line, text, slots, names, active, emit);
            }
        } else if dirty {
            clean_terminal(line, clean);
            for segment in clean.split(|&b| b == b'\r') {
                if !segment.is_empty() && names.is_none_or(|n| n.prefilter.is_match(segment)) {
                    scan_segment(segment, line, text, slots, names, ALL_RULES, emit);
                }
            }
        } else if names.is_none_or(|n| n.prefilter.is_match(line)) {
            scan_segment(line, line, text, slots, names, active, emit);
        }
    }
}

/// A rule in words, as `--explain` names it.
fn describe_spec(spec: &RuleSpec) -> String {
    match spec {
        RuleSpec::Preset(p) => format!("--preset {}: {}", p.name(), p.summary().trim_end_matches('.')),
        RuleSpec::Filter(f) => format!("--filter {f:?}"),
        RuleSpec::Metric { name, regex } => format!("--metric {name}={regex:?}"),
    }
}

fn native_rule(spec: &RuleSpec) -> Result<TextRule, RuleError> {
    Ok(match spec {
        RuleSpec::Preset(p) => preset_rule(*p),
        RuleSpec::Filter(pattern) => {
            let re = compile(&literal_braces(pattern))
                .map_err(|message| RuleError::FilterRegex { pattern: pattern.clone(), message })?;
            let (name, value) = match (group(&re, "name"), group(&re, "value")) {
                (Some(n), Some(v)) => (n, v),
                (None, None) if re.captures_len() >= 3 => (1, 2),
                _ => return Err(RuleError::FilterGroups { pattern: pattern.clone() }),
            };
            let step = group(&re, "step");
            TextRule::Regex(Box::new(RegexRule {
                context: None,
                context_step: None,
                re,
                name: NameFrom::Group(name),
                value,
                step,
                trim: Trim::Re2Space,
                katib: false,
            }))
        }
        RuleSpec::Metric { name, regex } => {
            let re = compile(&literal_braces(regex)).map_err(|message| RuleError::MetricRegex {
                name: name.clone(),
                pattern: regex.clone(),
                message,
            })?;
            let value = match group(&re, "value") {
                Some(v) => v,
                None if re.captures_len() == 2 => 1,
                None => return Err(RuleError::MetricGroups { name: name.clone(), pattern: regex.clone() }),
            };
            let step = group(&re, "step");
            TextRule::Regex(Box::new(RegexRule {
                context: None,
                context_step: None,
                re,
                name: NameFrom::Fixed(name.as_bytes().into()),
                value,
                step,
                trim: Trim::Re2Space,
                katib: false,
            }))
        }
    })
}

fn group(re: &Regex, name: &str) -> Option<usize> {
    re.capture_names().position(|n| n == Some(name))
}

/// Runs every text rule over one segment (a line, or one `\r` redraw of it).
fn scan_segment(
    seg: &[u8],
    line: &[u8],
    rules: &[TextRule],
    slots: &mut [Slots],
    names: Option<&Names>,
    active: u64,
    emit: &mut impl FnMut(Match<'_>),
) {
    // The line's timestamp is looked for once, and only when something matched.
    let mut time: Option<Option<&[u8]>> = None;
    for (i, rule) in rules.iter().enumerate() {
        if i < 64 && active & (1 << i) == 0 {
            continue;
        }
        let origin = Origin::Rule(u16::try_from(i).unwrap_or(u16::MAX));
        let mut out = |name: &[u8], raw: &[u8], step: Option<u64>, numeric: bool| {
            if names.is_none_or(|n| n.contains(name)) {
                let time = *time.get_or_insert_with(|| value::line_timestamp(line));
                let kind = if numeric { ValueKind::Number } else { ValueKind::Text };
                emit(Match { name, raw, step, time, kind, origin, context: seg, key: None });
            }
        };
        match rule {
            TextRule::Pairs => scan_pairs(seg, &mut out),
            TextRule::AtStep(finder) => scan_at_step(seg, finder, &mut out),
            TextRule::Regex(r) => {
                let Slots { pairs: Some(locs), context } = &mut slots[i] else { continue };
                scan_regex(seg, r, locs, context.as_mut(), &mut out);
            }
        }
    }
}

fn span<'a>(hay: &'a [u8], locs: &CaptureLocations, g: usize) -> Option<&'a [u8]> {
    locs.get(g).map(|(s, e)| &hay[s..e])
}

fn scan_regex(
    seg: &[u8],
    r: &RegexRule,
    locs: &mut CaptureLocations,
    context_locs: Option<&mut CaptureLocations>,
    out: &mut impl FnMut(&[u8], &[u8], Option<u64>, bool),
) {
    if r.katib {
        return scan_katib(seg, r, locs, out);
    }
    let mut at = 0;
    let mut line_step = None;
    if let (Some(context), Some(cl)) = (&r.context, context_locs) {
        let Some(m) = context.captures_read(cl, seg) else { return };
        at = m.start();
        line_step = r.context_step.and_then(|g| span(seg, cl, g)).and_then(value::parse_step);
    }
    while at <= seg.len() {
        let Some(m) = r.re.captures_read_at(locs, seg, at) else { break };
        at = if m.end() == m.start() { m.end() + 1 } else { m.end() };
        let name = match &r.name {
            NameFrom::Fixed(n) => &n[..],
            // A preset may name its name group twice (`name`, `name2`) for alternative line shapes.
            NameFrom::Group(g) => match span(seg, locs, *g).or_else(|| span(seg, locs, *g + 1)) {
                Some(n) => n,
                None => continue,
            },
        };
        let Some(raw) = span(seg, locs, r.value) else { continue };
        let step = r.step.and_then(|g| span(seg, locs, g)).and_then(value::parse_step).or(line_step);
        match r.trim {
            Trim::Re2Space => out(value::trim(name), value::trim(raw), step, false),
            _ => out(name, raw, step, false),
        }
    }
}

/// A Katib filter over one line as Go's `FindAllStringSubmatch` walks it (`$GOROOT/src/regexp/regexp.go`,
/// `allMatches`): an empty match right where the previous match ended is not reported, and after an empty match
/// the search moves on by one character. Groups that did not take part are empty strings; a filter with fewer
/// than two groups reports nothing; name and value are trimmed with Go's `strings.TrimSpace`.
fn scan_katib(
    seg: &[u8],
    r: &RegexRule,
    locs: &mut CaptureLocations,
    out: &mut impl FnMut(&[u8], &[u8], Option<u64>, bool),
) {
    if r.re.captures_len() < 3 {
        return;
    }
    let (mut pos, mut prev_end) = (0, None);
    while pos <= seg.len() {
        let Some(m) = r.re.captures_read_at(locs, seg, pos) else { break };
        let empty_here = m.end() == pos;
        let accept = !(empty_here && prev_end == Some(m.start()));
        pos = if empty_here { pos + char_len(&seg[pos..]) } else { m.end() };
        prev_end = Some(m.end());
        if accept {
            let group = |g| span(seg, locs, g).unwrap_or_default();
            out(value::go_trim_space(group(1)), value::go_trim_space(group(2)), None, false);
        }
    }
}

/// The length of the character at the start of `s` (1 for a byte that starts none, and at the end).
fn char_len(s: &[u8]) -> usize {
    match s.first() {
        Some(b) if *b >= 0xF0 => 4,
        Some(b) if *b >= 0xE0 => 3,
        Some(b) if *b >= 0xC0 => 2,
        _ => 1,
    }
    .min(s.len().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Got = Vec<(String, String, Option<u64>, Option<String>)>;

    fn scan_all(rules: &mut Rules, text: &str) -> Got {
        let mut got = Vec::new();
        for line in text.split('\n') {
            rules.scan(line.as_bytes(), &mut |m: Match<'_>| {
                got.push((
                    String::from_utf8_lossy(m.name).into_owned(),
                    String::from_utf8_lossy(m.raw).into_owned(),
                    m.step,
                    m.time.map(|t| String::from_utf8_lossy(t).into_owned()),
                ));
            });
        }
        got
    }

    fn native(specs: &[RuleSpec], names: &[&str]) -> Rules {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        Rules::new(specs, &names, Semantics::Native, LineFormat::Text).unwrap()
    }

    fn pairs(got: &Got) -> Vec<(&str, &str)> {
        got.iter().map(|(n, v, _, _)| (n.as_str(), v.as_str())).collect()
    }

    #[test]
    fn no_rules_recognise_tf_step_and_name_value_lines_once_they_change() {
        let mut r = native(&[], &[]);
        let got =
            scan_all(&mut r, "Accuracy at step 120: 0.9134\nepoch 3: loss=0.2351 accuracy=.98\nepoch 4: loss=0.2");
        assert_eq!(got[0], ("Accuracy".into(), "0.9134".into(), Some(120), None));
        assert_eq!(pairs(&got)[1..], [("loss", "0.2351"), ("loss", "0.2")]);
        assert_eq!(got[1].2, Some(3));
        assert_eq!(r.params().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["accuracy"]);
    }

    #[test]
    fn the_classic_presets_take_every_pair() {
        let mut r = Rules::classic();
        let got = scan_all(&mut r, "Accuracy at step 120: 0.9134\nepoch 3: loss=0.2351 accuracy=.98");
        assert_eq!(pairs(&got)[1..], [("loss", "0.2351"), ("accuracy", ".98")]);
    }

    #[test]
    fn pair_scanner_stops_names_at_the_previous_match() {
        let mut r = native(&[RuleSpec::Preset(Preset::Katib)], &[]);
        assert_eq!(pairs(&scan_all(&mut r, "a=1x2=3")), [("a", "1"), ("x2", "3")]);
        assert_eq!(
            pairs(&scan_all(&mut r, "x==3 lr=[0.1] a|b = -1e-3, c=info d=nan")),
            [("a|b", "-1e-3"), ("d", "nan")]
        );
    }

    #[test]
    fn names_restrict_and_prefilter() {
        let mut r = native(&[], &["loss"]);
        assert_eq!(pairs(&scan_all(&mut r, "v_num=3 loss=0.5 train_loss=0.7")), [("loss", "0.5")]);
        assert!(scan_all(&mut r, "accuracy=0.9").is_empty());
    }

    #[test]
    fn names_longer_than_a_dfa_is_built_for_prefilter_the_same() {
        let long = "x".repeat(DFA_NAME_BYTES);
        let mut r = native(&[], &["loss", &long]);
        let line = format!("loss=0.5 {long}=2 y=3");
        assert_eq!(pairs(&scan_all(&mut r, &line)), [("loss", "0.5"), (long.as_str(), "2")]);
        assert!(scan_all(&mut r, "accuracy=0.9").is_empty());
    }

    #[test]
    fn carriage_return_redraws_are_separate_lines_and_escapes_are_ignored() {
        let mut r = native(&[RuleSpec::Preset(Preset::Keras)], &[]);
        let line = "1/3 - loss: 0.9\r2/3 - loss: 0.8\x087\r\x1b[32m3/3\x1b[0m - loss: 0.6\r\n";
        assert_eq!(pairs(&scan_all(&mut r, line)), [("loss", "0.9"), ("loss", "0.7"), ("loss", "0.6")]);
    }

    #[test]
    fn presets_read_real_framework_lines() {
        type Case<'a> = (Preset, &'a str, &'a [(&'a str, &'a str)], Option<u64>);
        let cases: &[Case<'_>] = &[
            (
                Preset::Keras,
                "90/90 - 2s - 23ms/step - accuracy: 0.4287 - loss: 1.9705 - val_loss: 1.5127 - ETA: 2s",
                &[("accuracy", "0.4287"), ("loss", "1.9705"), ("val_loss", "1.5127")],
                None,
            ),
            (
                Preset::HfTrainer,
                "{'loss': 0.5123, 'grad_norm': 1.234, 'learning_rate': 4.99833e-05, 'epoch': 0.12}",
                &[("loss", "0.5123"), ("grad_norm", "1.234"), ("learning_rate", "4.99833e-05"), ("epoch", "0.12")],
                None,
            ),
            (
                Preset::Xgboost,
                "[17]\tvalidation_0-logloss:0.61234\tvalidation_1-logloss:0.63321",
                &[("validation_0-logloss", "0.61234"), ("validation_1-logloss", "0.63321")],
                Some(17),
            ),
            (
                Preset::Lightgbm,
                "[10]\tvalid_0's binary_logloss: 0.3\tvalid_0's auc: 0.91",
                &[("valid_0's binary_logloss", "0.3"), ("valid_0's auc", "0.91")],
                Some(10),
            ),
            (Preset::Sklearn, "Iteration 3, loss = 0.41", &[("loss", "0.41")], Some(3)),
            (Preset::Sklearn, "Validation score: 0.087963", &[("Validation score", "0.087963")], None),
            (
                Preset::Tqdm,
                "Epoch 1: 100%|##########| 50/50 [00:01<00:00, 9.52it/s, loss=0.3, acc=0.9, v_num=1]",
                &[("loss", "0.3"), ("acc", "0.9"), ("v_num", "1")],
                None,
            ),
        ];
        for (preset, line, expected, step) in cases {
            let mut r = native(&[RuleSpec::Preset(*preset)], &[]);
            let got = scan_all(&mut r, line);
            assert_eq!(pairs(&got), *expected, "{preset:?}");
            assert!(got.iter().all(|g| g.2 == *step), "{preset:?} step");
        }
    }

    #[test]
    fn presets_ignore_near_misses() {
        let cases: &[(Preset, &str)] = &[
            (Preset::Xgboost, "[LightGBM] [Info] Number of positive: 3"),
            (Preset::HfTrainer, "print({'loss': 1})"),
            (Preset::Tqdm, "Namespace(batch_size=32, epochs=3]"),
            (Preset::Keras, "Epoch 1/5"),
            (Preset::TfStep, "Adding run metadata for 99"),
        ];
        for (preset, line) in cases {
            assert!(scan_all(&mut native(&[RuleSpec::Preset(*preset)], &[]), line).is_empty(), "{preset:?}");
        }
    }

    #[test]
    fn user_filters_take_named_or_numbered_groups() {
        let specs = [
            RuleSpec::Filter(r"(?P<value>\S+) is (?P<name>\w+) at (?P<step>\d+)".into()),
            RuleSpec::Filter(r"\{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)\}".into()),
            RuleSpec::Metric { name: "val".into(), regex: r"val=(\S+)".into() },
        ];
        let mut r = native(&specs, &[]);
        let got = scan_all(&mut r, "0.5 is acc at 7 {metricName: loss, metricValue: 0.51} val=3");
        assert_eq!(pairs(&got), [("acc", "0.5"), ("loss", "0.51"), ("val", "3")]);
        assert_eq!(got[0].2, Some(7));
    }

    #[test]
    fn bad_rules_name_the_flag() {
        let err =
            |spec: RuleSpec| Rules::new(&[spec], &[], Semantics::Native, LineFormat::Text).unwrap_err().to_string();
        assert!(err(RuleSpec::Filter("(".into())).starts_with("--filter \"(\": invalid regex"));
        assert!(err(RuleSpec::Filter("(a)".into())).contains("at least two groups"));
        assert!(err(RuleSpec::Metric { name: "x".into(), regex: "(a)(b)".into() }).contains("exactly one group"));
        // Katib skips the matches of a filter with fewer than two groups; it is no start-up error there.
        let mut katib =
            Rules::new(&[RuleSpec::Filter("(a)".into())], &["a".into()], Semantics::Katib, LineFormat::Text).unwrap();
        assert!(scan_all(&mut katib, "a=1").is_empty());
        let katib = Rules::new(&[], &[], Semantics::Katib, LineFormat::Text);
        assert!(katib.unwrap_err().to_string().contains("needs --metrics"));
    }

    #[test]
    fn json_native_takes_numbers_and_numeric_strings() {
        let mut r = Rules::new(&[], &[], Semantics::Native, LineFormat::Json).unwrap();
        let got = scan_all(
            &mut r,
            r#"{"loss": "0.5", "acc": 0.9, "note": "x", "global_step": "45", "timestamp": 1638422847.28721}"#,
        );
        assert_eq!(pairs(&got), [("loss", "0.5"), ("acc", "0.9")]);
        assert_eq!(got[0].2, Some(45));
        assert_eq!(got[0].3.as_deref(), Some("2021-12-02T05:27:27.28721Z"));
    }
}

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

use std::borrow::Cow;
use std::fmt;

use aho_corasick::AhoCorasick;
use memchr::memmem;
use regex::bytes::{CaptureLocations, Regex};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::value::{self, ZERO_TIME, is_go_space, is_word, scan_number};

/// Katib's default metrics filter (CONTRACT §2).
pub const KATIB_DEFAULT_FILTER: &str = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)";

/// The value grammar of the native presets, as a regex (the same grammar as [`value::scan_number`]).
const NUM: &str = r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|infinity|inf)\b)";

/// Which semantics the rules follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    /// trialtail's own rules.
    Native,
    /// Katib's file metrics collector, to the letter.
    Katib,
}

/// How lines are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Free text, matched by filters and presets.
    Text,
    /// One JSON object per line.
    Json,
}

/// A built-in rule for a framework's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// `name=value` pairs, Katib's default format (`loss=0.2351`).
    Katib,
    /// TensorFlow's `Accuracy at step 120: 0.9134`.
    TfStep,
    /// Keras `- loss: 0.3 - accuracy: 0.9`, progress-bar redraws included.
    Keras,
    /// Hugging Face Trainer dicts `{'loss': 0.69, 'learning_rate': 4e-05, 'epoch': 1.0}`.
    HfTrainer,
    /// XGBoost `[3]\tvalidation_0-logloss:0.61`.
    Xgboost,
    /// LightGBM `[10]\tvalid_0's binary_logloss: 0.3`.
    Lightgbm,
    /// scikit-learn `Iteration 3, loss = 0.41` and `Validation score: 0.9`.
    Sklearn,
    /// tqdm postfixes `…it/s, loss=0.3, acc=0.9]`.
    Tqdm,
}

impl Preset {
    /// The presets used when no rule is given.
    pub const DEFAULT: [Preset; 2] = [Preset::Katib, Preset::TfStep];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Katib => "katib",
            Preset::TfStep => "tf-step",
            Preset::Keras => "keras",
            Preset::HfTrainer => "hf-trainer",
            Preset::Xgboost => "xgboost",
            Preset::Lightgbm => "lightgbm",
            Preset::Sklearn => "sklearn",
            Preset::Tqdm => "tqdm",
        }
    }
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
    /// `raw` is known to be a number in the native grammar (a scanner or JSON checked it): parse without checking.
    pub numeric: bool,
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
    /// Trim name and value (Katib trims both).
    trim: bool,
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
    format: Format,
    text: Vec<TextRule>,
    /// Per rule, the capture slots its regexes fill (reused for every line).
    slots: Vec<Slots>,
    names: Option<Names>,
    clean: Vec<u8>,
    /// How to find the lines of a block that can match; `None`: every line must be scanned.
    finders: Option<Vec<Finder>>,
    /// Per finder, its next hit in the current block.
    hits: Vec<usize>,
}

/// Finds, in a block of lines, the next byte position whose line may hold a match.
///
/// The union of a rule set's finders is a superset of the lines that match: a line without a hit cannot
/// produce an observation, so the block scan skips it without looking at it.
enum Finder {
    /// `\r`, ESC, backspace: such lines are cleaned first, so they are always scanned.
    Terminal,
    /// A byte every match holds (`=` for `name=value`).
    Byte(u8),
    /// A literal every match holds (` at step `).
    Literal(Box<memmem::Finder<'static>>),
    /// The rule's own regex (or its context) in multi-line mode.
    Regex(Regex),
    /// The wanted names' substring prefilter.
    Names,
}

/// No further hit in this block.
const NO_HIT: usize = usize::MAX;

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

fn compile(pattern: &str) -> Result<Regex, String> {
    regex::bytes::RegexBuilder::new(pattern).size_limit(64 << 20).build().map_err(|e| {
        // The regex crate's message draws a caret diagram over several lines; keep its last, one-line verdict.
        let text = e.to_string();
        text.rsplit_once("error: ").map_or(text.clone(), |(_, reason)| reason.trim().to_string())
    })
}

/// Rewrites Go RE2's `\s`/`\S` (no vertical tab) into explicit classes and turns Unicode off, so a Katib filter
/// means in Rust what it means in Go.
pub fn go_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    out.push_str("(?-u)");
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('s') if in_class => out.push_str(r"\t\n\f\r "),
                Some('s') => out.push_str(r"[\t\n\f\r ]"),
                Some('S') if !in_class => out.push_str(r"[^\t\n\f\r ]"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A `]` or `^]` right after `[` is literal.
                let rest = chars.as_str();
                for lead in ["^]", "]", "^"] {
                    if let Some(after) = rest.strip_prefix(lead) {
                        out.push_str(lead);
                        chars = after.chars();
                        break;
                    }
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    literal_braces(&out)
}

/// Escapes every `{` outside a class that does not start a repetition (`{n}`, `{n,}`, `{n,m}`): RE2 reads such a
/// brace as a literal (Katib's documented `{metricName: …}` filter relies on it), Rust's `regex` rejects it.
pub fn literal_braces(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut in_class = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            let end = (i + 1 + pattern[i + 1..].chars().next().map_or(0, char::len_utf8)).min(b.len());
            out.push_str(&pattern[i..end]);
            i = end;
            continue;
        }
        if c == b'[' && !in_class {
            in_class = true;
        } else if c == b']' && in_class {
            in_class = false;
        } else if c == b'{' && !in_class && !is_repetition(&b[i..]) {
            out.push_str("\\{");
            i += 1;
            continue;
        }
        let end = i + pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..end]);
        i = end;
    }
    out
}

fn is_repetition(s: &[u8]) -> bool {
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let n = digits(1);
    if n == 0 {
        return false;
    }
    match s.get(1 + n) {
        Some(b'}') => true,
        Some(b',') => {
            let m = digits(2 + n);
            s.get(2 + n + m) == Some(&b'}')
        }
        _ => false,
    }
}

impl Rules {
    /// Compiles `specs` (or the default presets when empty) for `names` (empty = every name) and `semantics`.
    pub fn new(specs: &[RuleSpec], names: &[String], semantics: Semantics, format: Format) -> Result<Self, RuleError> {
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
                    let re = compile(&go_regex(&f))
                        .map_err(|message| RuleError::FilterRegex { pattern: f.clone(), message })?;
                    if re.captures_len() < 3 {
                        return Err(RuleError::FilterGroups { pattern: f });
                    }
                    text.push(TextRule::Regex(Box::new(RegexRule {
                        context: None,
                        context_step: None,
                        re,
                        name: NameFrom::Group(1),
                        value: 2,
                        step: None,
                        trim: true,
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
            if let Some(list) = names.iter().find(|n| n.is_empty()) {
                return Err(RuleError::EmptyName { list: list.clone() });
            }
            let list: Vec<Box<[u8]>> = names.iter().map(|n| n.as_bytes().into()).collect();
            let prefilter = AhoCorasick::new(&list).map_err(|e| RuleError::EmptyName { list: e.to_string() })?;
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
        let finders = block_finders(semantics, format, &text, names.is_some());
        let hits = vec![0; finders.as_ref().map_or(0, Vec::len)];
        Ok(Rules { semantics, format, text, slots, names, clean: Vec::new(), finders, hits })
    }

    /// The semantics these rules follow.
    pub fn semantics(&self) -> Semantics {
        self.semantics
    }

    /// How lines are encoded.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The wanted names, in order, when given.
    pub fn names(&self) -> Option<impl Iterator<Item = &[u8]>> {
        self.names.as_ref().map(|n| n.list.iter().map(|b| &**b))
    }

    /// Scans a block of complete lines (each ending in `\n`; the first is line `first`) and calls `emit` for every
    /// match with its line number; returns the number of lines. Equal to [`Rules::scan`] on each line in turn.
    ///
    /// # Performance
    /// Only lines with a finder hit are scanned; the rest are only counted. With the default rules this
    /// roughly doubles throughput on typical logs over line-by-line scanning (see `benches/throughput.rs`).
    pub fn scan_block(
        &mut self,
        block: &[u8],
        first: u64,
        emit: &mut impl FnMut(Match<'_>, u64),
        issues: &mut impl FnMut(LineIssues, u64),
    ) -> u64 {
        let body = &block[..block.len().saturating_sub(1)];
        let Some(finder_count) = self.finders.as_ref().map(Vec::len) else {
            let mut number = first;
            for line in body.split(|&b| b == b'\n') {
                let found = self.scan(line, &mut |m| emit(m, number));
                issues(found, number);
                number += 1;
            }
            return number - first;
        };
        for i in 0..finder_count {
            self.hits[i] = self.find(i, block, 0);
        }
        // A line is scanned when it holds a terminal or rule hit and, with names, a name hit too (or is dirty).
        let terminal = usize::from(self.semantics == Semantics::Native);
        let names = self.names.is_some();
        let candidates = finder_count - usize::from(names);
        let (mut pos, mut counted, mut number) = (0usize, 0usize, first);
        while pos < block.len() {
            let mut next = NO_HIT;
            for i in 0..candidates {
                // A hit behind `pos` lay in a line already passed: look again from here.
                if self.hits[i] < pos {
                    self.hits[i] = self.find(i, block, pos);
                }
                next = next.min(self.hits[i]);
            }
            if next == NO_HIT {
                break;
            }
            let end = next + memchr::memchr(b'\n', &block[next..]).unwrap_or(block.len() - 1 - next);
            let dirty = terminal == 1 && self.hits[0] < end;
            if names && !dirty {
                let n = finder_count - 1;
                if self.hits[n] < pos {
                    self.hits[n] = self.find(n, block, pos);
                }
                if self.hits[n] >= end {
                    pos = end + 1;
                    continue;
                }
            }
            let start = memchr::memrchr(b'\n', &block[pos..next]).map_or(pos, |i| pos + i + 1);
            number += crate::lines::count_newlines(&block[counted..start]);
            let line_number = number;
            let active = if dirty { ALL_RULES } else { self.active_rules(terminal, end) };
            self.scan_text(&block[start..end], dirty, active, &mut |m| emit(m, line_number));
            number += 1;
            counted = end + 1;
            pos = end + 1;
        }
        number += crate::lines::count_newlines(&block[counted.min(block.len())..]);
        number - first
    }

    /// The rules whose finder hit lies in the line ending at `end` (rule `i`'s finder is `offset + i`).
    fn active_rules(&self, offset: usize, end: usize) -> u64 {
        if self.text.len() > 64 {
            return ALL_RULES;
        }
        let rules = &self.hits[offset..offset + self.text.len()];
        rules.iter().enumerate().filter(|(_, h)| **h < end).fold(0, |mask, (i, _)| mask | 1 << i)
    }

    fn find(&self, finder: usize, block: &[u8], from: usize) -> usize {
        let Some(finders) = &self.finders else { return NO_HIT };
        let hay = &block[from..];
        let hit = match &finders[finder] {
            Finder::Terminal => memchr::memchr3(b'\r', 0x1b, 0x08, hay),
            Finder::Byte(b) => memchr::memchr(*b, hay),
            Finder::Literal(f) => f.find(hay),
            Finder::Regex(re) => re.find(hay).map(|m| m.start()),
            Finder::Names => self.names.as_ref().and_then(|n| n.prefilter.find(hay)).map(|m| m.start()),
        };
        hit.map_or(NO_HIT, |i| from + i)
    }

    /// Scans one line and calls `emit` for every match, in line order, then rule order, then match order.
    pub fn scan(&mut self, line: &[u8], emit: &mut impl FnMut(Match<'_>)) -> LineIssues {
        match self.format {
            Format::Json => scan_json(line, self.names.as_ref(), self.semantics, emit),
            Format::Text => {
                let dirty = self.semantics == Semantics::Native && memchr::memchr3(b'\r', 0x1b, 0x08, line).is_some();
                self.scan_text(line, dirty, ALL_RULES, emit);
                LineIssues::default()
            }
        }
    }

    /// A text line; `dirty`: it holds `\r`, ESC or backspace (native semantics clean it first). Only the rules
    /// whose bit is set in `active` run on a clean line (the block scan knows which rules can match it).
    fn scan_text(&mut self, line: &[u8], dirty: bool, active: u64, emit: &mut impl FnMut(Match<'_>)) {
        let Rules { text, slots, names, clean, .. } = self;
        let names = names.as_ref();
        if dirty {
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

/// The finders whose hits cover every line the rules can match in, or `None` when some rule needs every line.
fn block_finders(semantics: Semantics, format: Format, rules: &[TextRule], names: bool) -> Option<Vec<Finder>> {
    if format == Format::Json {
        return None;
    }
    // Layout: the terminal finder (native only), then one finder per rule, then the names finder (when names).
    let mut finders: Vec<Finder> = (semantics == Semantics::Native).then_some(Finder::Terminal).into_iter().collect();
    for rule in rules {
        finders.push(match rule {
            TextRule::Pairs => Finder::Byte(b'='),
            TextRule::AtStep(_) => Finder::Literal(Box::new(memmem::Finder::new(b" at step "))),
            TextRule::Regex(r) => {
                let pattern = r.context.as_ref().unwrap_or(&r.re).as_str();
                // Multi-line mode makes `^`/`$` line anchors in the block; anchors to the haystack's ends, or
                // turning multi-line mode off again, would not mean the same: scan every line then.
                if pattern.contains("\\A") || pattern.contains("\\z") || pattern.contains("-m") {
                    return None;
                }
                Finder::Regex(compile(&format!("(?m){pattern}")).ok()?)
            }
        });
    }
    if names {
        finders.push(Finder::Names);
    }
    Some(finders)
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
                trim: true,
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
                trim: true,
            }))
        }
    })
}

fn group(re: &Regex, name: &str) -> Option<usize> {
    re.capture_names().position(|n| n == Some(name))
}

/// A preset regex rule; the patterns are constants, so compiling them cannot fail.
fn preset_regex(context: Option<&str>, pairs: &str, fixed: Option<&str>) -> TextRule {
    let build = |p: &str| compile(&format!("(?-u){}", p.replace("NUM", NUM))).expect("preset regexes compile");
    let context = context.map(build);
    let re = build(pairs);
    let context_step = context.as_ref().and_then(|c| group(c, "step"));
    let name = match fixed {
        Some(n) => NameFrom::Fixed(n.as_bytes().into()),
        None => NameFrom::Group(group(&re, "name").expect("preset has a name group")),
    };
    let value = group(&re, "value").expect("preset has a value group");
    let step = group(&re, "step");
    TextRule::Regex(Box::new(RegexRule { context, context_step, re, name, value, step, trim: false }))
}

fn preset_rule(p: Preset) -> TextRule {
    match p {
        Preset::Katib => TextRule::Pairs,
        Preset::TfStep => TextRule::AtStep(Box::new(memmem::Finder::new(b" at step "))),
        Preset::Keras => preset_regex(None, r"- (?P<name>[A-Za-z_][\w.]*): (?P<value>NUM)(?:\s|$)", None),
        Preset::HfTrainer => preset_regex(Some(r"^\s*\{'"), r"'(?P<name>[^']+)': '?(?P<value>NUM)'?[,}]", None),
        Preset::Xgboost => preset_regex(Some(r"^\[(?P<step>\d+)\]\t"), r"\t(?P<name>[^\t:]+):(?P<value>NUM)", None),
        Preset::Lightgbm => preset_regex(Some(r"^\[(?P<step>\d+)\]\t"), r"\t(?P<name>[^\t:]+): (?P<value>NUM)", None),
        Preset::Sklearn => preset_regex(
            None,
            r"^(?:Iteration (?P<step>\d+), (?P<name>loss) = |(?P<name2>Validation score): )(?P<value>NUM)",
            None,
        ),
        Preset::Tqdm => {
            preset_regex(Some(r"(?:it/s|s/it|\?it/s)"), r"[ ,](?P<name>[A-Za-z_][\w.\-/]*)=(?P<value>NUM)[,\]]", None)
        }
    }
}

/// Removes ANSI escape sequences and applies backspaces, keeping `\r` for the caller to split on.
fn clean_terminal(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            0x1b => {
                i += 1;
                match line.get(i) {
                    Some(b'[') => {
                        // CSI: parameters and intermediates, then one final byte in 0x40..=0x7e.
                        i += 1;
                        while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                            i += 1;
                        }
                        i += 1;
                    }
                    Some(b']') => {
                        // OSC: up to BEL or ESC \.
                        i += 1;
                        while i < line.len() && line[i] != 0x07 && !(line[i] == 0x1b && line.get(i + 1) == Some(&b'\\'))
                        {
                            i += 1;
                        }
                        i += if line.get(i) == Some(&0x07) { 1 } else { 2 };
                    }
                    Some(_) => i += 1,
                    None => {}
                }
            }
            0x08 => {
                if out.last().is_some_and(|&b| b != b'\r') {
                    out.pop();
                }
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
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
    let mut out = |name: &[u8], raw: &[u8], step: Option<u64>, numeric: bool| {
        if names.is_none_or(|n| n.contains(name)) {
            let time = *time.get_or_insert_with(|| value::line_timestamp(line));
            emit(Match { name, raw, step, time, numeric });
        }
    };
    for (i, rule) in rules.iter().enumerate() {
        if i < 64 && active & (1 << i) == 0 {
            continue;
        }
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
        if r.trim {
            out(value::trim(name), value::trim(raw), step, false);
        } else {
            out(name, raw, step, false);
        }
    }
}

/// Katib's `([\w|-]+)\s*=\s*(value)` with the native value grammar, anchored on each `=`.
///
/// Equal to the regex's leftmost-first find-all: the name is the run of name bytes before the `=` (and its
/// spaces), never reaching back before the previous match's end (`a=1x2=3` → `a`, `x2`).
///
/// # Performance
/// One `memchr` per `=`; about 1 GB/s over logs where half the lines hold an `=` (see `benches/throughput.rs`).
fn scan_pairs(seg: &[u8], out: &mut impl FnMut(&[u8], &[u8], Option<u64>, bool)) {
    let is_name = |b: u8| is_word(b) || b == b'|' || b == b'-';
    let mut floor = 0;
    let mut pos = 0;
    while let Some(i) = memchr::memchr(b'=', &seg[pos..]) {
        let eq = pos + i;
        pos = eq + 1;
        let mut name_end = eq;
        while name_end > floor && is_go_space(seg[name_end - 1]) {
            name_end -= 1;
        }
        let mut name_start = name_end;
        while name_start > floor && is_name(seg[name_start - 1]) {
            name_start -= 1;
        }
        if name_start == name_end {
            continue;
        }
        let mut value_start = eq + 1;
        while value_start < seg.len() && is_go_space(seg[value_start]) {
            value_start += 1;
        }
        let value_end = scan_number(seg, value_start);
        if value_end == value_start {
            continue;
        }
        out(&seg[name_start..name_end], &seg[value_start..value_end], None, true);
        floor = value_end;
        pos = value_end;
    }
}

/// `Name at step N: V` (TensorFlow's classic tutorial line), anchored on `" at step "`.
///
/// Equal to `([\w.\-/]+) at step (\d+):\s*(value)` find-all.
fn scan_at_step(seg: &[u8], finder: &memmem::Finder<'_>, out: &mut impl FnMut(&[u8], &[u8], Option<u64>, bool)) {
    let is_name = |b: u8| is_word(b) || matches!(b, b'.' | b'-' | b'/');
    let mut floor = 0;
    let mut pos = 0;
    while let Some(i) = finder.find(&seg[pos..]) {
        let at = pos + i;
        pos = at + 1;
        let mut name_start = at;
        while name_start > floor && is_name(seg[name_start - 1]) {
            name_start -= 1;
        }
        let step_start = at + b" at step ".len();
        let mut step_end = step_start;
        while step_end < seg.len() && seg[step_end].is_ascii_digit() {
            step_end += 1;
        }
        if name_start == at || step_end == step_start || seg.get(step_end) != Some(&b':') {
            continue;
        }
        let mut value_start = step_end + 1;
        while value_start < seg.len() && is_go_space(seg[value_start]) {
            value_start += 1;
        }
        let value_end = scan_number(seg, value_start);
        if value_end == value_start {
            continue;
        }
        let step = value::parse_step(&seg[step_start..step_end]);
        out(&seg[name_start..at], &seg[value_start..value_end], step, true);
        floor = value_end;
        pos = value_end;
    }
}

/// One JSON object's top-level entries, in order, values left raw.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    v.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON value as a metric value: a number's text, or a string's content.
enum JsonValue<'a> {
    Number(&'a str),
    Str(Cow<'a, str>),
    Other,
}

fn json_value(raw: &RawValue) -> JsonValue<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<Cow<'_, str>>(text) {
            Ok(s) => JsonValue::Str(s),
            Err(_) => JsonValue::Other,
        },
        Some(b'-' | b'0'..=b'9') => JsonValue::Number(text),
        _ => JsonValue::Other,
    }
}

const STEP_KEYS: [&str; 2] = ["step", "global_step"];

fn scan_json(line: &[u8], names: Option<&Names>, semantics: Semantics, emit: &mut impl FnMut(Match<'_>)) -> LineIssues {
    let mut issues = LineIssues::default();
    if value::trim(line).is_empty() {
        return issues;
    }
    let Ok(Entries(entries)) = serde_json::from_slice::<Entries<'_>>(line) else {
        issues.bad_json = true;
        return issues;
    };
    let katib = semantics == Semantics::Katib;
    let time: Option<Cow<'_, str>> = match entries.iter().find(|(k, _)| k == "timestamp").map(|(_, v)| json_value(v)) {
        Some(JsonValue::Str(s)) if value::is_rfc3339(s.as_bytes()) => Some(s),
        Some(JsonValue::Number(n)) => {
            n.parse::<f64>().ok().and_then(|v| value::epoch_to_rfc3339(v, katib)).map(Cow::Owned)
        }
        None => None,
        Some(_) => {
            issues.bad_timestamp = true;
            None
        }
    };
    // Katib stamps every row; a row without a time gets its zero time there, and no time here.
    let time = match (&time, katib) {
        (Some(t), _) => Some(t.as_bytes()),
        (None, true) => Some(ZERO_TIME.as_bytes()),
        (None, false) => None,
    };
    let step = STEP_KEYS.iter().find_map(|key| {
        entries.iter().find(|(k, _)| k == key).and_then(|(_, v)| match json_value(v) {
            JsonValue::Number(n) => value::parse_step(n.as_bytes()),
            JsonValue::Str(s) => value::parse_step(s.as_bytes()),
            JsonValue::Other => None,
        })
    });
    // Without names, the native mode takes only values that are numbers: `"checkpoint_path": ""` is no metric.
    let any_string = katib || names.is_some();
    let mut one = |name: &str, v: &RawValue| match json_value(v) {
        JsonValue::Str(s) if any_string || value::parse_value(s.as_bytes()).is_some() => {
            emit(Match { name: name.as_bytes(), raw: s.as_bytes(), step, time, numeric: false })
        }
        // Katib ignores numbers (its issue #2162); the native mode takes them.
        JsonValue::Number(n) if !katib => {
            emit(Match { name: name.as_bytes(), raw: n.as_bytes(), step, time, numeric: true })
        }
        _ => {}
    };
    match (names, katib) {
        // Katib: for each metric name in order, that key's value.
        (Some(names), true) => {
            for name in &names.list {
                if let Some((k, v)) = entries.iter().find(|(k, _)| k.as_bytes() == &name[..]) {
                    one(k, v);
                }
            }
        }
        (names, _) => {
            for (k, v) in &entries {
                let wanted = match names {
                    Some(n) => n.contains(k.as_bytes()),
                    None => k != "timestamp" && !STEP_KEYS.contains(&&**k),
                };
                if wanted {
                    one(k, v);
                }
            }
        }
    }
    issues
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
        Rules::new(specs, &names, Semantics::Native, Format::Text).unwrap()
    }

    fn pairs(got: &Got) -> Vec<(&str, &str)> {
        got.iter().map(|(n, v, _, _)| (n.as_str(), v.as_str())).collect()
    }

    #[test]
    fn defaults_recognise_tf_step_and_name_value_lines() {
        let mut r = native(&[], &[]);
        let got = scan_all(&mut r, "Accuracy at step 120: 0.9134\nepoch 3: loss=0.2351 accuracy=.98");
        assert_eq!(got[0], ("Accuracy".into(), "0.9134".into(), Some(120), None));
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

    /// The hand-written scanners must equal their regex definitions on any input.
    mod equal_to_regex {
        use super::*;
        use proptest::prelude::*;

        fn by_regex(pattern: &str, line: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
            let re = Regex::new(&format!("(?-u){}", pattern.replace("NUM", NUM))).unwrap();
            re.captures_iter(line).map(|c| (c[1].to_vec(), c[c.len() - 1].to_vec())).collect()
        }

        fn by_scanner(preset: Preset, line: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
            let mut r = Rules::new(&[RuleSpec::Preset(preset)], &[], Semantics::Native, Format::Text).unwrap();
            let mut got = Vec::new();
            // Feed the scanner directly: no terminal cleaning, which the regex would not do either.
            assert!(matches!(&r.text[0], TextRule::Pairs | TextRule::AtStep(_)));
            scan_segment(line, line, &r.text, &mut r.slots, None, ALL_RULES, &mut |m: Match<'_>| {
                got.push((m.name.to_vec(), m.raw.to_vec()))
            });
            got
        }

        fn line() -> impl Strategy<Value = Vec<u8>> {
            let atoms = prop_oneof![
                Just(b"=".to_vec()),
                Just(b" ".to_vec()),
                Just(b"\t".to_vec()),
                Just(b"loss".to_vec()),
                Just(b"a|b-c".to_vec()),
                Just(b"0.5".to_vec()),
                Just(b".5".to_vec()),
                Just(b"1e-3".to_vec()),
                Just(b"e".to_vec()),
                Just(b"-".to_vec()),
                Just(b"+".to_vec()),
                Just(b"nan".to_vec()),
                Just(b"inf".to_vec()),
                Just(b"Infinity".to_vec()),
                Just(b"x".to_vec()),
                Just(b" at step ".to_vec()),
                Just(b"12".to_vec()),
                Just(b":".to_vec()),
                Just(b".".to_vec()),
                Just(b"/".to_vec()),
                any::<u8>().prop_map(|b| vec![b]),
            ];
            proptest::collection::vec(atoms, 0..24).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            #[test]
            fn pairs_scanner_equals_its_regex(line in line()) {
                let expected = by_regex(r"([\w|-]+)[\t\n\f\r ]*=[\t\n\f\r ]*(NUM)", &line);
                prop_assert_eq!(by_scanner(Preset::Katib, &line), expected);
            }

            #[test]
            fn at_step_scanner_equals_its_regex(line in line()) {
                let expected = by_regex(r"([\w.\-/]+) at step \d+:[\t\n\f\r ]*(NUM)", &line);
                prop_assert_eq!(by_scanner(Preset::TfStep, &line), expected);
            }
        }
    }

    #[test]
    fn names_restrict_and_prefilter() {
        let mut r = native(&[], &["loss"]);
        assert_eq!(pairs(&scan_all(&mut r, "v_num=3 loss=0.5 train_loss=0.7")), [("loss", "0.5")]);
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
        let err = |spec: RuleSpec| Rules::new(&[spec], &[], Semantics::Native, Format::Text).unwrap_err().to_string();
        assert!(err(RuleSpec::Filter("(".into())).starts_with("--filter \"(\": invalid regex"));
        assert!(err(RuleSpec::Filter("(a)".into())).contains("at least two groups"));
        assert!(err(RuleSpec::Metric { name: "x".into(), regex: "(a)(b)".into() }).contains("exactly one group"));
        let katib = Rules::new(&[RuleSpec::Filter("(a)".into())], &["a".into()], Semantics::Katib, Format::Text);
        assert!(katib.unwrap_err().to_string().contains("at least two groups"));
        let katib = Rules::new(&[], &[], Semantics::Katib, Format::Text);
        assert!(katib.unwrap_err().to_string().contains("needs --metrics"));
    }

    #[test]
    fn go_regex_rewrites_space_classes() {
        assert_eq!(go_regex(r"a\sb"), r"(?-u)a[\t\n\f\r ]b");
        assert_eq!(go_regex(r"[\s,]\S\\s"), r"(?-u)[\t\n\f\r ,][^\t\n\f\r ]\\s");
        assert_eq!(go_regex(r"[]\s]"), r"(?-u)[]\t\n\f\r ]");
        assert_eq!(literal_braces(r"{a: (\d{1,3})[{]x{2}\{"), r"\{a: (\d{1,3})[{]x{2}\{");
    }

    #[test]
    fn json_native_takes_numbers_and_numeric_strings() {
        let mut r = Rules::new(&[], &[], Semantics::Native, Format::Json).unwrap();
        let got = scan_all(
            &mut r,
            r#"{"loss": "0.5", "acc": 0.9, "note": "x", "global_step": "45", "timestamp": 1638422847.28721}"#,
        );
        assert_eq!(pairs(&got), [("loss", "0.5"), ("acc", "0.9")]);
        assert_eq!(got[0].2, Some(45));
        assert_eq!(got[0].3.as_deref(), Some("2021-12-02T05:27:27.28721Z"));
    }
}

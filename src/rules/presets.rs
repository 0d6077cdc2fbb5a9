//! The built-in presets: one rule per framework's output format. Two are hand-written scanners (Katib's
//! `name=value` and TensorFlow's `Name at step N: V`, the defaults, proven equal to their regexes by property
//! tests), the rest are regexes over the native value grammar [`NUM`].

use memchr::memmem;

use super::{NameFrom, RegexRule, TextRule, Trim, compile, group};
use crate::value::{self, is_go_space, is_word, scan_number};

/// The value grammar of the native presets, as a regex (the same grammar as [`value::scan_number`]).
const NUM: &str = r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|infinity|inf)\b)";

/// A built-in rule for a framework's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// Every preset, in the order `--help` lists them.
    pub const ALL: [Preset; 8] = [
        Preset::Katib,
        Preset::TfStep,
        Preset::Keras,
        Preset::HfTrainer,
        Preset::Xgboost,
        Preset::Lightgbm,
        Preset::Sklearn,
        Preset::Tqdm,
    ];

    /// What the preset reads, in a line (for `--help`).
    pub fn summary(self) -> &'static str {
        match self {
            Preset::Katib => "`name=value` pairs, Katib's default format (`loss=0.2351`).",
            Preset::TfStep => "TensorFlow's `Accuracy at step 120: 0.9134`.",
            Preset::Keras => "Keras `- loss: 0.3 - accuracy: 0.9`, progress-bar redraws included.",
            Preset::HfTrainer => "Hugging Face Trainer dicts `{'loss': 0.69, 'learning_rate': 4e-05, 'epoch': 1.0}`.",
            Preset::Xgboost => "XGBoost `[3]\\tvalidation_0-logloss:0.61`.",
            Preset::Lightgbm => "LightGBM `[10]\\tvalid_0's binary_logloss: 0.3`.",
            Preset::Sklearn => "scikit-learn `Iteration 3, loss = 0.41` and `Validation score: 0.9`.",
            Preset::Tqdm => "tqdm postfixes `…it/s, loss=0.3, acc=0.9]`.",
        }
    }

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
    TextRule::Regex(Box::new(RegexRule {
        context,
        context_step,
        re,
        name,
        value,
        step,
        trim: Trim::None,
        katib: false,
    }))
}

pub(super) fn preset_rule(p: Preset) -> TextRule {
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

/// Katib's `([\w|-]+)\s*=\s*(value)` with the native value grammar, anchored on each `=`.
///
/// Equal to the regex's leftmost-first find-all: the name is the run of name bytes before the `=` (and its
/// spaces), never reaching back before the previous match's end (`a=1x2=3` → `a`, `x2`).
///
/// # Performance
/// One `memchr` per `=`; about 1 GB/s over logs where half the lines hold an `=` (see `benches/throughput.rs`).
pub(super) fn scan_pairs(seg: &[u8], out: &mut impl FnMut(&[u8], &[u8], Option<u64>, bool)) {
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
pub(super) fn scan_at_step(
    seg: &[u8],
    finder: &memmem::Finder<'_>,
    out: &mut impl FnMut(&[u8], &[u8], Option<u64>, bool),
) {
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

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    // The hand-written scanners must equal their regex definitions on any input.
    use proptest::prelude::*;

    fn by_regex(pattern: &str, line: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let re = Regex::new(&format!("(?-u){}", pattern.replace("NUM", NUM))).unwrap();
        re.captures_iter(line).map(|c| (c[1].to_vec(), c[c.len() - 1].to_vec())).collect()
    }

    fn by_scanner(preset: Preset, line: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut r = Rules::new(&[RuleSpec::Preset(preset)], &[], Semantics::Native, LineFormat::Text).unwrap();
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

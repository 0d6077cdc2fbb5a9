//! The one-line formats of the recognition: pure, allocation-free parsers of one segment (a line, or one `\r`
//! redraw of it) into name/value pairs.
//!
//! Each parser says whether the segment is in its format at all (it "claims" it) and hands out the pairs it
//! read. They never decide what a pair is (a metric, a parameter, a step counter): [`super::Auto`] does, from the
//! format and what the log did before.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use memchr::memmem::Finder;

use crate::rules::ValueKind;
use crate::value::{self, is_word, scan_number};

/// The substrings the parsers look for, each searcher built once (building one costs more than searching a line).
struct Literals {
    dash: Finder<'static>,
    metric_name: Finder<'static>,
    metric_value: Finder<'static>,
    avg_loss: Finder<'static>,
    colon: Finder<'static>,
    validate: Finder<'static>,
    test: Finder<'static>,
    dataloader: Finder<'static>,
}

static LIT: LazyLock<Literals> = LazyLock::new(|| Literals {
    dash: Finder::new(b" - "),
    metric_name: Finder::new(b"{metricName: "),
    metric_value: Finder::new(b", metricValue: "),
    avg_loss: Finder::new(b", Avg. loss: "),
    colon: Finder::new(b": "),
    validate: Finder::new(b"Validate metric"),
    test: Finder::new(b"Test metric"),
    dataloader: Finder::new(b"DataLoader"),
});

/// One pair as printed, borrowed from the segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Pair<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
    pub kind: ValueKind,
}

/// The end of a number starting at `s[at..]` that stands alone: not followed by a letter, a digit, `.` or `_`
/// (`0.5s`, `1e-3x`, `3.` + `x` are no numbers here).
pub(super) fn number_at(s: &[u8], at: usize) -> Option<usize> {
    let end = scan_number(s, at);
    if end == at {
        return None;
    }
    match s.get(end) {
        Some(&b) if is_word(b) || b == b'.' => None,
        _ => Some(end),
    }
}

/// The whole of `s` (trimmed) is one number.
pub(super) fn whole_number(s: &[u8]) -> bool {
    let t = value::trim(s);
    !t.is_empty() && scan_number(t, 0) == t.len()
}

/// Skips spaces and tabs from `at`.
pub(super) fn skip_blanks(s: &[u8], mut at: usize) -> usize {
    while at < s.len() && (s[at] == b' ' || s[at] == b'\t') {
        at += 1;
    }
    at
}

/// The segment without a leading RFC 3339 timestamp and the blanks after it (pod logs, `logging` formats).
pub(super) fn strip_time(seg: &[u8]) -> &[u8] {
    match value::line_timestamp(seg) {
        Some(t) => &seg[skip_blanks(seg, t.len())..],
        None => seg,
    }
}

/// Digits at `s[at..]`: their value and end.
fn digits_at(s: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut end = at;
    while end < s.len() && s[end].is_ascii_digit() {
        end += 1;
    }
    (end > at).then(|| value::parse_step(&s[at..end]).map(|v| (v, end))).flatten()
}

/// Names that count training progress rather than measure it: with an integer they are the line's step.
pub(super) fn is_step_name(name: &[u8]) -> bool {
    const STEPS: [&[u8]; 11] = [
        b"epoch",
        b"step",
        b"global_step",
        b"iteration",
        b"iter",
        b"it",
        b"batch",
        b"batch_idx",
        b"n_iter",
        b"round",
        b"train epoch",
    ];
    // Most names are none of them: their length or first letter says so before any comparison.
    if !(2..=11).contains(&name.len())
        || !matches!(name[0] | 0x20, b'b' | b'e' | b'g' | b'i' | b'n' | b'r' | b's' | b't')
    {
        return false;
    }
    STEPS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// `[N]\t…`: XGBoost (`[3]\tvalidation_0-logloss:0.61\t…`) and LightGBM (`[10]\tvalid_0's auc: 0.91\t…`): the
/// round, whether it is LightGBM's (a space after the colon), and the fields after the round.
pub(super) fn boosting(seg: &[u8]) -> Option<(u64, bool, &[u8])> {
    if seg.first() != Some(&b'[') {
        return None;
    }
    let (round, end) = digits_at(seg, 1)?;
    if seg.get(end) != Some(&b']') || seg.get(end + 1) != Some(&b'\t') {
        return None;
    }
    let fields = &seg[end + 2..];
    let lightgbm = memchr::memchr(b':', fields).is_some_and(|c| fields.get(c + 1) == Some(&b' '));
    Some((round, lightgbm, fields))
}

/// The `name:value` (or `name: value`) fields of a boosting round, tab-separated; whether there was one.
pub(super) fn tab_pairs<'a>(fields: &'a [u8], out: &mut impl FnMut(Pair<'a>)) -> bool {
    let mut any = false;
    for field in fields.split(|&b| b == b'\t') {
        let Some(colon) = memchr::memrchr(b':', field) else { continue };
        let (name, raw) = (value::trim(&field[..colon]), value::trim(&field[colon + 1..]));
        if !name.is_empty() && whole_number(raw) {
            any = true;
            out(Pair { name, raw, kind: ValueKind::Number });
        }
    }
    any
}

/// `[E,  B] rest`: PyTorch's CIFAR-10 tutorial loop (`[1,  2000] loss: 2.187`); returns where `rest` starts.
pub(super) fn torch_batch(seg: &[u8]) -> Option<usize> {
    if seg.first() != Some(&b'[') {
        return None;
    }
    let (_, end) = digits_at(seg, 1)?;
    if seg.get(end) != Some(&b',') {
        return None;
    }
    let (_, end) = digits_at(seg, skip_blanks(seg, end + 1))?;
    (seg.get(end) == Some(&b']') && seg.get(end + 1) == Some(&b' ')).then_some(end + 2)
}

/// What a Python dict or JSON object line held.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Object<'a> {
    /// An `epoch` key (Hugging Face's Trainer puts one in every dict it logs).
    pub epoch: bool,
    /// A `step`/`global_step` value.
    pub step: Option<u64>,
    /// An integer `epoch` value (Katib's JSON lines count epochs so).
    pub epoch_step: Option<u64>,
    /// A `timestamp` value (JSON): its text, and whether it is a string.
    pub timestamp: Option<(&'a [u8], bool)>,
}

/// A one-line Python dict (`{'loss': 0.69, 'epoch': 1.0}`, or quoted values in transformers 5:
/// `{'loss': '0.6931'}`) or JSON object (`{"loss": "0.5", "global_step": "5"}`): every numeric entry, keys
/// without escapes. Nested values are skipped; `None` when the segment is not one object.
pub(super) fn object<'a>(seg: &'a [u8], quote: u8, out: &mut impl FnMut(Pair<'a>)) -> Option<Object<'a>> {
    let s = value::trim(seg);
    if s.len() < 3 || s[0] != b'{' || s[s.len() - 1] != b'}' {
        return None;
    }
    let mut info = Object::default();
    let mut i = 1;
    loop {
        i = skip_blanks(s, i);
        if s.get(i) == Some(&b'}') {
            return Some(info);
        }
        if s.get(i) != Some(&quote) {
            return None;
        }
        let key_end = i + 1 + memchr::memchr2(quote, b'\\', &s[i + 1..])?;
        if s[key_end] != quote {
            return None;
        }
        let key = &s[i + 1..key_end];
        i = skip_blanks(s, key_end + 1);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = skip_blanks(s, i + 1);
        let (raw, text, next) = object_value(s, i, quote)?;
        i = skip_blanks(s, next);
        if key == b"timestamp" {
            info.timestamp = Some((raw, text));
        } else if key == b"epoch" {
            info.epoch = true;
            info.epoch_step = value::parse_step(raw);
        } else if key == b"step" || key == b"global_step" {
            info.step = value::parse_step(raw).or(info.step);
        } else if whole_number(raw) {
            out(Pair {
                name: key,
                raw: value::trim(raw),
                kind: if text { ValueKind::Text } else { ValueKind::Number },
            });
        }
        match s.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Some(info),
            _ => return None,
        }
    }
}

/// One value of an object at `s[at..]`: its text (a string's content), whether it was a string, and where it ends.
fn object_value(s: &[u8], at: usize, quote: u8) -> Option<(&[u8], bool, usize)> {
    match *s.get(at)? {
        q if q == quote || q == b'\'' || q == b'"' => {
            let end = at + 1 + memchr::memchr2(q, b'\\', &s[at + 1..])?;
            if s[end] != q {
                // An escape: not a number anyway; find the string's end.
                let mut j = end;
                while j < s.len() && s[j] != q {
                    j += if s[j] == b'\\' { 2 } else { 1 };
                }
                return (j < s.len()).then_some((&s[at..at], true, j + 1));
            }
            Some((&s[at + 1..end], true, end + 1))
        }
        b'[' | b'{' | b'(' => {
            let mut depth = 0usize;
            let mut j = at;
            let mut in_str: Option<u8> = None;
            while j < s.len() {
                let b = s[j];
                match in_str {
                    Some(_) if b == b'\\' => j += 1,
                    Some(q) if b == q => in_str = None,
                    Some(_) => {}
                    None if b == b'\'' || b == b'"' => in_str = Some(b),
                    None if matches!(b, b'[' | b'{' | b'(') => depth += 1,
                    None if matches!(b, b']' | b'}' | b')') => {
                        depth -= 1;
                        if depth == 0 {
                            return Some((&s[at..at], false, j + 1));
                        }
                    }
                    None => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let end = at + memchr::memchr2(b',', b'}', &s[at..])?;
            Some((value::trim(&s[at..end]), false, end))
        }
    }
}

/// Keras' ` - name: value` pairs; whether there was one.
pub(super) fn keras_pairs<'a>(seg: &'a [u8], out: &mut impl FnMut(Pair<'a>)) -> bool {
    let mut any = false;
    let mut at = 0;
    while let Some(i) = LIT.dash.find(&seg[at..]) {
        let name_start = at + i + 3;
        at = name_start;
        let mut j = name_start;
        if j >= seg.len() || !(seg[j].is_ascii_alphabetic() || seg[j] == b'_') {
            continue;
        }
        while j < seg.len() && (is_word(seg[j]) || seg[j] == b'.') {
            j += 1;
        }
        if seg.get(j) != Some(&b':') || seg.get(j + 1) != Some(&b' ') {
            continue;
        }
        let vs = j + 2;
        let Some(ve) = number_at(seg, vs) else { continue };
        if ve < seg.len() && !value::is_go_space(seg[ve]) {
            continue;
        }
        any = true;
        out(Pair { name: &seg[name_start..j], raw: &seg[vs..ve], kind: ValueKind::Number });
        at = ve;
    }
    any
}

/// The segment starts (after blanks and bar glyphs' escape remains) with `N/M` and a space.
fn batch_counter(seg: &[u8]) -> bool {
    let at = skip_blanks(seg, 0);
    let Some((_, end)) = digits_at(seg, at) else { return false };
    if seg.get(end) != Some(&b'/') {
        return false;
    }
    matches!(digits_at(seg, end + 1), Some((_, e)) if seg.get(e) == Some(&b' '))
}

/// A progress-bar frame: its bar (the text before the counter), its counter and the metrics text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Frame<'a> {
    /// Which bar: the description before the percentage or the bar glyphs (`Epoch 3`).
    pub bar: &'a [u8],
    /// Items done (the `n` of `n/total`).
    pub count: Option<u64>,
    /// The metrics: tqdm's postfix `v_num=0, loss=0.3`, or rich's `v_num: 0.000 loss: 0.3`.
    pub text: &'a [u8],
    /// tqdm (`name=value` separated by `, `) or rich (`name: value` separated by spaces).
    pub rich: bool,
    /// What follows a tqdm frame on the same redraw (a message printed right after the bar).
    pub rest: &'a [u8],
}

/// Where a progress bar's rate is: the first `it/s`, else the first `s/it` (one `memchr` for their `/`).
fn rate_at(seg: &[u8]) -> Option<usize> {
    let mut s_it = None;
    for i in memchr::memchr_iter(b'/', seg) {
        if i >= 2 && &seg[i - 2..i] == b"it" && seg.get(i + 1) == Some(&b's') {
            return Some(i - 2);
        }
        if s_it.is_none() && i >= 1 && seg[i - 1] == b's' && seg.get(i + 1..i + 3) == Some(b"it") {
            s_it = Some(i - 1);
        }
    }
    s_it
}

/// A tqdm frame with a postfix (`Epoch 0:  6%|▌   | 1/18 [00:00<00:00, 176.53it/s, v_num=0, loss=2.32]`) or a
/// rich progress frame with metrics (`Epoch 1/3 ━━━ 16/18 0:00:02 • 0:00:01 6.20it/s v_num: 0.000 loss: 0.62`).
pub(super) fn frame(seg: &[u8]) -> Option<Frame<'_>> {
    let rate = rate_at(seg)?;
    let after = rate + 4;
    let bar_end = seg.iter().position(|&b| b == b':' || b == b'|' || b >= 0x80).unwrap_or(seg.len()).min(rate);
    let bar = value::trim(&seg[..bar_end]);
    match seg.get(after) {
        Some(b',') => {
            // tqdm: `[elapsed<remaining, rate, postfix]`; the counter sits before the `[`.
            let open = memchr::memrchr(b'[', &seg[..rate])?;
            let close = after + memchr::memrchr(b']', &seg[after..])?;
            let text = &seg[after + 1..close];
            let count = counter_before(seg, open);
            memchr::memchr(b'=', text)?;
            Some(Frame { bar, count, text, rich: false, rest: &seg[close + 1..] })
        }
        Some(b' ') => {
            let text = value::trim(&seg[after..]);
            memchr::memchr(b':', text)?;
            let first = text.first()?;
            if !(first.is_ascii_alphabetic() || *first == b'_') {
                return None;
            }
            Some(Frame { bar, count: counter_before(seg, rate), text, rich: true, rest: b"" })
        }
        _ => None,
    }
}

/// The `n` of the last `n/total` (or `nit`) token before `end`.
fn counter_before(seg: &[u8], end: usize) -> Option<u64> {
    let mut j = end;
    let mut found = None;
    while j > 0 {
        j -= 1;
        if seg[j] == b'/' && j > 0 && seg[j - 1].is_ascii_digit() && seg.get(j + 1).is_some_and(u8::is_ascii_digit) {
            let mut s = j;
            while s > 0 && seg[s - 1].is_ascii_digit() {
                s -= 1;
            }
            if s == 0 || !is_word(seg[s - 1]) {
                found = value::parse_step(&seg[s..j]);
                break;
            }
        }
    }
    found.or_else(|| {
        // `5it [00:01, 4.2it/s, …]`: tqdm without a total.
        let t = value::trim(&seg[..end]);
        let t = t.strip_suffix(b"it")?;
        let s = t.iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |p| p + 1);
        value::parse_step(&t[s..])
    })
}

/// The pairs of a frame's metrics text: tqdm's `name=value, …` or rich's `name: value …`.
pub(super) fn frame_pairs<'a>(text: &'a [u8], rich: bool, out: &mut impl FnMut(Pair<'a>)) {
    if !rich {
        for part in text.split(|&b| b == b',') {
            let part = value::trim(part);
            let Some(eq) = memchr::memchr(b'=', part) else { continue };
            let (name, raw) = (&part[..eq], &part[eq + 1..]);
            if is_metric_name(name) && whole_number(raw) {
                out(Pair { name, raw, kind: ValueKind::Number });
            }
        }
        return;
    }
    let mut tokens = text.split(|b| value::is_go_space(*b)).filter(|t| !t.is_empty()).peekable();
    while let Some(token) = tokens.next() {
        let Some(name) = token.strip_suffix(b":") else { continue };
        if let Some(raw) = tokens.peek().copied()
            && is_metric_name(name)
            && whole_number(raw)
        {
            out(Pair { name, raw, kind: ValueKind::Number });
            tokens.next();
        }
    }
}

/// A name as frameworks print them: a letter or `_` first, then word bytes, `.`, `-`, `/`.
fn is_metric_name(name: &[u8]) -> bool {
    match name.first() {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {
            name.iter().all(|&b| is_word(b) || matches!(b, b'.' | b'-' | b'/'))
        }
        _ => false,
    }
}

/// A continuation of a rich frame's metrics column, wrapped onto the next line: indented by at least ten
/// blanks, holding nothing but names and numbers.
pub(super) fn rich_continuation(seg: &[u8]) -> bool {
    let at = skip_blanks(seg, 0);
    if at < 10 {
        return false;
    }
    let rest = value::trim(&seg[at..]);
    !rest.is_empty() && rest.iter().all(|&b| is_word(b) || matches!(b, b'.' | b'-' | b'/' | b':' | b' ' | b'+'))
}

/// Katib's own example format: `{metricName: accuracy, metricValue: 0.9803}` (several per line, `;`-separated).
pub(super) fn katib_metric_name<'a>(seg: &'a [u8], out: &mut impl FnMut(Pair<'a>)) -> bool {
    let mut any = false;
    let (open, value) = (LIT.metric_name.needle().len(), LIT.metric_value.needle().len());
    let mut at = 0;
    while let Some(i) = LIT.metric_name.find(&seg[at..]) {
        let name_start = at + i + open;
        at = name_start;
        let Some(comma) = LIT.metric_value.find(&seg[name_start..]) else { continue };
        let name = value::trim(&seg[name_start..name_start + comma]);
        let vs = name_start + comma + value;
        let Some(close) = memchr::memchr(b'}', &seg[vs..]) else { continue };
        let raw = value::trim(&seg[vs..vs + close]);
        if !name.is_empty() && whole_number(raw) {
            any = true;
            out(Pair { name, raw, kind: ValueKind::Number });
        }
        at = vs + close;
    }
    any
}

/// scikit-learn's MLP: `Iteration 3, loss = 0.41` (step 3) and `Validation score: 0.9`.
pub(super) fn sklearn_mlp(seg: &[u8]) -> Option<(&[u8], &[u8], Option<u64>)> {
    if let Some(rest) = seg.strip_prefix(b"Iteration ") {
        let (step, end) = digits_at(rest, 0)?;
        let raw = rest[end..].strip_prefix(b", loss = ")?;
        return whole_number(raw).then(|| (&b"loss"[..], value::trim(raw), Some(step)));
    }
    let raw = seg.strip_prefix(b"Validation score: ")?;
    whole_number(raw).then(|| (&b"Validation score"[..], value::trim(raw), None))
}

/// scikit-learn's SGD: the epoch header `-- Epoch 3`.
pub(super) fn sgd_epoch(seg: &[u8]) -> Option<u64> {
    let rest = seg.strip_prefix(b"-- Epoch ")?;
    let (n, end) = digits_at(rest, 0)?;
    (end == value::trim(rest).len()).then_some(n)
}

/// scikit-learn's SGD values line, `Norm: 6.21, NNZs: 30, Bias: -0.43, T: 6390, Avg. loss: 0.0508, Objective:
/// 0.0704`: the loss and objective (the norm, the non-zero count, the bias and the sample count are diagnostics).
pub(super) fn sgd_values<'a>(seg: &'a [u8], out: &mut impl FnMut(Pair<'a>)) -> bool {
    if !seg.starts_with(b"Norm: ") || LIT.avg_loss.find(seg).is_none() {
        return false;
    }
    for part in seg.split(|&b| b == b',') {
        let part = value::trim(part);
        let Some(colon) = LIT.colon.find(part) else { continue };
        let (name, raw) = (&part[..colon], &part[colon + 2..]);
        if matches!(name, b"Avg. loss" | b"Objective" | b"Validation score") && whole_number(raw) {
            out(Pair { name, raw: value::trim(raw), kind: ValueKind::Number });
        }
    }
    true
}

/// Hugging Face's `log_metrics` block header: `***** train metrics *****`.
pub(super) fn hf_metrics_header(seg: &[u8]) -> bool {
    let s = value::trim(seg);
    s.starts_with(b"***** ") && s.ends_with(b" metrics *****")
}

/// A row of Hugging Face's `log_metrics` block: `  train_loss               =     0.5964` (runtimes as
/// `0:00:00.91`).
pub(super) fn hf_metrics_row(seg: &[u8]) -> Option<(&[u8], &[u8], ValueKind)> {
    let rest = seg.strip_prefix(b"  ")?;
    let eq = memchr::memchr(b'=', rest)?;
    let (name, raw) = (value::trim(&rest[..eq]), value::trim(&rest[eq + 1..]));
    if !is_metric_name(name) {
        return None;
    }
    if whole_number(raw) {
        Some((name, raw, ValueKind::Number))
    } else if value::parse_clock(raw).is_some() {
        Some((name, raw, ValueKind::Clock))
    } else {
        Some((name, b"", ValueKind::Text))
    }
}

/// Lightning's results table header (`Validate metric  DataLoader 0`, `Test metric …`), in plain text or with
/// rich's box drawing.
pub(super) fn results_header(seg: &[u8]) -> bool {
    (LIT.validate.find(seg).is_some() || LIT.test.find(seg).is_some()) && LIT.dataloader.find(seg).is_some()
}

/// A row of Lightning's results table: `│   val_acc   │  0.9513888955116272  │` or `  val_acc   0.95138…`;
/// `Some(None)` for a rule or frame line (`───`, `┏━━┓`), `None` when the table has ended.
pub(super) fn results_row(seg: &[u8]) -> Option<Option<(&[u8], &[u8])>> {
    // Box drawing characters are U+2500..U+257F: E2 94 80..E2 95 BF in UTF-8.
    let mut tokens: [&[u8]; 3] = [b""; 3];
    let mut n = 0;
    let mut other = false;
    for token in seg.split(|&b| value::is_go_space(b)) {
        let token = strip_box(token);
        if token.is_empty() {
            continue;
        }
        if n < 3 {
            tokens[n] = token;
        }
        n += 1;
        other |= token.iter().any(|&b| b == b'-' && token.iter().all(|&c| c == b'-'));
    }
    match n {
        0 => Some(None).filter(|_| !value::trim(seg).is_empty()),
        _ if other && n == 1 => Some(None),
        2 if is_metric_name(tokens[0]) && whole_number(tokens[1]) => Some(Some((tokens[0], tokens[1]))),
        _ => None,
    }
}

/// `token` without box-drawing characters (`│`, `┃`, `━`, …) at either end.
fn strip_box(mut t: &[u8]) -> &[u8] {
    let is_box = |s: &[u8]| s.len() >= 3 && s[0] == 0xE2 && (s[1] == 0x94 || s[1] == 0x95);
    while is_box(t) {
        t = &t[3..];
    }
    while t.len() >= 3 && is_box(&t[t.len() - 3..]) {
        t = &t[..t.len() - 3];
    }
    t
}

/// A leading step: `epoch 3: …`, `Epoch 3/10`, `step 120: …` at the start of the segment.
pub(super) fn leading_step(seg: &[u8]) -> Option<u64> {
    let word_end = seg.iter().position(|b| !b.is_ascii_alphabetic())?;
    let word = &seg[..word_end];
    if !(word.eq_ignore_ascii_case(b"epoch") || word.eq_ignore_ascii_case(b"step")) || seg.get(word_end) != Some(&b' ')
    {
        return None;
    }
    let (n, end) = digits_at(seg, word_end + 1)?;
    matches!(seg.get(end), None | Some(b':' | b'/' | b',' | b' ')).then_some(n)
}

/// Where a weak pair sits in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// Plain text.
    Text,
    /// Inside an unclosed `Name(` on the same line: an argparse `Namespace(…)`, a module or estimator repr.
    Repr,
    /// Inside backticks: code quoted in prose (`` `max_epochs=4` reached ``), a setting, not a measurement.
    Code,
}

/// One weak pair: `name=value` or `name: value`, with where it sits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct WeakPair<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
    pub place: Place,
    pub start: usize,
    pub end: usize,
}

/// Katib's default format, `name=value` (`loss=0.2351`, `Validation-accuracy=0.91`), as a weak pair: the name
/// must start where a name can start, the value must stand alone. A space before the `=` only where the name
/// starts the line or follows a separator (`Num examples = 120` is prose).
pub(super) fn eq_pairs<'a>(seg: &'a [u8], out: &mut impl FnMut(WeakPair<'a>)) {
    let is_name = |b: u8| is_word(b) || matches!(b, b'|' | b'-' | b'.' | b'/');
    let ticks = memchr::memchr(b'`', seg).is_some();
    let mut paren = None;
    let mut floor = 0;
    let mut pos = 0;
    while let Some(i) = seg.get(pos..).and_then(|rest| memchr::memchr(b'=', rest)) {
        let eq = pos + i;
        pos = eq + 1;
        if seg.get(eq + 1) == Some(&b'=') || (eq > 0 && matches!(seg[eq - 1], b'=' | b'!' | b'<' | b'>')) {
            pos = eq + 2;
            continue;
        }
        let mut name_end = eq;
        while name_end > floor && seg[name_end - 1] == b' ' {
            name_end -= 1;
        }
        let spaced = name_end < eq;
        let mut name_start = name_end;
        while name_start > floor && is_name(seg[name_start - 1]) {
            name_start -= 1;
        }
        let name = &seg[name_start..name_end];
        if name.is_empty() || !(name[0].is_ascii_alphabetic() || name[0] == b'_') {
            continue;
        }
        if spaced && !separated_before(seg, name_start) {
            continue;
        }
        let vs = skip_blanks(seg, eq + 1);
        let Some(ve) = number_at(seg, vs) else { continue };
        if !matches!(seg.get(ve), None | Some(b' ' | b'\t' | b',' | b';' | b')' | b']' | b'}' | b'|' | b'`')) {
            continue;
        }
        let place = match () {
            _ if ticks && in_backticks(seg, name_start) => Place::Code,
            _ if in_repr_after(seg, &mut paren, name_start) => Place::Repr,
            _ => Place::Text,
        };
        out(WeakPair { name, raw: &seg[vs..ve], place, start: name_start, end: ve });
        floor = ve;
        pos = ve;
    }
}

/// `name: value` pairs as a weak format: PyTorch loops (`epoch 1: loss: 2.2986 accuracy: 0.10`), final reports
/// (`test accuracy: 0.9510`), quoted keys (`"lr":  0.01`). A name is one to three words; the value must end the
/// segment or be followed by a separator or the next pair (`Total training time: 0.00 seconds.` is prose).
pub(super) fn colon_pairs<'a>(seg: &'a [u8], out: &mut impl FnMut(WeakPair<'a>)) {
    let mut paren = None;
    let mut prev: Option<WeakPair<'a>> = None;
    let mut floor = 0;
    let mut pos = 0;
    while let Some(i) = LIT.colon.find(&seg[pos..]) {
        let colon = pos + i;
        pos = colon + 2;
        let Some(name_start) = colon_name_start(seg, floor, colon) else { continue };
        let vs = skip_blanks(seg, colon + 2);
        let Some(ve) = number_at(seg, vs) else { continue };
        if let Some(p) = prev.take()
            && ends_pair(seg, p.end, Some(name_start))
        {
            out(p);
        }
        let mut name = &seg[name_start..colon];
        if let [q @ (b'"' | b'\''), inner @ .., q2] = name
            && q == q2
        {
            name = inner;
        }
        let place = if in_repr_after(seg, &mut paren, name_start) { Place::Repr } else { Place::Text };
        prev = Some(WeakPair { name, raw: &seg[vs..ve], place, start: name_start, end: ve });
        floor = ve;
        pos = ve;
    }
    if let Some(p) = prev
        && ends_pair(seg, p.end, None)
    {
        out(p);
    }
}

/// Where the name before the `: ` at `colon` starts: a quoted name, or one to three words separated by single
/// spaces (log levels such as `INFO` are not part of it).
fn colon_name_start(seg: &[u8], floor: usize, colon: usize) -> Option<usize> {
    if colon > floor + 1 && matches!(seg[colon - 1], b'"' | b'\'') {
        let q = seg[colon - 1];
        let open = floor + memchr::memrchr(q, &seg[floor..colon - 1])?;
        let inner = &seg[open + 1..colon - 1];
        let boundary = open == 0 || matches!(seg[open - 1], b' ' | b'\t' | b'{' | b',');
        return (boundary && is_metric_name(inner)).then_some(open);
    }
    let is_name = |b: u8| is_word(b) || matches!(b, b'.' | b'-' | b'/');
    let mut start = colon;
    let mut words = 0;
    loop {
        let mut w = start;
        while w > floor && is_name(seg[w - 1]) {
            w -= 1;
        }
        let word = &seg[w..start];
        if word.is_empty() || !(word[0].is_ascii_alphabetic() || word[0] == b'_') || is_log_level(word) {
            break;
        }
        start = w;
        words += 1;
        let more = start >= floor + 2 && seg[start - 1] == b' ' && is_name(seg[start - 2]);
        if words == 3 && more {
            // A fourth word: prose (`Modules in train mode: 4`), not a name.
            return None;
        }
        if !more {
            break;
        }
        start -= 1;
        // Only keep the space when a word comes before it.
        let mut w2 = start;
        while w2 > floor && is_name(seg[w2 - 1]) {
            w2 -= 1;
        }
        let word2 = &seg[w2..start];
        if word2.is_empty() || !(word2[0].is_ascii_alphabetic() || word2[0] == b'_') || is_log_level(word2) {
            start += 1;
            break;
        }
    }
    (start < colon).then_some(start)
}

/// A value ending at `end` ends its pair: the segment ends, a separator follows, or (after blanks) the next
/// pair's name.
fn ends_pair(seg: &[u8], end: usize, next_name: Option<usize>) -> bool {
    match seg.get(end) {
        None => true,
        Some(b',') => !seg.get(end + 1).is_some_and(u8::is_ascii_digit),
        Some(b';' | b'|' | b'\t' | b'}') => true,
        Some(b' ') => {
            let after = skip_blanks(seg, end);
            after == seg.len()
                || next_name == Some(after)
                || matches!(seg[after], b',' | b';' | b'|')
                || (seg[after] == b'-' && seg.get(after + 1) == Some(&b' '))
        }
        _ => false,
    }
}

/// `name_start` begins the segment or follows a separator (`,`, `;`, `|`, a tab, two blanks).
fn separated_before(seg: &[u8], name_start: usize) -> bool {
    if name_start == 0 || value::trim(&seg[..name_start]).is_empty() {
        return true;
    }
    match seg[name_start - 1] {
        b'\t' | b',' | b';' | b'|' | b'(' | b'{' | b'[' => true,
        b' ' => name_start >= 2 && matches!(seg[name_start - 2], b' ' | b',' | b';' | b'|'),
        _ => false,
    }
}

/// An odd number of backticks before `at`: inside inline code.
fn in_backticks(seg: &[u8], at: usize) -> bool {
    memchr::memchr_iter(b'`', &seg[..at]).count() % 2 == 1
}

/// [`in_repr`], with the segment's first `(` looked for once per segment by the caller (`paren`; none: no
/// repr anywhere).
fn in_repr_after(seg: &[u8], paren: &mut Option<Option<usize>>, at: usize) -> bool {
    let first = *paren.get_or_insert_with(|| memchr::memchr(b'(', seg));
    first.is_some_and(|p| p < at) && in_repr(seg, at)
}

/// Inside an unclosed `Name(` before `at` on the same segment (a repr or a call, not prose in parentheses).
fn in_repr(seg: &[u8], at: usize) -> bool {
    let mut depth = 0usize;
    let mut repr = 0usize;
    for i in memchr::memchr2_iter(b'(', b')', &seg[..at]) {
        if seg[i] == b'(' {
            depth += 1;
            if repr == 0 && i > 0 && is_word(seg[i - 1]) {
                repr = depth;
            }
        } else if depth > 0 {
            if depth == repr {
                repr = 0;
            }
            depth -= 1;
        }
    }
    repr > 0
}

/// The literals that tell a segment's formats apart, each with its mark: one search finds them all.
const MARKS: [(&str, u16); 9] = [
    (" at step ", Marks::AT_STEP),
    ("{metricName: ", Marks::METRIC_NAME),
    ("/step", Marks::KERAS),
    ("/sample", Marks::KERAS),
    ("ETA: ", Marks::KERAS),
    ("arning", Marks::WARNING),
    ("ARNING", Marks::WARNING),
    ("] [Info]", Marks::CHATTER),
    ("] [Debug]", Marks::CHATTER),
];

static MARKER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .kind(Some(AhoCorasickKind::DFA))
        .match_kind(MatchKind::LeftmostFirst)
        .build(MARKS.iter().map(|(lit, _)| lit))
        .expect("the marks are valid literals")
});

/// Segments shorter than this have their marks found byte by byte ([`Marks::by_bytes`]).
const SHORT: usize = 64;

/// Which of the literals of [`MARKS`] a segment holds: a format is tried only where its literal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Marks(u16);

impl Marks {
    /// TensorFlow's ` at step `.
    pub const AT_STEP: u16 = 1;
    /// Katib's `{metricName: `.
    pub const METRIC_NAME: u16 = 1 << 1;
    /// Keras' `/step`, `/sample`, `ETA: `.
    pub const KERAS: u16 = 1 << 3;
    /// `arning`, before the check that it ends the word `warning`.
    const WARNING: u16 = 1 << 5;
    /// A warning, LightGBM's `[Info]` or `[Debug]`: chatter.
    pub const CHATTER: u16 = 1 << 6;

    /// The marks of `seg`, in one Aho–Corasick search (matches do not overlap: a literal inside another's match
    /// is not seen, which none of the formats' lines need).
    ///
    /// # Performance
    /// One search instead of a `memmem` per literal: the weak formats' lines cost half as much to tell apart
    /// (`benches/throughput.rs`).
    pub fn of(seg: &[u8]) -> Marks {
        if seg.len() < SHORT {
            return Marks::by_bytes(seg);
        }
        let mut bits = 0;
        for m in MARKER.find_iter(seg) {
            let mut bit = MARKS[m.pattern().as_usize()].1;
            if bit == Marks::WARNING {
                // The word `warning`/`Warning`/`WARNING` (in `UserWarning` too), not `learning`.
                let at = m.start();
                let warning = at >= 1
                    && matches!(seg[at - 1], b'w' | b'W')
                    && (at < 2 || !seg[at - 2].is_ascii_lowercase() || seg[at - 1] == b'W');
                bit = if warning { Marks::CHATTER } else { 0 };
            }
            bits |= bit;
        }
        Marks(bits)
    }

    /// The marks of a short segment: each literal found at one of its rarer bytes (a `memchr`, then a comparison
    /// at each hit), the same marks as the search finds.
    ///
    /// # Performance
    /// On a line shorter than [`SHORT`] the Aho–Corasick search runs its Rabin–Karp fallback, whose set-up costs
    /// more than these few `memchr`s: a TensorFlow `Accuracy at step` line costs a third.
    fn by_bytes(seg: &[u8]) -> Marks {
        let at = |i: usize, lit: &[u8]| seg.get(i..).is_some_and(|rest| rest.starts_with(lit));
        let mut bits = 0;
        if memchr::memchr_iter(b'p', seg).any(|i| i >= 7 && at(i - 7, b" at step ")) {
            bits |= Marks::AT_STEP;
        }
        if memchr::memchr_iter(b'{', seg).any(|i| at(i, b"{metricName: ")) {
            bits |= Marks::METRIC_NAME;
        }
        if memchr::memchr2_iter(b'/', b'E', seg).any(|i| at(i, b"/step") || at(i, b"/sample") || at(i, b"ETA: ")) {
            bits |= Marks::KERAS;
        }
        let chatter = memchr::memchr3_iter(b'w', b'W', b']', seg).any(|i| match seg[i] {
            // The word `warning`/`Warning`/`WARNING` (in `UserWarning` too), not `learning`.
            b'w' => (at(i + 1, b"arning") || at(i + 1, b"ARNING")) && (i == 0 || !seg[i - 1].is_ascii_lowercase()),
            b'W' => at(i + 1, b"arning") || at(i + 1, b"ARNING"),
            _ => at(i, b"] [Info]") || at(i, b"] [Debug]"),
        });
        if chatter {
            bits |= Marks::CHATTER;
        }
        Marks(bits)
    }

    /// Whether every mark of `bits` is there.
    pub fn has(self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    /// A Keras progress or epoch line (`12/12 - 1s - 99ms/step - accuracy: 0.26 - loss: 2.14`, the `\r` redraws of
    /// verbose 1 included): ` - ` separators, and a `/step`, `/sample` or `ETA:`, or a leading `N/M` batch
    /// counter.
    pub fn keras(self, seg: &[u8]) -> bool {
        (self.has(Marks::KERAS) || batch_counter(seg)) && LIT.dash.find(seg).is_some()
    }
}

/// Logging levels that precede a message (`INFO loss: 0.3`).
fn is_log_level(word: &[u8]) -> bool {
    [&b"INFO"[..], b"DEBUG", b"WARNING", b"WARN", b"ERROR", b"CRITICAL", b"TRACE"].contains(&word)
}

/// Framework chatter that holds `name: value` or `name=value` text but no metric: warnings, LightGBM's
/// `[Info]`/`[Warning]` lines.
#[cfg(test)]
fn is_chatter(seg: &[u8]) -> bool {
    Marks::of(seg).has(Marks::CHATTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_at_the_end_of_a_segment_are_no_pairs() {
        for seg in [&b"a=="[..], b"x!=", b"==", b"a<=", b"b = ="] {
            eq_pairs(seg, &mut |p| panic!("{seg:?}: {p:?}"));
        }
    }

    #[test]
    fn short_and_long_segments_get_the_same_marks() {
        let lines = [
            "Accuracy at step 120: 0.9134",
            "x.py:3: UserWarning: lr=0.1",
            "[LightGBM] [Warning] a: 1",
            "[LightGBM] [Info] Number of positive: 3",
            "learning_rate=0.002,",
            "{metricName: accuracy, metricValue: 0.98}",
            "12/12 - 1s - 99ms/step - accuracy: 0.26 - loss: 2.14",
            "412/469 [====>...] - ETA: 3s - loss: 0.3141",
            "WARNING:root:x=1",
            "epoch 3: loss=0.2351",
        ];
        for line in lines {
            let padded = format!("{line}{}", " ".repeat(SHORT));
            assert_eq!(Marks::by_bytes(line.as_bytes()), Marks::of(padded.as_bytes()), "{line}");
        }
    }

    /// A weak format's scanner, as the tests call it.
    type Scanner = fn(&[u8], &mut dyn FnMut(WeakPair<'_>));

    fn weak(seg: &str, f: Scanner) -> Vec<(String, String, Place)> {
        let mut got = Vec::new();
        f(seg.as_bytes(), &mut |p| {
            got.push((
                String::from_utf8_lossy(p.name).into_owned(),
                String::from_utf8_lossy(p.raw).into_owned(),
                p.place,
            ))
        });
        got
    }

    fn eq(seg: &[u8], out: &mut dyn FnMut(WeakPair<'_>)) {
        eq_pairs(seg, &mut |p| out(p));
    }

    fn colon(seg: &[u8], out: &mut dyn FnMut(WeakPair<'_>)) {
        colon_pairs(seg, &mut |p| out(p));
    }

    fn names(v: &[(String, String, Place)]) -> Vec<&str> {
        v.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    #[test]
    fn eq_pairs_take_katib_pairs_and_mark_reprs() {
        assert_eq!(names(&weak("epoch=1 loss=1.1054 val_accuracy=0.8111", eq)), ["epoch", "loss", "val_accuracy"]);
        let ns = weak("Namespace(lr=0.01, momentum=0.9, batch_size=64)", eq);
        assert!(ns.iter().all(|p| p.2 == Place::Repr), "{ns:?}");
        let lin = weak("  (0): Linear(in_features=64, out_features=32, bias=True)", eq);
        assert_eq!(names(&lin), ["in_features", "out_features"]);
        assert!(lin.iter().all(|p| p.2 == Place::Repr));
        assert_eq!(weak("`Trainer.fit` stopped: `max_epochs=4` reached.", eq)[0].2, Place::Code);
        assert!(is_chatter(b"x.py:3: UserWarning: lr=0.1") && is_chatter(b"[LightGBM] [Warning] a: 1"));
        assert!(!is_chatter(b"learning_rate=0.002,"));
        assert!(weak("Num examples = 120   Batch size = 8", eq).is_empty());
        assert_eq!(names(&weak("  train_loss = 0.5", eq)), ["train_loss"]);
        assert!(weak("lr=1e-3x step=5s a==1 b>=2", eq).is_empty());
        let tab = weak("Train Epoch: 1 [0/1437 (0%)]\tloss=2.2999", eq);
        assert_eq!(tab, [("loss".into(), "2.2999".into(), Place::Text)]);
    }

    #[test]
    fn colon_pairs_take_loops_and_reports_not_prose() {
        let got = weak("epoch 1: loss: 2.2986 accuracy: 0.10 val_loss: 2.2635 val_accuracy: 0.22", colon);
        assert_eq!(names(&got), ["loss", "accuracy", "val_loss", "val_accuracy"]);
        assert_eq!(names(&weak("validation accuracy: 0.9860", colon)), ["validation accuracy"]);
        assert_eq!(names(&weak("2026 INFO     test accuracy: 0.95", colon)), ["test accuracy"]);
        assert_eq!(names(&weak("\"hidden\":     32", colon)), ["hidden"]);
        for prose in [
            "Total training time: 0.00 seconds.",
            "Accuracy for class: 0     is 100.0 %",
            " Total params: 4,810 (18.79 KB)",
            "TPU available: False, using: 0 TPU cores",
            "Saving to /x (epochs done: 5)",
            "Accuracy of the network on the 360 test images: 94 %",
            "Epoch 0: 100%|",
            "Modules in train mode: 4",
        ] {
            assert!(weak(prose, colon).is_empty(), "{prose}: {:?}", weak(prose, colon));
        }
    }

    #[test]
    fn objects_read_python_dicts_and_json_lines() {
        let mut got = Vec::new();
        let seg = b"{'loss': '0.695', 'grad_norm': 0.26, 'metric': ['a', 'b'], 'epoch': 0.25}";
        let info = object(seg, b'\'', &mut |p| got.push((p.name, p.raw))).unwrap();
        assert!(info.epoch);
        assert_eq!(got, [(&b"loss"[..], &b"0.695"[..]), (b"grad_norm", b"0.26")]);
        let mut n = 0;
        let seg = br#"{"checkpoint_path": "", "global_step": "5", "loss": "2.05", "timestamp": 1795870871.15}"#;
        let info = object(seg, b'"', &mut |_| n += 1).unwrap();
        assert_eq!((info.step, info.timestamp), (Some(5), Some((&b"1795870871.15"[..], false))));
        assert_eq!(n, 1);
        assert!(object(b"{'a': 1} trailing", b'\'', &mut |_| {}).is_none());
    }

    #[test]
    fn frames_find_bars_counters_and_postfixes() {
        let tqdm = "Epoch 0:   6%|x| 1/18 [00:00<00:00, 176.53it/s, v_num=0, train_loss_step=2.320]";
        let f = frame(tqdm.as_bytes()).unwrap();
        assert_eq!((f.bar, f.count, f.rich), (&b"Epoch 0"[..], Some(1), false));
        let rich = "Epoch 1/3  \u{2501}\u{2501} 16/18 0:00:02 \u{2022} 0:00:01 6.20it/s v_num: 0.000 loss: 0.624";
        let f = frame(rich.as_bytes()).unwrap();
        assert_eq!((f.count, f.rich), (Some(16), true));
        let mut n = 0;
        frame_pairs(f.text, true, &mut |_| n += 1);
        assert_eq!(n, 2);
        assert!(frame(b" 25%|##| 12/48 [00:00<00:00, 58.55it/s]").is_none());
    }

    #[test]
    fn results_rows_and_hf_metrics_rows() {
        assert_eq!(
            results_row("        val_acc            0.9513888955116272".as_bytes()),
            Some(Some((&b"val_acc"[..], &b"0.9513888955116272"[..])))
        );
        let boxed = "\u{2502}          val_acc          \u{2502}    0.95     \u{2502}";
        assert_eq!(results_row(boxed.as_bytes()), Some(Some((&b"val_acc"[..], &b"0.95"[..]))));
        assert_eq!(results_row("\u{2500}\u{2500}\u{2500}".as_bytes()), Some(None));
        assert_eq!(results_row(b"Testing done"), None);
        assert_eq!(
            hf_metrics_row(b"  train_runtime            = 0:00:00.91"),
            Some((&b"train_runtime"[..], &b"0:00:00.91"[..], ValueKind::Clock))
        );
        assert_eq!(hf_metrics_row(b"  epoch = 3.0").map(|r| r.0), Some(&b"epoch"[..]));
    }
}

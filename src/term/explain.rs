//! What a run says about itself in words, under the table: the parameters set apart, how each metric was
//! recognised (`--explain`), and, when nothing was found, what was tried and what to try next.

use std::io::{self, Write};

use crate::parser::Parser;
use crate::rules::{Format, LineFormat, Param, Preset, RuleSpec, Rules, Semantics};

/// Parameters shown on the `parameters:` line without `--explain` (all of them with it).
pub const SHOWN_PARAMS: usize = 12;

/// The `parameters:` line: values printed once (hyper-parameters, config echoes, reprs), which are no metrics.
pub fn write_params(out: &mut impl Write, params: &[Param], all: bool) -> io::Result<()> {
    if params.is_empty() {
        return Ok(());
    }
    let shown = if all { params.len() } else { params.len().min(SHOWN_PARAMS) };
    let list: Vec<String> = params[..shown].iter().map(|p| format!("{}={}", p.name, p.raw)).collect();
    let more = params.len() - shown;
    let tail = if more > 0 { format!(" (+{more} more; --explain lists them)") } else { String::new() };
    writeln!(out, "parameters: {}{tail}", list.join(" "))
}

/// `--explain`: per metric, the rule or format that produced it and the line it was first seen on; then where
/// each parameter was printed.
pub fn write_explain(out: &mut impl Write, parser: &Parser) -> io::Result<()> {
    let rules = parser.rules();
    let metrics = parser.aggregate().metrics();
    if !metrics.is_empty() {
        writeln!(out, "\nhow each metric was found (its rule, then the first line it was read from):")?;
    }
    let width = metrics.iter().map(|m| m.name.chars().count()).max().unwrap_or(0);
    for (m, e) in metrics.iter().zip(parser.explained()) {
        writeln!(out, "  {:<width$}  {}", m.name, rules.describe(e.origin))?;
        writeln!(out, "  {:<width$}  line {}: {}", "", e.line, e.sample)?;
    }
    let params = parser.params();
    if !params.is_empty() {
        writeln!(out, "\nparameters (printed once, or inside a repr – not metrics):")?;
        let width = params.iter().map(|p| p.name.chars().count()).max().unwrap_or(0);
        for p in &params {
            writeln!(out, "  {:<width$}  {:<12} line {} ({})", p.name, p.raw, p.line, p.format.name())?;
        }
    }
    Ok(())
}

/// No metric was found by the recognition: the formats tried, what looked numeric, and a flag to try.
pub fn write_nothing_found(out: &mut impl Write, parser: &Parser) -> io::Result<()> {
    let rules = parser.rules();
    let Some(found) = rules.findings() else {
        return writeln!(out, "no metrics found");
    };
    let lines = parser.lines_read();
    writeln!(out, "no metrics found in {lines} line{}", if lines == 1 { "" } else { "s" })?;
    if let Some(at) = found.binary_at {
        writeln!(out, "the input looks binary (control bytes by byte {at}): it was not read as a training log")?;
        return Ok(());
    }
    writeln!(out, "formats tried:")?;
    for f in Format::ALL {
        writeln!(out, "  {}", f.example())?;
    }
    let params = parser.params();
    if !params.is_empty() {
        writeln!(out, "values printed once are parameters, not metrics (a metric is printed again, changed):")?;
        write_params(out, &params, false)?;
    }
    if found.samples.is_empty() {
        return writeln!(out, "no line looked like a name with a number");
    }
    writeln!(out, "lines that looked numeric:")?;
    for (line, text) in &found.samples {
        writeln!(out, "  line {line}: {text}")?;
    }
    let lines: Vec<&str> = found.samples.iter().map(|(_, t)| t.as_str()).collect();
    if let Some((preset, n)) = closest_preset(&lines) {
        writeln!(out, "try: --preset {}  (reads {n} of these lines: {})", preset.name(), preset.summary())?;
    }
    if let Some(flag) = suggest_metric(&lines) {
        writeln!(out, "try: {flag}")?;
    }
    Ok(())
}

/// The preset that reads the most of `lines`, and how many.
fn closest_preset(lines: &[&str]) -> Option<(Preset, usize)> {
    Preset::ALL
        .iter()
        .filter_map(|&p| {
            let mut rules = Rules::new(&[RuleSpec::Preset(p)], &[], Semantics::Native, LineFormat::Text).ok()?;
            let n = lines
                .iter()
                .filter(|l| {
                    let mut any = false;
                    rules.scan(l.as_bytes(), &mut |_| any = true);
                    any
                })
                .count();
            (n > 0).then_some((p, n))
        })
        .max_by_key(|(_, n)| *n)
}

/// A `--metric NAME=REGEX` flag built from the first `word SEP number` in `lines` that is not a counter.
pub fn suggest_metric(lines: &[&str]) -> Option<String> {
    for line in lines {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !(b[i].is_ascii_alphabetic() || b[i] == b'_')
                || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'-' | b'.')) {
                i += 1;
            }
            let name = &line[start..i];
            let sep_end =
                b[i..].iter().position(|c| !matches!(c, b' ' | b':' | b'=' | b'\t')).map_or(b.len(), |p| i + p);
            let numeric = b.get(sep_end).is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.'))
                && b.get(sep_end + 1).is_none_or(|c| c.is_ascii_digit() || *c == b'.' || sep_end + 1 == b.len())
                || b.get(sep_end).is_some_and(u8::is_ascii_digit);
            let counter = ["epoch", "step", "iteration", "iter", "batch"].iter().any(|c| name.eq_ignore_ascii_case(c));
            if sep_end > i && numeric && !counter && !name.ends_with('.') {
                let sep = &line[i..sep_end];
                let regex =
                    format!("{}{}(?P<value>[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)", regex_escape(name), regex_escape(sep));
                return Some(format!("--metric '{name}={regex}'"));
            }
        }
    }
    None
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        if c == '\t' {
            out.push_str("\\t");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_flag_is_suggested_from_a_numeric_line() {
        let flag = suggest_metric(&["epoch 3 mse 0.31 mae 0.2"]).unwrap();
        assert_eq!(flag, r"--metric 'mse=mse (?P<value>[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)'");
        let re = regex::Regex::new(r"mse (?P<value>[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)").unwrap();
        assert_eq!(&re.captures("epoch 3 mse 0.31").unwrap()["value"], "0.31");
        assert!(suggest_metric(&["epoch 3", "no numbers here"]).is_none());
    }

    #[test]
    fn the_parameters_line_is_cut_without_explain() {
        let params: Vec<Param> = (0..20)
            .map(|i| Param { name: format!("p{i}"), raw: i.to_string(), line: i, format: Format::KatibPairs })
            .collect();
        let mut out = Vec::new();
        write_params(&mut out, &params, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("parameters: p0=0 p1=1 "), "{text}");
        assert!(text.ends_with("p11=11 (+8 more; --explain lists them)\n"), "{text}");
    }
}

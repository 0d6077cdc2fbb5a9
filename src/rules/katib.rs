//! Katib's filters as Go's RE2 reads them, rewritten for Rust's `regex`.
//!
//! Katib compiles each filter with Go's `regexp.Compile` (`pkg/metricscollector/v1beta1/file-metricscollector/
//! file-metricscollector.go`, `GetFilterRegexpList`) and matches it against the line as a Go string: UTF-8 aware
//! (`.` and classes take whole characters, `(?i)` folds Unicode, bytes that are not UTF-8 read as U+FFFD), with
//! Perl classes `\d \w \s \b` in ASCII (`\s` without `\v`). [`go_regex`] translates a filter so that Rust's
//! `regex`, in its Unicode mode, over the line made valid the way Go decodes it ([`crate::value::go_lossy`]),
//! matches what RE2 matches:
//! - `\d \D \w \W \s \S` become explicit ASCII classes, `\b \B` ASCII word boundaries;
//! - `\Q…\E` is quoted, octal escapes (`\075`, `\75`, `\0`) become `\x{…}`;
//! - `\<`, `\>` and other escaped punctuation are the literal characters (Rust reads `\<` as a word boundary);
//! - inside a class every item is re-emitted: `&&`, `~~`, `--` are literal characters in RE2, operators in Rust;
//! - a `{` that does not start a repetition is literal (RE2 reads it so; Katib's documented
//!   `{metricName: …}` filter relies on it), `\x{…}` and `\p{…}` keep theirs.
//!
//! What is left: a filter RE2 refuses but Rust accepts (a repetition above 1000, `(?u)`) compiles here, where Katib
//! ignores the compile error and crashes at the first metric line; and one Rust refuses is an error either way.

use std::fmt::Write as _;

/// Katib's default metrics filter (`pkg/metricscollector/v1beta1/common/const.go`, `DefaultFilter`).
pub const KATIB_DEFAULT_FILTER: &str = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)";

const ASCII_DIGIT: &str = "0-9";
const ASCII_WORD: &str = "0-9A-Za-z_";
const GO_SPACE: &str = r"\t\n\f\r ";

/// Translates a filter from RE2 (as Go's `regexp.Compile` reads it) to Rust's `regex` syntax, Unicode mode.
/// `Err` names what RE2 itself would refuse (an escape it does not know, a lone `\8`).
pub fn go_regex(pattern: &str) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '\\' if rest.starts_with('Q') => {
                let quoted = &rest[1..];
                let end = quoted.find(r"\E").unwrap_or(quoted.len());
                out.push_str(&regex::escape(&quoted[..end]));
                rest = quoted.get(end + 2..).unwrap_or("");
            }
            '\\' => {
                let (escape, after) = escape(rest)?;
                rest = after;
                match escape {
                    Escape::Char(c) => push_literal(&mut out, c),
                    Escape::Perl(class) => out.push_str(&format!("[{}]", perl_class(class))),
                    Escape::Verbatim(text) => out.push_str(&text),
                }
            }
            '[' => rest = class(rest, &mut out)?,
            '{' if !is_repetition(rest) => out.push_str(r"\{"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What an escape outside a class means.
enum Escape {
    /// A literal character (octal, `\x`, escaped punctuation, `\t`…).
    Char(char),
    /// A Perl class letter: `d D w W s S`.
    Perl(char),
    /// Written as Rust reads it: `\A \z \p… \P…`, and `\b \B` as ASCII word boundaries.
    Verbatim(String),
}

/// Parses the escape after a `\` (RE2's `parseEscape` and its Perl classes); returns it and the rest.
fn escape(rest: &str) -> Result<(Escape, &str), String> {
    let Some(c) = rest.chars().next() else { return Err("trailing backslash".into()) };
    let after = &rest[c.len_utf8()..];
    let simple = |ch: char| Ok((Escape::Char(ch), after));
    match c {
        'd' | 'D' | 'w' | 'W' | 's' | 'S' => Ok((Escape::Perl(c), after)),
        'b' => Ok((Escape::Verbatim(r"(?-u:\b)".into()), after)),
        'B' => Ok((Escape::Verbatim(r"(?-u:\B)".into()), after)),
        'A' => Ok((Escape::Verbatim(r"\A".into()), after)),
        'z' => Ok((Escape::Verbatim(r"\z".into()), after)),
        'p' | 'P' => {
            let len = match after.strip_prefix('{') {
                Some(braced) => braced.find('}').map_or(after.len(), |i| i + 2),
                None => after.chars().next().map_or(0, char::len_utf8),
            };
            Ok((Escape::Verbatim(format!("\\{}", &rest[..1 + len])), &after[len..]))
        }
        // Octal: `\0` and up to two more digits; `\1`–`\7` only when another octal digit follows (alone they
        // would be backreferences, which RE2 refuses).
        '0'..='7' => {
            let digits: String = rest.chars().take(3).take_while(|d| ('0'..='7').contains(d)).collect();
            if c != '0' && digits.len() == 1 {
                return Err(format!("invalid escape \\{c}"));
            }
            let code = u32::from_str_radix(&digits, 8).map_err(|e| e.to_string())?;
            Ok((Escape::Char(char::from_u32(code).unwrap_or('\u{FFFD}')), &rest[digits.len()..]))
        }
        'x' => {
            let (hex, tail) = match after.strip_prefix('{') {
                Some(braced) => {
                    let end = braced.find('}').ok_or("\\x{ without }")?;
                    (&braced[..end], &braced[end + 1..])
                }
                None => (after.get(..2).ok_or("short \\x escape")?, &after[2.min(after.len())..]),
            };
            let code = u32::from_str_radix(hex, 16).map_err(|_| format!("invalid escape \\x{hex}"))?;
            Ok((Escape::Char(char::from_u32(code).ok_or("\\x beyond Unicode")?), tail))
        }
        'a' => simple('\x07'),
        'f' => simple('\x0C'),
        't' => simple('\t'),
        'n' => simple('\n'),
        'r' => simple('\r'),
        'v' => simple('\x0B'),
        // Escaped punctuation is always itself in RE2.
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => simple(c),
        c => Err(format!("invalid escape \\{c}")),
    }
}

/// The ASCII class a Perl escape stands for, as the inside of a `[…]`.
fn perl_class(class: char) -> String {
    match class {
        'd' => ASCII_DIGIT.into(),
        'D' => format!("^{ASCII_DIGIT}"),
        'w' => ASCII_WORD.into(),
        'W' => format!("^{ASCII_WORD}"),
        's' => GO_SPACE.into(),
        _ => format!("^{GO_SPACE}"),
    }
}

/// A literal character, escaped when Rust would read it as syntax.
fn push_literal(out: &mut String, c: char) {
    if c.is_alphanumeric() || c == ' ' || c == '_' {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:X}}}", c as u32);
    }
}

/// Parses a class after its `[` (RE2's `parseClass`) and writes it item by item: single characters and ranges
/// as `\x{…}`, Perl and POSIX classes and `\p…` as Rust reads them. Returns the rest after the closing `]`.
fn class<'a>(mut rest: &'a str, out: &mut String) -> Result<&'a str, String> {
    out.push('[');
    if let Some(after) = rest.strip_prefix('^') {
        out.push('^');
        rest = after;
    }
    let mut first = true;
    loop {
        let Some(c) = rest.chars().next() else { return Err("missing ]".into()) };
        if c == ']' && !first {
            out.push(']');
            return Ok(&rest[1..]);
        }
        first = false;
        if let Some(name_end) = rest.strip_prefix("[:").and_then(|r| r.find(":]")) {
            out.push_str(&rest[..name_end + 4]);
            rest = &rest[name_end + 4..];
            continue;
        }
        let (lo, after) = match class_char(rest)? {
            ClassChar::Char(lo, after) => (lo, after),
            ClassChar::Set(set, after) => {
                out.push_str(&set);
                rest = after;
                continue;
            }
        };
        rest = after;
        let mut hi = lo;
        if rest.len() >= 2 && rest.starts_with('-') && !rest[1..].starts_with(']') {
            match class_char(&rest[1..])? {
                ClassChar::Char(h, after) => {
                    hi = h;
                    rest = after;
                }
                ClassChar::Set(..) => return Err("a class in a range".into()),
            }
            if hi < lo {
                return Err("invalid character class range".into());
            }
        }
        let _ = write!(out, "\\x{{{:X}}}", lo as u32);
        if hi != lo {
            let _ = write!(out, "-\\x{{{:X}}}", hi as u32);
        }
    }
}

enum ClassChar<'a> {
    Char(char, &'a str),
    /// A Perl class or `\p…` inside a class, written as Rust reads it there.
    Set(String, &'a str),
}

fn class_char(rest: &str) -> Result<ClassChar<'_>, String> {
    let Some(c) = rest.chars().next() else { return Err("missing ]".into()) };
    let after = &rest[c.len_utf8()..];
    if c != '\\' {
        return Ok(ClassChar::Char(c, after));
    }
    Ok(match escape(after)? {
        (Escape::Char(c), after) => ClassChar::Char(c, after),
        (Escape::Perl(p), after) => {
            let inner = perl_class(p);
            // A negated Perl class inside a class is a nested class (a union in Rust's syntax).
            ClassChar::Set(if inner.starts_with('^') { format!("[{inner}]") } else { inner }, after)
        }
        (Escape::Verbatim(v), after) if v.starts_with("\\p") || v.starts_with("\\P") => ClassChar::Set(v, after),
        (Escape::Verbatim(v), _) => return Err(format!("{v} in a class")),
    })
}

/// Escapes every `{` outside a class that does not start a repetition (`{n}`, `{n,}`, `{n,m}`): RE2 reads such a
/// brace as a literal (Katib's documented `{metricName: …}` filter relies on it), Rust's `regex` rejects it. The
/// braces of `\x{…}`, `\p{…}` and `\P{…}` are kept. Used for native filters, whose syntax is otherwise Rust's.
pub fn literal_braces(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut in_class = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            let mut end = (i + 1 + pattern[i + 1..].chars().next().map_or(0, char::len_utf8)).min(b.len());
            if matches!(b.get(i + 1), Some(b'x' | b'p' | b'P')) && b.get(i + 2) == Some(&b'{') {
                end = pattern[i..].find('}').map_or(b.len(), |j| i + j + 1);
            }
            out.push_str(&pattern[i..end]);
            i = end;
            continue;
        }
        if c == b'[' && !in_class {
            in_class = true;
        } else if c == b']' && in_class {
            in_class = false;
        } else if c == b'{' && !in_class && !is_repetition(&pattern[i + 1..]) {
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

/// Whether `rest` (what follows a `{`) makes it a repetition: `n}`, `n,}` or `n,m}`.
fn is_repetition(rest: &str) -> bool {
    let s = rest.as_bytes();
    let digits = |from: usize| s[from.min(s.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
    let n = digits(0);
    if n == 0 {
        return false;
    }
    match s.get(n) {
        Some(b'}') => true,
        Some(b',') => {
            let m = digits(n + 1);
            s.get(n + 1 + m) == Some(&b'}')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::bytes::Regex;

    fn katib(filter: &str) -> Regex {
        Regex::new(&go_regex(filter).unwrap()).unwrap()
    }

    fn groups(filter: &str, line: &str) -> Vec<(String, String)> {
        let re = katib(filter);
        re.captures_iter(line.as_bytes())
            .map(|c| {
                let g = |i| c.get(i).map_or(String::new(), |m| String::from_utf8_lossy(m.as_bytes()).into_owned());
                (g(1), g(2))
            })
            .collect()
    }

    #[test]
    fn perl_classes_are_ascii_and_space_has_no_vertical_tab() {
        assert_eq!(groups(r"(\w+)=(\d+)", "é=1 ab=٣ ab=3"), [("ab".into(), "3".into())]);
        assert_eq!(groups(r"(\S+)\s=(\S+)", "a\x0b=1 b\t=2"), [("b".into(), "2".into())]);
        assert_eq!(groups(r"([\w|-]+)=([^\s]+)", "a|b-c=x y"), [("a|b-c".into(), "x".into())]);
    }

    #[test]
    fn dot_and_folding_are_unicode_as_in_re2() {
        assert_eq!(groups(r"(l.)=(\d+)", "lé=1"), [("lé".into(), "1".into())]);
        assert_eq!(groups(r"(?i)(key)=(\d+)", "\u{212a}ey=1"), [("\u{212a}ey".into(), "1".into())]);
        assert_eq!(groups(r"(\pL+)=(\d+)", "loss=1"), [("loss".into(), "1".into())]);
    }

    #[test]
    fn re2_only_syntax_is_rewritten() {
        assert_eq!(groups(r"(\Qa|b\E)=(\d+)", "a|b=1"), [("a|b".into(), "1".into())]);
        assert_eq!(groups(r"(loss)\075(\d+)", "loss=1"), [("loss".into(), "1".into())]);
        assert_eq!(groups(r"(loss)\75(\d+)", "loss=1"), [("loss".into(), "1".into())]);
        assert_eq!(groups(r"(l\x{e9})=(\d+)", "lé=1"), [("lé".into(), "1".into())]);
        assert_eq!(groups(r"(l\xe9)=(\d+)", "lé=1"), [("lé".into(), "1".into())]);
        assert_eq!(groups(r"\<(loss)\>=(\d+)", "<loss>=1"), [("loss".into(), "1".into())]);
        assert_eq!(groups(r"([a-z&&s]+)=(\d+)", "loss=1"), [("loss".into(), "1".into())]);
        assert_eq!(groups(r"([+--]+)=(\d)", "+,-=1"), [("+,-".into(), "1".into())], "a range from + to -");
        assert_eq!(groups(r"([\W]+)=(\d)", "a ,=1"), [(" ,".into(), "1".into())]);
        assert!(go_regex(r"(a)\8(b)").is_err() && go_regex(r"(a)\1").is_err(), "RE2 refuses these");
    }

    #[test]
    fn braces_that_are_no_repetition_are_literal() {
        let filter = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}";
        assert_eq!(groups(filter, "{metricName: acc, metricValue: 0.98}"), [("acc".into(), "0.98".into())]);
        assert_eq!(literal_braces(r"{a: (\d{1,3})[{]x{2}\{\x{e9}\p{Greek}"), r"\{a: (\d{1,3})[{]x{2}\{\x{e9}\p{Greek}");
    }
}

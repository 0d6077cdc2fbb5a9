//! Katib's filters as Go RE2 reads them, rewritten for Rust's `regex`: ASCII classes, Go's `\s`, literal braces.

/// Katib's default metrics filter (CONTRACT §2).
pub const KATIB_DEFAULT_FILTER: &str = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_regex_rewrites_space_classes() {
        assert_eq!(go_regex(r"a\sb"), r"(?-u)a[\t\n\f\r ]b");
        assert_eq!(go_regex(r"[\s,]\S\\s"), r"(?-u)[\t\n\f\r ,][^\t\n\f\r ]\\s");
        assert_eq!(go_regex(r"[]\s]"), r"(?-u)[]\t\n\f\r ]");
        assert_eq!(literal_braces(r"{a: (\d{1,3})[{]x{2}\{"), r"\{a: (\d{1,3})[{]x{2}\{");
    }
}

//! JSON lines: one object per line, every key a possible metric.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{LineIssues, Match, Names, Origin, Semantics, ValueKind};
use crate::value::{self, ZERO_TIME};

/// A JSON line as Go's `encoding/json` reads it: every byte that is not UTF-8 becomes U+FFFD, and so does every
/// `\u` escape of a surrogate that has no partner (`$GOROOT/src/encoding/json/decode.go`, `unquoteBytes`).
fn go_json_text(line: &[u8]) -> String {
    let text = value::go_lossy(line);
    let is_hex4 = |s: &str| s.len() >= 4 && s.as_bytes()[..4].iter().all(u8::is_ascii_hexdigit);
    let unit = |s: &str| u32::from_str_radix(&s[..4], 16).unwrap_or(0);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let esc = &rest[i..];
        if let Some(hex) = esc.strip_prefix("\\u").filter(|h| is_hex4(h)) {
            let u = unit(hex);
            let pair = hex[4..].strip_prefix("\\u").filter(|h| is_hex4(h)).map(unit);
            match u {
                0xD800..=0xDBFF if pair.is_some_and(|p| (0xDC00..=0xDFFF).contains(&p)) => {
                    out.push_str(&esc[..12]);
                    rest = &esc[12..];
                }
                0xD800..=0xDFFF => {
                    out.push_str("\\uFFFD");
                    rest = &esc[6..];
                }
                _ => {
                    out.push_str(&esc[..6]);
                    rest = &esc[6..];
                }
            }
        } else {
            // Any other escape: the backslash and the character it escapes.
            let len = 1 + esc[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&esc[..len]);
            rest = &esc[len..];
        }
    }
    out.push_str(rest);
    out
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
            // serde_json refuses a lone surrogate escape where Go decodes it as U+FFFD.
            Err(_) => serde_json::from_str::<String>(&go_json_text(text.as_bytes()))
                .map_or(JsonValue::Other, |s| JsonValue::Str(Cow::Owned(s))),
        },
        Some(b'-' | b'0'..=b'9') => JsonValue::Number(text),
        _ => JsonValue::Other,
    }
}

const STEP_KEYS: [&str; 2] = ["step", "global_step"];

pub(super) fn scan_json(
    line: &[u8],
    names: Option<&Names>,
    semantics: Semantics,
    emit: &mut impl FnMut(Match<'_>),
) -> LineIssues {
    let mut issues = LineIssues::default();
    if value::trim(line).is_empty() {
        return issues;
    }
    let katib = semantics == Semantics::Katib;
    let repaired;
    let entries = match serde_json::from_slice::<Entries<'_>>(line) {
        Ok(Entries(entries)) => entries,
        // Go's decoder takes invalid UTF-8 and lone surrogates (as U+FFFD); serde_json refuses the line.
        Err(_) if katib => {
            repaired = go_json_text(line);
            match serde_json::from_str::<Entries<'_>>(&repaired) {
                Ok(Entries(entries)) => entries,
                Err(_) => {
                    issues.bad_json = true;
                    return issues;
                }
            }
        }
        Err(_) => {
            issues.bad_json = true;
            return issues;
        }
    };
    // Go decodes into a map: of a key given twice, the last value is the one Katib sees.
    let lookup = |key: &[u8]| {
        if katib {
            entries.iter().rfind(|(k, _)| k.as_bytes() == key)
        } else {
            entries.iter().find(|(k, _)| k.as_bytes() == key)
        }
    };
    let time: Option<Cow<'_, str>> = match lookup(b"timestamp").map(|(_, v)| json_value(v)) {
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
        JsonValue::Str(s) if any_string || value::parse_value(s.as_bytes()).is_some() => emit(Match {
            name: name.as_bytes(),
            raw: s.as_bytes(),
            step,
            time,
            kind: ValueKind::Text,
            origin: Origin::Json,
            context: line,
            key: None,
        }),
        // Katib ignores numbers (its issue #2162); the native mode takes them.
        JsonValue::Number(n) if !katib => emit(Match {
            name: name.as_bytes(),
            raw: n.as_bytes(),
            step,
            time,
            kind: ValueKind::Number,
            origin: Origin::Json,
            context: line,
            key: None,
        }),
        _ => {}
    };
    match (names, katib) {
        // Katib: for each metric name in order, that key's value.
        (Some(names), true) => {
            for name in &names.list {
                if let Some((k, v)) = lookup(name) {
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

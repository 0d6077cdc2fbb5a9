//! Small, allocation-free scanners shared by the rules: metric values, timestamps, byte classes.
//!
//! Everything here works on `&[u8]` and never allocates. The numeric grammar is the one the native rules accept:
//! `[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?` or `[+-]?(nan|inf|infinity)` (any case) not followed by a word byte.

/// `\s` as Go's RE2 (and so Katib) defines it: no vertical tab.
pub fn is_go_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// `\w` in ASCII.
pub fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Trims `\s` (RE2's set: no vertical tab) from both ends.
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_go_space(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_go_space(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn digits(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// The end of the number that starts at `s[at..]`, or `at` when none starts there.
pub fn scan_number(s: &[u8], at: usize) -> usize {
    let mut i = at;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let int_end = digits(s, i);
    let mut end = int_end;
    if int_end > i {
        if end < s.len() && s[end] == b'.' {
            end = digits(s, end + 1);
        }
    } else if i < s.len() && s[i] == b'.' {
        let frac_end = digits(s, i + 1);
        if frac_end == i + 1 {
            return at;
        }
        end = frac_end;
    } else {
        return scan_special(s, i).unwrap_or(at);
    }
    if end < s.len() && (s[end] == b'e' || s[end] == b'E') {
        let mut e = end + 1;
        if e < s.len() && (s[e] == b'+' || s[e] == b'-') {
            e += 1;
        }
        let exp_end = digits(s, e);
        if exp_end > e {
            end = exp_end;
        }
    }
    end
}

/// `nan`, `inf`, `infinity` in any case at `s[i..]`, ending at a word boundary.
fn scan_special(s: &[u8], i: usize) -> Option<usize> {
    let rest = &s[i..];
    let len = if starts_with_ignore_case(rest, b"infinity") {
        8
    } else if starts_with_ignore_case(rest, b"inf") || starts_with_ignore_case(rest, b"nan") {
        3
    } else {
        return None;
    };
    match rest.get(len) {
        Some(&b) if is_word(b) => None,
        _ => Some(i + len),
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Parses a metric value as printed: `0.91`, `1e-3`, `.5`, `+1.`, `nan`, `-inf`, surrounding spaces allowed.
///
/// # Performance
/// `std`'s float parser (Eisel-Lemire) after a UTF-8 check of a few bytes; no allocation.
pub fn parse_value(raw: &[u8]) -> Option<f64> {
    let t = trim(raw);
    if t.is_empty() || scan_number(t, 0) != t.len() {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse::<f64>().ok()
}

/// Parses text already known to be in the number grammar (see [`scan_number`]) without checking it again.
///
/// # Performance
/// Values as training logs print them (`0.2351`, `-1.5e-3`: at most 18 digits, exponents within ±22) take
/// [`exact_decimal`]'s path, a third of `std`'s cost; the rest go to `std`'s parser. The result is the same.
pub fn parse_number(raw: &[u8]) -> Option<f64> {
    exact_decimal(raw).or_else(|| std::str::from_utf8(raw).ok()?.parse::<f64>().ok())
}

/// Clinger's exact case: a decimal whose digits fit 2^53 and whose power of ten is at most 22 either way is one
/// correctly rounded multiplication or division of two exact doubles – what `std`'s parser computes first too.
/// `None` for anything else (more digits, a larger exponent, `nan`, `inf`, no digit, trailing bytes).
fn exact_decimal(s: &[u8]) -> Option<f64> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
        1e20, 1e21, 1e22,
    ];
    let (negative, start) = match s.first()? {
        b'-' => (true, 1),
        b'+' => (false, 1),
        _ => (false, 0),
    };
    // The integer part's digits, then the fraction's, into one mantissa: at most 18 digits in all, checked after
    // the loops (whose wrapping arithmetic cannot matter then) so that each digit costs a multiply and an add.
    let digits_from = |mut i: usize, mut m: u64| {
        while let Some(&b @ b'0'..=b'9') = s.get(i) {
            m = m.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            i += 1;
        }
        (i, m)
    };
    let (mut i, mut mantissa) = digits_from(start, 0);
    let mut digits = i - start;
    let mut exp = 0i32;
    if s.get(i) == Some(&b'.') {
        let fraction = i + 1;
        (i, mantissa) = digits_from(fraction, mantissa);
        digits += i - fraction;
        exp = -((i - fraction) as i32);
    }
    if digits == 0 || digits > 18 {
        return None;
    }
    if let Some(b'e' | b'E') = s.get(i) {
        i += 1;
        let sign = match s.get(i) {
            Some(b'-') => {
                i += 1;
                -1
            }
            Some(b'+') => {
                i += 1;
                1
            }
            _ => 1,
        };
        let start = i;
        let mut e = 0i32;
        while let Some(&b @ b'0'..=b'9') = s.get(i) {
            e = e.saturating_mul(10).saturating_add(i32::from(b - b'0'));
            i += 1;
        }
        if i == start {
            return None;
        }
        exp = exp.saturating_add(sign * e);
    }
    if i != s.len() || mantissa > 1 << 53 {
        return None;
    }
    let m = mantissa as f64;
    let v = match exp {
        0..=22 => m * POW10[exp as usize],
        -22..=-1 => m / POW10[(-exp) as usize],
        _ => return None,
    };
    Some(if negative { -v } else { v })
}

/// Parses a duration printed as `h:mm:ss` or `h:mm:ss.ff` (Hugging Face's `*_runtime` in its metrics blocks,
/// `0:00:01.20`) into seconds: hours of any digits, minutes and seconds of two, below 60.
pub fn parse_clock(raw: &[u8]) -> Option<f64> {
    let t = trim(raw);
    let mut parts = t.splitn(3, |&b| b == b':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let two = |p: &[u8]| p.len() == 2 && p.iter().all(u8::is_ascii_digit);
    let sec_int = s.split(|&b| b == b'.').next()?;
    if h.is_empty() || !h.iter().all(u8::is_ascii_digit) || !two(m) || !two(sec_int) {
        return None;
    }
    if s.len() > 2 && (s[2] != b'.' || s.len() == 3 || !s[3..].iter().all(u8::is_ascii_digit)) {
        return None;
    }
    let num = |p: &[u8]| std::str::from_utf8(p).ok()?.parse::<f64>().ok();
    let (h, m, s) = (num(h)?, num(m)?, num(s)?);
    (m < 60.0 && s < 60.0).then_some(h * 3600.0 + m * 60.0 + s)
}

/// Parses a step: decimal digits that fit a `u64`.
pub fn parse_step(raw: &[u8]) -> Option<u64> {
    let t = trim(raw);
    if t.is_empty() || t.len() > 20 {
        return None;
    }
    t.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Whether `c` is white space for Go's `unicode.IsSpace`: `\t \n \v \f \r`, space, U+0085, U+00A0, and the
/// Unicode `Z` space separators (U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F, U+3000). U+200B and
/// U+FEFF are not.
pub fn is_go_unicode_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{85}' | '\u{A0}' | '\u{1680}')
        || matches!(c, '\u{2000}'..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}')
}

/// Go's `strings.TrimSpace`: Unicode white space ([`is_go_unicode_space`]) off both ends; bytes that are not
/// valid UTF-8 stop the trimming, as Go's decoding makes them U+FFFD.
pub fn go_trim_space(s: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < s.len() {
        match decode_char(&s[start..]) {
            Some((c, len)) if is_go_unicode_space(c) => start += len,
            _ => break,
        }
    }
    let mut end = s.len();
    while end > start {
        // The last character starts at the last byte that is not a continuation byte (at most 4 back).
        let from = (end.saturating_sub(4).max(start)..end).rev().find(|&i| s[i] & 0xC0 != 0x80).unwrap_or(end - 1);
        match decode_char(&s[from..end]) {
            Some((c, len)) if from + len == end && is_go_unicode_space(c) => end = from,
            _ => break,
        }
    }
    &s[start..end]
}

/// The first character of `s` and its length in bytes, when `s` starts with valid UTF-8.
fn decode_char(s: &[u8]) -> Option<(char, usize)> {
    let len = match *s.first()? {
        b if b < 0x80 => 1,
        b if b >> 5 == 0b110 => 2,
        b if b >> 4 == 0b1110 => 3,
        b if b >> 3 == 0b11110 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(s.get(..len)?).ok()?.chars().next()?;
    Some((c, len))
}

/// `s` as Go sees a string it decodes: valid UTF-8 is kept, and every byte that does not start a valid sequence
/// becomes one U+FFFD (`utf8.DecodeRune` returns `RuneError` with width 1). Borrowed when `s` is valid.
pub fn go_lossy(s: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(s) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => {
            let mut out = String::with_capacity(s.len() + 8);
            let mut rest = s;
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(text) => {
                        out.push_str(text);
                        break;
                    }
                    Err(e) => {
                        let valid = e.valid_up_to();
                        out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &rest[valid + 1..];
                    }
                }
            }
            std::borrow::Cow::Owned(out)
        }
    }
}

/// Katib's zero time, used where a row has no timestamp of its own.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The line's first space-separated token when it is an RFC 3339 timestamp as Go's `time.RFC3339Nano` layout
/// parses it (`2024-05-01T12:00:00.123456Z`, `2024-05-01T12:00:00+02:00`); the token is returned verbatim. A line
/// without a space has no timestamp: Katib splits the line in two first
/// (`pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go`, `parseLogsInTextFormat`:
/// `strings.SplitN(line, " ", 2)` must give two parts).
pub fn line_timestamp(line: &[u8]) -> Option<&[u8]> {
    // A date is `yyyy-mm-ddT`: most lines fail on their first or eleventh byte, before the token is looked for.
    if !line.first().is_some_and(u8::is_ascii_digit) || line.get(10) != Some(&b'T') {
        return None;
    }
    let token = &line[..memchr::memchr(b' ', line)?];
    is_rfc3339(token).then_some(token)
}

/// Whether `s` is a date-time that Go's `time.Parse(time.RFC3339Nano, s)` accepts, which is more than RFC 3339:
/// Go tries its strict RFC 3339 parser first and falls back to the general layout parser
/// (`$GOROOT/src/time/format.go`, `Parse` and `parse`), which reads the layout's hour `15` with one or two digits
/// and accepts zone offsets up to `±24:00` and minute 60 ("as some people do write offsets of 24 hours or 60
/// minutes"). Year, month, day, minute and second take exactly their digits, the second is below 60 (no leap
/// second), the fraction after `.` or `,` takes any number of digits, the zone is `Z` or `±hh:mm`, and the date
/// must exist.
pub fn is_rfc3339(s: &[u8]) -> bool {
    let num = |at: usize, len: usize| -> Option<u32> {
        let digits = s.get(at..at + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, b: u8| s.get(i) == Some(&b);
    let (Some(year), true, Some(month), true, Some(day), true) =
        (num(0, 4), at(4, b'-'), num(5, 2), at(7, b'-'), num(8, 2), at(10, b'T'))
    else {
        return false;
    };
    // The hour: one digit, or two.
    let hour_len = if s.get(12).is_some_and(u8::is_ascii_digit) { 2 } else { 1 };
    let mut i = 11 + hour_len;
    let (Some(hour), true, Some(min), true, Some(sec)) =
        (num(11, hour_len), at(i, b':'), num(i + 1, 2), at(i + 3, b':'), num(i + 4, 2))
    else {
        return false;
    };
    // Go refuses year 0 here (its layout year is 1 to 9999).
    let date = year > 0 && jiff::civil::Date::new(year as i16, month as i8, day as i8).is_ok();
    if !date || hour > 23 || min > 59 || sec > 59 {
        return false;
    }
    i += 6;
    if matches!(s.get(i), Some(b'.' | b',')) && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i = digits(s, i + 1);
    }
    match &s[i..] {
        b"Z" => true,
        [b'+' | b'-', _, _, b':', _, _] => {
            matches!((num(i + 1, 2), num(i + 4, 2)), (Some(h), Some(m)) if h <= 24 && m <= 60)
        }
        _ => false,
    }
}

/// Formats Unix time (`secs` plus `nanos`, normalised as Go's `time.Unix` does) as Go's `time.RFC3339Nano` in UTC:
/// trailing zeros of the fraction dropped, no fraction when it is zero. `None` outside years 0001 to 9999 (Go
/// prints those, and Katib's DB manager refuses them).
pub fn format_unix_rfc3339(secs: i64, nanos: i64) -> Option<String> {
    let secs = secs.checked_add(nanos.div_euclid(1_000_000_000))?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    let epoch = jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0);
    let t = epoch.checked_add(jiff::SignedDuration::new(secs, nanos as i32)).ok()?;
    (t.year() >= 1).then(|| format!("{t}Z"))
}

/// Unix seconds of a timestamp [`is_rfc3339`] accepts (`2024-05-01T12:00:00.5Z`, `…+02:00`), `None` otherwise.
pub fn rfc3339_seconds(s: &[u8]) -> Option<f64> {
    if !is_rfc3339(s) {
        return None;
    }
    // Go reads `,` as the fraction's separator too; jiff wants `.` (copied only then: the live page's history
    // parses every kept observation's time on the read loop).
    let text = std::str::from_utf8(s).ok()?;
    let t: jiff::Timestamp =
        if text.contains(',') { text.replace(',', ".").parse().ok()? } else { text.parse().ok()? };
    Some(t.as_second() as f64 + f64::from(t.subsec_nanosecond()) / 1e9)
}

/// Converts an epoch-seconds number, as printed in a JSON line, to RFC 3339 in UTC.
///
/// `katib_quirk` reproduces Katib: the integer part and the digits after the point are read as two integers,
/// seconds and nanoseconds, for `time.Unix(sec, nsec)` (`1638422847.28721` → `…:27.000028721Z`; `-1.5` is −1 s
/// plus 5 ns; `-0.5` is 0 s plus 5 ns) – `pkg/metricscollector/v1beta1/file-metricscollector/
/// file-metricscollector.go`, `parseTimestamp`. Without it the fraction is read as a fraction (`….28721Z`).
/// The number is formatted as Go's `strconv.FormatFloat(v, 'f', -1, 64)` would print it first.
pub fn epoch_to_rfc3339(v: f64, katib_quirk: bool) -> Option<String> {
    if !v.is_finite() || v.abs() > 1e15 {
        return None;
    }
    let text = format!("{v}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let secs: i64 = int.parse().ok()?;
    let nanos: i64 = if frac.is_empty() {
        0
    } else if katib_quirk {
        frac.parse().ok()?
    } else {
        let mut padded = frac.chars().take(9).collect::<String>();
        while padded.len() < 9 {
            padded.push('0');
        }
        padded.parse().ok()?
    };
    let nanos = if text.starts_with('-') && !katib_quirk { -nanos } else { nanos };
    format_unix_rfc3339(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_as_std_parses_them_on_the_exact_path_and_off_it() {
        for s in [
            "0",
            "-0",
            "0.2351",
            "1e-3",
            ".5",
            "+1.",
            "-1.5E+2",
            "123456789012345678",
            "1234567890123456789",
            "9007199254740993",
            "9007199254740992",
            "1.7976931348623157e308",
            "4.99833e-05",
            "2.5e22",
            "1e23",
            "3.2145e-03",
            "0.1",
            "0.30000000000000004",
            "1e-22",
            "1e-23",
            "nan",
            "-inf",
            "1e",
            "1.2.3",
            "",
            "-",
            ".",
            "0.000000000000000001",
        ] {
            let want = s.parse::<f64>().ok().map(f64::to_bits);
            assert_eq!(parse_number(s.as_bytes()).map(f64::to_bits), want, "{s:?}");
        }
        assert_eq!(parse_step(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_step(b"18446744073709551616"), None);
        assert_eq!((parse_step(b" 42 "), parse_step(b"4x"), parse_step(b"")), (Some(42), None, None));
    }

    proptest::proptest! {
        #[test]
        fn decimals_parse_exactly_as_std_parses_them(
            mantissa in 0u64..1_000_000_000_000_000_000,
            point in 0usize..20,
            exp in proptest::option::of(-40i32..40),
            negative: bool,
        ) {
            let digits = mantissa.to_string();
            let at = point.min(digits.len());
            let mut s = format!("{}{}.{}", if negative { "-" } else { "" }, &digits[..at], &digits[at..]);
            if let Some(e) = exp {
                s.push_str(&format!("e{e}"));
            }
            let want = s.parse::<f64>().ok().map(f64::to_bits);
            proptest::prop_assert_eq!(parse_number(s.as_bytes()).map(f64::to_bits), want, "{}", s);
        }
    }

    #[test]
    fn numbers_in_every_printed_form_parse() {
        for (raw, v) in [
            ("0.9134", 0.9134),
            ("1e-3", 1e-3),
            (".5", 0.5),
            ("+1.", 1.0),
            ("-7.53e-05", -7.53e-05),
            ("1E0", 1.0),
            ("3.0e-02", 0.03),
            ("888", 888.0),
            (" 0.5 ", 0.5),
        ] {
            assert_eq!(parse_value(raw.as_bytes()), Some(v), "{raw}");
        }
        assert!(parse_value(b"nan").unwrap().is_nan());
        assert!(parse_value(b"NaN").unwrap().is_nan());
        assert_eq!(parse_value(b"inf"), Some(f64::INFINITY));
        assert_eq!(parse_value(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_value(b"-Infinity"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn non_numbers_do_not_parse() {
        for raw in ["", ".", "-", "e5", "1e", "0x10", "info", "nanny", "1.2.3", "Genotype(normal=[])", "1,5"] {
            assert_eq!(parse_value(raw.as_bytes()), None, "{raw}");
        }
    }

    #[test]
    fn scan_number_stops_where_the_number_does() {
        let cases: &[(&str, usize)] =
            &[("1.5e3x", 5), ("1e", 1), ("1.e5", 4), ("-.5,", 3), ("inf]", 3), ("info", 0), ("+", 0), ("12abc", 2)];
        for &(s, end) in cases {
            assert_eq!(scan_number(s.as_bytes(), 0), end, "{s}");
        }
    }

    #[test]
    fn rfc3339_accepts_what_go_accepts() {
        for ok in [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.123456Z",
            "2024-05-01T12:00:00.123456789123Z",
            "2024-05-01T12:00:00+02:00",
            "2024-05-01T12:00:00.5-07:30",
            "2024-02-29T00:00:00Z",
            "2024-03-04T7:55:08Z",
            "2024-03-04T17:55:08+24:00",
            "2024-03-04T17:55:08-23:60",
            "2024-03-04T17:55:08,5Z",
        ] {
            assert!(is_rfc3339(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "2024-05-01 12:00:00Z",
            "2024-05-01T12:00:00",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:60Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00z",
            "2024-05-01T12:00:00+25:00",
            "2024-05-01T12:00:00+23:61",
            "2024-05-01T12:5:00Z",
            "2024-05-01T012:00:00Z",
            "2024-5-01T12:00:00Z",
            "0000-02-29T00:00:00Z",
            "I0000",
        ] {
            assert!(!is_rfc3339(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn line_timestamp_is_the_first_token_verbatim() {
        assert_eq!(line_timestamp(b"2026-11-28T12:57:59Z INFO loss=1"), Some(&b"2026-11-28T12:57:59Z"[..]));
        assert_eq!(line_timestamp(b"loss=1"), None);
        assert_eq!(line_timestamp(b" 2026-11-28T12:57:59Z x"), None);
        assert_eq!(line_timestamp(b"2026-11-28T12:57:59Z"), None, "a line that is only a timestamp has none");
    }

    #[test]
    fn epoch_floats_convert_with_and_without_the_katib_quirk() {
        assert_eq!(epoch_to_rfc3339(1638422847.28721, true).unwrap(), "2021-12-02T05:27:27.000028721Z");
        assert_eq!(epoch_to_rfc3339(1638422847.28721, false).unwrap(), "2021-12-02T05:27:27.28721Z");
        assert_eq!(epoch_to_rfc3339(1638422847.0, true).unwrap(), "2021-12-02T05:27:27Z");
        assert_eq!(epoch_to_rfc3339(0.0, false).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_rfc3339(951_782_400, 0).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix_rfc3339(-1, 0).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(format_unix_rfc3339(253_402_300_799, 5).unwrap(), "9999-12-31T23:59:59.000000005Z");
        assert_eq!(format_unix_rfc3339(1_638_422_847, 280_000_000).unwrap(), "2021-12-02T05:27:27.28Z");
        assert_eq!(format_unix_rfc3339(253_402_300_800, 0), None, "year 10000");
        assert!(epoch_to_rfc3339(f64::NAN, true).is_none());
        // Katib reads sign and integer part, then the fraction's digits as positive nanoseconds.
        assert_eq!(epoch_to_rfc3339(-1.5, true).unwrap(), "1969-12-31T23:59:59.000000005Z");
        assert_eq!(epoch_to_rfc3339(-0.5, true).unwrap(), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(epoch_to_rfc3339(-1.5, false).unwrap(), "1969-12-31T23:59:58.5Z");
    }

    #[test]
    fn go_trim_space_trims_unicode_space_as_strings_trimspace() {
        assert_eq!(go_trim_space("\u{a0}1\u{3000}".as_bytes()), b"1");
        assert_eq!(go_trim_space(b"\x0b loss\t"), b"loss");
        assert_eq!(go_trim_space("\u{2000}\u{200a}x\u{85}".as_bytes()), b"x");
        assert_eq!(go_trim_space("\u{200b}x\u{feff}".as_bytes()), "\u{200b}x\u{feff}".as_bytes(), "not spaces");
        assert_eq!(go_trim_space(b"\xff 1 \xc3"), b"\xff 1 \xc3", "invalid bytes stop the trim");
        assert_eq!(go_trim_space(b"   "), b"");
        assert_eq!(go_trim_space("é\u{a0}".as_bytes()), "é".as_bytes());
    }

    #[test]
    fn go_lossy_replaces_each_invalid_byte() {
        assert_eq!(go_lossy(b"loss=1"), "loss=1");
        assert_eq!(go_lossy(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(go_lossy(b"\xc3("), "\u{fffd}(");
        assert_eq!(go_lossy(b"\xf0\x9f\x98a"), "\u{fffd}\u{fffd}\u{fffd}a", "a byte each, as Go decodes");
        assert_eq!(go_lossy(b"\xc3\xa9\xe9"), "é\u{fffd}");
    }

    #[test]
    fn steps_are_plain_integers() {
        assert_eq!(parse_step(b"120"), Some(120));
        assert_eq!(parse_step(b"1.0"), None);
        assert_eq!(parse_step(b""), None);
    }
}

#!/usr/bin/env python3
"""The hand-written table of hard cases for Katib's file metrics collector.

Each case is (id, why, metrics, filters, format, content). `content` is `str` (written as UTF-8) or `bytes` (for
invalid UTF-8). `python3 hard.py` writes hard.jsonl beside this file: one case per line in the oracle's batch
shape, {"id", "why", "metrics", "filters", "format", "content" | "content_b64"} – `content` when the bytes are valid
UTF-8, `content_b64` otherwise. Katib's answers are recorded in hard.expected.jsonl by ../run_cases.sh (UPDATE=1).

Strings below use Python escapes on purpose: '\u00a0' is visible where a literal NBSP would not be.
"""

import base64
import json
import os

T = "TEXT"
J = "JSON"
TS_LINE = "{} loss=1 accuracy=0.5\n"  # a TEXT line whose first token is the timestamp under test


def ts_text(ts):
    return TS_LINE.format(ts)


def ts_json(ts_json_literal):
    return '{"loss": "1", "timestamp": %s}\n' % ts_json_literal


CASES = []


def case(id, why, metrics, content, filters=(), format=T):
    CASES.append(dict(id=id, why=why, metrics=list(metrics), filters=list(filters), format=format, content=content))


# --------------------------------------------------------------------------------------- TEXT: the first token
# Katib: strings.SplitN(line, " ", 2), then time.Parse(time.RFC3339Nano, first) (file-metricscollector.go,
# parseLogsInTextFormat); the token is kept verbatim when it parses, else the zero time.
for id, ts, why in [
    ("ts-plain", "2024-03-04T17:55:08Z", "the plain RFC 3339 shape"),
    ("ts-nano", "2024-03-04T17:55:08.123456789Z", "nine fraction digits"),
    ("ts-offset", "2024-03-04T17:55:08.123+01:00", "fraction and a numeric offset"),
    ("ts-minus-zero", "2024-03-04T17:55:08-00:00", "-00:00 offset"),
    ("ts-one-digit-hour", "2024-03-04T7:55:08Z", "Go's layout hour `15` takes one digit"),
    ("ts-one-digit-minute", "2024-03-04T17:5:08Z", "minute `04` needs two digits"),
    ("ts-one-digit-second", "2024-03-04T17:55:8Z", "second `05` needs two digits"),
    ("ts-one-digit-month", "2024-3-04T17:55:08Z", "month `01` needs two digits"),
    ("ts-one-digit-day", "2024-03-4T17:55:08Z", "day `02` needs two digits"),
    ("ts-offset-24", "2024-03-04T17:55:08+24:00", "offset hour 24"),
    ("ts-offset-23-60", "2024-03-04T17:55:08+23:60", "offset minute 60"),
    ("ts-offset-23-59", "2024-03-04T17:55:08-23:59", "largest ordinary offset"),
    ("ts-offset-99", "2024-03-04T17:55:08+99:00", "offset hour 99"),
    ("ts-offset-one-digit", "2024-03-04T17:55:08+1:00", "one-digit offset hour"),
    ("ts-offset-no-colon", "2024-03-04T17:55:08+0100", "offset without a colon"),
    ("ts-offset-seconds", "2024-03-04T17:55:08+01:00:00", "offset with seconds"),
    ("ts-comma-fraction", "2024-03-04T17:55:08,123Z", "comma as the fraction separator"),
    ("ts-12-digits", "2024-03-04T17:55:08.123456789012Z", "12 fraction digits"),
    ("ts-10-digits", "2024-03-04T17:55:08.1234567890Z", "10 fraction digits"),
    ("ts-dot-no-digits", "2024-03-04T17:55:08.Z", "a dot without digits"),
    ("ts-fraction-letter", "2024-03-04T17:55:08.12a3Z", "a letter inside the fraction"),
    ("ts-leap-second", "2016-12-31T23:59:60Z", "leap second :60"),
    ("ts-hour-24", "2024-03-04T24:00:00Z", "hour 24"),
    ("ts-feb-29-leap", "2024-02-29T00:00:00Z", "29 February of a leap year"),
    ("ts-feb-29-common", "2023-02-29T00:00:00Z", "29 February of a common year"),
    ("ts-day-31-april", "2024-04-31T00:00:00Z", "31 April"),
    ("ts-lower-t", "2024-03-04t17:55:08Z", "lowercase t (RFC 3339 §5.6 allows it)"),
    ("ts-lower-z", "2024-03-04T17:55:08z", "lowercase z (RFC 3339 §5.6 allows it)"),
    ("ts-no-offset", "2024-03-04T17:55:08", "no offset at all"),
    ("ts-space-separator", "2024-03-04 17:55:08Z", "space instead of T: the first token is the date"),
    ("ts-year-0", "0000-01-01T00:00:00Z", "year zero"),
    ("ts-year-5-digits", "10000-01-01T00:00:00Z", "five-digit year"),
    ("ts-plus-year", "+2024-03-04T17:55:08Z", "signed year"),
    ("ts-fullwidth-digits", "\uff12\uff10\uff12\uff14-03-04T17:55:08Z", "full-width digits in the year"),
    ("ts-bom", "\ufeff2024-03-04T17:55:08Z", "a BOM before the timestamp"),
]:
    case(id, why, ["loss", "accuracy"], ts_text(ts))

case("ts-leading-space", "a leading space: the first token is empty", ["loss"], " 2024-03-04T17:55:08Z loss=1\n")
case("ts-tab-separator", "a tab after the timestamp: the first token runs to the first space", ["loss"],
     "2024-03-04T17:55:08Z\tloss=1 x\n")
case("ts-whole-line", "the whole line is a timestamp and holds no space: Katib looks for a timestamp only when "
     "the line splits in two", ["2024"], "2024-03-04T17:55:08Z\n", filters=[r"(\d{4})-(\d\d)"])
case("ts-whole-line-newline-cr", "timestamp, no space, CR at the end", ["2024"], "2024-03-04T17:55:08Z\r\n",
     filters=[r"(\d{4})-(\d\d)"])

# --------------------------------------------------------------------------------------- JSON: the timestamp key
# Katib: parseTimestamp (file-metricscollector.go): a string is kept verbatim when time.Parse(RFC3339Nano) takes
# it; a float64 is printed with strconv.FormatFloat(f, 'f', -1, 64), split at ".", and the digits after the point
# are read as an integer number of *nanoseconds*; anything else is the zero time.
for id, lit, why in [
    ("json-ts-string", '"2024-03-04T17:55:08Z"', "RFC 3339 string"),
    ("json-ts-one-digit-hour", '"2024-03-04T7:55:08Z"', "one-digit hour in a string"),
    ("json-ts-offset-24", '"2024-03-04T17:55:08+24:00"', "offset hour 24 in a string"),
    ("json-ts-comma", '"2024-03-04T17:55:08,5Z"', "comma fraction in a string"),
    ("json-ts-lower-t", '"2024-03-04t17:55:08Z"', "lowercase t in a string"),
    ("json-ts-epoch-string", '"1638422847"', "epoch seconds as a string"),
    ("json-ts-empty-string", '""', "empty string"),
    ("json-ts-epoch", "1638422847", "integral epoch seconds"),
    ("json-ts-epoch-float", "1638422847.28721", "Katib's quirk: .28721 is read as 28721 ns"),
    ("json-ts-epoch-half", "1638422847.5", ".5 s is 5 ns"),
    ("json-ts-epoch-exp", "1.638422847e9", "exponent notation, integral"),
    ("json-ts-tiny", "1e-7", "FormatFloat prints 0.0000001: 1 ns"),
    ("json-ts-tiny-fraction", "0.1", "0.1 s is 1 ns"),
    ("json-ts-long-fraction", "1638422847.1234567", "17 significant digits"),
    ("json-ts-fraction-overflows-second", "0.12345678901", "12345678901 ns is more than a second"),
    ("json-ts-subnormal", "5e-324", "the smallest float: 324 digits after the point"),
    ("json-ts-zero", "0", "the epoch"),
    ("json-ts-negative-zero", "-0.0", "negative zero"),
    ("json-ts-negative-int", "-1", "one second before the epoch"),
    ("json-ts-negative-half", "-0.5", "-0.5: FormatFloat gives -0.5, ParseInt(\"-0\") is 0, 5 ns"),
    ("json-ts-negative-float", "-1.5", "-1.5: -1 s and +5 ns"),
    ("json-ts-negative-epoch-float", "-1638422847.28721", "a negative epoch with a fraction"),
    ("json-ts-year-9999", "253402300799.5", "the last second of year 9999, plus 5 ns"),
    ("json-ts-year-10000", "253402300800", "year 10000"),
    ("json-ts-1e15", "1e15", "1e15 s (year ~31 million)"),
    ("json-ts-1e15-plus", "1000000000000001", "just above 1e15"),
    ("json-ts-1e18", "1e18", "1e18 s"),
    ("json-ts-9e18", "9.2e18", "near the int64 limit: time.Unix's internal offset overflows"),
    ("json-ts-1e19", "1e19", "beyond int64: ParseInt fails"),
    ("json-ts-minus-1e18", "-1e18", "-1e18 s"),
    ("json-ts-1e300", "1e300", "a huge float"),
    ("json-ts-true", "true", "a boolean"),
    ("json-ts-null", "null", "null"),
    ("json-ts-object", '{"s": 1}', "an object"),
    ("json-ts-array", "[1]", "an array"),
]:
    case(id, why, ["loss"], ts_json(lit), format=J)
case("json-ts-1e400", "a number beyond float64 anywhere in the line: encoding/json fails, Katib aborts", ["loss"],
     ts_json("1e400"), format=J)
case("json-ts-duplicate", "two timestamp keys: encoding/json keeps the last", ["loss"],
     '{"timestamp": "2024-03-04T17:55:08Z", "loss": "1", "timestamp": "2025-01-01T00:00:00Z"}\n', format=J)

# ------------------------------------------------------------------------------------------------ JSON lines
case("json-duplicate-key", "duplicate metric keys: encoding/json keeps the last", ["loss"],
     '{"loss": "1", "loss": "2"}\n', format=J)
case("json-duplicate-key-number-last", "the last duplicate is a number: Katib takes strings only", ["loss"],
     '{"loss": "1", "loss": 2}\n', format=J)
case("json-duplicate-key-string-last", "the first duplicate is a number, the last a string", ["loss"],
     '{"loss": 1, "loss": "2"}\n', format=J)
case("json-number-value", "numbers are not taken (Katib issue #2162)", ["loss", "acc"],
     '{"loss": 0.5, "acc": "0.9"}\n', format=J)
case("json-string-values", "string values, metric order not key order", ["loss", "acc"],
     '{"acc": "0.9", "loss": " 0.5 "}\n', format=J)
case("json-null-value", "null value", ["loss"], '{"loss": null}\n', format=J)
case("json-nested", "nested objects are not looked into", ["loss"],
     '{"metrics": {"loss": "1"}, "loss": {"v": "2"}}\n{"loss": "3"}\n', format=J)
case("json-array-value", "an array value", ["loss"], '{"loss": ["1"]}\n', format=J)
case("json-escaped-key", "an escaped key equals its decoded name", ["loss"], '{"lo\\u0073s": "1"}\n', format=J)
case("json-case-key", "keys are case-sensitive", ["loss"], '{"Loss": "1", "LOSS": "2"}\n', format=J)
case("json-null-line", "a `null` line decodes into a nil map: no rows, no error", ["loss"],
     'null\n{"loss": "1"}\n', format=J)
case("json-array-line", "an array line: encoding/json fails, Katib aborts", ["loss"],
     '[{"loss": "1"}]\n{"loss": "1"}\n', format=J)
case("json-number-line", "a number line: Katib aborts", ["loss"], '5\n{"loss": "1"}\n', format=J)
case("json-string-line", "a string line: Katib aborts", ["loss"], '"loss"\n{"loss": "1"}\n', format=J)
case("json-bom-first", "a BOM before the first object: Katib aborts", ["loss"],
     '\ufeff{"loss": "1"}\n{"loss": "2"}\n', format=J)
case("json-bom-later", "a BOM before a later object: Katib aborts", ["loss"],
     '{"loss": "1"}\n\ufeff{"loss": "2"}\n', format=J)
case("json-empty-lines", "empty lines are skipped", ["loss"], '\n{"loss": "1"}\n\n\n{"loss": "2"}\n', format=J)
case("json-blank-line-space", "a line of one space is not empty: Katib aborts", ["loss"],
     '{"loss": "1"}\n \n{"loss": "2"}\n', format=J)
case("json-blank-line-cr", "CRLF file with an empty line: that line is \\r, Katib aborts", ["loss"],
     '{"loss": "1"}\r\n\r\n{"loss": "2"}\r\n', format=J)
case("json-crlf", "CRLF endings: \\r is JSON whitespace", ["loss"], '{"loss": "1"}\r\n{"loss": "2"}\r\n', format=J)
case("json-no-final-newline", "the last line has no newline", ["loss"], '{"loss": "1"}\n{"loss": "2"}', format=J)
case("json-trailing-garbage", "text after the object: Katib aborts", ["loss"], '{"loss": "1"} x\n', format=J)
case("json-two-objects", "two objects on one line: Katib aborts", ["loss"], '{"loss": "1"}{"loss": "2"}\n',
     format=J)
case("json-python-dict", "a Python dict line: Katib aborts", ["loss"], "{'loss': '1'}\n", format=J)
case("json-not-json-later", "a bad line after a good one: Katib aborts, the good row is lost too", ["loss"],
     '{"loss": "1"}\nEpoch 1/3\n{"loss": "2"}\n', format=J)
case("json-nan-literal", "NaN is not JSON: Katib aborts", ["loss"], '{"loss": "1", "x": NaN}\n', format=J)
case("json-1e400-other-key", "a number beyond float64 under any key: Katib aborts", ["loss"],
     '{"loss": "1", "lr": 1e400}\n', format=J)
case("json-big-int-other-key", "a 30-digit integer fits a float64", ["loss"],
     '{"loss": "1", "n": 123456789012345678901234567890}\n', format=J)
case("json-invalid-utf8-value", "invalid UTF-8 inside a string value: encoding/json replaces it with U+FFFD",
     ["loss"], b'{"loss": "1\xff"}\n', format=J)
case("json-invalid-utf8-other", "invalid UTF-8 in another key's value", ["loss"],
     b'{"loss": "1", "note": "\xc3\x28"}\n', format=J)
case("json-invalid-utf8-key", "invalid UTF-8 in a key", ["loss"], b'{"lo\xffss": "0", "loss": "1"}\n', format=J)
case("json-lone-surrogate", "an escaped lone surrogate: encoding/json makes it U+FFFD", ["loss"],
     '{"loss": "1\\ud800"}\n', format=J)
case("json-nul-escape", "an escaped NUL in the value", ["loss"], '{"loss": "1\\u0000"}\n', format=J)
case("json-deep-nesting", "another key nested 200 deep (encoding/json allows 10000)", ["loss"],
     '{"loss": "1", "x": ' + "[" * 200 + "]" * 200 + "}\n", format=J)
case("json-deep-nesting-128", "another key nested 127 deep", ["loss"],
     '{"loss": "1", "x": ' + "[" * 127 + "]" * 127 + "}\n", format=J)
case("json-empty-key-metric", "the empty metric name (-m 'loss;')", ["loss", ""], '{"loss": "1", "": "2"}\n',
     format=J)
case("json-duplicate-metric-names", "the same metric twice in -m: Katib loops over the names", ["loss", "loss"],
     '{"loss": "1"}\n', format=J)
case("json-objective-missing", "the objective never appears", ["acc", "loss"], '{"loss": "1"}\n', format=J)
case("json-empty-file", "an empty file", ["loss"], "", format=J)
case("json-70k-line", "a 70 KB JSON line with the metric at its end", ["loss"],
     '{"pad": "' + "x" * 70000 + '", "loss": "1"}\n', format=J)
case("json-1200k-line", "a 1.2 MB JSON line with the metric at its end", ["loss"],
     '{"pad": "' + "x" * 1200000 + '", "loss": "1"}\n', format=J)

# --------------------------------------------------------------------------- TEXT: Unicode space and TrimSpace
# Katib trims name and value with strings.TrimSpace (Unicode White_Space: \t \n \v \f \r space U+0085 U+00A0
# U+1680 U+2000–U+200A U+2028 U+2029 U+202F U+205F U+3000), while RE2's \s is [\t\n\f\r ] only.
for id, sp, why in [
    ("trim-nbsp", "\u00a0", "NBSP U+00A0 is trimmed"),
    ("trim-vt", "\v", "vertical tab is trimmed (though \\s does not match it)"),
    ("trim-nel", "\u0085", "NEL U+0085 is trimmed"),
    ("trim-ogham", "\u1680", "U+1680 is trimmed"),
    ("trim-en-quad", "\u2000", "U+2000 is trimmed"),
    ("trim-hair", "\u200a", "U+200A is trimmed"),
    ("trim-line-sep", "\u2028", "U+2028 is trimmed"),
    ("trim-nnbsp", "\u202f", "U+202F is trimmed"),
    ("trim-ideographic", "\u3000", "U+3000 is trimmed"),
    ("trim-bom", "\ufeff", "U+FEFF is NOT space"),
    ("trim-zwsp", "\u200b", "U+200B is NOT space"),
]:
    case(id, why + " (value)", ["loss"], "loss=" + sp + "1" + sp + "\n", filters=[r"(loss)=(.*)"])
case("trim-name-nbsp", "an NBSP before the name is trimmed, so the name is the metric", ["loss"],
     "\u00a0loss=1\n", filters=[r"(\S+)=(\d+)"])
case("trim-name-vt", "a vertical tab after the name is trimmed", ["loss"], "loss\v=1\n", filters=[r"(\S+)=(\d+)"])
case("trim-name-ideographic", "U+3000 around the name", ["loss"], "x=0 \u3000loss\u3000=1\n",
     filters=[r"([^= ]+)=(\d+)"])
case("default-nbsp-before-equals", "the default filter's \\s* does not take NBSP", ["loss"], "loss\u00a0=1\n")
case("default-vt-after-equals", "the default filter's \\s* does not take \\v: the value is empty", ["loss"],
     "loss=\v1\n")

# ------------------------------------------------------------------------------------------- TEXT: RE2 filters
case("re-quote", "\\Q…\\E quotes a literal", ["a.b"], "a.b=1\n", filters=[r"(\Qa.b\E)=(\d+)"])
case("re-octal", "octal escape \\075 is '='", ["loss"], "loss=1\n", filters=[r"(loss)\075(\d+)"])
case("re-octal-short", "octal escape \\75 (two digits) is '='", ["loss"], "loss=1\n", filters=[r"(loss)\75(\d+)"])
case("re-hex-e9", "\\xe9 is U+00E9 (é) in RE2, not the byte 0xE9", ["lé"], "lé=1\n", filters=[r"(l\xe9)=(\d+)"])
case("re-hex-brace", "\\x{e9} is U+00E9", ["lé"], "lé=1\n", filters=[r"(l\x{e9})=(\d+)"])
case("re-ci-ascii", "(?i) on ASCII", ["loss"], "loss=1\n", filters=[r"(?i)(LOSS)=(\d+)"])
case("re-ci-kelvin", "(?i)k matches the Kelvin sign U+212A (simple case folding)", ["\u212aey"], "\u212aey=1\n",
     filters=[r"(?i)(key)=(\d+)"])
case("re-ci-long-s", "(?i)s matches ſ U+017F", ["loſs"], "loſs=1\n", filters=[r"(?i)(loss)=(\d+)"])
case("re-ci-e-acute", "(?i)é matches É", ["LÉ"], "LÉ=1\n", filters=[r"(?i)(lé)=(\d+)"])
case("re-dot-multibyte-name", "`.` matches one character (é is two bytes)", ["lé"], "lé=1\n",
     filters=[r"(l.)=(\d+)"])
case("re-dot-multibyte-value", "`.` takes a whole multi-byte character as the value", ["loss"], "loss=é1\n",
     filters=[r"(loss)=(.)"])
case("re-dot-emoji-value", "`.` on a 4-byte character", ["loss"], "loss=\U0001F600!\n", filters=[r"(loss)=(.)"])
case("re-pl", "\\pL: Unicode letters", ["température"], "température=21\n", filters=[r"(\pL+)=(\d+)"])
case("re-pl-ascii", "\\pL on an ASCII name", ["loss"], "loss=1\n", filters=[r"(\pL+)=(\d+)"])
case("re-p-greek", "\\p{Greek}", ["λ"], "λ=0.1\n", filters=[r"(\p{Greek}+)=([\d.]+)"])
case("re-negated-class-multibyte", "[^=] on multi-byte characters", ["ω"], "ω=2\n", filters=[r"([^=]+)=(\d)"])
case("re-posix-alpha", "[[:alpha:]]", ["loss"], "loss=1\n", filters=[r"([[:alpha:]]+)=([[:digit:].]+)"])
case("re-posix-word", "[[:word:]]", ["val_loss"], "val_loss=1\n", filters=[r"([[:word:]]+)=(\d)"])
case("re-named-groups", "named groups are positional: 1 = name, 2 = value", ["loss"], "loss=1\n",
     filters=[r"(?P<name>\w+)=(?P<value>\d+)"])
case("re-named-groups-swapped", "named groups in the other order: group 1 is still the name", ["loss"],
     "1 is loss\n", filters=[r"(?P<value>\d+) is (?P<name>\w+)"])
case("re-named-angle", "(?<name>…) without P", ["loss"], "loss=1\n", filters=[r"(?<n>\w+)=(?<v>\d+)"])
case("re-empty-value-group", "a value group that matched empty", ["loss"], "loss=x\n", filters=[r"(loss)=(\d*)"])
case("re-optional-value-group", "a value group that did not take part: Go gives \"\"", ["loss"], "loss=x\n",
     filters=[r"(loss)=(\d+)?"])
case("re-optional-name-group", "a name group that did not take part, empty metric name", ["loss", ""], "loss=1 =2\n",
     filters=[r"(loss)?=(\d+)"])
case("re-alternation", "alternatives whose groups do not take part", ["loss", "acc"], "loss=1 acc:2\n",
     filters=[r"(loss)=(\d+)|(acc):(\d+)"])
case("re-one-group", "a filter with one group: Katib skips its matches", ["loss"], "loss=1\n",
     filters=[r"(loss)=\d+"])
case("re-no-group", "a filter without groups: Katib skips its matches", ["loss"], "loss=1\n", filters=[r"loss=\d+"])
case("re-one-group-then-good", "a one-group filter and a good one: the good one's rows", ["loss"], "loss=1\n",
     filters=[r"(loss)=\d+", r"(loss)=(\d+)"])
case("re-empty-filter", "an empty filter (-f 'RE;'): it matches empty, one group, skipped", ["loss"], "loss=1\n",
     filters=[""])
case("re-two-empty-filters", "-f ';' is two empty filters in Katib: nothing matches, not the default filter",
     ["loss"], "loss=1\n", filters=["", ""])
case("re-invalid", "an invalid filter: Katib ignores regexp.Compile's error and panics on the nil *Regexp",
     ["loss"], "loss=1\n", filters=["("])
case("re-invalid-no-metric-line", "an invalid filter, but no line holds a metric: no panic", ["loss"], "acc=1\n",
     filters=["("])
case("re-repeat-1001", "{1001} is beyond RE2's repeat limit: invalid, panic", ["loss"], "loss=1\n",
     filters=[r"(loss)=(\d{1,1001})"])
case("re-repeat-1000", "{1000} is within RE2's limit", ["loss"], "loss=1\n", filters=[r"(loss)=(\d{1,1000})"])
case("re-word-boundary-angle", "\\< is a literal < in RE2", ["loss"], "<loss>=1\n", filters=[r"\<(loss)\>=(\d+)"])
case("re-class-ampersand", "[a-z&&s] is a, …, z, & and s in RE2 (no intersection)", ["loss"], "loss=1\n",
     filters=[r"([a-z&&s]+)=(\d+)"])
case("re-class-tilde", "[a-z~~s] is a class of a–z, ~ and s in RE2", ["loss"], "loss=1\n",
     filters=[r"([a-z~~s]+)=(\d+)"])
case("re-class-minus-minus", "[a-z--s] in RE2", ["loss"], "loss=1\n", filters=[r"([a-z--s]+)=(\d+)"])
case("re-brace-literal", "a { that is not a repetition is literal (Katib's documented filter)",
     ["accuracy", "loss"],
     "2024-03-04T17:55:08Z INFO {metricName: accuracy, metricValue: 0.8078};{metricName: loss, metricValue: 0.5183}\n",
     filters=[r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"])
case("re-brace-comma-first", "{,3} is literal in RE2", ["loss"], "loss{,3}=1\n", filters=[r"(loss){,3}=(\d+)"])
case("re-s-no-vt", "\\s does not match \\v", ["loss"], "loss\v=1\n", filters=[r"(loss)\s*=(\d+)"])
case("re-S-nbsp", "\\S matches NBSP", ["loss"], "loss=\u00a01\n", filters=[r"(loss)=(\S+)"])
case("re-d-arabic", "\\d is ASCII only", ["loss"], "loss=\u0663\n", filters=[r"(loss)=(\d*)"])
case("re-w-unicode", "\\w is ASCII only", ["é"], "é=1\n", filters=[r"(\w+)=(\d)"])
case("re-b-unicode", "\\b is an ASCII word boundary", ["loss"], "éloss=1\n", filters=[r"\b(loss)=(\d)"])
case("re-ungreedy", "(?U) makes + lazy", ["loss"], "loss=123\n", filters=[r"(?U)(loss)=(\d+)"])
case("re-dollar-cr", "$ does not match before \\r", ["loss"], "loss=1\r\n", filters=[r"(loss)=(\d+)$"])
case("re-multiline-flag", "(?m)^ in a filter (lines are matched one at a time)", ["loss"], "x loss=1\nloss=2\n",
     filters=[r"(?m)^(loss)=(\d+)"])
case("re-escape-underscore", "\\_ (escaped punctuation)", ["val_loss"], "val_loss=1\n",
     filters=[r"(val\_loss)=(\d)"])
case("re-escape-unknown-letter", "\\e is not an RE2 escape: invalid, panic", ["loss"], "loss=1\n",
     filters=[r"(loss)\e=(\d)"])
case("re-u-flag", "(?u) is not an RE2 flag: invalid, panic", ["loss"], "loss=1\n", filters=[r"(?u)(loss)=(\d)"])
case("re-invalid-utf8-dot", "`.` on an invalid byte takes one byte", ["loss"], b"loss=\xe91\n",
     filters=[r"(loss)=(.)"])
case("re-value-invalid-utf8", "the value holds invalid UTF-8: Katib keeps the bytes (and cannot send them)",
     ["loss"], b"loss=1\xff\n", filters=[r"(loss)=(\S+)"])
case("re-empty-matches", "a filter that matches empty strings everywhere", ["loss"], "loss=1\n",
     filters=[r"(\w*)=?(\d*)"])
case("re-filters-in-order", "every filter is applied in order, rows follow filter order", ["loss"],
     "loss=0.5 loss=0.7\n", filters=[r"(loss)=(\S+)", r"(loss)=(\d\.\d)"])
case("re-nul-value", "a NUL byte in the value", ["loss"], "loss=1\x002\n", filters=[r"(loss)=(\S+)"])

# ---------------------------------------------------------------------------------------- TEXT: default filter
for id, line, why in [
    ("def-nan", "loss=nan", "nan is not in the value grammar: the value is empty"),
    ("def-pipe-name", "a|b=1", "| is a name character"),
    ("def-double-equals", "x==3", "x==3: the value after the first = is empty"),
    ("def-spaces-exp", "loss = 1e5", "spaces around = and an exponent"),
    ("def-negative", "loss=-3", "a negative value"),
    ("def-double-minus", "loss=--3", "--3: the value is a lone -"),
    ("def-plus-dot", "loss=+.5e-3", "sign, no integer part, exponent"),
    ("def-e-no-digits", "loss=1e", "an exponent without digits is not taken"),
    ("def-two-dots", "loss=.5.5", "two dots"),
    ("def-comma", "loss=1,2", "a comma ends the value"),
    ("def-glued", "loss=1loss=2", "two pairs glued together"),
    ("def-prefix-name", "train_loss=1 loss=2", "train_loss contains loss but is not loss"),
    ("def-upper", "LOSS=1", "names are case-sensitive"),
    ("def-crlf", "loss=1\r", "a CR at the end of the line"),
    ("def-cr-redraw", "loss=1\rloss=2", "a CR inside a line does not split it"),
    ("def-leading-pipe", "|loss=1", "a leading | belongs to the name"),
    ("def-dash-name", "val-loss=1 loss=2", "- is a name character"),
    ("def-unicode-before", "lossé=1", "é is not \\w: the name is lost"),
    ("def-unicode-after", "éloss=1", "é before the name"),
    ("def-bom", "\ufeffloss=1", "a BOM before the name"),
    ("def-tab", "loss\t=\t1", "tabs around ="),
    ("def-only-sign", "loss=+", "a sign alone"),
    ("def-hex", "loss=0x1F", "hex: the value is 0"),
    ("def-inf", "loss=inf", "inf is not in the grammar"),
]:
    names = ["a|b"] if id == "def-pipe-name" else ["x"] if id == "def-double-equals" else ["loss"]
    case(id, why, names, line + "\n")
case("def-minus-3-name", "a metric named -3", ["-3"], "-3=1\n")
case("def-objective-missing", "the objective never appears: one unavailable row", ["accuracy", "loss"], "loss=1\n")
case("def-order", "rows in line order, not metric order", ["b", "a"], "a=1 b=2\n")
case("def-duplicate-metric-names", "the same metric twice in -m", ["loss", "loss"], "loss=1\n")
case("def-empty-metric-name", "an empty metric name (-m 'loss;'): every line is looked at", ["loss", ""],
     "x=1\nloss=2\n")
case("def-space-in-metric-name", "-m 'accuracy; loss': the name ' loss' is never equal to a trimmed name",
     ["accuracy", " loss"], "accuracy=1 loss=2\n")
case("def-comma-in-metric-name", "a metric name with a comma (Katib splits -m on ';' only)", ["a,b"], "a,b=1\n",
     filters=[r"([\w,]+)=(\d)"])
case("def-empty-file", "an empty file", ["loss"], "")
case("def-no-final-newline", "the last line has no newline", ["loss"], "loss=1\nloss=2")
case("def-nul", "NUL bytes in the line", ["loss"], "\x00loss=1\x00\n")
case("def-invalid-utf8", "invalid UTF-8 around the pair", ["loss"], b"\xffloss=1\xfe\n")
case("def-70k-line", "a 70 KB line with the metric at its end", ["loss"], "x" * 70000 + " loss=1\n")
case("def-70k-line-ts", "a 70 KB line starting with a timestamp, the metric at its end", ["loss"],
     "2024-03-04T17:55:08Z " + "x" * 70000 + " loss=1\n")
case("def-1200k-line", "a 1.2 MB line with the metric at its end", ["loss"], "y" * 1200000 + " loss=2\n")
case("def-after-1200k-line", "a metric line after a 1.2 MB line", ["loss"], "y" * 1200000 + "\nloss=3\n")

# ----------------------------------------------------------------------------------------------- the format flag
case("format-lowercase", "format must be exactly TEXT or JSON", ["loss"], "loss=1\n", format="text")
case("format-empty", "a missing -format is the empty string: Katib errors", ["loss"], "loss=1\n", format="")


def main():
    seen = set()
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "hard.jsonl"), "w", encoding="utf-8") as out:
        for c in CASES:
            assert c["id"] not in seen, c["id"]
            seen.add(c["id"])
            content = c.pop("content")
            raw = content.encode("utf-8") if isinstance(content, str) else content
            try:
                c["content"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                c["content_b64"] = base64.b64encode(raw).decode("ascii")
            out.write(json.dumps(c, ensure_ascii=True) + "\n")
    print(f"{len(CASES)} cases written to hard.jsonl")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A seeded generator of Katib collector inputs that mix the hard shapes of cases/hard.py.

    python3 gen.py --seed 1 --count 3000 > generated.jsonl

Each line is a case in the oracle's batch shape ({"id", "metrics", "filters", "format", "content" |
"content_b64"}). The same seed gives the same cases on every machine (only `random.Random(seed)` is used).
"""

import argparse
import base64
import json
import random

NAMES = ["loss", "accuracy", "val-loss", "a|b", "lé", "\u212aey", "x", "train_loss", "Loss", "acc"]
TIMESTAMPS = [
    "2024-03-04T17:55:08Z", "2024-03-04T17:55:08.123456789Z", "2024-03-04T7:55:08Z", "2024-03-04T17:55:08+24:00",
    "2024-03-04T17:55:08+23:60", "2024-03-04T17:55:08,5Z", "2024-03-04T17:55:08.123456789012Z",
    "2016-12-31T23:59:60Z", "2024-03-04t17:55:08Z", "2024-03-04T17:55:08z", "2024-03-04T17:55:08",
    "2024-03-04T17:55:08-00:00", "2023-02-29T00:00:00Z", "2024-03-04T17:5:08Z", "0000-01-01T00:00:00Z",
    "\ufeff2024-03-04T17:55:08Z", "I0304", "[2024-03-04 17:55:08]", "",
]
VALUES = [
    "1", "-3", ".5", "0.25", "1e5", "1E-3", "+.5e-3", "nan", "inf", "", "+", "-", "--3", "1,2", "1e", ".5.5",
    "0x1F", "é", "\u00a01", "\v1", "1\u3000", "\u0663", "12abc", "Genotype(x=1)",
]
SPACES = ["", " ", "  ", "\t", "\u00a0", "\v", "\u2000", "\u3000", "\u0085", "\ufeff", "\u200b", "\f"]
SEPARATORS = [" ", " ", " ", ", ", "\t", " | ", "\r", ";", " \u3000", "\u00a0"]
NOISE = ["Epoch", "1/3", "INFO", "step", "x==3", "lr=[0.1]", "{", "}", "é", "\u212a", "=", "==", "\\", "'"]
BAD_BYTES = [b"\xff", b"\xc3", b"\xe9", b"\xc3\x28", b"\x00"]
FILTERS = [
    r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)",
    r"(\S+)=(\S+)",
    r"([^= ]+)=(.*)",
    r"(loss)=(.*)",
    r"(.*?)=(\d+)",
    r"(l.)=(\d+)",
    r"(?i)(key|loss)=(\S*)",
    r"(\pL+)=(\d+)",
    r"(loss)=(\d+)?",
    r"(\w+)\s*:\s*((-?\d+)(\.\d+)?)",
    r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}",
    r"(loss)\075(\d+)",
    r"(\Qa|b\E)=(\d+)",
    r"([a-z&&s]+)=(\d+)",
    r"(loss)=\d+",
    r"(\w+)=(.)",
    r"(\S+)\s*=\s*(\S+)",
]
JSON_TS = [
    '"2024-03-04T17:55:08Z"', '"2024-03-04T7:55:08Z"', '"2024-03-04t17:55:08Z"', '"1638422847"', '""',
    "1638422847", "1638422847.28721", "-1.5", "-0.5", "0.1", "1e15", "1e18", "1e19", "253402300800", "true",
    "null", "[1]",
]
JSON_VALUES = ['"1"', '"0.5"', '" 2 "', '""', '"nan"', "0.5", "null", '{"v": "1"}', '["1"]', '"é"', '"1\\u0000"',
               '"\\ud800"', "true"]


def sp(r):
    return "" if r.random() < 0.6 else r.choice(SPACES)


def pick_name(r, names):
    roll = r.random()
    return names[0] if roll < 0.45 else r.choice(names) if roll < 0.8 else r.choice(NAMES)


def text_line(r, names):
    parts = []
    if r.random() < 0.4:
        parts.append(r.choice(TIMESTAMPS) + " ")
    for _ in range(r.randint(1, 4)):
        kind = r.random()
        if kind < 0.6:
            parts.append(sp(r) + pick_name(r, names) + sp(r) + r.choice(["=", "=", "=", ":", "=="])
                         + sp(r) + r.choice(VALUES) + sp(r))
        elif kind < 0.85:
            parts.append(r.choice(NOISE))
        else:
            parts.append("{metricName: %s, metricValue: %s}" % (pick_name(r, names), r.choice(VALUES)))
        parts.append(r.choice(SEPARATORS))
    line = "".join(parts).encode("utf-8")
    if r.random() < 0.08:
        at = r.randint(0, len(line))
        line = line[:at] + r.choice(BAD_BYTES) + line[at:]
    if r.random() < 0.01:
        line = b"x" * 70000 + b" " + line
    return line


def json_line(r, names):
    roll = r.random()
    if roll < 0.03:
        return r.choice([b"", b" ", b"\r", b"null", b"[1]", b"Epoch 1/3", b"\xef\xbb\xbf{}", b'{"loss": "1"} x'])
    entries = []
    for _ in range(r.randint(0, 4)):
        key = pick_name(r, names)
        entries.append((key, r.choice(JSON_VALUES)))
    if r.random() < 0.5:
        entries.insert(r.randint(0, len(entries)), ("timestamp", r.choice(JSON_TS)))
    if r.random() < 0.8:  # most lines have each key once; duplicates are a class of their own
        entries = list({k: (k, v) for k, v in entries}.values())
    body = "{" + ", ".join(json.dumps(k) + ": " + v for k, v in entries) + "}"
    line = body.encode("utf-8")
    if r.random() < 0.03:
        at = line.find(b'"', 2)
        if at > 0:
            line = line[:at] + r.choice(BAD_BYTES[:4]) + line[at:]
    if line and r.random() < 0.1:
        line += b"\r"
    return line


def generate(seed, count):
    r = random.Random(seed)
    for i in range(count):
        fmt = "JSON" if r.random() < 0.25 else "TEXT"
        names = r.sample(NAMES, r.randint(1, 3))
        filters = []
        if fmt == "TEXT" and r.random() < 0.45:
            filters = r.sample(FILTERS, r.randint(1, 2))
        lines = [(json_line if fmt == "JSON" else text_line)(r, names) for _ in range(r.randint(0 if r.random() < 0.02 else 1, 6))]
        content = b"\n".join(lines) + (b"\n" if r.random() < 0.9 else b"")
        case = {"id": f"gen-{seed}-{i}", "metrics": names, "filters": filters, "format": fmt}
        try:
            case["content"] = content.decode("utf-8")
        except UnicodeDecodeError:
            case["content_b64"] = base64.b64encode(content).decode("ascii")
        yield case


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=3000)
    a = p.parse_args()
    for c in generate(a.seed, a.count):
        print(json.dumps(c, ensure_ascii=True))


if __name__ == "__main__":
    main()

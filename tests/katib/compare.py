#!/usr/bin/env python3
"""Runs cases through Katib's own collector (the oracle) and through trialtail, and reports every disagreement.

    python3 compare.py --oracle BIN --trialtail BIN [--cases FILE]... [--generate N --seed S]
                       [--out diffs.jsonl] [--minimize K]

Katib's answers come from ONE `oracle -batch` process. trialtail runs once per case:
`trialtail run --katib-semantics --output json --metrics=a,b [--filter=RE]... [--format json] FILE`.
A case whose metric names trialtail's --metrics cannot carry (empty, with `,`/`;`, or with surrounding white
space – it splits on both and trims) or whose format is neither TEXT nor JSON is counted as "inexpressible".

Each disagreement gets a signature:
  katib-error / katib-panic   Katib aborts the whole collection, trialtail reports rows
  trialtail-refused           trialtail exits non-zero (a filter it does not accept, …), Katib reports rows
  both-fail                   both refuse (Katib errors, trialtail exits non-zero)
  rows:count|name|value|time  both report, the rows differ (the first field that differs, row by row)
--minimize K shrinks up to K cases per signature (lines, then bytes) while the signature stays the same, and
prints the minimal inputs. Exit status: 0 when nothing disagrees, 1 otherwise.
"""

import argparse
import base64
import collections
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen  # noqa: E402


def content_of(case):
    if "content_b64" in case:
        return base64.b64decode(case["content_b64"])
    return case["content"].encode("utf-8")


def with_content(case, raw):
    c = {k: v for k, v in case.items() if k not in ("content", "content_b64")}
    try:
        c["content"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        c["content_b64"] = base64.b64encode(raw).decode("ascii")
    return c


class Oracle:
    """One long-lived `oracle -batch` process: a case in, its answer out."""

    def __init__(self, path):
        self.p = subprocess.Popen([path, "-batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  encoding="utf-8")

    def ask(self, case):
        self.p.stdin.write(json.dumps(case, ensure_ascii=True) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def katib_outcome(answer):
    if answer.get("kind"):
        return {"fail": answer["kind"], "error": answer["error"]}
    rows = []
    for r in answer["rows"]:
        value = r["value"]
        if "value_b64" in r:  # compare as trialtail prints it: maximal invalid sequences become one U+FFFD
            value = base64.b64decode(r["value_b64"]).decode("utf-8", "replace")
        name = base64.b64decode(r["name_b64"]).decode("utf-8", "replace") if "name_b64" in r else r["name"]
        rows.append((name, value, r["time_stamp"]))
    return {"rows": rows, "wire_error": answer.get("wire_error")}


def expressible(case):
    if case["format"] not in ("TEXT", "JSON"):
        return False
    return all(m and m == m.strip() and "," not in m and ";" not in m for m in case["metrics"])


def trialtail_argv(binary, case, path):
    argv = [binary, "run", "--katib-semantics", "--output", "json", "--no-progress", "--quiet",
            "--metrics=" + ",".join(case["metrics"])]
    argv += ["--filter=" + f for f in case["filters"]]
    if case["format"] == "JSON":
        argv += ["--format", "json"]
    return argv + [path]


def trialtail_outcome(binary, case, workdir):
    path = os.path.join(workdir, "metrics.log")
    with open(path, "wb") as f:
        f.write(content_of(case))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALTAIL_")}
    p = subprocess.run(trialtail_argv(binary, case, path), capture_output=True, env=env, timeout=120)
    if p.returncode != 0:
        return {"fail": f"exit {p.returncode}", "error": p.stderr.decode("utf-8", "replace").strip()[-500:]}
    rows = []
    for line in p.stdout.decode("utf-8", "replace").split("\n"):
        if line.strip():
            o = json.loads(line)
            rows.append((o["metric"], o["raw"], o["timestamp"]))
    return {"rows": rows}


def signature(k, t):
    if "fail" in k and "fail" in t:
        return "both-fail"
    if "fail" in k:
        return "katib-" + k["fail"]
    if "fail" in t:
        return "trialtail-refused"
    a, b = k["rows"], t["rows"]
    for x, y in zip(a, b):
        if x != y:
            return "rows:" + ("name" if x[0] != y[0] else "value" if x[1] != y[1] else "time")
    if len(a) != len(b):
        return "rows:count"
    return None


def minimize(case, sig, judge, budget=600):
    """Shrinks the case's content (whole lines, then byte runs) while judge(case) keeps returning sig, with at most
    `budget` judgements (a 70 KB line that must stay long cannot be shrunk byte by byte)."""
    raw = content_of(case)
    calls = [0]

    def same(r):
        calls[0] += 1
        return calls[0] <= budget and judge(with_content(case, r)) == sig

    lines = raw.split(b"\n")
    i = 0
    while i < len(lines) and len(lines) > 1:
        trial = lines[:i] + lines[i + 1:]
        if same(b"\n".join(trial)):
            lines = trial
        else:
            i += 1
    raw = b"\n".join(lines)
    chunk = max(1, len(raw) // 2)
    while chunk >= 1:
        i = 0
        while i < len(raw):
            trial = raw[:i] + raw[i + chunk:]
            if trial != raw and same(trial):
                raw = trial
            else:
                i += chunk
        chunk //= 2
    return with_content(case, raw)


# ------------------------------------------------------------------------------------------------- --explain
# Each known class of disagreement (DIFFERENCES.md) has a sanitizer that removes its cause from a case and keeps
# the rest. A disagreement is attributed to the first sanitizer after which (applied cumulatively, in this order)
# Katib and trialtail agree; one that survives them all is "unexplained" and needs a look.

UNICODE_SPACE = "\v\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
                "\u2028\u2029\u202f\u205f\u3000"
# RE2 syntax that trialtail refuses or reads differently; filters with fewer than two groups; optional groups.
import re  # noqa: E402
RE2_ONLY = re.compile(r"\\Q|\\[0-7]|\\x\{|\\x[89a-fA-F]|\\p|\\P|\\<|\\>|&&|~~|--|\(\?u|\{\d*,?\d{4,}\}|\\e")


def _lines(case):
    return content_of(case).split(b"\n")


def _join(case, lines):
    return with_content(case, b"\n".join(lines))


def _filters(case, keep):
    c = dict(case)
    c["filters"] = [f for f in case["filters"] if keep(f)]
    return c


def _groups(f):
    """The filter's group count as Python's re reads it (0 when re refuses it: invalid, or syntax of RE2's)."""
    try:
        return re.compile(f).groups
    except re.error:
        return 0


def _json_ok(line):
    """A line Go's encoding/json decodes into a map[string]interface{}: an object (or null), finite numbers."""
    text = line.strip(b" \t\r\n")
    if not line:
        return True
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, UnicodeDecodeError):
        return False
    if not text or (obj is not None and not isinstance(obj, dict)):
        return False
    return "inf" not in json.dumps(obj, allow_nan=True).lower().replace('"inf"', "")


def _json_unique(line):
    seen = []

    def hook(pairs):
        keys = [k for k, _ in pairs]
        seen.append(len(keys) != len(set(keys)))
        return dict(pairs)
    try:
        json.loads(line.decode("utf-8", "replace"), object_pairs_hook=hook)
    except ValueError:
        return True
    return not any(seen)


TS_TOKEN = re.compile(rb"^\d{4}-\d\d-\d\d[Tt]\d{1,2}:\d\d:\d\d")


def _text_ts(line):
    token, sep, rest = line.partition(b" ")
    if TS_TOKEN.match(token) or (not sep and TS_TOKEN.match(line)):
        return b"TS " + rest if sep else b"TS"
    return line


def _json_ts(line):
    try:
        obj = json.loads(line.decode("utf-8"))
    except ValueError:
        return line
    if isinstance(obj, dict) and "timestamp" in obj:
        ts = obj["timestamp"]
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) and (ts < 0 or abs(ts) > 1e15):
            return re.sub(rb'"timestamp"\s*:\s*[-+0-9.eE]+', b'"timestamp": null', line)
        if isinstance(ts, str) and TS_TOKEN.match(ts.encode()):
            return re.sub(rb'"timestamp"\s*:\s*"[^"]*"', b'"timestamp": null', line)
    return line


SANITIZERS = [
    ("filter-syntax: RE2 syntax trialtail refuses or reads otherwise, filters without two groups",
     lambda c: _filters(c, lambda f: not RE2_ONLY.search(f) and _groups(f) >= 2)),
    ("optional-groups: a name or value group that did not take part",
     lambda c: _filters(c, lambda f: ")?" not in f and "|" not in f.replace("[\\w|-]", "").replace("\\Qa|b\\E", ""))),
    ("invalid-utf8: invalid UTF-8 or a lone surrogate in a JSON line",
     lambda c: _join(c, [re.sub(rb"\\ud[89a-f][0-9a-f]{2}", b"_", line).decode("utf-8", "replace")
                         .replace("\ufffd", "_").encode() for line in _lines(c)])),
    ("json-abort: a JSON line that is not an object, or holds a non-finite number",
     lambda c: _join(c, [line for line in _lines(c) if _json_ok(line)]) if c["format"] == "JSON" else c),
    ("json-duplicate-keys: encoding/json keeps the last duplicate, trialtail the first",
     lambda c: _join(c, [line for line in _lines(c) if _json_unique(line)]) if c["format"] == "JSON" else c),
    ("long-lines: lines over trialtail's --max-line-bytes (64 KiB)",
     lambda c: _join(c, [line for line in _lines(c) if len(line) < 65536])),
    ("timestamps: shapes Go's time.Parse takes and trialtail does not; epoch floats < 0 or > 1e15",
     lambda c: _join(c, [(_json_ts if c["format"] == "JSON" else _text_ts)(line) for line in _lines(c)])),
    ("unicode-space: strings.TrimSpace trims \\v and Unicode spaces",
     lambda c: with_content(c, content_of(c).decode("utf-8", "replace").translate(
         {ord(ch): None for ch in UNICODE_SPACE}).encode())),
    ("unicode-matching: ., \\S, [^…], (?i) on non-ASCII characters (RE2 is Unicode-aware)",
     lambda c: with_content(c, content_of(c).decode("utf-8", "replace").encode("ascii", "ignore"))),
]


def explain(case, judge):
    for name, fix in SANITIZERS:
        case = fix(case)
        if judge(case) is None:
            return name.split(":")[0]
    return "unexplained"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--oracle", required=True)
    p.add_argument("--trialtail", required=True)
    p.add_argument("--cases", action="append", default=[])
    p.add_argument("--generate", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="write every disagreement here, one JSON line each")
    p.add_argument("--minimize", type=int, default=0, metavar="K")
    p.add_argument("--explain", action="store_true", help="attribute every disagreement to a known class")
    a = p.parse_args()

    cases = []
    for f in a.cases:
        with open(f, encoding="utf-8") as fh:
            cases += [json.loads(line) for line in fh if line.strip()]
    if a.generate:
        cases += list(gen.generate(a.seed, a.generate))

    oracle = Oracle(a.oracle)
    workdir = tempfile.mkdtemp(prefix="katib-compare-")
    counts = collections.Counter()
    by_sig = collections.defaultdict(list)
    by_class = collections.defaultdict(list)

    def judge(c):
        if not expressible(c):
            return None
        return signature(katib_outcome(oracle.ask(c)), trialtail_outcome(a.trialtail, c, workdir))

    out = open(a.out, "w", encoding="utf-8") if a.out else None
    for case in cases:
        k = katib_outcome(oracle.ask(case))
        if not expressible(case):
            counts["inexpressible"] += 1
            continue
        t = trialtail_outcome(a.trialtail, case, workdir)
        sig = signature(k, t)
        counts[sig or "agree"] += 1
        if sig:
            by_sig[sig].append(case["id"])
            cls = explain(case, judge) if a.explain else None
            if cls:
                by_class[cls].append(case["id"])
            if out:
                out.write(json.dumps({"id": case["id"], "signature": sig, "class": cls, "why": case.get("why"),
                                      "katib": k, "trialtail": t, "case": case}, ensure_ascii=False) + "\n")
            if len(by_sig[sig]) <= a.minimize:
                small = minimize(case, sig, judge)
                print(f"--- {sig}: {case['id']} minimized", file=sys.stderr)
                print(json.dumps({"signature": sig, "case": small,
                                  "katib": katib_outcome(oracle.ask(small)),
                                  "trialtail": trialtail_outcome(a.trialtail, small, workdir)},
                                 ensure_ascii=False), file=sys.stderr)
    oracle.close()
    if out:
        out.close()
    total = sum(counts.values())
    print(f"{total} cases: " + ", ".join(f"{n} {k}" for k, n in counts.most_common()))
    for sig, ids in sorted(by_sig.items()):
        shown = ", ".join(ids[:12]) + (" …" if len(ids) > 12 else "")
        print(f"  {sig}: {len(ids)}: {shown}")
    if a.explain:
        print("by class (the first sanitizer after which both agree):")
        for cls, ids in sorted(by_class.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(ids[:8]) + (" …" if len(ids) > 8 else "")
            print(f"  {cls}: {len(ids)}: {shown}")
    return 1 if by_sig else 0


if __name__ == "__main__":
    sys.exit(main())

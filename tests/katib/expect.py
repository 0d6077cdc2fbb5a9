#!/usr/bin/env python3
"""Katib's recorded answers to the hard cases: checks them, or records them again with UPDATE=1.

    python3 expect.py --oracle BIN [--cases cases/hard.jsonl] [--expected cases/hard.expected.jsonl]
    UPDATE=1 python3 expect.py --oracle BIN      # rewrite the expected file from the oracle's answers

The expected file holds the oracle's answer lines verbatim, one per case, in case order. Without UPDATE the
oracle's answers must equal it line for line (a new Katib version or Go toolchain that answers differently shows
up here); the ids that differ are printed and the exit status is 1.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--oracle", default=os.environ.get("ORACLE"), help="the oracle binary (default: $ORACLE)")
    p.add_argument("--cases", default=os.path.join(HERE, "cases", "hard.jsonl"))
    p.add_argument("--expected", default=os.path.join(HERE, "cases", "hard.expected.jsonl"))
    a = p.parse_args()
    if not a.oracle:
        p.error("--oracle or $ORACLE is required (tests/katib/rig.sh build prints it)")

    with open(a.cases, "rb") as f:
        cases = f.read()
    answers = subprocess.run([a.oracle, "-batch"], input=cases, capture_output=True, check=True).stdout
    got = answers.decode("utf-8").splitlines()
    n_cases = sum(1 for line in cases.splitlines() if line.strip())
    if len(got) != n_cases:
        sys.exit(f"expect: {n_cases} cases but {len(got)} answers")

    if os.environ.get("UPDATE"):
        with open(a.expected, "w", encoding="utf-8") as f:
            f.write("\n".join(got) + "\n")
        print(f"expect: recorded Katib's answers to {len(got)} cases in {os.path.relpath(a.expected)}")
        return 0

    with open(a.expected, encoding="utf-8") as f:
        want = f.read().splitlines()
    differ = [json.loads(g).get("id") for g, w in zip(got, want) if g != w]
    if len(want) != len(got):
        differ.append(f"<{len(want)} expected answers for {len(got)} cases>")
    if differ:
        print("expect: Katib now answers differently for: " + ", ".join(map(str, differ)))
        print("expect: if that is intended, record the new answers with UPDATE=1")
        return 1
    print(f"expect: Katib's answers to {len(got)} hard cases are as recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())

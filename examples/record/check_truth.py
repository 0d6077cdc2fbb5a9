"""Check every examples/logs/frameworks/*.truth.json (or the names given) against its log: each metric's printed texts,
placed in its printed_as template, must occur in the log in the listed order, not followed by another digit."""

import glob
import json
import os
import sys

LOGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "logs", "frameworks")


def check(truth_path):
    truth = json.load(open(truth_path))
    log = open(os.path.join(LOGS, truth["log"]), "rb").read().decode("utf-8", "replace")
    problems, n = [], 0
    for metric, obs in truth["metrics"].items():
        template = truth["printed_as"][metric]
        pos = 0
        for step, text in obs:
            needle = template.format(text)
            i = log.find(needle, pos)
            while i >= 0 and i + len(needle) < len(log) and log[i + len(needle)].isdigit():
                i = log.find(needle, i + 1)
            if i < 0:
                problems.append(f"{metric} step {step}: {needle!r} not found after offset {pos}")
                break
            pos = i + 1
            n += 1
    return n, problems


def main(names):
    paths = [os.path.join(LOGS, f"{n}.truth.json") for n in names] or sorted(glob.glob(os.path.join(LOGS, "*.truth.json")))
    bad = 0
    for p in paths:
        n, problems = check(p)
        print(f"{'ok ' if not problems else 'BAD'} {os.path.basename(p)}: {n} printed values found")
        for pr in problems:
            print("    " + pr)
        bad += bool(problems)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Katib's reports on the committed fixtures: katib_expected.jsonl, and checking it.

    katib_cases.py write            # run the oracle on every case, (re)write katib_expected.jsonl
    katib_cases.py check            # run it again and compare with katib_expected.jsonl
    katib_cases.py check --tf real  # the same with the real TensorFlow (needs tensorflow==2.16.1)

Every case runs Katib's collector code (through katib_oracle.py) with the working directory
tests/tfevents/fixtures, TZ=UTC, `-path` and `-m` as listed below, and the 'unavailable' line's clock
fixed at epoch 0. katib_expected.jsonl has one line per case:

    {"path": "multi_run", "metrics": "train/accuracy", "logs": [{"name", "value", "time_stamp", "file"}, ...]}

`file` is the event file a line came from, as Katib names it (the path joined with os.walk's names);
null for the 'unavailable' line. The lines of one file come in a fixed order; the order of the files is
os.walk's, i.e. the directory order of the file system, which differs between machines: compare the
lines grouped by file (as `check` does), or sort the files the way your own walk visits them.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
EXPECTED = os.path.join(HERE, "katib_expected.jsonl")

# (path, metrics): what each case shows is in README.md.
CASES = [
    ("tf1_simple_value", "accuracy"),
    ("tf1_simple_value", "loss"),
    ("tf1_simple_value", "accuracy_top5"),
    ("tf1_simple_value", "loss;accuracy"),
    ("tf1_simple_value", "missing;accuracy"),
    ("tf1_simple_value", ""),
    ("tf1_simple_value", "tf1_simple_value/loss"),
    ("tf1_simple_value", "loss/train"),
    ("tf1_filewriter", "train/accuracy;train/loss"),
    ("tf1_filewriter", "accuracy"),
    ("restart_sessionlog", "accuracy"),
    ("restart_sessionlog", "accuracy_tensor"),
    ("tf2_tensor", "accuracy;loss"),
    ("tf2_tensor", "train/tricky"),
    ("tf2_tensor", "train/acc_"),
    ("tf2_tensor", "validation/accuracy"),
    ("tf2_tensor", "train/accuracy"),
    ("tf2_tensor", "loss_note"),
    ("keras_fit", "validation/epoch_accuracy;train/epoch_accuracy;epoch_loss"),
    ("keras_fit", "validation/evaluation_loss_vs_iterations"),
    ("torch", "accuracy"),
    ("torch", "acc_val/acc;acc_train/acc"),
    ("torch", "hp/hp_accuracy"),
    ("torch", "tricky_new"),
    ("tensorboard_writer", "acc_"),
    ("tensorboard_writer", "准确率"),
    ("multi_run", "accuracy"),
    ("multi_run", "train/accuracy"),
    ("multi_run", "validation/accuracy"),
    ("multi_run", "exp1/train/accuracy"),
    ("multi_run", "runs/exp1/train/accuracy"),
    ("multi_run", "rain/accuracy"),
    ("multi_run", "multi_run/accuracy"),
    ("multi_run/", "loss"),
    ("restart", "accuracy"),
    ("mixed_plugins", "accuracy;loss"),
    ("mixed_plugins", "loss"),
    ("damaged/truncated", "accuracy;loss"),
    ("damaged/bad_crc", "accuracy;loss"),
    ("damaged/bad_length", "accuracy;loss"),
    ("damaged/bad_proto", "accuracy;loss"),
    ("does_not_exist", "accuracy"),
]


def run_all(tf):
    os.environ["TZ"] = "UTC"
    import time

    time.tzset()
    sys.path.insert(0, HERE)
    import katib_oracle

    katib_oracle.load(tf)
    import logging

    logging.disable(logging.WARNING)  # EventAccumulator's purge warnings; Katib's "will be parsed"
    cwd = os.getcwd()
    os.chdir(FIXTURES)
    try:
        return [
            {"path": p, "metrics": m, "logs": katib_oracle.report(p, m, now=0, with_file=True)}
            for p, m in CASES
        ]
    finally:
        os.chdir(cwd)


def by_file(logs):
    groups = {}
    for line in logs:
        groups.setdefault(line["file"], []).append(line)
    return groups


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=("write", "check"))
    ap.add_argument("--tf", choices=("shim", "real"), default="shim")
    a = ap.parse_args()
    got = run_all(a.tf)
    if a.cmd == "write":
        with open(EXPECTED, "w") as f:
            for case in got:
                f.write(json.dumps(case, ensure_ascii=False) + "\n")
        print(f"{len(got)} cases, {sum(len(c['logs']) for c in got)} lines -> {EXPECTED}")
        return 0
    want = [json.loads(line) for line in open(EXPECTED)]
    passed = failed = 0
    for w, g in zip(want, got):
        name = f"{w['path']} -m {w['metrics']!r}"
        if (w["path"], w["metrics"]) != (g["path"], g["metrics"]):
            print(f"FAIL {name}: the case list changed; run `katib_cases.py write`")
            failed += 1
        elif by_file(w["logs"]) != by_file(g["logs"]):
            print(f"FAIL {name}")
            for f in sorted(set(by_file(w["logs"])) | set(by_file(g["logs"])), key=str):
                a_, b_ = by_file(w["logs"]).get(f, []), by_file(g["logs"]).get(f, [])
                if a_ != b_:
                    print(f"  {f}: expected {len(a_)} lines, got {len(b_)}; first difference:")
                    for x, y in zip(a_ + [None] * len(b_), b_ + [None] * len(a_)):
                        if x != y:
                            print(f"    expected {x}\n    got      {y}")
                            break
            failed += 1
        else:
            passed += 1
    failed += abs(len(want) - len(got))
    print(f"katib cases ({a.tf} TF): {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

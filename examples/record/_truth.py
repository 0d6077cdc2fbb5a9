"""Shared helper: write examples/logs/frameworks/<name>.truth.json next to the log a record script produces.

A record script runs with its stdout+stderr redirected into examples/logs/frameworks/<name>.log, so it cannot read its
own log; it writes the truth from the values the training process held in memory, formatted the way the
framework prints them. check_truth.py then verifies every printed text against the log.
"""

import json
import os
import platform
import re
from importlib import metadata

LOGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "logs", "frameworks")


def versions(*packages):
    out = {}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def write(name, *, framework, packages, script, step, metrics, printed_as, metric_lines, recorded=None,
          params=None, not_metrics=None, notes=None, extra=None, venv="frameworks", args="", command=None):
    """metrics: {metric: [[step, "printed text"], ...]} in log order (every printed occurrence).
    printed_as: {metric: template}, how one value appears in the log ("loss: {}"), for check_truth.py.
    metric_lines: {metric: "which printed lines carry it"}. recorded: {metric: [[step, float], ...]}, the
    values the training process itself recorded (history, log_history, evals_result, ...)."""
    doc = {
        "log": f"{name}.log",
        "framework": framework,
        "versions": versions(*packages),
        "python": platform.python_version(),
        "script": f"examples/record/{script}",
        "command": command or f"cd examples/record && /work/venvs/{venv}/bin/python -u {script}"
                              f"{' ' + args if args else ''} > ../logs/frameworks/{name}.log 2>&1",
        "step": step,
        "metrics": metrics,
        "printed_as": printed_as,
        "metric_lines": metric_lines,
    }
    if recorded is not None:
        doc["recorded"] = recorded
    doc["params"] = params or {}
    doc["not_metrics"] = not_metrics or {}
    if notes:
        doc["notes"] = notes
    if extra:
        doc.update(extra)
    path = os.path.join(LOGS, f"{name}.truth.json")
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    # one [step, value] pair (and any other list of plain values) per line
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s*\n\s*", ", ", m.group(1)) + "]", text)
    with open(path, "w") as f:
        f.write(text + "\n")


def series(values, start=1):
    """[[start, v0], [start+1, v1], ...]"""
    return [[i, v] for i, v in enumerate(values, start)]

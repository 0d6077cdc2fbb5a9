#!/usr/bin/env python3
"""End to end through the real katib-db-manager: what Katib's collector would leave in the database against what
trialtail's drop-in mode leaves there, case by case.

    eval "$(tests/katib/rig.sh start)"   # or: set -a; . $KATIB_RIG_DIR/env; set +a
    python3 tests/katib/dropin_e2e.py --trialtail target/debug/trialtail [--cases FILE]... [--out diffs.jsonl]
    tests/katib/rig.sh stop "$KATIB_RIG_DIR"

Katib's side: the oracle's rows for the case, sent as Katib's collector sends them (one ReportObservationLog with
every row, cmd/metricscollector/v1beta1/file-metricscollector/main.go, reportMetrics) by dbclient, then read back
with GetObservationLog. When the oracle errors or panics, Katib's collector exits without reporting (klog.Fatalf);
when protobuf cannot marshal the rows (invalid UTF-8), the report fails at the client.
trialtail's side: the binary in drop-in mode with the webhook's arguments (`-t -m -o-type -s-db -path [-f] -format`,
plus `-main-pid` of a finished process whose marker says completed, `-listen off`), then GetObservationLog.
Rows are compared as multisets: GetObservationLog orders by time only, so ties come back in no fixed order.
Needs KATIB_DB_MANAGER_ADDR, ORACLE and DBCLIENT in the environment (rig.sh start prints them).
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare import Oracle, content_of  # noqa: E402

ENDED = "999999999"


def get_rows(dbclient, addr, trial):
    p = subprocess.run([dbclient, "-addr", addr, "get", "-trial", trial], capture_output=True, text=True)
    if p.returncode != 0:
        return {"fail": "get", "error": p.stdout.strip()}
    return {"rows": sorted(tuple(json.loads(line).values()) for line in p.stdout.split("\n") if line.strip())}


def katib_side(oracle, dbclient, addr, case, trial):
    # The filters as Katib's collector main gets them from the same -f argument: split on ";" when non-empty.
    joined = ";".join(case["filters"])
    ans = oracle.ask(dict(case, filters=joined.split(";") if joined else []))
    if ans.get("kind"):
        return {"fail": "collector exits: " + ans["kind"], "error": ans["error"]}
    if ans.get("wire_error"):
        return {"fail": "report not sent", "error": ans["wire_error"]}
    rows = "".join(json.dumps({k: r[k] for k in ("name", "value", "time_stamp")}) + "\n" for r in ans["rows"])
    p = subprocess.run([dbclient, "-addr", addr, "report", "-trial", trial], input=rows, capture_output=True,
                       text=True)
    if p.returncode != 0:
        return {"fail": "report rejected", "error": p.stdout.strip()}
    return get_rows(dbclient, addr, trial)


def trialtail_side(binary, dbclient, addr, case, trial, workdir):
    d = tempfile.mkdtemp(dir=workdir)
    path = os.path.join(d, "metrics.log")
    with open(path, "wb") as f:
        f.write(content_of(case))
    with open(os.path.join(d, ENDED + ".pid"), "w") as f:
        f.write("completed\n")
    argv = [binary, "-t", trial, "-m", ";".join(case["metrics"]), "-o-type", "maximize", "-s-db", addr,
            "-path", path]
    if case["filters"]:
        argv += ["-f", ";".join(case["filters"])]
    argv += ["-format", case["format"], "-main-pid", ENDED, "-listen", "off", "-p", "50ms",
             "-report-deadline", "10s"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALTAIL_")}
    p = subprocess.run(argv, capture_output=True, env=env, timeout=120)
    if p.returncode != 0:
        return {"fail": f"exit {p.returncode}", "error": p.stderr.decode("utf-8", "replace").strip()[-400:]}
    return get_rows(dbclient, addr, trial)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trialtail", required=True)
    p.add_argument("--cases", action="append", default=[])
    p.add_argument("--out")
    a = p.parse_args()
    addr, oracle_bin, dbclient = (os.environ.get(k) for k in ("KATIB_DB_MANAGER_ADDR", "ORACLE", "DBCLIENT"))
    if not (addr and oracle_bin and dbclient):
        p.error("KATIB_DB_MANAGER_ADDR, ORACLE and DBCLIENT must be set (tests/katib/rig.sh start prints them)")
    files = a.cases or [os.path.join(HERE, "cases", "hard.jsonl")]
    cases = [json.loads(line) for f in files for line in open(f, encoding="utf-8") if line.strip()]

    oracle = Oracle(oracle_bin)
    workdir = tempfile.mkdtemp(prefix="katib-dropin-")
    run = f"e2e{int(time.time())}"
    counts = collections.Counter()
    differ = []
    out = open(a.out, "w", encoding="utf-8") if a.out else None
    for i, case in enumerate(cases):
        if any(";" in f for f in case["filters"]):
            counts["skipped (a filter holds ';', which Katib's -f cannot carry)"] += 1
            continue
        k = katib_side(oracle, dbclient, addr, case, f"{run}-k{i}")
        t = trialtail_side(a.trialtail, dbclient, addr, case, f"{run}-t{i}", workdir)
        same = k == t or ("fail" in k and "fail" in t)
        counts["same" if same else "differ"] += 1
        if not same:
            differ.append(case["id"])
            if out:
                out.write(json.dumps({"id": case["id"], "why": case.get("why"), "katib": k, "trialtail": t},
                                     ensure_ascii=False) + "\n")
        for trial in (f"{run}-k{i}", f"{run}-t{i}"):
            subprocess.run([dbclient, "-addr", addr, "delete", "-trial", trial], capture_output=True)
    oracle.close()
    print(f"{len(cases)} cases through the DB manager: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if differ:
        print("  differ: " + ", ".join(differ))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The baseline: how fast TensorBoard's EventAccumulator (what Katib's collector runs) loads a directory.

    bench_accumulator.py DIR                    # EventAccumulator per event file, as Katib makes them
    bench_accumulator.py DIR --katib -m "accuracy;loss;learning_rate;epoch_accuracy"
                                                # Katib's whole parse (katib_oracle.report): + matching,
                                                # str() of every value, the RFC 3339 time stamps
    bench_accumulator.py DIR --tf real          # TensorBoard reads with TensorFlow's C++ record reader
                                                # (Katib's image has TF 2.16.1), not its pure-Python stub

Prints one JSON object: event files, bytes, records (every TFRecord, file_version events included),
scalar values kept (scalars + tensors), seconds, records/s, MB/s (1 MB = 10^6 bytes), peak RSS (MiB,
this process's high-water mark, `ru_maxrss`). A fresh process per measurement: peak RSS is per process.

Like Katib (tfevent_loader.py, TFEventFileParser.parse_summary) it makes one
`EventAccumulator(file, size_guidance={SCALARS: 0, TENSORS: 0})` per file (0 = keep all) and calls
`Reload()` on it; every file below DIR whose name has "tfevents" (and not ".profile-empty") is loaded
(Katib passes every file; the others give nothing).
"""

import argparse
import json
import os
import resource
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def count_records(path):
    n = 0
    with open(path, "rb") as f:
        while True:
            head = f.read(12)
            if len(head) < 12:
                return n
            (length,) = struct.unpack("<Q", head[:8])
            f.seek(length + 4, 1)
            n += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--tf", choices=("shim", "real"), default="shim")
    ap.add_argument("--katib", action="store_true", help="time Katib's whole parse, not the accumulators alone")
    ap.add_argument("-m", "--metric_names", default="accuracy;loss;learning_rate;epoch_accuracy")
    a = ap.parse_args()

    sys.path.insert(0, HERE)
    import katib_oracle

    if a.katib:
        katib_oracle.load(a.tf)
    else:
        # The same TensorFlow choice the oracle makes, without Katib's modules.
        katib_oracle.install_tensorflow(a.tf)
    from tensorboard.backend.event_processing import io_wrapper
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.tag_types import SCALARS, TENSORS

    files = []
    for root, _, names in os.walk(a.dir):
        for n in names:
            p = os.path.join(root, n)
            if io_wrapper.IsSummaryEventsFile(p):
                files.append(p)
    size = sum(os.path.getsize(p) for p in files)
    records = sum(count_records(p) for p in files)  # not timed

    import logging

    logging.disable(logging.WARNING)
    t = time.perf_counter()
    if a.katib:
        kept = len(katib_oracle.report(a.dir, a.metric_names))
    else:
        kept = 0
        for p in files:
            acc = EventAccumulator(p, size_guidance={SCALARS: 0, TENSORS: 0})
            acc.Reload()
            tags = acc.Tags()
            kept += sum(len(acc.Scalars(tag)) for tag in tags[SCALARS])
            kept += sum(len(acc.Tensors(tag)) for tag in tags[TENSORS])
            del acc
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "what": "katib parse_file" if a.katib else "EventAccumulator.Reload per file",
        "reader": "TensorFlow C++ tf_record_iterator" if a.tf == "real" else "tensorboard's pure-Python stub",
        "files": len(files),
        "bytes": size,
        "records": records,
        "values_kept": kept,
        "seconds": round(dt, 2),
        "records_per_s": round(records / dt),
        "MB_per_s": round(size / 1e6 / dt, 2),
        "peak_rss_MiB": round(rss, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What Katib v0.19.0's TensorFlowEvent metrics collector would report to the DB manager.

    katib_oracle.py -path DIR -m "accuracy;train/loss"          # Katib's own flags
    katib_oracle.py --with-file -path DIR -m accuracy            # + "file": the event file of each line

Prints one JSON object per line, in Katib's order, for each `MetricLog` of the `ObservationLog` that
Katib's `cmd/metricscollector/v1beta1/tfevent-metricscollector/main.py` sends in its single
`ReportObservationLog` call:

    {"name": "accuracy", "value": "0.9134", "time_stamp": "2023-11-14T22:13:20+00:00"}

This is not a re-implementation. It imports Katib's own
`pkg/metricscollector/v1beta1/tfevent-metricscollector/tfevent_loader.py` (and Katib's generated
`api_pb2.py` and `common/const.py`) from the Go module cache, where
`go mod download github.com/kubeflow/katib@v0.19.0` puts them, and calls
`MetricsCollector(metric_names).parse_file(path)` exactly as `main.py` does. Nothing of Katib is
copied here.

The one substitution: `tfevent_loader.py` does `import tensorflow as tf` for a single call,
`tf.make_ndarray(tensor.tensor_proto)` (in `TFEventFileParser.parse_summary`). TensorFlow 2.16.1 (what
Katib's image pins) costs ~2 GB and ~1 min to install, so by default (`--tf shim`) `tensorflow` is a
module holding only `make_ndarray`: TF 2.16.1's `MakeNdarray` restated with numpy + ml_dtypes in
tf_make_ndarray.py (the `tensorboard` package's own copy of it differs on bfloat16 and padding), and
TensorBoard is told to use its own TF stub (`tensorboard.compat.notf`, TensorBoard's switch for that)
for file reading, as it does whenever TensorFlow is absent. Any other use of `tf` by Katib's code
would fail loudly (AttributeError). `--tf real` imports the real TensorFlow instead; test_tfevents.py
checks that both modes give identical output on every fixture case where TensorFlow is installed.

Time stamps are local time (Katib uses `datetime.fromtimestamp` + `rfc3339.rfc3339`): set TZ
(e.g. TZ=UTC) for reproducible output. `--now EPOCH` fixes the clock used for the `unavailable`
line (Katib uses `datetime.now()` there); it does not touch anything else.

The path is passed to Katib exactly as given (not made absolute): Katib matches a metric's directory
part as a string suffix of the event file's directory, which starts with this path.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import types

KATIB_MODULE = "github.com/kubeflow/katib"
KATIB_VERSION = "v0.19.0"


def katib_dir():
    """The unpacked Katib module: $KATIB_DIR, else $(go env GOMODCACHE)/github.com/kubeflow/katib@v0.19.0."""
    if os.environ.get("KATIB_DIR"):
        return os.environ["KATIB_DIR"]
    modcache = os.environ.get("GOMODCACHE")
    if not modcache:
        try:
            modcache = subprocess.run(
                ["go", "env", "GOMODCACHE"], check=True, capture_output=True, text=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            modcache = os.path.join(os.path.expanduser("~"), "go", "pkg", "mod")
    return os.path.join(modcache, f"{KATIB_MODULE}@{KATIB_VERSION}")


def install_tensorflow(mode):
    """Make `import tensorflow` in Katib's tfevent_loader.py resolve (see the module docstring)."""
    if mode == "real":
        import tensorflow  # noqa: F401  (the real one; TensorBoard then reads files with it too)

        return
    # TensorBoard's own switch to its TF stub (tensorboard/compat/__init__.py, `tf()`): if the module
    # `tensorboard.compat.notf` imports, TensorBoard never imports `tensorflow`.
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tf_make_ndarray

    shim = types.ModuleType("tensorflow")
    shim.__doc__ = "katib_oracle.py: only make_ndarray, TF 2.16.1's restated in tf_make_ndarray.py"
    shim.__version__ = "katib-oracle-shim"
    shim.make_ndarray = tf_make_ndarray.make_ndarray
    sys.modules["tensorflow"] = shim


def import_katib_loader(kdir):
    loader_dir = os.path.join(kdir, "pkg", "metricscollector", "v1beta1", "tfevent-metricscollector")
    if not os.path.isfile(os.path.join(loader_dir, "tfevent_loader.py")):
        sys.exit(
            f"katib_oracle.py: no Katib {KATIB_VERSION} at {kdir}; run\n"
            f"  go mod download {KATIB_MODULE}@{KATIB_VERSION}\n"
            "or set KATIB_DIR to an unpacked copy of that module"
        )
    # The same search path as Katib's Dockerfile sets (PYTHONPATH there): the module root (for
    # `pkg.metricscollector.v1beta1.common.const`), the generated api_pb2, the loader itself.
    for p in (
        loader_dir,
        os.path.join(kdir, "pkg", "apis", "manager", "v1beta1", "python"),
        kdir,
    ):
        sys.path.insert(0, p)
    sys.dont_write_bytecode = True  # the module cache is read-only
    return importlib.import_module("tfevent_loader")


_LOADER = None


def load(tf="shim", kdir=None):
    """Import Katib's tfevent_loader once per process (`tf`: "shim" or "real", see the docstring)."""
    global _LOADER
    if _LOADER is None:
        install_tensorflow(tf)
        _LOADER = import_katib_loader(kdir or katib_dir())
    return _LOADER


def report(path, metric_names, now=None, with_file=False):
    """The MetricLogs Katib would send, as dicts; `metric_names` is the -m string ("a;b")."""
    loader = load()
    real_datetime = loader.datetime
    if now is not None:

        class _FrozenNow(real_datetime):
            @classmethod
            def now(cls, tz=None):
                return real_datetime.fromtimestamp(now, tz)

        loader.datetime = _FrozenNow
    try:
        # main.py: `MetricsCollector(opt.metric_names.split(";"))`, then `mc.parse_file(opt.metrics_file_dir)`.
        mc = loader.MetricsCollector(metric_names.split(";"))
        files = []  # the event file of each MetricLog (parse_file concatenates parse_summary's lists)
        parse_summary = mc.parser.parse_summary

        def traced(tfefile):
            logs = parse_summary(tfefile)
            files.extend([tfefile] * len(logs))
            return logs

        mc.parser.parse_summary = traced
        observation_log = mc.parse_file(path)
    finally:
        loader.datetime = real_datetime
        for h in list(mc.logger.handlers) if "mc" in locals() else []:
            mc.logger.removeHandler(h)  # MetricsCollector adds a handler each time it is made
    logs = observation_log.metric_logs
    if len(files) != len(logs):  # parse_file replaced everything by the one 'unavailable' line
        files = [None] * len(logs)
    out = []
    for ml, tfefile in zip(logs, files):
        line = {"name": ml.metric.name, "value": ml.metric.value, "time_stamp": ml.time_stamp}
        if with_file:
            line["file"] = tfefile
        out.append(line)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # The two flags of Katib's main.py that reach the parser, with its defaults (parse_options()).
    ap.add_argument("-path", "--metrics_file_dir", default="/log")
    ap.add_argument("-m", "--metric_names", default="")
    ap.add_argument("--tf", choices=("shim", "real"), default="shim")
    ap.add_argument("--now", type=float, help="epoch seconds for the 'unavailable' line's time stamp")
    ap.add_argument("--with-file", action="store_true", help='add "file": the event file each line came from')
    ap.add_argument("--katib-dir", help="unpacked Katib module (default: $KATIB_DIR or the Go module cache)")
    opt = ap.parse_args(argv)
    load(opt.tf, opt.katib_dir)
    for line in report(opt.metrics_file_dir, opt.metric_names, opt.now, opt.with_file):
        sys.stdout.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

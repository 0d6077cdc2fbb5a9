#!/usr/bin/env python3
"""TensorBoard event-file fixtures, written by the real writers.

    make_fixtures.py small OUT            # the small fixtures (committed under tests/tfevents/fixtures/)
    make_fixtures.py small OUT --only tf2_tensor,torch
    make_fixtures.py large OUT [--events 1000000] [--files 8] [--jobs 2] [--no-expected]

`small` needs the writers themselves: tensorflow==2.16.1 (TF1 `FileWriter`, TF2 `tf.summary`),
torch (`torch.utils.tensorboard`), tensorboardX and tensorboard; see README.md for the pinned venv.
Each fixture is written in a child process of its own (TF1 graph mode and TF2 eager mode do not mix
in one process). `large` needs only the `tensorboard` package: it writes with
`tensorboard.summary.writer.event_file_writer.EventFileWriter`, the writer behind
`torch.utils.tensorboard.SummaryWriter`.

Every fixture directory gets an `expected.jsonl` (and Katib ignores it: its name has no "tfevents").
One line per scalar event, in file order, for every event file the writers produced:

    {"file": "train/events.out.tfevents...", "tag": "accuracy", "step": 3, "wall_time": 1700000003.25,
     "value": 0.10000000149011612, "dtype": "float32", "encoding": "simple_value", "given": 0.1}

* `value` is the number stored in the file, exactly: the value given to the writer cast to `dtype`
  (a float32 as the double it widens to); NaN and infinities are the strings "NaN", "Infinity",
  "-Infinity". `given` (only where it differs from `value`) is what the writer was handed.
* `dtype`: float32 for `simple_value`, else the tensor's dtype (float16, bfloat16, float32, float64,
  int32, int64, ...).
* `encoding`: `simple_value`, or where a tensor keeps its one element: `tensor_content`,
  `float_val`, `double_val`, `half_val`, `int_val`, `int64_val`. `shape` is the tensor's shape
  ([] or [1]) for tensors.
* `wall_time` is the event's wall time where the writer was given it; where the writer took its
  own clock (TF2 `tf.summary`, Keras) it is null and `wall_time_range` [lo, hi] brackets the call.
* "Scalar event": a `simple_value`, or a numeric tensor with exactly one element. Vectors, strings,
  histograms, images are written into some fixtures on purpose (Katib reports some of them, see
  README.md) but are not listed.

Before writing `expected.jsonl` the script reads every new event file back (TFRecord framing and CRCs
checked here, `Event` parsed with tensorboard's protos) and asserts that the scalar events in the file
are exactly the ones it gave the writer, in order: so the writers did what this file says.
"""

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# A fixed, recognisable origin for the wall times the writers are given: 2023-11-14T22:13:20Z.
T0 = 1_700_000_000.0

# Values that make float formatting and float32 rounding visible.
TRICKY_FLOATS = [
    0.1,
    1 / 3,
    2 / 3,
    0.9999999,
    1e-7,
    1.5e-5,
    1e-4,
    123456789.0,
    16777217.0,  # 2**24 + 1: not a float32
    1e16,
    1e20,
    3.4028234663852886e38,  # float32 max
    1e39,  # overflows float32 -> inf
    1e-45,  # float32 denormal
    -0.0,
    -2.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    42,  # an int given to a float writer
]


# --------------------------------------------------------------------------- TFRecord + Event reading


def masked_crc32c(data):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as m

    return m(data)


def read_records(path, check_crc=True):
    """[(offset, length, payload)] of a TFRecord file; raises on bad framing."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{path}: truncated header at {pos}")
        (n,) = struct.unpack_from("<Q", data, pos)
        (hcrc,) = struct.unpack_from("<I", data, pos + 8)
        if check_crc and hcrc != masked_crc32c(data[pos : pos + 8]):
            raise ValueError(f"{path}: header crc at {pos}")
        start = pos + 12
        if start + n + 4 > len(data):
            raise ValueError(f"{path}: truncated record at {pos}")
        payload = data[start : start + n]
        (dcrc,) = struct.unpack_from("<I", data, start + n)
        if check_crc and dcrc != masked_crc32c(payload):
            raise ValueError(f"{path}: data crc at {pos}")
        out.append((pos, 12 + n + 4, payload))
        pos = start + n + 4
    return out


DTYPE_NAMES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_BFLOAT16": "bfloat16",
    "DT_INT8": "int8",
    "DT_INT16": "int16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_UINT8": "uint8",
    "DT_UINT16": "uint16",
    "DT_UINT32": "uint32",
    "DT_UINT64": "uint64",
}
TENSOR_FIELDS = ("float_val", "double_val", "half_val", "int_val", "int64_val", "uint32_val", "uint64_val")


def scalar_events(path):
    """The scalar events of one event file, in order: dicts without "file"."""
    from tensorboard.compat.proto import event_pb2, types_pb2

    sys.path.insert(0, HERE)
    from tf_make_ndarray import make_ndarray

    out = []
    for _, _, payload in read_records(path):
        ev = event_pb2.Event.FromString(payload)
        if not ev.HasField("summary"):
            continue
        for v in ev.summary.value:
            kind = v.WhichOneof("value")
            base = {"tag": v.tag, "step": ev.step, "wall_time": ev.wall_time}
            if kind == "simple_value":
                out.append(dict(base, value=float(v.simple_value), dtype="float32", encoding="simple_value"))
            elif kind == "tensor":
                t = v.tensor
                dtype = DTYPE_NAMES.get(types_pb2.DataType.Name(t.dtype))
                shape = [d.size for d in t.tensor_shape.dim]
                if dtype is None or math.prod(shape) != 1:
                    continue
                if t.tensor_content:
                    encoding = "tensor_content"
                else:
                    encoding = next(f for f in TENSOR_FIELDS if len(getattr(t, f)))
                x = make_ndarray(t).reshape(()).item()
                x = float(x) if dtype.startswith(("float", "bfloat")) else int(x)
                out.append(dict(base, value=x, dtype=dtype, encoding=encoding, shape=shape))
    return out


def cast(x, dtype):
    """x as stored in a `dtype` field, as a Python number."""
    import numpy as np

    if dtype == "bfloat16":
        import ml_dtypes

        return float(np.array(x, dtype=np.float64).astype(ml_dtypes.bfloat16).astype(np.float64))
    with np.errstate(over="ignore"):
        y = np.array(x, dtype=np.float64 if isinstance(x, float) else None).astype(dtype)
    return y.item()


def same_number(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b and type(a) is type(b)


def json_number(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    return x


def event_files(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            if "tfevents" in f:
                out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


# --------------------------------------------------------------------------- recording what is written


class Fixture:
    """A fixture directory; what each writer session was given; expected.jsonl."""

    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.sessions = []  # [(new files, [entries])]
        self._pending = None

    def dir(self, sub=""):
        d = os.path.join(self.root, sub)
        os.makedirs(d, exist_ok=True)
        return d

    @contextlib.contextmanager
    def session(self):
        """Create and close the writer(s) inside; every event file that appears belongs to them."""
        before = set(event_files(self.root))
        self._pending = []
        yield
        new = sorted(set(event_files(self.root)) - before)
        assert new, "the writer session wrote no event file"
        self.sessions.append((new, self._pending))
        self._pending = None

    def expect(self, sub, tag, step, given, dtype, wall_time=None, wall_range=None, readback=False, stored=None):
        """`stored`: the value the writer is known to store when it is not `given` cast to `dtype`."""
        self._pending.append(
            dict(sub=sub, tag=tag, step=step, given=given, dtype=dtype, wall_time=wall_time,
                 wall_range=wall_range, readback=readback, stored=stored)
        )

    def finish(self):
        lines = []
        for new, entries in self.sessions:
            for rel in new:
                sub = os.path.dirname(rel)
                mine = [e for e in entries if e["sub"] == sub]
                got = scalar_events(os.path.join(self.root, rel))
                if mine and mine[0]["readback"]:
                    mine = [dict(mine[0], tag=g["tag"], step=g["step"], given=g["value"], dtype=g["dtype"])
                            for g in got]
                # A directory that got several files in one session (never happens with these writers).
                assert sum(os.path.dirname(r) == sub for r in new) == 1, (rel, new)
                assert len(got) == len(mine), (rel, len(got), len(mine), got[:3], mine[:3])
                for g, e in zip(got, mine):
                    want = cast(e["given"], e["dtype"]) if e.get("stored") is None else e["stored"]
                    assert (g["tag"], g["step"], g["dtype"]) == (e["tag"], e["step"], e["dtype"]), (rel, g, e)
                    assert same_number(g["value"], want), (rel, g, e, want)
                    line = {"file": rel, "tag": g["tag"], "step": g["step"]}
                    if e["wall_time"] is not None:
                        assert g["wall_time"] == e["wall_time"], (rel, g, e)
                        line["wall_time"] = g["wall_time"]
                    else:
                        lo, hi = e["wall_range"]
                        assert lo - 1e-3 <= g["wall_time"] <= hi + 1e-3, (rel, g, e)
                        line["wall_time"] = None
                        line["wall_time_range"] = [lo, hi]
                    line["value"] = json_number(g["value"])
                    line["dtype"] = g["dtype"]
                    line["encoding"] = g["encoding"]
                    if "shape" in g:
                        line["shape"] = g["shape"]
                    if not e["readback"] and not same_number(e["given"], g["value"]):
                        line["given"] = json_number(e["given"])
                    lines.append(line)
        with open(os.path.join(self.root, "expected.jsonl"), "w") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        return lines


def walls(n, start=T0, dt=1.25):
    return [start + i * dt for i in range(n)]


# --------------------------------------------------------------------------- the small fixtures


def fx_tf1_simple_value(fx):
    """tensorboardX: TF1-style `simple_value` scalars; float formatting, steps, wall-time edges."""
    from tensorboardX import SummaryWriter

    with fx.session():
        w = SummaryWriter(fx.dir(), flush_secs=3600)
        wt = walls(len(TRICKY_FLOATS))
        for i, (x, t) in enumerate(zip(TRICKY_FLOATS, wt)):
            w.add_scalar("accuracy", x, i, walltime=t)
            fx.expect("", "accuracy", i, x, "float32", wall_time=t)
        # a tag that only starts with "accuracy", a tag with a slash, a tag a metric name never matches
        for i in range(3):
            for tag, x in (("accuracy_top5", 0.5 + i / 8), ("loss/train", 2.0 - i / 4), ("loss", 1.0 / (i + 1))):
                t = T0 + 100 + i
                w.add_scalar(tag, x, i, walltime=t)
                fx.expect("", tag, i, x, "float32", wall_time=t)
        # steps: a duplicate, one going back, one beyond 2**31, one beyond 2**53, a negative one
        for step, x, t in (
            (5, 0.25, T0 + 200.0),
            (5, 0.75, T0 + 200.5),
            (2, 0.5, T0 + 201.0),
            (2**40, 0.125, T0 + 202.0),
            (2**53 + 1, 0.0625, T0 + 203.0),
            (-1, 1.0, T0 + 204.0),
        ):
            w.add_scalar("loss", x, step, walltime=t)
            fx.expect("", "loss", step, x, "float32", wall_time=t)
        # wall times: rounding to the microsecond carries into the next second; before 1970; fractions
        for step, t in ((10, T0 + 300.9999996), (11, T0 + 301.9999994), (12, -1.5), (13, 0.0), (14, T0 + 302.123456789)):
            w.add_scalar("loss", 0.5, step, walltime=t)
            fx.expect("", "loss", step, 0.5, "float32", wall_time=t)
        w.close()


def fx_tf1_filewriter(fx):
    """TensorFlow 1.x `tf.compat.v1.summary.FileWriter` (graph mode): simple_value, as TF1 wrote it."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    Summary = tf.compat.v1.Summary
    with fx.session():
        w = tf.compat.v1.summary.FileWriter(fx.dir("train"))
        for i in range(10):
            acc = 0.5 + i * 0.05
            loss = 1.0 / (i + 1)
            ev = tf.compat.v1.Event(wall_time=T0 + i, step=i * 100, summary=Summary(value=[
                Summary.Value(tag="accuracy", simple_value=acc),
                Summary.Value(tag="loss", simple_value=loss),
            ]))
            w.add_event(ev)
            fx.expect("train", "accuracy", i * 100, acc, "float32", wall_time=T0 + i)
            fx.expect("train", "loss", i * 100, loss, "float32", wall_time=T0 + i)
        # The classic TF1 path: a summary op evaluated in a session, added with add_summary (wall time:
        # the writer's clock).
        x = tf.compat.v1.placeholder(tf.float32, [])
        op = tf.compat.v1.summary.scalar("accuracy", x)
        with tf.compat.v1.Session() as sess:
            for i, v in enumerate((0.975, 0.98125)):
                lo = time.time()
                w.add_summary(sess.run(op, {x: v}), 1000 + i)
                w.flush()
                fx.expect("train", "accuracy", 1000 + i, v, "float32", wall_range=[lo, time.time()])
        w.close()


def fx_restart_sessionlog(fx):
    """TF1 FileWriter, one file: a SessionLog.START at step 5 after steps 0..9 (a restart from a checkpoint).

    TensorBoard's EventAccumulator (and so Katib) purges the *scalars* (not the tensors) with step >= 5
    seen before the START event (event_accumulator.py, _CheckForRestartAndMaybePurge / _Purge).
    """
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    Summary = tf.compat.v1.Summary
    with fx.session():
        w = tf.compat.v1.summary.FileWriter(fx.dir())
        t = T0
        for step in list(range(10)) + ["START"] + list(range(5, 12)):
            t += 1
            if step == "START":
                w.add_event(tf.compat.v1.Event(wall_time=t, step=5, session_log=tf.compat.v1.SessionLog(
                    status=tf.compat.v1.SessionLog.START)))
                continue
            acc = 0.1 * step if t < T0 + 11 else 0.1 * step + 0.01
            w.add_event(tf.compat.v1.Event(wall_time=t, step=step, summary=Summary(value=[
                Summary.Value(tag="accuracy", simple_value=acc)])))
            fx.expect("", "accuracy", step, acc, "float32", wall_time=t)
            # the same in a TF2-style tensor: tensors are never purged
            tp = tf.make_tensor_proto(acc, dtype=tf.float32)
            w.add_event(tf.compat.v1.Event(wall_time=t, step=step, summary=Summary(value=[
                Summary.Value(tag="accuracy_tensor", tensor=tp)])))
            fx.expect("", "accuracy_tensor", step, acc, "float32", wall_time=t)
        w.close()


def fx_tf2_tensor(fx):
    """TensorFlow 2 `tf.summary` (eager): tensors with `tensor_content`, several dtypes, non-scalars."""
    import numpy as np
    import tensorflow as tf

    def timed(fn):
        lo = time.time()
        fn()
        return [lo, time.time()]

    with fx.session():
        for sub in ("train", "validation"):
            w = tf.summary.create_file_writer(fx.dir(sub))
            with w.as_default():
                for step in range(5):
                    for tag, x in (("accuracy", 0.5 + step / 10 + (sub == "validation") / 100), ("loss", 1 / (step + 1))):
                        r = timed(lambda: tf.summary.scalar(tag, x, step=step))
                        fx.expect(sub, tag, step, x, "float32", wall_range=r)
                if sub == "train":
                    for step, x in enumerate(TRICKY_FLOATS):
                        # as a float64 tensor: tf.summary.scalar casts it to float32 (a bare Python 1e39
                        # is refused by the tensor conversion)
                        r = timed(lambda: tf.summary.scalar("tricky", tf.constant(x, tf.float64), step=step))
                        # TF's CPU kernels flush float32 subnormals to zero: 1e-45 is stored as 0.0
                        y = cast(float(x), "float32")
                        ftz = math.copysign(0.0, y) if y != 0 and abs(y) < 1.1754943508222875e-38 else None
                        fx.expect(sub, "tricky", step, float(x), "float32", wall_range=r, stored=ftz)
                    # tf.summary.write: any tensor; scalar-plugin metadata so TensorBoard shows them
                    md = tf.compat.v1.SummaryMetadata(plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
                        plugin_name="scalars")).SerializeToString()
                    for dtype, values in (
                        ("float64", [0.1, 1 / 3, 1e-7, 1e300, float("nan")]),
                        ("float16", [0.1, 1 / 3, 65504.0, 1e-7]),
                        ("bfloat16", [0.1, 1 / 3, 3.0e38]),
                        ("int32", [7, -3, 2**31 - 1]),
                        ("int64", [7, 2**53 + 1, -(2**63)]),
                    ):
                        for step, x in enumerate(values):
                            tag = "acc_" + dtype
                            r = timed(lambda: tf.summary.write(tag, tf.constant(x, dtype=dtype), step=step, metadata=md))
                            fx.expect(sub, tag, step, x, dtype, wall_range=r)
                    # shape [1] (still one element) and a vector (not a scalar; Katib reports "[...]")
                    r = timed(lambda: tf.summary.write("accuracy_1elem", tf.constant([0.875], tf.float32), step=9, metadata=md))
                    fx.expect(sub, "accuracy_1elem", 9, 0.875, "float32", wall_range=r)
                    tf.summary.write("accuracy_vector", tf.constant([0.25, 0.5, 0.75], tf.float32), step=9, metadata=md)
                    # other plugins, tags that start with a metric name
                    tf.summary.histogram("accuracy_hist", np.linspace(0, 1, 50), step=9, buckets=4)
                    tf.summary.image("accuracy_image", np.zeros((1, 2, 2, 3), np.float32), step=9)
                    tf.summary.text("accuracy_note", "best so far", step=9)
                    tf.summary.audio("accuracy_audio", np.zeros((1, 80, 1), np.float32), 8000, step=9)
                    tf.summary.text("loss_note", tf.constant(["a", "b"]), step=9)
            w.close()


def fx_keras_fit(fx):
    """Keras 3 `keras.callbacks.TensorBoard` on a tiny `model.fit`: the train/ and validation/ layout and
    the epoch_* tags users actually get. The values are Keras's, read back (given = stored)."""
    import numpy as np
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.RandomState(0).rand(64, 4).astype("float32")
    y = (x.sum(axis=1) > 2).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    with fx.session():
        lo = time.time()
        model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0,
                  callbacks=[keras.callbacks.TensorBoard(fx.root, histogram_freq=1, write_graph=False)])
        r = [lo, time.time()]
        for sub in ("train", "validation"):
            fx.expect(sub, None, None, None, None, wall_range=r, readback=True)


def fx_torch(fx):
    """PyTorch `torch.utils.tensorboard.SummaryWriter`: simple_value, new_style (float_val),
    double_precision (double_val), add_scalars (one sub-directory per key), add_hparams, other plugins."""
    import numpy as np
    import torch
    from torch.utils.tensorboard import SummaryWriter

    with fx.session():
        w = SummaryWriter(fx.root, flush_secs=3600)
        for step in range(4):
            t = T0 + step
            acc = 0.6 + step / 10
            w.add_scalar("accuracy", acc, step, walltime=t)
            fx.expect("", "accuracy", step, acc, "float32", wall_time=t)
            w.add_scalar("accuracy_new", acc, step, walltime=t, new_style=True)
            fx.expect("", "accuracy_new", step, acc, "float32", wall_time=t)
            w.add_scalar("accuracy_double", acc, step, walltime=t, new_style=True, double_precision=True)
            fx.expect("", "accuracy_double", step, acc, "float64", wall_time=t)
            w.add_scalar("loss", torch.tensor(1.0 / (step + 1)), step, walltime=t)
            fx.expect("", "loss", step, float(torch.tensor(1.0 / (step + 1))), "float32", wall_time=t)
            w.add_scalars("acc", {"train": acc, "val": acc - 0.05}, step, walltime=t)
            fx.expect("acc_train", "acc", step, acc, "float32", wall_time=t)
            fx.expect("acc_val", "acc", step, acc - 0.05, "float32", wall_time=t)
        for step, x in enumerate(TRICKY_FLOATS):
            w.add_scalar("tricky_new", x, step, walltime=T0 + 10, new_style=True)
            fx.expect("", "tricky_new", step, float(x), "float32", wall_time=T0 + 10)
        w.add_histogram("accuracy_hist", np.linspace(0, 1, 50), 3, walltime=T0 + 20)
        w.add_image("accuracy_image", np.zeros((3, 2, 2), np.float32), 3, walltime=T0 + 20)
        w.add_text("accuracy_note", "best so far", 3, walltime=T0 + 20)
        lo = time.time()
        w.add_hparams({"lr": 0.01, "layers": 2}, {"hp_accuracy": 0.9}, run_name="hp")
        fx.expect("hp", "hp_accuracy", 0, 0.9, "float32", wall_range=[lo, time.time()])
        w.close()


def fx_tensorboard_writer(fx):
    """The `tensorboard` package's own writer (EventFileWriter) with tensors made by its
    `tensor_util.make_tensor_proto`: float_val, double_val, half_val, int_val, int64_val, and
    `tensor_content` set as TF's C++ writer sets it; a unicode tag."""
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    md = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    with fx.session():
        w = EventFileWriter(fx.dir(), flush_secs=3600)
        t = T0
        first = set()

        def put(tag, step, tensor):
            nonlocal t
            t += 0.5
            v = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
            if tag not in first:  # metadata on the first value of a tag, as the real writers do
                v.metadata.CopyFrom(md)
                first.add(tag)
            w.add_event(event_pb2.Event(wall_time=t, step=step, summary=summary_pb2.Summary(value=[v])))
            return t

        for dtype, values in (
            ("float32", [0.1, 1 / 3, 1e-45, float("inf")]),
            ("float64", [0.1, 1 / 3, 5e-324, float("-inf")]),
            ("float16", [0.1, 65504.0]),
            ("int32", [0, -7, 2**31 - 1]),
            ("int64", [0, 2**53 + 1, 2**63 - 1]),
        ):
            for step, x in enumerate(values):
                tp = tensor_util.make_tensor_proto(np.array(x, dtype=dtype))
                fx.expect("", "acc_" + dtype, step, x, dtype, wall_time=put("acc_" + dtype, step, tp))
        for step, x in enumerate((0.1, 0.2, 0.3)):  # what tf.summary.scalar's C++ writer stores
            tp = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                        tensor_content=struct.pack("<f", x))
            fx.expect("", "acc_content", step, x, "float32", wall_time=put("acc_content", step, tp))
        for step, x in enumerate((0.25, 0.5)):  # float64 in tensor_content
            tp = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                        tensor_content=struct.pack("<d", x))
            fx.expect("", "acc_content64", step, x, "float64", wall_time=put("acc_content64", step, tp))
        for step, x in enumerate((0.5, 0.625)):
            tp = tensor_util.make_tensor_proto(x, dtype="float32")
            fx.expect("", "准确率", step, x, "float32", wall_time=put("准确率", step, tp))
        w.close()


def fx_multi_run(fx):
    """tensorboardX, one writer per run directory: train/, validation/, runs/exp1/{train,validation},
    pretrain/ (its name ends with "train"), the top level; plus files Katib must not read."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboardX import SummaryWriter

    runs = {"": 0.1, "train": 0.2, "validation": 0.3, "runs/exp1/train": 0.4, "runs/exp1/validation": 0.5,
            "pretrain": 0.6, "runs/exp2": 0.7}
    for sub, base in runs.items():
        with fx.session():
            w = SummaryWriter(fx.dir(sub), flush_secs=3600)
            for step in range(3):
                t = T0 + step + base
                w.add_scalar("accuracy", base + step / 100, step, walltime=t)
                fx.expect(sub, "accuracy", step, base + step / 100, "float32", wall_time=t)
                w.add_scalar("loss", 1 - base, step, walltime=t)
                fx.expect(sub, "loss", step, 1 - base, "float32", wall_time=t)
            w.close()
    # A TF-profiler-style dummy file: TensorBoard (and so Katib) skips "*.profile-empty" (io_wrapper.py,
    # IsSummaryEventsFile), whatever it holds.
    with fx.session():
        w = EventFileWriter(fx.dir("profile"), filename_suffix=".profile-empty")
        w.add_event(event_pb2.Event(wall_time=T0, step=0, summary=summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag="accuracy", simple_value=0.99)])))
        fx.expect("profile", "accuracy", 0, 0.99, "float32", wall_time=T0)
        w.close()
    with open(os.path.join(fx.dir("train"), "notes.txt"), "w") as f:
        f.write("accuracy=0.5\nnot an event file\n")
    with open(os.path.join(fx.dir("train"), "checkpoint"), "wb") as f:
        f.write(b"\x00" * 16)
    open(os.path.join(fx.dir("validation"), "events.out.tfevents.0.empty"), "wb").close()


def fx_restart(fx):
    """tensorboardX, a writer restart: two event files in one directory, overlapping steps 5..9."""
    from tensorboardX import SummaryWriter

    for run, steps in ((0, range(0, 10)), (1, range(5, 15))):
        with fx.session():
            w = SummaryWriter(fx.root, flush_secs=3600, filename_suffix=f".run{run}")
            for step in steps:
                t = T0 + 1000 * run + step
                x = step / 100 + run / 1000
                w.add_scalar("accuracy", x, step, walltime=t)
                fx.expect("", "accuracy", step, x, "float32", wall_time=t)
            w.close()
        time.sleep(1.1)  # event file names carry the time in seconds: two runs, two names


def fx_mixed_plugins(fx):
    """tensorboardX: scalars among images, histograms, text and PR curves; the plugin tags start with the
    metric name. (tensorboardX's add_audio needs the soundfile package: the TF2 fixture has audio.)"""
    import numpy as np
    from tensorboardX import SummaryWriter

    with fx.session():
        w = SummaryWriter(fx.root, flush_secs=3600)
        for step in range(3):
            t = T0 + step
            w.add_image("accuracy_image", np.zeros((3, 4, 4), np.uint8), step, walltime=t)
            w.add_histogram("accuracy_hist", np.arange(10.0) * (step + 1), step, walltime=t)
            w.add_scalar("accuracy", 0.7 + step / 10, step, walltime=t)
            fx.expect("", "accuracy", step, 0.7 + step / 10, "float32", wall_time=t)
            w.add_text("accuracy_text", f"epoch {step}", step, walltime=t)
            w.add_pr_curve("accuracy_pr", np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.3]), step, walltime=t)
            w.add_scalar("loss", 0.5 - step / 10, step, walltime=t)
            fx.expect("", "loss", step, 0.5 - step / 10, "float32", wall_time=t)
        w.close()


def damaged(src_fixture_dir, out_root):
    """Copies of tf1_simple_value's event file with a truncated last record, a flipped data CRC bit,
    a flipped length bit, and a well-framed record that is not an Event; damage.json says where."""
    src_lines = [json.loads(line) for line in open(os.path.join(src_fixture_dir, "expected.jsonl"))]
    (rel,) = {line["file"] for line in src_lines}
    src = os.path.join(src_fixture_dir, rel)
    data = open(src, "rb").read()
    recs = read_records(src)
    # records[0] is the file_version event; records[k] (k >= 1) is the k-th scalar event here
    assert len(recs) == len(src_lines) + 1
    name = os.path.basename(rel)
    last_off, last_len, _ = recs[-1]
    mid = len(recs) // 2
    mid_off, mid_len, _ = recs[mid]
    cases = {
        "truncated": (
            data[: last_off + last_len // 2],
            len(recs) - 2,
            f"cut at byte {last_off + last_len // 2} of {len(data)}: the last record (at {last_off}, "
            f"{last_len} bytes) lost its second half, data CRC included",
        ),
        "bad_crc": (
            data[: mid_off + 12 + 2] + bytes([data[mid_off + 12 + 2] ^ 0x01]) + data[mid_off + 12 + 3 :],
            mid - 1,
            f"bit 0 of byte {mid_off + 12 + 2} flipped: byte 2 of the payload of record {mid} (at {mid_off}; "
            f"record 0 is the file_version event), so its data CRC no longer matches",
        ),
        "bad_length": (
            data[:mid_off] + bytes([data[mid_off] ^ 0x40]) + data[mid_off + 1 :],
            mid - 1,
            f"bit 6 of byte {mid_off} flipped: the length of record {mid} (at {mid_off}), so the length's "
            f"CRC no longer matches",
        ),
    }
    junk = b"\xff\xff\xff"  # a truncated varint field key: not an Event
    framed = (struct.pack("<Q", len(junk)) + struct.pack("<I", masked_crc32c(struct.pack("<Q", len(junk))))
              + junk + struct.pack("<I", masked_crc32c(junk)))
    cases["bad_proto"] = (
        data[:mid_off] + framed + data[mid_off:],
        len(recs) - 1,
        f"a 3-byte record {junk.hex()} with correct CRCs inserted at byte {mid_off}, before record {mid}: "
        f"framing is intact, the payload does not parse as an Event",
    )
    out = {}
    for case, (blob, n_intact, what) in cases.items():
        d = os.path.join(out_root, case)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(blob)
        # Every scalar event that a reader which stops at the damage still has (all of them for bad_proto).
        keep = src_lines[:n_intact]
        with open(os.path.join(d, "expected.jsonl"), "w") as f:
            for line in keep:
                f.write(json.dumps(dict(line, file=name), ensure_ascii=False) + "\n")
        info = {"source": f"tf1_simple_value/{rel}", "what": what, "size": len(blob),
                "scalar_events_before_damage": len(keep) if case != "bad_proto" else mid - 1,
                "scalar_events_after_damage": len(src_lines) - n_intact if case != "bad_proto" else len(src_lines) - (mid - 1)}
        with open(os.path.join(d, "damage.json"), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        out[case] = info
    return out


SMALL = {
    "tf1_simple_value": fx_tf1_simple_value,
    "tf1_filewriter": fx_tf1_filewriter,
    "restart_sessionlog": fx_restart_sessionlog,
    "tf2_tensor": fx_tf2_tensor,
    "keras_fit": fx_keras_fit,
    "torch": fx_torch,
    "tensorboard_writer": fx_tensorboard_writer,
    "multi_run": fx_multi_run,
    "restart": fx_restart,
    "mixed_plugins": fx_mixed_plugins,
}


def small(out, only):
    names = only or list(SMALL)
    for name in names:
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        t = time.time()
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "_one", name, d])
        if r.returncode:
            sys.exit(f"fixture {name} failed")
        print(f"{name}: {time.time() - t:.1f} s", file=sys.stderr)
    if "tf1_simple_value" in names:
        shutil.rmtree(os.path.join(out, "damaged"), ignore_errors=True)
        damaged(os.path.join(out, "tf1_simple_value"), os.path.join(out, "damaged"))


def one(name, d):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    fx = Fixture(d)
    SMALL[name](fx)
    fx.finish()


# --------------------------------------------------------------------------- the large set


LARGE_RUNS = ["train", "validation", "runs/exp1/train", "runs/exp1/validation"]


def large_file(args):
    """One event file of the large set: n events, written with tensorboard's EventFileWriter."""
    out, index, n, first_event, write_expected = args
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    sub = LARGE_RUNS[index % len(LARGE_RUNS)]
    d = os.path.join(out, sub)
    os.makedirs(d, exist_ok=True)
    # Two kinds of file: TF1-style simple_value (tensorboardX, torch's default) and TF2-style tensors
    # (float_val as torch new_style writes, tensor_content as TF's C++ writer writes).
    style = ("simple_value", "float_val", "tensor_content")[index % 3]
    w = EventFileWriter(d, max_queue_size=1000, flush_secs=3600, filename_suffix=f".{index}")
    md = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tags = ("accuracy", "loss", "learning_rate", "epoch_accuracy")
    empty_shape = tensor_shape_pb2.TensorShapeProto()
    Value, Event, Summary = summary_pb2.Summary.Value, event_pb2.Event, summary_pb2.Summary
    lines = []
    for i in range(n):
        k = first_event + i
        tag = tags[k % len(tags)]
        step = k // len(tags)
        x = ((k * 2654435761) % 1000003) / 1000003.0  # deterministic, spread over [0, 1)
        wall = T0 + k * 0.001
        if style == "simple_value":
            v = Value(tag=tag, simple_value=x)
        elif style == "float_val":
            v = Value(tag=tag, tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[x]))
        else:
            v = Value(tag=tag, tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=empty_shape,
                                                             tensor_content=struct.pack("<f", x)))
        if i < len(tags) and style != "simple_value":
            v.metadata.CopyFrom(md)
        w.add_event(Event(wall_time=wall, step=step, summary=Summary(value=[v])))
        if write_expected:
            lines.append((tag, step, wall, x))
    w.close()
    (name,) = [f for f in os.listdir(d) if f.endswith(f".{index}")]
    rel = os.path.join(sub, name)
    if write_expected:
        with open(os.path.join(out, f"expected.{index}.part"), "w") as f:
            for tag, step, wall, x in lines:
                f.write(json.dumps({"file": rel, "tag": tag, "step": step, "wall_time": wall,
                                    "value": struct.unpack("<f", struct.pack("<f", x))[0], "dtype": "float32",
                                    "encoding": style, "given": x}) + "\n")
    return rel, os.path.getsize(os.path.join(out, rel))


def large(out, events, files, jobs, write_expected):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    per = [events // files + (i < events % files) for i in range(files)]
    firsts = [sum(per[:i]) for i in range(files)]
    t = time.time()
    with multiprocessing.Pool(jobs) as pool:
        done = pool.map(large_file, [(out, i, per[i], firsts[i], write_expected) for i in range(files)])
    dt = time.time() - t
    if write_expected:
        with open(os.path.join(out, "expected.jsonl"), "w") as f:
            for i in range(files):
                part = os.path.join(out, f"expected.{i}.part")
                with open(part) as p:
                    shutil.copyfileobj(p, f)
                os.remove(part)
    size = sum(s for _, s in done)
    print(f"large: {events} scalar events in {files} files ({size / 1e6:.1f} MB) written in {dt:.1f} s "
          f"with {jobs} processes: {events / dt:,.0f} events/s", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sp = ap.add_subparsers(dest="cmd", required=True)
    s = sp.add_parser("small")
    s.add_argument("out")
    s.add_argument("--only", type=lambda x: x.split(","), help=",".join(SMALL))
    g = sp.add_parser("large")
    g.add_argument("out")
    g.add_argument("--events", type=int, default=1_000_000)
    g.add_argument("--files", type=int, default=8)
    g.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    g.add_argument("--no-expected", action="store_true")
    o = sp.add_parser("_one")
    o.add_argument("name")
    o.add_argument("out")
    a = ap.parse_args()
    if a.cmd == "small":
        small(a.out, a.only)
    elif a.cmd == "large":
        large(a.out, a.events, a.files, a.jobs, not a.no_expected)
    else:
        one(a.name, a.out)


if __name__ == "__main__":
    main()

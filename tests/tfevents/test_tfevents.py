"""Checks of the TensorBoard fixtures and of the Katib oracle (pytest; see README.md for the venv).

    python -m pytest -q tests/tfevents

* every fixture's expected.jsonl is what its event files hold (read with this file's own small
  TFRecord reader and tensorboard's protos), damaged ones up to the damage;
* Katib's collector, run through katib_oracle.py, still reports katib_expected.jsonl;
* the oracle's command line prints Katib's JSON lines;
* tf_make_ndarray.make_ndarray equals the real tf.make_ndarray (skipped without TensorFlow);
* make_fixtures.py large + bench_accumulator.py work (on a small count).
"""

import json
import math
import os
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
sys.path.insert(0, HERE)

import make_fixtures  # noqa: E402


def fixture_dirs():
    out = []
    for root, _, files in os.walk(FIXTURES):
        if "expected.jsonl" in files:
            out.append(os.path.relpath(root, FIXTURES))
    return sorted(out)


def read_until_damage(path):
    """Scalar events of a file, stopping at the first bad record (as TensorBoard's readers stop)."""
    from tensorboard.compat.proto import event_pb2

    good = bytearray()
    data = open(path, "rb").read()
    pos = 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        end = pos + 12 + n + 4
        if end > len(data):
            break
        rec = data[pos:end]
        if struct.unpack_from("<I", rec, 8)[0] != make_fixtures.masked_crc32c(rec[:8]):
            break
        if struct.unpack_from("<I", rec, 12 + n)[0] != make_fixtures.masked_crc32c(rec[12 : 12 + n]):
            break
        try:
            event_pb2.Event.FromString(bytes(rec[12 : 12 + n]))
        except Exception:
            pos = end  # framing intact, payload not an Event: skip it
            continue
        good += rec
        pos = end
    tmp = path + ".intact-prefix.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(good)
        return make_fixtures.scalar_events(tmp)
    finally:
        os.remove(tmp)


def as_json_value(x):
    return make_fixtures.json_number(x)


@pytest.mark.parametrize("fixture", fixture_dirs())
def test_expected_jsonl_is_what_the_files_hold(fixture):
    d = os.path.join(FIXTURES, fixture)
    want = [json.loads(line) for line in open(os.path.join(d, "expected.jsonl"))]
    assert want, fixture
    files = sorted({w["file"] for w in want})
    got = []
    for rel in files:
        for ev in read_until_damage(os.path.join(d, rel)):
            got.append(dict(ev, file=rel))
    want_sorted = sorted(want, key=lambda w: files.index(w["file"]))  # stable: keeps file order
    assert len(got) == len(want_sorted)
    for g, w in zip(got, want_sorted):
        assert (g["file"], g["tag"], g["step"], g["dtype"], g["encoding"]) == (
            w["file"], w["tag"], w["step"], w["dtype"], w["encoding"]), (g, w)
        gv, wv = as_json_value(g["value"]), w["value"]
        if isinstance(gv, float) and math.isnan(gv):
            assert wv == "NaN"
        else:
            assert gv == wv and (not isinstance(gv, float) or math.copysign(1, gv) == math.copysign(1, wv)), (g, w)
        if w["wall_time"] is not None:
            assert g["wall_time"] == w["wall_time"]
        else:
            lo, hi = w["wall_time_range"]
            assert lo - 1e-3 <= g["wall_time"] <= hi + 1e-3
        if "shape" in w:
            assert g["shape"] == w["shape"]


def test_katib_reports_katib_expected_jsonl():
    r = subprocess.run([sys.executable, os.path.join(HERE, "katib_cases.py"), "check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_oracle_command_line():
    env = dict(os.environ, TZ="UTC")
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "katib_oracle.py"), "-path", "tf1_simple_value", "-m", "loss;accuracy"],
        cwd=FIXTURES, env=env, capture_output=True, text=True, check=True,
    )
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    # Katib's order: tag by tag (first seen first), each tag's matching metric names, then its events
    assert lines[0] == {"name": "accuracy", "value": "0.10000000149011612", "time_stamp": "2023-11-14T22:13:20+00:00"}
    assert {"name": "loss", "value": "1.0", "time_stamp": "2023-11-14T22:15:00+00:00"} in lines
    assert all(set(line) == {"name", "value", "time_stamp"} for line in lines)
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "katib_oracle.py"), "-path", "tf1_simple_value", "-m", "nothing",
         "--now", "1700000000"],
        cwd=FIXTURES, env=env, capture_output=True, text=True, check=True,
    )
    assert json.loads(r.stdout) == {"name": "nothing", "value": "unavailable", "time_stamp": "2023-11-14T22:13:20+00:00"}


def tensor_zoo():
    """TensorProtos of every dtype and encoding make_ndarray handles, and its padding / empty cases."""
    import numpy as np
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2

    def shape(*dims):
        return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])

    T = tensor_pb2.TensorProto
    zoo = [
        T(dtype=1, tensor_shape=shape(), float_val=[0.1]),
        T(dtype=1, tensor_shape=shape(3), float_val=[0.1]),  # one value fills the shape
        T(dtype=1, tensor_shape=shape(4), float_val=[0.1, 0.2]),  # padded with the last
        T(dtype=1, tensor_shape=shape(2), float_val=[]),  # zeros
        T(dtype=1, tensor_shape=shape(), float_val=[]),
        T(dtype=1, tensor_shape=shape(), tensor_content=struct.pack("<f", 1e-7)),
        T(dtype=1, tensor_shape=shape(2, 2), tensor_content=struct.pack("<4f", 1, 2, 3.5, float("nan"))),
        T(dtype=2, tensor_shape=shape(), double_val=[1 / 3]),
        T(dtype=2, tensor_shape=shape(), tensor_content=struct.pack("<d", 1e300)),
        T(dtype=19, tensor_shape=shape(), half_val=[int(np.array(0.1, np.float16).view(np.uint16))]),
        T(dtype=14, tensor_shape=shape(), half_val=[0x3DCD]),  # bfloat16 0.1
        T(dtype=14, tensor_shape=shape(), tensor_content=b"\xcd\x3d"),
        T(dtype=3, tensor_shape=shape(), int_val=[-7]),
        T(dtype=4, tensor_shape=shape(2), int_val=[1, 255]),
        T(dtype=5, tensor_shape=shape(), int_val=[-300]),
        T(dtype=6, tensor_shape=shape(), int_val=[-8]),
        T(dtype=17, tensor_shape=shape(), int_val=[65535]),
        T(dtype=9, tensor_shape=shape(), int64_val=[2**53 + 1]),
        T(dtype=9, tensor_shape=shape(), tensor_content=struct.pack("<q", -(2**63))),
        T(dtype=22, tensor_shape=shape(), uint32_val=[2**32 - 1]),
        T(dtype=23, tensor_shape=shape(), uint64_val=[2**64 - 1]),
        T(dtype=10, tensor_shape=shape(), bool_val=[True]),
        T(dtype=8, tensor_shape=shape(), scomplex_val=[1.5, -2]),
        T(dtype=18, tensor_shape=shape(), dcomplex_val=[0.1, 0.2]),
        T(dtype=7, tensor_shape=shape(), string_val=[b"best so far"]),
        T(dtype=7, tensor_shape=shape(3), string_val=[b"a"]),
        T(dtype=7, tensor_shape=shape(2), string_val=[]),
        T(dtype=11, tensor_shape=shape(), int_val=[-5]),  # qint8
        T(dtype=24, tensor_shape=shape(), float8_val=b"\x3c"),  # float8_e5m2
        T(dtype=25, tensor_shape=shape(2), float8_val=b"\x38\x40"),  # float8_e4m3fn
        T(dtype=29, tensor_shape=shape(), int_val=[-3]),  # int4
    ]
    return zoo


def test_make_ndarray_matches_tensorflow():
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2

    import tf_make_ndarray

    def tf_proto(t):
        return tf_tensor_pb2.TensorProto.FromString(t.SerializeToString())

    for t in tensor_zoo():
        real = tf.make_ndarray(tf_proto(t))
        mine = tf_make_ndarray.make_ndarray(t)
        assert str(mine) == str(real), t
        assert mine.dtype == real.dtype and mine.shape == real.shape, t
    for dtype in (20, 21, 0):  # resource, variant, invalid: both raise (TF a KeyError for some), and
        t = tensor_zoo()[0].__class__(dtype=dtype)  # Katib's parse_file drops the file either way
        with pytest.raises(TypeError):
            tf_make_ndarray.make_ndarray(t)
        with pytest.raises(Exception):
            tf.make_ndarray(tf_proto(t))


def test_make_ndarray_strings_without_tensorflow():
    """What the oracle prints for the zoo (str of the array, as Katib formats a tensor), pinned here
    so that CI, which has no TensorFlow, still checks it; test_make_ndarray_matches_tensorflow
    checks the same against TF where TF is installed."""
    import tf_make_ndarray

    got = [str(tf_make_ndarray.make_ndarray(t)) for t in tensor_zoo()]
    want = json.load(open(os.path.join(HERE, "make_ndarray_strings.json")))
    assert got == want


def test_large_generator_and_benchmark(tmp_path):
    out = tmp_path / "large"
    subprocess.run([sys.executable, os.path.join(HERE, "make_fixtures.py"), "large", str(out),
                    "--events", "3001", "--files", "3", "--jobs", "2"], check=True, capture_output=True)
    lines = [json.loads(line) for line in open(out / "expected.jsonl")]
    assert len(lines) == 3001
    for rel in sorted({line["file"] for line in lines}):
        got = make_fixtures.scalar_events(str(out / rel))
        want = [line for line in lines if line["file"] == rel]
        assert [(g["tag"], g["step"], g["wall_time"], g["value"], g["encoding"]) for g in got] == [
            (w["tag"], w["step"], w["wall_time"], w["value"], w["encoding"]) for w in want]
    r = subprocess.run([sys.executable, os.path.join(HERE, "bench_accumulator.py"), str(out)],
                       check=True, capture_output=True, text=True)
    res = json.loads(r.stdout)
    assert res["files"] == 3 and res["records"] == 3001 + 3 and res["values_kept"] == 3001

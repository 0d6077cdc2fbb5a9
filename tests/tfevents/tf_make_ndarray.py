"""`tf.make_ndarray` of TensorFlow 2.16.1, without TensorFlow: numpy + ml_dtypes only.

Katib's `tfevent_loader.py` formats a tensor summary as `str(tf.make_ndarray(tensor.tensor_proto))`, and
Katib's image pins tensorflow==2.16.1. This module states that function's behaviour
(`tensorflow/python/framework/tensor_util.py`, `MakeNdarray`, in TF 2.16.1) in its own words, so that
the oracle can run Katib's loader with a ~160 MB venv instead of a ~2 GB one:

* dtype: the TensorProto's DataType mapped to the numpy dtype TF uses (`tensorflow/python/framework/
  dtypes.py`): the quantized types are TF's one-field structured dtypes, bfloat16 / float8 / int4 come
  from ml_dtypes (TF 2.16.1 depends on ml-dtypes~=0.3.1), strings are numpy object arrays of bytes.
* `tensor_content` non-empty: the raw little-endian buffer, reshaped.
* else the typed field of the dtype (`half_val` holds float16 / bfloat16 bit patterns, `float8_val`
  the float8 bytes); no values at all gives zeros of the shape; fewer values than elements are padded
  by repeating the last one (numpy "edge" padding), and strings the same way.
* an unsupported dtype (resource, variant, ...) raises TypeError, as TF does.

The `tensorboard` package ships its own older copy of this function (`tensorboard/util/tensor_util.py`),
which differs: it cannot build bfloat16 arrays (its stub dtype has no numpy type), and it neither pads
nor zero-fills. test_tfevents.py checks this module against the real TensorFlow where it is installed.
"""

import numpy as np

try:
    import ml_dtypes
except ImportError:  # bfloat16 / float8 / int4 tensors then raise TypeError
    ml_dtypes = None


def _ml(name):
    if ml_dtypes is None:
        return None
    return np.dtype(getattr(ml_dtypes, name))


# DataType enum values (tensorboard/compat/proto/types.proto) -> numpy dtype, as TF 2.16.1 maps them.
_NUMPY = {
    1: np.dtype(np.float32),  # DT_FLOAT
    2: np.dtype(np.float64),  # DT_DOUBLE
    3: np.dtype(np.int32),  # DT_INT32
    4: np.dtype(np.uint8),  # DT_UINT8
    5: np.dtype(np.int16),  # DT_INT16
    6: np.dtype(np.int8),  # DT_INT8
    7: np.dtype(object),  # DT_STRING
    8: np.dtype(np.complex64),  # DT_COMPLEX64
    9: np.dtype(np.int64),  # DT_INT64
    10: np.dtype(np.bool_),  # DT_BOOL
    11: np.dtype([("qint8", np.int8)]),  # DT_QINT8
    12: np.dtype([("quint8", np.uint8)]),  # DT_QUINT8
    13: np.dtype([("qint32", np.int32)]),  # DT_QINT32
    14: _ml("bfloat16"),  # DT_BFLOAT16
    15: np.dtype([("qint16", np.int16)]),  # DT_QINT16
    16: np.dtype([("quint16", np.uint16)]),  # DT_QUINT16
    17: np.dtype(np.uint16),  # DT_UINT16
    18: np.dtype(np.complex128),  # DT_COMPLEX128
    19: np.dtype(np.float16),  # DT_HALF
    22: np.dtype(np.uint32),  # DT_UINT32
    23: np.dtype(np.uint64),  # DT_UINT64
    24: _ml("float8_e5m2"),  # DT_FLOAT8_E5M2
    25: _ml("float8_e4m3fn"),  # DT_FLOAT8_E4M3FN
    29: _ml("int4"),  # DT_INT4
    30: _ml("uint4"),  # DT_UINT4
}

# Which repeated field holds the values of each dtype when tensor_content is empty.
_FIELD = {
    19: "half_val", 14: "half_val",
    24: "float8_val", 25: "float8_val",
    1: "float_val",
    2: "double_val",
    3: "int_val", 4: "int_val", 17: "int_val", 5: "int_val", 6: "int_val",
    13: "int_val", 12: "int_val", 11: "int_val", 15: "int_val", 16: "int_val", 29: "int_val", 30: "int_val",
    9: "int64_val",
    22: "uint32_val",
    23: "uint64_val",
    10: "bool_val",
}


def make_ndarray(tensor):
    """A numpy array with the shape and data of the TensorProto `tensor`, as tf.make_ndarray makes it."""
    shape = [d.size for d in tensor.tensor_shape.dim]
    num_elements = np.prod(shape, dtype=np.int64)
    dtype = _NUMPY.get(tensor.dtype)
    if dtype is None:
        raise TypeError(f"Unsupported tensor type: {tensor.dtype}.")

    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).copy().reshape(shape)

    if tensor.dtype == 7:  # DT_STRING
        values = list(tensor.string_val)
        padding = num_elements - len(values)
        if padding > 0:
            last = values[-1] if values else ""
            values.extend([last] * padding)
        return np.array(values, dtype=dtype).reshape(shape)

    if tensor.dtype in (19, 14):  # the bit patterns of float16 / bfloat16
        values = np.fromiter(tensor.half_val, dtype=np.uint16)
        values.dtype = dtype
    elif tensor.dtype in (24, 25):
        values = np.fromiter(tensor.float8_val, dtype=np.uint8)
        values.dtype = dtype
    elif tensor.dtype == 8:  # complex64: (re, im) pairs
        it = iter(tensor.scomplex_val)
        values = np.array([complex(a, b) for a, b in zip(it, it)], dtype=dtype)
    elif tensor.dtype == 18:
        it = iter(tensor.dcomplex_val)
        values = np.array([complex(a, b) for a, b in zip(it, it)], dtype=dtype)
    elif tensor.dtype in _FIELD:
        values = np.fromiter(getattr(tensor, _FIELD[tensor.dtype]), dtype=dtype)
    else:
        raise TypeError(f"Unsupported tensor type: {tensor.dtype}.")

    if values.size == 0:
        return np.zeros(shape, dtype)
    if values.size != num_elements:
        values = np.pad(values, (0, num_elements - values.size), "edge")
    return values.reshape(shape)

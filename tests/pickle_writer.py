"""Write pickles opcode by opcode, the way Python 2 wrote the official SMPL files (protocol 2), so that
tests can make chumpy- and scipy-bearing model files without chumpy or old scipy installed."""

from __future__ import annotations

import struct

import numpy as np
import scipy.sparse

MARK, STOP, TUPLE, REDUCE, BUILD, NONE = b"(", b".", b"t", b"R", b"b", b"N"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, SETITEMS, APPENDS = b"}", b"]", b")", b"u", b"e"
NEWOBJ, NEWFALSE, TUPLE1, TUPLE3 = b"\x81", b"\x89", b"\x85", b"\x87"
PROTO2 = b"\x80\x02"


def global_(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def py2_str(s: str | bytes) -> bytes:
    """A Python 2 byte string (str): SHORT_BINSTRING or BINSTRING."""
    data = s.encode("latin1") if isinstance(s, str) else s
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<I", len(data)) + data


def unicode_(s: str) -> bytes:
    data = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def int_(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    return b"J" + struct.pack("<i", n)


def tuple_(items: list[bytes]) -> bytes:
    return MARK + b"".join(items) + TUPLE


def dict_(items: dict[str, bytes]) -> bytes:
    return EMPTY_DICT + MARK + b"".join(py2_str(k) + v for k, v in items.items()) + SETITEMS


def dtype_(dt: np.dtype) -> bytes:
    dt = np.dtype(dt)
    order = "|" if dt.itemsize == 1 else "<"
    state = tuple_([int_(3), py2_str(order), NONE, NONE, NONE, int_(-1), int_(-1), int_(0)])
    return global_("numpy", "dtype") + tuple_([py2_str(dt.str[1:]), int_(0), int_(1)]) + REDUCE + state + BUILD


def ndarray(a: np.ndarray, numpy_core: str = "numpy.core.multiarray") -> bytes:
    a = np.ascontiguousarray(a)
    head = global_(numpy_core, "_reconstruct") + tuple_([global_("numpy", "ndarray"), tuple_([int_(0)]), py2_str("b")]) + REDUCE
    shape = tuple_([int_(n) for n in a.shape])
    state = tuple_([int_(1), shape, dtype_(a.dtype), NEWFALSE, py2_str(a.tobytes())])
    return head + state + BUILD


def py2_set() -> bytes:
    return global_("__builtin__", "set") + EMPTY_LIST + TUPLE1 + REDUCE


def chumpy_ch(a: np.ndarray, style: str = "newobj") -> bytes:
    """chumpy.ch.Ch holding `a`, pickled as protocol 2 (NEWOBJ) or protocol 0/1 (copy_reg._reconstructor)."""
    if style == "newobj":
        head = global_("chumpy.ch", "Ch") + EMPTY_TUPLE + NEWOBJ
    else:
        head = global_("copy_reg", "_reconstructor") + tuple_([global_("chumpy.ch", "Ch"), global_("__builtin__", "object"), NONE]) + REDUCE
    state = dict_({"x": ndarray(a), "_dirty_vars": py2_set(), "_itr": NONE, "_depends_on_deps": EMPTY_DICT,
                   "_make_dense": NEWFALSE, "_make_sparse": NEWFALSE})
    return head + state + BUILD


def sparse_csc(m: scipy.sparse.csc_matrix, module: str = "scipy.sparse.csc") -> bytes:
    m = scipy.sparse.csc_matrix(m)
    state = dict_({"_shape": tuple_([int_(n) for n in m.shape]), "maxprint": int_(50), "indices": ndarray(m.indices),
                   "indptr": ndarray(m.indptr), "data": ndarray(m.data), "format": py2_str("csc")})
    return global_(module, "csc_matrix") + EMPTY_TUPLE + NEWOBJ + state + BUILD


def model_pickle(values: dict[str, bytes]) -> bytes:
    """A protocol-2 pickle of a dict whose values are already-encoded objects."""
    return PROTO2 + dict_(values) + STOP

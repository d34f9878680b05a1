"""Read the official SMPL `.pkl` files without chumpy, and without letting a pickle run code.

The official files were written by Python 2 and hold chumpy `Ch` objects (arrays wrapped in an
autodiff graph) and scipy sparse matrices, pickled under `scipy.sparse.csc` (old scipy) or
`scipy.sparse._csc` (scipy >= 1.8). A plain `pickle.load` needs chumpy installed (which no longer
installs on current Python) and would execute any callable a pickle names.

`load_smpl_pickle` uses an unpickler whose `find_class` admits an explicit allow-list only: numpy's
array and dtype reconstructors, the sparse matrix classes and chumpy's `Ch`, each mapped to a safe
stand-in (chumpy and scipy classes are never imported or instantiated from the pickle). Anything else,
`os.system` or `builtins.eval` included, raises `UnsafePickleError` before it is called.

A file that is no SMPL pickle at all (empty, the web page a browser saved instead of the download, a
text file) or one cut short raises `NotAnSmplPickleError`, naming the file and where to get it.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from pipeline.io import failed_download


SMPL_REGISTER_URL = "https://smpl.is.tue.mpg.de"
_GET_IT_AGAIN = f"register at {SMPL_REGISTER_URL} and download \"SMPL for Python\" again"


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a callable outside the allow-list; nothing it names was run."""


class NotAnSmplPickleError(pickle.UnpicklingError):
    """The file is empty, a web page, text, truncated or otherwise not a readable pickle."""


class _ChumpyArray:
    """Stand-in for chumpy.ch.Ch: keeps the pickled state; the value is its `x` array."""

    def __setstate__(self, state: dict) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        x = self.state.get("x") if isinstance(getattr(self, "state", None), dict) else None
        if not isinstance(x, np.ndarray):
            raise pickle.UnpicklingError(
                "a chumpy object in this file holds no array 'x': only plain chumpy arrays (Ch) are "
                "supported, not chumpy expressions"
            )
        return x


class _SparseMatrix:
    """Stand-in for a pickled scipy sparse matrix: rebuilt from its (data, indices, indptr, shape)."""

    format = "csc"

    def __setstate__(self, state: dict) -> None:
        self.state = state

    def to_scipy(self) -> scipy.sparse.spmatrix:
        s = getattr(self, "state", None)
        try:
            shape = tuple(int(n) for n in s.get("_shape", s.get("shape")))
            arrays = (np.asarray(s["data"]), np.asarray(s["indices"]), np.asarray(s["indptr"]))
        except (AttributeError, KeyError, TypeError) as e:
            raise pickle.UnpicklingError(f"a pickled sparse matrix lacks its arrays: {e}") from e
        build = scipy.sparse.csc_matrix if self.format == "csc" else scipy.sparse.csr_matrix
        return build(arrays, shape=shape)


class _CsrMatrix(_SparseMatrix):
    format = "csr"


def _reconstructor(cls, base, state):
    """copyreg._reconstructor for the allowed stand-in classes only (pickle protocols 0 and 1)."""
    if cls not in (_ChumpyArray, _SparseMatrix, _CsrMatrix) or base is not object or state is not None:
        raise UnsafePickleError(f"copyreg._reconstructor called with {cls!r}, {base!r}: refused")
    return object.__new__(cls)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode as Python 3 writes bytes into protocol-2 pickles (latin-1 only)."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r}: refused")
    return text.encode("latin1")


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


_RECONSTRUCT, _SCALAR = _numpy_reconstruct()

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1_encode,
    ("chumpy.ch", "Ch"): _ChumpyArray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("__builtin__", "set"): set,
    ("__builtin__", "object"): object,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(_module, "scalar")] = _SCALAR
for _module in ("scipy.sparse.csc", "scipy.sparse._csc"):
    _ALLOWED[(_module, "csc_matrix")] = _SparseMatrix
for _module in ("scipy.sparse.csr", "scipy.sparse._csr"):
    _ALLOWED[(_module, "csr_matrix")] = _CsrMatrix


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        # latin1 reads Python 2 byte strings (numpy's raw array data) unchanged.
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: the pickle names {module}.{name}, which is not among the numpy, scipy "
                "and chumpy classes an SMPL model file holds; refusing to load it (nothing was run). "
                "If this is a genuine model file, convert it on a trusted machine to .npz."
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in a model file")


def _to_plain(value: Any) -> Any:
    if isinstance(value, _ChumpyArray):
        return value.to_numpy()
    if isinstance(value, _SparseMatrix):
        return value.to_scipy()
    return value


def loads_smpl_pickle(data: bytes, source: str = "<bytes>") -> dict[str, Any]:
    """Unpickle an SMPL model dictionary from bytes; chumpy arrays become numpy arrays."""
    problem = failed_download(data[:4096])
    if problem is not None:
        raise NotAnSmplPickleError(f"{source}: the file {problem}, not an SMPL pickle: the download probably failed; "
                                   f"{_GET_IT_AGAIN}")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except EOFError:
        raise NotAnSmplPickleError(f"{source}: the SMPL pickle is truncated ({len(data)} bytes, ending before the pickle "
                                   f"does: an interrupted download or copy); {_GET_IT_AGAIN}") from None
    except Exception as e:  # the pickle machinery raises many types on bytes that are not a pickle
        if "truncated" in str(e):
            raise NotAnSmplPickleError(f"{source}: the SMPL pickle is truncated ({len(data)} bytes, ending before the "
                                       f"pickle does: an interrupted download or copy); {_GET_IT_AGAIN}") from None
        raise NotAnSmplPickleError(f"{source}: not an SMPL pickle (it starts with {data[:20]!r}; the pickle reader says: "
                                   f"{type(e).__name__}: {e}); {_GET_IT_AGAIN}") from None
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"{source}: expected a dictionary of model arrays, got {type(obj).__name__}")
    return {str(k): _to_plain(v) for k, v in obj.items()}


def load_smpl_pickle(path: str | Path) -> dict[str, Any]:
    """Load an official SMPL `.pkl` into a dict of numpy arrays (sparse J_regressor stays sparse)."""
    path = Path(path)
    return loads_smpl_pickle(path.read_bytes(), source=str(path))

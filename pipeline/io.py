"""File helpers shared by every stage: atomic writes, so a killed job leaves nothing complete-looking, and
reading images and hashing files."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A writer killed outright (SIGKILL, node failure) cannot remove its temporary file; the next write
    of the same output removes such leftovers first (one job writes an output at a time, as in a
    Snakemake run), so a resumed run leaves none behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    """Write arrays to `path` atomically (no pickled objects: every value must be a plain array)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (provenance of inputs and outputs)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_image(path) -> tuple[np.ndarray | None, str, bytes | None]:
    """(RGB uint8 image or None, the reason when None, the file's bytes or None): the file is read once,
    so callers that also hash it do not read it again."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, f"missing image file {path}", None
    except OSError as e:
        return None, f"corrupt image {path}: {e}", None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB")), "", data
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        return None, f"corrupt image {path}: {e}", data


def failed_download(head: bytes) -> str | None:
    """What the first bytes of a file that should be a binary download say went wrong (the file is
    empty, an HTML page a host or browser saved instead, or a Git LFS pointer), or None."""
    if not head:
        return "is empty (0 bytes)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return "is an HTML page (the host or browser saved its web page instead of the file)"
    if text.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer (fetch the real file with git lfs pull)"
    return None

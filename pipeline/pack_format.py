"""The packed HDF5 format: one file per dataset split holding annotations, image crops, part labels,
parser labels, flags, the clothing prior, and the provenance of every input. `pipeline.pack` writes
and verifies it; the training loader (`trainers.packed`) reads it through this module only.

Layout (N rows, label crop R x R, image crop C x C with C = round(R * context)):

    /annotations/<key>      every array of the annotation file, row-aligned (strings as UTF-8 bytes)
    /images                 JPEG bytes per row (variable length), or (N, C, C, 3) uint8 with image_format raw
    /image_crc32            (N,) uint32 CRC-32 of each row's stored bytes (JPEG, or the raw crop; 0 without an image)
    /image_ok, /image_error whether the row's photo could be read, and why not
    /parts/labels           (N, R, R) uint8, 0 background, 1..24 SMPL parts (PARE)
    /parts/absent, /parts/skipped, /parts/cam_t
    /parsing/labels         (N, R, R) uint8 raw CIHP labels (DSR), with box, min_clothing_valid,
                            no_keypoints, skipped (see pipeline.parsing for the cleaning they drive)
    /flags/has_smpl, /flags/has_parts, /flags/has_parser, /flags/has_image
    /prior/vertex_prior, /prior/face_prior   the clothing prior the file was packed with (when given)

The image crop shares the label crop's centre and pixel density and covers `context` times its side,
so the label crop is the image crop's centre R x R window and augmentation keeps context.

File attributes: format_version, dataset, rows, image_format, image_resolution, label_resolution,
context, `inputs` (JSON: path and SHA-256 of every input: annotations, each image (combined into one
image-list hash), body model, part-label and parser shards, parser weights, prior) and `config` (JSON
of the config subset that shaped the file, with its hash), and `content_sha256` (JSON: per dataset,
recomputed by `verify`). Written under a temporary name and renamed.

Damage: every fixed-size dataset is chunked with HDF5's Fletcher-32 checksum filter (label maps and raw
image crops one chunk per row), so reading a damaged chunk fails instead of returning wrong values.
HDF5 filters refuse variable-length data, so every image row also carries a CRC-32 in /image_crc32,
which the loader checks when it reads the row (for raw crops it also covers Fletcher-32's blind spot:
a 16-bit word 0x0000 and 0xFFFF sum alike; gzip's own Adler-32 covers the label maps). Strings
(annotations/imgname, image_error) are unchecked. Format 2 added both; format 1 files must be repacked.
"""

from __future__ import annotations

import hashlib
import io
import zlib

import numpy as np
from PIL import Image

from pipeline.labelsets import NUM_CIHP_CLASSES, NUM_PART_CLASSES

FORMAT_VERSION = 2  # 2: Fletcher-32 on every fixed-size dataset, /image_crc32
PART_MAX = NUM_PART_CLASSES - 1  # largest valid label of a part map
CIHP_MAX = NUM_CIHP_CLASSES - 1  # largest valid label of a parser map (255: ignored)


def checksummed(shape: tuple) -> dict:
    """create_dataset options for a fixed-size dataset: chunked with HDF5's Fletcher-32 checksum
    (an empty dataset cannot be chunked, and has nothing to damage)."""
    return {"fletcher32": True} if len(shape) and all(shape) else {}


def image_crc32(data: np.ndarray) -> int:
    """CRC-32 of a row's stored image: JPEG bytes or a raw crop (uint8 arrays)."""
    return zlib.crc32(np.ascontiguousarray(data, dtype=np.uint8).data)


def encode_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def decode_jpeg_image(data: np.ndarray):
    """Stored JPEG bytes -> a decoded PIL RGB image (the training loader warps it directly)."""
    image = Image.open(io.BytesIO(data.tobytes()))
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_jpeg(data: np.ndarray) -> np.ndarray:
    return np.asarray(decode_jpeg_image(data))


def utf8_strings(values) -> np.ndarray:
    return np.array([str(v).encode("utf-8") for v in values], dtype=object)


def content_hash(dset) -> str:
    """SHA-256 of a dataset's values, row block by row block (never the whole array in memory)."""
    import h5py  # the loader imports this module; h5py is needed only here

    h = hashlib.sha256()
    h.update(str(dset.shape).encode() + str(dset.dtype).encode())
    n = dset.shape[0] if dset.shape else 0
    if not dset.shape:
        h.update(np.asarray(dset[()]).tobytes())
        return h.hexdigest()
    vlen = h5py.check_vlen_dtype(dset.dtype) is not None or dset.dtype == object
    step = 256
    for start in range(0, n, step):
        block = dset[start:start + step]
        if vlen:
            for item in block:
                data = item if isinstance(item, (bytes, bytearray)) else np.asarray(item).tobytes()
                h.update(len(data).to_bytes(8, "little") + data)
        else:
            h.update(np.ascontiguousarray(block).tobytes())
    return h.hexdigest()



"""The pack stage: one HDF5 file per dataset split (layout: `pipeline.pack_format`), its inputs hashed
into its attributes, written under a temporary name and renamed; `verify` re-reads a file and
recomputes its content hashes and (optionally) its inputs' hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline import cli
from pipeline.config import schema_defaults
from pipeline.crop import context_crop_matrix
from pipeline.io import sha256_file
from pipeline.labelsets import IGNORE
from pipeline.pack_format import (CIHP_MAX, FORMAT_VERSION, PART_MAX, checksummed, content_hash, decode_jpeg,
                                  encode_jpeg, image_crc32, utf8_strings)

log = logging.getLogger("pipeline.pack")
STAGE_DEFAULTS = schema_defaults("pack")  # the config schema: the one place the pack's defaults live


@dataclass
class PackSettings:
    label_resolution: int = schema_defaults("labels")["resolution"]
    context: float = STAGE_DEFAULTS["context"]  # image crop side / label crop side
    image_format: str = STAGE_DEFAULTS["image_format"]  # "jpeg" or "raw" (bench/loader.py measures the trade-off)
    jpeg_quality: int = STAGE_DEFAULTS["jpeg_quality"]
    label_compression: int = 1  # gzip level for label maps (one chunk per row)

    @property
    def image_resolution(self) -> int:
        return int(round(self.label_resolution * self.context))


def image_crop_matrix(center, scale: float, settings: PackSettings) -> np.ndarray:
    return context_crop_matrix(center, scale, settings.context, settings.image_resolution)


def pack_split(dataset: str, annotations_file: str, images_root: str, out: str, settings: PackSettings,
               partseg_index: str | None = None, parsing_index: str | None = None, body_file: str | None = None,
               parser_weights: str | None = None, prior_file: str | None = None, config_subset: dict | None = None,
               progress: bool = True) -> dict:
    import h5py
    from tqdm import tqdm

    from pipeline.crop import warp
    from pipeline.datasets import AnnotationError, load_annotations
    from pipeline.io import atomic_output, load_image
    from pipeline.shards import load_shards

    ann = load_annotations(annotations_file, image_root=images_root, name=dataset)
    n = len(ann)
    ann.require_some_image(range(n))
    R, C = settings.label_resolution, settings.image_resolution
    inputs = {"annotations": {"path": str(annotations_file), "sha256": sha256_file(annotations_file)}}
    for key, path in (("body_model", body_file), ("parser_weights", parser_weights), ("prior", prior_file)):
        if path is not None:
            inputs[key] = {"path": str(path), "sha256": sha256_file(path)}
    parts = parsing = None
    if partseg_index is not None:
        parts = load_shards(partseg_index, ("index", "parts", "absent", "skipped", "cam_t"))
        inputs["part_labels"] = _shard_hashes(partseg_index)
        if not np.array_equal(parts["index"], np.arange(n)) or parts["parts"].shape[-1] != R:
            raise ValueError(f"{partseg_index}: part labels cover rows {parts['index'][:1]}..{parts['index'][-1:]} at "
                             f"{parts['parts'].shape[-1]} px; {annotations_file} has {n} rows and the pack needs {R} px: rerun partseg")
    if parsing_index is not None:
        parsing = load_shards(parsing_index, ("index", "labels", "box", "min_clothing_valid", "no_keypoints", "skipped"))
        inputs["parser_labels"] = _shard_hashes(parsing_index)
        if not np.array_equal(parsing["index"], np.arange(n)) or parsing["labels"].shape[-1] != R:
            raise ValueError(f"{parsing_index}: parser labels do not cover the {n} rows of {annotations_file} at {R} px: rerun parsing")
    config_json = json.dumps(config_subset or {}, sort_keys=True)
    image_hash = hashlib.sha256()
    counts = {"rows": n, "images_missing": 0}
    with atomic_output(out) as tmp:
        with h5py.File(tmp, "w") as f:
            grp = f.create_group("annotations")
            for key, value in ann.arrays.items():
                if value.dtype.kind in "US":
                    grp.create_dataset(key, data=utf8_strings(value), dtype=h5py.string_dtype())
                else:
                    grp.create_dataset(key, data=value, **checksummed(value.shape))
            if settings.image_format == "jpeg":
                # HDF5 filters (Fletcher-32 included) refuse variable-length data: a CRC-32 per row instead
                images = f.create_dataset("images", (n,), dtype=h5py.vlen_dtype(np.uint8))
            elif settings.image_format == "raw":
                images = f.create_dataset("images", (n, C, C, 3), dtype=np.uint8, chunks=(1, C, C, 3), fletcher32=True)
            else:
                raise ValueError(f"unknown image_format {settings.image_format!r} (jpeg or raw)")
            image_ok = np.zeros(n, bool)
            image_error = []
            # Fletcher-32 cannot tell a 16-bit word 0x0000 from 0xFFFF (zeroed white pixels pass): a CRC-32 per crop too
            crc = np.zeros(n, np.uint32)
            for i in tqdm(range(n), desc=f"pack {dataset}", disable=not progress, mininterval=5):
                ann.check_row(i)
                path = ann.image_path(i)
                photo, problem, data = load_image(path)
                image_error.append(problem)
                content = "missing" if data is None else hashlib.sha256(data).hexdigest()
                image_hash.update(f"{ann['imgname'][i]}:{content}\n".encode())
                if photo is None:
                    continue
                crop = warp(photo, image_crop_matrix(ann["center"][i], ann["scale"][i], settings), (C, C), nearest=False)
                images[i] = stored = encode_jpeg(crop, settings.jpeg_quality) if settings.image_format == "jpeg" else crop
                crc[i] = image_crc32(stored)
                image_ok[i] = True
            if not image_ok.any():
                raise AnnotationError(f"dataset {dataset} ({annotations_file}): none of the {n} images under {images_root} "
                                      f"could be read (e.g. {image_error[0]}): check datasets.{dataset}.images in the config")
            counts["images_missing"] = int((~image_ok).sum())
            inputs["images"] = {"path": str(images_root), "sha256": image_hash.hexdigest(), "count": n}
            f.create_dataset("image_crc32", data=crc, **checksummed(crc.shape))
            f.create_dataset("image_ok", data=image_ok, **checksummed(image_ok.shape))
            f.create_dataset("image_error", data=utf8_strings(image_error), dtype=h5py.string_dtype())
            label_opts = dict(chunks=(1, R, R), compression="gzip", compression_opts=settings.label_compression, fletcher32=True)
            flags = f.create_group("flags")
            flags.create_dataset("has_smpl", data=ann.has_smpl, **checksummed((n,)))
            flags.create_dataset("has_image", data=image_ok, **checksummed((n,)))
            if parts is not None:
                g = f.create_group("parts")
                g.create_dataset("labels", data=parts["parts"], **label_opts)
                for key in ("absent", "skipped", "cam_t"):
                    g.create_dataset(key, data=parts[key], **checksummed(parts[key].shape))
                has_parts = ~(parts["absent"] | parts["skipped"]) & image_ok
                flags.create_dataset("has_parts", data=has_parts, **checksummed((n,)))
                counts["with_parts"] = int(has_parts.sum())
            if parsing is not None:
                g = f.create_group("parsing")
                g.create_dataset("labels", data=parsing["labels"], **label_opts)
                for key in ("box", "min_clothing_valid", "no_keypoints", "skipped"):
                    g.create_dataset(key, data=parsing[key], **checksummed(parsing[key].shape))
                has_parser = ~(parsing["skipped"] | parsing["no_keypoints"]) & image_ok
                flags.create_dataset("has_parser", data=has_parser, **checksummed((n,)))
                counts["with_parser"] = int(has_parser.sum())
            if prior_file is not None:
                with np.load(prior_file, allow_pickle=False) as z:
                    g = f.create_group("prior")
                    for key in ("vertex_prior", "face_prior"):
                        g.create_dataset(key, data=z[key], **checksummed(z[key].shape))
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["dataset"] = dataset
            f.attrs["rows"] = n
            f.attrs["image_format"] = settings.image_format
            f.attrs["image_resolution"] = C
            f.attrs["label_resolution"] = R
            f.attrs["context"] = settings.context
            f.attrs["settings"] = json.dumps(asdict(settings), sort_keys=True)
            f.attrs["inputs"] = json.dumps(inputs, sort_keys=True)
            f.attrs["input_root"] = str(Path.cwd())  # relative input paths are relative to this folder
            f.attrs["config"] = config_json
            f.attrs["config_sha256"] = hashlib.sha256(config_json.encode()).hexdigest()
            content = {}
            f.visititems(lambda name, obj: content.__setitem__(name, content_hash(obj)) if isinstance(obj, h5py.Dataset) else None)
            f.attrs["content_sha256"] = json.dumps(content, sort_keys=True)
    return counts


def _shard_hashes(index_file: str) -> dict:
    index = json.loads(Path(index_file).read_text())
    h = hashlib.sha256()
    for shard in index["shards"]:
        h.update(sha256_file(Path(index_file).parent / shard["file"]).encode())
    return {"path": str(index_file), "sha256": h.hexdigest(), "shards": len(index["shards"])}


# ---------------------------------------------------------------------------------------------------
# verify


def verify(path: str | Path, check_inputs: bool = True) -> tuple[list[str], list[str]]:
    """(faults, notes) of a packed file: structure, dtypes, value ranges, content hashes, and (with
    `check_inputs`) the recorded input hashes against the files where they still exist."""
    import h5py

    faults, notes = [], []
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        return [f"cannot open {path} as HDF5 (truncated or not a packed file): {e}"], notes
    with f:
        try:
            return _verify_open(f, check_inputs, faults, notes)
        except (OSError, KeyError, ValueError, RuntimeError) as e:  # unreadable chunks of a damaged file
            faults.append(f"reading {path} failed: {type(e).__name__}: {e}")
            return faults, notes


def _verify_open(f, check_inputs: bool, faults: list[str], notes: list[str]):
    import h5py

    if f.attrs.get("format_version") != FORMAT_VERSION:
        faults.append(f"format_version {f.attrs.get('format_version')!r}, expected {FORMAT_VERSION}")
        return faults, notes
    n = int(f.attrs["rows"])
    R, C = int(f.attrs["label_resolution"]), int(f.attrs["image_resolution"])
    expected = {
        "image_ok": ((n,), np.bool_), "flags/has_smpl": ((n,), np.bool_), "flags/has_image": ((n,), np.bool_),
        "parts/labels": ((n, R, R), np.uint8), "parsing/labels": ((n, R, R), np.uint8),
        "parsing/box": ((n, 4), np.float64), "parsing/min_clothing_valid": ((n, 5), np.bool_),
    }
    if f.attrs["image_format"] == "raw":
        expected["images"] = ((n, C, C, 3), np.uint8)
    for key, (shape, dtype) in expected.items():
        if key not in f:
            if key.split("/")[0] in ("parts", "parsing") and key.split("/")[0] not in f:
                continue
            faults.append(f"missing dataset {key}")
            continue
        if f[key].shape != shape or f[key].dtype != dtype:
            faults.append(f"{key}: shape {f[key].shape} dtype {f[key].dtype}, expected {shape} {np.dtype(dtype)}")
    for key, value in f["annotations"].items():
        if value.shape[0] != n:
            faults.append(f"annotations/{key} has {value.shape[0]} rows, expected {n}")
    if f["images"].shape[0] != n:
        faults.append(f"images has {f['images'].shape[0]} rows, expected {n}")
    # value ranges, a block of rows at a time
    unreadable = set()
    for key, top in (("parts/labels", PART_MAX), ("parsing/labels", CIHP_MAX)):
        if key in f:
            bad = 0
            for start in range(0, n, 256):
                try:
                    block = f[key][start:start + 256]
                except OSError as e:  # a chunk failing its Fletcher-32 checksum (or its decompression)
                    faults.append(f"{key}: rows {start}-{min(start + 256, n) - 1} unreadable, damaged ({e}): repack")
                    unreadable.add(key)
                    continue
                bad += int(((block > top) & (block != IGNORE)).sum()) if key == "parsing/labels" else int((block > top).sum())
            if bad:
                faults.append(f"{key}: {bad} pixels outside the label range")
    ok = f["image_ok"][()]
    if n and not ok.any():
        reason = f["image_error"][0]
        faults.append(f"no usable image: none of the {n} rows has a photo (e.g. {reason.decode() if isinstance(reason, bytes) else reason}); "
                      f"check datasets.{f.attrs['dataset']}.images in the config and repack")
    crc = f["image_crc32"][()] if "image_crc32" in f else None
    if crc is None:
        faults.append("missing dataset image_crc32")
    jpeg = f.attrs["image_format"] == "jpeg"
    images, has_bytes, damaged = f["images"], np.zeros(n, bool), []
    for i in range(n):  # one pass over the image rows: their JPEG lengths and their checksums
        if not (ok[i] or jpeg):
            continue
        try:
            data = images[i]
        except OSError:  # a raw crop failing its Fletcher-32 checksum
            damaged.append(i)
            continue
        has_bytes[i] = len(data) > 0
        if ok[i] and crc is not None and image_crc32(data) != crc[i]:
            damaged.append(i)
    if damaged:
        faults.append(f"images: {len(damaged)} rows fail their checksum (damaged), e.g. rows {damaged[:5]}: repack")
    if jpeg:
        if (has_bytes != ok).any():
            faults.append("images: rows flagged readable without JPEG bytes, or the reverse")
        for i in np.flatnonzero(ok)[:: max(1, int(ok.sum()) // 16)]:
            try:
                image = decode_jpeg(images[i])
            except Exception as e:  # PIL raises several types for broken data
                faults.append(f"images[{i}]: JPEG does not decode ({e})")
                continue
            if image.shape != (C, C, 3):
                faults.append(f"images[{i}]: decodes to {image.shape}, expected {(C, C, 3)}")
    missing = np.flatnonzero(~ok)
    if len(missing):
        reasons = f["image_error"][missing[:3]]
        notes.append(f"{len(missing)} rows without an image, e.g. {[r.decode() if isinstance(r, bytes) else r for r in reasons]}")
    # content hashes recorded at pack time
    recorded = json.loads(f.attrs.get("content_sha256", "{}"))
    found = {}
    f.visititems(lambda name, obj: found.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    for name in sorted(set(recorded) | set(found)):
        if name in unreadable:
            continue
        if name not in found:
            faults.append(f"dataset {name} recorded at pack time is missing")
        elif name not in recorded:
            faults.append(f"dataset {name} was not in the file when it was packed")
        elif content_hash(found[name]) != recorded[name]:
            faults.append(f"dataset {name}: content differs from what was packed (tampered or damaged)")
    if check_inputs:
        root = Path(f.attrs.get("input_root", "."))
        for key, item in json.loads(f.attrs["inputs"]).items():
            if key in ("images", "part_labels", "parser_labels"):  # hashes over many files: recorded, not re-checked
                continue
            path = root / item["path"]  # an absolute path stays itself
            if not path.is_file():
                notes.append(f"input {key}: {path} not found here, hash not re-checked")
                continue
            now = sha256_file(path)
            if now != item["sha256"]:
                faults.append(f"input {key} changed since packing: {path} has SHA-256 {now[:12]}…, the file was packed "
                              f"from {item['sha256'][:12]}…: repack")
    if hashlib.sha256(f.attrs["config"].encode()).hexdigest() != f.attrs["config_sha256"]:
        faults.append("config attribute does not match its recorded hash")
    return faults, notes


def summary(path: str | Path) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        out = {"dataset": f.attrs["dataset"], "rows": int(f.attrs["rows"]), "image_format": f.attrs["image_format"],
               "image_resolution": int(f.attrs["image_resolution"]), "label_resolution": int(f.attrs["label_resolution"])}
        for flag in f["flags"]:
            out[flag] = int(f["flags"][flag][()].sum())
        out["inputs"] = sorted(json.loads(f.attrs["inputs"]))
    out["mb"] = round(Path(path).stat().st_size / 2**20, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser, sub = cli.stage_parser("python -m pipeline.pack", "packed HDF5 files of dataset splits")
    p = sub.add_parser("split", help="pack one dataset split")
    p.add_argument("annotations")
    p.add_argument("out")
    p.add_argument("--dataset", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--parts")
    p.add_argument("--parsing")
    p.add_argument("--body")
    p.add_argument("--parser-weights")
    p.add_argument("--prior")
    p.add_argument("--label-resolution", type=int, default=PackSettings.label_resolution)
    p.add_argument("--context", type=float, default=PackSettings.context)
    p.add_argument("--image-format", choices=("jpeg", "raw"), default=PackSettings.image_format)
    p.add_argument("--jpeg-quality", type=int, default=PackSettings.jpeg_quality)
    p.add_argument("--config-json", default="{}", help="the config subset that shapes the file (recorded)")
    p = sub.add_parser("verify", help="check a packed file; exit status 1 on any fault")
    p.add_argument("files", nargs="+")
    p.add_argument("--no-inputs", dest="check_inputs", action="store_false", help="skip re-hashing the recorded inputs")
    args = parser.parse_args(argv)
    start = cli.start_logging()
    if args.command == "split":
        settings = PackSettings(label_resolution=args.label_resolution, context=args.context, image_format=args.image_format,
                                jpeg_quality=args.jpeg_quality)
        counts = pack_split(args.dataset, args.annotations, args.images, args.out, settings, args.parts, args.parsing,
                            args.body, args.parser_weights, args.prior, json.loads(args.config_json))
        log.info("%s: %s, %.1f MB in %.1f s", args.out, counts, Path(args.out).stat().st_size / 2**20, time.perf_counter() - start)
        return 0
    status = 0
    for path in args.files:
        faults, notes = verify(path, args.check_inputs)
        if not faults:
            print(json.dumps({"file": str(path), "ok": True, **summary(path)}))
        else:
            print(json.dumps({"file": str(path), "ok": False}))
        for note in notes:
            print(f"  note: {note}")
        for fault in faults:
            print(f"  FAULT: {fault}")
        status |= bool(faults)
    return status


if __name__ == "__main__":
    sys.exit(main())

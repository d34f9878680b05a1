"""Training data read only from packed files (pipeline.pack): a PyTorch Dataset over one or more files
and a batch sampler that mixes them with fixed ratios in every batch (as SPIN, EFT and PARE mix H36M,
COCO, MPII, ...).

    files = ["results/packed/demo_train.h5", "results/packed/other_train.h5"]
    data = PackedDataset(files, AugmentSettings())
    sampler = MixedBatchSampler(data.lengths, ratios=[0.6, 0.4], batch_size=64, seed=0)
    loader = DataLoader(data, sampler=sampler, batch_size=None, num_workers=8, persistent_workers=True)
    for batch in loader: ...   # or mixed_loader(files, ratios, ...); the sampler counts steps

Each worker builds a whole batch per call (`PackedDataset.batch`, stacked tensors), which halves the
per-sample overhead of the usual per-sample fetch + collate at these small per-sample costs;
`batch_sampler=sampler` (per-sample fetch) also works and gives the same batches.

Determinism: the sampler draws, for every position of every batch, the file, the row and a 64-bit
sample seed from one generator seeded by `seed`; the Dataset derives all augmentation draws from that
sample seed alone. Batches are therefore identical for any number of workers and any worker order.

Workers: each process opens its own read-only HDF5 handles on first use (h5py handles must not cross a
fork), and the handles are dropped when the Dataset is pickled.

A sample (all torch tensors):
    image           (3, O, O) uint8 RGB (normalise on the device: `normalize_images`)
    keypoints       (49, 3) float32: JOINTS49 in normalised crop coordinates (pixel p -> (2p + 1)/O - 1,
                    -1 and +1 at the crop's edges, as models.smpl_head projects), confidence
    pose, betas     (72,), (10,) float32, has_smpl bool
    joints3d        (24, 4) float32 (the 24 ground-truth joints of JOINTS49, camera axes), has_joints3d bool
    part_labels     (O, O) uint8: 0 background, 1..24 SMPL parts, 255 unknown; has_parts bool
    parser_labels   (O, O) uint8: CIHP after DSR's keypoint-box cleaning, 255 ignored; has_parser bool
    min_clothing_valid (5,) bool (Face, Left-arm, Right-arm, Left-shoe, Right-shoe; swapped on flip)
    occluded        (O, O) bool, the pasted occluders
    file, row       int64: where the sample came from; flip, rotation, scale: the draws
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.camera import camera_z_rotation
from pipeline.crop import crop_matrix, transform_points
from pipeline.labelsets import IGNORE, MIN_CLOTHING_LABELS, cihp_flip_permutation
from pipeline.pack_format import FORMAT_VERSION, decode_jpeg_image, image_crc32
from pipeline.skeleton import NUM_BETAS, NUM_GT_JOINTS, NUM_JOINTS49, NUM_OPENPOSE_JOINTS, SMPL_POSE_SIZE
from trainers.augment import (
    MIN_CLOTHING_FLIP,
    AugmentSettings,
    OccluderSet,
    colour_gain,
    draw_params,
    flip_pose,
    joints49_flip_permutation,
    label_to_output_matrix,
    paste_occluders,
    part_label_flip_lut,
    pil_warp,
    rotate_global_orient,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Arrays kept in memory per file (small per row); images and label maps are read per sample.
_ROW_ARRAYS = ("center", "scale", "pose", "shape", "has_smpl", "S", "part", "openpose")


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, ImageNet mean and std (SPIN, PARE, DSR)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class PackedFileError(ValueError):
    pass


def damaged_error(path: str, what: str, detail: str) -> PackedFileError:
    return PackedFileError(f"{path}: {what} is damaged ({detail}); the packed file cannot be trusted: delete it and "
                           "rerun `snakemake pack` (rule pack_split rebuilds it)")


class _FileIndex:
    """What a Dataset keeps in memory about one packed file."""

    def __init__(self, path: str):
        import h5py

        self.path = str(path)
        if not Path(path).is_file():
            raise PackedFileError(f"{path}: no such packed file; build it with `snakemake pack` (results/packed/)")
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise PackedFileError(f"{path}: not a readable HDF5 file ({e}); rebuild it with `snakemake pack`") from e
        with f:
            version = int(f.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise PackedFileError(f"{path}: packed format {version}, this code reads format {FORMAT_VERSION} only (format 2 "
                                      "added checksums): delete the file and rerun `snakemake pack` to repack it")
            self.rows = int(f.attrs["rows"])
            self.image_format = str(f.attrs["image_format"])
            self.image_res = int(f.attrs["image_resolution"])
            self.label_res = int(f.attrs["label_resolution"])
            ann = f["annotations"]
            missing = [k for k in ("center", "scale") if k not in ann]
            if missing:
                raise PackedFileError(f"{path}: annotations lack {missing}")

            def load(name: str, default=None):
                if name not in f:
                    return default
                try:
                    return f[name][()]
                except OSError as e:  # Fletcher-32 mismatch: a damaged chunk
                    raise damaged_error(self.path, f"dataset {name}", f"HDF5: {e}") from e

            self.arrays = {k: load(f"annotations/{k}") for k in _ROW_ARRAYS if k in ann}
            self.image_ok = load("image_ok")
            self.has_parts = load("flags/has_parts", np.zeros(self.rows, bool))
            self.has_parser = load("flags/has_parser", np.zeros(self.rows, bool))
            self.parsing_box = load("parsing/box")
            self.min_clothing = load("parsing/min_clothing_valid")
            self.has_parts_group = "parts/labels" in f
            self.has_parsing_group = "parsing/labels" in f
            self.image_crc = load("image_crc32")
            if self.image_crc is None:
                raise PackedFileError(f"{path}: no image_crc32 dataset; delete the file and rerun `snakemake pack`")
        self.usable = np.flatnonzero(self.image_ok)  # rows whose photo could be read (reasons: /image_error)


class PackedDataset(torch.utils.data.Dataset):
    """Samples from packed files. Index with (file, row, sample_seed, step) tuples, as
    MixedBatchSampler yields them; an int index reads file 0's row without augmentation."""

    def __init__(self, files: list[str], augment: AugmentSettings | None = None):
        if not files:
            raise ValueError("PackedDataset needs at least one packed file")
        self.files = [_FileIndex(p) for p in files]
        self.augment = augment or AugmentSettings(enabled=False)
        self._unaugmented = replace(self.augment, enabled=False)
        self.occluders = OccluderSet(self.augment.occluders)
        self._handles: dict[int, object] = {}
        self._pid = None
        self._joints_perm = joints49_flip_permutation()
        self._part_lut = part_label_flip_lut()
        self._cihp_lut = cihp_flip_permutation()

    # -- bookkeeping ---------------------------------------------------------------------------------
    @property
    def lengths(self) -> list[int]:
        """Usable rows per file (rows with a readable photo)."""
        return [len(f.usable) for f in self.files]

    def __len__(self) -> int:
        return sum(self.lengths)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        return state

    def _h5(self, k: int):
        import h5py

        if self._pid != os.getpid():  # a new worker process: never reuse the parent's handles
            self._handles, self._pid = {}, os.getpid()
        if k not in self._handles:
            f = h5py.File(self.files[k].path, "r")
            self._handles[k] = {name: f[name] for name in ("images", "image_error", "parts/labels", "parsing/labels") if name in f}
            self._handles[k]["file"] = f
        return self._handles[k]

    def describe(self) -> dict:
        return {"files": [f.path for f in self.files], "rows": [f.rows for f in self.files], "usable": self.lengths,
                "augment": asdict(self.augment)}

    # -- one sample ------------------------------------------------------------------------------------
    def __getitem__(self, item):
        if isinstance(item, list):  # a batch from MixedBatchSampler (DataLoader with batch_size=None)
            return self.batch(item)
        if isinstance(item, (int, np.integer)):
            k, j, seed, step = 0, int(self.files[0].usable[int(item)]), 0, 0
            settings = self._unaugmented
        else:
            k, j, seed, step = (int(v) for v in item)
            settings = self.augment
        return self.sample(k, j, seed, step, settings)

    def read(self, k: int, j: int) -> dict:
        """The stored crops of file k, row j: image (C x C PIL RGB), part and parser label maps (R, R)."""
        from PIL import Image

        meta, f = self.files[k], self._h5(k)  # the file's datasets, opened once per process
        if not meta.image_ok[j]:
            raise PackedFileError(f"{meta.path}: row {j} has no image ({f['image_error'][j].decode()})")

        def row(name: str):
            try:
                return f[name][j]
            except OSError as e:  # Fletcher-32 mismatch: a damaged chunk
                raise damaged_error(meta.path, f"row {j} of dataset {name}", f"HDF5: {e}") from e

        data = row("images")
        if image_crc32(data) != meta.image_crc[j]:
            raise damaged_error(meta.path, f"row {j} of dataset images", "its bytes fail their CRC-32 in image_crc32")
        image = decode_jpeg_image(data) if meta.image_format == "jpeg" else Image.fromarray(np.asarray(data))
        parts = row("parts/labels") if meta.has_parts_group and meta.has_parts[j] else None
        parser = None
        if meta.has_parsing_group and meta.has_parser[j]:
            from pipeline.labelsets import clean_labels

            box = meta.parsing_box[j]
            parser = clean_labels(row("parsing/labels"), None if np.isnan(box).any() else box)
        return {"image": image, "parts": parts, "parser": parser}

    def sample(self, k: int, j: int, seed: int, step: int, settings: AugmentSettings) -> dict:
        """One sample as torch tensors (see the module docstring)."""
        return _to_tensors(self.arrays(k, j, seed, step, settings))

    def batch(self, items) -> dict:
        """A whole batch in one call (stacked tensors), as the loader's workers fetch them: one
        process call and one transfer per batch instead of per sample."""
        samples = [self.arrays(*(int(v) for v in item), self.augment) for item in items]
        return {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in samples[0]}

    def arrays(self, k: int, j: int, seed: int, step: int, settings: AugmentSettings) -> dict:
        from PIL import Image

        meta = self.files[k]
        stored = self.read(k, j)
        rng = np.random.default_rng(seed)
        p = draw_params(settings, rng, step)
        R, C, O = meta.label_res, meta.image_res, settings.output_resolution
        M = label_to_output_matrix(p, R, O)
        d = (C - R) / 2.0
        M_img = M @ np.array([[1.0, 0, -d], [0, 1, -d], [0, 0, 1]])  # image-crop pixels -> output
        image = np.array(colour_gain(pil_warp(stored["image"], M_img, O, nearest=False, fill=(0, 0, 0)), p.gains))
        parts = parser = None
        if stored["parts"] is not None:
            parts = np.array(pil_warp(Image.fromarray(stored["parts"]), M, O, nearest=True, fill=IGNORE))
            if p.flip:
                parts = self._part_lut[parts]
        if stored["parser"] is not None:
            parser = np.array(pil_warp(Image.fromarray(stored["parser"]), M, O, nearest=True, fill=IGNORE))
            if p.flip:
                parser = self._cihp_lut[parser]
        occluded = np.zeros((O, O), bool)
        if p.occluders:
            occluded = paste_occluders(image, parser, p.occluders, settings, self.occluders)

        a = meta.arrays
        # keypoints: full image -> label crop -> output, then [-1, 1]
        to_label = crop_matrix(a["center"][j], float(a["scale"][j]), R)
        kp = np.zeros((NUM_JOINTS49, 3), np.float32)
        if "openpose" in a:
            kp[:NUM_OPENPOSE_JOINTS] = a["openpose"][j]
        if "part" in a:
            kp[NUM_OPENPOSE_JOINTS:] = a["part"][j]
        # normalised crop coordinates, the regressors' (pipeline.camera): pixel p -> (2 p + 1) / O - 1
        kp[:, :2] = (2.0 * transform_points(kp[:, :2].astype(np.float64), M @ to_label) + 1.0) / O - 1.0
        kp[kp[:, 2] <= 0, :2] = 0.0  # unannotated joints carry no position
        pose = a["pose"][j].astype(np.float64) if "pose" in a else np.zeros(SMPL_POSE_SIZE)
        betas = a["shape"][j].astype(np.float32) if "shape" in a else np.zeros(NUM_BETAS, np.float32)
        has_smpl = bool(a["has_smpl"][j]) if "has_smpl" in a else False
        joints3d = a["S"][j].astype(np.float64).copy() if "S" in a else np.zeros((NUM_GT_JOINTS, 4))
        has_joints3d = "S" in a and bool(joints3d[:, 3].any())
        if p.rotation:
            pose = rotate_global_orient(pose, p.rotation)
            joints3d[:, :3] = joints3d[:, :3] @ camera_z_rotation(p.rotation).T
        min_clothing = meta.min_clothing[j].copy() if meta.min_clothing is not None else np.zeros(len(MIN_CLOTHING_LABELS), bool)
        if p.flip:
            kp = kp[self._joints_perm]
            pose = flip_pose(pose)
            joints3d = joints3d[self._joints_perm[NUM_OPENPOSE_JOINTS:] - NUM_OPENPOSE_JOINTS]
            joints3d[:, 0] *= -1
            min_clothing = min_clothing[MIN_CLOTHING_FLIP]
        O_labels = np.full((O, O), IGNORE, np.uint8)
        return {
            "image": image.transpose(2, 0, 1),
            "keypoints": kp,
            "pose": pose.astype(np.float32),
            "betas": betas,
            "has_smpl": np.bool_(has_smpl),
            "joints3d": joints3d.astype(np.float32),
            "has_joints3d": np.bool_(has_joints3d),
            "part_labels": parts if parts is not None else O_labels,
            "has_parts": np.bool_(parts is not None),
            "parser_labels": parser if parser is not None else O_labels.copy(),
            "has_parser": np.bool_(parser is not None),
            "min_clothing_valid": min_clothing.astype(bool),
            "occluded": occluded,
            "file": np.int64(k),
            "row": np.int64(j),
            "flip": np.bool_(p.flip),
            "rotation": np.float32(p.rotation),
            "scale": np.float32(p.scale),
        }


def _to_tensors(sample: dict) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else torch.tensor(v)
            for k, v in sample.items()}


class MixedBatchSampler(torch.utils.data.Sampler):
    """Batches of (file, row, sample_seed, step) with a fixed number of samples from each file in every
    batch: `ratios` split `batch_size` by largest remainders (e.g. 64 at 0.6/0.4 -> 38 + 26). Rows of a
    file are visited in a fresh random order each pass. `steps` batches per epoch (default: enough for
    the largest file's share to see each of its rows once); `start_step` resumes a run: the batches from
    there on are those an uninterrupted sampler yields."""

    def __init__(self, lengths: list[int], ratios: list[float] | None = None, batch_size: int = 64, seed: int = 0,
                 steps: int | None = None, start_step: int = 0, usable: list[np.ndarray] | None = None,
                 rank: int = 0, world: int = 1):
        if ratios is None:
            ratios = [n / sum(lengths) for n in lengths]
        if len(ratios) != len(lengths):
            raise ValueError(f"{len(ratios)} mixing ratios for {len(lengths)} packed files")
        ratios = np.asarray(ratios, np.float64)
        if (ratios < 0).any() or ratios.sum() <= 0:
            raise ValueError(f"mixing ratios must be non-negative with a positive sum, got {ratios.tolist()}")
        ratios = ratios / ratios.sum()
        raw = ratios * batch_size
        counts = np.floor(raw).astype(int)
        for i in np.argsort(-(raw - counts), kind="stable")[: batch_size - counts.sum()]:
            counts[i] += 1
        for k, (n, c) in enumerate(zip(lengths, counts)):
            if c and not n:
                raise ValueError(f"packed file {k} has no usable rows but a mixing share of {c} per batch")
        self.lengths, self.counts, self.batch_size = list(lengths), counts, batch_size
        if batch_size % world:
            raise ValueError(f"the batch of {batch_size} does not split into {world} equal per-process shares")
        self.seed, self.start_step = seed, start_step
        self.usable = usable
        self.rank, self.world = rank, world  # distributed training: this process takes batch[rank::world]
        self.steps = steps if steps is not None else max(
            int(np.ceil(n / c)) for n, c in zip(lengths, counts) if c)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        # one stream from `seed`; a resumed sampler draws (and drops) the batches before start_step, so
        # that it yields exactly what an uninterrupted one yields from there on
        rng = np.random.default_rng(self.seed)
        orders = [rng.permutation(n) for n in self.lengths]
        cursors = [0] * len(self.lengths)
        for step in range(self.start_step + self.steps):
            batch = []
            for k, c in enumerate(self.counts):
                for _ in range(c):
                    if cursors[k] == self.lengths[k]:
                        orders[k], cursors[k] = rng.permutation(self.lengths[k]), 0
                    r = int(orders[k][cursors[k]])
                    cursors[k] += 1
                    row = int(self.usable[k][r]) if self.usable is not None else r
                    batch.append((k, row, int(rng.integers(2**63 - 1)), step))
            if step >= self.start_step:
                yield batch[self.rank::self.world]


def mixed_loader(files: list[str], ratios: list[float] | None = None, batch_size: int = 64, seed: int = 0,
                 augment: AugmentSettings | None = None, num_workers: int = 2, steps: int | None = None,
                 start_step: int = 0, rank: int = 0, world: int = 1, **loader_kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader over packed files with fixed per-batch mixing, ready to iterate; with `world` > 1,
    this process's share (batch_size / world samples) of every global batch."""
    data = PackedDataset(files, augment)
    sampler = MixedBatchSampler(data.lengths, ratios, batch_size, seed, steps, start_step,
                                usable=[f.usable for f in data.files], rank=rank, world=world)
    return torch.utils.data.DataLoader(data, sampler=sampler, batch_size=None, num_workers=num_workers,
                                       persistent_workers=num_workers > 0, **loader_kwargs)


def summary(files: list[str]) -> str:
    return json.dumps(PackedDataset(files).describe(), indent=1)

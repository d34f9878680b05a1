"""Shards of per-row label files: the index a dataset's shards are read through, with the manifest
of rows that got no usable label and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.io import atomic_output


def write_index(shard_files: list[str], out: str, flags: tuple[str, ...]) -> dict:
    """Index of a dataset's shard files: row ranges, counts of each boolean flag, and the manifest of
    flagged rows with their reason (shard arrays: index, imgname, reason, resolution, and `flags`)."""
    shards, manifest = [], []
    counts = {"rows": 0, "labelled": 0, **{f: 0 for f in flags}}
    resolution = None
    for path in shard_files:
        with np.load(path, allow_pickle=False) as z:
            index, imgname, reason = z["index"], z["imgname"], z["reason"]
            flagged = {f: z[f] for f in flags}
            resolution = int(z["resolution"])
        any_flag = np.logical_or.reduce([flagged[f] for f in flags])
        shards.append({"file": Path(path).name, "start": int(index[0]), "stop": int(index[-1]) + 1})
        counts["rows"] += len(index)
        counts["labelled"] += int((~any_flag).sum())
        for f in flags:
            counts[f] += int(flagged[f].sum())
        for k in np.flatnonzero(any_flag):
            manifest.append({"index": int(index[k]), "imgname": str(imgname[k]), "reason": str(reason[k]),
                             "flags": [f for f in flags if flagged[f][k]]})
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps({"resolution": resolution, "counts": counts, "shards": shards,
                                         "without_labels": manifest}, indent=1))
    return counts


def load_shards(index_file: str | Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Concatenate `keys` over every shard listed in an index."""
    index = json.loads(Path(index_file).read_text())
    arrays: dict[str, list] = {k: [] for k in keys}
    for shard in index["shards"]:
        with np.load(Path(index_file).parent / shard["file"], allow_pickle=False) as z:
            for k in keys:
                arrays[k].append(z[k])
    return {k: np.concatenate(v) for k, v in arrays.items()}

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (pickle_writer, meshtools)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_body():
    from pipeline.body.demo import build_demo_body

    return build_demo_body(seed=0, grid_spacing=0.02)


@pytest.fixture(scope="session")
def demo_model(demo_body):
    from pipeline.body.model import BodyModel

    return BodyModel(demo_body)


@pytest.fixture(scope="session")
def body_file(tmp_path_factory, demo_body):
    path = tmp_path_factory.mktemp("body") / "demo_body.npz"
    demo_body.save(path)
    return path


def _settings():
    from pipeline.world.scene import WorldSettings

    return WorldSettings(second_person_prob=0.5, occluders=(1, 1), no_smpl_fraction=0.25)


SETTINGS = _settings()


@pytest.fixture(scope="session")
def split(tmp_path_factory, body_file):
    """A 6-image demo split (every image occluded, a quarter without SMPL) in two shards, merged as
    the workflow does: (annotations, ground truth)."""
    import numpy as np

    from pipeline.datasets import load_annotations
    from pipeline.world.images import merge_split, write_image_shard

    root = tmp_path_factory.mktemp("world") / "demo"
    shards = [root / "shards" / f"test-{k:04d}" for k in range(2)]
    for k, shard in enumerate(shards):
        write_image_shard(body_file, shard, "test", range(3 * k, 3 * k + 3), seed=0, settings=SETTINGS, progress=False)
    merge_split(shards, root, root / "test.npz", root / "test_gt.npz")
    with np.load(root / "test_gt.npz", allow_pickle=False) as z:
        gt = {k: z[k] for k in z.files}
    return load_annotations(root / "test.npz", name="demo_test"), gt

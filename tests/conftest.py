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

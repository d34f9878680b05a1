"""The inference runner gives the eager model's predictions, in every mode and any batch split."""

import pytest
import torch

from models.hmr import HMR
from models.inference import RegressorRunner
from models.pare import PARE

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["script", "channels_last", "eager"])
@pytest.mark.parametrize("make", [lambda: PARE(width_mult=0.25), lambda: HMR(width_mult=0.25)], ids=["pare", "hmr"])
def test_runner_matches_eager_forward_across_batch_splits(make, mode, device):
    torch.manual_seed(0)
    model = make().eval()
    images = torch.randn(5, 3, 224, 224)
    with torch.no_grad():
        reference = model(images)
    runner = RegressorRunner(make(), device, mode=mode, batch_size=2)  # chunks of 2, 2, 1
    runner.model.load_state_dict(model.state_dict())
    out = runner(images)
    tol = dict(atol=1e-4, rtol=1e-4) if device == "cpu" else dict(atol=5e-3, rtol=5e-3)  # TF32 on CUDA
    for field in ("rotmat", "betas", "cam", "pose6d", "part_logits", "attention"):
        ours, ref = getattr(out, field), getattr(reference, field)
        assert (ours is None) == (ref is None), field
        if ref is not None:
            torch.testing.assert_close(ours.cpu(), ref, **tol, msg=field)
    assert not out.rotmat.requires_grad
    if mode == "script":
        traced = runner._scripted.compiled  # keys (shape, device, dtype)
        assert {key[0] for key in traced} == {(2, 3, 224, 224), (1, 3, 224, 224)}
        assert {key[2] for key in traced} == {torch.float32}


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="compiled"):
        RegressorRunner(HMR(width_mult=0.25), mode="compiled")

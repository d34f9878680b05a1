"""Running a regressor (HMR, PARE) for inference: batched, without autograd, with the layout or graph
optimisation that is fastest on the device (bench/regressor.py measures each against plain eager).

- "script" (CPU default): the network traced once per input shape, frozen and optimised for inference
  by TorchScript (BatchNorm folded into the convolutions, oneDNN fusions). Outputs equal eager ones up to
  float rounding.
- "channels_last" (CUDA default): NHWC weights and inputs, which cuDNN's convolutions prefer on tensor
  cores, with cudnn.benchmark.
- "eager": the module as it is.
Tracing and channels-last are not used for training: channels-last convolution backward hangs on some
CPU instruction sets (issue 26), and training needs autograd.
"""

from __future__ import annotations


import torch
from torch import nn

from models.smpl_head import Prediction
from pipeline.human_parser import OptimizedNetwork

MODES = ("auto", "eager", "script", "channels_last")
_FIELDS = ("rotmat", "betas", "cam", "pose6d", "part_logits", "attention")


class _AsTensors(nn.Module):
    """The regressor's forward with a tuple of tensors as output, which tracing needs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        pred = self.model(images)
        return tuple(getattr(pred, f) for f in _FIELDS if getattr(pred, f) is not None)


class RegressorRunner:
    """`runner(images)` -> Prediction for a batch of ImageNet-normalised crops (B, 3, H, W); any batch
    size, split into chunks of `batch_size` (default: 64 on CUDA; 8 on CPU, where larger batches fall
    out of the caches: bench/regressor.py on 2 cores, PARE 7.6 images/s at 8 vs 6.5 at 32)."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", mode: str = "auto",
                 batch_size: int | None = None):
        if mode not in MODES:
            raise ValueError(f"inference mode must be one of {MODES}, got {mode!r}")
        self.device = torch.device(device)
        if mode == "auto":
            mode = "channels_last" if self.device.type == "cuda" else "script"
        self.mode = mode
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 8)
        self.model = model.eval().to(self.device)
        if mode == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self._fields = None
        # traced, frozen and optimised once per input shape: the parser's engine does the same
        self._scripted = OptimizedNetwork(_AsTensors(self.model)) if mode == "script" else None

    @property
    def compile_seconds(self) -> float:
        """Seconds spent tracing (once per input shape); 0 outside "script" mode."""
        return self._scripted.compile_seconds if self._scripted is not None else 0.0

    def _forward(self, x: torch.Tensor) -> Prediction:
        if self.mode == "script":
            if self._fields is None:
                with torch.no_grad():
                    probe = self.model(x[:1])
                self._fields = [f for f in _FIELDS if getattr(probe, f) is not None]
            return Prediction(**dict(zip(self._fields, self._scripted(x))))
        if self.mode == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def __call__(self, images: torch.Tensor) -> Prediction:
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode():
            parts = [self._forward(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        if len(parts) == 1:
            return parts[0]
        return Prediction(**{f: None if getattr(parts[0], f) is None else torch.cat([getattr(p, f) for p in parts])
                             for f in _FIELDS})

"""Training and inference paths that depend on the CPU's instruction set, run under every oneDNN ISA
cap a CPU of this field's machines may have (AMX, AVX-512 with bf16/VNNI, plain AVX-512, AVX2).

`ONEDNN_MAX_CPU_ISA` makes oneDNN pick the kernels a lesser CPU would get, so an AMX machine (this one,
CI's) exercises the AVX-512 and AVX2 code paths too. Each setting runs in a child process: a kernel
that aborts or hangs fails its case instead of taking pytest down. With torch 2.13 the demo parser's
channels-last backward on CPU hung under `AVX2` at width 0.0625 (the second step never returned) and
aborted on an AVX-512 AMD EPYC; the trainer now keeps CPU tensors contiguous."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

# "" leaves oneDNN at the machine's best ISA; a cap above what the CPU has changes nothing.
ISA_CAPS = ["", "AVX512_CORE_BF16", "AVX512_CORE", "AVX2"]

TRAINER_BACKWARD = """
import sys, numpy as np
sys.path.insert(0, "tests")
from test_demo_parser import toy_set
from trainers.demo_parser import train
images, labels = toy_set(n=8)
for width in (0.0625, 0.125, 0.25):
    model = train(images, labels, width=width, steps=4, batch_size=4, learning_rate=6e-3, seed=0, progress=False)
    assert all(np.isfinite(p.detach().numpy()).all() for p in model.parameters()), width
    print("trained width", width, flush=True)
"""

PARSER_INFERENCE = """
import numpy as np, torch
from models.graphonomy import build
from pipeline.human_parser import OptimizedNetwork, multiscale_logits
torch.manual_seed(0)
images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
for width in (0.0625, 0.25):
    net = build("transfer", width=width).eval()
    with torch.inference_mode():
        eager = multiscale_logits(net, images, (0.75, 1.0), True)
        traced = multiscale_logits(OptimizedNetwork(net), images, (0.75, 1.0), True)
    torch.testing.assert_close(traced, eager, rtol=1e-3, atol=1e-3)
    print("inferred width", width, flush=True)
"""


def run_under(isa: str, code: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    try:
        return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"ONEDNN_MAX_CPU_ISA={isa or '(unset)'}: no result after {timeout:.0f} s (hung kernel?)\n"
                    f"{e.stdout or ''}{e.stderr or ''}")


@pytest.mark.parametrize("isa", ISA_CAPS, ids=lambda isa: isa or "best")
def test_demo_parser_backward_at_several_widths(isa):
    done = run_under(isa, TRAINER_BACKWARD, timeout=180)
    assert done.returncode == 0, f"ONEDNN_MAX_CPU_ISA={isa or '(unset)'} exit {done.returncode}\n{done.stdout}{done.stderr}"
    assert done.stdout.count("trained width") == 3


@pytest.mark.parametrize("isa", ISA_CAPS, ids=lambda isa: isa or "best")
def test_optimised_parser_inference_matches_eager(isa):
    done = run_under(isa, PARSER_INFERENCE, timeout=180)
    assert done.returncode == 0, f"ONEDNN_MAX_CPU_ISA={isa or '(unset)'} exit {done.returncode}\n{done.stdout}{done.stderr}"
    assert done.stdout.count("inferred width") == 2

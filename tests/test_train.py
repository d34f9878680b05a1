"""The training loop on a tiny packed demo split: each model trains, writes its metrics and checkpoints,
and a run resumed from its checkpoint ends with the same weights as an uninterrupted one."""

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

from test_pack import make_pack, packed_inputs  # noqa: F401 - the packed-inputs fixture


@pytest.fixture(scope="module")
def packed(tmp_path_factory, split, body_file, packed_inputs):  # noqa: F811
    out, _ = make_pack(tmp_path_factory.mktemp("train_pack"), split, body_file, packed_inputs)
    return out


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory, body_file):
    from pipeline.body.model import load_body_model

    faces = len(load_body_model(body_file).f)
    prior = np.random.default_rng(0).dirichlet(np.full(20, 0.3), size=faces).astype(np.float32)
    path = tmp_path_factory.mktemp("prior") / "prior.npz"
    np.savez(path, face_prior=prior)
    return path


def settings(tmp_path, packed, body_file, **kw):
    from trainers.augment import AugmentSettings
    from trainers.train import TrainSettings

    base = dict(model="hmr", out_dir=str(tmp_path / "run"), train_files=[str(packed)], val_file=str(packed),
                body=str(body_file), width_mult=0.0625, batch_size=4, steps=4, lr=1e-4, log_every=1, val_every=2,
                checkpoint_every=2, num_workers=0, device="cpu", val_batch_size=8,
                augment=AugmentSettings(output_resolution=64, occlusion_prob=0.0))
    base.update(kw)
    return TrainSettings(**base)


def weights(path):
    from trainers.train import load_training_state

    return load_training_state(path)["model"]


def test_hmr_trains_logs_validates_and_checkpoints(tmp_path, packed, body_file):
    from trainers.train import train

    s = settings(tmp_path, packed, body_file)
    summary = train(s)
    assert summary["step"] == 4 and np.isfinite(summary["best"])
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["total"]) > 0 for r in rows) and rows[1]["val_pa_mpjpe"] and not rows[0]["val_mpjpe"]
    for name in ("last.pt", "best.pt", "metrics.csv", "summary.json"):  # published beside the working state
        assert (tmp_path / "run" / name).is_file() and (tmp_path / "run" / "state" / name).is_file() != (name == "summary.json")
    first = weights(tmp_path / "run" / "last.pt")
    assert train(s)["step"] == 4  # a finished run asked for again (a Snakemake rerun) trains from the start
    again = weights(tmp_path / "run" / "last.pt")
    for key, value in first.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=0, msg=key)
    from models.hmr import from_pretrained  # our checkpoints load like the published ones, for evaluation

    loaded = from_pretrained(tmp_path / "run" / "last.pt")
    for key, value in weights(tmp_path / "run" / "last.pt").items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, packed, body_file):
    from trainers.train import train

    straight = settings(tmp_path / "a", packed, body_file)
    train(straight)
    interrupted = settings(tmp_path / "b", packed, body_file)
    train(replace(interrupted, steps=2))  # stops after its step-2 checkpoint, as a killed job would have
    with open(tmp_path / "b" / "run" / "state" / "metrics.csv", "a") as f:  # a row a killed job logged after its checkpoint
        f.write("3,999,,,,,,,,,,,\n")
    train(interrupted)  # the same settings again: resumes at step 2
    a, b = weights(tmp_path / "a" / "run" / "last.pt"), weights(tmp_path / "b" / "run" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    rows = list(csv.DictReader(open(tmp_path / "b" / "run" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and "999" not in {r["total"] for r in rows}


def test_a_saved_state_from_other_settings_or_inputs_is_not_resumed(tmp_path, packed, body_file, caplog):
    import logging
    import os

    from trainers.train import train

    s = settings(tmp_path, packed, body_file, steps=2, val_file=None)
    train(s)
    assert (tmp_path / "run" / "best.pt").is_file()  # no validation: the last weights stand for the best
    with caplog.at_level(logging.INFO, logger="trainers.train"):
        train(replace(s, steps=3))  # more steps: continues
        assert "resumed from" in caplog.text and "at step 2" in caplog.text
        caplog.clear()
        train(replace(s, steps=4, lr=2e-4))
        assert "the settings changed (lr)" in caplog.text
        caplog.clear()
        stat = os.stat(packed)
        os.utime(packed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        try:
            train(replace(s, steps=5, lr=2e-4))
        finally:
            os.utime(packed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert "an input file changed" in caplog.text


def test_start_dsr_in_epochs_counts_the_usable_training_rows(tmp_path, packed, body_file, prior_file, caplog):
    import logging

    from trainers.packed import PackedDataset
    from trainers.train import train

    s = settings(tmp_path, packed, body_file, model="dsr", prior=str(prior_file), steps=3, val_file=None,
                 start_dsr_epochs=2 * 4 / len(PackedDataset([str(packed)]).files[0].usable))  # 2 steps
    with caplog.at_level(logging.INFO, logger="trainers.train"):
        train(s)
    assert "DSR losses from step 3" in caplog.text
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["dsr_mc"] != "" for r in rows] == [False, False, True]


def test_dsr_and_pare_train_with_their_extra_losses(tmp_path, packed, body_file, prior_file):
    from trainers.train import train

    dsr = settings(tmp_path / "dsr", packed, body_file, model="dsr", prior=str(prior_file), steps=2, start_dsr=0)
    train(dsr)
    rows = list(csv.DictReader(open(tmp_path / "dsr" / "run" / "metrics.csv")))
    assert all(r["dsr_mc"] != "" and r["dsr_c"] != "" for r in rows)
    pare = settings(tmp_path / "pare", packed, body_file, model="pare", steps=2, gt_attention=True)
    train(pare)
    rows = list(csv.DictReader(open(tmp_path / "pare" / "run" / "metrics.csv")))
    assert all(r["part"] != "" and float(r["part"]) > 0 for r in rows)


def test_bad_settings_are_named():
    from trainers.train import TrainSettings

    with pytest.raises(ValueError, match="train.model"):
        TrainSettings(model="spin", train_files=["x.h5"])
    with pytest.raises(ValueError, match="prior"):
        TrainSettings(model="dsr", train_files=["x.h5"])


@pytest.mark.slow
def test_two_processes_train_as_one_process_accumulating_their_shares(tmp_path, packed, body_file):
    """torchrun with 2 CPU processes (gloo): each takes half of every global batch and DDP averages the
    gradients. The weights agree with one process that accumulates the same two halves (PARE: no dropout,
    BatchNorm statistics per half in both) on >= 99% of the elements; the rest are elements whose averaged
    gradient is near zero, where Adam's first steps (about lr * sign(g)) turn float summation order into a
    sign. One process on the whole batch (whole-batch BatchNorm statistics) differs on far more."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from models.smpl_head import SMPLHead
    from pipeline.body.model import BodyModel, load_body_model
    from trainers.packed import mixed_loader
    from trainers.train import build_model, mean_params_from_packed, step_loss, to_device

    # one step: after it, the few sign-flipped elements change the next forward everywhere a little
    s = settings(tmp_path, packed, body_file, model="pare", steps=1, val_file=None, checkpoint_every=1)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "trainers.train", "--settings-json", json.dumps(s.to_dict())],
                         env=env, cwd=root, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "process 1 of 2" in run.stderr
    ddp = weights(tmp_path / "run" / "last.pt")

    def one_process(world: int) -> dict:
        torch.manual_seed(s.seed)
        head = SMPLHead(BodyModel(load_body_model(s.body)), resolution=s.augment.output_resolution)
        model = build_model(s, mean_params_from_packed(s.train_files)).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
        loaders = [iter(mixed_loader(s.train_files, None, s.batch_size, s.seed, s.augment, 0, steps=s.steps,
                                     rank=r, world=world)) for r in range(world)]
        for step in range(1, s.steps + 1):
            optimizer.zero_grad()
            for loader in loaders:
                total, _ = step_loss(model, head, to_device(next(loader), torch.device("cpu")), s, step)
                (total / world).backward()
            optimizer.step()
        return {n: p.detach() for n, p in model.named_parameters()}

    def agreement(params: dict) -> float:
        close = torch.cat([((ddp[n] - p).abs() <= 1e-6 + 1e-4 * p.abs()).flatten() for n, p in params.items()])
        return close.float().mean().item()

    halves, whole = one_process(2), one_process(1)
    assert agreement(halves) >= 0.99
    assert agreement(whole) < 0.9

"""DSR losses: forward + backward of DSR-MC and DSR-C at batch 32, 224 x 224, on a body of SMPL size,
our renderer and losses against a naive baseline with the official structure, on identical inputs.

- ours: trainers.dsr_losses.dsr_losses: one soft-rasteriser call for the batch, all nine textures per
  sample in one pass, per-face box culling, vectorised losses, hand-derived backward; measured with eager
  and with torch.compile'd per-pair kernels (the one-time compilation excluded);
- baseline (written here, the official code's structure): a Python loop over the samples; per sample,
  nine renders (one per texture), each with a renderer set up anew; each render tests every pixel against
  every face's cut-off box, as the legacy kernel does, then evaluates the soft rasteriser on the pixels
  that pass, one texture channel at a time; per-sample losses with the criterion's weight set per
  sample. Its maths is the same (SoftRas's legacy conventions), written independently of
  models/soft_render.py, so the losses must agree (`max_rel_diff`).
The dense test makes the baseline slow on a CPU: by default it runs on the first `--baseline-samples`
samples of the batch and its time is scaled to the batch (printed as such); `--baseline-samples 32`
runs it on the whole batch.

Bodies: the demo body (12,140 faces), and the same body subdivided to SMPL's 13,776 faces (the longest
edges of the largest faces split). Also: the time of an HMR training step (ResNet-50, batch 32, keypoint
and parameter losses) with and without the DSR losses, the ratio the issue asks to keep at or below 1.5.

    python bench/dsr_loss.py [--batch 32] [--baseline-samples 2] [--device cpu|cuda] [--skip-hmr]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.soft_render import SoftRasterSettings, project_vertices  # noqa: E402
from pipeline.labelsets import IGNORE, MIN_CLOTHING_LABELS, dsr_merge_lut  # noqa: E402
from trainers.dsr_losses import DSRLossSettings, dsr_losses  # noqa: E402

RES = 224


# ---------------------------------------------------------------------------------------------------
# Memory


class PeakMemory:
    """Peak memory of a block, in MB above its start: CUDA allocator peak, or process RSS sampled every 2 ms."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.proc, self.stop = psutil.Process(), False
        self.base = self.proc.memory_info().rss
        self.high = self.base

        def watch():
            while not self.stop:
                self.high = max(self.high, self.proc.memory_info().rss)
                time.sleep(0.002)

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.stop = True
            self.thread.join()
            self.peak_mb = (self.high - self.base) / 2**20


# ---------------------------------------------------------------------------------------------------
# The naive baseline: the official structure


def naive_render(screen: torch.Tensor, faces: torch.Tensor, texture: torch.Tensor, s: SoftRasterSettings,
                 pixel_chunk: int = 2048) -> torch.Tensor:
    """One mesh (V, 3) screen, one single-channel texture (F,) -> (H, W). Every pixel is tested against
    every face's box grown by the cut-off (as the legacy kernel loops over all faces per pixel); the soft
    terms are evaluated on the pairs that pass."""
    H = s.image_size
    tri = screen[faces]  # (F, 3, 3)
    xy, z = tri[..., :2], tri[..., 2]
    r2 = s.sigma * math.log(1.0 / s.cutoff - 1.0) * (H / 2.0) ** 2  # squared pixels
    r = math.sqrt(r2)
    lo, hi = xy.detach().amin(1) - r, xy.detach().amax(1) + r  # (F, 2)
    rows, cols = torch.meshgrid(torch.arange(H, dtype=screen.dtype, device=screen.device),
                                torch.arange(H, dtype=screen.dtype, device=screen.device), indexing="ij")
    pix = torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1)  # (HW, 2) col, row
    sig = s.sigma * (H / 2.0) ** 2
    out_num, out_den, out_max = [], [], []
    for start in range(0, len(pix), pixel_chunk):
        p = pix[start:start + pixel_chunk]
        inbox = ((p[:, None] >= lo[None]) & (p[:, None] <= hi[None])).all(-1)  # (P, F) dense test
        pi, fi = inbox.nonzero(as_tuple=True)
        a, b, c = xy[fi, 0], xy[fi, 1], xy[fi, 2]
        q = p[pi]

        def cr(u, v):
            return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]

        area = cr(b - a, c - a)
        area = torch.where(area >= 0, area.clamp(min=1e-10 * H * H / 4), area.clamp(max=-1e-10 * H * H / 4))
        w = torch.stack([cr(c - b, q - b), cr(a - c, q - c), cr(b - a, q - a)], -1) / area[:, None]
        inside = ((w > 0) & (w < 1)).all(-1)
        d2 = torch.stack([_seg_d2(q, u, v) for u, v in ((a, b), (b, c), (c, a))], -1).amin(-1)
        keep = inside | (d2 < r2)
        x = torch.where(inside, d2, -d2)[keep] / sig
        wc = w[keep].clamp(0, 1)
        wc = wc / wc.sum(-1, keepdim=True).clamp(min=1e-5)
        zz = 1.0 / (wc / z[fi[keep]]).sum(-1)
        zn = (s.far - zz) / (s.far - s.near)
        ok = (zz >= s.near) & (zz <= s.far)
        local = pi[keep]
        m = torch.full((len(p),), 2 * s.eps, dtype=screen.dtype, device=screen.device)
        m = m.scatter_reduce(0, local[ok], zn[ok].detach(), reduce="amax")
        coef = torch.where(ok, torch.sigmoid(x) * torch.exp((zn - m[local]) / s.gamma), torch.zeros_like(x))
        num = torch.zeros(len(p), dtype=screen.dtype, device=screen.device).index_add(0, local, coef * texture[fi[keep]])
        den = torch.zeros(len(p), dtype=screen.dtype, device=screen.device).index_add(0, local, coef)
        out_num.append(num)
        out_den.append(den)
        out_max.append(m)
    num, den, m = torch.cat(out_num), torch.cat(out_den), torch.cat(out_max)
    bg = torch.exp((2 * s.eps - m) / s.gamma)
    return (num / (den + bg)).reshape(H, H)  # black background


def _seg_d2(q, u, v):
    e = v - u
    t = (((q - u) * e).sum(-1) / (e * e).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    d = q - u - t[:, None] * e
    return (d * d).sum(-1)


def naive_losses(vertices, cam_t, faces, prior, labels, s: DSRLossSettings):
    """Per-sample official structure; returns (mean MC over samples with a valid label, mean C)."""
    lut = dsr_merge_lut()
    raster = SoftRasterSettings(image_size=RES, sigma=s.sigma, gamma=s.gamma)
    mc_all, c_all = [], []
    for b in range(len(vertices)):
        lab = labels[b].long()
        known = lab != IGNORE
        valid = [lab_id for lab_id in MIN_CLOTHING_LABELS if int((lab == lab_id).sum()) > s.min_pixels_at_224]
        screen = project_vertices(vertices[b:b + 1], cam_t[b:b + 1], RES)[0]
        textures = [prior[:, valid].sum(1)] + [prior[:, torch.as_tensor(lut[:20] == k)].sum(1) for k in range(8)]
        renders = [naive_render(screen, faces, t.to(screen.dtype), raster) for t in textures]  # nine renders
        if valid:
            target = torch.isin(lab, torch.as_tensor(valid)).to(screen.dtype)
            p, k = renders[0], known.to(screen.dtype)
            mc_all.append(1 - (p * target * k).sum() / (((p + target - p * target) * k).sum() + 1e-6))
        merged = torch.as_tensor(lut, dtype=torch.long)[lab]
        counts = torch.stack([((merged == k) & known).sum() for k in range(8)]).double()
        big = counts[counts >= s.min_pixels_at_224]
        if len(big) == 0:
            continue
        w = torch.where(counts > s.min_pixels_at_224, big.min() / counts.clamp(min=1), torch.zeros_like(counts))
        criterion = torch.nn.CrossEntropyLoss(ignore_index=-100)
        criterion.weight = w.to(screen.dtype)  # set per sample, as the official loss does
        target_c = torch.where(known, merged, torch.full_like(merged, -100))
        c_all.append(criterion(torch.stack(renders[1:])[None], target_c[None]))
    return torch.stack(mc_all).mean(), torch.stack(c_all).mean()


# ---------------------------------------------------------------------------------------------------
# Inputs


def subdivide_to(faces: np.ndarray, rest: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the longest edge of the largest faces (by rest-pose area) until there are `target` faces.
    Returns (faces', parent face of each new face, midpoint edges (M, 2): new vertex V + i is the mean of
    vertices edges[i])."""
    need = target - len(faces)
    if need <= 0:
        return faces, np.arange(len(faces)), np.zeros((0, 2), np.int64)
    tri = rest[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    chosen = np.argsort(-area)[:need]
    new_faces, parents, edges = [f for f in faces], list(range(len(faces))), []
    V = len(rest)
    for i, f in enumerate(chosen):
        a, b, c = faces[f]
        lengths = [np.linalg.norm(rest[b] - rest[a]), np.linalg.norm(rest[c] - rest[b]), np.linalg.norm(rest[a] - rest[c])]
        k = int(np.argmax(lengths))
        u, v, w = [(a, b, c), (b, c, a), (c, a, b)][k]  # split edge u-v opposite w
        mid = V + i
        edges.append((u, v))
        new_faces[f] = np.array([u, mid, w])
        new_faces.append(np.array([mid, v, w]))
        parents.append(f)
    return np.stack(new_faces), np.array(parents), np.array(edges)


def make_inputs(batch: int, faces_target: int | None, device: torch.device, seed: int = 0):
    from pipeline.body.demo import build_demo_body
    from pipeline.body.model import BodyModel
    from pipeline.camera import crop_focal_length, intrinsics
    from pipeline.labelsets import CIHP_LABELS
    from pipeline.raster import rasterize

    body = BodyModel(build_demo_body())
    g = torch.Generator().manual_seed(seed)
    orient = torch.tensor([[math.pi, 0.0, 0.0]]).expand(batch, 3) + 0.1 * torch.randn(batch, 3, generator=g)
    pose = 0.2 * torch.randn(batch, 69, generator=g)
    with torch.no_grad():
        gt = body(global_orient=orient, body_pose=pose).vertices
        pred = body(global_orient=orient + 0.05 * torch.randn(batch, 3, generator=g),
                    body_pose=pose + 0.05 * torch.randn(batch, 69, generator=g)).vertices
    faces = np.asarray(body.faces)
    rng = np.random.default_rng(seed)
    prior = rng.gamma(0.3, size=(len(faces), len(CIHP_LABELS))).astype(np.float32)
    prior /= prior.sum(1, keepdims=True)
    if faces_target:
        faces, parents, edges = subdivide_to(faces, np.asarray(body.data.v_template), faces_target)
        prior = prior[parents]
        if len(edges):
            gt = torch.cat([gt, gt[:, edges].mean(2)], dim=1)
            pred = torch.cat([pred, pred[:, edges].mean(2)], dim=1)
    faces_t = torch.as_tensor(faces)
    cam_t = torch.stack([0.1 * torch.randn(batch, generator=g), 0.1 + 0.1 * torch.randn(batch, generator=g),
                         2 * 5000 / (224 * (0.9 + 0.1 * torch.rand(batch, generator=g)))], dim=1)
    K = torch.as_tensor(intrinsics(crop_focal_length(RES), RES), dtype=torch.float32)
    labels = torch.zeros(batch, RES, RES, dtype=torch.uint8)
    face_label = torch.as_tensor(prior.argmax(1))
    for b in range(batch):
        r = rasterize(gt[b] + cam_t[b], faces_t, K, RES, RES)
        labels[b][r.mask] = face_label[r.face_id[r.mask]].to(torch.uint8)
    labels[:, :, :20] = IGNORE  # a keypoint box
    return {"vertices": pred.to(device), "cam_t": cam_t.to(device), "faces": faces_t.to(device),
            "prior": torch.as_tensor(prior).to(device), "labels": labels.to(device),
            "has_parser": torch.ones(batch, dtype=torch.bool, device=device), "body": body}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ours(inp, s, device, repeats: int = 3):
    seconds, peaks, out = [], [], None
    for _ in range(repeats):
        verts = inp["vertices"].clone().requires_grad_(True)
        cam_t = inp["cam_t"].clone().requires_grad_(True)
        with PeakMemory(device) as mem:
            sync(device)
            start = time.perf_counter()
            out = dsr_losses(verts, cam_t, inp["faces"], inp["prior"], inp["labels"], inp["has_parser"], s)
            (out.mc + out.c).backward()
            sync(device)
            seconds.append(time.perf_counter() - start)
        peaks.append(mem.peak_mb)
    return min(seconds), max(peaks), out


def time_baseline(inp, s, device, n: int):
    verts = inp["vertices"][:n].clone().requires_grad_(True)
    cam_t = inp["cam_t"][:n].clone().requires_grad_(True)
    with PeakMemory(device) as mem:
        sync(device)
        start = time.perf_counter()
        mc, c = naive_losses(verts, cam_t, inp["faces"], inp["prior"], inp["labels"][:n].cpu(), s)
        (mc + c).backward()
        sync(device)
        seconds = time.perf_counter() - start
    return seconds, mem.peak_mb, mc.detach(), c.detach()


def hmr_step_ratio(inp, s, device, batch: int, repeats: int = 2):  # noqa: C901
    """Seconds of an HMR training step (forward, keypoint + parameter losses, backward, Adam) at `batch`,
    without and with the DSR losses on the predicted bodies."""
    from models.hmr import HMR
    from models.smpl_head import SMPLHead

    torch.manual_seed(0)
    model = HMR().to(device).train()
    head = SMPLHead(inp["body"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    images = torch.randn(batch, 3, RES, RES, device=device)
    keypoints = torch.rand(batch, 49, 2, device=device) * 2 - 1
    faces = torch.as_tensor(inp["body"].faces, device=device)
    prior = inp["prior"][: len(faces)]

    def step(with_dsr: bool) -> float:
        sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        pred = model(images)
        out = head.predict(pred)
        loss = F.mse_loss(out.joints2d, keypoints) + 1e-3 * pred.betas.square().mean()
        if with_dsr:
            dsr = dsr_losses(out.vertices, out.cam_t, faces, prior, inp["labels"], inp["has_parser"], s)
            loss = loss + 0.1 * (dsr.mc + dsr.c)
        loss.backward()
        opt.step()
        sync(device)
        return time.perf_counter() - start

    step(False)  # warm-up
    step(True)  # warm-up (compiles the kernels when asked)
    plain = min(step(False) for _ in range(repeats))
    with_dsr = min(step(True) for _ in range(repeats))
    return plain, with_dsr


def _measure(kind: str, batch: int, target, device_name: str, n: int, queue, compiled: bool = False) -> None:
    """One measurement in its own process (CPU), so that its peak RSS is not hidden by memory an earlier
    measurement freed into the allocator's pools."""
    device = torch.device(device_name)
    inp = make_inputs(batch, target, device)
    s = DSRLossSettings(compile=compiled)
    if kind == "ours":
        seconds, peak, out = time_ours(inp, s, device)
        sub = {k: (v[:n] if torch.is_tensor(v) and v.dim() and len(v) == batch else v) for k, v in inp.items()}
        with torch.no_grad():
            same = dsr_losses(sub["vertices"], sub["cam_t"], sub["faces"], sub["prior"], sub["labels"],
                              sub["has_parser"], s)
        queue.put({"seconds": seconds, "peak_mb": peak, "mc": out.mc.item(), "c": out.c.item(),
                   "mc_n": same.mc.item(), "c_n": same.c.item(), "faces": int(inp["faces"].shape[0]),
                   "vertices": int(inp["vertices"].shape[1])})
    else:
        seconds, peak, mc, c = time_baseline(inp, s, device, n)
        queue.put({"seconds": seconds, "peak_mb": peak, "mc_n": mc.item(), "c_n": c.item()})


def measure(kind: str, batch: int, target, device: torch.device, n: int, compiled: bool = False) -> dict:
    if device.type == "cuda":
        import queue as q

        box = q.Queue()
        _measure(kind, batch, target, str(device), n, box, compiled)
        return box.get()
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    box = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, batch, target, str(device), n, box, compiled))
    proc.start()
    result = box.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--baseline-samples", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-hmr", action="store_true", help="leave out the HMR training-step ratio")
    args = parser.parse_args()
    device = torch.device(args.device)
    figures = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "batch": args.batch, "resolution": RES, "bodies": {}}
    for name, target in (("demo_body", None), ("smpl_faces", 13776)):
        n = min(args.baseline_samples, args.batch)
        ours = measure("ours", args.batch, target, device, n)
        fast = measure("ours", args.batch, target, device, n, compiled=True)
        base = measure("baseline", args.batch, target, device, n)
        rel = max(abs(ours["mc_n"] - base["mc_n"]) / max(abs(base["mc_n"]), 1e-12),
                  abs(ours["c_n"] - base["c_n"]) / max(abs(base["c_n"]), 1e-12))
        base_batch_s = base["seconds"] * args.batch / n
        row = {"faces": ours["faces"], "vertices": ours["vertices"], "ours_s": round(ours["seconds"], 3),
               "ours_peak_mb": round(ours["peak_mb"], 1), "baseline_samples": n,
               "baseline_s_measured": round(base["seconds"], 2), "baseline_s_per_batch": round(base_batch_s, 1),
               "baseline_peak_mb": round(base["peak_mb"], 1), "speedup": round(base_batch_s / ours["seconds"], 1),
               "max_rel_diff": rel, "mc": ours["mc"], "c": ours["c"],
               "compiled_s": round(fast["seconds"], 3), "compiled_peak_mb": round(fast["peak_mb"], 1),
               "compiled_speedup": round(base_batch_s / fast["seconds"], 1),
               "compiled_mc_diff": abs(fast["mc"] - ours["mc"]), "compiled_c_diff": abs(fast["c"] - ours["c"])}
        figures["bodies"][name] = row
        print(f"{name} ({row['faces']} faces), batch {args.batch}, {RES}px, forward+backward: ours {row['ours_s']:.2f} s "
              f"(peak {row['ours_peak_mb']:.0f} MB); baseline {row['baseline_s_measured']:.1f} s for {n} samples = "
              f"{base_batch_s:.0f} s per batch (peak {row['baseline_peak_mb']:.0f} MB); speedup {row['speedup']}x; "
              f"losses equal to {rel:.1e} relative; compiled kernels {row['compiled_s']:.2f} s (peak "
              f"{row['compiled_peak_mb']:.0f} MB, speedup {row['compiled_speedup']}x)", flush=True)
        if name == "demo_body" and not args.skip_hmr:
            step_inputs = make_inputs(args.batch, None, device)
            figures["hmr_step"] = {}
            for label, compiled in (("eager", False), ("compiled", True)):
                plain, with_dsr = hmr_step_ratio(step_inputs, DSRLossSettings(compile=compiled), device, args.batch)
                figures["hmr_step"][label] = {"plain_s": round(plain, 3), "with_dsr_s": round(with_dsr, 3),
                                              "ratio": round(with_dsr / plain, 3)}
                print(f"HMR training step, batch {args.batch}: {plain:.2f} s, with the DSR losses ({label} kernels) "
                      f"{with_dsr:.2f} s ({with_dsr / plain:.2f}x)", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

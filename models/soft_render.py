"""A batched soft rasteriser in plain PyTorch (CPU and CUDA): SoftRas (Liu et al., ICCV 2019) with the
conventions of the legacy SoftRas kernel that DSR trains with (../shared/notes/softras.md), and per-face
textures of any number of channels, so that all of DSR's semantic textures render in one pass.

For pixel p and face f (screen-space triangle, double-sided):
    D(p, f) = sigmoid(s d^2 / sigma)      d: Euclidean distance from p to the triangle, in NDC units
                                          (2 / H per pixel); s = +1 strictly inside, -1 otherwise
    D = 0 beyond the cut-off: outside and d^2 >= sigma ln(9999), i.e. where D would be < 1e-4
    alpha(p) = 1 - prod_f (1 - D)
    colour(p) = (sum_f D exp(zn_f / gamma) c_f + exp(2 eps / gamma) c_bg) / (sum_f D exp(zn_f / gamma) + exp(2 eps / gamma))
with zn = (far - z) / (far - near) from the perspective-correct depth z = 1 / sum(w_i / z_i) at the
barycentrics clipped to [0, 1] and renormalised; only faces with near <= z <= far enter the colour (all
enter alpha). The background weight exp(2 eps / gamma), not exp(eps / gamma), is the legacy kernel's:
its running normaliser starts at exp(eps / gamma) in a frame already shifted by eps. Unlike that kernel,
which just outside a face near its first two vertices reads the next face's texture, every pair here
reads its own face's texture.

Camera (DSR's P = K diag(1, -1, 1) [I | t], K = [[f, 0, res/2], [0, f, res/2], [0, 0, 1]], f = 5000 at
224): a body point X with camera translation t lands at column (f x + c z) / (z + 1e-5) - 1/2 and row
H - 1/2 - (c z - f y) / (z + 1e-5), (x, y, z) = X + t, c = res / 2; that is f x / z + (res - 1) / 2 up
to 1e-5 / z, the project's pixel convention (pipeline.camera: pixel centres on integers, row 0 on top).

Work: each face is expanded into the pixels of its screen bounding box grown by the cut-off distance
(per-face culling, finer than per-tile); pairs beyond the cut-off are dropped before anything is kept
for autograd; faces go in chunks of at most `max_pairs` pairs, each chunk checkpointed, so memory stays
bounded at batch 64 and SMPL's 13,776 faces. `dense=True` evaluates every pixel against every face
(the reference for tests and the naive benchmark baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from pipeline.camera import SPIN_FOCAL_AT_224, crop_focal_length


@dataclass(frozen=True)
class SoftRasterSettings:
    image_size: int = 224  # pixels, square
    sigma: float = 1e-5  # NDC^2: the released DSR configuration (about a 1-pixel soft edge at 224)
    gamma: float = 1e-1  # depth temperature of the colour aggregation
    eps: float = 1e-3  # background depth offset
    near: float = 1.0  # metres
    far: float = 100.0
    cutoff: float = 1e-4  # D below this is 0: distance cut-off sigma ln(1 / cutoff - 1)
    max_pairs: int = 1_000_000  # (pixel, face) pairs per chunk: bounds the temporaries (~0.3 GB)
    backward: str = "analytic"  # "analytic" (hand-derived, recomputes the geometry) or "autograd" (reference)
    compile: bool = False  # torch.compile the per-pair kernels (analytic backward only): ~3x on CPU, after a
    #                        one-time compilation of ~1 minute; summation order then varies in the last bits

    @property
    def sigma_px(self) -> float:
        """sigma in squared pixels."""
        return self.sigma * (self.image_size / 2.0) ** 2

    @property
    def threshold_px(self) -> float:
        """Squared cut-off distance in pixels^2."""
        return self.sigma_px * math.log(1.0 / self.cutoff - 1.0)


def project_vertices(vertices: torch.Tensor, cam_t: torch.Tensor, image_size: int = 224,
                     focal_length: float | None = None) -> torch.Tensor:
    """Body-frame vertices (B, V, 3) and camera translations (B, 3) -> screen (B, V, 3): column and row
    in pixels (pixel centres on integers), and camera depth z in metres. `focal_length` in pixels at
    this image size (default 5000 at 224, scaled)."""
    f = crop_focal_length(image_size, SPIN_FOCAL_AT_224) if focal_length is None else focal_length
    c = image_size / 2.0
    p = vertices + cam_t[:, None, :]
    x, y, z = p.unbind(-1)
    col = (f * x + c * z) / (z + 1e-5) - 0.5
    row = image_size - 0.5 - (c * z - f * y) / (z + 1e-5)
    return torch.stack([col, row, z], dim=-1)


def soft_rasterize(screen: torch.Tensor, faces: torch.Tensor, textures: torch.Tensor,
                   settings: SoftRasterSettings = SoftRasterSettings(), background: float | torch.Tensor = 0.0,
                   dense: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """screen (B, V, 3) from project_vertices, faces (F, 3) long, textures (B, F, C) or (F, C) per-face
    colours, background a number or (C,) -> (colours (B, C, H, W), alpha (B, H, W)). Differentiable in
    screen and textures."""
    B, H, s = screen.shape[0], settings.image_size, settings
    faces = faces.to(screen.device, torch.long)
    F_ = faces.shape[0]
    if textures.dim() == 2:
        textures = textures.expand(B, *textures.shape)
    textures = textures.to(screen.dtype).reshape(B * F_, -1)
    C = textures.shape[-1]
    table = _face_table(screen[:, faces].reshape(B * F_, 3, 3), H)  # (BF, 27), differentiable
    bf, pix = _all_pairs(B, F_, H, screen.device) if dense else _box_pairs(table.detach(), s)
    # pass 1, no autograd: drop the pairs beyond the cut-off; per pixel, the largest normalised depth of
    # the faces that enter the colour, so that every weight exp((zn - m) / gamma) is at most 1
    zmax = torch.full((B * H * H,), 2 * s.eps, dtype=screen.dtype, device=screen.device)
    kept = []
    with torch.no_grad():
        for lo in range(0, bf.numel(), s.max_pairs):
            cbf, cpix = bf[lo:lo + s.max_pairs], pix[lo:lo + s.max_pairs]
            x, zn, valid = _kernel("terms", s)(table.detach(), cbf, cpix, s)
            keep = torch.isfinite(x) & (x > -s.threshold_px / s.sigma_px)
            zmax.scatter_reduce_(0, _flat_pixel(cbf, cpix, F_, H)[keep & valid], zn[keep & valid], reduce="amax")
            kept.append((cbf[keep], cpix[keep]))
    bf = torch.cat([k[0] for k in kept]) if kept else bf[:0]
    pix = torch.cat([k[1] for k in kept]) if kept else pix[:0]
    # pass 2: the per-pixel sums (B H W, 2 + C): sum log(1 - D), sum of weights, weighted texture sums
    if s.backward == "analytic":
        sums = _PixelSums.apply(table, textures, zmax, bf, pix, s, F_)
    else:  # autograd through the per-pair terms, checkpointed per chunk when there are several
        chunks = [(bf[lo:lo + s.max_pairs], pix[lo:lo + s.max_pairs]) for lo in range(0, bf.numel(), s.max_pairs)]
        grad = torch.is_grad_enabled() and (table.requires_grad or textures.requires_grad)
        sums = screen.new_zeros(B * H * H, C + 2)
        for cbf, cpix in chunks:
            if grad and len(chunks) > 1:
                sums = sums + checkpoint(_accumulate, table, textures, zmax, cbf, cpix, s, F_, use_reentrant=False)
            else:
                sums = sums + _accumulate(table, textures, zmax, cbf, cpix, s, F_)
    alpha = 1.0 - torch.exp(sums[:, 0])
    bg_weight = torch.exp((2 * s.eps - zmax) / s.gamma)
    bg = torch.as_tensor(background, dtype=screen.dtype, device=screen.device).expand(C)
    rgb = (sums[:, 2:] + bg_weight[:, None] * bg) / (sums[:, 1] + bg_weight)[:, None]
    return rgb.reshape(B, H, H, C).permute(0, 3, 1, 2), alpha.reshape(B, H, H)


# ---------------------------------------------------------------------------------------------------
# (pixel, face) pairs


def _all_pairs(B: int, F_: int, H: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    bf = torch.arange(B * F_, device=device).repeat_interleave(H * H)
    pix = torch.arange(H * H, device=device).repeat(B * F_)
    return bf, pix


# columns of the per-face table
_V, _E, _INV, _BARY, _Z = slice(0, 6), slice(6, 12), slice(12, 15), slice(15, 24), slice(24, 27)


def _face_table(tri: torch.Tensor, H: int) -> torch.Tensor:
    """(BF, 3, 3) screen triangles -> (BF, 27) per-face terms gathered by every pair: the vertices' xy
    (6), the edge vectors a->b, b->c, c->a (6), their inverse squared lengths (3), the affine maps
    pixel -> barycentrics, w_i = u_i col + v_i row + k_i (9), the vertices' depths (3)."""
    xy, z = tri[..., :2], tri[..., 2]
    a, b, c = xy.unbind(1)
    edges = torch.stack([b - a, c - b, a - c], dim=1)  # (BF, 3, 2)
    inv = 1.0 / (edges * edges).sum(-1).clamp(min=1e-12)
    area = edges[:, 0, 0] * (c - a)[:, 1] - edges[:, 0, 1] * (c - a)[:, 0]
    # the kernel clamps |det| at 1e-10 in NDC^2 units (4 / H^2 per pixel^2)
    floor = 1e-10 * H * H / 4.0
    area = torch.where(area >= 0, area.clamp(min=floor), area.clamp(max=-floor))
    # w_0 is the signed area of (b, c, p) over the face's: cross(c - b, p - b) / area, and so on
    rows = []
    for u, v in ((b, c), (c, a), (a, b)):
        e = v - u
        rows.append(torch.stack([-e[:, 1], e[:, 0], e[:, 1] * u[:, 0] - e[:, 0] * u[:, 1]], dim=-1))
    bary = torch.stack(rows, dim=1) / area[:, None, None]  # (BF, 3, 3)
    return torch.cat([xy.reshape(-1, 6), edges.reshape(-1, 6), inv, bary.reshape(-1, 9), z], dim=-1)


def _box_pairs(table: torch.Tensor, s: SoftRasterSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (face, pixel) with the pixel centre inside the face's screen box grown by the cut-off
    distance (the legacy kernel's border test), as flat indices: bf = b F + f, pix = row H + col."""
    H, device = s.image_size, table.device
    r = math.sqrt(s.threshold_px)
    xy = table[:, _V].reshape(-1, 3, 2)
    lo = torch.ceil(xy.amin(1) - r).clamp_(0, H)  # (BF, 2) col, row
    hi = torch.floor(xy.amax(1) + r).clamp_(-1, H - 1)
    size = (hi - lo + 1).clamp_(min=0).long()
    finite = torch.isfinite(xy).all(dim=(1, 2))
    counts = size[:, 0] * size[:, 1] * finite
    bf = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    start = torch.cumsum(counts, 0) - counts
    k = torch.arange(int(counts.sum()), device=device) - start[bf]
    w = size[bf, 0]
    col = lo[bf, 0].long() + k % w
    row = lo[bf, 1].long() + torch.div(k, w, rounding_mode="floor")
    return bf, row * H + col


def _flat_pixel(bf: torch.Tensor, pix: torch.Tensor, F_: int, H: int) -> torch.Tensor:
    return torch.div(bf, F_, rounding_mode="floor") * (H * H) + pix


class _PairGeometry(NamedTuple):
    """Per (pixel, face) pair: what the forward terms and the hand-derived backward both read."""
    col: torch.Tensor  # (P,) the pixel's column and row
    row: torch.Tensor
    w: torch.Tensor  # (P, 3) screen barycentrics
    inside: torch.Tensor  # (P,) all barycentrics strictly in (0, 1)
    rx: torch.Tensor  # (P, 3) pixel minus the nearest point of each edge
    ry: torch.Tensor
    u: torch.Tensor  # (P, 3) that point's position along its edge, in [0, 1]
    k: torch.Tensor  # (P,) the nearest edge
    x: torch.Tensor  # (P,) logit of D = sigmoid(x): +d^2 / sigma inside, -d^2 / sigma outside
    c: torch.Tensor  # (P, 3) barycentrics clipped to [0, 1]
    S: torch.Tensor  # (P, 1) their sum, at least 1e-5
    wc: torch.Tensor  # (P, 3) c / S
    zi: torch.Tensor  # (P, 3) the corners' depths
    z: torch.Tensor  # (P,) perspective-correct depth
    zn: torch.Tensor  # (P,) normalised depth (far - z) / (far - near)
    valid: torch.Tensor  # (P,) near <= z <= far


def _pair_geometry(table: torch.Tensor, bf: torch.Tensor, pix: torch.Tensor, s: SoftRasterSettings) -> _PairGeometry:
    """The per-pair terms. The table's column groups are gathered separately: slicing per-pair rows
    would make autograd allocate a full (pairs, 27) zero tensor per slice in the backward pass."""
    H = s.image_size
    col = (pix % H).to(table.dtype)
    row = torch.div(pix, H, rounding_mode="floor").to(table.dtype)
    bary = table[:, _BARY].reshape(-1, 3, 3)[bf]  # (P, 3, 3)
    w = bary[:, :, 0] * col[:, None] + bary[:, :, 1] * row[:, None] + bary[:, :, 2]  # (P, 3)
    inside = ((w > 0) & (w < 1)).all(dim=-1)
    xy = table[:, _V].reshape(-1, 3, 2)[bf]
    edges = table[:, _E].reshape(-1, 3, 2)[bf]
    px = col[:, None] - xy[:, :, 0]  # (P, 3): pixel minus each edge's start
    py = row[:, None] - xy[:, :, 1]
    ex, ey = edges[:, :, 0], edges[:, :, 1]
    u = ((px * ex + py * ey) * table[:, _INV][bf]).clamp(0, 1)
    rx, ry = px - u * ex, py - u * ey
    d2, k = (rx * rx + ry * ry).min(dim=-1)
    x = torch.where(inside, d2, -d2) / s.sigma_px
    c = w.clamp(0, 1)
    S = c.sum(-1, keepdim=True).clamp(min=1e-5)
    wc = c / S
    zi = table[:, _Z][bf]
    z = 1.0 / (wc / zi).sum(-1)
    return _PairGeometry(col, row, w, inside, rx, ry, u, k, x, c, S, wc, zi, z, (s.far - z) / (s.far - s.near),
                         (z >= s.near) & (z <= s.far))


def _pair_terms(table: torch.Tensor, bf: torch.Tensor, pix: torch.Tensor, s: SoftRasterSettings):
    """Per pair: the logit x of D = sigmoid(x), the normalised depth zn and whether the depth is within
    [near, far]."""
    g = _pair_geometry(table, bf, pix, s)
    return g.x, g.zn, g.valid


def _weights(x, zn, valid, zmax, flat, s: SoftRasterSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, c): the probability and the colour weight D e^((zn - m) / gamma) (0 outside [near, far])."""
    D = torch.sigmoid(x)
    return D, torch.where(valid, D * torch.exp((zn - zmax[flat]) / s.gamma), torch.zeros_like(x))


def _accumulate(table, textures, zmax, bf, pix, s: SoftRasterSettings, F_: int) -> torch.Tensor:
    """Per-pixel sums over one chunk of pairs (B H W, 2 + C): sum log(1 - D), sum D e^((zn - m)/gamma)
    and the texture sums weighted alike."""
    x, zn, valid = _pair_terms(table, bf, pix, s)
    flat = _flat_pixel(bf, pix, F_, s.image_size)
    _, coef = _weights(x, zn, valid, zmax, flat, s)
    per_pair = torch.cat([F.logsigmoid(-x)[:, None], coef[:, None], coef[:, None] * textures[bf]], dim=-1)
    return table.new_zeros(zmax.numel(), per_pair.shape[1]).index_add(0, flat, per_pair)



_COMPILED: dict = {}


def _kernel(name: str, s: SoftRasterSettings):
    """The per-pair function `name`, compiled once per process when s.compile (dynamic shapes: the pair
    count changes every call)."""
    eager = {"terms": _pair_terms, "accumulate": _accumulate, "backward": _pair_backward}[name]
    if not s.compile:
        return eager
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(eager, dynamic=True)
    return _COMPILED[name]


class _PixelSums(torch.autograd.Function):
    """The per-pixel sums of `_accumulate`, with a hand-derived backward that recomputes the per-pair
    geometry instead of keeping autograd's intermediates: memory is the kept pairs' indices only.

    Gradients (per pair, D = sigmoid(x), c = valid D e^((zn - m)/gamma); m is a constant shift, exact
    since every output is invariant to it):
      d log(1 - D)/dx = -D,   dc/dx = c (1 - D),   dc/dzn = c / gamma
      x = +-d^2 / sigma:  d d^2 / d a_k = -2 r,  d d^2 / d e_k = -2 u r  for the nearest edge k (start a_k,
        vector e_k, nearest point a_k + u e_k, r = p - a_k - u e_k; the terms through u vanish: r is
        orthogonal to e_k where u is not clamped, and u is constant where it is)
      z = 1 / sum(wc_i / z_i), wc = clamp(w, 0, 1) / max(sum clamp(w), 1e-5), w = bary (col, row, 1):
        dz/dz_i = z^2 wc_i / z_i^2,  dz/dwc_i = -z^2 / z_i, then through the renormalisation and the clamp.
    """

    @staticmethod
    def forward(ctx, table, textures, zmax, bf, pix, s: SoftRasterSettings, F_: int):
        sums = table.new_zeros(zmax.numel(), 2 + textures.shape[-1])
        for lo in range(0, bf.numel(), s.max_pairs):
            cbf, cpix = bf[lo:lo + s.max_pairs], pix[lo:lo + s.max_pairs]
            sums += _kernel("accumulate", s)(table, textures, zmax, cbf, cpix, s, F_)
        ctx.save_for_backward(table, textures, zmax, bf, pix)
        ctx.s, ctx.F_ = s, F_
        return sums

    @staticmethod
    def backward(ctx, g_sums):
        table, textures, zmax, bf, pix = ctx.saved_tensors
        s, F_, H = ctx.s, ctx.F_, ctx.s.image_size
        g_table = torch.zeros_like(table) if ctx.needs_input_grad[0] else None
        g_tex = torch.zeros_like(textures) if ctx.needs_input_grad[1] else None
        for lo in range(0, bf.numel(), s.max_pairs):
            cbf, cpix = bf[lo:lo + s.max_pairs], pix[lo:lo + s.max_pairs]
            g = _kernel("backward", s)(table, textures, zmax, cbf, cpix, g_sums, s, F_, H, g_tex is not None)
            if g_table is not None:
                g_table.index_add_(0, cbf, g[0])
            if g_tex is not None:
                g_tex.index_add_(0, cbf, g[1])
        return g_table, g_tex, None, None, None, None, None


def _pair_backward(table, textures, zmax, bf, pix, g_sums, s: SoftRasterSettings, F_: int, H: int, want_tex: bool):
    """(per-pair gradient of the table row (P, 27), per-pair texture gradient (P, C) or None)."""
    p = _pair_geometry(table, bf, pix, s)
    flat = _flat_pixel(bf, pix, F_, H)
    D, coef = _weights(p.x, p.zn, p.valid, zmax, flat, s)
    g = g_sums[flat]  # (P, 2 + C)
    g_coef = g[:, 1] + (g[:, 2:] * textures[bf]).sum(-1)
    g_x = -g[:, 0] * D + g_coef * coef * (1 - D)
    g_zn = g_coef * coef / s.gamma
    # distance term: only the nearest edge k
    g_d2 = torch.where(p.inside, g_x, -g_x) / s.sigma_px
    ar = torch.arange(len(bf), device=bf.device)
    r = torch.stack([p.rx[ar, p.k], p.ry[ar, p.k]], dim=-1)  # (P, 2)
    g_v = table.new_zeros(len(bf), 3, 2)
    g_e = table.new_zeros(len(bf), 3, 2)
    g_v[ar, p.k] = -2 * g_d2[:, None] * r
    g_e[ar, p.k] = -2 * (g_d2 * p.u[ar, p.k])[:, None] * r
    # depth term
    g_z = -g_zn / (s.far - s.near)
    z2 = p.z * p.z
    g_zi = (g_z * z2)[:, None] * p.wc / (p.zi * p.zi)
    g_wc = -(g_z * z2)[:, None] / p.zi
    full = (p.c.sum(-1, keepdim=True) >= 1e-5).to(table.dtype)
    g_c = g_wc / p.S - full * (g_wc * p.c).sum(-1, keepdim=True) / (p.S * p.S)
    g_w = g_c * ((p.w > 0) & (p.w < 1)).to(table.dtype)
    g_bary = g_w[:, :, None] * torch.stack([p.col, p.row, torch.ones_like(p.col)], dim=-1)[:, None, :]  # (P, 3, 3)
    g_row = torch.cat([g_v.reshape(-1, 6), g_e.reshape(-1, 6), table.new_zeros(len(bf), 3), g_bary.reshape(-1, 9),
                       g_zi], dim=-1)
    return g_row, (coef[:, None] * g[:, 2:] if want_tex else None)


# ---------------------------------------------------------------------------------------------------
# Optional backend: pytorch3d's rasteriser finds the faces near each pixel, the rest is as above


def pytorch3d_available() -> bool:
    try:
        import pytorch3d.renderer  # noqa: F401
    except ImportError:
        return False
    return True


def pytorch3d_soft_rasterize(screen: torch.Tensor, faces: torch.Tensor, textures: torch.Tensor,
                             settings: SoftRasterSettings = SoftRasterSettings(), background: float = 0.0,
                             faces_per_pixel: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """soft_rasterize with pytorch3d's coarse-to-fine rasteriser finding the (pixel, face) pairs within
    the cut-off (its blur radius is the same squared NDC distance); probabilities, depths and the
    aggregation are computed here from its signed distances and screen barycentrics, so both backends
    share the maths. Raises when a pixel has more than `faces_per_pixel` faces within the cut-off."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    B, H, s = screen.shape[0], settings.image_size, settings
    faces = faces.to(screen.device, torch.long)
    F_ = faces.shape[0]
    # pytorch3d's NDC: +x left, +y up, pixel (i, j) centred at (1 - (2j + 1) / W, 1 - (2i + 1) / H)
    ndc = torch.stack([1 - (2 * screen[..., 0] + 1) / H, 1 - (2 * screen[..., 1] + 1) / H, screen[..., 2]], dim=-1)
    meshes = Meshes(verts=list(ndc), faces=[faces] * B)
    pix_to_face, _, bary, dists = rasterize_meshes(
        meshes, image_size=H, blur_radius=s.sigma * math.log(1.0 / s.cutoff - 1.0), faces_per_pixel=faces_per_pixel,
        perspective_correct=False, clip_barycentric_coords=False, cull_backfaces=False)
    if (pix_to_face[..., -1] >= 0).any():
        raise ValueError(f"more than faces_per_pixel={faces_per_pixel} faces lie within the cut-off of a pixel; raise it")
    hit = pix_to_face >= 0  # (B, H, W, K)
    idx = pix_to_face.clamp(min=0)
    x = torch.where(hit, -dists / s.sigma, torch.zeros_like(dists))  # pytorch3d: negative inside
    corner_z = screen[:, faces, 2].reshape(B * F_, 3)[idx]  # (B, H, W, K, 3)
    wc = bary.clamp(0, 1)
    wc = wc / wc.sum(-1, keepdim=True).clamp(min=1e-5)
    z = 1.0 / (wc / corner_z).sum(-1)
    zn = (s.far - z) / (s.far - s.near)
    valid = hit & (z >= s.near) & (z <= s.far)
    zmax = torch.where(valid, zn, torch.full_like(zn, 2 * s.eps)).amax(-1).clamp(min=2 * s.eps).detach()
    coef = torch.where(valid, torch.sigmoid(x) * torch.exp((zn - zmax[..., None]) / s.gamma), torch.zeros_like(x))
    if textures.dim() == 2:
        textures = textures.expand(B, *textures.shape)
    tex = textures.reshape(B * F_, -1).to(screen.dtype)[idx]  # (B, H, W, K, C)
    alpha = 1.0 - torch.exp(torch.where(hit, F.logsigmoid(-x), torch.zeros_like(x)).sum(-1))
    bg_weight = torch.exp((2 * s.eps - zmax) / s.gamma)
    rgb = ((coef[..., None] * tex).sum(-2) + bg_weight[..., None] * background) / (coef.sum(-1) + bg_weight)[..., None]
    return rgb.permute(0, 3, 1, 2), alpha

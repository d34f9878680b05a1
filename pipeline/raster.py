"""A vectorised z-buffer rasteriser in plain PyTorch (CPU and CUDA): exact face-id, depth and
perspective-correct barycentric buffers, with no anti-aliasing, for label maps.

Conventions: camera coordinates are OpenCV's (x right, y down, z forward, metres); pixel (row i,
column j) is sampled at its centre, the continuous image point (x=j, y=i). A pixel covered by several
faces takes the nearest; exact depth ties go to the lowest face id, so the output is deterministic.

Each face is expanded into the pixels of its bounding box, tested with edge functions, and the
nearest face per pixel is found with scatter-min; faces are processed in chunks so memory stays
bounded however large a face is on screen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.camera import project


@dataclass
class Raster:
    face_id: torch.Tensor  # (H, W) long, -1 where no face covers the pixel
    depth: torch.Tensor  # (H, W) camera z in metres, inf on background
    bary: torch.Tensor  # (H, W, 3) perspective-correct barycentrics of the pixel in its face

    @property
    def mask(self) -> torch.Tensor:
        return self.face_id >= 0

    def interpolate(self, values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Per-pixel interpolation of per-vertex values (V, C) -> (H, W, C); zeros on background."""
        out = values.new_zeros(self.face_id.shape + values.shape[1:])
        out[self.mask] = self.interpolate_covered(values, faces)
        return out

    def interpolate_covered(self, values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Interpolated values (M, C) at the covered pixels only, in row-major order of `mask`."""
        covered = self.mask
        corner_values = values[faces[self.face_id[covered]]]  # (M, 3, C)
        return torch.einsum("mk,mkc->mc", self.bary[covered].to(values.dtype), corner_values)


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int,
              near: float = 1e-3, max_pairs: int = 4_000_000) -> Raster:
    """Rasterise a triangle mesh given in camera coordinates.

    vertices (V, 3) metres, faces (F, 3) long, K (3, 3) intrinsics. Faces with a vertex closer than
    `near` are skipped (no clipping): keep the camera away from the geometry.
    """
    device, dtype = vertices.device, vertices.dtype
    faces = faces.to(device=device, dtype=torch.long)
    K = K.to(device=device, dtype=dtype)
    n_pix = height * width
    best_depth = torch.full((n_pix,), float("inf"), device=device, dtype=dtype)
    best_face = torch.full((n_pix,), -1, device=device, dtype=torch.long)
    best_bary = torch.zeros((n_pix, 3), device=device, dtype=dtype)

    z = vertices[:, 2]
    uv = project(vertices, K)
    tri = uv[faces]  # (F, 3, 2) pixels
    tri_z = z[faces]  # (F, 3)
    x0 = torch.ceil(tri[..., 0].min(dim=1).values).clamp(0, width - 1).long()
    x1 = torch.floor(tri[..., 0].max(dim=1).values).clamp(-1, width - 1).long()
    y0 = torch.ceil(tri[..., 1].min(dim=1).values).clamp(0, height - 1).long()
    y1 = torch.floor(tri[..., 1].max(dim=1).values).clamp(-1, height - 1).long()
    box_w, box_h = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)
    in_front = (tri_z > near).all(dim=1)
    inside_view = (tri[..., 0].max(1).values >= 0) & (tri[..., 0].min(1).values <= width - 1) & \
                  (tri[..., 1].max(1).values >= 0) & (tri[..., 1].min(1).values <= height - 1)
    counts = box_w * box_h * (in_front & inside_view)
    candidates = torch.nonzero(counts > 0).squeeze(1)
    if candidates.numel() == 0:
        return Raster(best_face.view(height, width), best_depth.view(height, width), best_bary.view(height, width, 3))

    cum = torch.cumsum(counts[candidates], 0)
    start = 0
    while start < candidates.numel():
        # the largest run of faces whose pixel pairs fit the budget (at least one face)
        base = cum[start - 1] if start > 0 else cum.new_zeros(())
        stop = int(torch.searchsorted(cum, base + max_pairs, right=True))
        stop = max(stop, start + 1)
        _rasterize_chunk(candidates[start:stop], counts, x0, y0, box_w, tri, tri_z, width,
                         best_depth, best_face, best_bary)
        start = stop
    return Raster(best_face.view(height, width), best_depth.view(height, width), best_bary.view(height, width, 3))


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def _rasterize_chunk(face_ids, counts, x0, y0, box_w, tri, tri_z, width, best_depth, best_face, best_bary):
    device = tri.device
    n = counts[face_ids]
    face = torch.repeat_interleave(face_ids, n)  # (P,) one entry per (face, pixel of its box)
    offsets = torch.cumsum(n, 0) - n
    local = torch.arange(int(n.sum()), device=device) - torch.repeat_interleave(offsets, n)
    bw = box_w[face]
    px = x0[face] + local % bw
    py = y0[face] + torch.div(local, bw, rounding_mode="floor")
    t = tri[face]  # (P, 3, 2)
    fx, fy = px.to(t.dtype), py.to(t.dtype)
    ax, ay, bx, by, cx, cy = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1], t[:, 2, 0], t[:, 2, 1]
    area = _cross(bx - ax, by - ay, cx - ax, cy - ay)
    w0 = _cross(bx - fx, by - fy, cx - fx, cy - fy) / area
    w1 = _cross(cx - fx, cy - fy, ax - fx, ay - fy) / area
    w2 = 1.0 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (area.abs() > 1e-12)
    if not inside.any():
        return
    face, px, py = face[inside], px[inside], py[inside]
    w = torch.stack([w0[inside], w1[inside], w2[inside]], dim=1)
    zc = tri_z[face]
    inv_z = (w / zc).sum(dim=1)
    depth = 1.0 / inv_z
    bary = (w / zc) / inv_z.unsqueeze(1)
    pix = py * width + px
    # merge with what earlier chunks found: nearest depth, then the lowest face id
    chunk_depth = best_depth.clone().scatter_reduce_(0, pix, depth, reduce="amin")
    at_best = depth == chunk_depth[pix]
    big = torch.iinfo(torch.long).max
    chunk_face = torch.full_like(best_face, big).scatter_reduce_(0, pix[at_best], face[at_best], reduce="amin")
    winners = at_best & (face == chunk_face[pix])
    take_new = chunk_depth < best_depth
    tie = (chunk_depth == best_depth) & (chunk_face < best_face) & (chunk_face != big)
    update = (take_new | tie)[pix[winners]]
    pw = pix[winners][update]
    best_depth[pw] = depth[winners][update]
    best_face[pw] = face[winners][update]
    best_bary[pw] = bary[winners][update]

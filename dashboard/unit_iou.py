"""Drawing -> IoU of every unit: exact, vectorised over units, pixels and blocks.

For each unit u the activation map ``a_u (h, w)`` is upsampled to the patch exactly as
``F.interpolate(mode="bilinear", align_corners=False)`` does, thresholded at ``t_u`` (strictly
greater), and compared with the drawing: ``IoU_u = |S_u & M| / |S_u | M|``.

Materialising all upsampled maps costs C*S*S values (1280 * 512 * 512 = 335 M) and is far too
slow on a laptop. We use two facts instead:

* every upsampled pixel is a convex combination of the 2x2 feature values of its cell, and on
  any rectangle of pixels inside one cell the bilinear function is monotone along each axis, so
  its extremes sit at the rectangle's four corner pixels;
* mask counts over any rectangle come from one integral image of the drawing.

So a cell (then a block) whose corners are all clearly above ``t_u`` adds its pixel count and its
mask count without touching a pixel, one clearly below adds nothing, and only blocks that
straddle the threshold are split in four, level by level, until they are 2x2 pixels and are
compared exactly. Every level is a handful of tensor ops over all (unit, block) pairs at once.

Exactness: values are computed in float64 from float32 activations and thresholds, with the
same formula and weights as PyTorch's CPU kernel; "clearly" means beyond a tolerance of
1e-12 of the unit's value range (rounding is ~1e-16), and the final 2x2 comparison is the
plain ``v > t``. The result therefore equals ``compute_unit_ious_reference`` (a per-unit loop
over full-resolution ``F.interpolate`` in float64) except if a threshold lay within one float64
rounding of an upsampled value that is not a plateau; plateaus (zeros after ReLU, saturated
ReLU6) are exact in both. Tests check equality on random and real activations.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

_DENSE = 4  # blocks of at most 4x4 pixels are compared pixel by pixel
_TOL = 1e-12  # relative to the unit's value range; float64 rounding of a bilinear value is ~4e-16


@dataclass(frozen=True)
class _Axis:
    """Bilinear (align_corners=False) sampling of ``n`` source cells onto ``size`` pixels.

    l0/l1 (size,) float64 weights of source indices i0/i1 (size,) for each pixel, computed as in
    ATen's ``compute_indices_weights_linear``; cells: pixel range [start, stop) of the pixels
    whose first source index is i (n,), and the second source index of cell i (n,).
    """

    l0: torch.Tensor
    l1: torch.Tensor
    start: torch.Tensor
    stop: torch.Tensor
    cell_i1: torch.Tensor
    dyadic: bool  # all weights have <= 29 significant bits: a plateau of float32 values is exact


@lru_cache(maxsize=64)
def _axis(size: int, n: int) -> _Axis:
    p = torch.arange(size, dtype=torch.float64)
    scale = float(n) / float(size)
    real = (scale * (p + 0.5) - 0.5).clamp_min(0.0)
    # ATen takes floorf of the (float-rounded) source index, then clamps
    i0 = torch.floor(real.float()).double().clamp_max(n - 1)
    l1 = (real - i0).clamp(0.0, 1.0)
    l0 = 1.0 - l1
    i0 = i0.long()
    cells = torch.arange(n)
    start = torch.searchsorted(i0, cells, right=False)
    stop = torch.searchsorted(i0, cells, right=True)
    cell_i1 = torch.clamp(cells + 1, max=n - 1)
    w = torch.cat([l0, l1]) * float(2**29)
    dyadic = bool(torch.all(w == torch.round(w)))
    return _Axis(l0=l0, l1=l1, start=start, stop=stop, cell_i1=cell_i1, dyadic=dyadic)


def _as_inputs(activation, thresholds, drawing_mask):
    a = torch.as_tensor(np.asarray(activation) if not torch.is_tensor(activation) else activation)
    a = a.detach().to("cpu", torch.float32).to(torch.float64)  # (C, h, w)
    t = torch.as_tensor(np.asarray(thresholds) if not torch.is_tensor(thresholds) else thresholds)
    t = t.detach().to("cpu", torch.float32).to(torch.float64).reshape(-1)  # (C,)
    m = torch.as_tensor(np.asarray(drawing_mask, dtype=bool))  # (H, W)
    if a.dim() != 3:
        raise ValueError(f"activation must be (C, h, w), got {tuple(a.shape)}")
    if t.shape[0] != a.shape[0]:
        raise ValueError(f"{t.shape[0]} thresholds for {a.shape[0]} units")
    if m.dim() != 2:
        raise ValueError(f"drawing mask must be (H, W), got {tuple(m.shape)}")
    return a, t, m


def compute_unit_ious_reference(activation, thresholds, drawing_mask) -> np.ndarray:
    """The plain definition, one unit at a time at full resolution (tests and benchmark only).

    activation (C, h, w), thresholds (C,), drawing_mask (H, W) bool -> IoU (C,) float64.
    """
    a, t, m = _as_inputs(activation, thresholds, drawing_mask)
    out = np.zeros(a.shape[0], dtype=np.float64)
    for u in range(a.shape[0]):  # deliberately a loop: this is the reference
        up = F.interpolate(a[u][None, None], size=tuple(m.shape), mode="bilinear", align_corners=False)[0, 0]
        seg = up > t[u]
        union = int((seg | m).sum())
        out[u] = int((seg & m).sum()) / union if union else 0.0
    return out


def _rect_sum(integral: torch.Tensor, r0, r1, c0, c1) -> torch.Tensor:
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


def compute_unit_ious(activation, thresholds, drawing_mask) -> np.ndarray:
    """IoU of every unit's thresholded, upsampled activation with a drawing.

    activation: (C, h, w) feature map of one patch (float32 values are used).
    thresholds: (C,) per-unit activation thresholds (dataset quantiles), strict ``>``.
    drawing_mask: (H, W) bool, the drawing in patch pixels (usually H = W = S).
    Returns (C,) float64 IoUs, equal to ``compute_unit_ious_reference`` (see module doc).
    """
    a, t, m = _as_inputs(activation, thresholds, drawing_mask)
    c_units, h, w = a.shape
    hh, ww = m.shape
    ax_h, ax_w = _axis(hh, h), _axis(ww, w)
    integral = torch.zeros(hh + 1, ww + 1, dtype=torch.int64)
    integral[1:, 1:] = m.to(torch.int64).cumsum(0).cumsum(1)  # (H+1, W+1)

    # ---- level 0: whole cells, bounded by their 2x2 feature values
    x00 = a
    x01 = a[:, :, ax_w.cell_i1]
    x10 = a[:, ax_h.cell_i1, :]
    x11 = x10[:, :, ax_w.cell_i1]  # each (C, h, w)
    cmax = torch.maximum(torch.maximum(x00, x01), torch.maximum(x10, x11))
    cmin = torch.minimum(torch.minimum(x00, x01), torch.minimum(x10, x11))
    rng = torch.maximum(t.abs(), a.abs().flatten(1).amax(1)).clamp_min(1e-30)
    tol = _TOL * rng  # (C,)
    tt, tl = t[:, None, None], tol[:, None, None]
    # a plateau (all four equal) is exact if it is zero, or if the weights are short dyadics
    plateau = (cmax == cmin) & ((cmax == 0) | (ax_h.dyadic and ax_w.dyadic))
    above = (cmin > tt + tl) | (plateau & (cmin > tt))
    below = (cmax < tt - tl) | (plateau & (cmax <= tt))
    rows = (ax_h.stop - ax_h.start)  # (h,) pixels per cell row
    cols = (ax_w.stop - ax_w.start)  # (w,)
    cell_px = (rows[:, None] * cols[None, :]).to(torch.float64)  # (h, w)
    cell_m = _rect_sum(integral, ax_h.start[:, None], ax_h.stop[:, None],
                       ax_w.start[None, :], ax_w.stop[None, :]).to(torch.float64)  # (h, w)
    above_f = above.to(torch.float64)
    seg = torch.einsum("chw,hw->c", above_f, cell_px)  # (C,) pixels above threshold
    inter = torch.einsum("chw,hw->c", above_f, cell_m)  # (C,) of which inside the drawing
    mixed = ~(above | below) & (cell_px > 0)

    u, ch, cw = mixed.nonzero(as_tuple=True)  # (K,) each
    corners = torch.stack([x00[u, ch, cw], x01[u, ch, cw], x10[u, ch, cw], x11[u, ch, cw]], 1)  # (K, 4)
    cid = torch.arange(u.numel())  # each block points at its cell's corner values
    r0, r1 = ax_h.start[ch], ax_h.stop[ch]
    c0, c1 = ax_w.start[cw], ax_w.stop[cw]
    l0h, l1h, l0w, l1w = ax_h.l0, ax_h.l1, ax_w.l0, ax_w.l1

    def values(x, rr, cc):
        # x (K, 4) cell corners, rr (K, R) pixel rows, cc (K, Q) pixel cols -> (K, R, Q), in ATen's
        # order: (x00*w0 + x01*w1)*h0 + (x10*w0 + x11*w1)*h1, separable so weights are gathered once
        w0 = l0w.index_select(0, cc.reshape(-1)).view(cc.shape)
        w1 = l1w.index_select(0, cc.reshape(-1)).view(cc.shape)
        top = x[:, 0:1] * w0 + x[:, 1:2] * w1  # (K, Q)
        bot = x[:, 2:3] * w0 + x[:, 3:4] * w1
        h0 = l0h.index_select(0, rr.reshape(-1)).view(rr.shape)
        h1 = l1h.index_select(0, rr.reshape(-1)).view(rr.shape)
        return top[:, None, :] * h0[:, :, None] + bot[:, None, :] * h1[:, :, None]

    m_flat = m.reshape(-1)
    # ---- quadtree levels over (unit, block) pairs whose block straddles the threshold
    off = torch.arange(_DENSE)
    while u.numel():
        nr, nc = r1 - r0, c1 - c0
        dense = (nr <= _DENSE) & (nc <= _DENSE)
        if dense.any():  # small blocks: compare every pixel exactly
            s = dense.nonzero(as_tuple=True)[0]
            # pad with the last row/col (clamp) and mask the padding out
            rr = torch.minimum(r0[s, None] + off, r1[s, None] - 1)  # (k, D)
            cc = torch.minimum(c0[s, None] + off, c1[s, None] - 1)  # (k, D)
            ok = (off < nr[s, None])[:, :, None] & (off < nc[s, None])[:, None, :]  # (k, D, D)
            v = values(corners.index_select(0, cid[s]), rr, cc)  # (k, D, D)
            us = u[s]
            hit = (v > t.index_select(0, us)[:, None, None]) & ok
            inside = m_flat.index_select(0, (rr[:, :, None] * ww + cc[:, None, :]).reshape(-1)).view(hit.shape)
            seg.index_add_(0, us, hit.sum((1, 2)).to(torch.float64))
            inter.index_add_(0, us, (hit & inside).sum((1, 2)).to(torch.float64))
        s = (~dense).nonzero(as_tuple=True)[0]
        u, cid, r0, r1, c0, c1 = u[s], cid[s], r0[s], r1[s], c0[s], c1[s]
        if not u.numel():
            break
        v = values(corners.index_select(0, cid), torch.stack([r0, r1 - 1], 1),
                   torch.stack([c0, c1 - 1], 1)).reshape(-1, 4)  # (K, 4) the block's corner pixels
        tu, tolu = t.index_select(0, u), tol.index_select(0, u)
        vmin, vmax = v.amin(1), v.amax(1)
        blk_above = vmin > tu + tolu
        if blk_above.any():
            s = blk_above.nonzero(as_tuple=True)[0]
            seg.index_add_(0, u[s], ((r1[s] - r0[s]) * (c1[s] - c0[s])).to(torch.float64))
            inter.index_add_(0, u[s], _rect_sum(integral, r0[s], r1[s], c0[s], c1[s]).to(torch.float64))
        s = (~blk_above & ~(vmax < tu - tolu)).nonzero(as_tuple=True)[0]
        u, cid, r0, r1, c0, c1 = u[s], cid[s], r0[s], r1[s], c0[s], c1[s]
        rm = torch.where(r1 - r0 > 1, (r0 + r1) // 2, r1)
        cm = torch.where(c1 - c0 > 1, (c0 + c1) // 2, c1)
        # four children per block; empty ones (a side of one pixel) are dropped
        u, cid = u.repeat(4), cid.repeat(4)
        r0, r1 = torch.cat([r0, r0, rm, rm]), torch.cat([rm, rm, r1, r1])
        c0, c1 = torch.cat([c0, cm, c0, cm]), torch.cat([cm, c1, cm, c1])
        keep = ((r1 > r0) & (c1 > c0)).nonzero(as_tuple=True)[0]
        u, cid, r0, r1, c0, c1 = u[keep], cid[keep], r0[keep], r1[keep], c0[keep], c1[keep]

    union = seg + float(m.sum()) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(union))
    return iou.numpy()

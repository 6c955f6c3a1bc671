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


def _as_inputs(activation, thresholds, drawing_mask=None):
    a = torch.as_tensor(np.asarray(activation) if not torch.is_tensor(activation) else activation)
    a = a.detach().to("cpu", torch.float32).to(torch.float64)  # (C, h, w)
    t = torch.as_tensor(np.asarray(thresholds) if not torch.is_tensor(thresholds) else thresholds)
    t = t.detach().to("cpu", torch.float32).to(torch.float64).reshape(-1)  # (C,)
    m = None if drawing_mask is None else torch.as_tensor(np.asarray(drawing_mask, dtype=bool))  # (H, W)
    if a.dim() != 3:
        raise ValueError(f"activation must be (C, h, w), got {tuple(a.shape)}")
    if t.shape[0] != a.shape[0]:
        raise ValueError(f"{t.shape[0]} thresholds for {a.shape[0]} units")
    if m is not None and m.dim() != 2:
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


def _rect_sum(integral: np.ndarray, r0, r1, c0, c1) -> np.ndarray:
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


@dataclass
class UnitMasks:
    """Everything of the IoU that depends on the patch's activation but not on the drawing.

    Built once per patch (``prepare_unit_masks``); each drawing then only needs the cells that
    its outline crosses (``unit_ious``). Units C, feature cells (h, w), patch pixels (H, W).

    seg (C,)            pixels of each unit's upsampled map above its threshold (exact counts)
    above (C, h*w)      float64 1 where a whole cell is above the threshold
    mixed_u/h/w (K,)    the (unit, cell) pairs whose cell straddles the threshold
    mixed_seg (K,)      pixels above the threshold inside each such cell
    """

    a: np.ndarray
    t: np.ndarray
    tol: np.ndarray
    size: tuple[int, int]
    seg: np.ndarray
    above: np.ndarray
    mixed_u: np.ndarray
    mixed_h: np.ndarray
    mixed_w: np.ndarray
    mixed_seg: np.ndarray


def prepare_unit_masks(activation, thresholds, size) -> UnitMasks:
    """Per-patch part of the IoU: classify every (unit, cell) and count the straddling cells'
    pixels above threshold by the exact quadtree. activation (C, h, w), thresholds (C,),
    size = (H, W) of the drawing (or an int for a square patch)."""
    hh, ww = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    a_t, t_t, _ = _as_inputs(activation, thresholds)
    a, t = a_t.numpy(), t_t.numpy()
    c_units, h, w = a.shape
    ax_h, ax_w = _axis_np(hh, h), _axis_np(ww, w)

    # whole cells, bounded by their 2x2 feature values (cell i uses rows i, min(i+1, h-1))
    def pair(f, x, axis):
        nxt = np.concatenate([np.take(x, np.arange(1, x.shape[axis]), axis=axis),
                              np.take(x, [x.shape[axis] - 1], axis=axis)], axis=axis)
        return f(x, nxt)

    cmax = pair(np.maximum, pair(np.maximum, a, 2), 1)  # (C, h, w)
    cmin = pair(np.minimum, pair(np.minimum, a, 2), 1)
    rng = np.maximum(np.abs(t), np.maximum(cmax.reshape(c_units, -1).max(1),
                                           -cmin.reshape(c_units, -1).min(1))).clip(1e-30)
    tol = _TOL * rng  # (C,)
    tt, tl = t[:, None, None], tol[:, None, None]
    # a plateau (all four equal) is exact if it is zero, or if the weights are short dyadics
    plateau = (cmax == cmin) & ((cmax == 0) | (ax_h["dyadic"] and ax_w["dyadic"]))
    above = (cmin > tt + tl) | (plateau & (cmin > tt))
    below = (cmax < tt - tl) | (plateau & (cmax <= tt))
    cell_px = _cell_counts(ax_h, ax_w, None)  # (h, w)
    above_f = above.reshape(c_units, -1).astype(np.float64)  # (C, h*w)
    seg = above_f @ cell_px.reshape(-1)  # (C,) counts: exact in float64
    mixed = ~(above | below) & (cell_px > 0)
    u, ch, cw = np.nonzero(mixed)  # (K,) each
    mixed_seg, _ = _refine(a, t, tol, (ax_h, ax_w), (u, ch, cw))
    seg += np.bincount(u, weights=mixed_seg, minlength=c_units)
    return UnitMasks(a=a, t=t, tol=tol, size=(hh, ww), seg=seg, above=above_f, mixed_u=u, mixed_h=ch,
                     mixed_w=cw, mixed_seg=mixed_seg)


def unit_ious(masks: UnitMasks, drawing_mask) -> np.ndarray:
    """IoU of every unit with one drawing, from a patch's ``UnitMasks``: (C,) float64.

    Cells the drawing covers entirely take their counts from ``masks``, cells it misses add
    nothing, and only straddling cells on the drawing's outline are refined pixel-exactly.
    """
    m = np.asarray(drawing_mask, dtype=bool)
    if m.shape != masks.size:
        raise ValueError(f"drawing mask is {m.shape}, the unit masks were prepared for {masks.size}")
    c_units, h, w = masks.a.shape
    hh, ww = masks.size
    ax_h, ax_w = _axis_np(hh, h), _axis_np(ww, w)
    integral = np.zeros((hh + 1, ww + 1), dtype=np.int32)
    integral[1:, 1:] = m.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)  # (H+1, W+1)
    cell_px = _cell_counts(ax_h, ax_w, None)  # (h, w)
    cell_m = _cell_counts(ax_h, ax_w, integral)  # (h, w) drawing pixels per cell
    inter = masks.above @ cell_m.reshape(-1)  # (C,)
    km = cell_m[masks.mixed_h, masks.mixed_w]  # (K,)
    full = km == cell_px[masks.mixed_h, masks.mixed_w]
    inter += np.bincount(masks.mixed_u[full], weights=masks.mixed_seg[full], minlength=c_units)
    part = np.nonzero((km > 0) & ~full)[0]
    if part.size:
        cells = (masks.mixed_u[part], masks.mixed_h[part], masks.mixed_w[part])
        _, part_inter = _refine(masks.a, masks.t, masks.tol, (ax_h, ax_w), cells, (m, integral))
        inter += np.bincount(masks.mixed_u[part], weights=part_inter, minlength=c_units)
    union = masks.seg + float(m.sum()) - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)


def compute_unit_ious(activation, thresholds, drawing_mask) -> np.ndarray:
    """IoU of every unit's thresholded, upsampled activation with a drawing.

    activation: (C, h, w) feature map of one patch (float32 values are used).
    thresholds: (C,) per-unit activation thresholds (dataset quantiles), strict ``>``.
    drawing_mask: (H, W) bool, the drawing in patch pixels (usually H = W = S).
    Returns (C,) float64 IoUs, equal to ``compute_unit_ious_reference`` (see module doc).
    For several drawings on one patch, ``prepare_unit_masks`` once and ``unit_ious`` per drawing.

    Runs in numpy on the CPU: the arrays are small and many (tens of thousands of blocks per
    level), where torch's intra-op threads cost more in synchronisation than they save.
    """
    m = np.asarray(drawing_mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"drawing mask must be (H, W), got {m.shape}")
    return unit_ious(prepare_unit_masks(activation, thresholds, m.shape), m)


def _cell_counts(ax_h: dict, ax_w: dict, integral: np.ndarray | None) -> np.ndarray:
    """(h, w) float64: pixels per feature cell, or drawing pixels per cell from its integral image."""
    if integral is None:
        rows = ax_h["stop"] - ax_h["start"]  # (h,) pixels per cell row
        cols = ax_w["stop"] - ax_w["start"]  # (w,)
        return (rows[:, None] * cols[None, :]).astype(np.float64)
    return _rect_sum(integral, ax_h["start"][:, None], ax_h["stop"][:, None],
                     ax_w["start"][None, :], ax_w["stop"][None, :]).astype(np.float64)


def _refine(a, t, tol, axes: tuple[dict, dict], cells: tuple, drawing: tuple | None = None):
    """Exact counts inside straddling cells by a quadtree over all (unit, block) pairs at once.

    a (C, h, w), t and tol (C,); axes (ax_h, ax_w) from ``_axis_np``; cells (u, ch, cw), each (K,):
    unit, cell row, cell column. drawing (m (H, W) bool, its integral image (H+1, W+1)) or None.
    Returns (seg, inter), each (K,) float64: pixels above threshold in each cell, and of those inside
    the drawing. Without a drawing inter is zeros. With one, blocks outside the drawing are dropped
    early, so seg is then partial and only inter is meaningful.
    """
    ax_h, ax_w = axes
    u, ch, cw = cells
    m, integral = drawing if drawing is not None else (None, None)
    k_cells = u.size
    seg = np.zeros(k_cells, dtype=np.float64)
    inter = np.zeros(k_cells, dtype=np.float64)
    if not k_cells:
        return seg, inter
    ww = ax_w["l0"].shape[0]
    ch1, cw1 = ax_h["cell_i1"][ch], ax_w["cell_i1"][cw]
    corners = np.stack([a[u, ch, cw], a[u, ch, cw1], a[u, ch1, cw], a[u, ch1, cw1]], 1)  # (K, 4)
    cid = np.arange(k_cells)  # each block points at its cell (corner values and accumulator)
    r0, r1 = ax_h["start"][ch], ax_h["stop"][ch]
    c0, c1 = ax_w["start"][cw], ax_w["stop"][cw]
    m_flat = None if m is None else m.reshape(-1)

    def add(target, idx, vals):
        target += np.bincount(idx, weights=vals, minlength=k_cells)

    off = np.arange(_DENSE)
    while cid.size:
        if m is not None:  # a block with no drawing pixel adds nothing to inter
            keep = np.nonzero(_rect_sum(integral, r0, r1, c0, c1) > 0)[0]
            cid, r0, r1, c0, c1 = cid[keep], r0[keep], r1[keep], c0[keep], c1[keep]
            if not cid.size:
                break
        nr, nc = r1 - r0, c1 - c0
        dense = (nr <= _DENSE) & (nc <= _DENSE)
        if dense.any():  # small blocks: compare every pixel exactly, grouped by block shape
            shape_id = np.where(dense, nr * (_DENSE + 1) + nc, -1)
            for sid in np.unique(shape_id[dense]):  # at most _DENSE**2 shapes, not units
                s = np.nonzero(shape_id == sid)[0]
                br, bc = divmod(int(sid), _DENSE + 1)
                rr = r0[s, None] + off[:br]  # (k, br)
                cc = c0[s, None] + off[:bc]  # (k, bc)
                v = _bilinear(corners[cid[s]], rr, cc, axes)  # (k, br, bc)
                hit = v > t[u[cid[s]]][:, None, None]
                add(seg, cid[s], hit.sum((1, 2)))
                if m_flat is not None:
                    inside = m_flat[rr[:, :, None] * ww + cc[:, None, :]]  # (k, br, bc)
                    add(inter, cid[s], (hit & inside).sum((1, 2)))
        s = np.nonzero(~dense)[0]
        cid, r0, r1, c0, c1 = cid[s], r0[s], r1[s], c0[s], c1[s]
        if not cid.size:
            break
        v = _bilinear(corners[cid], np.stack([r0, r1 - 1], 1), np.stack([c0, c1 - 1], 1), axes).reshape(-1, 4)  # (K, 4)
        uu = u[cid]
        tu, tolu = t[uu], tol[uu]
        vmin, vmax = v.min(1), v.max(1)
        blk_above = vmin > tu + tolu
        if blk_above.any():
            s = np.nonzero(blk_above)[0]
            add(seg, cid[s], (r1[s] - r0[s]) * (c1[s] - c0[s]))
            if integral is not None:
                add(inter, cid[s], _rect_sum(integral, r0[s], r1[s], c0[s], c1[s]))
        s = np.nonzero(~blk_above & ~(vmax < tu - tolu))[0]
        cid, r0, r1, c0, c1 = cid[s], r0[s], r1[s], c0[s], c1[s]
        rm = np.where(r1 - r0 > 1, (r0 + r1) // 2, r1)
        cm = np.where(c1 - c0 > 1, (c0 + c1) // 2, c1)
        # four children per block; empty ones (a side of one pixel) are dropped
        cid = np.tile(cid, 4)
        r0, r1 = np.concatenate([r0, r0, rm, rm]), np.concatenate([rm, rm, r1, r1])
        c0, c1 = np.concatenate([c0, cm, c0, cm]), np.concatenate([cm, c1, cm, c1])
        keep = np.nonzero((r1 > r0) & (c1 > c0))[0]
        cid, r0, r1, c0, c1 = cid[keep], r0[keep], r1[keep], c0[keep], c1[keep]
    return seg, inter


def _bilinear(x: np.ndarray, rr: np.ndarray, cc: np.ndarray, axes: tuple[dict, dict]) -> np.ndarray:
    """Upsampled values of pixels inside cells: x (K, 4) cell corners, rr (K, R) pixel rows, cc (K, Q)
    pixel cols -> (K, R, Q), in ATen's order: (x00*w0 + x01*w1)*h0 + (x10*w0 + x11*w1)*h1, separable
    so the weights are gathered once."""
    ax_h, ax_w = axes
    w0, w1 = ax_w["l0"][cc], ax_w["l1"][cc]
    top = x[:, 0:1] * w0 + x[:, 1:2] * w1  # (K, Q)
    bot = x[:, 2:3] * w0 + x[:, 3:4] * w1
    return top[:, None, :] * ax_h["l0"][rr][:, :, None] + bot[:, None, :] * ax_h["l1"][rr][:, :, None]


@lru_cache(maxsize=64)
def _axis_np(size: int, n: int) -> dict:
    ax = _axis(size, n)
    return {"l0": ax.l0.numpy(), "l1": ax.l1.numpy(), "start": ax.start.numpy(), "stop": ax.stop.numpy(),
            "cell_i1": ax.cell_i1.numpy(), "dyadic": ax.dyadic}

"""Properties where hand cases run out: the fast unit IoU equals the reference loop for any drawing and
thresholds (ties at the threshold, plateaus, cell-aligned shapes), and validation folds never share an image."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.engine.probes import image_folds
from dashboard.engine.unit_iou import (
    _axis_np,
    compute_unit_ious,
    compute_unit_ious_reference,
    prepare_unit_masks,
    unit_ious,
)

FAST = settings(max_examples=30, deadline=None)


@st.composite
def scenes(draw):
    """(activation (C, h, w) float32, thresholds (C,), drawing (H, W) bool) with ties built in."""
    c = draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    size = draw(st.sampled_from([h, 2 * h, 4 * h, 7, 16, 33, 64]))
    size_w = size if draw(st.booleans()) else draw(st.sampled_from([w, 3 * w, 16, 40]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    levels = draw(st.sampled_from([None, 2, 3]))  # few distinct values: plateaus and exact ties
    if levels is None:
        a = rng.standard_normal((c, h, w)).astype(np.float32)
    else:
        a = rng.integers(0, levels, (c, h, w)).astype(np.float32)
    if draw(st.booleans()):
        a = np.maximum(a, 0)  # ReLU zeros
    kind = draw(st.sampled_from(["value", "random", "zero"]))
    if kind == "value":  # a threshold equal to one of the unit's own feature values
        t = np.array([a[u].ravel()[rng.integers(0, h * w)] for u in range(c)], np.float32)
    elif kind == "zero":
        t = np.zeros(c, np.float32)
    else:
        t = rng.standard_normal(c).astype(np.float32) * 0.5
    shape = draw(st.sampled_from(["random", "rect", "cells", "empty", "full"]))
    m = np.zeros((size, size_w), bool)
    if shape == "random":
        m = rng.random((size, size_w)) < draw(st.floats(0.05, 0.95))
    elif shape == "rect":
        r0, c0 = rng.integers(0, size), rng.integers(0, size_w)
        m[r0:rng.integers(r0, size) + 1, c0:rng.integers(c0, size_w) + 1] = True
    elif shape == "cells":  # edges on feature-cell boundaries: whole-cell counts only
        sh, sw = max(1, size // h), max(1, size_w // w)
        i0, j0 = rng.integers(0, h), rng.integers(0, w)
        m[i0 * sh:(i0 + rng.integers(1, h + 1)) * sh, j0 * sw:(j0 + rng.integers(1, w + 1)) * sw] = True
    elif shape == "full":
        m[:] = True
    return a, t, m


def _upsampled(a, size):
    """Each unit's map upsampled as the reference does (float64 F.interpolate, one unit at a time)."""
    return np.stack([torch.nn.functional.interpolate(torch.from_numpy(a[u]).double()[None, None], size=size,
                                                     mode="bilinear", align_corners=False)[0, 0].numpy()
                     for u in range(a.shape[0])])  # (C, H, W)


def _iou(seg, m):
    inter, union = (seg & m).sum((1, 2)), (seg | m).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


@FAST
@given(scene=scenes())
def test_unit_ious_equal_the_reference_loop(scene):
    """Equal to the reference wherever float64 decides: always when the bilinear weights are short dyadics
    (every sum is exact, so ties at the threshold are exact in both), and otherwise unless an upsampled value
    lies within a rounding (1e-12 of the unit's range) of its threshold; there the reference's rounding
    decides the pixel, so the fast IoU lies between those pixels all off and all on (module doc)."""
    a, t, m = scene
    ref = compute_unit_ious_reference(a, t, m)
    fast = compute_unit_ious(a, t, m)
    np.testing.assert_array_equal(unit_ious(prepare_unit_masks(torch.from_numpy(a), t, m.shape), m), fast)
    assert ((fast >= 0) & (fast <= 1)).all()
    dyadic = _axis_np(m.shape[0], a.shape[1])["dyadic"] and _axis_np(m.shape[1], a.shape[2])["dyadic"]
    up = _upsampled(a, m.shape)
    t64 = t.astype(np.float64)[:, None, None]
    np.testing.assert_array_equal(_iou(up > t64, m), ref)  # the reference is the definition
    if dyadic:
        np.testing.assert_array_equal(fast, ref)
        return
    rng = np.maximum(np.abs(t64), np.abs(a).reshape(len(a), -1).max(1)[:, None, None])
    near = np.abs(up - t64) <= 1e-12 * np.maximum(rng, 1e-30)
    clear = ~near.any((1, 2))
    np.testing.assert_array_equal(fast[clear], ref[clear])
    lo, hi = _iou((up > t64) & ~near, m), _iou((up > t64) | near, m)
    assert (np.minimum(lo, hi) <= fast).all() and (fast <= np.maximum(lo, hi)).all()


@FAST
@given(c=st.integers(1, 4), h=st.integers(1, 6), scale=st.sampled_from([1, 2, 4, 8]), value=st.floats(-4, 6),
       seed=st.integers(0, 2**31 - 1))
def test_a_plateau_at_its_threshold_is_off(c, h, scale, value, seed):
    """Constant maps exactly at their threshold: no pixel is above it, so every IoU is 0 (strict >)."""
    a = np.full((c, h, h), np.float32(value))
    m = np.random.default_rng(seed).random((h * scale, h * scale)) < 0.5
    t = a[:, 0, 0].copy()
    np.testing.assert_array_equal(compute_unit_ious(a, t, m), np.zeros(c))
    np.testing.assert_array_equal(compute_unit_ious_reference(a, t, m), np.zeros(c))


@settings(max_examples=100, deadline=None)
@given(group=st.lists(st.integers(0, 11), min_size=1, max_size=80), k=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_validation_folds_never_share_an_image(group, k, seed):
    n_images = max(group) + 1
    g = np.array(group)
    fold = image_folds(g, n_images, k, seed)
    assert fold.shape == g.shape and ((fold >= 0) & (fold < k)).all()
    owner = {}
    for img, f in zip(g.tolist(), fold.tolist()):
        assert owner.setdefault(img, f) == f  # one fold per image
    per_image = np.array([image_folds(np.arange(n_images), n_images, k, seed)]).ravel()
    sizes = np.bincount(per_image, minlength=k)
    assert sizes.max() - sizes.min() <= 1  # images are dealt evenly
    np.testing.assert_array_equal(fold, per_image[g])

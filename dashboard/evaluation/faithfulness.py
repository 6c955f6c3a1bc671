"""Faithfulness checks: inpaint a concept's region, the drop of the class log-odds, model randomisation."""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage


def inpaint_regions(img: np.ndarray, regions: np.ndarray, *, method: str = "texture",
                    sigmas: Sequence[float] = (4, 8, 16, 32, 64), min_weight: float = 0.05,
                    texture_sigma: float = 8.0) -> np.ndarray:
    """Replace each region by blurred surrounding tissue, with borrowed texture by default.

    img (H, W) float; regions (R, H, W) bool; returns (R, H, W) float32 (pixels outside each
    region unchanged), all regions at once per step.

    "blur": normalised convolution: the pixels outside the region are blurred with a Gaussian of
    sigma s and divided by the blurred outside-indicator; each region pixel takes the smallest s
    whose outside weight is >= ``min_weight``. A smooth featureless fill is out of distribution for
    a classifier (on the demo model a mass filled this way scores *higher*), hence
    "texture" (default): the blurred fill plus the image's high-pass texture (image minus its
    Gaussian blur at ``texture_sigma``) copied from outside the region, through a few fixed cyclic
    shifts of the image (the first shift whose source pixel lies outside the region).
    """
    if method not in ("texture", "blur"):
        raise ValueError("method must be 'texture' or 'blur'")
    img = np.asarray(img, np.float32)
    reg = np.asarray(regions, bool)
    if reg.ndim == 2:
        reg = reg[None]
    out = np.repeat(img[None], len(reg), 0)
    if not reg.any():
        return out
    keep = (~reg).astype(np.float32)  # (R, H, W)
    todo = reg.copy()
    for i, s in enumerate(sigmas):
        last = i == len(sigmas) - 1
        sig = (0, float(s), float(s))
        num = ndimage.gaussian_filter(keep * img[None], sig, mode="constant", cval=0.0)
        den = ndimage.gaussian_filter(keep, sig, mode="constant", cval=0.0)
        ok = todo & ((den >= min_weight) | (last & (den > 0)))
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
        if not todo.any():
            break
    if todo.any():  # a region covering everything: the mean of the image
        out[todo] = float(img.mean())
    if method == "texture":
        h, w = img.shape
        resid = img - ndimage.gaussian_filter(img, texture_sigma, mode="reflect")  # (H, W) high-pass
        shifts = [(h // 2, w // 2), (h // 2, 0), (0, w // 2), (h // 4, 3 * w // 4), (3 * h // 4, w // 4),
                  (h // 4, w // 4), (3 * h // 4, 3 * w // 4), (h // 2, w // 4), (h // 4, w // 2)]
        need = reg.copy()
        for dy, dx in shifts:  # a fixed handful of shifts, each for all regions and pixels at once
            src_ok = ~np.roll(reg, (dy, dx), (1, 2))  # the source pixel (p - shift) is outside the region
            take = need & src_ok
            out += np.where(take, np.roll(resid, (dy, dx), (0, 1))[None], 0.0)
            need &= ~take
            if not need.any():
                break
        out = np.clip(out, float(img.min()), float(img.max()))
    return out.astype(np.float32)


def deletion_drops(score_fn: Callable[[np.ndarray], np.ndarray], img: np.ndarray, regions: np.ndarray, *,
                   inpaint: Callable[[np.ndarray, np.ndarray], np.ndarray] = inpaint_regions) -> tuple[float, np.ndarray]:
    """Deletion test: the class score of ``img`` and its drop when each region is inpainted.

    score_fn (N, H, W) -> (N,) scores; img (H, W); regions (R, H, W) bool. Returns (base score,
    drops (R,) = base - score of the image with region r inpainted). One batch of R + 1 images.
    """
    reg = np.asarray(regions, bool)
    if reg.ndim == 2:
        reg = reg[None]
    batch = np.concatenate([np.asarray(img, np.float32)[None], inpaint(img, reg)], 0) if len(reg) else \
        np.asarray(img, np.float32)[None]
    s = np.asarray(score_fn(batch), np.float64).reshape(-1)
    return float(s[0]), s[0] - s[1:]


def randomize_model(model, scope: str = "top", seed: int = 0, *, top_modules: Sequence[str] = ("blocks.6",
                    "conv_head", "bn2")):
    """A copy of ``model`` with part of its backbone re-initialised (Adebayo et al. 2018 sanity check).

    scope "top": the modules named in ``top_modules`` (efficientnet: the last block, the head
    conv and its norm); "full": every module of the backbone (all but the classifier). Every
    submodule with ``reset_parameters`` is reset under ``torch.manual_seed(seed)``; batch-norm
    running statistics go back to 0/1. The classifier is kept. The original is untouched.
    """
    if scope not in ("top", "full"):
        raise ValueError("scope must be 'top' or 'full'")
    m = copy.deepcopy(model)
    clf = m.get_classifier() if hasattr(m, "get_classifier") else None
    skip = {id(p) for p in clf.parameters()} if clf is not None else set()
    if scope == "top":
        named = dict(m.named_modules())
        missing = [n for n in top_modules if n not in named]
        if missing:
            raise KeyError(f"model has no module(s) {missing}")
        roots = [named[n] for n in top_modules]
    else:
        roots = [m]
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        seen = set()
        for root in roots:
            for mod in root.modules():
                if id(mod) in seen or not hasattr(mod, "reset_parameters"):
                    continue
                if any(id(p) in skip for p in mod.parameters(recurse=False)):
                    continue
                seen.add(id(mod))
                mod.reset_parameters()
    finally:
        torch.random.set_rng_state(gen_state)
    return m.eval()


"""Faithfulness checks: inpaint a concept's region, the drop of the class log-odds, deletion and
insertion curves over the concepts' regions against random order, model randomisation."""
from __future__ import annotations

import copy
import itertools
import math
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



def _orders(r: int, n_random: int, rng: np.random.Generator) -> np.ndarray:
    """Random orders of r regions: every permutation when there are at most ``n_random`` of them
    (the exact expectation), else ``n_random`` seeded draws. (n, r) int64."""
    if math.factorial(r) <= n_random:
        return np.array(list(itertools.permutations(range(r))), np.int64).reshape(-1, r)
    return np.stack([rng.permutation(r) for _ in range(n_random)]).astype(np.int64)


def region_curves(score_fn: Callable[[np.ndarray], np.ndarray], img: np.ndarray, regions: np.ndarray,
                  relevance: Sequence[float], *, n_random: int = 24, seed: int = 0,
                  inpaint: Callable[[np.ndarray, np.ndarray], np.ndarray] = inpaint_regions) -> dict:
    """Deletion and insertion curves over concept regions, in the order of ``relevance`` and in random order.

    img (H, W); regions (R, H, W) bool (the concepts' regions); relevance (R,) (the report's shares).
    Deletion: the score as the regions are inpainted cumulatively, most relevant first (step 0 = the
    image, step R = every region removed). Insertion: from the image with every region removed, the
    regions' own pixels come back most relevant first. The area under each curve (trapezoid over
    x = step / R, in score units) is compared with the mean over random orders (``_orders``): a
    faithful relevance deletes faster (deletion AUC below random) and inserts faster (insertion AUC
    above random). One batch through ``score_fn`` for all orders.

    Returns {"deletion", "insertion": (R+1,) curves in relevance order; "deletion_random",
    "insertion_random": mean random curves; "deletion_auc", "insertion_auc", "..._random_auc";
    "deletion_gap" = random AUC - ordered AUC and "insertion_gap" = ordered - random (> 0: better than
    chance); "span" = score(image) - score(all removed); "n_orders"}.
    """
    reg = np.asarray(regions, bool)
    r = len(reg)
    if r == 0:
        raise ValueError("region_curves needs at least one region")
    img = np.asarray(img, np.float32)
    order = np.argsort(-np.asarray(relevance, np.float64), kind="stable")
    orders = np.concatenate([order[None], _orders(r, n_random, np.random.default_rng(seed))])  # (1 + n, R)
    # cumulative unions of every order: (1 + n, R, H, W); row 0 is the relevance order
    cum = np.logical_or.accumulate(reg[orders], axis=1)
    flat = cum.reshape((-1,) + img.shape)
    everything = cum[0, -1]
    removed_all = inpaint(img, everything[None])[0]  # (H, W)
    deleted = inpaint(img, flat)  # (n_orders * R, H, W)
    inserted = np.where(flat, img[None], removed_all[None])  # the removed image with the first j regions restored
    s = np.asarray(score_fn(np.concatenate([img[None], removed_all[None], deleted, inserted])), np.float64)
    base, floor = s[0], s[1]
    m = len(flat)
    dele = s[2:2 + m].reshape(len(orders), r)
    ins = s[2 + m:].reshape(len(orders), r)
    dele = np.concatenate([np.full((len(orders), 1), base), dele], 1)  # (n_orders, R + 1)
    ins = np.concatenate([np.full((len(orders), 1), floor), ins], 1)
    x = np.linspace(0.0, 1.0, r + 1)
    auc_d, auc_i = np.trapezoid(dele, x, axis=1), np.trapezoid(ins, x, axis=1)
    return {"deletion": dele[0], "insertion": ins[0], "deletion_random": dele[1:].mean(0),
            "insertion_random": ins[1:].mean(0), "deletion_auc": float(auc_d[0]),
            "deletion_random_auc": float(auc_d[1:].mean()), "insertion_auc": float(auc_i[0]),
            "insertion_random_auc": float(auc_i[1:].mean()),
            "deletion_gap": float(auc_d[1:].mean() - auc_d[0]), "insertion_gap": float(auc_i[0] - auc_i[1:].mean()),
            "span": float(base - floor), "n_orders": int(len(orders) - 1)}

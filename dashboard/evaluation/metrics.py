"""Metrics of concept maps and reports, each a small function with a hand-made-case test.

The exact rank AUROC lives in ``model_zoo.metrics`` (``compute_aurocs``); here are the binned
AUROC of pooled pixel histograms, IoU, the bootstrap intervals, Spearman and the report checks."""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import bootstrap, spearmanr
from skimage.metrics import structural_similarity

#: Score histograms are binned on the logit of the probability over [-LOGIT_RANGE, LOGIT_RANGE].
N_BINS = 2048
LOGIT_RANGE = 16.0


def score_histograms(probs: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Positive and negative counts of probabilities per logit bin, for every concept at once.

    probs (K, ...) in [0, 1], truth (K, ...) bool, valid (...) bool (pixels that count, e.g. the
    breast). Returns (K, 2, N_BINS) int64: [:, 1] positives, [:, 0] negatives. Pooled histograms
    of many images give the pooled AUROC (``auroc_from_counts``); ties within a bin count 1/2.
    """
    k = probs.shape[0]
    p = np.clip(np.asarray(probs, np.float64).reshape(k, -1), 1e-30, 1.0)
    t = np.asarray(truth, bool).reshape(k, -1)
    if valid is not None:
        v = np.asarray(valid, bool).reshape(-1)
        p, t = p[:, v], t[:, v]
    with np.errstate(divide="ignore"):
        z = np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-16))
    b = np.clip(((z + LOGIT_RANGE) / (2 * LOGIT_RANGE) * N_BINS).astype(np.int64), 0, N_BINS - 1)
    flat = (np.arange(k)[:, None] * 2 + t) * N_BINS + b  # (K, n)
    return np.bincount(flat.reshape(-1), minlength=k * 2 * N_BINS).reshape(k, 2, N_BINS)


def auroc_from_counts(hist: np.ndarray) -> np.ndarray:
    """AUROC from score histograms (..., 2, B) (negatives, positives per ascending bin): the
    probability that a positive outscores a negative, ties 1/2. NaN where a class is empty.

    A binned estimator, not the exact rank AUROC (``model_zoo.metrics.compute_aurocs``): scores in
    one bin (1/64 of a logit wide) count as ties, so it is close to the exact value, not equal to
    it. It is here for memory and time: the pooled pixel AUROC of all held-out images (millions
    of pixels per concept) is a sum of small per-image histograms, and each bootstrap resample is
    a weighted sum of them (``bootstrap_auroc_iou``) instead of a re-sort of every pixel."""
    h = np.asarray(hist, np.float64)
    neg, pos = h[..., 0, :], h[..., 1, :]
    below = np.cumsum(neg, -1) - neg
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(-1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def mask_iou(pred, truth) -> float:
    """IoU of two bool masks; NaN when both are empty."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    union = int((p | t).sum())
    return float((p & t).sum() / union) if union else float("nan")


def bootstrap_auroc_iou(hist: np.ndarray, inter: np.ndarray, union: np.ndarray, *, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95, chunk: int = 100) -> dict[str, np.ndarray]:
    """Pooled AUROC and IoU per concept with bootstrap confidence intervals over images.

    hist (I, K, 2, B) per-image score histograms; inter, union (I, K) per-image pixel counts.
    Images are resampled with replacement ``n_boot`` times (seeded). Returns {"auroc", "iou"}
    (K,) point estimates and {"auroc_lo", "auroc_hi", "iou_lo", "iou_hi"} percentile bounds.
    """
    hist = np.asarray(hist, np.float64)
    n_img, k = hist.shape[:2]
    out = {"auroc": auroc_from_counts(hist.sum(0)),
           "iou": np.divide(inter.sum(0), union.sum(0), out=np.full(k, np.nan), where=union.sum(0) > 0)}
    if n_img == 0 or n_boot <= 0:
        for key in ("auroc_lo", "auroc_hi", "iou_lo", "iou_hi"):
            out[key] = np.full(k, np.nan)
        return out
    rng = np.random.default_rng(seed)
    flat = hist.reshape(n_img, -1)
    aucs, ious = [], []
    for s in range(0, n_boot, chunk):
        w = rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=min(chunk, n_boot - s)).astype(np.float64)
        aucs.append(auroc_from_counts((w @ flat).reshape(-1, k, 2, hist.shape[-1])))  # (b, K)
        ui = w @ union
        ious.append(np.divide(w @ inter, ui, out=np.full(ui.shape, np.nan), where=ui > 0))
    out["auroc_lo"], out["auroc_hi"] = percentile_interval(np.concatenate(aucs), level)
    out["iou_lo"], out["iou_hi"] = percentile_interval(np.concatenate(ious), level)
    return out


def percentile_interval(samples, level: float = 0.95) -> tuple:
    """The bootstrap percentile interval (lo, hi) of ``samples`` (B, ...) along axis 0, NaNs left
    out (a resample without a class has no AUROC); NaN where a column has no finite sample."""
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        lo, hi = np.nanpercentile(np.asarray(samples, np.float64), q, axis=0)
    return lo, hi


def bootstrap_mean(values, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple:
    """(mean, lo, hi) of ``values`` (N,) with a percentile bootstrap interval: ``n_boot`` resampled
    means from ``scipy.stats.bootstrap`` (drawn by ``np.random.default_rng(seed)``), bounded by
    ``percentile_interval`` as every bootstrap here is. Nones when empty."""
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return (None, None, None)
    if a.size == 1:  # scipy needs two observations; every resample of one value is that value
        return (float(a[0]), float(a[0]), float(a[0]))
    means = bootstrap((a,), np.mean, n_resamples=n_boot, method="percentile", rng=np.random.default_rng(seed),
                      vectorized=True).bootstrap_distribution  # (n_boot,)
    lo, hi = percentile_interval(means, level)
    return (float(a.mean()), float(lo), float(hi))


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length sequences; NaN with < 3 pairs or a constant side."""
    x, y = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def top_concept_match(shares: dict[str, float], finding_concepts, lesion_concepts) -> dict:
    """Does the report's top concept (largest attribution share) name the true finding?

    shares {concept: share}; finding_concepts: the concepts of the image's true lesion(s) (e.g.
    {"mass", "mass-irregular", "margin-spiculated"}); lesion_concepts: every concept that is a
    lesion (not a normal structure). Returns {"top", "share", "match" (top names a true finding),
    "lesion" (top is some lesion concept)}; top None (no match) when no concept has a positive share.
    """
    items = [(c, s) for c, s in shares.items() if s is not None and np.isfinite(s)]
    if not items or max(s for _, s in items) <= 0:  # no attribution on any concept: no top concept
        return {"top": None, "share": None, "match": False, "lesion": False}
    top, share = max(items, key=lambda t: (t[1], t[0]))
    return {"top": top, "share": float(share), "match": top in set(finding_concepts),
            "lesion": top in set(lesion_concepts)}


def attribution_in_region(attribution: np.ndarray, region: np.ndarray) -> float:
    """Share of the positive attribution mass inside ``region`` (same shape); NaN without positive mass."""
    a = np.clip(np.asarray(attribution, np.float64), 0, None)
    total = a.sum()
    return float(a[np.asarray(region, bool)].sum() / total) if total > 0 else float("nan")


def map_similarity(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Pearson correlation and SSIM (data range 1 after scaling each map to [0, 1]) of two (H, W)
    maps. Pearson is NaN when a map is constant."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def unit(v):
        lo, hi = v.min(), v.max()
        return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)

    pear = float(np.corrcoef(x.ravel(), y.ravel())[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    ssim = float(structural_similarity(unit(x), unit(y), data_range=1.0))
    return {"pearson": pear, "ssim": ssim}


def sample_grid(maps, out_hw: tuple[int, int], stride: int = 4, offset: int = 2) -> np.ndarray:
    """Bilinear upsampling of (N, h, w) maps to (H, W) (align_corners=False, as the engine does),
    read only at the pixels (offset + stride*i, offset + stride*j): (N, ceil((H-offset)/stride), ...).
    Equal to ``F.interpolate(maps, (H, W))[..., offset::stride, offset::stride]`` without the full map."""
    t = torch.as_tensor(np.asarray(maps, np.float32))
    if t.dim() == 2:
        t = t[None]
    hh, ww = out_hw
    ys = torch.arange(offset, hh, stride, dtype=torch.float32)
    xs = torch.arange(offset, ww, stride, dtype=torch.float32)
    gy = (ys + 0.5) / hh * 2 - 1
    gx = (xs + 0.5) / ww * 2 - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]  # (1, h', w', 2) as (x, y)
    out = F.grid_sample(t[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return out.numpy()



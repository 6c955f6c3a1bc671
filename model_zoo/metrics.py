"""Binary classification metrics for model cards: AUROC and the operating point at a target specificity."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _split(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if y.all() or not y.any():
        raise ValueError("AUROC needs both positive and negative examples")
    return y, s


def compute_auroc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    labels: (N,) 0/1 (1 = positive); scores: (N,) higher = more positive.
    """
    y, s = _split(labels, scores)
    ranks = rankdata(s)  # ties get their average rank
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def compute_operating_point(labels, scores, specificity: float = 0.9) -> dict:
    """The lowest threshold whose specificity is at least ``specificity`` (so sensitivity is highest).

    A case is called positive when ``score >= threshold``. Returns threshold, sensitivity and the
    specificity actually reached on these labels.
    """
    y, s = _split(labels, scores)
    neg = np.sort(s[~y])
    candidates = np.append(np.unique(s), np.inf)  # (K,) ascending
    spec = np.searchsorted(neg, candidates, side="left") / neg.size  # fraction of negatives below t
    t = float(candidates[np.argmax(spec >= specificity)])  # spec is monotone; the last candidate has spec 1
    return apply_threshold(y, s, t)


def apply_threshold(labels, scores, threshold: float) -> dict:
    """Sensitivity and specificity when ``score >= threshold`` is called positive."""
    y, s = _split(labels, scores)
    pred = s >= threshold
    return {"threshold": float(threshold), "sensitivity": float(pred[y].mean()),
            "specificity": float((~pred[~y]).mean())}

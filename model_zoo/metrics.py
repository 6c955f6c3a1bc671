"""Binary classification metrics: the exact rank AUROC (the one implementation the whole project uses)
and, for model cards, the operating point at a target specificity."""
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


def compute_aurocs(labels, scores) -> np.ndarray:
    """Exact rank AUROC of each column: the project's one implementation (Mann-Whitney U, ties
    get their average rank, so a tie between a positive and a negative counts 1/2).

    labels (N, K) bool (True = positive), scores (N, K) float (higher = more positive) -> (K,)
    float64, NaN in a column with no positives or no negatives. One-vs-rest over classes is
    ``compute_aurocs(labels[:, None] == np.arange(K), scores)``.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be the same (N, K)")
    ranks = rankdata(s, axis=0)  # (N, K)
    n_pos = y.sum(0).astype(np.float64)  # (K,)
    n_neg = y.shape[0] - n_pos
    rank_sum = np.where(y, ranks, 0.0).sum(0)  # half-integers: exact in float64, so the order of the sum is moot
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def compute_auroc(labels, scores) -> float:
    """Area under the ROC curve of one score (``compute_aurocs`` of one column).

    labels: (N,) 0/1 (1 = positive); scores: (N,) higher = more positive. Raises ValueError when
    a class is missing (a card's metric must exist; ``compute_aurocs`` gives NaN instead).
    """
    y, s = _split(labels, scores)
    return float(compute_aurocs(y[:, None], s[:, None])[0])


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

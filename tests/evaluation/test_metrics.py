"""The project's AUROC (``model_zoo.metrics``), the one-vs-rest loop over it, the binned pixel AUROC,
the bootstrap intervals and Spearman, checked against scikit-learn and scipy on random data with ties."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from dashboard import evaluation as ev
from dashboard.engine.probes import auroc_one_vs_rest
from model_zoo.metrics import compute_auroc, compute_aurocs


def _tied_data(seed: int, n: int, k: int):
    """(N, K) scores rounded to one decimal (many ties) and (N, K) labels, both classes in each column."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, k)) < rng.uniform(0.1, 0.6, k)
    y[0], y[1] = True, False
    s = np.round(rng.random((n, k)) + 0.3 * y, 1)
    return y, s


@pytest.mark.parametrize("seed", range(8))
def test_aurocs_match_sklearn_with_ties(seed):
    y, s = _tied_data(seed, n=50 + 40 * seed, k=3)
    got = compute_aurocs(y, s)
    want = [roc_auc_score(y[:, j], s[:, j]) for j in range(3)]
    assert got == pytest.approx(want, abs=1e-12)
    assert compute_auroc(y[:, 0].astype(int), s[:, 0]) == pytest.approx(want[0], abs=1e-12)


def test_auroc_known_answers():
    y = np.array([0, 0, 0, 1, 1, 1], bool)[:, None]
    assert compute_aurocs(y, np.array([[0.1], [0.2], [0.3], [0.7], [0.8], [0.9]]))[0] == 1.0
    assert compute_aurocs(y, np.array([[0.9], [0.8], [0.7], [0.3], [0.2], [0.1]]))[0] == 0.0
    assert compute_aurocs(y, np.full((6, 1), 0.5))[0] == 0.5  # all tied: a coin
    assert compute_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_auroc_with_one_class_is_nan_per_column_and_an_error_for_a_card():
    y = np.array([[1, 0], [1, 1], [1, 0]], bool)  # column 0 has no negatives
    s = np.array([[0.1, 0.2], [0.5, 0.9], [0.3, 0.1]])
    got = compute_aurocs(y, s)
    assert np.isnan(got[0]) and got[1] == 1.0
    assert np.isnan(compute_aurocs(~np.ones((4, 1), bool), np.zeros((4, 1))))[0]  # no positives
    with pytest.raises(ValueError, match="both positive and negative"):
        compute_auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        compute_aurocs(y, s[:, :1])


def test_one_vs_rest_is_the_same_auroc_per_class():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200)  # class 3 of 4 never occurs
    scores = np.round(rng.random((200, 4)) + 0.4 * (labels[:, None] == np.arange(4)), 1)
    got = auroc_one_vs_rest(scores, labels, 4)
    for c in range(3):
        assert got[c] == pytest.approx(roc_auc_score(labels == c, scores[:, c]), abs=1e-12)
    assert np.isnan(got[3])


def test_histogram_auroc_is_exact_when_each_bin_holds_one_score():
    """Scores at bin centres: equal bins are equal scores, so the binned estimator (ties 1/2) is the
    exact AUROC; with pooled images it is the AUROC of all their pixels together."""
    rng = np.random.default_rng(0)
    bins = rng.choice(np.arange(200, 1800, 7), size=(2, 2, 30, 30))  # (images, K, h, w): ties across pixels
    z = (bins + 0.5) / ev.N_BINS * 2 * ev.LOGIT_RANGE - ev.LOGIT_RANGE
    probs = 1 / (1 + np.exp(-z))
    truth = rng.random(probs.shape) < 0.2 + 0.5 * (bins > 1000)
    valid = np.ones((30, 30), bool)
    valid[:4] = False
    hist = np.stack([ev.score_histograms(probs[i], truth[i], valid) for i in range(2)])  # (2, K, 2, B)
    pooled = ev.auroc_from_counts(hist.sum(0))
    for k in range(2):
        y, s = truth[:, k][:, valid].ravel(), probs[:, k][:, valid].ravel()
        assert pooled[k] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_bootstrap_mean_is_scipys_percentile_bootstrap():
    values = np.round(np.random.default_rng(5).normal(size=25), 1)
    mean, lo, hi = ev.bootstrap_mean(values, n_boot=500, seed=2)
    # the same resamples by hand: n_boot rows of indices drawn with replacement from one seeded generator
    idx = np.random.default_rng(2).integers(0, values.size, size=(500, values.size))
    want = np.percentile(values[idx].mean(1), [2.5, 97.5])
    assert mean == pytest.approx(values.mean()) and (lo, hi) == pytest.approx(tuple(want), abs=1e-12)
    assert lo < mean < hi
    # its defaults: 2000 resamples drawn from seed 0, a 95 % interval
    exact = np.random.default_rng(6).normal(size=25)  # no ties: every resample count moves the interval
    idx = np.random.default_rng(0).integers(0, exact.size, size=(2000, exact.size))
    want = np.percentile(exact[idx].mean(1), [2.5, 97.5])
    assert ev.bootstrap_mean(exact)[1:] == pytest.approx(tuple(want), abs=1e-12)
    assert ev.bootstrap_mean(exact)[1:] != ev.bootstrap_mean(exact, n_boot=2001)[1:]
    half = ev.bootstrap_mean(exact, level=0.5)[1:]  # the level reaches the interval
    assert half == pytest.approx(tuple(np.percentile(exact[idx].mean(1), [25, 75])), abs=1e-12)
    assert ev.bootstrap_mean([]) == (None, None, None)
    assert ev.bootstrap_mean([0.4]) == (0.4, 0.4, 0.4)


def test_percentile_interval_leaves_out_missing_resamples():
    samples = np.array([[0.1, np.nan], [0.5, np.nan], [0.9, np.nan], [np.nan, np.nan]])
    lo, hi = ev.percentile_interval(samples, level=0.5)
    assert lo[0] == pytest.approx(0.3) and hi[0] == pytest.approx(0.7)  # quartiles of 0.1, 0.5, 0.9
    assert np.isnan(lo[1]) and np.isnan(hi[1])


@pytest.mark.parametrize("seed", range(5))
def test_spearman_is_scipys(seed):
    rng = np.random.default_rng(seed)
    a, b = np.round(rng.random(30), 1), np.round(rng.random(30), 1)
    assert ev.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    a[3] = np.nan  # pairs with a missing side are left out
    assert ev.spearman(a, b) == pytest.approx(spearmanr(np.delete(a, 3), np.delete(b, 3)).statistic, abs=1e-12)


def test_compute_aurocs_one_sided_columns_are_nan_without_warnings_and_labels_are_truthiness():
    """A column with no negatives (or no positives) has no AUROC: NaN, quietly (no division warning); one with
    a single negative has one; labels count as positive when truthy (0/3 integers are the bool labels)."""
    s = np.array([[0.9, 0.9, 0.2, 0.1], [0.8, 0.8, 0.4, 0.7], [0.7, 0.7, 0.6, 0.3], [0.1, 0.1, 0.8, 0.5]])
    y = np.array([[1, 1, 0, 0], [1, 1, 3, 0], [1, 1, 0, 0], [0, 1, 3, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auc = compute_aurocs(y, s)
    assert auc[0] == 1.0 and np.isnan(auc[1]) and np.isnan(auc[3])  # 3 positives above the one negative
    assert auc[2] == compute_aurocs(y.astype(bool), s)[2] == 0.75  # 3 of the 4 (positive, negative) pairs in order

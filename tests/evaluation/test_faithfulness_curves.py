"""Deletion and insertion curves over concept regions: a faithful relevance beats random order, a
shuffled one does not."""
from __future__ import annotations

import numpy as np
import pytest

from dashboard.evaluation import region_curves

WEIGHTS = np.array([3.0, 2.0, 1.0, 0.5])


def _scene():
    """A dark 64 x 64 patch with four bright squares; the score weighs each square's brightness."""
    rng = np.random.default_rng(0)
    img = (0.2 + 0.02 * rng.standard_normal((64, 64))).astype(np.float32)
    regions = np.zeros((4, 64, 64), bool)
    for i, (y, x) in enumerate([(4, 4), (4, 36), (36, 4), (36, 36)]):
        regions[i, y:y + 20, x:x + 20] = True
        img[regions[i]] = 0.9

    def score(batch):  # (N, H, W) -> (N,): the weighted mean brightness of the squares
        b = np.asarray(batch, np.float64)
        return np.stack([b[:, r].mean(1) for r in regions], 1) @ WEIGHTS

    return img, regions, score


def test_a_faithful_relevance_deletes_and_inserts_faster_than_random_and_a_shuffled_one():
    img, regions, score = _scene()
    true = region_curves(score, img, regions, WEIGHTS)
    shuffled = region_curves(score, img, regions, WEIGHTS[[3, 1, 0, 2]])
    reverse = region_curves(score, img, regions, -WEIGHTS)
    assert true["n_orders"] == 24  # 4! orders: the exact expectation over random order
    assert true["deletion_gap"] > 0 and true["insertion_gap"] > 0
    assert reverse["deletion_gap"] < 0 and reverse["insertion_gap"] < 0
    assert true["deletion_auc"] < shuffled["deletion_auc"] < reverse["deletion_auc"]
    assert true["insertion_auc"] > shuffled["insertion_auc"] > reverse["insertion_auc"]
    assert true["deletion_random_auc"] == pytest.approx(shuffled["deletion_random_auc"])
    # the curves start at the image's score (deletion) and at everything removed (insertion), and meet at the ends
    assert true["deletion"][0] == pytest.approx(score(img[None])[0])
    assert true["deletion"][-1] == pytest.approx(true["insertion"][0])
    assert true["insertion"][-1] == pytest.approx(true["deletion"][0])
    assert np.all(np.diff(true["deletion"]) < 0) and true["span"] > 0


def test_many_regions_use_seeded_random_orders():
    img, regions, score = _scene()
    a = region_curves(score, img, regions, WEIGHTS, n_random=5, seed=1)
    b = region_curves(score, img, regions, WEIGHTS, n_random=5, seed=1)
    assert a["n_orders"] == 5 and a["deletion_random_auc"] == b["deletion_random_auc"]
    with pytest.raises(ValueError):
        region_curves(score, img, regions[:0], [])

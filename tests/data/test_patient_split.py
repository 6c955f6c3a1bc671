"""Patient-level splits for stores without splits, and the mammogram augmentation of model_zoo.train."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dashboard.data.patchset import PatchSetError, assign_patient_splits
from model_zoo import train
from model_zoo.errors import ModelZooError


def _rows(n_patients=60, seed=0):
    """Two images per patient (one case each, like CBIS) or one case per patient (like mini-MIAS)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = ["normal", "benign", "malignant"][rng.integers(0, 3)]
        for side in "LR":
            case = f"case{p}-{side}" if p % 2 else f"case{p}"
            rows.append({"case_id": case, "patient_ref": f"pt{p}", "case_label": label})
    return rows


def test_patients_never_straddle_splits_and_labels_are_stratified():
    rows = _rows()
    split = assign_patient_splits(rows, (0.6, 0.2, 0.2), seed=3)
    by_patient: dict[str, set] = {}
    for r in rows:
        by_patient.setdefault(r["patient_ref"], set()).add(split[r["case_id"]])
    assert all(len(s) == 1 for s in by_patient.values())
    for label in ("normal", "benign", "malignant"):
        pats = sorted({r["patient_ref"] for r in rows if r["case_label"] == label})
        counts = {s: sum(next(iter(by_patient[p])) == s for p in pats) for s in ("train", "val", "test")}
        for s, f in zip(("train", "val", "test"), (0.6, 0.2, 0.2)):
            assert abs(counts[s] - f * len(pats)) <= 1, (label, counts)


def test_split_is_seeded_and_independent_of_row_order():
    rows = _rows()
    a = assign_patient_splits(rows, (0.6, 0.2, 0.2), seed=1)
    assert assign_patient_splits(rows[::-1], (0.6, 0.2, 0.2), seed=1) == a
    assert assign_patient_splits(rows, (0.6, 0.2, 0.2), seed=2) != a
    # the worst label of a patient decides her stratum; the case id groups when patient_ref is empty
    mixed = [{"case_id": "c1", "patient_ref": "p", "label": "normal"},
             {"case_id": "c2", "patient_ref": "p", "label": "malignant"},
             {"case_id": "c3", "patient_ref": "", "label": "benign"}]
    out = assign_patient_splits(mixed, (1, 0, 0))
    assert out == {"c1": "train", "c2": "train", "c3": "train"}
    with pytest.raises(PatchSetError):
        assign_patient_splits(rows, (0.5, 0.5))


def test_mammo_augmentation_keeps_the_chest_wall_left_and_the_background_black():
    n, s = 64, 32
    x = torch.zeros(n, s, s)
    x[:, :, : s // 2] = 0.6  # tissue on the chest-wall (left) half, background on the right
    x[:, : s // 4, : s // 2] = 0.9  # a brighter band at the top (e.g. pectoral muscle)
    out = train.augment_batch(x, torch.Generator().manual_seed(0), "mammo")
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    left, right = out[:, :, : s // 2 - 3].mean((1, 2)), out[:, :, s // 2 + 3:].mean((1, 2))
    assert bool((left > right + 0.3).all())  # never mirrored left-right, never turned by 90 degrees
    assert float(out[:, 4:-4, -4:].abs().max()) == 0.0  # background stays zero (no brightness offset)
    top, bottom = out[:, : s // 4, 4: s // 2 - 4].mean((1, 2)), out[:, -s // 4:, 4: s // 2 - 4].mean((1, 2))
    flipped = bottom > top
    assert 0.2 < flipped.float().mean() < 0.8  # up-down flips happen, about half the time
    torch.testing.assert_close(out, train.augment_batch(x, torch.Generator().manual_seed(0), "mammo"))
    with pytest.raises(ModelZooError, match="unknown augmentation"):
        train.augment_batch(x, torch.Generator(), "rot90-everything")


def test_patient_bootstrap_interval_brackets_the_auroc_and_keeps_patients_whole():
    from dashboard.evaluation.scoring import bootstrap_auroc
    from model_zoo.metrics import compute_auroc

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 4)  # 30 patients, 4 patches each
    y = np.tile([True, True, False, False], 30)
    s = y * 1.0 + rng.normal(0, 0.8, y.size)
    lo, hi = bootstrap_auroc(y, s, groups, n=400, seed=1)
    assert lo < compute_auroc(y, s) < hi and hi - lo < 0.4
    assert bootstrap_auroc(y, s, groups, n=400, seed=1) == (lo, hi)
    # patches of one patient share her label and a score offset: resampling single patches would
    # treat 4 correlated patches as 4 independent ones and understate the spread
    y_pat = np.repeat(np.arange(30) % 2 == 0, 4)
    s_pat = y_pat * 0.8 + np.repeat(rng.normal(0, 1.0, 30), 4) + rng.normal(0, 0.1, y.size)
    wide = bootstrap_auroc(y_pat, s_pat, groups, n=400, seed=1)
    narrow = bootstrap_auroc(y_pat, s_pat, np.arange(y.size), n=400, seed=1)
    assert wide[1] - wide[0] > 1.5 * (narrow[1] - narrow[0])
    assert bootstrap_auroc(y, y * 1.0, groups, n=50) == (1.0, 1.0)

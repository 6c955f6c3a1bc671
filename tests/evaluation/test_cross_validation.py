"""Cross-validation by woman (dashboard.evaluation.cross_validation) and the committed real-film card
it writes (mias-lite0-v2): folds never split a woman, the card's weights load with their SHA-256, and
the card's recorded test-time-augmented scores of real mini-MIAS images come out of the weights again."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import model_zoo
from dashboard import imaging
from dashboard.data import importers
from dashboard.data.files import load_stored_image
from dashboard.data.store import Store
from dashboard.evaluation import cross_validation as cv
from dashboard.evaluation.cross_validation import CrossValidationError, assign_patient_folds
from dashboard.testing.real_helpers import copy_mias_subset

CARD = "mias-lite0-v2"
WEIGHTS_LIMIT_BYTES = 21 * 2 ** 20


def _rows(n_patients: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["normal", "benign", "malignant"], n_patients, p=[0.6, 0.25, 0.15])
    rows = []
    for p, lab in enumerate(labels):
        for side in ("L", "R"):  # two images of one case, and some women with a second case
            rows.append({"case_id": f"c{p}", "patient_ref": f"w{p}", "case_label": lab, "side": side})
        if p % 7 == 0:
            rows.append({"case_id": f"c{p}-b", "patient_ref": f"w{p}", "case_label": "normal", "side": "L"})
    return rows


def test_folds_keep_every_woman_in_one_fold_and_are_balanced():
    rows = _rows(61)
    fold_of = assign_patient_folds(rows, 5, seed=0)
    folds_of_woman: dict[str, set[int]] = {}
    for r in rows:
        folds_of_woman.setdefault(r["patient_ref"], set()).add(fold_of[r["case_id"]])
    assert all(len(f) == 1 for f in folds_of_woman.values())
    sizes = Counter(next(iter(f)) for f in folds_of_woman.values())
    assert sorted(sizes) == [0, 1, 2, 3, 4] and max(sizes.values()) - min(sizes.values()) <= 1
    # stratified by the woman's worst label: each fold gets its share of the malignant women
    worst = {}
    for r in rows:
        order = ("normal", "benign", "malignant")
        worst[r["patient_ref"]] = max(worst.get(r["patient_ref"], "normal"), r["case_label"], key=order.index)
    malignant = Counter(next(iter(folds_of_woman[w])) for w, lab in worst.items() if lab == "malignant")
    assert max(malignant.values()) - min(malignant.get(f, 0) for f in range(5)) <= 1
    # deterministic, independent of row order, and the seed matters
    assert assign_patient_folds(list(reversed(rows)), 5, seed=0) == fold_of
    assert assign_patient_folds(rows, 5, seed=1) != fold_of


def test_folds_need_enough_women():
    with pytest.raises(CrossValidationError, match="cannot fill"):
        assign_patient_folds(_rows(3), 5)


def test_real_mini_mias_pairs_share_a_fold(shared_data):
    """mdb001+mdb002 (and every left/right pair) are one woman and land in one fold."""
    folder = shared_data / "mini-mias"
    refs = sorted(p.stem for p in (folder / "images").glob("*.png"))
    labels = importers.mias_case_labels(importers.parse_mias_truth(folder / "labels.txt"), refs)
    rows = [{"case_id": importers.mias_patient(r), "patient_ref": importers.mias_patient(r), "image": r,
             "case_label": labels[importers.mias_patient(r)]} for r in refs]
    fold_of = assign_patient_folds(rows, 5, seed=0)
    by_pair: dict[int, set[int]] = {}
    for r in rows:
        by_pair.setdefault((int(r["image"][3:]) + 1) // 2, set()).add(fold_of[r["case_id"]])
    assert all(len(f) == 1 for f in by_pair.values()) and len(by_pair) == len(set(fold_of))


@pytest.fixture(scope="module")
def card():
    """The card ``make cv-mias`` writes; not committed while it does not beat mias-lite0 (docs/evaluation.md)."""
    if not (model_zoo.CARDS_DIR / f"{CARD}.toml").is_file():
        pytest.skip(f"card {CARD} not built here (make cv-mias writes it)")
    return model_zoo.load_card(CARD)


def test_card_records_the_cv_protocol_results_and_command(card):
    assert card.weights_dtype == "float16" and card.weights_path.stat().st_size <= WEIGHTS_LIMIT_BYTES
    assert model_zoo.sha256_file(card.weights_path) == card.weights_sha256
    assert card.domain["sources"] == ["mini-mias"] and card.domain["views"] == ["MLO"]
    t = card.training
    assert t["command"].startswith("python -m dashboard.evaluation.cross_validation --recipe probe")
    assert t["init"] == "imagenet-lite0" and t["tta"] == cv.TTA and "Suckling" in t["licence"]
    c = card.metrics["cv"]
    assert c["folds"] == 5 and len(c["fold_auroc"]) == 5 and "by woman" in c["protocol"]
    lo, hi = c["pooled_auroc_ci95"]
    assert 0 <= lo <= c["pooled_auroc"] <= hi <= 1
    assert c["mean_fold_auroc"] == pytest.approx(np.mean(c["fold_auroc"]), abs=1e-3)
    assert c["n_patients"] == 107 and c["n_images_abnormal"] + c["n_images_normal"] == 214


def test_card_scores_real_films_with_its_recorded_tta(card, shared_data, tmp_path):
    """The weights (SHA checked on load) reproduce the card's TTA scores of two real mini-MIAS films."""
    refs = [i.removeprefix("mias-") for i in card.metrics["check_tta_scores"]]
    store = Store(tmp_path / "check.duckdb")
    try:
        assert importers.import_mini_mias(store, copy_mias_subset(shared_data, tmp_path / "mias", refs)).failed == []
        model = model_zoo.create_model(card, weights=True).eval()
        got = {}
        for row in store.list_images():
            img, mask, _ = imaging.prepare_model_image(load_stored_image(store, row), card.pixel_spacing_mm,
                                                       default_spacing_mm=row.get("pixel_spacing_mm"))
            got[row["image_id"]] = cv.compute_tta_score(model, card, img, mask)
    finally:
        store.close()
    want = card.metrics["check_tta_scores"]
    assert set(got) == set(want)
    for image_id, score in want.items():
        assert got[image_id] == pytest.approx(score, abs=2e-3)
    assert got["mias-mdb005"] > got["mias-mdb006"]  # the breast with two masses outranks the normal one

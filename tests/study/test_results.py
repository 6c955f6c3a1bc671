"""Each statistic on hand-made data with a known answer, then the whole pipeline on a small study."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dashboard.engine.dissection import mask_to_png
from dashboard.study import (
    ReadAnswers,
    birads_agreement,
    compute_results,
    dice,
    drawing_dice,
    mrmc_auroc,
    reader_auroc,
    results_figures,
    sensitivity_specificity,
)
from dashboard.study import reading as rd
from tests.study.conftest import read_whole_session


def _reads(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["reader", "arm", "case_id", "positive", "malignancy", "birads"])


def _table(arms, readers, truth, score_fn, birads_fn=lambda r, a, c: 3):
    return _reads([(r, a, f"c{c}", float(y), score_fn(r, a, c), birads_fn(r, a, c))
                   for a in arms for r in readers for c, y in enumerate(truth)])


TRUTH = [1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0]


def test_identical_arms_differ_by_zero_with_a_ci_containing_zero():
    rng = np.random.default_rng(0)
    noise = {(r, c): rng.normal() for r in ("a", "b", "c") for c in range(len(TRUTH))}
    df = _table(["x", "y"], ["a", "b", "c"], TRUTH, lambda r, a, c: 50 + 20 * TRUTH[c] + 15 * noise[(r, c)])
    res = mrmc_auroc(df, ["x", "y"], ["a", "b", "c"], n_boot=300)
    d = res["differences"][0]
    assert d["difference"] == 0.0 and d["ci95"][0] <= 0.0 <= d["ci95"][1]
    assert res["by_arm"]["x"] == res["by_arm"]["y"] and res["n_cases"] == len(TRUTH)
    lo, hi = res["by_arm"]["x"]["ci95"]
    assert lo <= res["by_arm"]["x"]["auroc"] <= hi


def test_a_perfect_arm_beats_a_chance_arm():
    df = _table(["chance", "perfect"], ["a", "b"], TRUTH,
                lambda r, a, c: (90 if TRUTH[c] else 10) if a == "perfect" else 50)
    per = reader_auroc(df)
    assert per["perfect"] == {"a": 1.0, "b": 1.0} and per["chance"] == {"a": 0.5, "b": 0.5}
    res = mrmc_auroc(df, ["chance", "perfect"], ["a", "b"], n_boot=200)
    d = res["differences"][0]
    assert d["difference"] == 0.5 and d["ci95"] == [0.5, 0.5]


def test_reader_auroc_known_value():
    # positives 60, 40; negatives 50, 20: pairs (60>50, 60>20, 40<50, 40>20) -> 3/4
    df = _reads([("a", "x", "c1", 1.0, 60, 3), ("a", "x", "c2", 1.0, 40, 3), ("a", "x", "c3", 0.0, 50, 3),
                 ("a", "x", "c4", 0.0, 20, 3)])
    assert reader_auroc(df) == {"x": {"a": 0.75}}


def test_sensitivity_and_specificity_at_birads_4_on_a_tiny_table():
    # malignant: 4, 5, 2 -> 2 of 3 called; benign/normal: 1, 4, 3, 0 -> 3 of 4 cleared
    rows = [("a", "x", f"c{i}", y, 0, b) for i, (y, b) in enumerate([(1, 4), (1, 5), (1, 2), (0, 1), (0, 4), (0, 3),
                                                                      (0, 0)])]
    out = sensitivity_specificity(_reads(rows))
    assert out["x"]["pooled"]["sensitivity"] == pytest.approx(2 / 3)
    assert out["x"]["pooled"]["specificity"] == pytest.approx(3 / 4)
    assert out["x"]["readers"]["a"]["n"] == 7


def test_perfect_agreement_gives_kappa_and_alpha_one_and_disagreement_less():
    same = _table(["x"], ["a", "b", "c"], TRUTH, lambda r, a, c: 0, lambda r, a, c: [1, 2, 4, 5, 3, 0][c % 6])
    agr = birads_agreement(same)["x"]
    assert agr["fleiss_kappa"] == pytest.approx(1.0) and agr["krippendorff_alpha"] == pytest.approx(1.0)
    off = _table(["x"], ["a", "b", "c"], TRUTH, lambda r, a, c: 0,
                 lambda r, a, c: (c + {"a": 0, "b": 1, "c": 3}[r]) % 7)
    agr = birads_agreement(off)["x"]
    assert agr["fleiss_kappa"] < 0.5 and agr["krippendorff_alpha"] < 0.5


def test_dice_identical_disjoint_and_partial():
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.zeros((10, 10), bool)
    b[6:9, 6:9] = True
    assert dice(a, a) == 1.0 and dice(a, b) == 0.0 and math.isnan(dice(a & False, b & False))
    c = np.zeros((10, 10), bool)
    c[2:6, 2:4] = True  # half of a
    assert dice(a, c) == pytest.approx(2 * 8 / (16 + 8))


def test_drawing_dice_unites_patches_in_image_space():
    m = np.zeros((8, 8), bool)
    m[2:6, 2:6] = True
    row = dict(arm="x", image_id="i", concept="mass", patch_size=8, mask_png=mask_to_png(m))
    same = [dict(row, reader="a", patch_x0=0, patch_y0=0), dict(row, reader="b", patch_x0=0, patch_y0=0)]
    shifted = [dict(row, reader="a", patch_x0=0, patch_y0=0), dict(row, reader="b", patch_x0=8, patch_y0=8)]
    assert drawing_dice(same)[0]["dice"] == 1.0
    assert drawing_dice(shifted)[0]["dice"] == 0.0  # same patch mask, far apart in the image
    assert drawing_dice(same[:1]) == []  # one reader: no pair


def test_the_whole_pipeline_on_a_small_study(study_env):
    store = study_env["store"]
    labels = {c: store.get_case(c)["label"] for c in study_env["cases"]}

    def answer(a):
        m = labels[a.case_id] == "malignant"
        return ReadAnswers(
            birads=5 if m else 2, malignancy=90.0 if m else 10.0, confidence=4,
            helpfulness=4 if a.arm == "concepts" else None)

    for r in study_env["readers"]:
        for _ in range(2):
            si = read_whole_session(store, "pilot", r, answer=answer)
            rd.submit_questionnaire(store, "pilot", r, si, sus=[4, 2] * 5,
                                    trust=dict.fromkeys(study_env["study"].definition.questionnaire.trust, 4))
    res = compute_results(store, "pilot", n_boot=100)
    d = res.to_dict()
    assert d["reader_auroc_by_arm"] == {"score": {"reader1": 1.0, "reader2": 1.0},
                                        "concepts": {"reader1": 1.0, "reader2": 1.0}}
    assert d["auroc_difference"] == 0.0 and d["fleiss_kappa"]["score"] == pytest.approx(1.0)
    assert d["sensitivity_specificity_birads4"]["concepts"]["pooled"] == {"sensitivity": 1.0, "specificity": 1.0,
                                                                          "n": 12}
    assert d["ratings"]["sus"]["score"]["mean"] == 75.0 and d["ratings"]["helpfulness"]["concepts"]["mean"] == 4.0
    assert [p["submitted"] for p in d["progress"]] == [6, 6, 6, 6]
    figs = results_figures(res)
    assert {"auroc", "progress", "confidence", "helpfulness", "seconds", "sus"} <= set(figs)
    assert len(figs["auroc"].data) == 3  # two readers + the mean with its CI

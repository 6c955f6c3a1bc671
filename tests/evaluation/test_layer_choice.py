"""The concept layer and labeling patch the bench chose: the cards carry them, and statistics, unit
IoU and probes work there; the real-film bench's split by woman."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import model_zoo
from dashboard.data.importers import mias_case_labels, mias_patient, parse_mias_truth
from dashboard.engine.activations import compute_activations
from dashboard.engine.dissection import StatsConfig, compute_dataset_stats, match_drawing
from dashboard.engine.probes import _cell_coverage, fit_probe
from dashboard.evaluation import split_by_woman
from dashboard.testing.engine_helpers import blob_mask, synthetic_patches
from model_zoo.cards import card_from_dict, read_card

ROOT = Path(__file__).resolve().parents[2]
CHOICE = ROOT / "docs" / "layer_choice.json"


def test_cards_carry_the_layer_and_patch_the_bench_chose():
    """docs/layer_choice.json is the bench's choice (bench/layer_choice.py --source demo / mini-mias)."""
    chosen = json.loads(CHOICE.read_text())
    for name in ("demo-lite0-synth", "mias-lite0"):
        card = model_zoo.load_card(name)
        assert card.default_layer == chosen[name]["layer"], name
        assert card.label_patch_size == chosen[name]["patch"], name
        assert card.default_layer in card.concept_layers


def test_statistics_unit_iou_and_probes_at_the_chosen_layer_and_patch(tmp_path):
    card = model_zoo.load_card("demo-lite0-synth")
    model = model_zoo.create_model(card, device="cpu")
    layer, s = card.default_layer, card.label_patch_size
    patches = synthetic_patches(6, s, seed=1)
    stats = compute_dataset_stats(model, card, layer, patches, StatsConfig(cache_dir=tmp_path, batch_size=3))
    assert stats.patch_size == s and stats.thresholds.shape[0] == stats.n_units
    acts = model_zoo_acts(model, card, layer, patches[:2])
    c, h, w = acts.shape[1:]
    assert c == stats.n_units and h == w and s // h in (8, 16, 32)
    mask = blob_mask(s, s / 2, s / 2, s / 8)
    m = match_drawing(acts[0], stats.thresholds, mask)
    assert m.ious.shape == (c,) and 0 <= m.best_iou <= 1
    # a probe on the drawn cells against the rest of the patch separates them on its own patch
    cov = _cell_coverage(torch.from_numpy(mask[None]), h, w)[0].reshape(-1)
    X = acts[0].reshape(c, -1).T
    y = (cov >= 0.5).long()
    W, b, mu, sd = fit_probe(X, y, 2)
    p = torch.softmax(((X - mu) / sd) @ W.T + b, 1)[:, 1]
    assert float(p[y == 1].mean()) > float(p[y == 0].mean())


def model_zoo_acts(model, card, layer, patches):
    x = torch.as_tensor(np.asarray(card.preprocess(patches)), dtype=torch.float32)
    return compute_activations(model, [layer], x)[layer]


def test_real_film_bench_splits_by_woman(shared_data):
    truth = parse_mias_truth(shared_data / "mini-mias" / "labels.txt")
    refs = sorted({f.ref for f in truth})
    labels = mias_case_labels(truth, refs)
    rows = [{"image_id": f"mias-{r}", "case_id": mias_patient(r), "patient_ref": mias_patient(r),
             "case_label": labels[mias_patient(r)]} for r in refs]
    cut = split_by_woman(rows, (0.6, 0.2, 0.2), seed=0)
    women = {k: {r["patient_ref"] for r in v} for k, v in cut.items()}
    assert women["train"] and women["heldout"] and not (women["train"] & women["heldout"])
    assert len(cut["train"]) + len(cut["heldout"]) == len(rows)
    # both breasts of a woman stay together, and held-out women have lesions to measure on
    assert {labels[w] for w in women["heldout"]} >= {"normal", "benign", "malignant"}
    # the split of the card's training (so no held-out woman was trained on): 64 women train
    card = model_zoo.load_card("mias-lite0")
    ps = card.training["patchset"]
    assert tuple(ps["split_by_patient"]) == (0.6, 0.2, 0.2) and ps["split_seed"] == 0
    assert len(women["train"]) == 64 and len(cut["train"]) == ps["split_images"]["train"]


def test_label_patch_may_exceed_the_input_and_round_trips(tmp_path):
    card = model_zoo.load_card("mias-lite0")
    big = dataclasses.replace(card, label_patch=448)
    assert big.label_patch_size == 448 and big.patch_size == 224
    again = model_zoo.save_card(big, tmp_path / "big.toml")
    assert read_card(tmp_path / "big.toml").label_patch_size == 448 and again.label_patch == 448
    assert dataclasses.replace(card, label_patch=None).label_patch_size == card.patch_size
    raw = tomllib.loads((ROOT / "model_zoo" / "cards" / "mias-lite0.toml").read_text())
    with pytest.raises(model_zoo.CardError):
        card_from_dict(dict(raw, label_patch=8))

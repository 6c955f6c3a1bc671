"""Where to draw next: the three signals, the reasons, labelled patches left out, and the folds kept
with a probe version."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dashboard.engine.activations import compute_activations
from dashboard.engine.probes import ProbeConfig, ProbeVersion, load_probe, train_probes
from dashboard.engine.suggestions import (
    Candidate,
    ImageFeatures,
    SuggestConfig,
    crop_features,
    grid_candidates,
    overlap_fraction,
    score_patches,
    suggest_patches,
)
from dashboard.testing.engine_helpers import TinyCard, tiny_model
from dashboard.testing.probe_scene import loader as _loader
from dashboard.testing.probe_scene import populate as _populate

C, STRIDE, SIZE = 4, 16, 64  # 4 units; a 64-px patch is 4 x 4 cells of a stride-16 map


def _probe(fold_weights: list[np.ndarray] | None = None) -> ProbeVersion:
    """classes background, mass, calcification on 4 raw units (mean 0, std 1): the mass logit is
    8 * unit0 - 4 (p(mass) = 0.5 where unit0 = 0.5), calcification never wins."""
    w = np.zeros((3, C), np.float32)
    b = np.array([0.0, -4.0, -20.0], np.float32)
    w[1, 0] = 8.0
    folds = {}
    if fold_weights is not None:
        folds = {"fold_weight": np.stack(fold_weights).astype(np.float32),
                 "fold_bias": np.stack([b] * len(fold_weights)), "fold_mean": np.zeros((len(fold_weights), C), np.float32),
                 "fold_std": np.ones((len(fold_weights), C), np.float32)}
    return ProbeVersion("card", "layer", ["background", "mass", "calcification"], w, b, np.zeros(C, np.float32),
                        np.ones(C, np.float32), **folds)


def _image(values: dict[tuple[int, int], tuple[int, float]], h: int = 16, w: int = 16) -> torch.Tensor:
    """(C, h, w) features, zero but for {(cell_y0, cell_x0) of a 4x4 block: (unit, value)}."""
    f = torch.zeros(C, h, w)
    for (cy, cx), (u, v) in values.items():
        f[u, cy:cy + 4, cx:cx + 4] = v
    return f


def _candidates(image_id: str, h: int = 16, w: int = 16) -> list[Candidate]:
    return grid_candidates(image_id, np.ones((h * STRIDE, w * STRIDE), bool), SIZE)


def test_a_planted_uncertain_patch_ranks_first_with_its_reason():
    # (4, 8) cells = pixels (128, 64): unit0 = 0.5, the probe's p(mass) = 0.5; (0, 0): a sure mass
    feats = _image({(4, 8): (0, 0.5), (0, 0): (0, 1.5)})
    img = ImageFeatures("img", feats, (256, 256), _candidates("img"))
    out = suggest_patches(_probe(), [img], config=SuggestConfig(limit=3))
    assert (out[0].x0, out[0].y0) == (128, 64)
    assert out[0].reason.startswith("The mass probe is unsure here (p≈0.50)")
    assert out[0].concept == "mass" and out[0].uncertainty == pytest.approx(1.0, abs=1e-3)
    assert out[0].score > out[1].score
    assert (out[1].x0, out[1].y0) != (0, 0) or out[1].uncertainty < 0.1  # the sure mass is not unsure


def test_fold_disagreement_is_zero_when_the_folds_are_identical_and_points_at_the_concept_otherwise():
    same = _probe([_probe().weight] * 3)
    feats = _image({(4, 8): (1, 1.0), (0, 0): (0, 1.5)})
    s = score_patches(same, crop_features(feats, (256, 256), np.array([(128, 64, SIZE), (0, 0, SIZE)])))
    np.testing.assert_array_equal(s.disagreement, 0.0)
    # fold 2 reads unit 1 as mass too: where unit 1 fires the folds disagree about mass
    w2 = _probe().weight.copy()
    w2[1, 1] = 12.0
    split = _probe([_probe().weight, _probe().weight, w2])
    img = ImageFeatures("img", feats, (256, 256), _candidates("img"))
    out = suggest_patches(split, [img], config=SuggestConfig(uncertainty=0.0, limit=2))
    assert (out[0].x0, out[0].y0) == (128, 64)
    assert out[0].disagreement > 0.5 and out[0].reason.startswith("The probes of the validation folds disagree about mass")
    assert "p from 0.02 to 1.00" in out[0].reason
    assert out[1].disagreement < 1e-3


def test_a_labelled_patch_is_never_suggested():
    feats = _image({(4, 8): (0, 0.5), (8, 8): (0, 0.45)})
    img = ImageFeatures("img", feats, (256, 256), _candidates("img") + [Candidate("img", 112, 64, SIZE, "lesion map #1")])
    labelled = [("img", 128, 64, SIZE), ("other", 0, 0, SIZE)]
    out = suggest_patches(_probe(), [img], labelled=labelled, config=SuggestConfig(limit=50))
    boxes = np.array([(s.x0, s.y0, s.size) for s in out])
    assert len(out) > 5
    assert overlap_fraction(boxes, np.array([(128, 64, SIZE)])).max() < 0.5  # nor the lesion-map patch beside it
    assert (out[0].x0, out[0].y0) == (128, 128)  # the next unsure patch leads instead
    # no two suggestions cover the same place
    ov = overlap_fraction(boxes, boxes)
    np.fill_diagonal(ov, 0)
    assert ov.max() < 0.5
    # without the drawing the planted patch leads
    assert (suggest_patches(_probe(), [img])[0].x0, suggest_patches(_probe(), [img])[0].y0) in {(128, 64), (112, 64)}


def test_an_unlabelled_unit_counts_on_flagged_images_only():
    feats = _image({(4, 8): (3, 2.0)})  # unit 3 fires over a whole patch, the probe never reads it
    thr = np.array([1.0, 1.0, 1.0, 1.0], np.float32)
    cfg = SuggestConfig(limit=1)
    flagged = ImageFeatures("a", feats, (256, 256), _candidates("a"), flagged=True)
    top = suggest_patches(_probe(), [flagged], thresholds=thr, config=cfg)[0]
    assert (top.x0, top.y0) == (128, 64) and top.unit == 3 and top.novelty == pytest.approx(1.0)
    assert top.reason.startswith("Unit 3 fires strongly here (100 % of the patch) and has no concept yet")
    # a unit with a concept is no news; nor is a unit on an image the model does not flag
    labelled = suggest_patches(_probe(), [flagged], thresholds=thr, labelled_units=[3], config=cfg)[0]
    assert labelled.novelty == 0.0 and labelled.unit is None
    calm = ImageFeatures("b", feats, (256, 256), _candidates("b"), flagged=False)
    assert suggest_patches(_probe(), [calm], thresholds=thr, config=cfg)[0].novelty == 0.0


def test_crop_features_takes_the_cells_under_each_box_and_pads_outside():
    f = torch.arange(2 * 6 * 8, dtype=torch.float32).view(2, 6, 8)
    out = crop_features(f, (96, 128), np.array([(32, 16, 32), (112, 80, 32)]))  # stride 16: 2 x 2 cells
    assert out.shape == (2, 2, 2, 2)
    torch.testing.assert_close(out[0], f[:, 1:3, 2:4])
    torch.testing.assert_close(out[1, :, :1, :1], f[:, 5:6, 7:8])
    assert (out[1, :, 1:, :] == 0).all() and (out[1, :, :, 1:] == 0).all()


def test_train_probes_keeps_the_fold_models_with_the_version(store, tmp_path):
    model, card = tiny_model("efficientnet_lite0", seed=0), TinyCard(name="probe-card")
    patches = _populate(store)
    probe = train_probes(store, model, card, "blocks.3", load_patch=_loader(patches),
                         config=ProbeConfig(cache_dir=tmp_path, folds=3))
    k1 = len(probe.classes)
    assert probe.n_folds == 3 and probe.fold_weight.shape == (3, k1, probe.weight.shape[1])
    loaded = load_probe(store, probe.version)
    np.testing.assert_array_equal(loaded.fold_weight, probe.fold_weight)
    np.testing.assert_array_equal(loaded.fold_std, probe.fold_std)
    patch = next(iter(patches.values()))
    act = compute_activations(model, ["blocks.3"], card.preprocess(patch[None]))["blocks.3"]  # (1, C, h, w)
    rows = act[0].reshape(act.shape[1], -1).T
    z = loaded.fold_logits(rows)  # (F, N, K+1)
    f1 = ((rows - torch.as_tensor(loaded.fold_mean[1])) / torch.as_tensor(loaded.fold_std[1])) \
        @ torch.as_tensor(loaded.fold_weight[1]).T + torch.as_tensor(loaded.fold_bias[1])
    torch.testing.assert_close(z[1], f1, atol=1e-4, rtol=1e-4)
    s = score_patches(loaded, act)
    assert 0 <= s.disagreement[0] <= 1 and 0 <= s.uncertainty[0] <= 1

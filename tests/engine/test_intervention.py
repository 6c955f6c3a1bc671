"""What if a concept were absent: the projection is exact, alpha 0 changes nothing, the score moves,
inpainting touches only the region, the random-direction control and the lesion map agree with the
single intervention."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dashboard.engine import intervention as iv
from dashboard.engine.activations import compute_activations
from dashboard.engine.inference import compute_lesion_map, preprocess
from dashboard.engine.model_state import hook_counts
from dashboard.engine.probes import ProbeVersion
from dashboard.engine.report import build_report
from dashboard.testing.tinymodels import breast_image, demo_card_detector

S = 64


@pytest.fixture(scope="module")
def card_model():
    return demo_card_detector(S)


@pytest.fixture(scope="module")
def probe(card_model):
    """A probe of two concepts at the card's concept layer (seeded weights: these tests are about the
    interventions, not about what the probe learnt)."""
    card, model = card_model
    x = preprocess(card, torch.zeros(1, S, S))
    c = compute_activations(model, [card.default_layer], x)[card.default_layer].shape[1]
    rng = np.random.default_rng(0)
    return ProbeVersion("demo-lite0-synth", card.default_layer, ["background", "mass", "fat"],
                        rng.normal(size=(3, c)).astype(np.float32), np.zeros(3, np.float32),
                        np.zeros(c, np.float32), np.ones(c, np.float32), version=1)


@pytest.fixture(scope="module")
def patch():
    img, _ = breast_image((S, S), (32, 30))
    return img


def _unit(c, seed):
    w = np.random.default_rng(seed).normal(size=c)  # float64: unit to 1e-16, so the checks can be exact
    return w / np.linalg.norm(w)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_projection_scales_the_component_by_one_minus_alpha_and_keeps_the_rest(alpha):
    a = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    w = torch.from_numpy(_unit(16, 1)).double()
    out = iv.project_out(a, w, alpha)
    along = torch.einsum("nchw,c->nhw", a, w)
    assert torch.allclose(torch.einsum("nchw,c->nhw", out, w), (1 - alpha) * along, atol=1e-12)
    # what is orthogonal to w is untouched
    perp = a - torch.einsum("nhw,c->nchw", along, w)
    perp_out = out - torch.einsum("nhw,c->nchw", torch.einsum("nchw,c->nhw", out, w), w)
    assert torch.allclose(perp, perp_out, atol=1e-12)
    if alpha == 0:
        assert torch.equal(out, a)


def test_projection_takes_one_direction_per_input_and_a_region():
    a = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    dirs = torch.stack([torch.from_numpy(_unit(8, s)).double() for s in range(3)])  # (3, C)
    out = iv.project_out(a, dirs, 1.0)
    assert torch.allclose(torch.einsum("nchw,nc->nhw", out, dirs), torch.zeros(3, 4, 4, dtype=torch.float64),
                          atol=1e-12)
    where = torch.zeros(4, 4, dtype=torch.float64)
    where[:2] = 1
    out = iv.project_out(a, dirs, 1.0, where)
    assert torch.equal(out[:, :, 2:], a[:, :, 2:])  # outside the region: as it was
    assert torch.allclose(torch.einsum("nchw,nc->nhw", out, dirs)[:, :2], torch.zeros(3, 2, 4, dtype=torch.float64),
                          atol=1e-12)
    # a pixel region of another size is taken to the grid: a cell counts when the region touches it
    pix = np.zeros((16, 16), np.float32)
    pix[0, 0] = 1
    out = iv.project_out(a, dirs, 1.0, pix)
    assert not torch.equal(out[:, :, 0, 0], a[:, :, 0, 0]) and torch.equal(out[:, :, 1:], a[:, :, 1:])


def test_concept_direction_is_the_probes_unit_direction(probe):
    w = iv.concept_direction(probe, "fat")
    assert abs(float(np.linalg.norm(w)) - 1) < 1e-5
    raw = probe.directions()[1]
    assert np.allclose(w, raw / np.linalg.norm(raw), atol=1e-6)
    with pytest.raises(KeyError):
        iv.concept_direction(probe, "vessel")


def test_alpha_zero_is_the_identity_and_full_removal_moves_the_score(card_model, probe, patch):
    card, model = card_model
    before_hooks = hook_counts(model)
    same = iv.remove_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=0.0))
    assert same.p_after == pytest.approx(same.p_before, abs=1e-9)
    assert same.shares_after == pytest.approx(same.shares_before, abs=1e-9)
    assert np.array_equal(same.maps_after, same.maps_before)
    full = iv.remove_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=1.0))
    half = iv.remove_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=0.5))
    assert full.p_before == pytest.approx(same.p_before)
    assert abs(full.delta) > 0.05, full.sentence()
    assert full.removed > 0
    assert full.shares_after != pytest.approx(full.shares_before, abs=1e-3)
    assert sum(full.shares_after.values()) + full.unexplained_after == pytest.approx(1.0, abs=1e-6)
    assert half.p_after != pytest.approx(full.p_after, abs=1e-4)
    assert full.sentence().startswith("without mass: P(lesion) ")
    assert full.log_odds_before == pytest.approx(np.log(full.p_before / (1 - full.p_before)), abs=1e-6)
    assert full.log_odds_sentence() == f"log-odds {full.log_odds_before:+.2f} → {full.log_odds_after:+.2f}"
    assert half.sentence().startswith("with 50% less mass")
    assert hook_counts(model) == before_hooks  # the hook went with the intervention
    with pytest.raises(ValueError):
        iv.remove_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=1.5))


def test_shares_before_are_the_reports_shares_of_the_patch(card_model, probe, patch):
    card, model = card_model
    w = iv.remove_concept(model, card, patch, probe, "fat", iv.WhatIfConfig(alpha=1.0))
    rep = build_report(model, card, patch, probe)
    for c in rep.concepts:
        assert w.shares_before[c.concept] == pytest.approx(c.attribution_share, abs=1e-6)
    assert w.p_before == pytest.approx(rep.probability, abs=1e-6)


def test_removal_inside_the_map_only_touches_the_maps_cells(card_model, probe, patch):
    card, model = card_model
    everywhere = iv.remove_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=1.0))
    level = float(np.quantile(everywhere.maps_before[0].astype(np.float32), 0.98))  # a small region
    inside = iv.remove_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=1.0, region="map",
                                                                                  level=level))
    assert inside.region is not None and inside.region.shape == patch.shape
    assert inside.region.any() and not inside.region.all()
    assert inside.p_after != pytest.approx(inside.p_before, abs=1e-6)
    assert inside.p_after != pytest.approx(everywhere.p_after, abs=1e-6)
    nowhere = iv.remove_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=1.0, region="map",
                                                                                   level=1.01))
    assert not nowhere.region.any() and nowhere.p_after == pytest.approx(nowhere.p_before, abs=1e-9)
    with pytest.raises(ValueError):
        iv.remove_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(region="nowhere"))


def test_inpainting_changes_only_the_region():
    img, _ = breast_image((S, S), (32, 30))
    region = np.zeros((S, S), bool)
    region[24:40, 22:38] = True
    out, method = iv.inpaint_region(img, region, 1.0)
    assert method == iv.INPAINT_METHOD and method in ("cv2.inpaint (Telea)", "skimage inpaint_biharmonic")
    assert np.array_equal(out[~region], img[~region])
    assert np.abs(out[region] - img[region]).max() > 0.05  # the blob is filled from its darker surround
    half, _ = iv.inpaint_region(img, region, 0.5)
    assert np.allclose(half[region], img[region] + 0.5 * (out[region] - img[region]), atol=1e-6)
    same, _ = iv.inpaint_region(img, region, 0.0)
    assert np.array_equal(same, img)


def test_inpaint_concept_records_its_method_and_keeps_the_rest_of_the_patch(card_model, probe, patch):
    card, model = card_model
    w = iv.inpaint_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=1.0, level=0.3))
    assert w.kind == "image" and w.method == iv.INPAINT_METHOD
    assert w.region.any(), "the test probe's mass map should cover some of the patch at 0.3"
    assert np.array_equal(w.image_after[~w.region], patch[~w.region])
    assert not np.array_equal(w.image_after[w.region], patch[w.region])
    assert w.p_after != pytest.approx(w.p_before, abs=1e-6)
    empty = iv.inpaint_concept(model, card, patch, probe, "mass", iv.WhatIfConfig(alpha=1.0, level=1.01))
    assert not empty.region.any() and empty.p_after == pytest.approx(empty.p_before, abs=1e-9)
    assert empty.notes


def test_direction_control_matches_the_single_intervention(card_model, probe, patch):
    card, model = card_model
    patches = np.stack([patch, patch[:, ::-1].copy()])
    dc = iv.direction_control(model, card, patches, probe, ["mass", "fat"], n_random=5, seed=3)
    assert dc.dp_random.shape == (2, 5) and dc.dp_concept.shape == (2,)
    single = iv.remove_concept(model, card, patch, probe, "mass")
    assert dc.p_before[0] == pytest.approx(single.p_before, abs=1e-5)
    assert dc.dp_concept[0] == pytest.approx(single.delta, abs=1e-5)
    again = iv.direction_control(model, card, patches, probe, ["mass", "fat"], n_random=5, seed=3)
    assert np.array_equal(again.dp_random, dc.dp_random)  # seeded
    other = iv.direction_control(model, card, patches, probe, ["mass", "fat"], n_random=5, seed=4)
    assert not np.array_equal(other.dp_random, dc.dp_random)


def test_the_lesion_map_under_the_interventions(card_model, probe):
    card, model = card_model
    img, mask = breast_image((96, 128), (48, 64))
    base = compute_lesion_map(model, card, img, mask)
    same = iv.intervened_lesion_map(model, card, img, mask, probe, "mass", "activation", 0.0)
    assert np.allclose(same.prob, base.prob, atol=1e-6)
    gone = iv.intervened_lesion_map(model, card, img, mask, probe, "mass", "activation", 1.0)
    assert np.abs(gone.prob - base.prob).max() > 0.05
    cmap = np.zeros(img.shape, np.float32)
    cmap[40:56, 56:72] = 1.0
    filled = iv.intervened_lesion_map(model, card, img, mask, probe, "mass", "image", 1.0, concept_map=cmap)
    assert not np.allclose(filled.prob, base.prob, atol=1e-6)
    with pytest.raises(ValueError):
        iv.intervened_lesion_map(model, card, img, mask, probe, "mass", "image", 1.0)

"""Concept probes: data from drawings, batched class-balanced fits, validation by image, storage, maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import dashboard.engine.probes as probes_mod
from dashboard.data.store import DrawingRecord, NotFoundError, ValidationError
from dashboard.engine.activations import compute_activations
from dashboard.engine.dissection import undo_annotation
from dashboard.engine.probes import (
    ProbeConfig,
    auroc_one_vs_rest,
    collect_probe_data,
    compute_concept_maps,
    compute_image_concept_maps,
    fit_probe,
    fit_probes,
    image_folds,
    load_probe,
    train_probes,
)
from dashboard.testing.engine_helpers import TinyCard, tiny_model
from dashboard.testing.probe_scene import S
from dashboard.testing.probe_scene import loader as _loader
from dashboard.testing.probe_scene import populate as _populate
from dashboard.testing.probe_scene import scene as _scene

LAYER = "blocks.3"  # 8 x 8 positions of 80 units at 128 px: fine enough for small drawings


@pytest.fixture(scope="module")
def model():
    return tiny_model("efficientnet_lite0", seed=0)


@pytest.fixture(scope="module")
def card():
    return TinyCard(name="probe-card")


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    scores = rng.random((60, 3))
    scores[:10, 1] = 0.5  # ties
    auc = auroc_one_vs_rest(scores, labels, 3)
    for k in range(3):
        pos, neg = scores[labels == k, k], scores[labels != k, k]
        pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
        assert auc[k] == pytest.approx(pairs)
    assert np.isnan(auroc_one_vs_rest(scores, np.zeros(60, int), 3)[1])


def test_batched_fits_equal_separate_fits():
    g = torch.Generator().manual_seed(0)
    n, c, k = 300, 24, 4
    y = torch.randint(0, k, (n,), generator=g)
    X = torch.randn(n, c, generator=g) * torch.rand(c, generator=g) * 3 + torch.randn(k, c, generator=g)[y]
    train = torch.stack([torch.arange(n) % 3 != 0, torch.arange(n) % 3 != 1, torch.ones(n, dtype=torch.bool)])
    W, b, mu, sd = fit_probes(X, y, k, train, l2=1e-2, max_iter=200)
    for f in range(3):
        W1, b1, mu1, sd1 = fit_probe(X[train[f]], y[train[f]], k, l2=1e-2, max_iter=200)
        torch.testing.assert_close(mu[f], mu1, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(sd[f], sd1, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(W[f], W1, atol=2e-3, rtol=0)
        torch.testing.assert_close(b[f], b1, atol=2e-3, rtol=0)
    # class balance: a 10:1 imbalance still predicts the rare class on its own points
    y2 = (torch.arange(n) % 11 == 0).long()
    X2 = torch.randn(n, c, generator=g) + 1.5 * y2[:, None].float()
    W2, b2, mu2, sd2 = fit_probe(X2, y2, 2)
    pred = (((X2 - mu2) / sd2) @ W2.T + b2).argmax(1)
    assert (pred[y2 == 1] == 1).float().mean() > 0.8


def test_empty_fold_and_missing_class_stay_finite():
    """A model with no training rows, or missing a class, must not poison the joint fit with NaN."""
    g = torch.Generator().manual_seed(1)
    n, c, k = 120, 10, 3
    y = torch.arange(n) % k
    X = torch.randn(n, c, generator=g) + 2.0 * torch.randn(k, c, generator=g)[y]
    train = torch.ones(3, n, dtype=torch.bool)
    train[1] = False  # empty fold
    train[2, y == 2] = False  # fold without class 2
    W, b, mu, sd = fit_probes(X, y, k, train, l2=1e-2, max_iter=200)
    assert torch.isfinite(W).all() and torch.isfinite(b).all()
    assert W[1].abs().max() == 0 and b[1].abs().max() == 0  # nothing learnt: uniform probabilities
    W1, b1, _, _ = fit_probes(X, y, k, train[[0, 2]], l2=1e-2, max_iter=200)
    torch.testing.assert_close(W[[0, 2]], W1, atol=2e-3, rtol=0)  # the others fit as if alone
    pred = (((X - mu[2]) / sd[2]) @ W[2].T + b[2]).argmax(1)
    assert (pred[y < 2] == y[y < 2]).float().mean() > 0.9


def test_train_probes_store_metrics_and_maps(store, model, card, tmp_path):
    patches = _populate(store)
    steps = []
    probe = train_probes(store, model, card, LAYER, load_patch=_loader(patches), progress=lambda d, n,
                         m: steps.append(m), config=ProbeConfig(cache_dir=tmp_path, folds=3))
    assert probe.version is not None and steps
    assert probe.classes == ["background", "fat", "mass-round", "vessel"]
    mr = probe.metrics["mass-round"]
    assert mr["n_drawings"] == 6 and mr["n_images"] == 6 and mr["auroc"] is not None
    assert mr["auroc"] > 0.8 and mr["folds"] == 3 and mr["n_positions"] >= 6
    assert probe.metrics["fat"]["auroc"] is not None
    v = probe.metrics["vessel"]
    assert v["auroc"] is None and "drawing" in v["reason"] and v["n_drawings"] == 1
    assert len(probe.annotation_ids) == 13 and probe.readers == ["reader0", "reader1"]

    loaded = load_probe(store, probe.version)
    np.testing.assert_array_equal(loaded.weight, probe.weight)
    np.testing.assert_array_equal(loaded.std, probe.std)
    assert loaded.classes == probe.classes and loaded.metrics == probe.metrics
    assert load_probe(store, model_card="probe-card", layer=LAYER).version == probe.version

    patch, mass, fat = _scene(0)
    act = compute_activations(model, [LAYER], card.preprocess(patch[None]))[LAYER][0]
    maps = compute_concept_maps(probe, act, S)
    assert maps.shape == (3, S, S) and maps.dtype == np.float32
    full = compute_concept_maps(probe, act, S, include_background=True)
    np.testing.assert_allclose(full.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(full[1:], maps)
    i_mass = probe.concepts.index("mass-round")
    assert maps[i_mass][mass].mean() > maps[i_mass][~mass & ~fat].mean() + 0.2
    # whole image, fully convolutional
    big = np.zeros((192, 256), np.float32)
    big[:S, :S] = patch
    img_maps = compute_image_concept_maps(probe, model, card, big)
    assert img_maps.shape == (3, 192, 256) and np.isfinite(img_maps).all()
    # and finds the drawn mass where the patch lies in the image, as the patch's own maps do
    assert (img_maps >= 0).all() and (img_maps <= 1).all()
    corner = img_maps[i_mass, :S, :S]
    assert corner[mass].mean() > corner[~mass & ~fat].mean() + 0.2, (corner[mass].mean(), corner[~mass & ~fat].mean())


def test_probe_data_positions_and_background(store, model, card, tmp_path):
    patches = _populate(store, n_images=2, vessel_drawings=0)
    ann = store.list_annotations()
    data = collect_probe_data(model, card, LAYER, ann, _loader(patches), ProbeConfig(cache_dir=tmp_path))
    h, w = data.feature_shape
    assert (h, w) == (8, 8) and data.X.shape[1] == 80
    # the positions of each concept are the cells at least half covered by its drawings
    frac = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(_scene(0)[1]).float()[None, None], (h, w))
    n_mass_img0 = int((frac >= 0.5).sum())
    cls = data.classes.index("mass-round")
    assert int(((data.y == cls) & (data.group == 0)).sum()) == n_mass_img0
    bg = data.y == 0
    assert bg.any() and (data.drawing[bg] == -1).all()
    # background positions of a patch are features of cells no drawing touches
    both = np.stack([patches["im0"], patches["im1"]])  # the same batch as collect_probe_data ran
    act = compute_activations(model, [LAYER], card.preprocess(both))[LAYER][0]
    feats = act.reshape(80, -1).T
    touched = torch.zeros(h * w, dtype=torch.bool)
    for a in ann:
        if a.image_id == "im0":
            from dashboard.engine.dissection import mask_from_png
            m = torch.from_numpy(mask_from_png(a.mask_png)).float()[None, None]
            touched |= torch.nn.functional.adaptive_avg_pool2d(m, (h, w)).reshape(-1) > 0
    bg0 = data.X[bg & (data.group == 0)]
    d = torch.cdist(bg0, feats, compute_mode="donot_use_mm_for_euclid_dist")  # (n_bg, h*w)
    nearest = d.argmin(1)
    assert torch.equal(d.min(1).values, torch.zeros(len(bg0)))
    assert not touched[nearest].any()


def test_retrain_after_undo_and_errors(store, model, card, tmp_path):
    patches = _populate(store, n_images=3, vessel_drawings=0)
    p1 = train_probes(store, model, card, LAYER, load_patch=_loader(patches), config=ProbeConfig(cache_dir=tmp_path))
    victim = store.list_annotations(concept="fat")[0].annotation_id
    undo_annotation(store, victim, actor="reader0")
    p2 = train_probes(store, model, card, LAYER, load_patch=_loader(patches), config=ProbeConfig(cache_dir=tmp_path))
    assert p2.version > p1.version and victim not in p2.annotation_ids and len(p2.annotation_ids) == 5
    assert p2.metrics["fat"]["n_drawings"] == 2
    assert [r["version"] for r in store.list_probes(model_card="probe-card")] == [p2.version, p1.version]
    with pytest.raises(NotFoundError):
        load_probe(store, 999)
    with pytest.raises(ValidationError):
        train_probes(store, model, TinyCard(name="no-drawings"), LAYER, load_patch=_loader(patches))


def test_single_image_gives_reason(store, model, card, tmp_path):
    patches = _populate(store, n_images=1, vessel_drawings=0)
    for _ in range(2):  # three drawings of each concept, all on one image
        for a in list(store.list_annotations())[:2]:
            store.save_annotation(DrawingRecord(image_id=a.image_id, concept=a.concept, reader="r", patch_x0=0,
                                                patch_y0=0, patch_size=S, shape="rect", geometry=[0, 0, 1, 1],
                                                mask_png=a.mask_png, model_card="probe-card"))
    probe = train_probes(store, model, card, LAYER, load_patch=_loader(patches), config=ProbeConfig(cache_dir=tmp_path))
    m = probe.metrics["mass-round"]
    assert m["auroc"] is None and "image" in m["reason"] and m["n_drawings"] == 3 and m["n_images"] == 1


def test_image_folds_keep_each_image_together():
    group = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5, 6, 6])  # positions of 7 images
    fold = image_folds(group, 7, 3, seed=0)
    for g in np.unique(group):
        assert len(set(fold[group == g])) == 1  # an image's positions share one fold
    per_image = np.array([fold[group == g][0] for g in range(7)])
    assert sorted(np.bincount(per_image, minlength=3).tolist()) == [2, 2, 3]  # dealt round-robin
    np.testing.assert_array_equal(fold, image_folds(group, 7, 3, seed=0))  # seeded
    assert any(not np.array_equal(fold, image_folds(group, 7, 3, seed=s)) for s in range(1, 6))


def test_validation_never_trains_on_a_held_out_image(store, model, card, tmp_path, monkeypatch):
    """Each validation model is trained without any position of the images it scores: a fold that split an
    image would leak the held-out image into its own training rows (and inflate the AUROC)."""
    seen = {}
    real_collect, real_fit = probes_mod.collect_probe_data, probes_mod.fit_probes

    def collect(*a, **kw):
        seen["data"] = real_collect(*a, **kw)
        return seen["data"]

    def fit(X, y, n_classes, train, **kw):
        seen["train"] = train.clone()
        return real_fit(X, y, n_classes, train, **kw)

    monkeypatch.setattr(probes_mod, "collect_probe_data", collect)
    monkeypatch.setattr(probes_mod, "fit_probes", fit)
    patches = _populate(store, n_images=5, vessel_drawings=0)
    train_probes(store, model, card, LAYER, load_patch=_loader(patches), config=ProbeConfig(cache_dir=tmp_path, folds=3))
    group, train = seen["data"].group.numpy(), seen["train"].numpy()
    assert train.shape == (4, len(group)) and train[3].all()  # 3 validation models, then the probe on everything
    held = ~train[:3]
    np.testing.assert_array_equal(held.sum(0), 1)  # every position is scored by exactly one validation model
    for f in range(3):
        assert held[f].any() and not set(group[held[f]]) & set(group[train[f]])
    assert sorted(len(set(group[held[f]])) for f in range(3)) == [1, 2, 2]  # 5 images dealt to 3 folds

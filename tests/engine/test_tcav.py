"""TCAV: layer gradients, CAVs from drawings, batched scores == captum's, significance."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from dashboard.engine.probes import ProbeConfig, ProbeData, collect_probe_data, train_probes
from dashboard.engine.tcav import (
    CAVSet,
    TCAVConfig,
    TCAVResult,
    _ttest,
    compute_cavs,
    compute_layer_gradients,
    compute_tcav,
    run_tcav,
)
from dashboard.testing.engine_helpers import TinyCard, tiny_model
from dashboard.testing.probe_scene import loader as _loader
from dashboard.testing.probe_scene import populate as _populate
from dashboard.testing.probe_scene import scene as _scene


@pytest.fixture(scope="module")
def model():
    return tiny_model("efficientnet_lite0", seed=0)


@pytest.fixture(scope="module")
def card():
    return TinyCard(name="probe-card")


@pytest.fixture(scope="module")
def inputs():
    return np.stack([_scene(100 + i)[0][32:96, 32:96] for i in range(4)])  # (4, 64, 64): the net is convolutional


def test_layer_gradients_pool_linear_head(model, card, inputs):
    x = card.preprocess(inputs)
    g = compute_layer_gradients(model, "bn2", x, target=1)  # (N, 1280, 2, 2)
    assert g.shape == (4, 1280, 2, 2)
    # logit = b + W . mean_hw(a): the gradient is W[target] / (h w) at every position
    expected = (model.classifier.weight[1] / 4).detach()
    torch.testing.assert_close(g, expected[None, :, None, None].expand_as(g), atol=1e-7, rtol=1e-5)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    # an intermediate layer followed by in-place activations still gets finite, input-dependent gradients
    g5 = compute_layer_gradients(model, "blocks.5", x, target=1)
    assert torch.isfinite(g5).all() and not torch.allclose(g5[0], g5[1])


def test_scores_against_planted_directions(model, card, inputs):
    """With CAVs planted along +-W[target] at the pool-linear layer, the scores are known exactly."""
    w = model.classifier.weight[1].detach().numpy().astype(np.float32)
    w = w / np.linalg.norm(w)
    rng = np.random.default_rng(0)
    r = 4
    vecs = [w, -w] * r + [rng.standard_normal(1280).astype(np.float32) for _ in range(r)]
    concept_idx = np.array([[2 * j for j in range(r)], [2 * j + 1 for j in range(r)]])
    random_idx = np.arange(2 * r, 3 * r)
    cavs = CAVSet(layer="bn2", concepts=["up", "down"], vectors=np.stack(vecs), concept_idx=concept_idx,
                  random_idx=random_idx, accuracy=np.ones(3 * r), n_runs=r)
    dummy = ProbeData(X=torch.zeros(1, 1280), y=torch.zeros(1, dtype=torch.long), group=torch.zeros(1, dtype=torch.long),
                      drawing=torch.zeros(1, dtype=torch.long), classes=["background", "up", "down"], image_ids=[],
                      annotation_ids=[], readers=[], annotation_concepts=[], feature_shape=(2, 2))
    assert dummy.layer == ""  # the CAVs carry their layer themselves
    res = compute_tcav(model, card, cavs, inputs, TCAVConfig(target=1))
    assert res.concepts["up"].score == 1.0 and res.concepts["down"].score == 0.0
    wn = model.classifier.weight[1].detach().double()
    assert res.concepts["up"].magnitude == pytest.approx(float(wn.norm()), rel=1e-5)
    rand = np.array([float((torch.tensor(v, dtype=torch.float64) @ wn) > 0) for v in vecs[2 * r:]])
    np.testing.assert_array_equal(res.concepts["up"].random_scores, rand)
    assert res.target_name == "malignant" and res.n_inputs == 4


def test_ttest():
    assert _ttest(np.array([0.9, 0.95, 0.92, 0.97]), np.array([0.4, 0.6, 0.5, 0.55])) < 0.01
    assert _ttest(np.array([0.5, 0.6, 0.4, 0.55]), np.array([0.45, 0.6, 0.5, 0.52])) > 0.05
    assert _ttest(np.array([1.0, 1.0]), np.array([0.0, 0.0])) == 0.0
    assert _ttest(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 1.0


@pytest.fixture
def drawn(store, model, card, tmp_path):
    patches = _populate(store, n_images=4, vessel_drawings=0)
    data = collect_probe_data(model, card, "blocks.5", store.list_annotations(), _loader(patches),
                              ProbeConfig(cache_dir=tmp_path))
    return patches, data


def test_cavs_separate_concepts(drawn):
    _, data = drawn
    cavs = compute_cavs(data, n_runs=3, random_size=40, seed=1)
    assert cavs.vectors.shape == (3 * 3, data.X.shape[1])
    np.testing.assert_allclose(np.linalg.norm(cavs.vectors, axis=1), 1.0, rtol=1e-5)
    assert cavs.concepts == ["fat", "mass-round"]
    assert cavs.accuracy[cavs.concept_idx].mean() > 0.9  # drawn concepts vs background: separable
    # the concept CAV points from the random positions toward the concept's positions
    mass = data.X[data.y == data.classes.index("mass-round")].mean(0)
    bg = data.X[data.y == 0].mean(0)
    v = torch.as_tensor(cavs.vectors[cavs.concept_idx[1, 0]])
    assert float((mass - bg) @ v) > 0
    again = compute_cavs(data, n_runs=3, random_size=40, seed=1)
    np.testing.assert_array_equal(again.vectors, cavs.vectors)


def test_batched_equals_captum(drawn, model, card, inputs, tmp_path, monkeypatch):
    _, data = drawn
    cavs = compute_cavs(data, n_runs=3, random_size=40, seed=2)
    assert data.layer == cavs.layer == "blocks.5"
    a = compute_tcav(model, card, cavs, inputs, TCAVConfig(engine="batched"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # captum saves CAVs under its save_path (default ./cav/): ours is a temp dir
    b = compute_tcav(model, card, cavs, inputs, TCAVConfig(engine="captum"))
    assert not [str(p.relative_to(cwd)) for p in cwd.rglob("*")]
    assert a.engine == "batched" and b.engine == "captum"
    for cn in a.concepts:
        assert a.concepts[cn].run_scores == b.concepts[cn].run_scores
        assert a.concepts[cn].random_scores == b.concepts[cn].random_scores
        assert a.concepts[cn].magnitude == pytest.approx(b.concepts[cn].magnitude, rel=1e-4, abs=1e-6)
        assert a.concepts[cn].p_value == pytest.approx(b.concepts[cn].p_value)
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()) == 0


def test_run_tcav_stores_and_round_trips(store, model, card, inputs, tmp_path):
    patches = _populate(store, n_images=4, vessel_drawings=0)
    probe = train_probes(store, model, card, "blocks.5", load_patch=_loader(patches),
                         config=ProbeConfig(cache_dir=tmp_path, folds=2))
    res = run_tcav(store, model, card, probe, inputs, load_patch=_loader(patches),
                   config=TCAVConfig(n_runs=4, cache_dir=tmp_path))
    assert set(res.concepts) == {"fat", "mass-round"} and res.probe_version == probe.version
    for c in res.concepts.values():
        assert 0.0 <= c.score <= 1.0 and 0.0 <= c.p_value <= 1.0 and len(c.run_scores) == 4
        assert c.significant == (c.p_value < 0.05 / 2) and c.probe_score is not None
    assert res.alpha_corrected == pytest.approx(0.025)
    row = store.latest_tcav_run(probe.version, target=1)
    assert TCAVResult.from_dict(row["results"]) == res


def test_run_tcav_is_the_pipeline_by_hand_with_its_settings(store, model, card, inputs, tmp_path):
    """run_tcav = collect the probe's drawings (deleted ones too: the probe version was trained on them) with
    the config's seed and cache -> compute_cavs with its runs, random-set size and seed -> compute_tcav with
    its target and alpha; ``save=False`` stores nothing."""
    patches = _populate(store, n_images=4, vessel_drawings=0)
    probe = train_probes(store, model, card, "blocks.5", load_patch=_loader(patches),
                         config=ProbeConfig(cache_dir=tmp_path / "probe", folds=2))
    store.delete_annotation(probe.annotation_ids[0], "reader0")  # undone after the probe was trained
    config = TCAVConfig(n_runs=3, random_size=6, seed=5, alpha=0.2, target=0, save=False,
                        cache_dir=tmp_path / "tcav")
    res = run_tcav(store, model, card, probe, inputs, load_patch=_loader(patches), config=config)
    ann = [a for a in store.list_annotations(include_deleted=True) if a.annotation_id in set(probe.annotation_ids)]
    assert len(ann) == len(probe.annotation_ids)
    data = collect_probe_data(model, card, "blocks.5", ann, _loader(patches), ProbeConfig(seed=5))
    cavs = compute_cavs(data, n_runs=3, random_size=6, seed=5)
    assert res == compute_tcav(model, card, cavs, inputs, config, probe=probe)
    assert res.target == 0 and res.alpha_corrected == pytest.approx(0.1)
    assert any((tmp_path / "tcav").rglob("*")), "the drawn patches' activations are cached"
    assert store.latest_tcav_run(probe.version, target=0) is None  # save=False
    # another seed draws other random sets and background positions: other run scores
    other = run_tcav(store, model, card, probe, inputs, load_patch=_loader(patches),
                     config=TCAVConfig(n_runs=3, random_size=6, seed=6, alpha=0.2, target=0, save=False))
    assert [c.run_scores for c in other.concepts.values()] != [c.run_scores for c in res.concepts.values()]


def test_ttest_is_two_sided_welch():
    """A concept far *below* random is as significant as one far above: the test is two-sided, and its
    p-value is Welch's, by hand."""
    low = np.array([0.0, 0.05, 0.1, 0.0, 0.05])
    rand = np.array([0.5, 0.6, 0.45, 0.55, 0.5])
    va, vb = low.var(ddof=1) / 5, rand.var(ddof=1) / 5
    t = (low.mean() - rand.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 4)
    p = 2 * stats.t.sf(abs(t), df)
    assert p < 1e-5
    assert _ttest(low, rand) == pytest.approx(p, rel=1e-9)
    assert _ttest(rand, low) == pytest.approx(p, rel=1e-9)


def _planted(model, concepts: dict[str, int], random_on: int, r: int = 8) -> CAVSet:
    """CAVs at the pool-linear layer bn2, where every input's gradient is W[target] / (h w): a CAV along +W
    scores 1 on every input and one along -W scores 0. concepts {name: how many of its r runs are +W};
    random_on: how many of the r random CAVs are +W."""
    w = model.classifier.weight[1].detach().numpy().astype(np.float32)
    w = w / np.linalg.norm(w)
    vecs, idx = [], []
    for n_on in [*concepts.values(), random_on]:
        idx.append(list(range(len(vecs), len(vecs) + r)))
        vecs += [w] * n_on + [-w] * (r - n_on)
    return CAVSet(layer="bn2", concepts=list(concepts), vectors=np.stack(vecs), concept_idx=np.array(idx[:-1]),
                  random_idx=np.array(idx[-1]), accuracy=np.ones(len(vecs)), n_runs=r)


def test_significance_is_bonferroni_corrected(model, card, inputs):
    """Run scores 0/8 and 8/8 against random 4/8: Welch's two-sided p = 0.0331, between alpha / K = 0.025
    and alpha = 0.05. With two concepts neither is significant; alone, each is."""
    p_hand = 2 * stats.t.sf(0.5 / np.sqrt((2 / 7) / 8), 7)
    assert 0.025 < p_hand < 0.05
    both = compute_tcav(model, card, _planted(model, {"up": 8, "down": 0}, 4), inputs, TCAVConfig(target=1))
    assert both.alpha_corrected == 0.025
    for cn, score in (("up", 1.0), ("down", 0.0)):
        c = both.concepts[cn]
        assert c.score == score and c.p_value == pytest.approx(p_hand, rel=1e-9)
        assert c.significant is False
    for cn, n_on in (("up", 8), ("down", 0)):
        alone = compute_tcav(model, card, _planted(model, {cn: n_on}, 4), inputs, TCAVConfig(target=1))
        assert alone.alpha_corrected == 0.05
        assert alone.concepts[cn].p_value == pytest.approx(p_hand, rel=1e-9) and alone.concepts[cn].significant is True
    # a concept that scores like random is never significant
    same = compute_tcav(model, card, _planted(model, {"flat": 4}, 4), inputs, TCAVConfig(target=1))
    assert same.concepts["flat"].p_value == pytest.approx(1.0) and same.concepts["flat"].significant is False

"""Dataset statistics, drawing -> unit IoUs, drawing rasterisation and the labeling rule."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dashboard.data.store import DrawingRecord, Store, ValidationError
from dashboard.engine.activations import compute_activations
from dashboard.engine.dissection import (
    StaleCacheError,
    StatsConfig,
    compute_dataset_stats,
    compute_unit_ious,
    compute_unit_ious_reference,
    drawing_to_mask,
    label_units_from_drawing,
    load_dataset_stats,
    mask_from_png,
    mask_to_png,
    match_drawing,
    undo_annotation,
    unit_labels,
    units_by_concept,
)
from dashboard.engine.unit_iou import prepare_unit_masks, unit_ious
from dashboard.testing.engine_helpers import TinyCard, add_image, blob_mask, synthetic_patches, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("efficientnet_lite0", seed=0)


@pytest.fixture(scope="module")
def card():
    return TinyCard()


@pytest.fixture(scope="module")
def patches():
    return synthetic_patches(12, 128, seed=3)


def _all_acts(model, card, patches, layer):
    return compute_activations(model, [layer], card.preprocess(patches))[layer]  # (N, C, h, w)


# ---------------------------------------------------------------- IoU: vectorised == reference
@pytest.mark.parametrize("c,h,w,size", [(48, 16, 16, 512), (40, 7, 7, 224), (32, 16, 16, 500),
                                         (24, 13, 9, 97), (16, 5, 5, 3), (16, 4, 4, 128)])
def test_unit_ious_equal_reference_on_random(c, h, w, size):
    g = torch.Generator().manual_seed(c * 1000 + size)
    a = torch.randn(c, h, w, generator=g)
    t = torch.randn(c, generator=g) * 0.5 + 0.5
    # plateaus and ties: ReLU zeros with a zero threshold, ReLU6-like saturation at the threshold,
    # a threshold equal to a feature value
    a[:4] = a[:4].clamp_min(0)
    t[:2] = 0.0
    a[4:8] = a[4:8].clamp(max=1.0)
    t[4:8] = 1.0
    t[8] = a[8, h // 2, w // 2]
    mask = blob_mask(size, size * 0.4, size * 0.6, size * 0.3)
    mask[: size // 5] = True
    fast = compute_unit_ious(a, t, mask)
    ref = compute_unit_ious_reference(a, t, mask)
    np.testing.assert_array_equal(fast, ref)
    assert (ref > 0).any() and (ref < 1).any()


def test_unit_ious_equal_reference_on_real_activations(model, card, patches, tmp_path):
    stats = compute_dataset_stats(model, card, "bn2", patches, StatsConfig(cache_dir=tmp_path, batch_size=6))
    acts = _all_acts(model, card, patches[:3], "bn2")
    for i, (cy, cx, r) in enumerate([(40, 60, 30), (90, 30, 20), (64, 64, 60)]):
        mask = blob_mask(128, cy, cx, r)
        fast = compute_unit_ious(acts[i], stats.thresholds, mask)
        ref = compute_unit_ious_reference(acts[i], stats.thresholds, mask)
        np.testing.assert_array_equal(fast, ref)
        assert (fast > 0).sum() > 10


def test_prepared_unit_masks_give_reference_ious_for_every_drawing(model, card, patches, tmp_path):
    """The app prepares a patch once and matches many drawings: each must equal the reference."""
    stats = compute_dataset_stats(model, card, "bn2", patches, StatsConfig(cache_dir=tmp_path, batch_size=6))
    act = _all_acts(model, card, patches[3:4], "bn2")[0]
    prep = prepare_unit_masks(act, stats.thresholds, 128)
    full = np.ones((128, 128), bool)
    cells = np.zeros((128, 128), bool)
    cells[32:64, 16:80] = True  # aligned with feature cells: only whole-cell counts are used
    drawings = [blob_mask(128, 40, 60, 30), blob_mask(128, 100, 100, 9), full, cells,
                drawing_to_mask("freehand", {"points": [[5, 120], [60, 70], [125, 90]], "width": 6}, 128)]
    for mask in drawings:
        np.testing.assert_array_equal(unit_ious(prep, mask), compute_unit_ious_reference(act, stats.thresholds, mask))
    # the per-patch counts are each unit's whole mask: IoU with the full patch is its area share
    np.testing.assert_array_equal(prep.seg / 128**2, unit_ious(prep, full))
    with pytest.raises(ValueError, match="prepared for"):
        unit_ious(prep, np.ones((64, 64), bool))


def test_saturated_units_get_a_threshold_they_can_exceed(tmp_path):
    """ReLU6 units at their cap on more than 1 - q of positions: strict > at the quantile would
    never fire. The plateau becomes the mask; dead and everywhere-saturated units stay off."""
    from collections import OrderedDict

    net = torch.nn.Sequential(OrderedDict(conv=torch.nn.Conv2d(3, 4, 1, stride=8), act=torch.nn.ReLU6())).eval()
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.bias.copy_(torch.tensor([-30.0, -100.0, 100.0, 0.0]))
        net.conv.weight[0, :, 0, 0] = 40.0   # unit 0: saturated where the image is bright, 0 elsewhere
        net.conv.weight[3, :, 0, 0] = 0.5    # unit 3: graded, never saturated
    imgs = np.zeros((6, 64, 64), np.float32)
    imgs[:, 16:40, 8:32] = 1.0               # a bright square: 14 % of every image
    ramp = np.linspace(0, 0.1, 64, dtype=np.float32)
    imgs += ramp[None, None, :] + ramp[None, :, None] + 0.01 * np.arange(6, dtype=np.float32)[:, None, None]
    stats = compute_dataset_stats(net, TinyCard(), "act", imgs, StatsConfig(quantile=0.99, cache_dir=tmp_path))
    acts = _all_acts(net, TinyCard(), imgs, "act").numpy()  # (N, 4, 8, 8)
    flat = acts.transpose(1, 0, 2, 3).reshape(4, -1).astype(np.float64)
    q = np.quantile(flat, 0.99, axis=1).astype(np.float32)
    assert q[0] == 6.0 and stats.thresholds[0] == np.nextafter(np.float32(6.0), np.float32(0.0))
    assert stats.thresholds[1] == 0.0 and stats.thresholds[2] == 6.0  # dead; saturated everywhere
    assert stats.thresholds[3] == q[3] < flat[3].max()                # untouched
    assert stats.n_tied_at_max == 1 and load_dataset_stats(tmp_path / stats.key).n_tied_at_max == 1
    square = np.zeros((64, 64), bool)
    square[16:40, 8:32] = True
    ious = compute_unit_ious(acts[0], stats.thresholds, square)
    assert ious[0] > 0.3 and ious[1] == 0.0 and ious[2] == 0.0
    assert compute_unit_ious(acts[0], q, square)[0] == 0.0  # what the plain quantile would give


def test_unit_ious_known_values():
    size = 64
    a = torch.zeros(3, 4, 4)
    a[0] = 2.0                      # everywhere above -> IoU = |M| / S^2
    a[1] = -1.0                     # nowhere above -> 0
    a[2, 1, 1] = 5.0                # a bump: the drawing is exactly its thresholded upsampled map
    t = torch.tensor([1.0, 0.0, 1.0])
    up = F.interpolate(a[2][None, None].double(), size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    mask = (up > 1.0).numpy()
    ious = compute_unit_ious(a, t, mask)
    assert ious[0] == pytest.approx(mask.sum() / size**2)
    assert ious[1] == 0.0
    assert ious[2] == 1.0


def test_match_drawing(model, card, patches):
    acts = _all_acts(model, card, patches[:1], "bn2")[0]
    thr = acts.flatten(1).quantile(0.9, dim=1)
    mask = blob_mask(128, 50, 50, 25)
    m = match_drawing(acts, thr, mask, tau=0.05)
    assert m.ious.shape == (1280,)
    assert m.best_iou == m.ious.max() and m.ious[m.best_unit] == m.best_iou
    assert np.all(m.ious[m.units_above] > 0.05) and np.all(np.diff(m.ious[m.units_above]) <= 0)
    assert set(m.units_above) == set(np.nonzero(m.ious > 0.05)[0])
    with pytest.raises(ValidationError):
        match_drawing(acts, thr, np.zeros((128, 128), bool))


# ---------------------------------------------------------------- dataset statistics
def test_stats_exact_against_brute_force(model, card, patches, tmp_path):
    calls = []
    stats = compute_dataset_stats(model, card, "blocks.5", patches,
                                  StatsConfig(quantile=0.99, top_k=3, cache_dir=tmp_path, batch_size=5),
                                  progress=lambda d, n, msg: calls.append((d, n)))
    acts = _all_acts(model, card, patches, "blocks.5").numpy()  # (N, C, h, w)
    n, c, h, w = acts.shape
    flat = acts.transpose(1, 0, 2, 3).reshape(c, -1).astype(np.float64)
    np.testing.assert_allclose(stats.thresholds, np.quantile(flat, 0.99, axis=1).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(stats.mean, flat.mean(1), rtol=1e-4, atol=1e-6)
    pmax = acts.max(axis=(2, 3))  # (N, C)
    order = np.argsort(-pmax, axis=0, kind="stable")[:3].T  # (C, 3)
    np.testing.assert_allclose(stats.top_values, np.take_along_axis(pmax.T, order, 1), rtol=1e-6)
    # exemplar maps are the maps of the exemplar patches
    u = 7
    for j in range(3):
        np.testing.assert_allclose(stats.top_maps[u, j], acts[stats.top_indices[u, j], u], rtol=1e-6)
    assert stats.sample_rate == 1.0 and stats.quantile_se == 0.0 and stats.n_values == n * h * w
    assert stats.unit_xy.shape == (c, 2) and np.isfinite(stats.unit_xy).all()
    assert stats.feature_shape == (h, w) and stats.patch_size == 128
    assert calls[-1] == (12, 12) and [d for d, _ in calls[:3]] == [5, 10, 12]
    # 0.995 (Network Dissection) is a different, higher threshold and a different key
    s2 = compute_dataset_stats(model, card, "blocks.5", patches,
                               StatsConfig(quantile=0.995, top_k=3, cache_dir=tmp_path))
    assert s2.key != stats.key and np.all(s2.thresholds >= stats.thresholds)
    loaded = load_dataset_stats(tmp_path / stats.key)
    np.testing.assert_array_equal(loaded.thresholds, stats.thresholds)
    np.testing.assert_array_equal(loaded.top_maps, stats.top_maps)


def test_stats_sampled_when_buffer_small(model, card, patches, tmp_path):
    exact = compute_dataset_stats(model, card, "blocks.3", patches, StatsConfig(quantile=0.9, cache_dir=tmp_path))
    acts = _all_acts(model, card, patches, "blocks.3").numpy()
    c = acts.shape[1]
    flat = np.sort(acts.transpose(1, 0, 2, 3).reshape(c, -1), axis=1)
    sampled = compute_dataset_stats(model, card, "blocks.3", patches,
                                    StatsConfig(quantile=0.9, cache_dir=tmp_path, max_buffer=c * 20))
    assert sampled.key != exact.key
    assert sampled.sample_rate < 1.0 and sampled.quantile_se > 0
    # the quantile level each sampled threshold reaches in the full data is within ~5 standard errors
    level = (flat <= sampled.thresholds[:, None]).mean(1)
    nonconst = flat[:, -1] > flat[:, 0]
    assert np.median(np.abs(level[nonconst] - 0.9)) < 5 * sampled.quantile_se + 1e-9


def test_stats_resume_and_keys(model, card, patches, tmp_path):
    class Stop(Exception):
        pass

    data = patches[:8]

    def crash_after_six(done, n, msg):
        if done >= 6:
            raise Stop

    with pytest.raises(Stop):
        compute_dataset_stats(model, card, "bn2", data, StatsConfig(cache_dir=tmp_path / "a", batch_size=2),
                              progress=crash_after_six)
    forwards = []
    handle = model.conv_stem.register_forward_hook(lambda m, i, o: forwards.append(o.shape[0]))
    try:
        resumed = compute_dataset_stats(model, card, "bn2", data, StatsConfig(cache_dir=tmp_path / "a", batch_size=2))
    finally:
        handle.remove()
    assert sum(forwards) == 2  # only the last batch was run again
    fresh = compute_dataset_stats(model, card, "bn2", data, StatsConfig(cache_dir=tmp_path / "b", batch_size=2))
    np.testing.assert_array_equal(resumed.thresholds, fresh.thresholds)
    np.testing.assert_array_equal(resumed.top_indices, fresh.top_indices)
    np.testing.assert_allclose(resumed.unit_xy, fresh.unit_xy, atol=1e-5)
    assert resumed.key == fresh.key
    # changed data, layer or weights -> another key, never the cached numbers
    other = compute_dataset_stats(model, card, "bn2", data[:6], StatsConfig(cache_dir=tmp_path / "a", batch_size=2))
    assert other.key != fresh.key
    m2 = tiny_model("efficientnet_lite0", seed=1)
    s_m2 = compute_dataset_stats(m2, card, "bn2", data[:2], StatsConfig(cache_dir=tmp_path / "a"))
    s_m1 = compute_dataset_stats(model, card, "bn2", data[:2], StatsConfig(cache_dir=tmp_path / "a"))
    assert s_m2.key != s_m1.key and not np.array_equal(s_m2.thresholds, s_m1.thresholds)


def test_stats_iterable_checkpoint_never_reused_for_other_data(model, card, patches, tmp_path):
    class Stop(Exception):
        pass

    def batches(arr):
        for i in range(0, len(arr), 4):
            yield arr[i:i + 4]

    def stop(done, n, msg):
        if done >= 4:
            raise Stop

    with pytest.raises(Stop):
        compute_dataset_stats(model, card, "bn2", batches(patches),
                              StatsConfig(n_patches=12, data_key="set-A", cache_dir=tmp_path), progress=stop)
    other = patches[::-1].copy()
    with pytest.raises(StaleCacheError):
        compute_dataset_stats(model, card, "bn2", batches(other),
                              StatsConfig(n_patches=12, data_key="set-A", cache_dir=tmp_path))
    # the stale checkpoint was dropped: a new run on the other data is correct
    s = compute_dataset_stats(model, card, "bn2", batches(other),
                              StatsConfig(n_patches=12, data_key="set-A", cache_dir=tmp_path))
    ref = compute_dataset_stats(model, card, "bn2", other, StatsConfig(cache_dir=tmp_path / "ref"))
    np.testing.assert_array_equal(s.thresholds, ref.thresholds)


def test_stats_recorded_in_store(model, card, patches, tmp_path, store):
    s = compute_dataset_stats(model, card, "bn2", patches[:4], StatsConfig(cache_dir=tmp_path), store=store)
    runs = store.list_dissection_runs(model_card=card.name, layer="bn2")
    assert len(runs) == 1 and runs[0]["key"] == s.key and runs[0]["n_units"] == 1280


# ---------------------------------------------------------------- drawings
def test_drawing_to_mask_shapes():
    rect = drawing_to_mask("rect", [10, 20, 30, 25], 64)
    assert rect.sum() == 20 * 5 and rect[20:25, 10:30].all()
    rect2 = drawing_to_mask("rect", {"left": 10, "top": 20, "width": 20, "height": 5}, 64)
    np.testing.assert_array_equal(rect, rect2)
    poly = drawing_to_mask("polygon", [[10, 10], [50, 10], [50, 50], [10, 50]], 64)
    assert abs(int(poly.sum()) - 40 * 40) <= 2 * 41 + 1
    assert poly[30, 30] and not poly[5, 5]
    stroke = drawing_to_mask("freehand", {"points": [[5, 32], [60, 32]], "width": 6}, 64)
    assert stroke[32, 5:60].all() and stroke[29:36, 30].all() and not stroke[25, 30]
    closed = drawing_to_mask("freehand", {"points": [[10, 10], [50, 10], [30, 50]], "width": 2, "closed": True}, 64)
    assert closed[25, 30]
    assert drawing_to_mask("rect", [-10, -10, 5, 5], 64).sum() == 25  # clipped to the patch
    for shape, geom in [("rect", [70, 70, 90, 90]), ("rect", [5, 5, 5, 30]), ("polygon", [[1, 1], [2, 2]]),
                        ("circle", [1, 2, 3]), ("polygon", "nonsense")]:
        with pytest.raises(ValidationError):
            drawing_to_mask(shape, geom, 64)


def test_mask_png_round_trip():
    m = blob_mask(96, 40, 50, 20)
    np.testing.assert_array_equal(mask_from_png(mask_to_png(m)), m)


# ---------------------------------------------------------------- labeling rule
def _keep_best(drawings):
    """The seed's incremental rule, replayed: unit -> (concept, iou, annotation_id)."""
    best = {}
    for aid, concept, ious, tau in drawings:
        for u in np.nonzero(ious > tau)[0]:
            if u not in best or ious[u] > best[u][1]:
                best[int(u)] = (concept, float(ious[u]), aid)
    return best


def _labels(store, card="c", layer="bn2"):
    return {r["unit"]: (r["concept"], r["iou"], r["annotation_id"]) for r in store.list_unit_labels(card, layer)}


def _save(store, concept, ious, tau=0.2, image="img1", card="c", layer="bn2", reader="r1"):
    return label_units_from_drawing(store,
                                    DrawingRecord(image_id=image, concept=concept, reader=reader, patch_x0=0,
                                                  patch_y0=0, patch_size=32, shape="rect", geometry=[2, 2, 20, 20],
                                                  model_card=card), layer=layer, ious=ious, tau=tau)


def test_labeling_keep_best_and_exact_undo(store):
    add_image(store)
    rng = np.random.default_rng(0)
    drawings = []
    results = []
    for concept in ["mass-round", "margin-spiculated", "vessel", "mass-round", "fat"]:
        ious = rng.uniform(0, 0.6, 64)
        res = _save(store, concept, ious)
        drawings.append((res.annotation_id, concept, ious, 0.2))
        results.append(res)
        assert set(res.units_above) == set(np.nonzero(ious > 0.2)[0])
    assert _labels(store) == _keep_best(drawings)
    # one drawing labels many units
    assert len(results[0].units_above) > 5
    assert set(results[-1].labeled_units) == {u for u, v in _keep_best(drawings).items() if v[2] == results[-1].annotation_id}
    # stored IoUs: every unit above tau of every drawing
    rows = store.list_annotation_units(model_card="c", layer="bn2")
    assert len(rows) == sum(int((d[2] > 0.2).sum()) for d in drawings)
    # undo the second drawing: labels equal to the rule over the remaining drawings
    changed = undo_annotation(store, drawings[1][0], actor="r1")
    remaining = [d for d in drawings if d[0] != drawings[1][0]]
    assert _labels(store) == _keep_best(remaining)
    assert set(changed) == {u for u, v in _keep_best(drawings).items() if v[2] == drawings[1][0]}
    table = unit_labels(store, "c", "bn2")
    assert list(table["unit"]) == sorted(_keep_best(remaining))
    byc = units_by_concept(store, "c", "bn2")
    assert sum(len(v) for v in byc.values()) == len(table)
    # another layer or card is untouched
    assert _labels(store, layer="blocks.5") == {}


def test_labeling_ties_go_to_earlier_drawing(store):
    add_image(store)
    ious = np.array([0.5, 0.1, 0.3])
    first = _save(store, "mass-round", ious)
    second = _save(store, "vessel", ious)
    assert {u: v[0] for u, v in _labels(store).items()} == {0: "mass-round", 2: "mass-round"}
    assert len(second.labeled_units) == 0 and set(first.labeled_units) == {0, 2}


def test_empty_drawing_rejected(store):
    add_image(store)
    with pytest.raises(ValidationError):
        label_units_from_drawing(store,
                                 DrawingRecord(image_id="img1", concept="fat", reader="r", patch_x0=0, patch_y0=0,
                                               patch_size=32, shape="rect", geometry=[50, 50, 60, 60], model_card="c"),
                                 layer="bn2", ious=np.zeros(4))
    assert store.list_annotations() == []


def test_journal_replay_keeps_unit_ious(settings):
    store = Store(settings.db_path, settings.journal_dir)
    add_image(store)
    record = dict(annotation_id="crashed", image_id="img1", concept="vessel", reader="r", patch_x0=0,
                  patch_y0=0, patch_size=32, shape="rect", geometry=[1, 1, 9, 9],
                  mask_png=mask_to_png(blob_mask(32, 5, 5, 3)).hex(), model_card="c",
                  unit_ious={"model_card": "c", "layer": "bn2", "units": [3, 5], "ious": [0.4, 0.7]},
                  db_id=store.db_id)  # a journal record names its database
    settings.journal_dir.mkdir(parents=True, exist_ok=True)
    (settings.journal_dir / "crashed.json").write_text(json.dumps(record))
    assert store.replay_journal() == ["crashed"]
    assert _labels(store) == {3: ("vessel", 0.4, "crashed"), 5: ("vessel", 0.7, "crashed")}
    store.close()


@pytest.mark.parametrize("separate_connections", [False, True])
def test_concurrent_readers_lose_nothing(settings, separate_connections):
    base = Store(settings.db_path, settings.journal_dir)
    add_image(base)
    stores = [base, Store(settings.db_path, settings.journal_dir) if separate_connections else base]
    rng = np.random.default_rng(1)
    plans = {r: [(c, rng.uniform(0, 0.6, 40)) for c in ("mass-oval", "vessel", "fat", "calc-coarse") * 3]
             for r in ("reader-a", "reader-b")}
    done: dict[str, list] = {r: [] for r in plans}
    errors = []
    barrier = threading.Barrier(2)

    def work(i, reader):
        try:
            barrier.wait()
            for concept, ious in plans[reader]:
                res = _save(stores[i], concept, ious, reader=reader)
                done[reader].append((res.annotation_id, concept, ious, 0.2))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, r)) for i, r in enumerate(plans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    all_drawings = done["reader-a"] + done["reader-b"]
    assert len(base.list_annotations()) == 24
    assert len(base.list_annotation_units(model_card="c", layer="bn2")) == sum(int((d[2] > 0.2).sum()) for d in all_drawings)
    # whatever order the transactions committed in, the labels are the keep-best over all drawings
    expected = {}
    for _aid, concept, ious, tau in all_drawings:
        for u in np.nonzero(ious > tau)[0]:
            expected.setdefault(int(u), []).append((float(ious[u]), concept))
    got = _labels(base)
    assert set(got) == set(expected)
    for u, cands in expected.items():
        assert got[u][1] == max(v for v, _ in cands)
    if separate_connections:
        stores[1].close()
    base.close()


# ---------------------------------------------------------------- the labeling boundary: strict > everywhere
def _boundary_scene():
    """Three units on a 10 x 10 patch whose feature map is 10 x 10 too (the upsampling is the identity),
    a 5 x 5 drawing (25 pixels), and IoUs that are exact ratios of pixel counts:

    unit 0: on at 5 pixels inside the drawing                      -> IoU 5/25 = 0.2, exactly tau
    unit 1: the same 5 pixels, and the rest of the patch sits exactly at the threshold
            (strict > leaves it off)                                 -> IoU 0.2; with >= it would be 25/100
    unit 2: on at 6 pixels inside the drawing                        -> IoU 6/25 = 0.24 > tau
    """
    a = np.zeros((3, 10, 10), np.float32)
    a[0, 0, :5] = 1.0
    a[1] = 0.5
    a[1, 0, :5] = 1.0
    a[2, 0, :5] = 1.0
    a[2, 1, 0] = 1.0
    t = np.array([0.5, 0.5, 0.5], np.float32)
    mask = np.zeros((10, 10), bool)
    mask[:5, :5] = True
    return a, t, mask


def test_unit_iou_threshold_and_tau_are_strict():
    """A pixel exactly at its unit's activation threshold is off, and a unit exactly at tau is not picked:
    IoUs are ratios of pixel counts, so equality is common (5/25 is exactly 0.2)."""
    a, t, mask = _boundary_scene()
    expected = np.array([0.2, 0.2, 0.24])
    np.testing.assert_array_equal(compute_unit_ious(a, t, mask), expected)
    np.testing.assert_array_equal(compute_unit_ious_reference(a, t, mask), expected)
    np.testing.assert_array_equal(unit_ious(prepare_unit_masks(a, t, 10), mask), expected)
    m = match_drawing(a, t, mask, tau=0.2)
    assert m.units_above.tolist() == [2] and m.best_unit == 2 and m.best_iou == 0.24
    assert match_drawing(a, t, mask, tau=0.19).units_above.tolist() == [2, 0, 1]


def test_unit_iou_plateau_at_threshold_is_off():
    """Upsampled plateaus exactly at the threshold (ReLU6 caps, constant maps) are off, whole cells and all."""
    a = torch.full((2, 4, 4), 6.0)
    a[1, :2] = 7.0  # the top half above, the bottom half at the threshold
    t = torch.tensor([6.0, 6.0])
    mask = np.zeros((32, 32), bool)
    mask[:16] = True
    fast, ref = compute_unit_ious(a, t, mask), compute_unit_ious_reference(a, t, mask)
    np.testing.assert_array_equal(fast, ref)
    assert fast[0] == 0.0
    # unit 1: the upsampled map is 7 on rows whose bilinear weights touch only the top cells
    up = F.interpolate(a[1][None, None].double(), size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    seg = (up > 6.0).numpy()
    assert 0 < seg.sum() < 32 * 32 and fast[1] == (seg & mask).sum() / (seg | mask).sum()


def test_labeling_at_tau_exactly_labels_nothing(store):
    """The store keeps and labels only units with IoU strictly above tau; one exactly at tau is left out."""
    add_image(store)
    a, t, mask = _boundary_scene()
    ious = compute_unit_ious(a, t, mask)
    res = _save(store, "mass-round", ious, tau=0.2)
    assert res.units_above.tolist() == [2] and res.labeled_units.tolist() == [2]
    assert res.ious_above.tolist() == [0.24]
    assert [(r["unit"], r["iou"]) for r in store.list_annotation_units(annotation_id=res.annotation_id)] == [(2, 0.24)]
    assert _labels(store) == {2: ("mass-round", 0.24, res.annotation_id)}
    # a second drawing exactly tying unit 2's best IoU does not take it (a later drawing must beat it)
    later = _save(store, "vessel", np.array([0.0, 0.0, 0.24]))
    assert later.labeled_units.tolist() == [] and _labels(store)[2][0] == "mass-round"


def test_unit_ious_take_any_input_types_as_the_same_answer():
    """Drawings come as bool, 0/1 or 0/255 integers (a decoded PNG) or floats; activations as numpy or as a
    torch tensor straight from a hook (still needing grad); both are the float32 values the model made, so
    every form gives the IoUs of the plain bool / float32 inputs, in the fast path and the reference."""
    rng = np.random.default_rng(11)
    act = rng.random((12, 6, 6)).astype(np.float32)  # (C, h, w)
    thr = np.quantile(act, 0.6, axis=(1, 2)).astype(np.float32)  # (C,)
    drawing = np.zeros((48, 48), bool)
    drawing[7:31, 12:40] = True
    ref = compute_unit_ious_reference(act, thr, drawing)
    assert 0 < ref.max() < 1 and len(set(ref.round(6))) > 6
    masks = prepare_unit_masks(act, thr, 48)
    for as_drawn in (drawing.astype(np.uint8), drawing.astype(np.uint8) * 255, drawing.astype(np.float32)):
        np.testing.assert_array_equal(compute_unit_ious(act, thr, as_drawn), ref)
        np.testing.assert_array_equal(unit_ious(masks, as_drawn), ref)
        np.testing.assert_array_equal(compute_unit_ious_reference(act, thr, as_drawn), ref)
    from_hook = torch.from_numpy(act).requires_grad_(True)
    thr_t = torch.from_numpy(thr).requires_grad_(True)
    np.testing.assert_array_equal(compute_unit_ious(from_hook, thr_t, drawing), ref)
    np.testing.assert_array_equal(unit_ious(prepare_unit_masks(from_hook, thr_t, 48), drawing), ref)
    np.testing.assert_array_equal(compute_unit_ious_reference(from_hook, thr_t, drawing), ref)
    # float64 inputs are first the float32 values they stand for: unit 0 is a plateau 1e-9 above its
    # threshold and unit 1's threshold is 1e-9 below its plateau, both of which round to "equal" (off)
    a64, t64 = act.astype(np.float64), thr.astype(np.float64)
    a64[0], a64[1] = float(thr[0]) + 1e-9, float(thr[1])
    t64[1] -= 1e-9
    a32 = a64.astype(np.float32)
    assert (a32[0] == thr[0]).all() and np.float32(t64[1]) == thr[1]
    expected = compute_unit_ious(a32, thr, drawing)
    assert expected[0] == expected[1] == 0
    for fn in (compute_unit_ious, compute_unit_ious_reference):
        np.testing.assert_array_equal(fn(a64, t64, drawing), expected)
    np.testing.assert_array_equal(unit_ious(prepare_unit_masks(a64, t64, 48), drawing), expected)


def test_unit_ious_refuse_wrong_shapes_and_say_what_they_got():
    act, thr = np.zeros((3, 4, 4), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"activation must be \(C, h, w\), got \(4, 4\)"):
        compute_unit_ious(act[0], thr, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="^2 thresholds for 3 units$"):
        compute_unit_ious(act, thr[:2], np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"drawing mask must be \(H, W\), got \(1, 8, 8\)"):
        compute_unit_ious(act, thr, np.zeros((1, 8, 8), bool))
    with pytest.raises(ValueError, match=r"drawing mask must be \(H, W\), got \(1, 8, 8\)"):
        compute_unit_ious_reference(act, thr, np.zeros((1, 8, 8), bool))
    with pytest.raises(ValueError, match=r"drawing mask is \(8, 9\), the unit masks were prepared for \(8, 8\)"):
        unit_ious(prepare_unit_masks(act, thr, 8), np.zeros((8, 9), bool))

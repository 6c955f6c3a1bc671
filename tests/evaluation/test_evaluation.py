"""Evaluation: the simulated reader, every metric on hand-made cases, the app's learning curve and a
small end-to-end run on a real demo store with the committed demo model."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dashboard import evaluation as ev
from dashboard.data.store import DrawingRecord, ImageRecord, ValidationError
from dashboard.engine.dissection import drawing_to_mask, mask_to_png
from dashboard.testing.engine_helpers import TinyCard, blob_mask, tiny_model
from model_zoo.metrics import compute_aurocs

S = 96


def _ellipse(size=S, cy=48, cx=44, ry=24, rx=18):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _draws(truth, cfg, n, seed=0):
    return [ev.simulate_drawing(truth, cfg, np.random.default_rng([seed, i])) for i in range(n)]


# ====================================================================== the simulated reader
def test_clean_drawing_traces_the_truth():
    truth = _ellipse()
    cfg = ev.ReaderConfig(jitter_px=0.0, simplify_px=0.0, partial_rate=0.0, overdraw_rate=0.0)
    d = ev.simulate_drawing(truth, cfg, np.random.default_rng(0))
    assert d.partial_mode == "" and not d.overdrawn
    assert d.recall > 0.97 and d.outside < 0.03
    # the stored geometry is the engine's polygon format and rasterises to the drawing's mask
    assert d.shape == "polygon"
    assert np.array_equal(drawing_to_mask(d.shape, d.geometry, S), d.mask)


def test_partial_drawings_cover_the_configured_fraction():
    truth = _ellipse()
    for coverage in (0.5, 0.8):
        cfg = ev.ReaderConfig(jitter_px=1.0, partial_rate=1.0, coverage=coverage, overdraw_rate=0.0)
        ds = _draws(truth, cfg, 16)
        assert all(d.partial_mode in ("erode", "clip") for d in ds)
        assert {d.partial_mode for d in ds} == {"erode", "clip"}  # both kinds of partial drawing happen
        assert abs(np.mean([d.recall for d in ds]) - coverage) < 0.06
        assert np.mean([d.outside for d in ds]) < 0.06  # a partial drawing stays inside the truth


def test_overdrawn_drawings_spill_the_configured_amount():
    truth = _ellipse()
    for extra in (0.2, 0.5):
        cfg = ev.ReaderConfig(jitter_px=1.0, partial_rate=0.0, overdraw_rate=1.0, overdraw=extra)
        ds = _draws(truth, cfg, 12)
        assert all(d.overdrawn for d in ds)
        assert np.mean([d.recall for d in ds]) > 0.97
        assert abs(np.mean([d.outside for d in ds]) - extra) < 0.06
        # the spill hugs the truth (a dilation), it does not land elsewhere in the patch
        for d in ds:
            from scipy import ndimage

            near = ndimage.binary_dilation(truth, iterations=int(6 + 8 * extra))
            assert not (d.mask & ~near).any()


def test_partial_and_overdraw_rates_are_respected():
    truth = _ellipse(size=48, cy=24, cx=22, ry=12, rx=9)
    cfg = ev.ReaderConfig(partial_rate=0.3, overdraw_rate=0.6)
    ds = _draws(truth, cfg, 300, seed=5)
    for rate, got in ((0.3, np.mean([d.partial_mode != "" for d in ds])), (0.6, np.mean([d.overdrawn for d in ds]))):
        assert abs(got - rate) < 3 * np.sqrt(rate * (1 - rate) / len(ds))


def test_thin_structures_are_clipped_not_eroded_away():
    truth = np.zeros((S, S), bool)
    truth[46:50, 5:90] = True  # a 4-px vessel
    cfg = ev.ReaderConfig(partial_rate=1.0, coverage=0.5, overdraw_rate=0.0, jitter_px=0.5)
    ds = _draws(truth, cfg, 8)
    assert all(d.partial_mode == "clip" for d in ds)
    assert abs(np.mean([d.recall for d in ds]) - 0.5) < 0.1


def test_several_pieces_are_stored_like_the_label_page():
    truth = np.zeros((S, S), bool)
    truth |= blob_mask(S, 25, 25, 10)
    truth |= blob_mask(S, 70, 70, 12)
    truth |= blob_mask(S, 20, 80, 1.2)  # too small to be outlined with max_parts=2
    cfg = ev.ReaderConfig(jitter_px=0.5, partial_rate=0.0, overdraw_rate=0.0, max_parts=2)
    d = ev.simulate_drawing(truth, cfg, np.random.default_rng(1))
    parts = d.geometry["drawings"]
    assert len(parts) == 2
    union = np.zeros((S, S), bool)
    for p in parts:
        union |= drawing_to_mask(p["shape"], p["geometry"], S)
    assert np.array_equal(union, d.mask)
    assert not d.mask[15:26, 75:86].any()


def test_reader_is_seeded():
    truth = _ellipse()
    cfg = ev.ReaderConfig(partial_rate=0.5, overdraw_rate=0.5)
    a = ev.simulate_drawing(truth, cfg, np.random.default_rng(7))
    b = ev.simulate_drawing(truth, cfg, np.random.default_rng(7))
    c = ev.simulate_drawing(truth, cfg, np.random.default_rng(8))
    assert json.dumps(a.geometry) == json.dumps(b.geometry) and np.array_equal(a.mask, b.mask)
    assert json.dumps(a.geometry) != json.dumps(c.geometry)


def test_empty_truth_is_refused():
    with pytest.raises(ValueError):
        ev.simulate_drawing(np.zeros((S, S), bool), ev.ReaderConfig(), np.random.default_rng(0))


def test_wrong_label_rate_over_many_draws():
    concepts = ["mass", "calcification", "vessel", "skin"]
    rng = np.random.default_rng(0)
    rate, n = 0.1, 20000
    got = [ev.choose_label("mass", concepts, rate, rng) for _ in range(n)]
    wrong = np.mean([g != "mass" for g in got])
    assert abs(wrong - rate) < 4 * np.sqrt(rate * (1 - rate) / n)
    assert set(got) == set(concepts)  # wrong labels are spread over the other concepts
    assert all(ev.choose_label("mass", concepts, 0.0, rng) == "mass" for _ in range(200))
    assert ev.choose_label("mass", ["mass"], 1.0, rng) == "mass"  # nothing else to confuse it with


# ====================================================================== metrics, hand-made cases
def test_histogram_auroc_matches_exact_and_pools_images():
    rng = np.random.default_rng(0)
    truth = rng.random((2, 3, 40, 40)) < 0.2  # (images, K, h, w)
    probs = np.clip(0.5 * truth + rng.random(truth.shape) * 0.7, 0, 1).astype(np.float32)
    valid = np.ones((40, 40), bool)
    valid[:5] = False
    hist = np.stack([ev.score_histograms(probs[i], truth[i], valid) for i in range(2)])  # (2, K, 2, B)
    pooled = ev.auroc_from_counts(hist.sum(0))
    for k in range(3):
        exact = compute_aurocs(truth[:, k][:, valid].reshape(-1, 1), probs[:, k][:, valid].reshape(-1, 1))[0]
        assert abs(pooled[k] - exact) < 2e-3
    perfect = ev.score_histograms(truth[0].astype(np.float32), truth[0])
    inverted = ev.score_histograms(1 - truth[0].astype(np.float32), truth[0])
    assert np.allclose(ev.auroc_from_counts(perfect), 1.0) and np.allclose(ev.auroc_from_counts(inverted), 0.0)
    empty = ev.score_histograms(probs[0], np.zeros_like(truth[0]))
    assert np.isnan(ev.auroc_from_counts(empty)).all()


def test_mask_iou_known_answers():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:4] = True
    b[2:6, 0:4] = True  # overlap 8, union 24
    assert ev.mask_iou(a, b) == pytest.approx(8 / 24)
    assert ev.mask_iou(a, a) == 1.0
    assert np.isnan(ev.mask_iou(np.zeros_like(a), np.zeros_like(a)))


def test_bootstrap_pools_and_brackets():
    rng = np.random.default_rng(1)
    truth = rng.random((6, 2, 30, 30)) < 0.3
    probs = np.clip(truth * rng.uniform(0.2, 0.6, (6, 1, 1, 1)) + rng.random(truth.shape) * 0.6, 0, 1)
    hist = np.stack([ev.score_histograms(probs[i], truth[i]) for i in range(6)])
    pred = probs >= 0.5
    inter = (pred & truth).reshape(6, 2, -1).sum(-1)
    union = (pred | truth).reshape(6, 2, -1).sum(-1)
    out = ev.bootstrap_auroc_iou(hist, inter, union, n_boot=300, seed=0)
    assert np.allclose(out["iou"], inter.sum(0) / union.sum(0))
    assert np.all(out["auroc_lo"] <= out["auroc"] + 1e-9) and np.all(out["auroc"] <= out["auroc_hi"] + 1e-9)
    assert np.all(out["iou_lo"] <= out["iou"] + 1e-9) and np.all(out["iou"] <= out["iou_hi"] + 1e-9)
    assert np.all(out["auroc_hi"] > out["auroc_lo"])  # images differ, so the interval has width
    same = ev.bootstrap_auroc_iou(np.repeat(hist[:1], 5, 0), np.repeat(inter[:1], 5, 0), np.repeat(union[:1], 5, 0),
                                  n_boot=100)
    assert np.allclose(same["auroc_lo"], same["auroc_hi"]) and np.allclose(same["iou_lo"], same["iou_hi"])
    again = ev.bootstrap_auroc_iou(hist, inter, union, n_boot=300, seed=0)
    assert np.array_equal(again["auroc_lo"], out["auroc_lo"])


def test_spearman_known_ranks():
    assert ev.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert ev.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert ev.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert np.isnan(ev.spearman([1, 2], [1, 2]))
    assert np.isnan(ev.spearman([1, 2, 3], [5, 5, 5]))


def test_top_concept_match():
    lesions = {"mass", "mass-round", "calcification", "architectural-distortion"}
    m = ev.top_concept_match({"mass": 0.5, "vessel": 0.2, "fibroglandular": 0.1}, {"mass", "mass-round"}, lesions)
    assert m == {"top": "mass", "share": 0.5, "match": True, "lesion": True}
    m = ev.top_concept_match({"calcification": 0.4, "mass": 0.1}, {"mass"}, lesions)
    assert m["top"] == "calcification" and not m["match"] and m["lesion"]
    m = ev.top_concept_match({"vessel": 0.6, "mass": 0.1}, {"mass"}, lesions)
    assert not m["match"] and not m["lesion"]
    m = ev.top_concept_match({"vessel": 0.0, "mass": 0.0}, {"mass"}, lesions)
    assert m["top"] is None and not m["match"]  # no attribution at all is not a match


def test_attribution_in_region():
    a = np.zeros((4, 4))
    a[0, 0], a[1, 1], a[3, 3] = 2.0, 1.0, -5.0  # negative attribution does not count
    r = np.zeros((4, 4), bool)
    r[0, 0] = True
    assert ev.attribution_in_region(a, r) == pytest.approx(2 / 3)
    assert np.isnan(ev.attribution_in_region(np.zeros((4, 4)), r))


def test_blur_inpainting_takes_the_surrounding_level():
    img = np.full((64, 64), 0.2, np.float32)
    region = blob_mask(64, 30, 30, 10)
    img[region] = 1.0
    out = ev.inpaint_regions(img, region[None], method="blur")
    assert out.shape == (1, 64, 64)
    assert np.allclose(out[0][region], 0.2, atol=1e-5)
    assert np.array_equal(out[0][~region], img[~region])


def test_texture_inpainting_keeps_texture_and_range():
    rng = np.random.default_rng(0)
    img = np.clip(0.5 + 0.1 * rng.standard_normal((96, 96)), 0, 1).astype(np.float32)
    region = blob_mask(96, 48, 48, 20)
    img_with = img.copy()
    img_with[region] = 0.95  # a bright "lesion"
    tex, blur = ev.inpaint_regions(img_with, np.stack([region, region]), method="texture")[0], \
        ev.inpaint_regions(img_with, region[None], method="blur")[0]
    assert abs(tex[region].mean() - img[~region].mean()) < 0.03  # the lesion is gone
    assert tex[region].std() > 0.6 * img[~region].std()          # the fill has tissue texture
    assert blur[region].std() < 0.3 * img[~region].std()         # the plain blur is smooth
    assert tex.min() >= img_with.min() and tex.max() <= img_with.max()
    flat = np.full((32, 32), 0.3, np.float32)
    assert np.allclose(ev.inpaint_regions(flat, blob_mask(32, 16, 16, 6)[None])[0], 0.3)


def test_deletion_with_a_region_mean_score():
    img = np.full((40, 40), 0.2, np.float32)
    lesion = np.zeros((40, 40), bool)
    lesion[10:20, 10:20] = True
    img[lesion] = 1.0
    half = lesion.copy()
    half[15:20] = False
    elsewhere = np.zeros((40, 40), bool)
    elsewhere[30:38, 30:38] = True

    def score(batch):  # the "model": mean intensity over the lesion
        return batch[:, lesion].mean(1)

    base, drops = ev.deletion_drops(score, img, np.stack([lesion, elsewhere]),
                                    inpaint=lambda im, reg: ev.inpaint_regions(im, reg, method="blur"))
    assert base == pytest.approx(1.0)
    assert drops[0] == pytest.approx(0.8, abs=1e-5)   # the lesion becomes the 0.2 surroundings
    assert drops[1] == pytest.approx(0.0, abs=1e-7)   # deleting elsewhere changes nothing
    base, drops = ev.deletion_drops(score, img, np.stack([half]),
                                    inpaint=lambda im, reg: np.where(reg, 0.0, im[None]).astype(np.float32))
    assert drops[0] == pytest.approx(0.5)              # half the lesion set to 0
    # drops rank as the regions' true contributions do
    assert ev.spearman([1.0, 0.5, 0.0], [0.8, 0.4, 0.0]) == pytest.approx(1.0)


def test_randomize_model_is_seeded_and_leaves_the_original():
    model = tiny_model("efficientnet_lite0", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    top = ev.randomize_model(model, "top", seed=3)
    top2 = ev.randomize_model(model, "top", seed=3)
    full = ev.randomize_model(model, "full", seed=3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    sd, sd2, sdf = top.state_dict(), top2.state_dict(), full.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert not torch.equal(sd["conv_head.weight"], before["conv_head.weight"])
    assert not torch.equal(sd["blocks.6.0.conv_pw.weight"], before["blocks.6.0.conv_pw.weight"])
    assert torch.equal(sd["blocks.0.0.conv_dw.weight"], before["blocks.0.0.conv_dw.weight"])  # below the top
    assert not torch.equal(sdf["blocks.0.0.conv_dw.weight"], before["blocks.0.0.conv_dw.weight"])
    for m in (sd, sdf):
        assert torch.equal(m["classifier.weight"], before["classifier.weight"])
    with pytest.raises(ValueError):
        ev.randomize_model(model, "half")


def test_map_similarity_known_answers():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    same = ev.map_similarity(a, a)
    assert same["pearson"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0)
    assert ev.map_similarity(a, -a)["pearson"] == pytest.approx(-1.0)
    assert ev.map_similarity(a, rng.random((32, 32)))["ssim"] < 0.3
    assert np.isnan(ev.map_similarity(a, np.zeros((32, 32)))["pearson"])


def test_sample_grid_equals_upsampled_then_strided():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 6)).astype(np.float32)
    full = F.interpolate(torch.from_numpy(maps)[None], size=(64, 48), mode="bilinear", align_corners=False)[0]
    want = full[:, 2::4, 2::4].numpy()
    got = ev.sample_grid(maps, (64, 48), 4, 2)
    assert got.shape == want.shape
    assert np.allclose(got, want, atol=1e-5)


def test_load_drawing_speed(tmp_path):
    assert ev.load_drawing_speed(tmp_path / "browser.json") is None
    p = tmp_path / "browser.json"
    p.write_text(json.dumps({"drawing": {"draw_seconds": [10.0, 20.0, 30.0]}}))
    assert ev.load_drawing_speed(p)["drawings_per_minute"] == pytest.approx(3.0)
    p.write_text(json.dumps({"drawings_per_minute": 4.0}))
    assert ev.load_drawing_speed(p)["seconds_per_drawing"] == pytest.approx(15.0)
    p.write_text(json.dumps({"other": 1}))
    assert ev.load_drawing_speed(p) is None
    # what bench_browser writes: the KLM + measured latencies under "drawings_per_minute"
    p.write_text(json.dumps({"drawings_per_minute": {"drawings_per_minute_p50": 3.0, "drawings_per_minute_p90": 2.9,
                                                     "human_s": {"total_s": 17.0}}}))
    assert ev.load_drawing_speed(p)["seconds_per_drawing"] == pytest.approx(20.0)


def _round(budget, aurocs, n):
    return {"budget": budget, "probe_version": budget, "n_drawings": dict.fromkeys(aurocs, n), "n_drawings_total": 0,
            "probe_validation": {}, "metrics": {c: {"auroc": a} for c, a in aurocs.items()}}


def test_summarise_reads_the_curve_and_the_checks():
    rounds = [_round(1, {"mass": 0.80, "vessel": 0.95, "skin": None}, 1),
              _round(3, {"mass": 0.91, "vessel": 0.97, "skin": None}, 3),
              _round(10, {"mass": 0.93, "vessel": 0.85, "skin": None}, 10)]
    reports = [{"top_tile.match": True, "top_tile.lesion": True, "deletion_truth.spearman": 0.8,
                "top_tile.probability": 0.9, "deletion_truth.shares": [0.5, 0.1, 0.2],
                "deletion_truth.drops": [3.0, 0.1, 1.0]},
               {"top_tile.match": False, "top_tile.lesion": True, "deletion_truth.spearman": 0.4,
                "top_tile.probability": 0.1, "deletion_truth.shares": [0.3, 0.2, 0.1],
                "deletion_truth.drops": [1.0, 2.0, 0.5], "deletion_report.spearman": 0.9}]
    rand = [{"scope": "full", "share_spearman": None, "attr_pearson": 0.0, "attr_ssim": 0.0, "top_same": False,
             "attr_constant": True},
            {"scope": "full", "share_spearman": 0.5, "attr_pearson": 0.3, "attr_ssim": 0.4, "top_same": True,
             "attr_constant": False}]
    drawings = [{"concept": "mass", "wrong_label": w, "units_won": u, "units_above": u + 1, "recall": 0.9,
                 "outside": 0.1} for w, u in ((False, 2), (True, 4))]
    res = ev.EvaluationResult(config={}, rounds=rounds, drawings=drawings, reports=reports, randomisation=rand,
                              learning_curve=[], available={}, heldout={}, timings={})
    s = ev.summarise(res, drawing_speed={"drawings_per_minute": 2.0})
    assert s["drawings_to_auroc_target"] == {"mass": 3, "vessel": 1}
    assert s["drawings_to_auroc_target_stable"] == {"mass": 3, "vessel": None}  # vessel falls back below
    assert s["concepts_meeting_target"] == ["mass", "vessel"] and s["n_concepts_evaluable"] == 2
    assert s["top1_match_rate"] == 0.5 and s["top1_lesion_rate"] == 1.0
    assert s["top1_match_rate_flagged"] == 1.0 and s["top1_n_flagged"] == 1  # only the first is flagged
    assert s["units_per_drawing_by_concept"]["mass"]["won"] == 3.0
    assert s["deletion"]["deletion_truth"]["spearman_mean"] == pytest.approx(0.6)
    assert s["deletion"]["deletion_truth"]["n_patches"] == 2
    # pooled over both patches by within-patch ranks: (3,1,2) vs (3,1,2) and (3,2,1) vs (2,3,1);
    # Spearman of the six pooled rank pairs (ties averaged) = 0.75
    assert s["deletion"]["deletion_truth"]["spearman_pooled"] == pytest.approx(0.75)
    assert s["deletion"]["deletion_report"]["spearman_mean"] == pytest.approx(0.9)
    assert s["randomisation"]["full"]["share_spearman"] == pytest.approx(0.25)  # undefined counts as 0
    assert s["randomisation"]["full"]["share_spearman_undefined"] == 1
    assert s["randomisation"]["full"]["attr_all_zero"] == 1 and s["randomisation"]["full"]["top_same_rate"] == 0.5
    assert s["wrong_label_rate_observed"] == 0.5 and s["units_won_per_drawing"] == 3.0
    assert s["reader_minutes_to_target"] == pytest.approx(2.0)  # (3 + 1) drawings at 2 per minute
    assert s["targets"]["top1_match_ge_90"] is False
    assert s["targets"]["deletion_spearman_ge_0.7"] == {"deletion_truth": False, "deletion_report": True}
    assert "missing" in ev.summarise(res)["drawing_speed"]


# ====================================================================== the app's learning curve
LC_S = 128


def _lc_scene(seed):
    rng = np.random.default_rng(seed)
    img = (0.4 + 0.04 * rng.standard_normal((LC_S, LC_S))).astype(np.float32)
    cy, cx = rng.uniform(40, 88, 2)
    mass = blob_mask(LC_S, cy, cx, 20)
    img[mass] = 0.95
    line = np.zeros((LC_S, LC_S), bool)
    r = int(rng.integers(10, 30))
    line[r:r + 8, :] = True
    img[line] = 0.05
    return np.clip(img, 0, 1), mass, line


def test_learning_curve_from_real_drawings(store):
    card = TinyCard(name="lc-card")
    model = tiny_model("efficientnet_lite0", seed=0)
    patches = {}
    for i in range(6):
        store.save_case(f"c{i}", "synthetic")
        store.save_image(ImageRecord(f"im{i}", f"c{i}", f"x/{i}.png", f"sha{i}", rows=LC_S, cols=LC_S))
        patch, mass, line = _lc_scene(i)
        patches[f"im{i}"] = patch
        for concept, mask, reader in (("mass", mass, "alice"), ("fat", line, "bob")):
            store.save_annotation(DrawingRecord(image_id=f"im{i}", concept=concept, reader=reader, patch_x0=0,
                                                patch_y0=0, patch_size=LC_S, shape="polygon",
                                                geometry=[[0, 0], [1, 0], [1, 1]], mask_png=mask_to_png(mask),
                                                model_card="lc-card"))
    load = lambda a: patches[a.image_id]  # noqa: E731
    df = ev.compute_learning_curve(store, card, model, load_patch=load,
                                   config=ev.LearningCurveConfig(layer="blocks.3", steps=(1, 2, 3, 10)))
    assert sorted(df["n_step"].unique()) == [1, 2, 3, 6]  # steps past the drawings are cut at 6 (all)
    for c in ("mass", "fat"):
        sub = df[df.concept == c].sort_values("n_step")
        assert list(sub["n_drawings"]) == [1, 2, 3, 6] and list(sub["n_images"]) == [1, 2, 3, 6]
        assert (sub["n_available"] == 6).all()
        assert sub["auroc"].notna().all()
        assert ((sub["auroc"] >= 0) & (sub["auroc"] <= 1)).all()
        assert (sub["n_eval_positions"] == sub["n_eval_positions"].iloc[0]).all()  # one evaluation set
        assert sub["auroc"].iloc[-1] > 0.8  # a bright blob and a dark band are learnt from six drawings
    only_bob = ev.compute_learning_curve(store, card, model, load_patch=load,
                                         config=ev.LearningCurveConfig(layer="blocks.3", readers=("bob",)))
    assert set(only_bob["concept"]) == {"fat"}
    none = ev.compute_learning_curve(store, card, model, load_patch=load,
                                     config=ev.LearningCurveConfig(layer="blocks.3", exclude_readers=("alice", "bob")))
    assert none.empty and "auroc" in none.columns


# ====================================================================== end to end on a demo store
def _demo_seed(n_cases: int) -> int:
    """A demo seed whose small set has masses and calcifications in the train split and an
    abnormal held-out case (searched, not assumed: the phantom may change)."""
    from dashboard.data import phantom
    from dashboard.data.demo import assign_splits

    for seed in range(200):
        plans = [phantom.plan_case(seed, i) for i in range(n_cases)]
        splits = assign_splits(plans, seed)
        kinds = {"train": set(), "held": set()}
        for p in plans:
            part = "train" if splits[p.case_id] == "train" else "held"
            for specs in p.findings.values():
                kinds[part].update(s.kind for s in specs)
        if {"mass", "calcification"} <= kinds["train"] and kinds["held"] & {"mass", "calcification"}:
            return seed
    pytest.skip("no small demo set with the needed findings")


@pytest.mark.slow
def test_end_to_end_small_run(settings, store, tmp_path):
    import model_zoo
    from bench.label_efficiency import headline, table_rows, write_results
    from dashboard.data.demo import build_demo

    n_cases = 10
    build_demo(settings, store, n_cases=n_cases, seed=_demo_seed(n_cases), workers=2, contact_sheet=False)
    card = model_zoo.load_card("demo-lite0-synth")
    model = model_zoo.create_model(card)
    cfg = ev.EvaluationConfig(concepts=("mass", "calcification", "vessel", "nipple"), budgets=(1, 2),
                              max_heldout_images=3, stats_patches=24, stats_images=6, n_boot=50, report_images=2,
                              random_images=1, random_scopes=("top",))
    calls = []
    res = ev.run_label_efficiency(store, model, card, cfg, cache_dir=settings.cache_dir,
                                  progress=lambda d, t, m="": calls.append((d, t, m.split(":")[0])))
    # one progress(done, total, message) over the whole run: each stage in its own later part of the bar
    done_by_stage = {}
    for d, t, stage in calls:
        assert 0 <= d <= t
        done_by_stage.setdefault(stage, []).append(d)
    order = ["statistics", "held-out", "rounds", "reports", "learning curve"]
    assert set(order) <= set(done_by_stage)
    assert all(max(done_by_stage[a]) <= min(done_by_stage[b]) for a, b in zip(order, order[1:]))
    assert calls[-1][0] == calls[-1][1]  # the run ends at 100 %
    # the reader's drawings are in the store, as reader sim-reader, with units labeled and one probe per batch
    anns = store.list_annotations(model_card=card.name)
    assert len(anns) == len(res.drawings) > 0 and {a.reader for a in anns} == {ev.READER}
    assert len(store.list_probes(model_card=card.name)) == len(cfg.budgets)
    assert store.list_unit_labels(card.name, card.default_layer)
    assert max(r["n_drawings"][c] for r in res.rounds for c in cfg.concepts) <= 2
    for r in res.drawings:
        assert 0 <= r["recall"] <= 1 and r["outside"] >= 0 and r["units_above"] >= r["units_won"] >= 0
    # every metric is produced, finite and in range
    assert res.heldout["images"] == 3
    for rnd in res.rounds:
        for m in rnd["metrics"].values():
            if m["n_pos_images"]:
                assert 0 <= m["auroc"] <= 1 and 0 <= m["auroc_lo"] <= m["auroc_hi"] <= 1
                assert 0 <= m["iou"] <= 1
                assert m["unit_iou"] is None or 0 <= m["unit_iou"] <= 1
    assert res.reports
    for r in res.reports:
        assert r["top_tile.top"] is None or r["top_tile.top"] in cfg.concepts
        assert 0 <= r["top_tile.probability"] <= 1
        for v in ev.DELETION_VARIANTS:
            assert np.isfinite(r[f"{v}.base_logodds"])
            assert len(r[f"{v}.drops"]) == len(r[f"{v}.shares"]) == len(r[f"{v}.concepts"])
            assert all(np.isfinite(r[f"{v}.drops"])) and set(r[f"{v}.concepts"]) <= set(cfg.concepts)
        assert r["deletion_truth.finding_drop"] is None or np.isfinite(r["deletion_truth.finding_drop"])
    assert res.randomisation and all(r["scope"] == "top" for r in res.randomisation)
    assert 0 <= res.randomisation[0]["attr_ssim"] <= 1
    assert res.learning_curve and all(0 <= r["auroc"] <= 1 for r in res.learning_curve if r["auroc"] is not None)
    s = res.summary
    assert set(s["final_auroc"]) <= set(cfg.concepts)
    assert s["top1_n_images"] == len(res.reports) and 0 <= s["top1_match_rate"] <= 1
    assert "missing" in s["drawing_speed"]
    # the bench writes its tables and plots from this result
    d = res.to_dict()
    json.dumps(d)  # JSON-able
    again = ev.jsonable(ev.summarise(ev.EvaluationResult.from_dict(json.loads(json.dumps(d)))))
    assert json.dumps(again, sort_keys=True) == json.dumps(d["summary"], sort_keys=True)  # a saved run re-summarises
    files = write_results(d, tmp_path / "out")
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    assert len(table_rows(d)) == len(cfg.budgets) * len(cfg.concepts)
    assert "drawings to reach AUROC" in headline(d)
    # a second run on the same store is refused (it would mix two readers' drawings)
    with pytest.raises(ValidationError, match="already holds drawings"):
        ev.run_label_efficiency(store, model, card, dataclasses.replace(cfg, budgets=(1,)),
                                cache_dir=settings.cache_dir)

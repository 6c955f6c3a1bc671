"""Screen functions without Streamlit: real store in tmp_path, real DICOMs, a tiny real timm model."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dashboard.data.store import UnknownConceptError
from dashboard.engine import dissection, report
from dashboard.engine.dissection import compute_unit_ious, drawing_to_mask, mask_from_png
from dashboard.testing import app_data
from dashboard.ui import Caches, canvas
from dashboard.ui.context import build_context, load_model
from dashboard.ui.memo import HeadStart, Memo
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import read as rd
from dashboard.ui.screens import report as rp
from dashboard.ui.screens import units as un
from dashboard.ui.screens import worklist as wl
from dashboard.ui.types import EngineNotReady, PatchRef, ReadingError, WindowChoice
from dashboard.ui.work import concepts as cx
from dashboard.ui.work import images
from dashboard.ui.work import report_parts as parts
from dashboard.ui.work.evidence import image_evidence

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "fabric"


@pytest.fixture
def ctx_stats(ctx):
    cx.compute_stats(ctx, 120)
    return ctx


def fixture_json(name: str) -> dict:
    return json.loads((FIX / f"{name}.json").read_text())


def test_memo_computes_once_per_key():
    memo, calls = Memo(2), []
    assert memo.get("a", lambda: calls.append(1) or 1) == 1
    assert memo.get("a", lambda: calls.append(1) or 2) == 1
    memo.get("b", lambda: 2)
    memo.get("c", lambda: 3)  # evicts "a"
    assert "a" not in memo and len(calls) == 1


def test_worklist_filters_sort_and_threshold(ctx):
    app_data.score(ctx.store, ctx.card_name, ctx.weights_sha, {"SYN-0002-RCC": 0.7, "SYN-0001-LCC": 0.4})
    view = wl.load_worklist(ctx)
    assert [r["case_id"] for r in view.rows] == ["SYN-0002", "SYN-0001", "MIAS-mdb001"]
    assert view.rows[0]["prediction"] == "lesion" and view.rows[1]["prediction"] == "normal"
    asc = wl.load_worklist(ctx, wl.WorklistFilter(descending=False))
    assert [r["case_id"] for r in asc.rows] == ["SYN-0001", "SYN-0002", "MIAS-mdb001"]  # unscored still last
    assert [r["case_id"] for r in wl.load_worklist(ctx, wl.WorklistFilter(scored="unscored")).rows] == ["MIAS-mdb001"]
    assert [r["case_id"] for r in wl.load_worklist(ctx, wl.WorklistFilter(truths=("normal",))).rows] == ["SYN-0002"]


def test_score_unscored_caches_every_image_and_reports_bad_files(ctx, settings):
    bad = ctx.store.list_images(case_id="SYN-0002")[0]
    Path(bad["path"]).write_bytes(b"broken")
    seen = []
    scored = wl.score_unscored(ctx, lambda done, total, message="": seen.append((done, total)))
    assert scored.n_images == 7 and scored.n_scored == 6
    assert [i for i, _ in scored.failures] == [bad["image_id"]]
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)
    again = wl.score_unscored(ctx)
    assert again.n_images == 1  # only the broken one is still unscored


def test_hanging_order_and_display_flip(ctx):
    view = rd.load_reading(ctx, "SYN-0001")
    assert [[t.label for t in row] for row in view.rows] == [["R CC", "L CC"], ["R MLO", "L MLO"]]
    r, l = view.rows[0]
    assert r.mirrored and not l.mirrored
    # the phantom's chest wall is at the file's edge: R shows it on the right, L on the left
    for tile, wall_right in ((r, True), (l, False)):
        g = tile.rgb[..., 0].astype(float)
        band = max(1, g.shape[1] // 10)
        assert (g[:, -band:].mean() > g[:, :band].mean()) == wall_right
    assert view.presets == ["1: STANDARD (C 2000 / W 3000)", "2: DENSE (C 2400 / W 1200)"]


def test_window_presets_manual_and_auto_change_the_pixels(ctx):
    row = ctx.store.get_image("SYN-0001-LCC")
    a, wa = images.display_gray(ctx, row, WindowChoice("file", 0))
    b, wb = images.display_gray(ctx, row, WindowChoice("file", 1))
    c, wc = images.display_gray(ctx, row, WindowChoice("manual", center=1000, width=500))
    d, wd = images.display_gray(ctx, row, WindowChoice("auto"))
    assert (wa.name, wb.name, wc.name, wd.name) == ("STANDARD", "DENSE", "MANUAL", "AUTO")
    assert len({a.tobytes(), b.tobytes(), c.tobytes(), d.tobytes()}) == 4


def test_patch_at_a_display_point_of_a_right_breast_is_mirrored_to_model_space(ctx):
    h, w = images.model_image(ctx, ctx.store.get_image("SYN-0001-RCC"))[2].model_shape
    ref = rd.patch_at(ctx, "SYN-0001-RCC", 40, 100)  # display px of a mirrored image: model x = w - 40
    assert ref.size == 64 and ref.x0 == int(round(w - 40 - 32)) and ref.y0 == 68
    ref_l = rd.patch_at(ctx, "SYN-0001-LCC", 40, 100)
    assert ref_l.x0 == 8
    with pytest.raises(ReadingError, match="outside the image"):
        rd.patch_at(ctx, "SYN-0001-LCC", w + 5, 10)


def test_label_match_and_save_store_the_annotation_and_unit_labels(ctx_stats):
    ctx = ctx_stats
    view = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    assert view.canvas_size == 448 and not view.mirrored
    rec = fixture_json("polygon_448")
    drawings = lb.drawings_from_canvas(view, rec["json"], rec["fit"])
    m = lb.match(ctx, view, drawings)
    assert m.mask.shape == (64, 64) and m.mask.sum() == pytest.approx(drawings[0].area, rel=0.1)
    assert 0 <= m.best_unit < 512 and m.best_iou == pytest.approx(float(m.ious.max()))
    assert m.units_above == sorted(m.units_above, key=lambda u: -m.ious[u])
    assert lb.match(ctx, view, drawings) is m  # a rerun with the same drawing recomputes nothing
    res = lb.save(ctx, view, m, "mass", "Dr Test")
    (ann,) = ctx.store.list_annotations()
    assert (ann.annotation_id, ann.concept, ann.reader, ann.patch_x0, ann.patch_size) == (
        res.annotation_id, "mass", "Dr Test", 20, 64)
    labels = ctx.store.list_unit_labels(ctx.card_name, "layer4")
    assert {r["unit"] for r in labels} == set(m.units_above) and res.n_labeled == len(m.units_above)
    assert all(r["concept"] == "mass" for r in labels)
    np.testing.assert_array_equal(mask_from_png(ann.mask_png), m.mask)
    np.testing.assert_array_equal(drawing_to_mask(ann.shape, ann.geometry, 64), m.mask)
    with pytest.raises(UnknownConceptError):
        lb.save(ctx, view, m, "no-such-concept", "Dr Test")


def test_drawing_on_a_mirrored_patch_is_stored_in_model_space(ctx_stats):
    ctx = ctx_stats
    rec = fixture_json("rect_448")
    left = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    right = lb.load_patch(ctx, PatchRef("SYN-0001-RCC", 20, 70, 64))
    assert right.mirrored and not left.mirrored
    ml = lb.drawings_mask(lb.drawings_from_canvas(left, rec["json"], rec["fit"]), 64)[0]
    mr = lb.drawings_mask(lb.drawings_from_canvas(right, rec["json"], rec["fit"]), 64)[0]
    np.testing.assert_array_equal(mr, ml[:, ::-1])
    # and the background the reader draws on is the model-space patch mirrored
    np.testing.assert_array_equal(right.background[::7, ::7, 0],
                                  lb.display_patch(ctx, right)[:, ::-1])


def test_empty_drawing_and_missing_statistics_give_clear_messages(ctx):
    view = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    with pytest.raises(canvas.DrawingError, match="Nothing is drawn"):
        lb.drawings_from_canvas(view, {"objects": []}, None)
    rec = fixture_json("polygon_448")
    drawings = lb.drawings_from_canvas(view, rec["json"], rec["fit"])
    with pytest.raises(EngineNotReady, match="Model and data page"):
        lb.match(ctx, view, drawings)


def test_freehand_and_several_drawings_make_one_union_mask(ctx):
    loop = canvas.Drawing("freehand", ((10, 10), (30, 10), (30, 30), (10, 30)), closed=True, stroke_width=2)
    stroke = canvas.Drawing("freehand", ((40, 50), (60, 50)), closed=False, stroke_width=4)
    rect = canvas.Drawing("rect", ((0, 0), (5, 0), (5, 5), (0, 5)))
    mask, shape, geometry = lb.drawings_mask([loop, stroke, rect], 64)
    assert shape == "freehand" and len(geometry["drawings"]) == 3
    assert mask[20, 20] and mask[50, 50] and mask[2, 2] and not mask[45, 20]
    assert mask[0:5, 0:5].all() and not mask[5, 5]


def test_report_exports_round_trip_and_mirror_only_the_display(ctx_stats):
    ctx = ctx_stats
    rec = fixture_json("polygon_448")
    for image_id in ("SYN-0001-LCC", "SYN-0001-RCC"):
        view = lb.load_patch(ctx, PatchRef(image_id, 20, 70, 64))
        m = lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"]))
        lb.save(ctx, view, m, "mass", "Dr Test")
    info = rp.retrain(ctx, "Dr Test")
    assert info.version == 1 and info.n_drawings == 2 and not info.stale
    r = rp.load_report(ctx, "SYN-0001", "SYN-0001-RCC")
    assert r.probe.version == 1 and [c["concept"] for c in r.concepts] == ["mass"]
    back = report.report_from_json(r.export_json().decode())
    assert back.image_id == "SYN-0001-RCC" and back.probe_version == 1
    img, _, _ = images.model_image(ctx, ctx.store.get_image("SYN-0001-RCC"))
    np.testing.assert_allclose(back.image.astype(np.float32), img, atol=1e-3)  # JSON stays in model space
    html = r.export_html().decode()
    assert html.startswith("<!DOCTYPE html>") and "ConceptLens concept report" in html
    assert (ctx.settings.export_dir / f"{r.export_name}.html").is_file()
    # the learning-curve panel: one row per (step, concept), from the readers' drawings
    curve = rp.learning_curve(ctx)
    assert curve.rows and {r["concept"] for r in curve.rows} == {"mass"}
    assert max(r["n_drawings"] for r in curve.rows) == 2
    # a drawing undone makes the probe stale
    un.undo(ctx, ctx.store.list_annotations()[0].annotation_id, "Dr Test")
    assert rp.probe_info(ctx).stale


def test_save_retrains_and_a_new_probe_reuses_the_image_evidence(ctx_stats):
    """Save with retrain: the new probe version holds the drawing; the report of the drawn image
    then recomputes only the probe's part (the model evidence is computed once per image)."""
    ctx = ctx_stats
    rec = fixture_json("polygon_448")
    view = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    m = lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"]))
    res = lb.save(ctx, view, m, "mass", "Dr Test", retrain=True)
    assert res.retrain_error is None and res.probe_version == 1 and res.probe_drawings == 1
    assert ctx.store.list_probes(model_card=ctx.card_name)[0]["annotation_ids"] == [res.annotation_id]
    # the Label page's run after Save starts preparing the Report of the drawn image, once per version
    thread = parts.prefetch_report(ctx, "SYN-0001-LCC")
    assert thread is not None and thread.name == "report-SYN-0001-LCC-v1"
    thread.join()
    assert parts.prefetch_report(ctx, "SYN-0001-LCC") is None and not lb.prepare_report(ctx, "SYN-0001-LCC")
    c = ctx.caches
    misses = (c.panels.misses, c.reports.misses, c.figures.misses, c.bar_panels.misses)
    first = rp.load_report(ctx, "SYN-0001", "SYN-0001-LCC")
    assert (c.panels.misses, c.reports.misses, c.figures.misses, c.bar_panels.misses) == misses
    assert len(first.figures) == 1 and first.figure_names[0] == "shares"  # the bar charts, one figure
    assert parts.MAP_FIGURES[0] not in first.figure_names and "tcav" in first.figure_names
    map_misses = c.map_figures.misses  # the image-like figures: built when the reader asks
    maps = first.map_figures()
    assert [f.layout.title.text.split()[0] for f in maps] == ["Concept", "Attribution"]
    assert c.map_figures.misses == map_misses + 1 and first.map_figures()[0] is maps[0]
    assert first.probe.version == 1 and not first.probe.stale
    assert any("TCAV is not computed for probe v1" in n for n in first.notes)
    evidence_misses = c.evidence.misses
    again = rp.load_report(ctx, "SYN-0001", "SYN-0001-LCC")  # a rerun: nothing new
    assert again.figures[0] is first.figures[0] and again.encoded["overlay"] is first.encoded["overlay"]
    # a second drawing, saved with retrain: a new probe version, the same evidence
    d = canvas.Drawing("rect", ((2, 2), (20, 2), (20, 20), (2, 20)))
    view2 = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 100, 40, 64))
    res2 = lb.save(ctx, view2, lb.match(ctx, view2, [d]), "mass", "Dr Test", retrain=True)
    assert lb.prepare_report(ctx, "SYN-0001-LCC")  # the new version's report
    for t in threading.enumerate():  # (done already, or not yet)
        if t.name == "report-SYN-0001-LCC-v2":
            t.join()
    assert res2.probe_version == 2 and res2.probe_drawings == 2
    second = rp.load_report(ctx, "SYN-0001", "SYN-0001-LCC")
    assert second.probe.version == 2 and second.export_name.endswith("probe2")
    assert c.evidence.misses == evidence_misses  # no network pass for the new version
    # the new version's maps, from the reused evidence, are what a cold start computes under probe v2
    # (and not probe v1's: the second drawing moved the probe)
    cold = rp.load_report(dataclasses.replace(ctx, caches=Caches()), "SYN-0001", "SYN-0001-LCC")
    assert cold.probe.version == 2 and [n for n, _ in cold.concept_maps] == [n for n, _ in second.concept_maps]
    for (_, got), (_, want) in zip(second.concept_maps, cold.concept_maps):
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(second.overlay, cold.overlay)
    assert second.legend == cold.legend
    assert not np.allclose(dict(second.concept_maps)["mass"], dict(first.concept_maps)["mass"], atol=1e-4)


def test_save_without_retrain_leaves_the_probe_stale(ctx_stats):
    ctx = ctx_stats
    rec = fixture_json("polygon_448")
    view = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    m = lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"]))
    lb.save(ctx, view, m, "mass", "Dr Test", retrain=True)
    d = canvas.Drawing("rect", ((2, 2), (20, 2), (20, 20), (2, 20)))
    res = lb.save(ctx, view, lb.match(ctx, view, [d]), "mass", "Dr Test")
    assert res.probe_version is None
    assert rp.probe_info(ctx).stale


def test_prefetched_evidence_is_what_the_report_uses(ctx_stats):
    ctx = ctx_stats
    assert lb.prepare_report(ctx, "SYN-0001-RCC") is True
    row = ctx.store.get_image("SYN-0001-RCC")
    ev = image_evidence(ctx, row)  # waits for the background thread instead of computing again
    assert image_evidence(ctx, row) is ev
    assert ctx.caches.evidence.misses == 1  # computed once, by the thread
    assert lb.prepare_report(ctx, "SYN-0001-RCC") is False  # already there: no second thread
    deadline = time.monotonic() + 60
    while ctx.caches.evidence_head_start and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ev.n_tiles >= 1 and ev.feats[cx.layer_of(ctx)].shape[0] == 512


def test_statistics_of_an_older_rule_are_not_used(ctx_stats, monkeypatch):
    stats = cx.find_stats(ctx_stats)
    assert stats is not None and stats.version == dissection.STATS_VERSION
    monkeypatch.setattr(dissection, "STATS_VERSION", "dissect-next")  # as after a rule change
    assert cx.find_stats(ctx_stats) is None
    with pytest.raises(EngineNotReady, match="No dataset statistics"):
        cx.require_stats(ctx_stats)


def test_opening_a_patch_prepares_its_unit_masks_for_every_drawing(ctx_stats):
    ctx = ctx_stats
    ref = PatchRef("SYN-0001-LCC", 24, 60, 64)
    stats = cx.require_stats(ctx)
    assert not cx.has_unit_masks(ctx, ref, stats)
    assert lb.prepare_patch(ctx, ref) is True
    prepared = cx.patch_unit_masks(ctx, ref, stats)  # waits for the thread instead of computing again
    assert cx.has_unit_masks(ctx, ref, stats) and cx.patch_unit_masks(ctx, ref, stats) is prepared
    assert lb.prepare_patch(ctx, ref) is False  # already there: no second thread
    view = lb.load_patch(ctx, ref)
    rec = fixture_json("polygon_448")
    m = lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"]))
    np.testing.assert_array_equal(m.ious, compute_unit_ious(cx.patch_activation(ctx, ref), stats.thresholds, m.mask))


def test_unit_exemplars_are_built_once_per_unit(ctx_stats):
    ctx = ctx_stats
    stats = cx.require_stats(ctx)
    a = un.unit_exemplars(ctx, stats, 3)
    misses = ctx.caches.exemplars.misses
    assert un.load_units(ctx, 3).detail.exemplars is a
    assert ctx.caches.exemplars.misses == misses
    assert a and all(rgb.ndim == 3 and rgb.shape[2] == 3 for rgb, _ in a)
    assert un.unit_exemplars(ctx, stats, 4) is not a


def test_head_start_runs_once_per_key_and_swallows_errors():
    hs = HeadStart()
    gate, ran = threading.Event(), []
    assert hs.start("k", lambda: (gate.wait(5), ran.append(1))) is not None
    assert hs.start("k", lambda: ran.append(2)) is None           # already running
    assert hs.start("j", lambda: ran.append(3), done=lambda: True) is None  # already done
    assert len(hs) == 1
    gate.set()
    for _ in range(200):
        if not hs:
            break
        threading.Event().wait(0.01)
    assert not hs and ran == [1]
    assert hs.start("e", lambda: 1 / 0) is not None  # an error ends the thread quietly and frees the key
    for _ in range(200):
        if not hs:
            break
        threading.Event().wait(0.01)
    assert not hs
    once = HeadStart(once=True)
    once.start("v1", lambda: None).join()
    assert once.start("v1", lambda: None) is None  # finished once: never again
    once.start("bad", lambda: 1 / 0).join()
    assert once.start("bad", lambda: None) is not None  # a failed one may be tried again


def test_sessions_sharing_the_caches_compute_an_image_once(ctx):
    """Two sessions (two contexts on one ``Caches``, as ``resources.get_context`` builds them) asking
    for the same lesion map at once: one computes it, the other waits and gets the same object."""
    shared = Caches()
    a = build_context(ctx.settings, ctx.store, load_model(app_data.TINY_CARD, ctx.settings.user_cards_dir, "cpu"),
                      caches=shared)
    b = build_context(ctx.settings, ctx.store, load_model(app_data.TINY_CARD, ctx.settings.user_cards_dir, "cpu"),
                      caches=shared)
    start, out = threading.Barrier(2), {}

    def ask(name, c):
        start.wait()
        out[name] = images.lesion_map_for(c, "SYN-0001-LCC")

    threads = [threading.Thread(target=ask, args=(n, c)) for n, c in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out["a"] is out["b"] and shared.lesion_maps.misses == 1
    assert ctx.caches.lesion_maps.misses == 0  # another context's own caches were not touched

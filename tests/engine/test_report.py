"""Concept report: exact logit parts, shares, unit view, JSON round trip, figures, offline HTML in chromium."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dashboard.data.store import DrawingRecord
from dashboard.engine.activations import compute_activations
from dashboard.engine.attribution import AttributionConfig, attribute
from dashboard.engine.dissection import label_units_from_drawing
from dashboard.engine.probes import ProbeConfig, train_probes
from dashboard.engine.report import (
    ReportInputs,
    build_image_report,
    build_report,
    export_html,
    logit_decomposition,
    report_figures,
    report_from_json,
    report_to_json,
)
from dashboard.engine.tcav import TCAVConfig, run_tcav
from dashboard.testing.engine_helpers import TinyCard, tiny_model
from dashboard.testing.probe_scene import S
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
def env(tmp_path_factory, model, card):
    """One store with drawings, a probe and unit labels, shared by the module's tests (read-only use)."""
    from dashboard.data.store import Store

    tmp = tmp_path_factory.mktemp("report")
    store = Store(tmp / "db.duckdb", tmp / "journal")
    patches = _populate(store, n_images=4, vessel_drawings=0)
    probe = train_probes(store, model, card, "blocks.5", load_patch=_loader(patches),
                         config=ProbeConfig(cache_dir=tmp, folds=2))
    rng = np.random.default_rng(0)
    for concept in ("mass-round", "fat", "mass-round"):  # unit labels at the head's layer (bn2)
        label_units_from_drawing(store,
                                 DrawingRecord(image_id="im0", concept=concept, reader="r", patch_x0=0, patch_y0=0,
                                               patch_size=S, shape="rect", geometry=[10, 10, 60, 60],
                                               model_card=card.name), layer="bn2", ious=rng.uniform(0, 0.5, 1280))
    yield store, patches, probe, tmp
    store.close()


@pytest.fixture
def setup(env):
    return env[1], env[2]


@pytest.fixture
def store(env):
    return env[0]


def _truth(model, card, patch):
    x = card.preprocess(patch[None])
    acts, out = compute_activations(model, ["blocks.5", "bn2"], x, with_output=True)
    return acts, out[0]


def test_patch_report_exact_logit_and_shares(setup, store, model, card, tmp_path):
    patches, probe = setup
    patch = _scene(7)[0]
    att = np.random.default_rng(1).random((S, S)).astype(np.float32)
    rep = build_report(model, card, patch, probe,
                       inputs=ReportInputs(attribution_map=att, store=store, image_id="im0", patch_xy=(0, 0)))
    acts, logits = _truth(model, card, patch)
    t = card.classes.index("malignant")
    assert rep.target == t and rep.logit == pytest.approx(float(logits[t]), abs=1e-6)
    assert rep.probability == pytest.approx(float(torch.softmax(logits.double(), 0)[t]), abs=1e-6)
    parts = sum(c.logit_part for c in rep.concepts if c.logit_part is not None)
    assert rep.logit_exact
    assert abs(rep.logit_bias + parts + rep.logit_unlabeled - float(logits[t])) < 1e-5
    # the labeled units carry a real share of the logit, grouped as in the store
    labels = store.list_unit_labels(card.name, "bn2")
    for c in rep.concepts:
        expect = sorted(r["unit"] for r in labels if r["concept"] == c.concept)
        assert c.units == expect
        if expect:
            w = model.classifier.weight[t].detach().double()
            a = acts["bn2"][0].double().mean(dim=(1, 2))
            assert c.logit_part == pytest.approx(float((w[expect] * a[expect]).sum()), abs=1e-9)
            np.testing.assert_allclose(c.unit_activations, a[expect].numpy(), rtol=1e-6)
            ious = {r["unit"]: r["iou"] for r in labels}
            assert c.unit_ious == [ious[u] for u in expect]
    # shares + unexplained = 1, and match the definition
    shares = [c.attribution_share for c in rep.concepts if c.attribution_share is not None]
    assert sum(shares) + rep.unexplained_share == pytest.approx(1.0, abs=1e-9)
    from dashboard.engine.probes import compute_concept_maps

    p = compute_concept_maps(probe, acts["blocks.5"][0], S, include_background=True).astype(np.float64)
    p /= p.sum(0, keepdims=True)
    k = probe.concepts.index("mass-round")
    assert rep.concept("mass-round").attribution_share == pytest.approx((p[k + 1] * att).sum() / att.sum(), rel=1e-6)
    e = rep.concept("mass-round")
    assert e.area_mm2 == pytest.approx(float((p[k + 1] >= 0.5).sum()) * 0.2 * 0.2, rel=0.02)
    assert e.peak_probability == pytest.approx(float(p[k + 1].max()), abs=1e-3)
    assert e.probe_auroc == probe.metrics["mass-round"]["auroc"] and e.n_drawings == 4


def test_cached_activations_give_the_same_report(setup, store, model, card):
    _, probe = setup
    patch = _scene(8)[0]
    att = np.ones((S, S), np.float32)
    acts, logits = _truth(model, card, patch)
    cached = build_report(model, card, patch, probe,
                          inputs=ReportInputs(attribution_map=att, store=store,
                                              activations={k: v[0] for k, v in acts.items()}, logits=logits))
    fresh = build_report(model, card, patch, probe, inputs=ReportInputs(attribution_map=att, store=store))
    assert cached.logit == fresh.logit and cached.unexplained_share == pytest.approx(fresh.unexplained_share)
    for a, b in zip(cached.concepts, fresh.concepts):
        assert a.logit_part == pytest.approx(b.logit_part) and a.area_mm2 == b.area_mm2


def test_logit_decomposition_groups():
    torch.manual_seed(0)
    model = tiny_model("resnet10t", seed=3)
    x = torch.randn(1, 3, 64, 64)
    acts, out = compute_activations(model, ["layer4"], x, with_output=True)
    parts, bias, rest, total = logit_decomposition(model, acts["layer4"][0], 0, {"a": np.arange(10), "b": np.array([11, 40])})
    assert total == pytest.approx(float(out[0, 0]), abs=1e-5)
    assert bias + parts["a"] + parts["b"] + rest == pytest.approx(total, abs=1e-9)


def test_json_round_trip_and_figures(setup, store, model, card, tmp_path):
    patches, probe = setup
    inputs = np.stack([_scene(50 + i)[0][32:96, 32:96] for i in range(4)])
    tc = run_tcav(store, model, card, probe, inputs, load_patch=_loader(patches),
                  config=TCAVConfig(n_runs=3, cache_dir=tmp_path))
    rep = build_report(model, card, _scene(9)[0], probe,
                       inputs=ReportInputs(attribution_map=np.ones((S, S), np.float32), store=store, tcav=tc,
                                           image_id="im0", patch_xy=(5, 6)))
    assert rep.concept("fat").tcav_score == tc.concepts["fat"].score
    back = report_from_json(report_to_json(rep))
    assert back.patch == (5, 6, S) and back.concepts[0].units == rep.concepts[0].units
    np.testing.assert_array_equal(back.image, rep.image)
    np.testing.assert_array_equal(back.attribution_map, rep.attribution_map)
    for a, b in zip(back.concepts, rep.concepts):
        if a.probe_map is not None:
            np.testing.assert_array_equal(a.probe_map, b.probe_map)
        assert (a.concept, a.logit_part, a.tcav_p_value, a.unit_ious) == (b.concept, b.logit_part, b.tcav_p_value, b.unit_ious)
    assert report_to_json(back) == report_to_json(rep)
    figs = report_figures(rep)
    assert {"shares", "units", "activation", "tcav", "maps", "attribution", "logit"} <= set(figs)
    bars = figs["shares"].data[0]
    assert list(bars.x)[-1] == "unexplained" and sum(bars.y) == pytest.approx(1.0)
    assert len(figs["tcav"].data[0].x) == 2
    with pytest.raises(ValueError):
        report_from_json('{"hello": 1}')
    # the Report page draws the bar charts as one figure: every chart's traces, hover and title kept
    from dashboard.ui.work.report_parts import MAP_FIGURES, bar_panel

    bars_only = [(n, f) for n, f in figs.items() if n not in MAP_FIGURES]
    panel = bar_panel(bars_only)
    assert len(panel.data) == sum(len(f.data) for _, f in bars_only)
    assert [a.text for a in panel.layout.annotations][:len(bars_only)] == [f.layout.title.text for _, f in bars_only]
    assert [t.hovertemplate for t in panel.data] == [t.hovertemplate for _, f in bars_only for t in f.data]
    axes = {t.yaxis for t in panel.data}
    assert len(axes) == len(bars_only)  # one cell each
    tcav_cell = panel.data[[n for n, f in bars_only for _ in f.data].index("tcav")].yaxis
    assert any(s.y0 == 0.5 and s.yref == tcav_cell for s in panel.layout.shapes)  # the chance line, in its cell
    assert panel.layout.height == 340 * ((len(bars_only) + 1) // 2)
    assert bar_panel([]) is None


def test_whole_image_report(setup, store, model, card):
    _, probe = setup
    img = np.full((192, 256), 0.4, np.float32)
    img[:S, 100:100 + S] = _scene(3)[0]
    tiles = [(0, 0), (100, 0), (128, 64)]
    rep = build_image_report(model, card, img, probe,
                             inputs=ReportInputs(tiles=tiles, attribution_map=np.ones(img.shape, np.float32),
                                                 store=store, image_id="im0"))
    from dashboard.engine.inference import predict_patches
    from dashboard.imaging import crop_patch

    probs = predict_patches(model, card, np.stack([crop_patch(img, x, y, S) for x, y in tiles]))[:, 1]
    assert rep.kind == "image" and rep.probability == pytest.approx(float(probs.max()), abs=1e-5)
    assert rep.patch == (*tiles[int(probs.argmax())], S)
    assert rep.concepts[0].probe_map.shape == (192, 256) and rep.logit_exact
    shares = [c.attribution_share for c in rep.concepts if c.attribution_share is not None]
    assert sum(shares) + rep.unexplained_share == pytest.approx(1.0, abs=1e-9)
    # the caller's own probe maps (the Report page has them for its concept maps) give the same report
    from dashboard.engine.probes import compute_concept_maps
    from dashboard.engine.report import compute_image_evidence

    ev = compute_image_evidence(model, card, img, layers=[probe.layer],
                                inputs=ReportInputs(tiles=tiles, attribution_map=np.ones(img.shape, np.float32)))
    probs_all = compute_concept_maps(probe, ev.feats[probe.layer], img.shape, include_background=True)
    again = build_image_report(model, card, img, probe,
                               inputs=ReportInputs(store=store, image_id="im0", evidence=ev, probs_all=probs_all))
    for a, b in zip(again.concepts, rep.concepts):
        assert (a.concept, a.attribution_share, a.area_mm2, a.logit_part) == (
            b.concept, b.attribution_share, b.area_mm2, b.logit_part)
        np.testing.assert_array_equal(a.probe_map, b.probe_map)
    with pytest.raises(ValueError, match="not \\(K\\+1, H, W\\)"):
        build_image_report(model, card, img, probe,
                           inputs=ReportInputs(store=store, evidence=ev, probs_all=probs_all[1:]))


def test_default_attribution_is_wired(setup, store, model, card):
    _, probe = setup
    rep = build_report(model, card, _scene(4)[0], probe,
                       inputs=ReportInputs(store=store))  # Grad-CAM from dashboard.engine.attribution
    assert rep.attribution_map.shape == (S, S) and rep.attribution_method == "gradcam"
    # it is the card's target class's Grad-CAM, and the concept shares are those of that map
    cam = attribute(model, card, _scene(4)[0], AttributionConfig(method="gradcam", target=rep.target)).map
    assert cam.std() > 0.01
    np.testing.assert_array_equal(rep.attribution_map, cam)
    given = build_report(model, card, _scene(4)[0], probe, inputs=ReportInputs(store=store, attribution_map=cam))
    assert [(c.concept, c.attribution_share) for c in rep.concepts] == [
        (c.concept, c.attribution_share) for c in given.concepts]
    assert any(c.attribution_share for c in rep.concepts)


@pytest.mark.e2e
def test_html_export_opens_offline_in_chromium(setup, store, model, card, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    import os

    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no /usr/bin/chromium")
    _, probe = setup
    rep = build_report(model, card, _scene(5)[0], probe,
                       inputs=ReportInputs(attribution_map=np.ones((S, S), np.float32), store=store))
    path = export_html(rep, tmp_path / "report.html")
    text = path.read_text()
    # plotly.js is inlined (its bundle mentions a CDN only as the default for geo topojson)
    assert "<script src=" not in text and "<link " not in text and "Plotly.newPlot" in text
    n_figs = len(report_figures(rep))
    requests, errors, counts = [], [], {}

    def drive():
        # a worker thread: Playwright's sync API refuses a thread whose asyncio loop an earlier
        # test (Streamlit's AppTest) left running
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--headless"])
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_selector(".plot-container", timeout=60_000)
            page.wait_for_function(f"document.querySelectorAll('.plot-container').length >= {n_figs}",
                                   timeout=60_000)
            counts["plots"] = page.locator(".plot-container").count()
            counts["svgs"] = page.locator(".main-svg").count()
            counts["imgs"] = page.locator("img[src^='data:image/png']").count()
            browser.close()

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(drive).result(timeout=300)
    assert counts["plots"] == n_figs
    assert counts["svgs"] >= n_figs
    assert counts["imgs"] == 2
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), requests

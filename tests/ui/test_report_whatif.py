"""The Report's What if panel (remove or dial down a concept, both interventions side by side) and its
probe-version selector and comparison, through the screen functions and through AppTest."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.data.store import Store
from dashboard.settings import PROJECT_ROOT
from dashboard.testing import app_data
from dashboard.ui import canvas, resources, state
from dashboard.ui import context as context_mod
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import report as rp
from dashboard.ui.screens import worklist as wl
from dashboard.ui.types import PatchRef, ReportError
from dashboard.ui.work import concepts as cx
from dashboard.ui.work import probe_versions

APP = str(PROJECT_ROOT / "app.py")
TIMEOUT = 180


def app_ctx(settings):
    return context_mod.build_context(settings, resources.get_store(settings),
                                     context_mod.load_model(settings.model_card, settings.user_cards_dir, "cpu"),
                                     resources.get_caches())


@pytest.fixture
def two_versions(settings, monkeypatch):
    """Three cases, the tiny real model, drawings of 'mass' and 'fat', probe v1 (mass only) and v2 (both)."""
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    store.close()
    app_data.make_tiny_card(settings)
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", app_data.TINY_CARD)
    settings = settings.with_overrides(model_card=app_data.TINY_CARD)
    ctx = app_ctx(settings)
    cx.compute_stats(ctx, 96)
    wl.score_unscored(ctx)

    def draw(image_id, concept, box):
        view = lb.load_patch(ctx, PatchRef(image_id, 30, 80, 64))
        (x0, y0), (x1, y1) = box
        d = canvas.Drawing("rect", ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))
        lb.save(ctx, view, lb.match(ctx, view, [d]), concept, "Dr Test")

    for image_id in ("SYN-0001-LCC", "SYN-0001-RCC", "SYN-0002-LCC"):
        draw(image_id, "mass", ((2, 2), (24, 24)))
    probe_versions.retrain(ctx, "Dr Test")
    for image_id in ("SYN-0001-LCC", "SYN-0002-LCC"):
        draw(image_id, "fat", ((36, 36), (60, 60)))
    probe_versions.retrain(ctx, "Dr Test")
    return settings, ctx


def test_whatif_and_version_comparison_through_the_screen(two_versions):
    _, ctx = two_versions
    view = rp.load_report(ctx, "SYN-0001", "SYN-0001-LCC")
    assert view.versions == [2, 1] and view.probe.version == 2
    assert sorted(view.whatif_concepts) == ["fat", "mass"]
    top = view.whatif_concepts[0]
    panel = rp.whatif(ctx, view, top, 100)
    assert set(panel.results) == {"activation", "image"}
    for kind, r in panel.results.items():
        # the patch is the report's: its probability before is the report's probability
        assert r.p_before == pytest.approx(view.probability, abs=1e-4), kind
        assert panel.sentences[kind] == f"without {top}: P(lesion) {r.p_before:.2f} → {r.p_after:.2f}"
    # the tiny random model barely reads its probe's direction, but it does read it
    assert panel.results["activation"].p_after != panel.results["activation"].p_before
    assert panel.results["image"].method in panel.how["image"]
    again = rp.whatif(ctx, view, top, 100)
    assert all(again.results[k] is panel.results[k] for k in again.results)  # cached
    none = rp.whatif(ctx, view, top, 0)
    assert none.results["activation"].p_after == pytest.approx(none.results["activation"].p_before, abs=1e-9)
    with pytest.raises(ReportError):
        rp.whatif(ctx, view, "no-such-concept", 100)
    maps = rp.whatif_maps(ctx, view, top, 100)
    assert set(maps) == {"before", "activation", "image"}
    assert maps["before"][0][:2] == b"\xff\xd8"  # JPEG
    assert maps["activation"][1] != maps["before"][1]
    # an older version, and the two compared
    old = rp.load_report(ctx, "SYN-0001", "SYN-0001-LCC", version=1)
    assert old.probe.version == 1 and old.whatif_concepts == ["mass"]
    diff = rp.compare_versions(ctx, view, 1)
    rows = {r["concept"]: r for r in diff.rows}
    assert set(rows) == {"mass", "fat", "unexplained"}
    assert rows["fat"]["share v1"] == 0.0  # v1 has no fat
    for r in diff.rows:
        assert r["difference"] == pytest.approx(r["share v2"] - r["share v1"], abs=2e-4)
    mass_v1 = next(c.attribution_share for c in rp.probe_parts(ctx, old.probe, ctx.store.get_image("SYN-0001-LCC"))
                   .report.concepts if c.concept == "mass")
    assert rows["mass"]["share v1"] == pytest.approx(mass_v1, abs=1e-4)
    assert set(diff.overlays) == {1, 2} and diff.overlays[1] != diff.overlays[2]
    assert list(diff.figure.data[0].x) == [r["concept"] for r in diff.rows]
    with pytest.raises(ReportError):
        rp.compare_versions(ctx, view, 7)
    # a version that is not stored: the latest
    assert rp.load_report(ctx, "SYN-0001", "SYN-0001-LCC", version=9).probe.version == 2


def _sentences(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("### ")]


def test_the_report_page_removes_a_concept_and_compares_versions(two_versions):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.CASE_ID] = "SYN-0001"
    at.run()
    at.switch_page("pages/report.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    charts_closed = len(at.get("plotly_chart"))
    assert not _sentences(at)  # closed: nothing computed
    at.session_state[state.WHATIF_OPEN] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    full = _sentences(at)
    assert len(full) == 2 and all(s.startswith("### without ") and "P(lesion)" in s for s in full)
    concept = at.selectbox(key=state.WHATIF_CONCEPT).value
    assert concept in full[0]
    assert len(at.get("plotly_chart")) == charts_closed + 1  # the shares before and after
    at.slider(key=state.WHATIF_STRENGTH).set_value(0).run()
    assert not at.exception, [e.value for e in at.exception]
    zero = _sentences(at)
    assert all(f"with 0% less {concept}" in s for s in zero)
    before, after = zero[0].split("P(lesion) ")[1].split(" → ")
    assert before == after  # nothing removed, nothing changed
    assert zero[0] != full[0]
    # the probe version selector and the comparison
    assert at.selectbox(key=state.REPORT_VERSION).options == ["latest (v2)", "v2", "v1"]
    at.selectbox(key=state.REPORT_COMPARE).set_value(1).run()
    assert not at.exception, [e.value for e in at.exception]
    titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]
    assert "Concept shares: v2 minus v1" in titles
    at.selectbox(key=state.REPORT_VERSION).set_value(1).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Concept probe v1" in m.value for m in at.markdown)

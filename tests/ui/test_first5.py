"""The first five minutes (issue 17): the background warm-up and the pages' waiting state, the
demo's seeded 'demo truth' drawings and probe v1 (removable, never in a study), click to open a
patch on Read, and the Report's lead sentences."""
from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.data import demo
from dashboard.data.store import Store
from dashboard.settings import PROJECT_ROOT
from dashboard.testing import app_data
from dashboard.ui import context as context_mod
from dashboard.ui import resources, state, warmup
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import read as rd
from dashboard.ui.types import PatchRef
from dashboard.ui.work import concepts as cx
from dashboard.ui.work.report_lead import find_nipple, lead_of, locate

APP = str(PROJECT_ROOT / "app.py")
TIMEOUT = 180


# ---------------------------------------------------------------- the lead's geometry and words
def half_ellipse(h: int = 200, w: int = 120) -> np.ndarray:
    """A breast in model space: chest wall at x = 0, nipple at (w - 1, h / 2)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx / (w - 1)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) <= 1.0


def blob(shape, cx: float, cy: float, r: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2)).astype(np.float32)


def test_the_nipple_is_the_breast_point_farthest_from_the_chest_wall():
    x, y = find_nipple(half_ellipse())
    assert x == 119 and y == pytest.approx(100, abs=2)


@pytest.mark.parametrize(("view", "cy", "half"), [("MLO", 40, "upper"), ("MLO", 160, "lower"),
                                                  ("CC", 40, "outer"), ("CC", 160, "inner"), ("MLO", 101, "central")])
def test_locate_names_the_half_from_the_view(view, cy, half):
    breast = half_ellipse()
    where = locate(blob(breast.shape, 60, cy), breast, view, spacing_mm=0.5)
    assert where.half == half


def test_locate_gives_the_depth_third_and_the_distance_from_the_nipple_in_cm():
    breast = half_ellipse()
    near = locate(blob(breast.shape, 110, 100), breast, "MLO", spacing_mm=0.5)
    deep = locate(blob(breast.shape, 10, 100), breast, "MLO", spacing_mm=0.5)
    assert (near.depth, deep.depth) == ("anterior", "posterior")
    assert deep.nipple_cm == pytest.approx(109 * 0.5 / 10, abs=0.1)   # 109 px at 0.5 mm
    assert "cm from the nipple" in deep.phrase()


def concept(name, share, prob_map, *, auroc=0.93, sig=True, p=0.004, n=8, area=40.0):
    return SimpleNamespace(concept=name, attribution_share=share, probe_map=prob_map, area_mm2=area,
                           peak_probability=float(prob_map.max()), probe_auroc=auroc, tcav_significant=sig,
                           tcav_p_value=p, n_drawings=n, n_images=n)


def test_the_lead_says_what_which_where_and_how_sure():
    breast = half_ellipse()
    mass = concept("mass", 0.6, blob(breast.shape, 60, 40))
    calc = concept("calcification", 0.2, blob(breast.shape, 100, 160), auroc=float("nan"), sig=None, n=2)
    vessel = concept("vessel", 0.0, blob(breast.shape, 30, 100))
    rep = SimpleNamespace(probability=0.81, target_name="lesion", unexplained_share=0.2, concepts=[vessel, calc, mass])
    lead = lead_of(rep, {"laterality": "L", "view": "MLO"}, breast, 0.5, 0.5, readers=["demo truth"],
                   demo_reader="demo truth")
    assert lead.headline == "The model gives this left MLO image P(lesion) = 0.81, above its operating point of 0.50."
    assert lead.sentences[0].startswith("Most of the evidence comes from **mass** (60 %) and **calcification** (20 %)")
    assert "20 % is not explained" in lead.sentences[0]
    assert "vessel" not in " ".join(lead.sentences)  # no share: not named
    assert lead.sentences[1].startswith("**mass**: in the upper half")
    assert "AUROC 0.93" in lead.sentences[1] and "TCAV says the model uses it (p = 0.004)" in lead.sentences[1]
    assert "in the lower half, anterior third" in lead.sentences[2]
    assert "not validated yet" in lead.sentences[2] and "TCAV not run" in lead.sentences[2]
    assert "2 drawings on 2 images: draw more" in lead.sentences[2]
    assert "demo's seeded drawings" in lead.cautions[0]


# ---------------------------------------------------------------- click to open a patch
@pytest.fixture
def tiny(settings, monkeypatch):
    """The page tests' small store with the tiny real model (CONCEPTLENS_MODEL_CARD)."""
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    store.close()
    app_data.make_tiny_card(settings)
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", app_data.TINY_CARD)
    return settings.with_overrides(model_card=app_data.TINY_CARD)


def app_ctx(settings):
    return context_mod.build_context(settings, resources.get_store(settings),
                                     context_mod.load_model(settings.model_card, settings.user_cards_dir, "cpu"),
                                     resources.get_caches())


def test_a_click_opens_the_patch_centred_there_in_display_pixels(tiny):
    ctx = app_ctx(tiny)
    # SYN-0001-RCC is a right breast: shown mirrored. A click at shown (50, 80) on an image shown at
    # half its size is display point (100, 160), model x = w - 100
    _, _, frame = rd.model_image(ctx, ctx.store.get_image("SYN-0001-RCC"))
    h, w = frame.model_shape
    ref = rd.patch_from_click(ctx, "SYN-0001-RCC", {"x": 50, "y": 80, "width": w / 2, "height": h / 2,
                                                    "unix_time": 5})
    size = ctx.card.patch_size
    assert (ref.x0, ref.y0, ref.size) == (round(w - 100 - size / 2), round(160 - size / 2), size)


def test_only_a_new_click_is_taken_and_the_newest_wins():
    session = {"read.img.a": {"x": 1, "y": 2, "width": 10, "height": 10, "unix_time": 10.0},
               "read.img.b": {"x": 3, "y": 4, "width": 10, "height": 10, "unix_time": 12.0},
               "read.case": "x", "other": {"unix_time": 99}}
    assert rd.new_click(session, None)[0] == "b"
    assert rd.new_click(session, 12.0) is None
    session["read.img.a"]["unix_time"] = 13.0
    assert rd.new_click(session, 12.0) == ("a", session["read.img.a"])


def test_clicking_an_image_on_the_read_page_opens_the_label_page(tiny):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.CASE_ID] = "SYN-0001"
    at.run()
    at.switch_page("pages/read.py")
    at.run()
    assert not at.exception
    # what the image component reports on a click arrives in the session before the next run
    at.session_state["read.img.SYN-0001-LCC"] = {"x": 40, "y": 60, "width": 200, "height": 256, "unix_time": 1.0}
    at.run()
    assert not at.exception
    assert at.session_state[state.PATCH][0] == "SYN-0001-LCC"
    assert at.session_state[state.READ_SEEN_CLICK] == 1.0
    assert at.title[0].value == "Label concepts"


# ---------------------------------------------------------------- the warm-up's waiting state
def test_the_worklist_says_what_it_waits_for_then_updates(tiny, monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_WARMUP", "1")
    settings = tiny.with_overrides(warmup=True)
    warm = resources._warmup(str(settings.db_path), str(settings.data_dir), settings.model_card)
    warm.thread = threading.current_thread()  # held: this test plays the warm-up thread
    warm.set("statistics", state="done")
    warm.set("scores", state="running", done=2, total=7, message="Scoring SYN-0001 L CC (3/7)")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "Getting ready in the background" in text
    bars = list(at.get("progress"))
    assert any("P(lesion) of every image" in b.proto.text and "2/7" in b.proto.text for b in bars)
    assert at.button(key="worklist.score").disabled  # no second scoring while the warm-up scores
    # the warm-up scores the cases, then the page shows them without the notice
    app_data.score(resources.get_store(settings), settings.model_card, app_ctx(settings).weights_sha,
                   dict.fromkeys(("SYN-0001-LCC", "SYN-0001-RCC"), 0.5))
    warm.set("scores", state="done", done=7, total=7)
    at.run()
    text = " ".join(m.value for m in at.markdown)
    assert "Getting ready in the background" not in text
    assert at.dataframe[0].value.set_index("case_id").loc["SYN-0001", "scored"] == "2/4"


def test_the_label_page_knows_while_the_statistics_are_still_coming(tiny, monkeypatch):
    # the Label page then asks the reader to press "Match again" instead of sending them to compute them
    monkeypatch.setenv("CONCEPTLENS_WARMUP", "1")
    settings = tiny.with_overrides(warmup=True)
    warm = resources._warmup(str(settings.db_path), str(settings.data_dir), settings.model_card)
    warm.thread = threading.current_thread()  # held: this test plays the warm-up thread
    warm.set("statistics", state="running", done=1, total=4)
    assert resources.warming_up("statistics", settings.model_card)
    assert not resources.warming_up("statistics", "another-card")  # the warm-up prepares the default card only
    warm.set("statistics", state="done", done=4, total=4)
    assert not resources.warming_up("statistics", settings.model_card)


def test_a_failed_warm_up_step_says_why(tiny, monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_WARMUP", "1")
    warm = resources._warmup(str(tiny.db_path), str(tiny.data_dir), tiny.model_card)
    warm.thread = threading.current_thread()
    warm.set("statistics", state="failed", message="no readable images")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/label.py")
    at.run()
    assert any("dataset statistics" in w.value and "no readable images" in w.value for w in at.warning)


def test_warm_up_off_skips_every_step(tiny):
    warm = warmup.WarmUp()
    warm.disable("off")
    assert all(s.state == "skipped" for s in warm.snapshot().values())
    assert warm.ready("scores")


# ---------------------------------------------------------------- the demo opens full
@pytest.fixture
def demo_tiny(settings, monkeypatch):
    """Three real demo cases (phantom truth masks) and the tiny model."""
    with Store(settings.db_path, settings.journal_dir, data_dir=settings.data_dir) as store:
        demo.build_demo(settings, store, n_cases=3, workers=1, contact_sheet=False)
    app_data.make_tiny_card(settings)
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", app_data.TINY_CARD)
    return settings.with_overrides(model_card=app_data.TINY_CARD)


def test_the_warm_up_seeds_demo_truth_and_probe_v1_and_the_report_leads_with_it(demo_tiny, monkeypatch):
    ctx = app_ctx(demo_tiny)
    monkeypatch.setattr(cx, "MAX_PATCHES", 120)
    warm = warmup.run_warmup(ctx, warmup.WarmUp(("statistics", "demo drawings")))
    snap = warm.snapshot()
    assert snap["statistics"].state == "done", snap["statistics"]
    assert snap["demo drawings"].state == "done", snap["demo drawings"]
    seeded = [a for a in ctx.store.list_annotations() if a.reader == demo.DEMO_READER]
    assert seeded and {a.concept for a in seeded} <= set(warmup.DEMO_CONCEPTS)
    probes = ctx.store.list_probes(model_card=ctx.card_name)
    assert [p["version"] for p in probes] == [1] and probes[0]["readers"] == [demo.DEMO_READER]
    # seeded once: a second warm-up leaves the store as it is
    again = warmup.run_warmup(ctx, warmup.WarmUp(("statistics", "demo drawings"))).snapshot()
    assert again["demo drawings"].state == "skipped"
    # the Report opens on a real concept report, its lead first
    image = ctx.store.list_images(source="synthetic")[0]
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.CASE_ID] = image["case_id"]
    at.run()
    at.switch_page("pages/report.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "The model gives this" in text and "operating point" in text
    assert "How sure:" in text or "No labelled concept carries" in text
    assert any("demo's seeded drawings" in c.value for c in at.caption)
    assert not any("No concept probe is trained yet" in i.value for i in at.info)
    # removed in one step: the Report then shows no probe trained on them
    assert warmup.remove_demo_drawings(ctx, "test") == len(seeded)
    assert warmup.count_demo_drawings(ctx) == 0
    at.run()
    assert any("trained only on drawings that were removed" in i.value for i in at.info)
    assert warmup.demo_drawings_wanted(ctx) is not None  # never seeded again


def test_demo_drawings_off_starts_clean(demo_tiny, monkeypatch):
    monkeypatch.setattr(cx, "MAX_PATCHES", 64)
    ctx = app_ctx(demo_tiny.with_overrides(demo_drawings=False))
    snap = warmup.run_warmup(ctx, warmup.WarmUp(("statistics", "demo drawings"))).snapshot()
    assert snap["demo drawings"].state == "skipped" and "off" in snap["demo drawings"].message
    assert not ctx.store.list_annotations()


# ---------------------------------------------------------------- the best units' exemplars after a drawing
def test_the_label_page_shows_the_best_units_top_exemplars(tiny):
    ctx = app_ctx(tiny)
    cx.compute_stats(ctx, 120)
    view = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    rec = json.loads((PROJECT_ROOT / "tests/fixtures/fabric/polygon_448.json").read_text())
    m = lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"]))
    rows, pending = lb.unit_gallery(ctx, m)
    assert not rows and pending == len(m.units_above[:lb.GALLERY_UNITS] or [m.best_unit])  # built in the background first
    deadline = time.monotonic() + 120
    while ctx.caches.exemplars_head_start and time.monotonic() < deadline:
        time.sleep(0.1)
    rows, pending = lb.unit_gallery(ctx, m)
    assert pending == 0 and rows
    assert [r["unit"] for r in rows] == (list(m.units_above[:lb.GALLERY_UNITS]) or [m.best_unit])
    assert all(r["exemplars"] and r["exemplars"][0][0].ndim == 3 for r in rows)

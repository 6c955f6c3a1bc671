"""The Read page's "Where to draw next": a ranked list with reasons, drawn-on patches left out, and
one click opening the suggested patch on the Label page (AppTest, real store and tiny real model)."""
from __future__ import annotations

from dashboard.engine.suggestions import overlap_fraction
from dashboard.ui import state
from dashboard.ui.screens import read as rd
from dashboard.ui.work import probe_versions as pv
from tests.ui.test_pages import app_ctx, data, labeled, model_data, run_page  # noqa: F401 - fixtures

DRAWN = ("SYN-0001-LCC", 20, 70, 64)  # the ``labeled`` fixture's drawing


def test_without_a_probe_the_panel_says_what_to_do(model_data):  # noqa: F811
    at = run_page("pages/read.py", {state.CASE_ID: "SYN-0001"})
    at.toggle(key="read.suggest").set_value(True).run()
    assert not at.exception
    assert any("No concept probe yet" in i.value for i in at.info)


def test_suggestions_rank_with_reasons_skip_drawn_patches_and_open_the_label_page(labeled):  # noqa: F811
    ctx = labeled["ctx"]
    pv.retrain(ctx, "Dr Test")
    nxt = rd.draw_next(ctx, "SYN-0001")
    assert nxt.rows and not nxt.note
    assert [r["rank"] for r in nxt.rows] == list(range(1, len(nxt.rows) + 1))
    assert [r["score"] for r in nxt.rows] == sorted((r["score"] for r in nxt.rows), reverse=True)
    assert all("mass probe is unsure here (p≈" in r["reason"] or "has no concept yet" in r["reason"]
               for r in nxt.rows)
    drawn = [(r["x0"], r["y0"], r["size"]) for r in nxt.rows if r["image_id"] == DRAWN[0]]
    if drawn:
        assert overlap_fraction(drawn, [DRAWN[1:]]).max() < 0.5
    at = run_page("pages/read.py", {state.CASE_ID: "SYN-0001"})
    assert not [b for b in at.button if b.key == "read.suggest.open0"]  # off until asked
    at.toggle(key="read.suggest").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [t.value for t in at.text if " · score " in t.value]
    assert len(shown) == len(nxt.rows) and shown[0].startswith(f"1. {nxt.rows[0]['view']} at ")
    assert nxt.rows[0]["reason"] in shown[0]
    at.button(key="read.suggest.open0").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[state.PATCH] == nxt.ref(0).as_tuple()
    assert any(t.value == "Label concepts" for t in at.title)

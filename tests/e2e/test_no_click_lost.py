"""No click is lost: a click the moment a button appears, and a drawing started the moment Save was
clicked, both reach the app (real browser, ``streamlit run app.py``, demo DICOM cases, the trained
demo model and its dataset statistics).

Before: the Read page called ``st.rerun()`` after loading a case's window presets and its point
picker's canvas reported its size with a run of its own, either of which could drop a "Label this
patch" click made meanwhile; and Save gave the Label page a fresh canvas (a new key), which dropped
the vertices clicked while it remounted.
"""
from __future__ import annotations

import re

import pytest

from dashboard.data.store import Store
from dashboard.testing import flows
from dashboard.testing.browser import ROOT, streamlit_server
from dashboard.testing.e2e_data import prepare_data_dir

pytestmark = pytest.mark.e2e

READER = "Dr Quick"
#: Two outlines on the patch, in fractions of the canvas (display orientation).
FIRST = [(0.30, 0.30), (0.65, 0.30), (0.65, 0.65), (0.30, 0.65)]
SECOND = [(0.20, 0.55), (0.50, 0.20), (0.80, 0.55), (0.50, 0.85)]


@pytest.fixture(scope="module")
def app(tmp_path_factory, artifacts):
    data_dir = tmp_path_factory.mktemp("quick") / "data"
    env = prepare_data_dir(data_dir)
    with Store(data_dir / "conceptlens.duckdb", data_dir / "journal", read_only=True) as store:
        cases = [c["case_id"] for c in store.list_cases()]
    with streamlit_server(ROOT / "app.py", env, log_path=artifacts / "e2e" / "streamlit_quick.log") as url:
        yield {"url": url, "cases": cases, "data_dir": data_dir}


@pytest.fixture
def page(browser, app, artifacts, request):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(flows.LONG)
    page.goto(app["url"])
    yield page
    page.screenshot(path=str(artifacts / "e2e" / f"{request.node.name}.png"), full_page=True)
    page.close()


def test_label_this_patch_clicked_the_moment_it_appears_opens_the_patch(page, app):
    """On every case's first view (nothing of it computed yet), "Label this patch" is clicked as soon
    as it is visible, while the page is still being built: the Label page opens on that case."""
    for case_id in app["cases"]:
        flows.heading(page, "Worklist")
        flows.select_option(page, "Case", case_id)
        page.get_by_role("button", name="Open case", exact=True).first.click()
        page.locator("h1", has_text=f"Read · {case_id}").first.wait_for(state="visible")
        button = flows.button(page, "Label this patch")
        button.wait_for(state="visible")
        button.click()  # at once: no wait for the run to finish
        flows.heading(page, "Label concepts")
        flows.sign_in(page, READER)
        flows.wait_text(page, re.compile(rf"{READER}\*?\*? · [LR] (CC|MLO) · {re.escape(case_id)} · patch"))
        flows.nav(page, "Worklist")


def test_a_polygon_started_right_after_save_is_matched_and_saved(page, app):
    case_id = app["cases"][0]
    flows.open_first_patch(page, app["url"], case_id)
    flows.sign_in(page, READER)
    flows.draw_polygon(page, FIRST)
    flows.wait_text(page, "Best matching unit")
    flows.wait_idle(page)
    page.get_by_role("button", name=re.compile(r"^Save as ")).first.click()
    flows.draw_polygon(page, SECOND)  # at once, while Save's run is still going
    flows.wait_idle(page)
    # the new outline is the drawing now: its units are matched and it can be saved
    flows.wait_text(page, "Best matching unit", timeout=60_000)
    main = page.locator("[data-testid='stMain']")
    assert "Nothing is drawn yet" not in main.inner_text()
    page.get_by_role("button", name=re.compile(r"^Save as ")).first.click()
    flows.wait_text(page, re.compile(r"Saved '[^']+': labeled \d+ unit"))
    # both outlines are stored, each once (the server holds the store: the page lists them)
    flows.wait_text(page, "Drawings on this image (2)")

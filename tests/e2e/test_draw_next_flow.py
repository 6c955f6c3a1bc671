"""Where to draw next in a real browser: on the Read page the reader asks for suggestions, clicks the
first one's Label button and lands on the Label page with exactly that patch.

Playwright drives Debian's chromium against ``streamlit run app.py`` with the e2e demo data dir, one
saved mass drawing and a probe trained on it (so the list exists). Screenshot:
test-artifacts/e2e/draw_next.png.
"""
from __future__ import annotations

import pytest

from dashboard.data.store import Store
from dashboard.testing import flows
from dashboard.testing.browser import ROOT, streamlit_server
from dashboard.testing.e2e_data import E2E_CARD, _settings, case_with_lesion, prepare_data_dir
from dashboard.ui import canvas
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import read as rd
from dashboard.ui.screens import report as rp
from dashboard.ui.types import PatchRef

pytestmark = pytest.mark.e2e
READER = "Dr E2E"


def test_a_suggestion_opens_its_patch_on_the_label_page(browser, artifacts, tmp_path):
    data_dir = tmp_path / "data"
    env = prepare_data_dir(data_dir)
    settings = _settings(data_dir)
    case_id = case_with_lesion(data_dir)
    with Store(settings.db_path, settings.journal_dir) as store:
        ctx = build_context(settings, store, load_model(E2E_CARD, settings.user_cards_dir, "cpu"))
        image_id = store.list_images(case_id=case_id)[0]["image_id"]
        view = lb.load_patch(ctx, PatchRef(image_id, 150, 150, 224))
        rect = canvas.Drawing("rect", ((60, 60), (160, 60), (160, 160), (60, 160)))
        lb.save(ctx, view, lb.match(ctx, view, [rect]), "mass", READER)
        rp.retrain(ctx, READER)
        first = rd.draw_next(ctx, case_id).rows[0]  # what the page will list first
    with streamlit_server(ROOT / "app.py", env, log_path=artifacts / "e2e" / "streamlit-draw-next.log") as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(flows.LONG)
        try:
            page.goto(url)
            flows.heading(page, "Worklist")
            flows.select_option(page, "Case", case_id)
            flows.click_button(page, "Open case")
            flows.heading(page, f"Read · {case_id}")
            page.locator(flows.READ_TILES).first.wait_for(state="visible")
            page.get_by_text("Suggest patches to draw on", exact=True).click()
            flows.wait_text(page, f"1. {first['view']} at ({first['x0']}, {first['y0']})")
            listed = page.locator("[class*='st-key-read-suggestion0']").inner_text()
            page.locator("[class*='st-key-read-suggest-open0'] button").click()
            flows.heading(page, "Label concepts")
            flows.sign_in(page, READER)
            shown = flows.shown_patch(page)
            flows.screenshot(page, artifacts / "e2e" / "draw_next.png")
        except Exception:
            page.screenshot(path=str(artifacts / "e2e" / "failure-draw-next.png"), full_page=True)
            raise
        finally:
            page.close()
    assert first["reason"] in listed
    assert shown == (first["x0"], first["y0"], first["size"])

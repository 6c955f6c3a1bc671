"""What if, in a real browser: open the Report of an abnormal demo image (the trained demo model, probe
v1 from the phantom's truth drawings), open "What if a concept were absent?", see the score sentence
of the concept the report ranks first, dial the strength to 0 and see the score text change back to
no change. The panel's screenshot goes to docs/screenshots/report_whatif.png."""
from __future__ import annotations

import re
import shutil

import pytest

from dashboard.data.store import Store
from dashboard.testing import flows
from dashboard.testing.browser import ROOT, streamlit_server
from dashboard.testing.e2e_data import prepare_data_dir
from dashboard.testing.whatif_demo import abnormal_images, demo_context
from dashboard.ui.work import images

# the demo model's first Report of an image and both interventions, on 2 shared cores
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2700)]

DOCS = ROOT / "docs" / "screenshots"
#: ms: the Report's first run on an image (whole-image Grad-CAM, evidence, report) on 2 shared cores
SLOW = 900_000
SENTENCE = re.compile(r"(without|with \d+% less) (.+): P\(lesion\) (\d\.\d\d) → (\d\.\d\d)")
LOG_ODDS = re.compile(r"log-odds ([+-]\d+\.\d\d) → ([+-]\d+\.\d\d)")


def _sentences(page) -> list[tuple[str, str, float, float, float, float]]:
    """(how, concept, P before, P after, log-odds before, log-odds after) of each intervention shown."""
    text = page.locator("[data-testid='stExpander']", has_text="What if a concept").first.inner_text()
    return [(m.group(1), m.group(2), float(m.group(3)), float(m.group(4)), float(lo.group(1)), float(lo.group(2)))
            for m, lo in zip(SENTENCE.finditer(text), LOG_ODDS.finditer(text))]


def test_remove_a_concept_on_the_report_and_see_the_score_change(browser, artifacts, tmp_path):
    data_dir = tmp_path / "data"
    env = prepare_data_dir(data_dir)
    with Store(data_dir / "conceptlens.duckdb", data_dir / "journal") as store:
        ctx = demo_context(data_dir, store)  # seeds the phantom's truth drawings and probe v1
        row = abnormal_images(ctx)[0]
        first = store.list_images()[0]  # the image the Report opens on
        for image_id in {first["image_id"], row["image_id"]}:  # scored here: the server reads the scores
            images.lesion_map_for(ctx, image_id)
    label = f"{row['laterality']} {row['view']} · {row['case_id']}"
    out = artifacts / "e2e"
    out.mkdir(parents=True, exist_ok=True)
    with streamlit_server(ROOT / "app.py", env, log_path=out / "streamlit-whatif.log") as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(flows.LONG)
        try:
            page.goto(url)
            flows.heading(page, "Worklist", SLOW)
            page.locator("[data-testid='stSidebarNavLink']", has_text="Report").first.click()
            flows.heading(page, "Report", SLOW)
            if label != f"{first['laterality']} {first['view']} · {first['case_id']}":
                page.get_by_role("combobox", name="Image", exact=True).first.click()
                page.get_by_role("option", name=label, exact=True).first.click()
                flows.wait_idle(page, SLOW)
            flows.wait_text(page, re.compile(r"Concept probe v1\b"), SLOW)
            page.get_by_text("What if a concept were absent?").click()
            flows.wait_idle(page, SLOW)
            flows.wait_text(page, "In activation space", SLOW)
            flows.wait_text(page, SENTENCE, SLOW)
            full = _sentences(page)
            box = page.locator("[data-testid='stExpander']", has_text="What if a concept").first
            flows.settle(page, SLOW)
            box.screenshot(path=str(out / "report_whatif.png"))
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "report_whatif.png", DOCS / "report_whatif.png")
            slider = page.get_by_role("slider").first
            slider.focus()
            slider.press("Home")  # strength 0 %
            flows.wait_idle(page, SLOW)
            flows.wait_text(page, re.compile(r"with 0% less .+: P\(lesion\)"), SLOW)
            zero = _sentences(page)
        except Exception:
            page.screenshot(path=str(out / "whatif-failure.png"), full_page=True)
            raise
        finally:
            page.close()
    assert len(full) == 2 and all(s[0] == "without" for s in full), full
    concept = full[0][1]
    activation = full[0]
    # the score moves: P(lesion), or where P is saturated near 1 on the demo model, its log-odds
    assert (activation[3], activation[5]) != (activation[2], activation[4]), f"removing {concept} changed nothing"
    assert len(zero) == 2 and all(s[0] == "with 0% less" and s[2] == s[3] and s[4] == s[5] for s in zero), zero
    assert zero[0][2] == activation[2] and zero[0][4] == activation[4]  # the same patch, the same score before

"""Upload through the browser: two DICOM files of one study on the Model and data page, then the
worklist shows their case and the Read page opens it. Playwright drives Debian's chromium against
``streamlit run app.py`` on a free port, with an empty data dir."""
from __future__ import annotations

import re

import pytest

from dashboard.data.keys import pseudonym
from dashboard.imaging import DicomHeader, write_dicom
from dashboard.testing import app_data, flows
from dashboard.testing.browser import ROOT, streamlit_server
from dashboard.testing.e2e_data import E2E_CARD
from tests.e2e.conftest import server_env

pytestmark = pytest.mark.e2e

STUDY_UID = "1.2.826.0.1.3680043.9.4242.1"


def _study(folder):
    """The two CC views of one study, named as a PACS export names them (after the patient)."""
    folder.mkdir()
    paths = []
    for lat in ("R", "L"):
        paths.append(write_dicom(folder / f"DOE_JANE_{lat}CC.dcm", app_data.breast_pixels(7, lat, shape=(512, 400)),
                                 DicomHeader(laterality=lat, view="CC", pixel_spacing_mm=0.1, window_centers=[2000],
                                             window_widths=[3000], study_uid=STUDY_UID, patient_name="DOE^JANE",
                                             patient_id="MRN-4242")))
    return paths


def test_upload_two_dicoms_see_them_in_the_worklist_and_open_one(browser, artifacts, tmp_path):
    data_dir = tmp_path / "data"
    files = _study(tmp_path / "export")
    env = server_env(data_dir, E2E_CARD)
    with streamlit_server(ROOT / "app.py", env, log_path=artifacts / "e2e" / "upload.log") as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(flows.LONG)
        try:
            page.goto(url)
            flows.heading(page, "Worklist")
            flows.nav(page, "Model and data")
            flows.heading(page, "Model and data")
            page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files([str(p) for p in files])
            for p in files:
                flows.wait_text(page, p.name)
            flows.wait_idle(page)
            flows.click_button(page, "Ingest uploads")
            flows.wait_text(page, "Added 2, duplicates 0, failed 0")
            n_tables = page.locator("[data-testid='stExpander'] [data-testid='stDataFrame']").count()
            # the case id is the study's keyed pseudonym; the key was made by the server on this upload
            case_id = "case-" + pseudonym((data_dir / "pseudonym.key").read_bytes(), "study", STUDY_UID)
            flows.nav(page, "Worklist")
            flows.heading(page, "Worklist")
            flows.select_option(page, "Case", case_id)
            flows.click_button(page, "Open case")
            flows.heading(page, f"Read · {case_id}")
            tiles = page.locator(flows.READ_TILES)
            tiles.nth(1).wait_for(state="visible")  # both views hung
            n_tiles = tiles.count()
            read_text = page.locator("[data-testid='stMain']").inner_text()
        except Exception:
            page.screenshot(path=str(artifacts / "e2e" / "upload_failure.png"), full_page=True)
            raise
        finally:
            page.close()
    assert n_tiles >= 2
    assert re.search(r"\bR CC\b", read_text) and re.search(r"\bL CC\b", read_text)
    assert "DOE" not in read_text and "MRN-4242" not in read_text
    assert n_tables >= 1  # the per-file results

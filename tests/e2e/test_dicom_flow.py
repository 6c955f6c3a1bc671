"""Real data and standard DICOM in a real browser: a digitised film (mini-MIAS) beside the synthetic demo.

The Worklist marks the film's case as outside the demo model's domain; Read picks the film model for it
(and warns once the reader switches back to the demo model); the Report warns too and its download gives
DICOM SEG + SR that pydicom and highdicom read back, referencing the image and carrying the warning.
Screenshots: test-artifacts/e2e/dicom_*.png (and CONCEPTLENS_SHOTS_DIR when set).
"""
from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from dashboard.data.importers import import_mini_mias
from dashboard.data.store import Store
from dashboard.export import FILE_NAMES
from dashboard.testing import flows
from dashboard.testing.browser import ROOT, streamlit_server
from dashboard.testing.e2e_data import E2E_CARD, _settings, case_with_lesion, prepare_data_dir
from dashboard.ui import canvas
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import report as rp
from dashboard.ui.types import PatchRef

pytestmark = pytest.mark.e2e
FILM_CASE = "mias-p002"      # mdb003 + mdb004
FILM_IMAGE = "mias-mdb004"   # R MLO: the first image the Report shows for the case
#: Where to copy the screenshots as well (optional; a review's folder).
SHOTS = Path(os.environ.get("CONCEPTLENS_SHOTS_DIR", "")) if os.environ.get("CONCEPTLENS_SHOTS_DIR") else None


def shot(page, artifacts, name: str) -> None:
    out = artifacts / "e2e"
    out.mkdir(parents=True, exist_ok=True)
    flows.screenshot(page, out / f"{name}.png")
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / f"{name}.png", SHOTS / f"{name}.png")


def prepare(data_dir, shared_data, tmp_path) -> dict:
    """The e2e demo data dir plus one woman of mini-MIAS, a mass drawn on a synthetic and on the film
    image, and a probe trained on them."""
    env = prepare_data_dir(data_dir)
    folder = tmp_path / "mias"
    (folder / "images").mkdir(parents=True)
    for ref in ("mdb003", "mdb004"):
        shutil.copy(shared_data / "mini-mias" / "images" / f"{ref}.png", folder / "images" / f"{ref}.png")
    lines = [ln for ln in (shared_data / "mini-mias" / "labels.txt").read_text().splitlines()
             if ln.split()[:1] in (["mdb003"], ["mdb004"])]
    (folder / "labels.txt").write_text("\n".join(lines) + "\n")
    settings = _settings(data_dir)
    synthetic = case_with_lesion(data_dir)
    with Store(settings.db_path, settings.journal_dir) as store:
        assert import_mini_mias(store, folder).cases == 1
        ctx = build_context(settings, store, load_model(E2E_CARD, settings.user_cards_dir, "cpu"))
        rect = canvas.Drawing("rect", ((60, 60), (160, 60), (160, 160), (60, 160)))
        for image_id, xy in ((store.list_images(case_id=synthetic)[0]["image_id"], (150, 150)), (FILM_IMAGE, (400, 380))):
            view = lb.load_patch(ctx, PatchRef(image_id, xy[0], xy[1], 224))
            lb.save(ctx, view, lb.match(ctx, view, [rect]), "mass", "Dr E2E")
        rp.retrain(ctx, "Dr E2E")
    return env


def test_film_case_warns_and_exports_dicom(browser, artifacts, tmp_path, shared_data):
    data_dir = tmp_path / "data"
    env = prepare(data_dir, shared_data, tmp_path)
    with streamlit_server(ROOT / "app.py", env, log_path=artifacts / "e2e" / "streamlit-dicom.log") as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(flows.LONG)
        try:
            page.goto(url)
            flows.heading(page, "Worklist")
            flows.click_button(page, "Score unscored cases")
            banner = flows.wait_text(page, "case(s) shown are from another domain than demo-lite0-synth").inner_text()
            shot(page, artifacts, "dicom_01_worklist")

            page.get_by_label("Search case or description").fill("mias")
            page.keyboard.press("Enter")
            flows.wait_idle(page)
            flows.wait_text(page, re.compile(r"^Shown$"))
            flows.click_button(page, "Open case")  # the only case shown: the film
            flows.heading(page, f"Read · {FILM_CASE}")
            box = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first
            picked = box.evaluate("e => e.textContent + ' ' + Array.from(e.querySelectorAll('input'))"
                                  ".map(i => i.value).join(' ')")
            warned_before = page.get_by_text("Domain mismatch").count()
            flows.select_option(page, "Model for this case", E2E_CARD)  # the reader switches back
            flows.heading(page, f"Read · {FILM_CASE}")
            read_warning = flows.wait_text(page, "Domain mismatch: demo-lite0-synth was trained on").inner_text()
            page.locator(flows.READ_TILES).first.wait_for(state="visible")  # the clickable images
            shot(page, artifacts, "dicom_02_read")

            flows.nav(page, "Report")
            flows.heading(page, "Report")
            flows.wait_text(page, "Which concepts carry the evidence")
            report_warning = flows.wait_text(page, "this image is a digitised film").inner_text()
            shot(page, artifacts, "dicom_03_report")
            with page.expect_download() as dl:
                page.get_by_role("button", name="Export DICOM SEG + SR").first.click()
            zipped = tmp_path / "export.zip"
            dl.value.save_as(zipped)
        except Exception:
            page.screenshot(path=str(artifacts / "e2e" / "failure-dicom.png"), full_page=True)
            raise
        finally:
            page.close()

    assert banner.startswith("1 case(s) shown are from another domain")
    assert "mias-lite0" in picked  # a film case opens with the card trained on films
    assert warned_before == 0     # ... which was trained on its domain: no warning
    assert "this image is a digitised film" in read_warning and "not calibrated" in read_warning
    assert "Domain mismatch" in report_warning
    with zipfile.ZipFile(zipped) as zf:
        assert set(zf.namelist()) == set(FILE_NAMES.values())
        read = {name: pydicom.dcmread(io.BytesIO(zf.read(name))) for name in zf.namelist()}
    source = read[FILE_NAMES["source"]]
    drawings = hd.seg.Segmentation.from_dataset(read[FILE_NAMES["drawings"]])
    concepts = hd.seg.Segmentation.from_dataset(read[FILE_NAMES["concepts"]])
    sr = hd.sr.Comprehensive3DSR.from_dataset(read[FILE_NAMES["sr"]])
    assert source.PatientID == FILM_CASE and source.Rows == source.Columns == 1024
    assert [s.SegmentLabel for s in drawings.SegmentSequence] == ["mass"]
    assert drawings.pixel_array.any() and concepts.SegmentationType == "FRACTIONAL"
    for seg in (drawings, concepts):
        ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    group = sr.content.get_planar_roi_measurement_groups()[0]
    assert group.referenced_segmentation_frame.referenced_sop_instance_uid == concepts.SOPInstanceUID
    assert {m.name.meaning for m in group.get_measurements()} >= {"Area", "Share of attribution"}
    texts = [str(i.TextValue) for i in sr.ContentSequence[-1].ContentSequence if "TextValue" in i]
    assert any("this image is a digitised film" in t for t in texts)

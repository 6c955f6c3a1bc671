"""The pilot study in a real browser: two readers sign in from two browser contexts (two sessions
at once), each reads, rates and submits their first case; the coordinator signs in, sees both
reads and downloads the export, which holds both rows with their server timings.

Playwright drives Debian's chromium against ``streamlit run app.py`` on a free port, on a data dir
of demo DICOM cases, the trained demo model and a concept probe trained on one drawing. Screenshots
of the sign-in, reader and coordinator pages go to test-artifacts/e2e/study/.
"""
from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pandas as pd
import pytest

from dashboard.data import demo
from dashboard.data.store import DrawingRecord, Store
from dashboard.engine.dissection import mask_to_png
from dashboard.settings import load_settings
from dashboard.study import Arm, CaseSelection, StudyDefinition, create_study, create_user
from dashboard.testing import flows
from dashboard.testing.browser import ROOT, streamlit_server
from dashboard.testing.e2e_data import E2E_CARD, N_CASES, SEED
from dashboard.ui.context import build_context, load_model
from dashboard.ui.work import probe_versions

pytestmark = pytest.mark.e2e

PASSWORD = "pilot-password-123"
READERS = ("ann", "bob")


def prepare_study(settings) -> None:
    """The browser tests' demo cases (no dataset statistics: nothing here labels units), accounts
    (a coordinator, two readers), a concept probe trained on one drawing, and a two-arm study."""
    with Store(settings.db_path, settings.journal_dir) as store:
        demo.build_demo(settings, store, n_cases=N_CASES, seed=SEED, workers=1, contact_sheet=False, only_missing=True)
        ctx = build_context(settings, store, load_model(E2E_CARD, settings.user_cards_dir, "cpu"))
        image = store.list_images()[0]
        m = np.zeros((224, 224), bool)
        m[80:150, 70:160] = True
        store.save_annotation(DrawingRecord(image_id=image["image_id"], concept="mass", reader="Dr Setup", patch_x0=40,
                              patch_y0=200, patch_size=224, shape="rect",
                              geometry={"x0": 70, "y0": 80, "x1": 160, "y1": 150}, mask_png=mask_to_png(m),
                              model_card=E2E_CARD))
        probe_versions.retrain(ctx, "Dr Setup")
        create_user(store, "coord", "coordinator", actor="setup", password=PASSWORD)
        for r in READERS:
            create_user(store, r, "reader", actor="setup", password=PASSWORD)
        cases = tuple(c["case_id"] for c in store.list_cases())[:3]
        create_study(store, StudyDefinition(
            name="pilot", title="Browser pilot", readers=READERS, cases=CaseSelection(ids=cases), seed=2,
            arms=(Arm("score", "AI score only", ("score",)),
                  Arm("concepts", "AI score + concept report", ("score", "attribution", "concept_report"),
                      probe="latest"))), actor="setup", settings=settings)


def shot(page, artifacts, name: str) -> None:
    out = artifacts / "e2e" / "study"
    out.mkdir(parents=True, exist_ok=True)
    flows.screenshot(page, out / f"{name}.png")


def sign_in(page, url: str, username: str) -> None:
    page.goto(url)
    flows.heading(page, "Worklist")  # nobody signed in: the demo, plus Sign in
    flows.nav(page, "Sign in")
    flows.heading(page, "Sign in")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    flows.click_button(page, "Sign in")


def radio(page, group: str, option: str) -> None:
    page.locator("[data-testid='stRadio']", has_text=group).first.get_by_text(option, exact=True).click()


def answer_and_submit(page, *, birads: str, malignancy: int) -> str:
    """Answer the questions of the open case and submit; returns the submitted message."""
    radio(page, "BI-RADS assessment", birads)
    page.get_by_label("Probability of malignancy (%)").fill(str(malignancy))
    radio(page, "Confidence in your assessment", "3")
    helped = page.locator("[data-testid='stRadio']", has_text="The explanation helped me")
    if helped.count():
        helped.first.get_by_text("4", exact=True).click()
    flows.click_button(page, "Submit read")
    return flows.wait_text(page, re.compile(r"Case \d+ of \d+ submitted")).inner_text()


def test_two_readers_submit_and_the_coordinator_exports(browser, artifacts, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    env = {"CONCEPTLENS_DATA_DIR": str(data_dir), "CONCEPTLENS_DB_PATH": str(data_dir / "conceptlens.duckdb"),
           "CONCEPTLENS_MODEL_CARD": E2E_CARD, "CONCEPTLENS_DEVICE": "cpu"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    prepare_study(load_settings())
    with streamlit_server(ROOT / "app.py", env, log_path=artifacts / "e2e" / "streamlit-study.log") as url:
        contexts = {who: browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
                    for who in (*READERS, "coord")}
        pages = {who: c.new_page() for who, c in contexts.items()}
        for p in pages.values():
            p.set_default_timeout(flows.LONG)
        try:
            ann, bob, coord = pages["ann"], pages["bob"], pages["coord"]
            ann.goto(url)
            flows.heading(ann, "Worklist")
            flows.nav(ann, "Sign in")
            flows.heading(ann, "Sign in")
            shot(ann, artifacts, "01_sign_in")
            ann.get_by_label("Username").fill("ann")
            ann.get_by_label("Password", exact=True).fill(PASSWORD)
            flows.click_button(ann, "Sign in")
            sign_in(bob, url, "bob")
            for p in (ann, bob):  # both sessions open their first case at once
                flows.heading(p, "Reading")
                p.locator("iframe[title*='streamlit_image_coordinates']").first.wait_for(state="visible")
                assert "Worklist" not in p.locator("[data-testid='stSidebarNav']").inner_text()
            # ann marks the most suspicious location on the first image
            frame = ann.frame_locator("iframe[title*='streamlit_image_coordinates']").first
            frame.locator("img").click(position={"x": 60, "y": 120})
            flows.wait_text(ann, "Most suspicious location:")
            flows.wait_idle(ann)
            shot(ann, artifacts, "02_reader")
            if bob.get_by_text("Concept report", exact=True).count():  # bob's first session shows it
                bob.locator("[data-testid='stImage']").first.wait_for(state="visible")
                shot(bob, artifacts, "02b_reader_concept_report")
            ann_done = answer_and_submit(ann, birads="4 · suspicious (> 2 % to < 95 %)", malignancy=70)
            bob_done = answer_and_submit(bob, birads="2 · a typical non-cancerous finding (0 % likelihood of cancer)",
                                         malignancy=10)
            assert ann_done.startswith("Case 1 of 3 submitted") and bob_done.startswith("Case 1 of 3 submitted")
            flows.heading(ann, "Reading")
            shot(ann, artifacts, "03_reader_next_case")

            sign_in(coord, url, "coord")
            flows.heading(coord, "Studies")
            shot(coord, artifacts, "04_coordinator_studies")
            flows.nav(coord, "Results")
            flows.heading(coord, "Results")
            flows.wait_text(coord, "2 of 12 cases submitted")
            flows.click_button(coord, "Compute results")
            flows.wait_text(coord, re.compile(r"2 current reads"))
            shot(coord, artifacts, "05_coordinator_results")
            flows.click_button(coord, "Prepare export")
            button = coord.get_by_role("button", name=re.compile(r"Download pilot-.*\.zip"))
            with coord.expect_download() as dl:
                button.click()
            data = dl.value.path().read_bytes()
            flows.nav(coord, "Readers")
            flows.heading(coord, "Readers")
            shot(coord, artifacts, "06_coordinator_readers")
            flows.nav(coord, "Audit log")
            flows.heading(coord, "Audit log")
            shot(coord, artifacts, "07_coordinator_audit")
        except Exception:
            for who, p in pages.items():
                p.screenshot(path=str(artifacts / "e2e" / f"study-failure-{who}.png"), full_page=True)
            raise
        finally:
            for c in contexts.values():
                c.close()

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        def table(name):
            return pd.read_csv(zf.open(next(n for n in zf.namelist() if n.endswith(f"/{name}.csv"))))

        reads, timings = table("reads"), table("timings")
    submitted = reads[reads["submitted_at"].notna()].sort_values("malignancy")
    assert submitted["reader"].tolist() == ["R02", "R01"]  # bob 10 %, ann 70 %: pseudonymised
    assert submitted["birads"].tolist() == [2, 4]
    assert submitted["click_image_id"].notna().tolist() == [False, True]  # ann clicked a location
    done = timings[timings["seconds_to_submit"].notna()]
    assert len(done) == 2 and (done["seconds_to_submit"] > 0).all()

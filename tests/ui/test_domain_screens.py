"""The domain warning on the Worklist, Read and Report screens and in the report's exports; the Read
page's card for a case."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dashboard.data.store import Store
from dashboard.engine import report
from dashboard.testing import app_data
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import read as rd
from dashboard.ui.screens import report as rp
from dashboard.ui.screens import worklist as wl


@pytest.fixture
def ctx(settings):
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    app_data.make_tiny_card(settings, domain="synthetic")
    loaded = load_model(app_data.TINY_CARD, settings.user_cards_dir, "cpu")
    assert loaded.error is None
    yield build_context(settings, store, loaded)
    store.close()


def test_worklist_marks_cases_from_another_domain(ctx):
    rows = {r["case_id"]: r for r in wl.load_worklist(ctx).rows}
    assert rows["MIAS-mdb001"]["domain"] == "digitised film"
    assert rows["MIAS-mdb001"]["domain_warning"] == "⚠ digitised film; model trained on synthetic test images"
    assert "this image is a digitised film" in rows["MIAS-mdb001"]["domain_detail"]
    assert rows["SYN-0001"]["domain"] == "synthetic" and rows["SYN-0001"]["domain_warning"] == ""
    assert rows["SYN-0001"]["domain_detail"] == ""


def test_read_warns_and_suggests_the_card_of_the_case_domain(ctx):
    film = rd.load_reading(ctx, "MIAS-mdb001")
    assert film.domain_warnings and film.notes[0] == film.domain_warnings[0]
    assert "not calibrated" in film.notes[0]
    assert rd.load_reading(ctx, "SYN-0001").domain_warnings == []
    choice = rd.case_card_choice(ctx, "MIAS-mdb001")
    assert choice.suggested == "mias-lite0" and choice.switch
    assert app_data.TINY_CARD in choice.options and "imagenet-lite0" not in choice.options
    assert not rd.case_card_choice(ctx, "SYN-0001").switch


def test_report_view_and_exports_carry_the_warning(ctx, tmp_path):
    view = rp.load_report(ctx, "MIAS-mdb001", None)
    assert "digitised film" in view.domain_warning
    assert rp.load_report(ctx, "SYN-0002", None).domain_warning == ""
    rep = report.ConceptReport(
        kind="image", model_card=ctx.card_name, weights_sha="x", probe_version=1, probe_layer="layer4",
        unit_layer="layer4", image_id="MIAS-mdb001-LMLO", patch=None, pixel_spacing_mm=0.2, target=1,
        target_name="lesion", classes=["normal", "lesion"], probabilities=[0.2, 0.8], probability=0.8, logit=1.0,
        image=np.zeros((8, 8), "float16"), attribution_method="gradcam",
        attribution_map=np.zeros((8, 8), "float32"), concepts=[], unexplained_share=1.0,
        logit_bias=None, logit_unlabeled=None, logit_exact=False, domain_warning=view.domain_warning)
    text = report.report_to_json(rep)
    assert json.loads(text)["domain_warning"] == view.domain_warning
    assert report.report_from_json(text).domain_warning == view.domain_warning
    html = report.export_html(rep, tmp_path / "r.html").read_text()
    assert "domain-warning" in html and "digitised film" in html

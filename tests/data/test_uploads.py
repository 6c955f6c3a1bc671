"""Uploads through the browser's path: files and ZIPs of study folders into the managed data dir,
checked ZIPs, default pixel spacing with its source, private files, verified images."""
from __future__ import annotations

import io
import json
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from dashboard import imaging
from dashboard.data import files, ingest, uploads
from dashboard.data.store import ImageRecord, Store, open_store
from dashboard.imaging import DicomHeader, ImageChangedError, ImageMissingError, write_dicom
from dashboard.testing import app_data, bombs


def _dicom_bytes(tmp_path, name, laterality, view, study="1.2.3.9.1", seed=1) -> bytes:
    px = app_data.breast_pixels(seed, laterality)
    path = write_dicom(tmp_path / name, px, DicomHeader(laterality=laterality, view=view, pixel_spacing_mm=0.2,
                                                        window_centers=[2000], window_widths=[3000],
                                                        study_uid=study))
    return path.read_bytes()


def _png_bytes(seed=3) -> bytes:
    out = io.BytesIO()
    Image.fromarray((app_data.breast_pixels(seed, "L") >> 4).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_uploads_land_in_the_data_dir_with_one_result_per_file(store, settings, tmp_path):
    study = _zip({"study/RCC.dcm": _dicom_bytes(tmp_path, "r.dcm", "R", "CC", seed=4),
                  "study/LCC.dcm": _dicom_bytes(tmp_path, "l.dcm", "L", "CC", seed=5),
                  "study/.DS_Store": b"junk", "__MACOSX/study/._RCC.dcm": b"junk"})
    ups = [uploads.Upload("lmlo.dcm", _dicom_bytes(tmp_path, "m.dcm", "L", "MLO", study="1.2.3.9.2", seed=6)),
           uploads.Upload("film.png", _png_bytes()),
           uploads.Upload("scan.png", b"Report for the clinic\n" * 30),
           uploads.Upload("study.zip", study)]
    seen = []
    report = uploads.ingest_uploads(store, ups, settings.uploads_dir, default_spacing_mm=0.07,
                                    progress=lambda d, t, n: seen.append((d, t)))
    results = {r["file"]: r for r in report.results}
    assert set(results) == {"lmlo.dcm", "film.png", "scan.png", "study.zip/study/RCC.dcm", "study.zip/study/LCC.dcm"}
    assert report.added == 4 and [r["result"] for r in report.results].count("failed") == 1
    assert results["scan.png"]["detail"].startswith("scan.png is not a valid PNG (it looks like a text file)")
    assert seen[-1] == (5, 5)
    # a PNG without a pixel size gets the upload's default, recorded with where it came from
    png = store.get_image(results["film.png"]["image_id"])
    assert png["pixel_spacing_mm"] == pytest.approx(0.07)
    assert json.loads(png["meta"])["spacing_source"] == uploads.UPLOAD_DEFAULT
    dcm = store.get_image(results["lmlo.dcm"]["image_id"])
    assert dcm["pixel_spacing_mm"] == pytest.approx(0.2) and json.loads(dcm["meta"])["spacing_source"] == "PixelSpacing"
    # the study's two views are one case; every file is inside the data dir, relative in the database
    rcc, lcc = (store.get_image(results[f"study.zip/study/{v}.dcm"]["image_id"]) for v in ("RCC", "LCC"))
    assert rcc["case_id"] == lcc["case_id"] != dcm["case_id"]
    for row in store.list_images():
        assert not row["rel_path"].startswith("/") and row["rel_path"].startswith("images/")
        assert files.load_stored_image(store, row).shape == (row["rows"], row["cols"])
    # nothing staged stays behind; a second upload of the same files adds nothing
    assert [p for p in settings.uploads_dir.rglob("*") if p.is_file()] == []
    again = uploads.ingest_uploads(store, ups, settings.uploads_dir)
    assert again.added == 0 and again.duplicates == 4


def test_data_files_are_private(store, settings, tmp_path):
    uploads.ingest_uploads(store, [uploads.Upload("a.dcm", _dicom_bytes(tmp_path, "a.dcm", "L", "CC"))],
                           settings.uploads_dir)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(settings.db_path) == 0o600
    assert mode(settings.data_dir / "pseudonym.key") == 0o600
    for folder in (settings.data_dir, settings.uploads_dir, settings.images_dir):
        assert mode(folder) == 0o700, folder
    stored = [p for p in settings.images_dir.rglob("*") if p.is_file()]
    assert stored and all(mode(p) == 0o600 for p in stored)
    assert all(mode(p) == 0o700 for p in settings.images_dir.rglob("*") if p.is_dir())


@pytest.mark.parametrize("archive, message", [
    ({"../evil.dcm": b"x"}, "outside the upload folder"),
    ({"/etc/cron.d/evil": b"x"}, "outside the upload folder"),
    ({"C:\\\\Windows\\\\evil.dcm": b"x"}, "outside the upload folder"),
    ({"study/a.dcm": b"x"}, None),  # a plain archive passes the checks
])
def test_zip_entries_cannot_leave_the_upload_folder(tmp_path, archive, message):
    path = bombs.zip_with(tmp_path / "a.zip", archive)
    with zipfile.ZipFile(path) as zf:
        if message is None:
            assert [i.filename for i in uploads.check_zip(zf, "a.zip", 1 << 30)] == list(archive)
        else:
            with pytest.raises(uploads.UploadError, match=message):
                uploads.check_zip(zf, "a.zip", 1 << 30)


def test_zip_bombs_links_and_crowds_are_refused_and_the_rest_goes_on(store, settings, tmp_path):
    bomb = bombs.zip_bomb(tmp_path / "bomb.zip", mib=64).read_bytes()
    link = bombs.zip_with(tmp_path / "link.zip", {"a.dcm": b"x"}, symlink="study/passwd").read_bytes()
    crowd = _zip({f"f{i}.dcm": b"" for i in range(uploads.MAX_ZIP_ENTRIES + 1)})
    good = uploads.Upload("good.dcm", _dicom_bytes(tmp_path, "g.dcm", "R", "MLO"))
    report = uploads.ingest_uploads(store, [uploads.Upload("bomb.zip", bomb), uploads.Upload("link.zip", link),
                                            uploads.Upload("crowd.zip", crowd), good], settings.uploads_dir)
    reasons = dict(report.failed)
    assert "zip bomb" in reasons["bomb.zip"] and "to 1" in reasons["bomb.zip"]
    assert "symbolic link" in reasons["link.zip"]
    assert f"more than {uploads.MAX_ZIP_ENTRIES}" in reasons["crowd.zip"]
    assert report.added == 1
    assert [p for p in settings.uploads_dir.rglob("*") if p.is_file()] == []


def test_an_image_file_changed_after_ingest_is_never_shown_under_its_id(store, settings, tmp_path):
    report = uploads.ingest_uploads(store, [uploads.Upload("lcc.dcm", _dicom_bytes(tmp_path, "x.dcm", "L", "CC"))],
                                    settings.uploads_dir)
    row = store.get_image(report.results[0]["image_id"])
    m = files.load_stored_image(store, row)
    files.check_stored_file(store, row)  # unchanged: the size and mtime fast path
    # replaced by the other breast, same size on disk: the hash decides
    other = _dicom_bytes(tmp_path, "y.dcm", "R", "CC", seed=9)
    path = store.resolve_path(row["rel_path"])
    path.write_bytes(other)
    with pytest.raises(ImageChangedError, match=f"Image {row['image_id']}: .*changed after it was ingested"):
        files.load_stored_image(store, row)
    with pytest.raises(ImageChangedError, match="changed after it was ingested"):
        files.check_stored_file(store, row)
    path.unlink()
    with pytest.raises(ImageMissingError, match="missing from the data directory"):
        files.load_stored_image(store, row)
    with pytest.raises(ImageMissingError):
        files.check_stored_file(store, row)
    assert m.laterality == "L"


def test_a_touched_but_unchanged_file_passes_and_its_stat_is_refreshed(store, settings, tmp_path):
    report = uploads.ingest_uploads(store, [uploads.Upload("a.dcm", _dicom_bytes(tmp_path, "a.dcm", "L", "CC"))],
                                    settings.uploads_dir)
    row = store.get_image(report.results[0]["image_id"])
    path = store.resolve_path(row["rel_path"])
    path.write_bytes(path.read_bytes())  # a backup restore: same bytes, new mtime
    files.check_stored_file(store, row)
    assert store.get_image(row["image_id"])["file_mtime_ns"] == path.stat().st_mtime_ns


def test_a_stored_path_cannot_climb_out_of_the_data_dir(store):
    store.save_case("c", "x")
    with pytest.raises(Exception, match="under the data directory"):
        store.save_image(ImageRecord("i", "c", "/etc/passwd", "sha", rows=1, cols=1))
    with pytest.raises(Exception, match="not a path inside the data directory"):
        store.save_image(ImageRecord("i", "c", "../../etc/passwd", "sha", rows=1, cols=1))


def test_an_older_database_is_rewritten_without_absolute_paths(settings, tmp_path):
    outside = tmp_path / "PACS_EXPORT_QWERTY_PATIENT"
    outside.mkdir()
    src = outside / "img.dcm"
    src.write_bytes(_dicom_bytes(tmp_path, "o.dcm", "L", "CC"))
    inside = settings.data_dir / "demo" / "x.dcm"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(_dicom_bytes(tmp_path, "i.dcm", "R", "CC", seed=7))
    with Store(settings.db_path) as old:  # what an older version wrote: absolute paths, in rows and audit log
        old.save_case("c", "ingest")
        for image_id, path in (("img-out", src), ("img-in", inside)):
            old.save_image(ImageRecord(image_id, "c", str(inside), imaging.file_sha256(path), rows=256, cols=200))
        old._con.execute("UPDATE images SET path = ? WHERE image_id = 'img-out'", [str(src)])
        old._con.execute("UPDATE images SET path = ? WHERE image_id = 'img-in'", [str(inside)])
        old._con.execute("UPDATE audit_log SET payload = ? WHERE entity_id = 'img-out'",
                         [json.dumps({"path": str(src), "sha256": "x"})])
        gone = ImageRecord("img-gone", "c", "demo/gone.dcm", "sha-gone", rows=1, cols=1)
        old.save_image(gone)
        old._con.execute("UPDATE images SET path = ? WHERE image_id = 'img-gone'", [str(outside / "gone.dcm")])
    store = open_store(settings)
    rows = {r["image_id"]: r for r in store.list_images()}
    assert rows["img-in"]["rel_path"] == "demo/x.dcm"
    assert rows["img-out"]["rel_path"].startswith("images/")  # copied in, de-identified
    assert files.load_stored_image(store, rows["img-out"]).laterality == "L"
    assert rows["img-out"]["source_key"] == files.image_for_source(store, src)["source_key"]
    with pytest.raises(ImageMissingError, match="Ingest the original file again"):
        files.load_stored_image(store, rows["img-gone"])
    store.close()
    assert b"PACS_EXPORT_QWERTY_PATIENT" not in settings.db_path.read_bytes()


def test_folder_ingest_from_the_app_stays_inside_the_import_roots(store, tmp_path):
    root, secret = tmp_path / "root", tmp_path / "elsewhere"
    (root / "study").mkdir(parents=True)
    secret.mkdir()
    (secret / "SMITH_JOHN_MRN998877.png").write_bytes(_png_bytes(8))
    (root / "study" / "a.png").write_bytes(_png_bytes(9))
    (root / "study" / "link.png").symlink_to(secret / "SMITH_JOHN_MRN998877.png")
    (root / "escape").symlink_to(secret, target_is_directory=True)
    with pytest.raises(ingest.IngestError, match="not inside an import root"):
        ingest.ingest_folder(store, secret, roots=(root,))
    with pytest.raises(ingest.IngestError, match="not inside an import root"):
        ingest.ingest_folder(store, root / "study" / ".." / ".." / "elsewhere", roots=(root,))
    with pytest.raises(ingest.IngestError, match="not inside an import root"):
        ingest.ingest_folder(store, root / "escape", roots=(root,))
    with pytest.raises(ingest.IngestError, match="no import roots"):
        ingest.ingest_folder(store, root, roots=())
    report = ingest.ingest_folder(store, root / "study", roots=(root,), default_spacing_mm=0.1)
    assert report.added == 1 and report.outside == 1
    assert "SMITH" not in json.dumps(report.results) + report.summary()
    row = store.list_images()[0]
    assert json.loads(row["meta"])["spacing_source"] == ingest.FOLDER_DEFAULT and row["pixel_spacing_mm"] == 0.1

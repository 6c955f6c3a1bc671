"""No PHI at rest: a DICOM whose folder, file name, header and free text name the patient leaves none of
it in the database file, the audit log, the journal, the caches or the exports: every byte of every file
under the data dir is searched, after ingest from an import root, an upload, dataset statistics, a
drawing, a probe and a report export."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from dashboard.data.store import open_store
from dashboard.imaging import DicomHeader, write_dicom
from dashboard.testing import app_data
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import model_data as md
from dashboard.ui.screens import read as rd
from dashboard.ui.screens import report as rp
from dashboard.ui.types import PatchRef
from dashboard.ui.work import concepts as cx

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "fabric"
# distinctive enough that no compressed or random byte run repeats them by chance
SURNAME, GIVEN, MRN = "ZYXWVUTSRQPONM", "QWERTYJANE", "7395148263"
PHI = {
    "PatientName": f"{SURNAME}^{GIVEN}", "PatientID": f"MRN{MRN}", "AccessionNumber": "ACC55501234",
    "InstitutionName": "QWERTYSAINTHOSPITAL", "ReferringPhysicianName": "PLOKMIJNUHB^DR",
    "PatientBirthDate": "19610203", "OtherPatientIDs": "OTHERID8877665",
}
NEEDLES = [SURNAME, GIVEN, MRN, "ACC55501234", "QWERTYSAINTHOSPITAL", "PLOKMIJNUHB", "19610203", "OTHERID8877665",
           "1.2.826.0.1.3680043.9.7395", "Screening"]


def _phi_dicom(folder: Path, name: str, laterality: str, view: str) -> Path:
    return write_dicom(folder / name, app_data.breast_pixels(31, laterality), DicomHeader(
        laterality=laterality, view=view, pixel_spacing_mm=0.2, window_centers=[2000], window_widths=[3000],
        patient_id=PHI["PatientID"], patient_name=PHI["PatientName"],
        study_uid="1.2.826.0.1.3680043.9.7395.1", series_uid="1.2.826.0.1.3680043.9.7395.2",
        sop_uid="1.2.826.0.1.3680043.9.7395.3." + ("1" if view == "CC" and laterality == "L" else "2"),
        extra={"AccessionNumber": PHI["AccessionNumber"], "InstitutionName": PHI["InstitutionName"],
               "ReferringPhysicianName": PHI["ReferringPhysicianName"], "PatientBirthDate": PHI["PatientBirthDate"],
               "OtherPatientIDs": PHI["OtherPatientIDs"],
               "SeriesDescription": f"Screening {GIVEN} {SURNAME} MRN{MRN}",
               "StudyDescription": f"Screening mammogram of {GIVEN} {SURNAME}",
               "ImageComments": f"Patient {SURNAME} {GIVEN}, referred by PLOKMIJNUHB", "BurnedInAnnotation": "YES"}))


@pytest.fixture
def phi_ctx(settings, tmp_path):
    roots = tmp_path / "pacs-export"
    folder = roots / f"{SURNAME}_{GIVEN}_MRN{MRN}"
    folder.mkdir(parents=True)
    _phi_dicom(folder, f"{SURNAME}_{GIVEN}_LCC.dcm", "L", "CC")
    upload = _phi_dicom(tmp_path, f"{SURNAME}_{GIVEN}_RCC.dcm", "R", "CC")
    settings = settings.with_overrides(import_roots=(roots.resolve(),))
    store = open_store(settings)  # as the app and the command lines open it
    app_data.populate(settings, store)  # the other cases, for the statistics and the probe
    app_data.make_tiny_card(settings)
    loaded = load_model(app_data.TINY_CARD, settings.user_cards_dir, "cpu")
    ctx = build_context(settings, store, loaded)
    yield ctx, folder, upload
    store.close()


def _every_file(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_patient_named_everywhere_leaves_no_trace_in_the_data_dir(phi_ctx):
    ctx, folder, upload = phi_ctx
    report = md.ingest(ctx, str(folder), "pacs")
    assert report.added == 1, report.summary()
    up = md.upload(ctx, [(upload.name, upload.read_bytes())], "upload")
    assert up.added == 1, up.summary()
    lcc, rcc = (r["image_id"] for r in report.results + up.results)
    # the de-identified header still holds what reading needs, and the burned-in flag warns
    row = ctx.store.get_image(lcc)
    meta = json.loads(row["meta"])
    assert (row["laterality"], row["view"], row["pixel_spacing_mm"]) == ("L", "CC", 0.2)
    assert meta["burned_in_annotation"] is True and meta["deidentified"] is True
    view = rd.load_reading(ctx, row["case_id"])
    assert any("burned-in annotation" in n for n in view.notes)
    # caches (dataset statistics, activations), a drawing with its journal, a probe, a report and its exports
    cx.compute_stats(ctx, 120)
    rec = json.loads((FIX / "polygon_448.json").read_text())
    for image_id in (lcc, rcc):
        patch = lb.load_patch(ctx, PatchRef(image_id, 20, 70, 64))
        m = lb.match(ctx, patch, lb.drawings_from_canvas(patch, rec["json"], rec["fit"]))
        lb.save(ctx, patch, m, "mass", "Dr Reader")
    rp.retrain(ctx, "Dr Reader")
    r = rp.load_report(ctx, row["case_id"], lcc)
    html, js = r.export_html(), r.export_json()
    (ctx.settings.export_dir / f"{r.export_name}.json").write_bytes(js)
    for needle in NEEDLES:
        assert needle.encode() not in html and needle.encode() not in js, needle
    ctx.store._con.execute("CHECKPOINT")
    files = _every_file(ctx.settings.data_dir)
    kinds = {p.relative_to(ctx.settings.data_dir).parts[0] for p in files}
    assert {"images", "cache", "exports", "conceptlens.duckdb"} <= kinds, kinds
    for p in files:
        data = p.read_bytes()
        for needle in NEEDLES:
            for form in {needle, needle.lower(), needle.upper()}:
                assert form.encode() not in data, f"{form!r} found in {p.relative_to(ctx.settings.data_dir)}"
    # and all of it private: files 0600, folders 0700
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o600"}
    dirs = [ctx.settings.data_dir, *(p for p in ctx.settings.data_dir.rglob("*") if p.is_dir())]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs} == {"0o700"}
    audit = json.dumps(ctx.store.audit_log(limit=100000), default=str)
    assert SURNAME not in audit and str(folder.parent) not in audit

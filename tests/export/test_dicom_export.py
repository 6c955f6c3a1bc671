"""DICOM out: SEG, Parametric Map and TID 1500 SR written with highdicom, read back with pydicom and highdicom,
checked by dciodvfy when Debian's dicom3tools is installed; from the library, the Report screen and the CLI."""
from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dashboard import imaging
from dashboard.data.files import load_stored_image
from dashboard.data.store import DrawingRecord, Store
from dashboard.engine import report as R
from dashboard.engine.dissection import mask_to_png
from dashboard.export import FILE_NAMES, export_dicom, to_source_grid
from dashboard.export import cli as export_cli
from dashboard.testing import app_data
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import report as rp
from dashboard.ui.types import PatchRef
from dashboard.ui.work import concepts as cx

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "fabric"
DCIODVFY = shutil.which("dciodvfy")


class _Card:
    name = "demo-lite0-synth"
    pixel_spacing_mm = 0.2
    domain = {"modality": "synthetic", "described_as": "synthetic phantoms"}


@pytest.fixture
def store(settings):
    s = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, s)
    yield s
    s.close()


def _scene(store, image_id):
    """A drawing of a mass on the image and a hand-made concept report over its model-space image."""
    row = store.get_image(image_id)
    img, _, frame = imaging.prepare_model_image(load_stored_image(store, row), 0.2, default_spacing_mm=0.2)
    drawn = np.zeros((64, 64), bool)
    drawn[10:40, 20:50] = True
    store.save_annotation(DrawingRecord(image_id, "mass", "Dr Test", 30, 40, 64, "rect", {"x": 1},
                                        model_card="demo-lite0-synth", mask_png=mask_to_png(drawn)))
    pm = np.zeros(img.shape, np.float16)
    pm[40:80, 50:90] = 0.9
    mass = R.ConceptEntry("mass", "#ff0000", pm, 120.0, 100.0, 0.9, 0.4, units=[1, 2], tcav_score=0.8,
                          tcav_p_value=0.01, probe_auroc=0.91)
    other = R.ConceptEntry("my own concept", "#00ff00", None, None, None, None, 0.1)
    attribution = np.linspace(0, 1, img.size, dtype=np.float32).reshape(img.shape)
    rep = R.ConceptReport(
        kind="image", model_card="demo-lite0-synth", weights_sha="abc123def456", probe_version=3, probe_layer="bn2",
        unit_layer="bn2", image_id=image_id, patch=None, pixel_spacing_mm=0.2, target=1, target_name="lesion",
        classes=["normal", "lesion"], probabilities=[0.2, 0.8], probability=0.8, logit=1.0,
        image=img.astype(np.float16), attribution_method="gradcam", attribution_map=attribution,
        concepts=[mass, other], unexplained_share=0.5, logit_bias=None, logit_unlabeled=None, logit_exact=False)
    return rep, frame, drawn, pm


def _texts(ds) -> list[str]:
    """Every TextValue of an SR's content tree."""
    out = []
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            out.append(str(item.TextValue))
        out += _texts(item)
    return out


def _validate(paths):
    if DCIODVFY is None:
        return
    for p in paths:
        out = subprocess.run([DCIODVFY, str(p)], capture_output=True, text=True).stderr
        errors = [ln for ln in out.splitlines() if ln.startswith("Error")]
        assert errors == [], (p.name, errors)


@pytest.mark.parametrize("image_id", ["SYN-0001-LCC", "MIAS-mdb001-LMLO"])
def test_export_reads_back_and_references_its_source(store, tmp_path, image_id):
    rep, frame, drawn, pm = _scene(store, image_id)
    res = export_dicom(store, image_id, tmp_path / "out", report=rep, card=_Card(), frame=frame)
    assert [p.name for p in res.files] == [FILE_NAMES[k] for k in ("source", "drawings", "concepts", "attribution", "sr")]
    source = pydicom.dcmread(res.source)
    row = store.get_image(image_id)
    if image_id.startswith("SYN"):  # the stored DICOM itself: its (pseudonymous) UIDs are referenced
        stored = pydicom.dcmread(row["path"])
        assert source.SOPInstanceUID == stored.SOPInstanceUID and source.PatientID == stored.PatientID
        assert "stored de-identified DICOM" in res.notes[0]
    else:  # a PNG: a Secondary Capture of the pixels the model read
        assert source.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and source.ConversionType == "DF"
        assert source.PatientID == (store.get_case(row["case_id"])["patient_ref"] or row["case_id"])
        assert np.array_equal(source.pixel_array, load_stored_image(store, row).pixels.astype(source.pixel_array.dtype))
    # drawings: a BINARY SEG on the source grid, where the drawing was
    seg = hd.seg.segread(res.drawings_seg)
    assert seg.SegmentationType == "BINARY" and seg.get_segment_numbers(segment_label="mass") == [1]
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    model_mask = np.zeros(frame.model_shape, bool)
    model_mask[40:104, 30:94] = np.pad(drawn, ((0, 0), (0, 0)))[: min(64, frame.model_shape[0] - 40)]
    expected = to_source_grid(model_mask, frame)
    got = seg.pixel_array.reshape(source.Rows, source.Columns).astype(bool)
    assert got.sum() > 0 and np.array_equal(got, expected)
    # concept maps: a FRACTIONAL SEG, probability 0.9 -> 229/255
    cseg = hd.seg.segread(res.concepts_seg)
    assert cseg.SegmentationType == "FRACTIONAL" and cseg.SegmentSequence[0].SegmentLabel == "mass"
    frac = cseg.pixel_array.reshape(source.Rows, source.Columns)
    assert frac.max() == round(0.9 * 255) or frac.max() == int(0.9 * 255)
    assert np.array_equal(frac > 0, to_source_grid(pm > 0, frame))
    # attribution: a float Parametric Map on the source grid
    pmap = pydicom.dcmread(res.attribution_pm)
    assert pmap.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    values = np.asarray(pmap.pixel_array, np.float32).reshape(source.Rows, source.Columns)
    np.testing.assert_allclose(values, to_source_grid(rep.attribution_map, frame), atol=1e-6)
    # the SR: TID 1500, one group per concept, measurements as reported, the segment referenced
    sr = hd.sr.srread(res.sr)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1 and groups[0].reference_type.value == "121214"  # Referenced Segmentation Frame
    ref = groups[0].referenced_segmentation_frame
    assert ref.referenced_sop_instance_uid == cseg.SOPInstanceUID and ref.referenced_segment_numbers == [1]
    values = {m.name.meaning: m.value for m in groups[0].get_measurements()}
    assert values == {"Area": 120.0, "Share of attribution": 40.0, "TCAV score": 0.8, "TCAV p-value": 0.01,
                      "Concept probe AUROC": 0.91}
    dump = " | ".join(_texts(pydicom.dcmread(res.sr)))
    assert "demo-lite0-synth + concept probe" in dump and "weights abc123def456, probe v3" in dump  # algorithm
    image_level = sr.content.get_image_measurement_groups()
    assert [g.finding_type.meaning for g in image_level] == ["my own concept"]
    text = pydicom.dcmread(res.sr)
    assert all(s.PatientID == source.PatientID and s.StudyInstanceUID == source.StudyInstanceUID
               for s in (seg, cseg, pmap, text))
    warned = "this image is a digitised film" in dump
    assert warned == image_id.startswith("MIAS")
    _validate(res.files[1:] + ([res.source] if image_id.startswith("MIAS") else []))


def test_a_second_export_reuses_the_uids(store, tmp_path):
    rep, frame, _, _ = _scene(store, "MIAS-mdb001-LMLO")
    a = export_dicom(store, "MIAS-mdb001-LMLO", tmp_path / "a", report=rep, card=_Card(), frame=frame)
    b = export_dicom(store, "MIAS-mdb001-LMLO", tmp_path / "b", report=rep, card=_Card(), frame=frame)
    for x, y in zip(a.files, b.files):
        assert pydicom.dcmread(x).SOPInstanceUID == pydicom.dcmread(y).SOPInstanceUID
    drawings_only = export_dicom(store, "MIAS-mdb001-LMLO", tmp_path / "c", card=_Card(), frame=frame)
    assert drawings_only.concepts_seg is None and drawings_only.sr is None and drawings_only.drawings_seg


@pytest.fixture
def ctx(settings, monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", app_data.TINY_CARD)
    s = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, s)
    app_data.make_tiny_card(settings)
    loaded = load_model(app_data.TINY_CARD, settings.user_cards_dir, "cpu")
    ctx = build_context(settings, s, loaded)
    cx.compute_stats(ctx, 120)
    yield ctx
    s.close()


def test_report_screen_and_cli_export_the_same_objects(ctx, tmp_path):
    import json
    rec = json.loads((FIX / "polygon_448.json").read_text())
    view = lb.load_patch(ctx, PatchRef("SYN-0001-LCC", 20, 70, 64))
    lb.save(ctx, view, lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"])), "mass", "Dr Test")
    rp.retrain(ctx, "Dr Test")
    r = rp.load_report(ctx, "SYN-0001", "SYN-0001-LCC")
    with zipfile.ZipFile(io.BytesIO(r.export_dicom())) as zf:
        names = set(zf.namelist())
        assert names == set(FILE_NAMES.values())
        sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(zf.read(FILE_NAMES["sr"]))))
        seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(zf.read(FILE_NAMES["drawings"]))))
    assert pydicom.dcmread(io.BytesIO(r.export_sr())).SOPInstanceUID == sr.SOPInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["mass"]
    group = sr.content.get_planar_roi_measurement_groups()[0]
    assert group.finding_type.meaning == "Mass" and group.finding_type.value == "4147007"
    ctx.store.close()
    out = tmp_path / "cli"
    assert export_cli.main(["dicom", "--image", "SYN-0001-LCC", "--out", str(out)]) == 0
    cli_sr = hd.sr.srread(out / FILE_NAMES["sr"])
    cli_group = cli_sr.content.get_planar_roi_measurement_groups()[0]
    assert cli_group.finding_type.meaning == "Mass"
    assert {m.name.meaning for m in cli_group.get_measurements()} >= {"Area", "Share of attribution"}  # AUROC needs 3 drawings
    assert pydicom.dcmread(out / FILE_NAMES["drawings"]).SOPInstanceUID == seg.SOPInstanceUID  # same drawings, same UID
    _validate(sorted(out.glob("*-*.dcm")))
    assert export_cli.main(["dicom", "--image", "nope", "--out", str(out)]) == 2

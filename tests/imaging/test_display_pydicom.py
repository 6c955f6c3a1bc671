"""Display maths is pydicom's: the viewer's 8-bit output equals pydicom.pixels' windowing, VOI LUT and
presentation LUT on files built with pydicom (8-bit LUT stored as OW, big-endian, MONOCHROME1, INVERSE, SIGMOID)."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_presentation_lut, apply_voi, apply_voi_lut, apply_windowing
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from dashboard.imaging import apply_window, load_image, window_image
from dashboard.imaging.windowing import display_invert

ROWS, COLS, BITS = 48, 64, 12


def _pixels(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 1 << BITS, (ROWS, COLS)).astype(np.uint16)
    px[:, : COLS // 2] //= 3  # a darker half, so windows cut through real values
    return px


def _write(path, px, *, big_endian=False, photometric="MONOCHROME2", **elements) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ImageLaterality, ds.ViewPosition = "MG", "L", "CC"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = ROWS, COLS, 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS, BITS - 1, 0
    for k, v in elements.items():
        setattr(ds, k, v)
    ds.PixelData = px.astype(">u2" if big_endian else "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True, little_endian=not big_endian, implicit_vr=False)
    return pydicom.dcmread(path)


def _scaled(y: np.ndarray, bits: int) -> np.ndarray:
    """pydicom's output in 0 .. 2**bits - 1 as display values 0..255."""
    return np.clip(np.rint(np.asarray(y, np.float64) * 255.0 / ((1 << bits) - 1)), 0, 255).astype(np.uint8)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to one grey level (the rounding of .5 at 8 bits vs the same value at 12 bits)."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.98


def _ow_lut(values: np.ndarray, first: int, bits: int, *, big_endian=False) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(values), first, bits]
    item.LUTExplanation = "OW LUT"
    item.LUTData = np.asarray(values).astype(">u2" if big_endian else "<u2").tobytes()
    item["LUTData"].VR = "OW"
    return item


def test_8_bit_lut_stored_as_ow_reads_one_entry_per_16_bit_word(tmp_path):
    # inputs within the table: pydicom 3.0.2 indexes an 8-bit LUT with uint8, so inputs past first + 255
    # wrap in pydicom itself (dashboard.imaging.windowing._wide_index works around it)
    px = _pixels() >> 4
    table = (np.arange(256) ** 2 // 256).astype(np.uint16)  # 8-bit entries, one per 16-bit word
    ds = _write(tmp_path / "ow8.dcm", px, VOILUTSequence=[_ow_lut(table, 0, 8)])
    m = load_image(tmp_path / "ow8.dcm")
    assert m.windows[0].name == "OW LUT" and len(m.windows[0].lut.table) == 256
    expected = _scaled(apply_voi(ds.pixel_array, ds, index=0), 8)
    np.testing.assert_array_equal(window_image(m, m.windows[0]), expected)
    # what reading the words as single bytes gave: every other entry 0, a table twice as long
    assert not np.array_equal(m.windows[0].lut.table, np.frombuffer(ds.VOILUTSequence[0].LUTData, "u1")[:256])


def test_an_8_bit_lut_over_12_bit_input_does_not_wrap(tmp_path):
    px = _pixels(5)
    table = (np.arange(4096) // 16).astype(np.uint16)
    _write(tmp_path / "wide.dcm", px, VOILUTSequence=[_ow_lut(table, 0, 8)])
    m = load_image(tmp_path / "wide.dcm")
    np.testing.assert_array_equal(window_image(m, m.windows[0]), table[px].astype(np.uint8))


def test_big_endian_file_with_a_16_bit_ow_lut(tmp_path):
    px = _pixels(1)
    table = np.clip(np.arange(4096) * 16, 0, 65535).astype(np.uint16)
    ds = _write(tmp_path / "be.dcm", px, big_endian=True,
                VOILUTSequence=[_ow_lut(table, 0, 16, big_endian=True)], WindowCenter=2048, WindowWidth=1024)
    m = load_image(tmp_path / "be.dcm")
    np.testing.assert_array_equal(m.pixels, ds.pixel_array.astype(np.float32))
    np.testing.assert_array_equal(window_image(m, m.windows[0]), _scaled(apply_voi(ds.pixel_array, ds, 0), 16))
    # the VOI LUT first (pydicom's apply_voi_lut prefers it), then the centre/width window
    np.testing.assert_array_equal(window_image(m, m.windows[0]),
                                  _scaled(apply_voi_lut(ds.pixel_array, ds, prefer_lut=True), 16))
    _close(window_image(m, m.windows[1]), _scaled(apply_voi_lut(ds.pixel_array, ds, prefer_lut=False), BITS))


def test_monochrome1_is_shown_inverted(tmp_path):
    px = _pixels(2)
    ds = _write(tmp_path / "m1.dcm", px, photometric="MONOCHROME1", PresentationLUTShape="INVERSE",
                WindowCenter=1500, WindowWidth=2000)
    m = load_image(tmp_path / "m1.dcm")
    assert display_invert(m.photometric, m.meta["PresentationLUTShape"])
    windowed = apply_windowing(ds.pixel_array.astype(np.float64), ds)
    _close(window_image(m, m.windows[0]), 255 - _scaled(windowed, BITS))
    # its INVERSE shape is the same inversion, not a second one
    _close(window_image(m, m.windows[0]), _scaled(apply_presentation_lut(windowed, ds), BITS))


def test_presentation_lut_shape_inverse_on_monochrome2(tmp_path):
    px = _pixels(3)
    ds = _write(tmp_path / "inv.dcm", px, PresentationLUTShape="INVERSE", WindowCenter=1800, WindowWidth=1500)
    m = load_image(tmp_path / "inv.dcm")
    expected = _scaled(apply_presentation_lut(apply_windowing(ds.pixel_array.astype(np.float64), ds), ds), BITS)
    _close(window_image(m, m.windows[0]), expected)
    plain = _write(tmp_path / "id.dcm", px, PresentationLUTShape="IDENTITY", WindowCenter=1800, WindowWidth=1500)
    m2 = load_image(tmp_path / "id.dcm")
    _close(window_image(m2, m2.windows[0]), _scaled(apply_windowing(plain.pixel_array.astype(np.float64), plain), BITS))
    assert np.ptp(window_image(m, m.windows[0]).astype(int) + window_image(m2, m2.windows[0])) <= 1


@pytest.mark.parametrize("function", ["SIGMOID", "LINEAR_EXACT", "LINEAR"])
def test_window_functions_match_pydicom(tmp_path, function):
    px = _pixels(4)
    ds = _write(tmp_path / f"{function}.dcm", px, VOILUTFunction=function, WindowCenter=[1200, 3000],
                WindowWidth=[800, 2500])
    m = load_image(tmp_path / f"{function}.dcm")
    assert m.voi_lut_function == function
    for i in (0, 1):
        _close(window_image(m, m.windows[i]), _scaled(apply_windowing(ds.pixel_array.astype(np.float64), ds, i), BITS))
    # the viewer's manual window goes through the same function
    _close(apply_window(px, 1200, 800, function), _scaled(apply_windowing(ds.pixel_array.astype(np.float64), ds, 0), BITS))

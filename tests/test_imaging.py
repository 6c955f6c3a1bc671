"""Tests of dashboard.imaging: DICOM writing/reading, windows, orientation, segmentation, tiling."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom import uid

from dashboard import imaging
from dashboard.imaging import ImagingError, write_dicom


def _ramp(h=64, w=48, bits=12):
    rng = np.random.default_rng(7)
    return rng.integers(0, 1 << bits, size=(h, w)).astype(np.uint16)


@pytest.mark.parametrize("ts", imaging.writable_transfer_syntaxes())
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_write_dicom_is_a_valid_mg_for_presentation_object(tmp_path, ts, photometric):
    px = _ramp()
    path = write_dicom(tmp_path / "a.dcm", px, laterality="R", view="MLO", pixel_spacing_mm=0.07,
                       window_centers=[2048, 1500], window_widths=[4096, 800],
                       window_explanations=["FULL", "DENSE"], photometric=photometric,
                       transfer_syntax=ts)
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
        write_dicom(tmp_path / "a.dcm", np.full((4, 4), 5000, np.uint16), laterality="L", view="CC",
                    pixel_spacing_mm=0.1, window_centers=[1], window_widths=[2], bits_stored=12)

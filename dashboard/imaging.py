"""Mammogram imaging: read and write DICOM, display windows, breast mask, model-space frames.

Coordinates (see ARCHITECTURE.md): *source space* is the pixel grid of the stored file
(x = column, y = row); *model space* is that grid resampled to the model card's pixel spacing and
mirrored, when needed, so that the chest wall is on the LEFT. ``Frame`` converts between them.

Everything here is vectorised numpy / scipy / scikit-image; nothing runs at import time.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


# ---------------------------------------------------------------- errors
class ImagingError(Exception):
    """An image cannot be read, written or prepared. The message says what is wrong and what to do."""


# ---------------------------------------------------------------- DICOM constants
#: SOP Class "Digital Mammography X-Ray Image Storage - For Presentation".
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
#: SOP Class "Digital Mammography X-Ray Image Storage - For Processing".
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"

# Mammography views (DICOM CID 4014, SNOMED CT codes as in pydicom.sr.codedict).
VIEW_CODES: dict[str, tuple[str, str]] = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"),
    "LM": ("399352003", "latero-medial"),
    "LMO": ("399099002", "latero-medial oblique"),
    "FB": ("399196006", "caudo-cranial"),
    "SIO": ("399188001", "superolateral to inferomedial oblique"),
    "XCCL": ("399192008", "cranio-caudal exaggerated laterally"),
    "XCCM": ("399101009", "cranio-caudal exaggerated medially"),
}
_VIEW_BY_CODE = {code: view for view, (code, _) in VIEW_CODES.items()}

# Attributes that identify a person or a place; dropped from ``Mammogram.meta`` unless show_phi.
PHI_KEYWORDS = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
    "OtherPatientIDs", "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers",
    "PatientMotherBirthName", "MedicalRecordLocator", "IssuerOfPatientID", "EthnicGroup",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "AccessionNumber", "StudyID",
    "DeviceSerialNumber", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate",
    "AcquisitionTime", "ContentDate", "ContentTime", "AcquisitionDateTime", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "PatientWeight", "PatientSize",
})

# Header attributes summarised into ``Mammogram.meta`` (non-identifying ones always kept).
_META_KEYWORDS = (
    "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName", "ImageType",
    "PresentationIntentType", "BodyPartExamined", "ImageLaterality", "Laterality", "ViewPosition",
    "PatientOrientation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PhotometricInterpretation", "PixelSpacing", "ImagerPixelSpacing",
    "RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
    "VOILUTFunction", "BreastImplantPresent", "SeriesDescription", "ConversionType",
    "LossyImageCompression",
)


def _encoder_available(transfer_syntax) -> bool:
    """True if pydicom has a working encoder for ``transfer_syntax`` in this environment."""
    from pydicom.pixels import get_encoder

    try:
        return bool(get_encoder(transfer_syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def writable_transfer_syntaxes() -> list[str]:
    """Transfer syntax UIDs ``write_dicom`` can produce here (uncompressed ones plus working encoders)."""
    from pydicom import uid

    out = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian]
    for ts in (uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless):
        if _encoder_available(ts):
            out.append(ts)
    return [str(t) for t in out]


def write_dicom(path, pixels: np.ndarray, *, laterality: str, view: str, pixel_spacing_mm: float,
                window_centers: Sequence[float], window_widths: Sequence[float],
                photometric: str = "MONOCHROME2", transfer_syntax=None, bits_stored: int = 12,
                patient_id: str = "ANON", patient_name: str = "ANON", study_uid: str | None = None,
                series_uid: str | None = None, sop_uid: str | None = None,
                extra: dict[str, Any] | None = None,
                window_explanations: Sequence[str] | None = None) -> Path:
    """Write one Digital Mammography X-Ray Image (For Presentation) DICOM file.

    pixels            (H, W) unsigned integers, stored values exactly as given (no inversion: for
                      MONOCHROME1 pass values where dense tissue is LOW); must fit in ``bits_stored``.
    laterality        "L" or "R" (ImageLaterality and Laterality).
    view              "CC", "MLO", ... (ViewPosition plus a SNOMED ViewCodeSequence when known).
    pixel_spacing_mm  square pixel size in mm (PixelSpacing and ImagerPixelSpacing).
    window_centers/widths  one or more VOI windows in stored-value units (rescale is identity).
    transfer_syntax   a pydicom UID; default Explicit VR Little Endian. RLE Lossless and JPEG 2000
                      Lossless are encoded when the installed plugins can (``writable_transfer_syntaxes``).
    extra             further attributes by keyword, set last (they override the defaults).
    Returns the path written.
    """
    import pydicom
    from pydicom import uid as _uid
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence

    transfer_syntax = _uid.UID(str(transfer_syntax or _uid.ExplicitVRLittleEndian))
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise ImagingError(f"write_dicom needs a single-frame grey image (H, W); got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ImagingError(f"write_dicom needs integer stored values; got dtype {arr.dtype}. "
                           "Scale and round the image to unsigned integers first.")
    if not 1 <= int(bits_stored) <= 16:
        raise ImagingError(f"bits_stored must be between 1 and 16, got {bits_stored}.")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= (1 << int(bits_stored))):
        raise ImagingError(f"Pixel values {int(arr.min())}..{int(arr.max())} do not fit in "
                           f"{bits_stored} bits stored; clip them or raise bits_stored.")
    laterality = str(laterality).upper()
    if laterality not in {"L", "R"}:
        raise ImagingError(f"laterality must be 'L' or 'R', got {laterality!r}.")
    photometric = str(photometric).upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise ImagingError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}.")
    centers = [float(c) for c in np.atleast_1d(window_centers)]
    widths = [float(w) for w in np.atleast_1d(window_widths)]
    if not centers or len(centers) != len(widths):
        raise ImagingError("window_centers and window_widths need the same, non-zero, number of values.")
    if min(widths) < 1:
        raise ImagingError("Every window width must be at least 1 (DICOM PS3.3 C.11.2.1.2).")
    if not (pixel_spacing_mm and float(pixel_spacing_mm) > 0):
        raise ImagingError(f"pixel_spacing_mm must be a positive number, got {pixel_spacing_mm!r}.")
    if str(transfer_syntax) not in writable_transfer_syntaxes():
        raise ImagingError(
            f"Cannot write transfer syntax {transfer_syntax.name} here: no working encoder. "
            f"Use one of: {', '.join(_uid.UID(t).name for t in writable_transfer_syntaxes())}.")

    bits_allocated = 8 if bits_stored <= 8 else 16
    arr = np.ascontiguousarray(arr.astype(np.uint8 if bits_allocated == 8 else np.uint16))
    now = _dt.datetime.now()
    study_uid = study_uid or _uid.generate_uid()
    series_uid = series_uid or _uid.generate_uid()
    sop_uid = sop_uid or _uid.generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = _uid.ExplicitVRLittleEndian  # set to the real one after encoding
    meta.ImplementationClassUID = _uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CONCEPTLENS"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    # SOP common / general image
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # patient / study / series / equipment
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "MG"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.Manufacturer = "ConceptLens"
    ds.FrameOfReferenceUID = _uid.generate_uid()
    # DX / MG image modules
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.ViewPosition = str(view).upper()
    ds.BreastImplantPresent = "NO"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DetectorType = "DIRECT"
    ds.PixelIntensityRelationship = "LOG"
    # -1: higher stored values mean less X-ray reached the detector (dense = bright in MONOCHROME2)
    ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = centers if len(centers) > 1 else centers[0]
    ds.WindowWidth = widths if len(widths) > 1 else widths[0]
    names = list(window_explanations or ([] if len(centers) > 1 else ["DEFAULT"]))
    names += [f"WINDOW{i + 1}" for i in range(len(names), len(centers))]
    ds.WindowCenterWidthExplanation = names if len(names) > 1 else names[0]
    ds.VOILUTFunction = "LINEAR"
    spacing = f"{float(pixel_spacing_mm):.6g}"
    ds.PixelSpacing = [spacing, spacing]
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.EstimatedRadiographicMagnificationFactor = 1.0
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    anatomy = Dataset()
    anatomy.CodeValue, anatomy.CodingSchemeDesignator, anatomy.CodeMeaning = "76752008", "SCT", "Breast"
    ds.AnatomicRegionSequence = DicomSequence([anatomy])
    if ds.ViewPosition in VIEW_CODES:
        code = Dataset()
        code.CodeValue, code.CodeMeaning = VIEW_CODES[ds.ViewPosition]
        code.CodingSchemeDesignator = "SCT"
        code.ViewModifierCodeSequence = DicomSequence([])
        ds.ViewCodeSequence = DicomSequence([code])
    # image pixel module
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    for key, value in (extra or {}).items():
        setattr(ds, key, value)

    if transfer_syntax.is_compressed:
        try:
            ds.compress(transfer_syntax, arr, generate_instance_uid=False)
        except Exception as exc:  # encoder plugins raise assorted types
            raise ImagingError(f"Encoding to {transfer_syntax.name} failed: {exc}") from exc
        ds.LossyImageCompression = "00"
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(path, enforce_file_format=True)
    except Exception as exc:
        raise ImagingError(f"Could not write DICOM file {path}: {exc}") from exc
    return path


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

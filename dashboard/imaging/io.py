"""Reading and writing mammograms: DICOM (pydicom), PNG, JPEG, TIFF; de-identified header summaries.

Reading is defensive: the file's size and the pixel count its header declares (``read_header``, no
pixel decoded) are checked against ``settings.max_pixels`` before anything large is allocated, and a
caller that knows the file's SHA-256 (a stored image) has it checked on the very bytes decoded."""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import tifffile
from PIL import Image, UnidentifiedImageError
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder, get_encoder
from pydicom.sequence import Sequence as DicomSequence

from dashboard.imaging.model import (
    ImageChangedError,
    ImageMissingError,
    ImageTooLargeError,
    ImagingError,
    Mammogram,
    Window,
)
from dashboard.imaging.segmentation import chest_wall_side, segment_breast
from dashboard.imaging.windowing import VOI_FUNCTIONS, voi_lut_tables
from dashboard.settings import max_pixels_setting

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

PHI_KEYS = PHI_KEYWORDS  # the name dashboard.data.importers uses

# Text a person typed, which may name anyone (DICOM PS3.15 Table E.1-1, Basic Profile: removed). Never
# summarised into ``meta``; removed from the stored copies (``imaging.deid``) with every LT/ST/UT value.
FREE_TEXT_KEYWORDS = frozenset({
    "SeriesDescription", "StudyDescription", "ImageComments", "PatientComments", "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription", "DerivationDescription", "ProtocolName", "PerformedProcedureStepDescription",
    "RequestedProcedureDescription", "ScheduledProcedureStepDescription", "CommentsOnThePerformedProcedureStep",
    "RequestedProcedureComments", "ImagingServiceRequestComments", "StudyComments", "VisitComments",
    "AcquisitionComments", "FrameComments", "IdentifyingComments", "InterpretationText", "MedicalAlerts",
    "Allergies", "Occupation", "ReasonForStudy", "ReasonForTheRequestedProcedure", "ReasonForVisit",
    "SpecialNeeds", "PatientState", "ServiceEpisodeDescription", "DischargeDiagnosisDescription",
    "ResultsComments", "TextString", "TextComments", "DeviceDescription", "AcquisitionDeviceProcessingDescription",
    "PerformedStationName", "PerformedLocation", "ScheduledStationName",
})

# Header attributes summarised into ``Mammogram.meta`` (non-identifying ones always kept).
_META_KEYWORDS = (
    "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName", "SecondaryCaptureDeviceManufacturer", "ImageType",
    "PresentationIntentType", "PresentationLUTShape", "BodyPartExamined", "ImageLaterality", "Laterality", "ViewPosition",
    "PatientOrientation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PhotometricInterpretation", "PixelSpacing", "ImagerPixelSpacing",
    "RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
    "VOILUTFunction", "BreastImplantPresent", "ConversionType", "LossyImageCompression",
    "BurnedInAnnotation",
)


def _encoder_available(transfer_syntax) -> bool:
    """True if pydicom has a working encoder for ``transfer_syntax`` in this environment."""
    try:
        return bool(get_encoder(transfer_syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def writable_transfer_syntaxes() -> list[str]:
    """Transfer syntax UIDs ``write_dicom`` can produce here (uncompressed ones plus working encoders)."""
    out = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian]
    for ts in (uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless):
        if _encoder_available(ts):
            out.append(ts)
    return [str(t) for t in out]


@dataclass(frozen=True)
class DicomHeader:
    """What ``write_dicom`` writes besides the pixels: the header of one mammogram file.

    laterality        "L" or "R" (ImageLaterality and Laterality)
    view              "CC", "MLO", ... (ViewPosition plus a SNOMED ViewCodeSequence when known)
    pixel_spacing_mm  square pixel size in mm (PixelSpacing and ImagerPixelSpacing)
    window_centers, window_widths  one or more VOI windows in stored-value units (rescale is identity)
    window_explanations  one name per window (default "DEFAULT" for one window, else WINDOW1, ...)
    photometric       "MONOCHROME2" (dense tissue bright) or "MONOCHROME1"
    transfer_syntax   a pydicom UID; default Explicit VR Little Endian. RLE Lossless and JPEG 2000
                      Lossless are encoded when the installed plugins can (``writable_transfer_syntaxes``)
    bits_stored       1..16; the stored values must fit
    patient_id, patient_name, study_uid, series_uid, sop_uid  (UIDs are generated when None)
    extra             further attributes by keyword, set last (they override the defaults)
    """

    laterality: str
    view: str
    pixel_spacing_mm: float
    window_centers: Sequence[float]
    window_widths: Sequence[float]
    window_explanations: Sequence[str] | None = None
    photometric: str = "MONOCHROME2"
    transfer_syntax: Any = None
    bits_stored: int = 12
    patient_id: str = "ANON"
    patient_name: str = "ANON"
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    extra: dict[str, Any] | None = None


def write_dicom(path, pixels: np.ndarray, header: DicomHeader) -> Path:
    """Write one Digital Mammography X-Ray Image (For Presentation) DICOM file.

    pixels  (H, W) unsigned integers, stored values exactly as given (no inversion: for
            MONOCHROME1 pass values where dense tissue is LOW); must fit in ``header.bits_stored``.
    Returns the path written. Raises ImagingError for pixels or header values a reader would reject.
    """
    arr, transfer_syntax = _checked_pixels(pixels, header)
    photometric = str(header.photometric).upper()
    sop_uid = header.sop_uid or uid.generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_uid)
    _set_general(ds, header, sop_uid)
    _set_mammography(ds, header, photometric)
    _set_pixels(ds, arr, header, photometric)
    for key, value in (header.extra or {}).items():
        setattr(ds, key, value)
    return _encode_and_save(ds, arr, transfer_syntax, Path(path))


def _checked_pixels(pixels: np.ndarray, header: DicomHeader) -> tuple[np.ndarray, uid.UID]:
    """The pixels as contiguous uint8/uint16 (H, W) and the transfer syntax, after every check."""
    transfer_syntax = uid.UID(str(header.transfer_syntax or uid.ExplicitVRLittleEndian))
    arr = np.asarray(pixels)
    bits_stored = header.bits_stored
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
    _check_header(header)
    if str(transfer_syntax) not in writable_transfer_syntaxes():
        raise ImagingError(
            f"Cannot write transfer syntax {transfer_syntax.name} here: no working encoder. "
            f"Use one of: {', '.join(uid.UID(t).name for t in writable_transfer_syntaxes())}.")
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    return np.ascontiguousarray(arr.astype(dtype)), transfer_syntax


def _check_header(header: DicomHeader) -> None:
    """Raise ImagingError for a laterality, photometric, window or spacing a reader would reject."""
    laterality = str(header.laterality).upper()
    if laterality not in {"L", "R"}:
        raise ImagingError(f"laterality must be 'L' or 'R', got {laterality!r}.")
    photometric = str(header.photometric).upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise ImagingError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}.")
    centers, widths = _window_values(header)
    if not centers or len(centers) != len(widths):
        raise ImagingError("window_centers and window_widths need the same, non-zero, number of values.")
    if min(widths) < 1:
        raise ImagingError("Every window width must be at least 1 (DICOM PS3.3 C.11.2.1.2).")
    spacing = header.pixel_spacing_mm
    if not (spacing and float(spacing) > 0):
        raise ImagingError(f"pixel_spacing_mm must be a positive number, got {spacing!r}.")


def _window_values(header: DicomHeader) -> tuple[list[float], list[float]]:
    return ([float(c) for c in np.atleast_1d(header.window_centers)],
            [float(w) for w in np.atleast_1d(header.window_widths)])


def _file_meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian  # set to the real one after encoding
    meta.ImplementationClassUID = uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CONCEPTLENS"
    return meta


def _set_general(ds: Dataset, header: DicomHeader, sop_uid: str) -> None:
    """SOP common, general image, patient, study, series and equipment modules."""
    now = _dt.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyInstanceUID = header.study_uid or uid.generate_uid()
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "MG"
    ds.SeriesInstanceUID = header.series_uid or uid.generate_uid()
    ds.SeriesNumber = 1
    ds.Manufacturer = "ConceptLens"
    ds.FrameOfReferenceUID = uid.generate_uid()


def _set_mammography(ds: Dataset, header: DicomHeader, photometric: str) -> None:
    """DX and MG image modules: laterality, view, intensity relationship, VOI windows, spacing."""
    laterality = str(header.laterality).upper()
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.ViewPosition = str(header.view).upper()
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
    centers, widths = _window_values(header)
    ds.WindowCenter = centers if len(centers) > 1 else centers[0]
    ds.WindowWidth = widths if len(widths) > 1 else widths[0]
    names = list(header.window_explanations or ([] if len(centers) > 1 else ["DEFAULT"]))
    names += [f"WINDOW{i + 1}" for i in range(len(names), len(centers))]
    ds.WindowCenterWidthExplanation = names if len(names) > 1 else names[0]
    ds.VOILUTFunction = "LINEAR"
    spacing = f"{float(header.pixel_spacing_mm):.6g}"
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


def _set_pixels(ds: Dataset, arr: np.ndarray, header: DicomHeader, photometric: str) -> None:
    """Image pixel module: one grey sample per pixel, unsigned, ``bits_stored`` of 8 or 16 allocated."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 8 if header.bits_stored <= 8 else 16
    ds.BitsStored = int(header.bits_stored)
    ds.HighBit = int(header.bits_stored) - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()


def _encode_and_save(ds: Dataset, arr: np.ndarray, transfer_syntax: uid.UID, path: Path) -> Path:
    """Compress the pixels when the transfer syntax asks for it, then write the file."""
    if transfer_syntax.is_compressed:
        try:
            ds.compress(transfer_syntax, arr, generate_instance_uid=False)
        except Exception as exc:  # encoder plugins raise assorted types
            raise ImagingError(f"Encoding to {transfer_syntax.name} failed: {exc}") from exc
        ds.LossyImageCompression = "00"
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
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


# ---------------------------------------------------------------- reading files
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
)
PLAIN_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".pgm": "PGM"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ""}
#: File name endings the importers pick up (DICOM files without an ending are found by folder ingest).
IMAGE_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", *PLAIN_SUFFIXES})


def sniff_format(head: bytes) -> str | None:
    """'DICOM', 'PNG', 'JPEG', 'TIFF', 'PGM' from a file's first bytes (>= 132), or None if unknown."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if _PGM_HEADER.match(head):
        return "PGM"
    return None


#: Bytes a file may hold per declared pixel limit: 8 (a 64-bit or 16-bit RGBA sample) plus 64 MiB of header,
#: so the size check never refuses a file whose pixels fit but stops a file read being the memory attack.
_BYTES_PER_PIXEL = 8
_HEADER_ALLOWANCE = 64 << 20


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header declares about its pixels, read without decoding them (``read_header``).

    rows, cols  the image's size; frames  DICOM NumberOfFrames or TIFF pages; samples  per pixel
    """

    format: str
    rows: int
    cols: int
    frames: int = 1
    samples: int = 1

    @property
    def n_pixels(self) -> int:
        """rows x columns x frames: what the cap (``settings.max_pixels``) is checked against."""
        return int(self.rows) * int(self.cols) * max(int(self.frames), 1)


def _png_header(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImagingError("the PNG file has no image header (IHDR); it is truncated or damaged.")
    cols, rows = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(data[25], 1)
    return ImageHeader("PNG", rows, cols, 1, samples)


# JPEG start-of-frame markers (baseline, extended, progressive, lossless, JPEG-LS), not DHT/JPG/DAC
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}


def _jpeg_header(data: bytes, fmt: str = "JPEG") -> ImageHeader:
    """The frame header of a JPEG (or JPEG-LS) stream: walk the marker segments up to the SOF."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        if marker in _SOF_MARKERS and i + 10 <= len(data):
            rows, cols = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return ImageHeader(fmt, rows, cols, 1, int(data[i + 9]))
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ImagingError("the JPEG file has no frame header; it is truncated or damaged.")


# Netpbm grey map (the original mini-MIAS files): "P5" (binary) or "P2" (ASCII), then width, height and
# maxval separated by whitespace, with "#" comments allowed between the fields.
_PGM_HEADER = re.compile(rb"P[25](?:\s+(?:#[^\n]*\n\s*)*(\d+)){3}\s")


def _pgm_header(data: bytes) -> ImageHeader:
    m = _PGM_HEADER.match(data[:4096])
    if m is None:
        raise ImagingError("the PGM file has no complete header (P5/P2, width, height, maxval).")
    cols, rows = (int(v) for v in re.findall(rb"\d+", re.sub(rb"#[^\n]*\n", b" ", m.group(0)[2:]))[:2])
    return ImageHeader("PGM", rows, cols)


def _j2k_header(data: bytes) -> ImageHeader | None:
    """The SIZ segment of a JPEG 2000 codestream (bare, or inside a JP2 file's jp2c box), else None."""
    at = data.find(b"\xff\x4f\xff\x51")
    if at < 0 or at + 24 > len(data):
        return None
    xsiz, ysiz, xo, yo = (int.from_bytes(data[at + 8 + 4 * k:at + 12 + 4 * k], "big") for k in range(4))
    return ImageHeader("JPEG 2000", ysiz - yo, xsiz - xo)


def _tiff_header(data: bytes) -> ImageHeader:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            page = tf.pages.first
            return ImageHeader("TIFF", int(page.imagelength), int(page.imagewidth) * max(int(page.imagedepth), 1),
                               len(tf.pages), int(page.samplesperpixel))
    except Exception as exc:  # tifffile raises assorted types on damaged files
        raise ImagingError(f"the TIFF file cannot be read ({type(exc).__name__}: {exc}).") from exc


def _dicom_header(data: bytes) -> ImageHeader:
    """Rows x Columns x NumberOfFrames from a header read that stops before the pixel data."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except InvalidDicomError:
        ds = None
    except Exception as exc:
        raise ImagingError(f"the DICOM file is truncated or corrupt ({type(exc).__name__}: {exc}).") from exc
    if ds is None:
        try:  # old files without the 128-byte preamble
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        except Exception:
            ds = None
    if ds is None or "Rows" not in ds or "Columns" not in ds:
        return ImageHeader("DICOM", 0, 0)  # no image header: the full read says what the file is
    try:
        return ImageHeader("DICOM", int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1),
                           int(ds.get("SamplesPerPixel", 1) or 1))
    except (TypeError, ValueError) as exc:
        raise ImagingError(f"the DICOM header's image size is not a number ({exc}).") from exc


def read_header(data: bytes, fmt: str | None = None) -> ImageHeader:
    """The pixel size a file's bytes declare (DICOM, PNG, JPEG, TIFF, PGM), read from the header only.

    ``fmt`` as ``sniff_format`` gives it (sniffed when None). Raises ImagingError for an unknown
    or damaged header; no pixel is decoded and nothing the size of the image is allocated."""
    fmt = fmt or sniff_format(data[:132])
    if fmt == "PNG":
        return _png_header(data)
    if fmt == "JPEG":
        return _jpeg_header(data)
    if fmt == "TIFF":
        return _tiff_header(data)
    if fmt == "PGM":
        return _pgm_header(data)
    if fmt == "DICOM":
        return _dicom_header(data)
    raise ImagingError("the file is not a DICOM, PNG, JPEG, TIFF or PGM image.")


def check_pixel_budget(header: ImageHeader, max_pixels: int, name: str) -> None:
    """Raise ImageTooLargeError when ``header`` declares more than ``max_pixels`` pixels."""
    if header.n_pixels > max_pixels:
        frames = f" x {header.frames} frames" if header.frames > 1 else ""
        raise ImageTooLargeError(
            f"{name}: the {header.format} header declares {header.cols} x {header.rows} pixels{frames} "
            f"({header.n_pixels / 1e6:.1f} megapixels), more than the {max_pixels / 1e6:.0f} megapixels allowed "
            "(CONCEPTLENS_MAX_PIXELS). It was refused before decoding: no mammogram is that large, so the file "
            "is damaged or made to exhaust memory.")


def max_file_bytes(max_pixels: int) -> int:
    """The largest file ``load_image`` reads for a pixel cap (8 bytes per pixel plus 64 MiB)."""
    return _BYTES_PER_PIXEL * int(max_pixels) + _HEADER_ALLOWANCE


def _json_value(v: Any) -> Any:
    """A pydicom element value as plain JSON (lists, floats, ints, strings)."""
    if isinstance(v, (MultiValue, list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return str(v)


def _header_meta(ds, show_phi: bool) -> dict:
    """Header summary: the non-identifying keywords always, identifying ones only with show_phi."""
    keys = list(_META_KEYWORDS) + (sorted(PHI_KEYWORDS) if show_phi else [])
    meta = {}
    for key in keys:
        if key in ds and key != "PixelData":
            value = ds.get(key)
            if value is not None and value != "":
                meta[key] = _json_value(value)
    if not show_phi:
        meta["deidentified"] = True
    return meta


def _fail(path, what: str, todo: str) -> ImagingError:
    return ImagingError(f"{Path(path).name}: {what} {todo}".strip())


_CONTENT_MAGIC = (
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
    (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"RIFF", "a RIFF file (WebP, WAV or AVI)"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image (JP2)"), (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"{\\rtf", "an RTF document"), (b"\xd0\xcf\x11\xe0", "an Office document"),
)


def describe_content(data: bytes) -> str:
    """What a file's first bytes look like, for messages about mislabelled files ("a text file")."""
    if not data:
        return "an empty file"
    for magic, what in _CONTENT_MAGIC:
        if data.startswith(magic):
            return what
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the 4 KiB boundary is still text
        text = head[:exc.start].decode("utf-8") if exc.start >= len(head) - 3 else None
    if text is not None and all(ch.isprintable() or ch in "\r\n\t\f" for ch in text):
        low = text.lstrip().lower()
        if low.startswith(("<!doctype html", "<html")):
            return "an HTML page"
        if low.startswith("<?xml"):
            return "an XML file"
        return "a text file"
    return "binary data of an unknown type"


def _read_dataset(path: Path, data: bytes):
    """Parse DICOM bytes; raise ImagingError for non-DICOM, truncated or corrupt files."""
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        pass
    except Exception as exc:  # truncated headers raise EOFError, struct errors, ValueError...
        raise _fail(path, f"the DICOM file is truncated or corrupt ({type(exc).__name__}: {exc}).",
                    "Copy it again from the PACS or the original media.") from exc
    try:  # old files without the 128-byte preamble; accept only if it really is an image header
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "Rows" in ds and "Columns" in ds and "PixelData" in ds:
            return ds
    except Exception:
        pass
    raise _fail(path, f"this is not a DICOM file (it looks like {describe_content(data)}; no DICOM header found).",
                "Check the file; only DICOM, PNG, JPEG and TIFF images can be opened.")


def _as_list(value) -> list:
    """A DICOM value of multiplicity 1..n as a list ([] when absent)."""
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _dicom_windows(ds) -> tuple[list[Window], str]:
    """Every window in the header: VOI LUT Sequence items first, then centre/width pairs."""
    windows: list[Window] = []
    items = list(ds.get("VOILUTSequence") or [])
    for i, (item, lut) in enumerate(zip(items, voi_lut_tables(ds))):
        if lut is None:
            continue  # a malformed LUT item is skipped; the centre/width windows still apply
        n = len(lut.table)
        name = str(item.get("LUTExplanation", "") or f"VOI LUT {i + 1}")
        windows.append(Window(center=lut.first_mapped + n / 2, width=float(n), name=name, lut=lut))
    cs, ws = _as_list(ds.get("WindowCenter")), _as_list(ds.get("WindowWidth"))
    names = [str(e) for e in _as_list(ds.get("WindowCenterWidthExplanation"))]
    for i, (c, w) in enumerate(zip(cs, ws)):
        try:
            c, w = float(c), float(w)
        except (TypeError, ValueError):
            continue
        if w > 0:
            windows.append(Window(center=c, width=w, name=names[i] if i < len(names) else f"WINDOW {i + 1}"))
    fn = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return windows, fn if fn in VOI_FUNCTIONS else "LINEAR"


def _dicom_view(ds) -> str:
    view = str(ds.get("ViewPosition", "") or "").upper()
    if view:
        return view
    for item in ds.get("ViewCodeSequence") or []:
        code = str(item.get("CodeValue", ""))
        if code in _VIEW_BY_CODE:
            return _VIEW_BY_CODE[code]
        meaning = str(item.get("CodeMeaning", "")).lower()
        for v, (_, text) in VIEW_CODES.items():
            if meaning == text:
                return v
    # CBIS-DDSM puts the view in PatientOrientation ("CC" / "MLO"); accept only a known view name
    po = ds.get("PatientOrientation")
    po = "" if po is None else (po if isinstance(po, str) else "\\".join(str(x) for x in po))
    return po.upper() if po.upper() in VIEW_CODES else ""


def _dicom_spacing(ds) -> tuple[float | None, str]:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2:
            try:
                dy, dx = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
            if dy > 0 and dx > 0:
                return (dy + dx) / 2, key
    return None, ""


def _check_embedded_size(ds, path, max_pixels: int) -> None:
    """A compressed frame's own header (JPEG, JPEG-LS, JPEG 2000) must declare no more pixels than
    Rows x Columns: decoders allocate what the codestream says, whatever the DICOM header says."""
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is None or not ts.is_compressed or "PixelData" not in ds:
        return
    try:
        first = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    except Exception:  # noqa: BLE001 - no readable frame: the decoder reports the damage
        return
    embedded = _j2k_header(first[:1 << 16])
    if embedded is None and first[:2] == b"\xff\xd8":
        try:
            embedded = _jpeg_header(first)
        except ImagingError:
            embedded = None
    if embedded is None:
        return
    check_pixel_budget(embedded, max_pixels, Path(path).name)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if embedded.rows * embedded.cols > rows * cols:
        raise _fail(path, f"its compressed pixel data holds a {embedded.cols} x {embedded.rows} image but the "
                          f"header declares {cols} x {rows}.", "The file is damaged or forged; export it again.")


def _stored_values(ds, path) -> np.ndarray:
    """Decoded stored values (H, W), masked to BitsStored (sign-extended when signed)."""
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and ts.is_compressed:
        try:
            available = get_decoder(ts).is_available
        except (NotImplementedError, ValueError):
            available = False
        if not available:
            raise _fail(path, f"its pixel data is compressed as {ts.name}, which cannot be decoded here.",
                        "Convert it to an uncompressed or lossless (RLE, JPEG-LS, JPEG 2000) DICOM, "
                        "e.g. with dcmtk 'dcmdjpeg' or gdcm 'gdcmconv --raw'.")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise _fail(path, f"its pixel data cannot be decoded ({type(exc).__name__}: {exc}); the file is "
                          "probably truncated or damaged.",
                    "Copy it again from the PACS or the original media.") from exc
    if arr.ndim != 2:
        raise _fail(path, f"the decoded pixel data has shape {arr.shape}, not one grey frame.",
                    "Export a single 2-D grey image.")
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or arr.dtype.itemsize * 8)
    if bits < arr.dtype.itemsize * 8:
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        u = arr.astype(np.int64) & ((1 << bits) - 1)
        if signed:
            u = np.where(u >= (1 << (bits - 1)), u - (1 << bits), u)
        arr = u
    return arr


def _modality_lut(ds, stored: np.ndarray) -> np.ndarray:
    """Stored values -> modality values (Modality LUT Sequence or RescaleSlope/Intercept), float32."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(stored, ds), np.float32)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    out = stored.astype(np.float32)
    if slope != 1 or intercept != 0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def _load_dicom(path: Path, data: bytes, show_phi: bool, max_pixels: int) -> tuple:
    ds = _read_dataset(path, data)
    if "PixelData" not in ds:
        other = next((k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds), None)
        what = ("its pixels are floating point, which mammograms never are" if other else
                "it holds no image (for example a report, a presentation state or a structured report)")
        raise _fail(path, f"this DICOM file has no pixel data: {what}.", "Open the image file of the study instead.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise _fail(path, f"this DICOM holds {frames} frames (tomosynthesis or a multi-frame object).",
                    "Only 2-D mammograms can be opened: export the 2-D or synthesized 2-D view.")
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper()
    if spp != 1 or photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise _fail(path, f"this is a colour image ({photometric}, {spp} samples per pixel), not a grey mammogram.",
                    "Open the original grey DICOM instead of a screenshot or colour export.")
    _check_embedded_size(ds, path, max_pixels)
    stored = _stored_values(ds, path)
    pixels = _modality_lut(ds, stored)
    windows, fn = _dicom_windows(ds)
    spacing, spacing_key = _dicom_spacing(ds)
    lat = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").upper()[:1]
    lat = lat if lat in {"L", "R"} else ""
    meta = _header_meta(ds, show_phi)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    meta.update(format="DICOM", transfer_syntax=str(ts.name) if ts else "", rows=int(pixels.shape[0]),
                cols=int(pixels.shape[1]), spacing_source=spacing_key,
                burned_in_annotation=str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES")
    bits = int(ds.get("BitsStored", 16) or 16)
    return pixels, photometric, bits, lat, _dicom_view(ds), spacing, windows, fn, meta


def _load_plain(path: Path, data: bytes, fmt: str) -> tuple:
    """PNG / JPEG via Pillow, TIFF via tifffile; grey, or colour whose channels are equal. Decoded from
    ``data`` (the bytes already read and checked), never from the path again."""
    if fmt == "TIFF":
        try:
            with tifffile.TiffFile(io.BytesIO(data)) as tf:
                if len(tf.pages) > 1:
                    raise _fail(path, f"this TIFF holds {len(tf.pages)} pages.",
                                "Only single 2-D images can be opened; save one page per file.")
                arr = tf.pages[0].asarray()
        except ImagingError:
            raise
        except Exception as exc:
            raise _fail(path, f"the TIFF file cannot be read ({type(exc).__name__}: {exc}).",
                        "Check that the file is complete.") from exc
    else:
        try:
            with Image.open(io.BytesIO(data)) as im:
                if getattr(im, "n_frames", 1) > 1:
                    raise _fail(path, f"this {fmt} holds {im.n_frames} frames.", "Save a single image per file.")
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                arr = np.asarray(im)
        except ImagingError:
            raise
        except Image.DecompressionBombError as exc:  # Pillow's own guard, behind ours
            raise ImageTooLargeError(f"{Path(path).name}: {exc}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise _fail(path, f"the {fmt} file cannot be read ({exc}); it is probably truncated or damaged.",
                        "Copy it again.") from exc
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):  # drop alpha
            arr = arr[..., :-1]
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        else:
            spread = np.abs(arr.astype(np.int32) - arr[..., :1].astype(np.int32)).max(axis=2)
            tol = 8 if fmt == "JPEG" else 0  # JPEG chroma noise on a grey picture saved as colour
            if float(spread.mean()) > tol / 4 or int(spread.max()) > max(tol * 4, 0):
                raise _fail(path, "this is a colour image, not a grey mammogram.",
                            "Open the original grey image (DICOM or a grey PNG/TIFF).")
            arr = np.rint(arr.astype(np.float32).mean(axis=2)).astype(arr.dtype)
    if arr.ndim != 2:
        raise _fail(path, f"the image has shape {arr.shape}, not a 2-D grey image.", "Export a single grey image.")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise _fail(path, f"pixel type {arr.dtype} is not supported.", "Save the image as 8- or 16-bit grey.")
    if np.issubdtype(arr.dtype, np.integer):
        bits = 8 if arr.dtype.itemsize == 1 else 16
        if arr.dtype.itemsize > 2 and arr.size:  # Pillow gives 16-bit PNGs as int32
            bits = 16 if int(arr.max()) < 65536 and int(arr.min()) >= 0 else 32
    else:
        bits = 32
    pixels = arr.astype(np.float32)
    meta = {"format": fmt, "rows": int(arr.shape[0]), "cols": int(arr.shape[1]), "BitsStored": bits,
            "deidentified": True}
    return pixels, "MONOCHROME2", bits, "", "", None, [], "LINEAR", meta


def _read_checked(path: Path, max_pixels: int, expected_sha256: str | None) -> tuple[bytes, str]:
    """The file's bytes and SHA-256, after the size check and (when given) the hash check."""
    try:
        size = path.stat().st_size
        if size > max_file_bytes(max_pixels):
            raise ImageTooLargeError(
                f"{path.name}: the file holds {size / 2**20:.0f} MiB, more than an image of at most "
                f"{max_pixels / 1e6:.0f} megapixels needs (CONCEPTLENS_MAX_PIXELS); it was not read.")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageMissingError(f"{path}: file not found.") from exc
    except OSError as exc:
        raise ImagingError(f"{path}: cannot be read ({exc.strerror or exc}).") from exc
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise ImageChangedError(
            f"{path.name}: the file changed after it was ingested (SHA-256 {sha[:12]}..., stored "
            f"{expected_sha256[:12]}...). It is not shown: drawings and caches belong to the original "
            "pixels. Restore the original file, or ingest the new one as a new image.")
    return data, sha


def _unknown_type(path: Path, data: bytes) -> ImagingError:
    """The message for a file whose first bytes are no image: says what it seems to be instead."""
    looks = describe_content(data)
    claimed = PLAIN_SUFFIXES.get(path.suffix.lower())
    if claimed:
        return ImagingError(f"{path.name} is not a valid {claimed} (it looks like {looks}). Check the file; "
                            "it may have been renamed or saved in another format.")
    return _fail(path, f"the file type ({path.suffix or 'no extension'}) is not a supported image "
                       f"(it looks like {looks}).", "Use DICOM, PNG, JPEG or TIFF.")


def load_image(path, *, show_phi: bool = False, max_pixels: int | None = None,
               expected_sha256: str | None = None) -> Mammogram:
    """Read a mammogram from a DICOM, PNG (8/16-bit), JPEG or TIFF file.

    DICOM: decodes any transfer syntax the pylibjpeg plugins handle (RLE, JPEG baseline/extended/
    lossless, JPEG-LS, JPEG 2000), masks to BitsStored, applies the modality LUT (or rescale),
    lists every window, and reads laterality (ImageLaterality, then Laterality) and view
    (ViewPosition, then ViewCodeSequence). When the file does not give the laterality it is
    inferred from the breast's chest-wall side by the hanging convention and ``laterality_inferred``
    is set. ``meta`` is de-identified unless ``show_phi``. Raises ImagingError for anything that is
    not a readable single-frame grey 2-D image, with what is wrong and what to do.

    max_pixels       the cap on rows x columns x frames (default ``CONCEPTLENS_MAX_PIXELS``), checked
                     on the file size and the header before decoding: ``ImageTooLargeError``
    expected_sha256  the stored hash of the file: the bytes read are checked before decoding
                     (``ImageChangedError``); a missing file raises ``ImageMissingError``
    """
    path = Path(path)
    max_pixels = max_pixels_setting() if max_pixels is None else int(max_pixels)
    data, sha = _read_checked(path, max_pixels, expected_sha256)
    if not data:
        raise _fail(path, "the file is empty.", "Copy it again.")
    fmt = sniff_format(data[:132])
    if fmt is None and path.suffix.lower() in DICOM_SUFFIXES:
        fmt = "DICOM"  # preamble-less DICOM; _read_dataset decides
    if fmt is None:
        raise _unknown_type(path, data)
    try:
        header = read_header(data, fmt)
    except ImagingError as exc:
        raise _fail(path, str(exc), "") from exc
    check_pixel_budget(header, max_pixels, path.name)
    if fmt == "DICOM":
        fields = _load_dicom(path, data, show_phi, max_pixels)
    else:
        fields = _load_plain(path, data, fmt)
    pixels, photometric, bits, lat, view, spacing, windows, fn, meta = fields
    if pixels.size == 0 or min(pixels.shape) < 2:
        raise _fail(path, f"the image is empty ({pixels.shape[0]} x {pixels.shape[1]} pixels).", "")
    inferred = False
    if not lat:
        mask = segment_breast(-pixels if photometric == "MONOCHROME1" else pixels)
        if mask.any():
            lat = "R" if chest_wall_side(mask) == "right" else "L"
            inferred = True
    meta["laterality_inferred"] = inferred
    return Mammogram(pixels=np.ascontiguousarray(pixels, np.float32), photometric=photometric,
                     bits_stored=int(bits), laterality=lat, view=view, pixel_spacing_mm=spacing,
                     windows=windows, voi_lut_function=fn, meta=meta, path=path,
                     sha256=sha, laterality_inferred=inferred, format=fmt)

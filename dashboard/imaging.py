"""Mammogram imaging: read and write DICOM, display windows, breast mask, model-space frames.

Coordinates (see ARCHITECTURE.md): *source space* is the pixel grid of the stored file
(x = column, y = row); *model space* is that grid resampled to the model card's pixel spacing and
mirrored, when needed, so that the chest wall is on the LEFT. ``Frame`` converts between them.

Everything here is vectorised numpy / scipy / scikit-image; nothing runs at import time.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
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

PHI_KEYS = PHI_KEYWORDS  # the name dashboard.importers uses

# Header attributes summarised into ``Mammogram.meta`` (non-identifying ones always kept).
_META_KEYWORDS = (
    "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName", "SecondaryCaptureDeviceManufacturer", "ImageType",
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


# ---------------------------------------------------------------- data model
@dataclass(frozen=True)
class VoiLut:
    """A VOI LUT Sequence item: stored-value ``x`` maps to ``table[clip(x - first_mapped)]``.

    table  (N,) output values in 0 .. 2**bits - 1
    """

    first_mapped: int
    bits: int
    table: np.ndarray


@dataclass(frozen=True)
class Window:
    """A display window in modality-LUT output units (e.g. 12-bit detector values).

    ``name`` comes from WindowCenterWidthExplanation / LUTExplanation, or "AUTO" when computed.
    ``lut`` is set for windows that come from a VOI LUT Sequence (center/width then describe the
    LUT's input range, for information only).
    """

    center: float
    width: float
    name: str = ""
    lut: VoiLut | None = None


@dataclass
class Mammogram:
    """One 2-D mammogram as read from a file, in source space.

    pixels            (H, W) float32, stored values after the modality LUT / rescale, NOT inverted:
                      for MONOCHROME1 dense tissue is dark here (``invert`` is True); use
                      ``window_image`` or ``prepare_model_image`` for dense-bright images.
    photometric       "MONOCHROME1" or "MONOCHROME2" (plain images: "MONOCHROME2")
    bits_stored       significant bits of the stored values (8 or 16 for plain images)
    laterality        "L", "R" or "" (unknown); ``laterality_inferred`` True when guessed from the
                      breast's position because the file did not say
    view              "CC", "MLO", ... or ""
    pixel_spacing_mm  square pixel size in mm, or None when the file does not say
    windows           every window the file carries (VOI LUT items and centre/width pairs), in order
    voi_lut_function  "LINEAR", "LINEAR_EXACT" or "SIGMOID" (DICOM VOILUTFunction)
    meta              JSON-ready header summary, de-identified unless loaded with show_phi=True
    sha256            hex SHA-256 of the file bytes
    """

    pixels: np.ndarray
    photometric: str
    bits_stored: int
    laterality: str
    view: str
    pixel_spacing_mm: float | None
    windows: list[Window]
    voi_lut_function: str
    meta: dict
    path: Path
    sha256: str
    laterality_inferred: bool = False
    format: str = "DICOM"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)

    @property
    def invert(self) -> bool:
        """True when low values are dense tissue (MONOCHROME1) and must be inverted for display."""
        return self.photometric == "MONOCHROME1"


# ---------------------------------------------------------------- windows (PS3.3 C.11.2.1.2)
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def apply_window(pixels: np.ndarray, center: float, width: float, function: str = "LINEAR",
                 invert: bool = False) -> np.ndarray:
    """Map values through a DICOM VOI window to uint8 display values 0..255 (same shape).

    Exactly DICOM PS3.3 C.11.2.1.2 with y_min = 0, y_max = 255, rounded to the nearest integer:
    LINEAR        x <= c - 0.5 - (w-1)/2 -> 0;  x > c - 0.5 + (w-1)/2 -> 255;
                  else ((x - (c - 0.5)) / (w - 1) + 0.5) * 255            (w >= 1)
    LINEAR_EXACT  x <= c - w/2 -> 0;  x > c + w/2 -> 255;  else ((x - c) / w + 0.5) * 255   (w > 0)
    SIGMOID       255 / (1 + exp(-4 (x - c) / w))                         (w > 0)
    ``invert`` flips the output (255 - y), for MONOCHROME1 data.
    """
    fn = str(function or "LINEAR").upper()
    if fn not in VOI_FUNCTIONS:
        raise ImagingError(f"Unknown VOI LUT function {function!r}; expected one of {', '.join(VOI_FUNCTIONS)}.")
    c, w = float(center), float(width)
    if fn == "LINEAR" and w < 1:
        raise ImagingError(f"Window width {w} is below 1, which DICOM does not allow for LINEAR windows.")
    if fn != "LINEAR" and w <= 0:
        raise ImagingError(f"Window width {w} must be positive for {fn} windows.")
    x = np.asarray(pixels, dtype=np.float64)
    if fn == "LINEAR":
        lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
        y = ((x - (c - 0.5)) / max(w - 1, 1e-12) + 0.5) * 255.0
        y = np.where(x <= lo, 0.0, np.where(x > hi, 255.0, y))
    elif fn == "LINEAR_EXACT":
        y = ((x - c) / w + 0.5) * 255.0
        y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, y))
    else:
        with np.errstate(over="ignore"):
            y = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    out = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def apply_voi_lut(pixels: np.ndarray, lut: VoiLut, invert: bool = False) -> np.ndarray:
    """Map values through a VOI LUT Sequence table to uint8 (values below/above the table clamp)."""
    idx = np.clip(np.rint(np.asarray(pixels, np.float64)) - lut.first_mapped, 0, len(lut.table) - 1)
    top = float((1 << int(lut.bits)) - 1) or 1.0
    out = np.clip(np.rint(lut.table[idx.astype(np.int64)] * (255.0 / top)), 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def auto_window(pixels: np.ndarray, mask: np.ndarray | None = None, low_pct: float = 0.5,
                high_pct: float = 99.5) -> Window:
    """A robust window from the breast's intensity percentiles (for files that carry none).

    ``mask`` (H, W) bool restricts the statistics to the breast; without it the breast is segmented.
    """
    x = np.asarray(pixels, np.float32)
    if mask is None:
        mask = segment_breast(x)
    vals = x[mask] if mask.any() else x.ravel()
    step = max(1, vals.size // 2_000_000)  # percentiles of a regular subsample: same answer, less time
    lo, hi = np.percentile(vals[::step], [low_pct, high_pct])
    width = max(float(hi - lo), 1.0)
    return Window(center=float(lo) + width / 2, width=width, name="AUTO")


def default_window(m: Mammogram) -> Window:
    """The file's first window (as a viewer would open it), else a robust automatic window."""
    if m.windows:
        return m.windows[0]
    work = -m.pixels if m.invert else m.pixels
    w = auto_window(work)
    if m.invert:  # the window was computed on negated values; express it in stored units
        w = Window(center=-w.center, width=w.width, name=w.name)
    return w


def window_image(m: Mammogram, window: Window | None = None) -> np.ndarray:
    """The source-space display image (H, W) uint8, dense tissue bright, through ``window``."""
    w = window or default_window(m)
    if w.lut is not None:
        return apply_voi_lut(m.pixels, w.lut, invert=m.invert)
    fn = m.voi_lut_function if w.name != "AUTO" else "LINEAR"
    return apply_window(m.pixels, w.center, w.width, fn, invert=m.invert)


# ---------------------------------------------------------------- breast mask
def _block_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (the last < k rows/cols are dropped). (H, W) -> (H//k, W//k) float32."""
    if k <= 1:
        return np.asarray(img, np.float32)
    h, w = (img.shape[0] // k) * k, (img.shape[1] // k) * k
    return img[:h, :w].astype(np.float32).reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def segment_breast(img: np.ndarray, *, work_size: int = 512) -> np.ndarray:
    """Breast mask (H, W) bool of a dense-bright grey image (any units).

    Otsu threshold between background and tissue on a ~``work_size`` px thumbnail, a small opening
    that cuts thin film borders and letters off the breast, the largest connected component (so
    film labels and markers, which are separate bright blobs, drop out), then hole filling. The
    mask is scaled back to the input size by nearest neighbour.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    a = np.asarray(img)
    if a.ndim != 2 or min(a.shape) < 2:
        raise ImagingError(f"segment_breast needs a 2-D grey image; got shape {a.shape}.")
    k = max(1, int(np.ceil(max(a.shape) / work_size)))
    t = _block_mean(a, k)
    if not np.isfinite(t).all():
        t = np.nan_to_num(t, nan=float(np.nanmin(t)) if np.isfinite(t).any() else 0.0)
    if float(t.max()) <= float(t.min()):
        return np.zeros(a.shape, bool)
    thr = threshold_otsu(t)
    # Otsu lands between background and the tissue mean; the thin periphery of the breast is
    # darker than that, so step down towards the background level.
    bg = float(np.median(t[t <= thr]))
    m = t > bg + 0.35 * (thr - bg)
    r = max(1, round(min(t.shape) / 200))
    m = ndimage.binary_opening(m, structure=ndimage.generate_binary_structure(2, 1), iterations=r)
    labels, n = ndimage.label(m)
    if n == 0:
        return np.zeros(a.shape, bool)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    m = labels == counts.argmax()
    # Digitised film: edge strips and scanner borders along the image edge are thin bands that the
    # small opening leaves joined to the breast. A disk opening of ~3% of the short side removes
    # bands narrower than twice that; the breast, far wider, keeps its outline (its thin skin-line
    # periphery is restored by keeping the original mask pixels near what survived).
    R = max(2, round(0.03 * min(t.shape)))
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
    disk = xx ** 2 + yy ** 2 <= R ** 2
    core = ndimage.binary_opening(m, structure=disk)
    labels, n = ndimage.label(core)
    if n:
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        core = labels == counts.argmax()
        m &= ndimage.binary_dilation(core, structure=ndimage.generate_binary_structure(2, 1), iterations=max(1, R // 3))
    m = ndimage.binary_fill_holes(m)
    if k > 1:  # nearest-neighbour upsampling; edge rows/cols dropped by the block mean repeat the last
        rows = np.minimum(np.arange(a.shape[0]) // k, m.shape[0] - 1)
        cols = np.minimum(np.arange(a.shape[1]) // k, m.shape[1] - 1)
        m = m[rows[:, None], cols[None, :]]
    return m


def chest_wall_side(mask: np.ndarray, laterality: str = "") -> str:
    """'left' or 'right': the image side the chest wall is on, from the breast mask (H, W) bool.

    The breast is widest at the chest wall and tapers to the nipple, so the mask fills more of the
    rows in the outer tenth of its column range on the chest-wall side (this works whether or not
    the breast touches the image edge, e.g. on digitised film with a black margin). When the two
    sides are too close to call, ``laterality`` decides by the hanging convention (L: chest wall
    left, R: right); without it the side with more breast area wins.
    """
    m = np.asarray(mask, bool)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        lat = str(laterality).upper()[:1]
        if lat in {"L", "R"}:
            return "left" if lat == "L" else "right"
        raise ImagingError("No breast tissue was found in the image, so its orientation is unknown. "
                           "Check that the file is a mammogram and is not blank.")
    c0, c1 = int(cols[0]), int(cols[-1])
    band = max(1, (c1 - c0 + 1) // 10)
    left = m[:, c0:c0 + band].mean()
    right = m[:, c1 - band + 1:c1 + 1].mean()
    if abs(left - right) >= 0.02:
        return "left" if left > right else "right"
    lat = str(laterality).upper()[:1]
    if lat in {"L", "R"}:
        return "left" if lat == "L" else "right"
    mid = (m.shape[1]) / 2
    col_mass = m.sum(axis=0)
    return "left" if col_mass[: int(mid)].sum() >= col_mass[int(mid):].sum() else "right"


def crop_to_mask(img: np.ndarray, mask: np.ndarray, margin: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """Crop ``img`` (H, W[, C]) to the mask's bounding box plus ``margin`` px.

    Returns (cropped, (x0, y0)): the crop and its top-left corner in the input's pixels.
    """
    m = np.asarray(mask, bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        raise ImagingError("The mask is empty: there is no breast region to crop to.")
    y0, y1 = max(0, rows[0] - margin), min(m.shape[0], rows[-1] + 1 + margin)
    x0, x1 = max(0, cols[0] - margin), min(m.shape[1], cols[-1] + 1 + margin)
    return img[y0:y1, x0:x1], (int(x0), int(y0))


def crop_patch(img: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """The (size, size[, C]) patch whose top-left pixel is (x0, y0); zero outside ``img``."""
    a = np.asarray(img)
    x0, y0, size = int(x0), int(y0), int(size)
    if size <= 0:
        raise ImagingError(f"Patch size must be positive, got {size}.")
    out = np.zeros((size, size) + a.shape[2:], a.dtype)
    sy0, sy1 = max(y0, 0), min(y0 + size, a.shape[0])
    sx0, sx1 = max(x0, 0), min(x0 + size, a.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = a[sy0:sy1, sx0:sx1]
    return out


def _grid(extent: int, size: int, stride: int) -> np.ndarray:
    """Patch origins along one axis: every ``stride`` from 0, plus one flush with the far edge."""
    last = max(extent - size, 0)
    pos = np.arange(0, last + 1, stride)
    return pos if pos[-1] == last else np.append(pos, last)


def tile(mask: np.ndarray, size: int, stride: int, min_fraction: float = 0.0) -> np.ndarray:
    """Patch origins (K, 2) int64 of (x0, y0) in the mask's pixels whose breast fraction >= min_fraction.

    The grid steps by ``stride`` and adds a last row/column flush with the far edge, so every pixel
    is covered; an image smaller than ``size`` gets the single origin (0, 0) (patch zero-padded).
    Fractions come from an integral image, so all patches are scored at once. Row-major order.
    """
    m = np.asarray(mask, bool)
    if size <= 0 or stride <= 0:
        raise ImagingError(f"tile needs positive size and stride, got size={size}, stride={stride}.")
    h, w = m.shape
    ii = np.zeros((h + 1, w + 1), np.int64)
    ii[1:, 1:] = m.cumsum(0).cumsum(1)
    ys, xs = _grid(h, size, stride), _grid(w, size, stride)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    y1, x1 = np.minimum(y0 + size, h), np.minimum(x0 + size, w)
    count = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    keep = (count / float(size * size)) >= min_fraction
    return np.stack([x0[keep], y0[keep]], axis=1).astype(np.int64)


# ---------------------------------------------------------------- source <-> model space
@dataclass(frozen=True)
class Frame:
    """The map between source pixels and model pixels of one image.

    src_rows, src_cols  source image size (pixels)
    scale               source pixels per model pixel (model spacing / source spacing)
    flip                True when model space is the source mirrored left-right (chest wall was right)
    Points are (x, y) = (column, row) with integer values at pixel centres:
    x_model = (x_src + 0.5) / scale - 0.5, then x_model -> (w_model - 1) - x_model when flipped.
    """

    src_rows: int
    src_cols: int
    scale: float
    flip: bool

    @property
    def model_shape(self) -> tuple[int, int]:
        """(h, w) of the model-space image."""
        return (max(1, int(round(self.src_rows / self.scale))), max(1, int(round(self.src_cols / self.scale))))

    def to_model(self, xy) -> np.ndarray:
        """Source (..., 2) points (x, y) -> model-space points, float64."""
        p = np.asarray(xy, np.float64)
        out = (p + 0.5) / self.scale - 0.5
        if self.flip:
            out[..., 0] = (self.model_shape[1] - 1) - out[..., 0]
        return out

    def to_source(self, xy) -> np.ndarray:
        """Model-space (..., 2) points (x, y) -> source points, float64."""
        p = np.array(xy, np.float64)
        if self.flip:
            p[..., 0] = (self.model_shape[1] - 1) - p[..., 0]
        return (p + 0.5) * self.scale - 0.5


def resample(img: np.ndarray, frame: Frame, order: int = 1) -> np.ndarray:
    """Resample a source image (H, W) to the frame's model grid (h, w) float32, before any flip.

    Anti-aliased: an exact k x k block mean for the integer part of the scale, then a Gaussian
    (sigma = (s - 1) / 2 for the remaining factor s > 1) and linear interpolation at the model
    pixel centres, so the geometry is exactly ``Frame.to_model``.
    """
    from scipy import ndimage

    a = np.asarray(img, np.float32)
    k = max(1, int(np.floor(frame.scale + 1e-9)))
    a = _block_mean(a, k)
    s = frame.scale / k
    if s > 1:
        a = ndimage.gaussian_filter(a, sigma=(s - 1) / 2, mode="nearest")
    # block b's centre sits at source k*(b + 0.5) - 0.5, so block coords are source coords / k
    out = ndimage.affine_transform(a, matrix=[s, s], offset=[0.5 * s - 0.5] * 2,
                                   output_shape=frame.model_shape, order=order, mode="nearest")
    return out.astype(np.float32, copy=False)


def display_flip(laterality: str) -> bool:
    """Whether to mirror a model-space image for display (radiological hanging convention).

    Model space puts every chest wall on the left. Hung R | L, a right breast is shown with its
    chest wall on the right (mirrored) and a left breast as is, so the chest walls meet in the middle.
    """
    return str(laterality).upper()[:1] == "R"


def display_image(m: Mammogram, frame: Frame, window: Window | None = None) -> np.ndarray:
    """The viewer's picture of a mammogram: (h, w) uint8 on the frame's model grid, display orientation.

    The whole windowed source (``window_image``: film labels, markers and background stay visible;
    only the model image masks them) is resampled to the model spacing, mirrored like model space
    and then mirrored for display by ``display_flip(m.laterality)``, so a right breast shows its
    chest wall on the right and a left breast on the left (hung R | L, the chest walls meet).
    A model-space x maps to display x as ``w - 1 - x`` exactly when ``display_flip`` is True.
    """
    shown = resample(window_image(m, window).astype(np.float32), frame)  # (h, w), source orientation
    if frame.flip != display_flip(m.laterality):
        shown = shown[:, ::-1]
    return np.ascontiguousarray(np.clip(np.rint(shown), 0, 255).astype(np.uint8))


def source_to_display(frame: Frame, laterality: str, xy) -> np.ndarray:
    """Source (..., 2) points (x, y) -> points of ``display_image`` (model grid, display orientation)."""
    p = frame.to_model(xy)
    if display_flip(laterality):
        p[..., 0] = (frame.model_shape[1] - 1) - p[..., 0]
    return p


def display_to_source(frame: Frame, laterality: str, xy) -> np.ndarray:
    """Points of ``display_image`` (..., 2) -> source points (a click or drawing on the viewer)."""
    p = np.array(xy, np.float64)
    if display_flip(laterality):
        p[..., 0] = (frame.model_shape[1] - 1) - p[..., 0]
    return frame.to_source(p)


def prepare_model_image(m: Mammogram, spacing_mm: float, default_spacing_mm: float | None = None,
                        *, low_pct: float = 0.5, high_pct: float = 99.8):
    """The model's view of a mammogram: (img (h, w) float32 in [0, 1], mask (h, w) bool, Frame).

    Resamples (anti-aliased) to ``spacing_mm`` using the file's spacing, else ``default_spacing_mm``;
    inverts MONOCHROME1 so dense tissue is bright; segments the breast; mirrors so the chest wall
    is on the left (from the mask, laterality as tie-break); maps the breast's ``low_pct`` ..
    ``high_pct`` intensity percentiles to 0 .. 1 (clipped) and sets everything outside the breast
    (film labels, markers, background) to 0.
    """
    src_spacing = m.pixel_spacing_mm or default_spacing_mm
    if not src_spacing:
        raise ImagingError(
            "This image does not say its pixel size (no PixelSpacing or ImagerPixelSpacing), so it "
            "cannot be scaled for the model. Give a default pixel spacing in mm (e.g. 0.05 for "
            "DDSM film scans, 0.2 for mini-MIAS).")
    if not spacing_mm or spacing_mm <= 0 or src_spacing <= 0:
        raise ImagingError(f"Pixel spacings must be positive (model {spacing_mm}, image {src_spacing}).")
    rows, cols = m.pixels.shape
    probe = Frame(rows, cols, float(spacing_mm) / float(src_spacing), False)
    small = resample(-m.pixels if m.invert else m.pixels, probe)
    mask = segment_breast(small)
    if not mask.any():
        raise ImagingError("No breast tissue was found in the image. Check that it is a mammogram "
                           "and that its window / photometric interpretation are right.")
    flip = chest_wall_side(mask, m.laterality) == "right"
    lo, hi = np.percentile(small[mask], [low_pct, high_pct])
    img = np.clip((small - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)
    img[~mask] = 0.0
    if flip:
        img, mask = img[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(mask), Frame(rows, cols, probe.scale, flip)


# ---------------------------------------------------------------- reading files
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
)
PLAIN_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ""}
#: File name endings the importers pick up (DICOM files without an ending are found by folder ingest).
IMAGE_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", *PLAIN_SUFFIXES})


def sniff_format(head: bytes) -> str | None:
    """'DICOM', 'PNG', 'JPEG', 'TIFF' from a file's first bytes (>= 132), or None if unknown."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _json_value(v: Any) -> Any:
    """A pydicom element value as plain JSON (lists, floats, ints, strings)."""
    from pydicom.multival import MultiValue

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


def _read_dataset(path: Path, data: bytes):
    """Parse DICOM bytes; raise ImagingError for non-DICOM, truncated or corrupt files."""
    import io

    import pydicom
    from pydicom.errors import InvalidDicomError

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
    raise _fail(path, "this is not a DICOM file (no DICOM header found).",
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
    for i, item in enumerate(ds.get("VOILUTSequence") or []):
        try:
            n, first, bits = (int(v) for v in item.LUTDescriptor)
            n = n or 65536
            raw = item.LUTData
            table = np.asarray(raw if not isinstance(raw, (bytes, bytearray))
                               else np.frombuffer(raw, "<u2" if bits > 8 else "u1"), np.float64).ravel()[:n]
            name = str(item.get("LUTExplanation", "") or f"VOI LUT {i + 1}")
            windows.append(Window(center=first + n / 2, width=float(n), name=name,
                                  lut=VoiLut(first_mapped=first, bits=bits, table=table)))
        except (AttributeError, TypeError, ValueError):
            continue  # a malformed LUT item is skipped; the centre/width windows still apply
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


def _stored_values(ds, path) -> np.ndarray:
    """Decoded stored values (H, W), masked to BitsStored (sign-extended when signed)."""
    from pydicom.pixels import get_decoder

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
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), np.float32)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    out = stored.astype(np.float32)
    if slope != 1 or intercept != 0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def _load_dicom(path: Path, data: bytes, show_phi: bool) -> tuple:
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
    stored = _stored_values(ds, path)
    pixels = _modality_lut(ds, stored)
    windows, fn = _dicom_windows(ds)
    spacing, spacing_key = _dicom_spacing(ds)
    lat = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").upper()[:1]
    lat = lat if lat in {"L", "R"} else ""
    meta = _header_meta(ds, show_phi)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    meta.update(format="DICOM", transfer_syntax=str(ts.name) if ts else "", rows=int(pixels.shape[0]),
                cols=int(pixels.shape[1]), spacing_source=spacing_key)
    bits = int(ds.get("BitsStored", 16) or 16)
    return pixels, photometric, bits, lat, _dicom_view(ds), spacing, windows, fn, meta


def _load_plain(path: Path, fmt: str) -> tuple:
    """PNG / JPEG via Pillow, TIFF via tifffile; grey, or colour whose channels are equal."""
    if fmt == "TIFF":
        import tifffile

        try:
            with tifffile.TiffFile(path) as tf:
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
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                if getattr(im, "n_frames", 1) > 1:
                    raise _fail(path, f"this {fmt} holds {im.n_frames} frames.", "Save a single image per file.")
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                arr = np.asarray(im)
        except ImagingError:
            raise
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


def load_image(path, *, show_phi: bool = False) -> Mammogram:
    """Read a mammogram from a DICOM, PNG (8/16-bit), JPEG or TIFF file.

    DICOM: decodes any transfer syntax the pylibjpeg plugins handle (RLE, JPEG baseline/extended/
    lossless, JPEG-LS, JPEG 2000), masks to BitsStored, applies the modality LUT (or rescale),
    lists every window, and reads laterality (ImageLaterality, then Laterality) and view
    (ViewPosition, then ViewCodeSequence). When the file does not give the laterality it is
    inferred from the breast's chest-wall side by the hanging convention and ``laterality_inferred``
    is set. ``meta`` is de-identified unless ``show_phi``. Raises ImagingError for anything that is
    not a readable single-frame grey 2-D image, with what is wrong and what to do.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImagingError(f"{path}: file not found.") from exc
    except OSError as exc:
        raise ImagingError(f"{path}: cannot be read ({exc.strerror or exc}).") from exc
    if not data:
        raise _fail(path, "the file is empty.", "Copy it again.")
    fmt = sniff_format(data[:132])
    if fmt is None and path.suffix.lower() in DICOM_SUFFIXES:
        fmt = "DICOM"  # preamble-less DICOM; _read_dataset decides
    if fmt is None:
        raise _fail(path, f"the file type ({path.suffix or 'no extension'}) is not a supported image.",
                    "Use DICOM, PNG, JPEG or TIFF.")
    if fmt == "DICOM":
        fields = _load_dicom(path, data, show_phi)
    else:
        fields = _load_plain(path, fmt)
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
                     sha256=hashlib.sha256(data).hexdigest(), laterality_inferred=inferred, format=fmt)

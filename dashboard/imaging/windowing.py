"""Display windows (DICOM PS3.3 C.11.2): linear and sigmoid windows, VOI LUTs, the presentation LUT, automatic
windows. The maths is pydicom's (``pydicom.pixels.apply_windowing`` / ``apply_voi``; INVERSE is 255 - y, ``_to_uint8``);
this module wraps it for 8-bit display output and for windows the viewer makes (automatic, manual)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi, apply_windowing

from dashboard.imaging.model import ImagingError, Mammogram, VoiLut, Window
from dashboard.imaging.segmentation import segment_breast

# ---------------------------------------------------------------- windows (PS3.3 C.11.2.1.2)
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
#: Presentation LUT Shapes (PS3.3 C.11.6.1.2): INVERSE shows low P-values bright.
PRESENTATION_SHAPES = ("IDENTITY", "INVERSE")


def _display_dataset(**elements) -> Dataset:
    """A VOI LUT module whose output is 8-bit: pydicom's windowing maps into 0 .. 2**BitsStored - 1 of an
    unsigned image without a modality LUT, so BitsStored 8 gives display values 0..255 directly."""
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 8, 0
    for k, v in elements.items():
        setattr(ds, k, v)
    return ds


def _to_uint8(y: np.ndarray, invert: bool) -> np.ndarray:
    out = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    if invert:  # an INVERSE presentation LUT shape over the 8-bit output range: 255 - y. Not pydicom's
        # apply_presentation_lut: its INVERSE is arr.max() - arr, relative to the image's own maximum, so a
        # window that does not reach white would come out shifted (an all-grey image would turn black)
        out = np.uint8(255) - out
    return out


def apply_window(pixels: np.ndarray, center: float, width: float, function: str = "LINEAR",
                 invert: bool = False) -> np.ndarray:
    """Map values through a DICOM VOI window to uint8 display values 0..255 (same shape).

    pydicom's ``apply_windowing`` (DICOM PS3.3 C.11.2.1.2 with y_min = 0, y_max = 255), rounded to the
    nearest integer: LINEAR (w >= 1), LINEAR_EXACT and SIGMOID (w > 0). ``invert`` shows the result
    through an INVERSE presentation LUT (255 - y), for MONOCHROME1 data and INVERSE-shaped files.
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
    with np.errstate(over="ignore"):  # SIGMOID far outside the window: exp overflows to the limit
        y = apply_windowing(x, _display_dataset(WindowCenter=c, WindowWidth=w, VOILUTFunction=fn))
    return _to_uint8(y, invert)


def voi_lut_item(lut: VoiLut) -> Dataset:
    """The VOI LUT Sequence item of a table (LUT Descriptor [n, first mapped, bits] and its data as US)."""
    item = Dataset()
    n = len(lut.table)
    # declared 16 bits whatever the table's depth (its values are unchanged): see ``_wide_index``
    item.LUTDescriptor = [n if n < 65536 else 0, int(lut.first_mapped), 16]
    item["LUTDescriptor"].VR = "US" if lut.first_mapped >= 0 else "SS"
    item.LUTData = [int(v) for v in lut.table]
    item["LUTData"].VR = "US"
    return item


def apply_voi_lut(pixels: np.ndarray, lut: VoiLut, invert: bool = False) -> np.ndarray:
    """Map values through a VOI LUT Sequence table to uint8 (pydicom's ``apply_voi``: values below/above the
    table clamp to its first/last entry), scaled from the table's 2**bits - 1 to 255."""
    ds = _display_dataset(VOILUTSequence=[voi_lut_item(lut)])
    ds.BitsStored = 16
    x = np.rint(np.asarray(pixels, np.float64)).astype(np.int64)
    if len(lut.table) == 1:  # one entry: every value maps to it (pydicom reads a one-value LUTData as a scalar)
        y = np.full(x.shape, float(lut.table[0]))
    else:
        y = apply_voi(x, ds, index=0).astype(np.float64)
    top = float((1 << int(lut.bits)) - 1) or 1.0
    return _to_uint8(y * (255.0 / top), invert)


def voi_lut_tables(ds) -> list[VoiLut]:
    """Every VOI LUT Sequence item of a dataset as a table, evaluated by pydicom (``apply_voi`` over the
    item's whole input range): 8-bit LUTs stored as OW, the file's byte order and the descriptor's first
    value of 0 (65536 entries) are pydicom's business. A malformed item is skipped (None in its place)."""
    out: list[VoiLut | None] = []
    for i, item in enumerate(ds.get("VOILUTSequence") or []):
        try:
            n, first, bits = (int(v) for v in item.LUTDescriptor)
            n = n or 65536
            with _wide_index(item):
                table = apply_voi(np.arange(first, first + n, dtype=np.int64), ds, index=i)
            out.append(VoiLut(first_mapped=first, bits=bits, table=np.asarray(table, np.float64).ravel()))
        except (AttributeError, TypeError, ValueError, IndexError):
            out.append(None)
    return out


@contextmanager
def _wide_index(item: Dataset):
    """pydicom 3.0.2's ``apply_voi`` indexes an 8-bit LUT with a uint8 array, so an input more than 255 past
    the first mapped value wraps (a 4096-entry 8-bit LUT over 12-bit data maps 1000 like 232). Declaring
    16 bits while it runs gives a uint16 index; the data is read the same way (US values, or OW words as
    16-bit entries)."""
    desc = list(item.LUTDescriptor)
    if int(desc[2]) == 8:
        item.LUTDescriptor = [desc[0], desc[1], 16]
        try:
            yield
        finally:
            item.LUTDescriptor = desc
    else:
        yield


def display_invert(photometric: str, presentation_lut_shape: str = "") -> bool:
    """Whether display values are inverted: MONOCHROME1 always (its INVERSE shape is that inversion, not a
    second one), MONOCHROME2 when its Presentation LUT Shape is INVERSE."""
    if str(photometric).upper() == "MONOCHROME1":
        return True
    return str(presentation_lut_shape or "").upper() == "INVERSE"


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
    """The source-space display image (H, W) uint8 through ``window`` and the file's presentation LUT
    (MONOCHROME1, or a MONOCHROME2 file whose Presentation LUT Shape is INVERSE, shown inverted)."""
    w = window or default_window(m)
    invert = display_invert(m.photometric, m.meta.get("PresentationLUTShape", ""))
    if w.lut is not None:
        return apply_voi_lut(m.pixels, w.lut, invert=invert)
    fn = m.voi_lut_function if w.name != "AUTO" else "LINEAR"
    return apply_window(m.pixels, w.center, w.width, fn, invert=invert)



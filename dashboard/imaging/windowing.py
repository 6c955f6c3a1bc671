"""Display windows (DICOM PS3.3 C.11.2.1.2): linear and sigmoid windows, VOI LUTs, automatic windows."""
from __future__ import annotations

import numpy as np

from dashboard.imaging.model import ImagingError, Mammogram, VoiLut, Window
from dashboard.imaging.segmentation import segment_breast

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



"""Source space <-> model space <-> display: ``Frame``, resampling, the radiological hanging flip,
and the model's view of a mammogram (``prepare_model_image``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dashboard.imaging.model import ImagingError, Mammogram, Window
from dashboard.imaging.segmentation import block_mean, chest_wall_side, segment_breast
from dashboard.imaging.windowing import window_image


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
    a = np.asarray(img, np.float32)
    k = max(1, int(np.floor(frame.scale + 1e-9)))
    a = block_mean(a, k)
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



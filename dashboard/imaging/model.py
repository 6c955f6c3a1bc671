"""The imaging data model: a loaded mammogram, its display windows and VOI LUT, and the error type."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dashboard.errors import ConceptLensError


# ---------------------------------------------------------------- errors
class ImagingError(ConceptLensError):
    """An image cannot be read, written or prepared. The message says what is wrong and what to do."""


class ImageTooLargeError(ImagingError):
    """An image declares more pixels (or a file holds more bytes) than ``settings.max_pixels`` allows;
    raised from the header, before any pixel is decoded."""


class ImageIntegrityError(ImagingError):
    """A stored image's file is not the one that was ingested: the store's SHA-256 no longer holds."""


class ImageChangedError(ImageIntegrityError):
    """The file was replaced or modified after ingest (its SHA-256 differs from the stored one)."""


class ImageMissingError(ImageIntegrityError):
    """The file of a stored image is gone."""


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



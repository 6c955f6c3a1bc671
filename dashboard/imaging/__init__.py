"""Mammogram imaging: read and write DICOM, display windows, the breast mask, model-space frames.

Coordinates (see ARCHITECTURE.md): *source space* is the pixel grid of the stored file (x = column,
y = row); *model space* is that grid resampled to the model card's pixel spacing and mirrored, when
needed, so that the chest wall is on the LEFT. ``Frame`` converts between them. Nothing here runs at
import time."""
from dashboard.imaging.geometry import (
    Frame,
    display_flip,
    display_image,
    display_to_source,
    prepare_model_image,
    resample,
    source_to_display,
)
from dashboard.imaging.io import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    PHI_KEYS,
    PHI_KEYWORDS,
    PLAIN_SUFFIXES,
    VIEW_CODES,
    DicomHeader,
    file_sha256,
    load_image,
    sniff_format,
    writable_transfer_syntaxes,
    write_dicom,
)
from dashboard.imaging.model import (
    ImagingError,
    Mammogram,
    VoiLut,
    Window,
)
from dashboard.imaging.segmentation import (
    block_mean,
    chest_wall_side,
    crop_patch,
    crop_to_mask,
    segment_breast,
    tile,
)
from dashboard.imaging.windowing import (
    VOI_FUNCTIONS,
    apply_voi_lut,
    apply_window,
    auto_window,
    default_window,
    window_image,
)

__all__ = [
    "ImagingError",
    "VoiLut",
    "Window",
    "Mammogram",
    "VOI_FUNCTIONS",
    "apply_window",
    "apply_voi_lut",
    "auto_window",
    "default_window",
    "window_image",
    "segment_breast",
    "block_mean",
    "chest_wall_side",
    "crop_to_mask",
    "crop_patch",
    "tile",
    "Frame",
    "resample",
    "display_flip",
    "display_image",
    "source_to_display",
    "display_to_source",
    "prepare_model_image",
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "VIEW_CODES",
    "PHI_KEYWORDS",
    "PHI_KEYS",
    "writable_transfer_syntaxes",
    "DicomHeader",
    "write_dicom",
    "file_sha256",
    "PLAIN_SUFFIXES",
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "sniff_format",
    "load_image",
]

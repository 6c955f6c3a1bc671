"""Exports in standard formats: DICOM SEG, Parametric Map and TID 1500 SR of an image's drawings and concept
report (``export_dicom``); ``python -m dashboard.export dicom --image ID --out DIR``."""
from dashboard.export.dicom import (
    FILE_NAMES,
    DicomExport,
    ExportError,
    derived_uid,
    drawing_masks,
    export_dicom,
    source_dataset,
    to_source_grid,
)

__all__ = ["FILE_NAMES", "DicomExport", "ExportError", "derived_uid", "drawing_masks", "export_dicom",
           "source_dataset", "to_source_grid"]

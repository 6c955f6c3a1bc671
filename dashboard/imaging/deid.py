"""De-identification of the image files ConceptLens stores (DICOM PS3.15 Basic Application Level
Confidentiality Profile).

DICOM goes through ``dicognito``: every person name, ID, UID, date, address and equipment field is
replaced by a pseudonym drawn from one seed, so a seed kept per installation (derived from the
pseudonym key) maps one source UID to the same pseudonymous UID every time: exports still reference
their source, for whoever holds the key. On top of dicognito, what the Basic profile removes and it
keeps: free text (every LT/ST/UT value and the descriptions, comments and reasons of
``FREE_TEXT_KEYWORDS``), private attributes, overlays and curves, the patient's age, size, weight
and birth date. Pixel data and what reading needs (laterality, view, spacing, windows, LUTs) stay.

Plain images (PNG, JPEG, TIFF) carry no header to clean but may carry text chunks, EXIF or TIFF tags:
they are re-encoded from their pixels alone (lossless PNG, float TIFF for float data).
"""
from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pydicom
import tifffile
from dicognito.anonymizer import Anonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from PIL import Image
from pydicom import uid
from pydicom.dataset import FileMetaDataset

from dashboard.imaging.io import FREE_TEXT_KEYWORDS
from dashboard.imaging.model import ImagingError, Mammogram

#: Removed besides free text (PS3.15 Table E.1-1, Basic profile "X"; dicognito keeps them).
REMOVED_KEYWORDS = frozenset({
    "PatientAge", "PatientWeight", "PatientSize", "EthnicGroup", "PatientBirthTime", "PatientBirthName",
    "PatientMotherBirthName", "OtherPatientNames", "PatientSexNeutered", "SmokingStatus", "PregnancyStatus",
    "LastMenstrualDate", "AdditionalPatientHistory", "MedicalRecordLocator", "SourceApplicationEntityTitle",
    "IssuerOfPatientID",
})
#: Emptied (Basic profile "Z": the attribute stays, its value goes).
EMPTIED_KEYWORDS = frozenset({"PatientBirthDate"})
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_REMOVED_TAGS = frozenset(pydicom.datadict.tag_for_keyword(k) for k in FREE_TEXT_KEYWORDS | REMOVED_KEYWORDS)
_EMPTIED_TAGS = frozenset(pydicom.datadict.tag_for_keyword(k) for k in EMPTIED_KEYWORDS)


class _BasicProfileRemainder(ElementAnonymizer):
    """What the Basic profile removes and dicognito keeps (runs before dicognito's own handlers)."""

    def __call__(self, dataset, data_element) -> bool:
        tag = data_element.tag
        overlay_or_curve = tag.group >> 8 in (0x50, 0x60) and tag.group % 2 == 0  # (50xx,eeee), (60xx,eeee)
        if tag.is_private or tag in _REMOVED_TAGS or data_element.VR in _FREE_TEXT_VRS or overlay_or_curve:
            del dataset[tag]
            return True
        if tag in _EMPTIED_TAGS:
            data_element.value = ""
            return True
        return False

    def describe_actions(self) -> Iterator[str]:
        yield "Remove private attributes, overlays, curves and every LT/ST/UT value"
        yield from (f"Remove {k}" for k in sorted(FREE_TEXT_KEYWORDS | REMOVED_KEYWORDS))
        yield from (f"Empty {k}" for k in sorted(EMPTIED_KEYWORDS))


def anonymizer(seed: str) -> Anonymizer:
    """dicognito's anonymizer for one installation's seed, with the rest of the Basic profile added."""
    a = Anonymizer(seed=seed)
    a.add_element_handler(_BasicProfileRemainder())
    return a


def deidentify_dicom(data: bytes, seed: str, name: str = "file") -> bytes:
    """The DICOM file ``data`` de-identified (see the module docstring); pixels and geometry unchanged.

    ``seed`` keeps the pseudonyms consistent: the same source values give the same replacements."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises assorted types on damaged files
        raise ImagingError(f"{name}: the DICOM file cannot be parsed for de-identification ({exc}).") from exc
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:  # an old file without a meta header: say how it was encoded
        implicit, little = ds.original_encoding
        meta.TransferSyntaxUID = (uid.ImplicitVRLittleEndian if implicit else
                                  uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", meta.get("MediaStorageSOPClassUID", ""))
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", meta.get("MediaStorageSOPInstanceUID", ""))
    ds.file_meta = meta
    anonymizer(seed).anonymize(ds)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    out = io.BytesIO()
    try:
        ds.save_as(out, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001
        raise ImagingError(f"{name}: the de-identified DICOM file cannot be written ({exc}).") from exc
    return out.getvalue()


def clean_plain_image(m: Mammogram) -> tuple[bytes, str]:
    """A plain image's pixels re-encoded without any metadata: (file bytes, suffix).

    8- and 16-bit integer images become a lossless PNG of the same values, anything else (32-bit,
    float) a float32 TIFF."""
    px = m.pixels  # (H, W) float32 holding the file's values
    integral = bool(np.all(px == np.round(px))) and float(px.min(initial=0)) >= 0
    if integral and float(px.max(initial=0)) < 256 and m.bits_stored <= 8:
        out = io.BytesIO()
        Image.fromarray(px.astype(np.uint8)).save(out, format="PNG")
        return out.getvalue(), ".png"
    if integral and float(px.max(initial=0)) < 65536:
        out = io.BytesIO()
        Image.fromarray(px.astype(np.uint16)).save(out, format="PNG")
        return out.getvalue(), ".png"
    out = io.BytesIO()
    tifffile.imwrite(out, px.astype(np.float32), metadata=None, software=None)
    return out.getvalue(), ".tif"

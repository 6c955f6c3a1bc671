"""Folder ingest: walk a folder of DICOM / PNG / JPEG / TIFF mammograms into the store.

One case per DICOM study (StudyInstanceUID) and, for plain images, one case per file stem
(qualified by its sub-folder). Case ids and patient references are keyed hashes (HMAC-SHA-256
with a random key kept beside the database), never the identifiers themselves. A file that cannot
be read is reported with the reason and skipped; the walk goes on. Files already in the store
(same SHA-256) are counted as duplicates without being decoded, so a second run adds nothing.

Command line: ``python -m dashboard.data.ingest FOLDER [--source NAME] [--show-phi]``.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from dashboard import imaging
from dashboard.data.importers import MIAS_LATERALITY_SOURCE, dataset_default_spacing, mias_laterality
from dashboard.data.store import ImageRecord, StoreError, open_store
from dashboard.errors import ConceptLensError
from dashboard.imaging import ImagingError
from dashboard.progress import Progress, tqdm_progress
from dashboard.settings import load_settings

KEY_FILE = "pseudonym.key"


class IngestError(ConceptLensError):
    """The ingest as a whole cannot run (missing folder, unusable store); single files never raise."""


@dataclass
class IngestReport:
    """What one ingest run did.

    added       images newly stored
    duplicates  files whose content (SHA-256) was already in the store
    failed      (path, reason) for every file that could not be read, in walk order
    skipped     hidden files and DICOMDIR index files, which are not images
    """

    added: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0

    def summary(self) -> str:
        """A short plain-text account for the command line or a page."""
        lines = [f"added {self.added}, duplicates {self.duplicates}, failed {len(self.failed)}"
                 + (f", skipped {self.skipped}" if self.skipped else "")]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def pseudonym_key(store) -> bytes:
    """The installation's pseudonymisation key (32 random bytes beside the DB file, created once)."""
    path = Path(store.db_path).parent / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it a moment ago
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def pseudonym(key: bytes, kind: str, value: str, n: int = 16) -> str:
    """A stable, non-reversible id for ``value`` (e.g. a StudyInstanceUID): hex HMAC-SHA-256 prefix."""
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:n]


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
        if any(part.startswith(".") for part in rel.parts) or path.name.upper() == "DICOMDIR":
            skipped += 1
            continue
        files.append(path)
    return files, skipped


def ingest_folder(store, folder, *, source: str = "ingest", show_phi: bool = False,
                  progress: Progress | None = None) -> IngestReport:
    """Store every readable mammogram under ``folder``; report the rest. Idempotent.

    ``progress(done, total, path)`` is called after each file. ``show_phi`` keeps identifying header
    fields in the stored ``meta`` (off by default: de-identified). Raises IngestError only when the
    folder itself is unusable.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise IngestError(f"{folder} is not a folder. Give the folder that holds the images.")
    files, skipped = _candidates(folder)
    report = IngestReport(skipped=skipped)
    key = pseudonym_key(store)
    for i, path in enumerate(files):
        try:
            _ingest_one(store, folder, path, key, source, show_phi, report)
        except ImagingError as exc:
            report.failed.append((str(path), str(exc)))
        except Exception as exc:  # one odd file must not stop a folder of hundreds
            report.failed.append((str(path), f"unexpected error ({type(exc).__name__}: {exc})"))
        if progress is not None:
            progress(i + 1, len(files), str(path))
    return report


def _ingest_one(store, root: Path, path: Path, key: bytes, source: str, show_phi: bool,
                report: IngestReport) -> None:
    sha = imaging.file_sha256(path)
    if store.find_image_by_sha256(sha) is not None:
        report.duplicates += 1
        return
    m = imaging.load_image(path, show_phi=show_phi)
    study, patient = _dicom_ids(path) if m.format == "DICOM" else ("", "")
    if study:
        case_id = "case-" + pseudonym(key, "study", study)
    else:
        stem = path.relative_to(root).with_suffix("").as_posix()
        case_id = "case-" + pseudonym(key, "file", stem)
    patient_ref = "pt-" + pseudonym(key, "patient", patient, 12) if patient else ""
    store.ensure_case(case_id, source, description="Imported by folder ingest", patient_ref=patient_ref)
    rows, cols = m.pixels.shape
    meta = dict(m.meta, laterality_inferred=m.laterality_inferred)
    # a file without PixelSpacing from a known data set gets that set's scan spacing, stored with it
    spacing, dataset = dataset_default_spacing(m, patient)
    if dataset:
        meta["spacing_default"] = dataset
    if dataset == "mini-mias":  # mirrored files: the chest wall's side gives the wrong breast
        m.laterality = mias_laterality(path.stem)
        meta.update(laterality_inferred=False, laterality_source=MIAS_LATERALITY_SOURCE, mirrored_file=True)
    added = store.save_image(ImageRecord(
        "img-" + sha[:16], case_id, str(path.resolve()), sha, rows=rows, cols=cols, laterality=m.laterality,
        view=m.view, pixel_spacing_mm=spacing, modality=str(m.meta.get("Modality", "")), meta=meta))
    if added:
        report.added += 1
    else:
        report.duplicates += 1


def main(argv: list[str] | None = None) -> int:
    """CLI: ingest a folder into the store named by the settings; exit status 1 if any file failed."""
    parser = argparse.ArgumentParser(prog="python -m dashboard.data.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder to walk (recursively)")
    parser.add_argument("--source", default="ingest", help="source label stored on new cases")
    parser.add_argument("--show-phi", action="store_true", help="keep identifying header fields in meta")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder. Give the folder that holds the images.", file=sys.stderr)
        return 2
    settings = load_settings()
    try:
        store = open_store(settings)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with tqdm_progress("ingest", unit="file") as progress:
            report = ingest_folder(store, args.folder, source=args.source,
                                   show_phi=args.show_phi, progress=progress)
    except IngestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

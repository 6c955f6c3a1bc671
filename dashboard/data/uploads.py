"""Upload through the browser: DICOM, PNG, JPEG, TIFF files, or a ZIP of a study folder, ingested like a
folder (``data.ingest``) into the managed data directory.

Each upload is staged under ``settings.uploads_dir`` (0700, removed afterwards, also after a failure)
and then ingested, so what stays on disk is the store's de-identified copy only. ZIP archives are
checked before anything is extracted (``check_zip``): entry count, total uncompressed size, the
compression ratio of each entry (zip bombs), and names that would leave the staging folder (``..``,
absolute names, drive letters) or that are symlinks. Extraction counts the bytes it writes and stops at
what the entry declared. Every image then meets the pixel cap of ``imaging.load_image``.
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dashboard import imaging
from dashboard.data.ingest import IngestOptions, IngestReport, ingest_file
from dashboard.data.keys import pseudonym_key
from dashboard.data.private import private_dir, write_private
from dashboard.errors import ConceptLensError
from dashboard.progress import Progress
from dashboard.settings import max_pixels_setting

#: The spacing source recorded for a default pixel spacing given with an upload.
UPLOAD_DEFAULT = "upload default"
#: Most entries a ZIP may hold (a study folder holds a few to a few hundred files).
MAX_ZIP_ENTRIES = 2000
#: Most bytes a ZIP may expand to, all entries together.
MAX_ZIP_TOTAL = 4 << 30
#: Highest compression ratio of an entry larger than ``RATIO_FLOOR`` (deflate gets ~2-10x on mammograms,
#: even synthetic ones with a black background stay below 50x; a bomb reaches 1000x).
MAX_ZIP_RATIO = 200
RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 20


class UploadError(ConceptLensError):
    """An upload as a whole is refused (a ZIP that is a bomb, escapes its folder, or is damaged)."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name the browser gave and its bytes (``st.file_uploader``'s ``name`` and
    ``getvalue()``)."""

    name: str
    data: bytes


def _safe_basename(name: str) -> str:
    """A file name fit for the staging folder: the last part of ``name``, printable, at most 100 chars."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '/\\:*?"<>|').strip(" .")
    return (base or "file")[-100:]


def is_zip(upload: Upload) -> bool:
    return upload.data[:4] == b"PK\x03\x04" or upload.name.lower().endswith(".zip")


def check_zip(zf: zipfile.ZipFile, name: str, max_entry_bytes: int) -> list[zipfile.ZipInfo]:
    """The archive's file entries once every check passed; UploadError naming the first problem."""
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise UploadError(f"{name}: the archive holds {len(infos)} entries, more than {MAX_ZIP_ENTRIES}. "
                          "Upload one study per archive, or ask for an import root.")
    total = 0
    files = []
    for info in infos:
        entry = info.filename
        parts = PurePosixPath(entry.replace("\\", "/")).parts
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadError(f"{name}: the entry {entry!r} is a symbolic link; archives with links are refused.")
        if (entry.startswith(("/", "\\")) or ".." in parts or (len(entry) > 1 and entry[1] == ":")
                or "\x00" in entry):
            raise UploadError(f"{name}: the entry {entry!r} would be written outside the upload folder; "
                              "the archive is refused.")
        if info.is_dir():
            continue
        if info.file_size > max_entry_bytes:
            raise UploadError(f"{name}: the entry {entry!r} expands to {info.file_size / 2**20:.0f} MiB, more than "
                              "any image the pixel cap allows (CONCEPTLENS_MAX_PIXELS); the archive is refused.")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
            raise UploadError(f"{name}: the entry {entry!r} is compressed {info.file_size / max(info.compress_size, 1):.0f}"
                              f" to 1 (at most {MAX_ZIP_RATIO} to 1 is accepted): a zip bomb; the archive is refused.")
        total += info.file_size
        if total > MAX_ZIP_TOTAL:
            raise UploadError(f"{name}: the archive expands to more than {MAX_ZIP_TOTAL >> 30} GiB; it is refused.")
        files.append(info)
    return files


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path) -> None:
    """Copy one entry, stopping if it yields more bytes than it declared."""
    left = info.file_size
    with zf.open(info) as src, os.fdopen(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as dst:
        while chunk := src.read(_CHUNK):
            left -= len(chunk)
            if left < 0:
                raise UploadError(f"the entry {info.filename!r} holds more than it declares; the archive is refused.")
            dst.write(chunk)


def _stage(upload: Upload, staging: Path, k: int, max_entry_bytes: int) -> list[tuple[Path, str]]:
    """Write one upload (or its archive's entries) into the staging folder: [(staged path, shown name)]."""
    if not is_zip(upload):
        folder = private_dir(staging / f"{k:05d}")
        path = write_private(folder / _safe_basename(upload.name), upload.data)
        return [(path, _safe_basename(upload.name))]
    try:
        zf = zipfile.ZipFile(io.BytesIO(upload.data))
    except zipfile.BadZipFile as exc:
        raise UploadError(f"{upload.name}: not a readable ZIP archive ({exc}).") from exc
    out = []
    with zf:
        for j, info in enumerate(check_zip(zf, upload.name, max_entry_bytes)):
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if any(p.startswith(".") for p in parts) or "__MACOSX" in parts or parts[-1].upper() == "DICOMDIR":
                continue
            folder = private_dir(staging / f"{k:05d}" / f"{j:05d}")
            path = folder / _safe_basename(parts[-1])
            try:
                _extract(zf, info, path)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise UploadError(f"{upload.name}: the entry {info.filename!r} cannot be extracted ({exc}).") from exc
            out.append((path, f"{_safe_basename(upload.name)}/{'/'.join(_safe_basename(p) for p in parts)}"))
    return out


def ingest_uploads(store, uploads: list[Upload], uploads_dir: Path, *, source: str = "upload",
                   default_spacing_mm: float | None = None, max_pixels: int | None = None,
                   progress: Progress | None = None) -> IngestReport:
    """Ingest uploaded files (and the images inside uploaded ZIPs) into the store; one result per file.

    ``default_spacing_mm`` goes to images that carry no pixel spacing, recorded as
    ``meta.spacing_source = "upload default"``. A refused ZIP becomes one failed row (the other uploads
    go on). The staged copies are removed before this returns, whatever happens."""
    opts = IngestOptions(source=(source or "upload").strip() or "upload", default_spacing_mm=default_spacing_mm,
                         spacing_source=UPLOAD_DEFAULT, max_pixels=max_pixels)
    max_entry = imaging.max_file_bytes(max_pixels or max_pixels_setting())
    report = IngestReport()
    key = pseudonym_key(store)
    root = private_dir(Path(uploads_dir))
    for stale in root.glob(".staging-*"):  # left by a process that died mid-upload
        shutil.rmtree(stale, ignore_errors=True)
    staging = private_dir(root / f".staging-{uuid.uuid4().hex}")
    try:
        staged: list[tuple[Path, str]] = []
        for k, upload in enumerate(uploads):
            try:
                staged += _stage(upload, staging, k, max_entry)
            except UploadError as exc:
                report.record(_safe_basename(upload.name), "failed", str(exc))
        for i, (path, shown) in enumerate(staged):
            ingest_file(store, path, shown, key, opts, report)
            if progress is not None:
                progress(i + 1, len(staged), shown)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report

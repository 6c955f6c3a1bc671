"""Copies of image files into the store: de-identified, under ``data_dir/images``, private.

A DICOM is de-identified by the PS3.15 Basic profile (``imaging.deid``: dicognito seeded from the
installation's key, so UIDs stay consistent); a plain image is re-encoded from its pixels. Also
``adopt_outside_images``: rows of an older database whose files lie outside the data directory are
copied in (``open_store`` runs it), so no absolute path stays in the database.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from dashboard import imaging
from dashboard.data.keys import dicom_seed, pseudonym_key, source_key
from dashboard.data.private import private_dir, write_private
from dashboard.imaging import ImagingError, Mammogram

IMAGES_DIR = "images"
MISSING_PREFIX = "missing/"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredFile:
    """A file written into the store: absolute path, SHA-256 of its bytes, size, mtime (ns)."""

    path: Path
    sha256: str
    size: int
    mtime_ns: int


def image_file_path(store, image_id: str, suffix: str) -> Path:
    """Where the store keeps an image's file: ``data_dir/images/<2 hex>/<image id><suffix>``."""
    bucket = hashlib.sha256(image_id.encode()).hexdigest()[:2]
    return Path(store.data_dir) / IMAGES_DIR / bucket / f"{image_id}{suffix}"


def write_copy(store, m: Mammogram, data: bytes, image_id: str, key: bytes) -> StoredFile:
    """Write the de-identified copy of a loaded image (``data``: the bytes ``m`` was read from)."""
    if m.format == "DICOM":
        out, suffix = imaging.deidentify_dicom(data, dicom_seed(key), Path(m.path).name), ".dcm"
    else:
        out, suffix = imaging.clean_plain_image(m)
    private_dir(Path(store.data_dir) / IMAGES_DIR)
    path = write_private(image_file_path(store, image_id, suffix), out)
    st = path.stat()
    return StoredFile(path, hashlib.sha256(out).hexdigest(), st.st_size, st.st_mtime_ns)


def source_bytes(m: Mammogram) -> bytes:
    """The file ``m`` was loaded from, read again and checked to be the same bytes."""
    data = Path(m.path).read_bytes()
    if hashlib.sha256(data).hexdigest() != m.sha256:
        raise ImagingError(f"{Path(m.path).name}: the file changed while it was being ingested; ingest it again.")
    return data


def adopt_outside_images(store) -> int:
    """Copy the files of image rows that point outside the data directory into it (de-identified), so
    the database holds no absolute path. A file that is gone or changed gets a ``missing/`` path (its
    old path is dropped: it may name the patient) and says so when opened. Returns the rows rewritten."""
    rows = store.query("SELECT image_id, path, sha256 FROM images WHERE path LIKE '/%'")
    if not rows:
        return 0
    key = pseudonym_key(store)
    for r in rows:
        image_id = r["image_id"]
        try:
            m = imaging.load_image(r["path"], expected_sha256=r["sha256"])
            stored = write_copy(store, m, source_bytes(m), image_id, key)
            store.update_image_file(image_id, path=str(stored.path), sha256=stored.sha256, file_size=stored.size,
                                    file_mtime_ns=stored.mtime_ns)
            store.set_source_key(image_id, source_key(key, r["sha256"]))
        except ImagingError as exc:
            log.warning("image %s: its file outside the data directory cannot be adopted (%s)", image_id,
                        type(exc).__name__)
            store.mark_image_missing(image_id, MISSING_PREFIX + image_id)
    return len(rows)

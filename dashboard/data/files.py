"""The store's image files: each image the store references is a file under the data directory,
written there de-identified, and checked to be the same file every time it is opened.

* ``add_image``: ingest, upload and the data-set importers copy an image into
  ``data_dir/images/<xx>/<image id>.<ext>`` (0600, folders 0700; ``data.copies``). The row keeps the
  copy's path (relative), SHA-256, size and mtime, and a keyed hash of the source file
  (``source_key``), so a second ingest of the same file adds nothing and nothing that names the source
  is stored: source folders and file names (which often name the patient) never reach the database.
* ``load_stored_image``: the one way to open a stored image. The file must be where the row says,
  inside the data directory, and its bytes must hash to the stored SHA-256 before they are decoded
  (``ImageMissingError`` / ``ImageChangedError``), so caches keyed by that SHA never hold other pixels.
  ``check_stored_file`` is the cheap check for a cached image: size and mtime, the full hash on a change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dashboard import imaging
from dashboard.data.copies import MISSING_PREFIX, source_bytes, write_copy
from dashboard.data.keys import pseudonym, pseudonym_key, source_key
from dashboard.data.store import ImageRecord, NotFoundError, ValidationError
from dashboard.imaging import ImageChangedError, ImageMissingError, ImagingError, Mammogram


@dataclass(frozen=True)
class ImageFacts:
    """What an importer decided about an image besides its pixels (``add_image``)."""

    case_id: str
    image_id: str | None = None          # None: a keyed hash of the source file
    pixel_spacing_mm: float | None = None
    meta: dict | None = None             # default: the image's own (de-identified) header summary
    actor: str = "system"


def add_image(store, m: Mammogram, facts: ImageFacts, *, key: bytes | None = None) -> tuple[bool, str]:
    """Copy a loaded image into the store (de-identified) and add its row. Returns (added, image id);
    an image whose source file, content or id is already stored is not copied again."""
    key = key or pseudonym_key(store)
    skey = source_key(key, m.sha256)
    existing = store.find_image_by_source(skey) or store.find_image_by_sha256(m.sha256)
    if existing is not None:
        return False, existing["image_id"]
    image_id = facts.image_id or "img-" + pseudonym(key, "image", m.sha256)
    try:
        store.get_image(image_id)
        return False, image_id  # the id is taken: never overwrite another row's file
    except NotFoundError:
        pass
    stored = write_copy(store, m, source_bytes(m), image_id, key)
    meta = {k: v for k, v in (facts.meta if facts.meta is not None else m.meta).items()
            if k not in imaging.PHI_KEYWORDS and k not in imaging.FREE_TEXT_KEYWORDS}
    meta.update(deidentified=True, source_format=m.format, format="DICOM" if stored.path.suffix == ".dcm"
                else ("PNG" if stored.path.suffix == ".png" else "TIFF"))
    rows, cols = m.shape
    added = store.save_image(ImageRecord(
        image_id, facts.case_id, str(stored.path), stored.sha256, rows=rows, cols=cols, laterality=m.laterality,
        view=m.view, pixel_spacing_mm=facts.pixel_spacing_mm or m.pixel_spacing_mm,
        modality=str(m.meta.get("Modality", "")), meta=meta, file_size=stored.size,
        file_mtime_ns=stored.mtime_ns, source_key=skey), actor=facts.actor)
    return added, image_id


def image_for_source(store, path) -> dict | None:
    """The stored image that was ingested from the file at ``path`` (matched by its keyed hash), or None."""
    return store.find_image_by_source(source_key(pseudonym_key(store), imaging.file_sha256(path)))


def burned_in_annotation(row: dict) -> bool:
    """True when an image row's file says BurnedInAnnotation = YES: text in the pixels (a name, a date) that
    de-identifying the header cannot remove. Pages showing the image warn about it."""
    meta = row.get("meta")
    meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
    return bool(meta.get("burned_in_annotation")) or str(meta.get("BurnedInAnnotation", "")).upper() == "YES"


BURNED_IN_WARNING = ("{label}: the file says its pixels carry burned-in annotation (BurnedInAnnotation = YES). "
                     "Text in the image may identify the patient; de-identification cannot remove it.")


# ---------------------------------------------------------------- opening them
def stored_image_path(store, row: dict) -> Path:
    """The file of an image row, inside the data directory (a row whose path climbs out of it, or
    that an older database left absolute, is refused)."""
    rel = str(row.get("rel_path", row["path"]))
    if rel.startswith(MISSING_PREFIX):
        raise ImageMissingError(
            f"Image {row['image_id']}: its file was outside the data directory and could not be copied in "
            "when the store was upgraded. Ingest the original file again.")
    try:
        return Path(store.data_dir) / store.relative_path(rel)
    except ValidationError as exc:
        raise ImagingError(f"Image {row['image_id']}: {exc}") from exc


def _missing(row: dict, path: Path) -> ImageMissingError:
    return ImageMissingError(
        f"Image {row['image_id']}: its file ({path.name}) is missing from the data directory. Restore it from "
        "a backup, or ingest the original again.")


def check_stored_file(store, row: dict) -> None:
    """Cheap check that an image's file is still the one stored: size and mtime; the SHA-256 when they
    changed (a file touched but not changed gets its new stat recorded). Raises ImageMissingError /
    ImageChangedError."""
    path = stored_image_path(store, row)
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise _missing(row, path) from exc
    if (st.st_size, st.st_mtime_ns) == (row.get("file_size"), row.get("file_mtime_ns")):
        return
    if imaging.file_sha256(path) != row["sha256"]:
        raise ImageChangedError(
            f"Image {row['image_id']}: its file ({path.name}) changed after it was ingested. It is not shown: "
            "drawings and caches belong to the original pixels. Restore the original file, or ingest the new "
            "one as a new image.")
    if not store.read_only:
        store.update_image_file(row["image_id"], file_size=st.st_size, file_mtime_ns=st.st_mtime_ns)


def load_stored_image(store, row: dict, *, show_phi: bool = False, max_pixels: int | None = None) -> Mammogram:
    """Open a stored image: its file, checked against the stored SHA-256 on the very bytes decoded."""
    path = stored_image_path(store, row)
    try:
        m = imaging.load_image(path, show_phi=show_phi, max_pixels=max_pixels, expected_sha256=row["sha256"])
    except ImageMissingError as exc:
        raise _missing(row, path) from exc
    except ImageChangedError as exc:
        raise ImageChangedError(f"Image {row['image_id']}: {exc}") from exc
    if not store.read_only and row.get("file_size") is None:
        st = path.stat()
        store.update_image_file(row["image_id"], file_size=st.st_size, file_mtime_ns=st.st_mtime_ns)
    return m

"""The DuckDB store: the only module that writes SQL.

Every value goes in through ``?`` parameters, every call gets its own cursor, and every
write runs inside a transaction. Database errors come out as the typed errors below so the
pages can show a clear message.

Durability: an annotation is first written to the database's own journal (``data.journal``: beside
the database file, locked, each record naming the database); the record is removed once the
transaction that stores it has ended. ``replay_journal`` (called by ``open_store``) stores what a crash
left behind, so a drawing that was saved is never lost, and a Save that raised never comes back.

Paths: ``images.path`` and ``findings.mask_path`` are stored relative to the data directory (folder
names often name the patient); the rows the store returns carry them resolved (``path``) and as stored
(``rel_path``). An image row also keeps its file's size and mtime for the integrity check
(``data.files.load_stored_image``).
"""
from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from dashboard.data.accounts import AccountStoreMixin
from dashboard.data.copies import adopt_outside_images
from dashboard.data.journal import Journal
from dashboard.data.names import CONCEPT_MAX, InvalidNameError, check_name, check_reader
from dashboard.data.private import chmod_private, private_dir, restrict_umask
from dashboard.data.studies import StudyStoreMixin
from dashboard.data.studies import where_equal as _where
from dashboard.errors import ConceptLensError
from dashboard.settings import journal_dir_for

SQL_DIR = Path(__file__).resolve().parent / "sql"


# ---------------------------------------------------------------- errors
class StoreError(ConceptLensError):
    """Base class of every error the store raises; its message is fit to show a user."""


class StoreLockedError(StoreError):
    """Another process holds the database file."""


class UnknownConceptError(StoreError):
    """An annotation names a concept the store does not know."""


class NotFoundError(StoreError):
    """A referenced row does not exist."""


class ConflictError(StoreError):
    """A write kept conflicting with concurrent writes and was given up."""


class ValidationError(StoreError):
    """A value is not acceptable (empty drawing, bad name, ...)."""


# ---------------------------------------------------------------- built-in concept palette
# BI-RADS lexicon groups plus normal structures. Colours are distinguishable on a grey image.
BUILTIN_CONCEPTS: list[tuple[str, str, str, str]] = [
    # name, colour, lexicon group, description
    ("mass", "#ff1744", "mass", "Mass (any shape or margin)"),
    ("calcification", "#00e5ff", "calcification", "Calcifications (any morphology)"),
    ("mass-round", "#e6194b", "mass shape", "Mass, round shape"),
    ("mass-oval", "#f58231", "mass shape", "Mass, oval shape"),
    ("mass-irregular", "#911eb4", "mass shape", "Mass, irregular shape"),
    ("margin-circumscribed", "#ffe119", "mass margin", "Mass margin, circumscribed"),
    ("margin-obscured", "#bcf60c", "mass margin", "Mass margin, obscured"),
    ("margin-microlobulated", "#fabebe", "mass margin", "Mass margin, microlobulated"),
    ("margin-indistinct", "#aaffc3", "mass margin", "Mass margin, indistinct"),
    ("margin-spiculated", "#f032e6", "mass margin", "Mass margin, spiculated"),
    ("calc-coarse", "#46f0f0", "calcification morphology", "Calcifications, coarse / typically benign"),
    ("calc-amorphous", "#008080", "calcification morphology", "Calcifications, amorphous"),
    ("calc-fine-pleomorphic", "#3cb44b", "calcification morphology", "Calcifications, fine pleomorphic"),
    ("calc-fine-linear", "#808000", "calcification morphology", "Calcifications, fine linear / branching"),
    ("calc-grouped", "#9a6324", "calcification distribution", "Calcifications, grouped / cluster"),
    ("calc-segmental", "#800000", "calcification distribution", "Calcifications, segmental"),
    ("architectural-distortion", "#000075", "architectural distortion", "Architectural distortion"),
    ("asymmetry", "#808080", "asymmetry", "Asymmetry (focal, global or developing)"),
    ("vessel", "#ff4500", "normal structure", "Blood vessel"),
    ("fibroglandular", "#ffd8b1", "normal structure", "Fibroglandular tissue"),
    ("fat", "#fffac8", "normal structure", "Fatty tissue"),
    ("skin", "#e6beff", "normal structure", "Skin line"),
    ("nipple", "#ff69b4", "normal structure", "Nipple"),
    ("pectoral-muscle", "#4363d8", "normal structure", "Pectoral muscle"),
]


@dataclass(frozen=True)
class DrawingRecord:
    """A reader's drawing before it is stored (``Store.save_annotation``): model-space pixels.

    patch_x0, patch_y0, patch_size  the patch drawn on, in the image's model pixels (imaging.Frame)
    shape, geometry                 the outline in patch pixels (``engine.dissection.drawing_to_mask``)
    mask_png                        the rasterised drawing as a 1-bit PNG; b"" until it is rasterised
    annotation_id                   None: a new id is drawn
    study, arm                      the reader study and arm the drawing was made in (None outside a study);
                                    journaled with the drawing, so a replay keeps them
    """

    image_id: str
    concept: str
    reader: str
    patch_x0: int
    patch_y0: int
    patch_size: int
    shape: str
    geometry: Any
    model_card: str = ""
    mask_png: bytes = b""
    annotation_id: str | None = None
    study: str | None = None
    arm: str | None = None


@dataclass(frozen=True)
class Annotation(DrawingRecord):
    """A stored drawing (``Store.list_annotations``): its ``annotation_id`` is always set, and
    ``deleted_at`` is set once it was undone."""

    created_at: Any = None
    deleted_at: Any = None


@dataclass(frozen=True)
class ImageRecord:
    """An image row (``Store.save_image``): its file, content hash and header facts.

    path              the file, under the data directory (absolute, or relative to it): stored relative
    rows, cols        source pixels; pixel_spacing_mm None when the file does not say
    meta              de-identified header summary (JSON-serialisable)
    file_size, file_mtime_ns  the file's stat when it was hashed (None: taken from the file now)
    source_key        keyed hash of the file the image was ingested from ('' for files made here)
    """

    image_id: str
    case_id: str
    path: str
    sha256: str
    rows: int
    cols: int
    laterality: str = ""
    view: str = ""
    pixel_spacing_mm: float | None = None
    modality: str = ""
    meta: dict | None = None
    file_size: int | None = None
    file_mtime_ns: int | None = None
    source_key: str = ""


@dataclass(frozen=True)
class FindingRecord:
    """A ground-truth finding (``Store.save_finding(s)``); geometry in source pixels.

    bbox (x0, y0, x1, y1), circle (cx, cy, radius), or mask_path (a PNG the image's size): any,
    or none for an image-level finding.
    """

    finding_id: str
    image_id: str
    concept: str
    pathology: str = "unknown"
    mask_path: str | None = None
    bbox: tuple[int, int, int, int] | None = None
    circle: tuple[float, float, float] | None = None
    attributes: dict | None = None
    source: str = ""

    def row(self) -> list:
        """The values of one ``findings`` INSERT, in column order."""
        x0, y0, x1, y1 = self.bbox if self.bbox else (None, None, None, None)
        cx, cy, r = self.circle if self.circle else (None, None, None)
        return [self.finding_id, self.image_id, self.concept, self.pathology, self.mask_path, x0, y0, x1, y1,
                cx, cy, r, json.dumps(self.attributes or {}, default=str), self.source]


@dataclass
class StatsIdentity:
    """What one dataset-statistics computation is of: its cache ``key`` and the card, weights, layer,
    data, quantile, top-k and patch count it stands for (shared by ``DissectionRun`` and the engine's
    ``DissectionStats``)."""

    key: str
    model_card: str
    weights_sha: str
    layer: str
    data_key: str
    quantile: float
    top_k: int
    n_patches: int


@dataclass
class DissectionRun(StatsIdentity):
    """A finished dataset-statistics computation (``Store.save_dissection_run``), keyed by ``key``."""

    n_units: int
    sample_rate: float
    path: str


def _translate(exc: Exception) -> StoreError:
    msg = str(exc)
    if isinstance(exc, duckdb.IOException) and "lock" in msg.lower():
        return StoreLockedError(
            "The label database is open in another ConceptLens process. "
            "Close it or point CONCEPTLENS_DB_PATH to another file. (" + msg.splitlines()[0] + ")"
        )
    if isinstance(exc, duckdb.ConstraintException):
        return ValidationError("The store refused a value: " + msg.splitlines()[0])
    if isinstance(exc, duckdb.TransactionException):
        return ConflictError("A concurrent write conflicted: " + msg.splitlines()[0])
    return StoreError("Database error: " + msg.splitlines()[0])


_PATH_LOCKS: dict[str, threading.RLock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.RLock:
    key = str(Path(path).resolve())
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(key, threading.RLock())


class Store(AccountStoreMixin, StudyStoreMixin):
    """A DuckDB file plus its journal folder. Thread-safe: one connection, a cursor per call.

    journal_dir  default: beside the database file, named from it (``settings.journal_dir_for``)
    data_dir     the folder image paths are relative to (default: the database file's folder, which
                 is ``settings.data_dir`` unless ``CONCEPTLENS_DB_PATH`` moves the database)
    """

    def __init__(self, db_path: Path, journal_dir: Path | None = None, *, data_dir: Path | None = None,
                 read_only: bool = False):
        self.db_path = Path(db_path)
        self.journal_dir = Path(journal_dir) if journal_dir else journal_dir_for(self.db_path)
        self.data_dir = Path(data_dir) if data_dir else self.db_path.parent
        self.read_only = read_only
        self.rewritten = 0  # rows whose absolute paths the migration made relative (see ``compact``)
        # one lock per database file in this process: two Store objects on one file (one DuckDB
        # instance) would otherwise race, e.g. on unit_labels' recompute, into key conflicts
        self._write_lock = _lock_for(self.db_path)
        try:
            if not read_only:
                private_dir(self.db_path.parent, ours=False)
            self._con = duckdb.connect(str(self.db_path), read_only=read_only)
        except duckdb.Error as exc:
            raise _translate(exc) from exc
        if not read_only:
            chmod_private(self.db_path)
            self.migrate()
        self.db_id = self._db_id()
        self.journal = Journal(self.journal_dir, self.db_id)

    # ------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def query(self, sql: str, params: list | tuple = ()) -> list[dict]:
        """Read rows as dicts. SQL stays in this module; callers use the named methods."""
        cur = self._con.cursor()
        try:
            cur.execute(sql, list(params))
            cols = [d[0] for d in cur.description] if cur.description else []
            return [dict(zip(cols, row)) for row in cur.fetchall()]
        except duckdb.Error as exc:
            raise _translate(exc) from exc
        finally:
            cur.close()

    @contextmanager
    def transaction(self, retries: int = 5) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction on a fresh cursor. Retried by ``_write`` on conflicts."""
        cur = self._con.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _write(self, fn, *args, retries: int = 8, **kw):
        """Run ``fn(cur, ...)`` in a transaction, retrying optimistic-concurrency conflicts."""
        delay = 0.01
        for attempt in range(retries):
            try:
                with self._write_lock, self.transaction() as cur:
                    return fn(cur, *args, **kw)
            except duckdb.TransactionException as exc:
                if attempt == retries - 1:
                    raise _translate(exc) from exc
                time.sleep(delay)
                delay *= 2
            except duckdb.Error as exc:
                raise _translate(exc) from exc

    # ------------------------------------------------------------ schema
    def schema_version(self) -> int:
        rows = self.query(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'schema_version'"
        )
        if not rows[0]["n"]:
            return 0
        return int(self.query("SELECT coalesce(max(version), 0) AS v FROM schema_version")[0]["v"])

    def migrate(self) -> int:
        """Apply every ``sql/NNN_*.sql`` newer than the recorded version, each in a transaction."""
        files = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
        cur = self._con.cursor()
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
            )
        finally:
            cur.close()
        current = self.schema_version()
        for f in files:
            version = int(f.name[:3])
            if version <= current:
                continue

            def apply(cur, sql=f.read_text(), version=version, name=f.stem):
                cur.execute(sql)
                cur.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name])

            self._write(apply)
            current = version
        self._seed_concepts()
        self.rewritten = self._relativize_paths()
        return current

    def _db_id(self) -> str | None:
        """The id migration 6 drew for this database (None for an older file opened read-only)."""
        try:
            rows = self.query("SELECT db_id FROM store_identity LIMIT 1")
        except StoreError:
            return None
        return rows[0]["db_id"] if rows else None

    # ------------------------------------------------------------ paths under the data directory
    def relative_path(self, path) -> str:
        """``path`` as stored: relative to the data directory, POSIX separators. An absolute path must
        lie under the data directory (symlinks resolved); a relative one may not climb out of it."""
        p = Path(path)
        if p.is_absolute():
            root = self.data_dir.resolve()
            try:
                rel = p.resolve().relative_to(root)
            except ValueError:
                try:  # a symlink under the data dir pointing out of it: keep the link's own place
                    rel = p.absolute().relative_to(root)
                except ValueError:
                    raise ValidationError(
                        f"{p.name}: image files the store references live under the data directory; "
                        "ingest or upload the file, which puts a de-identified copy there.") from None
        else:
            rel = p
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValidationError(f"{p.name}: not a path inside the data directory.")
        return rel.as_posix()

    def resolve_path(self, stored: str) -> Path:
        """A stored path as a file path (an older absolute one as it is)."""
        p = Path(stored)
        return p if p.is_absolute() else self.data_dir / p

    def _image_row(self, row: dict) -> dict:
        row["rel_path"] = row["path"]
        row["path"] = str(self.resolve_path(row["path"]))
        return row

    def _finding_row(self, row: dict) -> dict:
        if row.get("mask_path"):
            row["mask_path"] = str(self.resolve_path(row["mask_path"]))
        return row

    def _relativize_paths(self) -> None:
        """Rewrite absolute paths under the data directory as relative ones (images, findings, and the
        image paths in the audit log); paths outside it are for ``data.files.adopt_outside_images``."""
        root = self.data_dir.resolve()

        def rel_or_none(value: str) -> str | None:
            try:
                return Path(value).resolve().relative_to(root).as_posix()
            except (ValueError, OSError):
                return None

        images = self.query("SELECT image_id, path FROM images WHERE path LIKE '/%'")
        findings = self.query("SELECT finding_id, mask_path FROM findings WHERE mask_path LIKE '/%'")
        audits = self.query("SELECT seq, payload FROM audit_log WHERE entity = 'image' AND payload LIKE '%\"path\": \"/%'")
        if not (images or findings or audits):
            return 0

        def write(cur):
            for r in images:
                rel = rel_or_none(r["path"])
                if rel is not None:
                    cur.execute("UPDATE images SET path = ? WHERE image_id = ?", [rel, r["image_id"]])
            for r in findings:
                rel = rel_or_none(r["mask_path"])
                cur.execute("UPDATE findings SET mask_path = ? WHERE finding_id = ?",
                            [rel, r["finding_id"]])  # a mask outside the data dir is dropped, not kept
            for r in audits:
                payload = json.loads(r["payload"])
                payload["path"] = rel_or_none(payload["path"]) or "(outside the data directory: removed)"
                cur.execute("UPDATE audit_log SET payload = ? WHERE seq = ?", [json.dumps(payload), r["seq"]])

        self._write(write)
        return len(images) + len(findings) + len(audits)

    def compact(self) -> None:
        """Rewrite the database into a fresh file and put it in place of the old one. DuckDB keeps the
        blocks an UPDATE replaced in the file; after rows were scrubbed (absolute paths that may name a
        patient), only a fresh copy is free of them. Sequences, indexes and comments are copied."""
        if self.read_only:
            raise StoreError("A read-only store cannot be compacted.")
        fresh = self.db_path.with_name(self.db_path.name + ".compact")
        fresh.unlink(missing_ok=True)
        with self._write_lock:
            try:
                name = self._con.execute("SELECT current_database()").fetchone()[0]
                self._con.execute("CHECKPOINT")
                self._con.execute("ATTACH '" + str(fresh).replace("'", "''") + "' AS conceptlens_compact")
                self._con.execute('COPY FROM DATABASE "' + name.replace('"', '""') + '" TO conceptlens_compact')
                self._con.execute("DETACH conceptlens_compact")
                self._con.close()
                chmod_private(fresh)
                fresh.replace(self.db_path)
                self._con = duckdb.connect(str(self.db_path))
            except duckdb.Error as exc:
                raise _translate(exc) from exc

    def _seed_concepts(self) -> None:
        def seed(cur):
            for name, colour, group, desc in BUILTIN_CONCEPTS:
                cur.execute(
                    "INSERT INTO concepts (name, colour, lexicon_group, description, builtin)"
                    " VALUES (?, ?, ?, ?, true) ON CONFLICT (name) DO NOTHING",
                    [name, colour, group, desc],
                )

        self._write(seed)

    # ------------------------------------------------------------ audit
    @staticmethod
    def _audit(cur, actor: str, action: str, entity: str, entity_id: str, payload: Any = None) -> None:
        cur.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_id, payload) VALUES (?, ?, ?, ?, ?)",
            [actor, action, entity, entity_id, json.dumps(payload, default=str)],
        )

    def audit_log(self, limit: int = 200) -> list[dict]:
        return self.query("SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?", [limit])

    # ------------------------------------------------------------ cases and images
    def save_case(self, case_id: str, source: str, *, split: str = "none", label: str = "unknown",
                  description: str = "", patient_ref: str = "", actor: str = "system") -> None:
        """Insert or update a case."""

        def write(cur):
            cur.execute(
                "INSERT INTO cases (case_id, source, split, label, description, patient_ref)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE SET"
                " source = excluded.source, split = excluded.split, label = excluded.label,"
                " description = excluded.description, patient_ref = excluded.patient_ref",
                [case_id, source, split, label, description, patient_ref],
            )
            self._audit(cur, actor, "save", "case", case_id, {"source": source, "label": label})

        self._write(write)

    def save_image(self, image: ImageRecord, *, actor: str = "system") -> bool:
        """Insert an image unless one with the same content hash exists. Returns True if added."""

        rel = self.relative_path(image.path)
        size, mtime = image.file_size, image.file_mtime_ns
        if size is None or mtime is None:
            try:
                st = self.resolve_path(rel).stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size = mtime = None  # a row for a file that is not there (tests, a later copy)

        def write(cur):
            cur.execute("SELECT image_id FROM images WHERE sha256 = ? OR image_id = ?", [image.sha256, image.image_id])
            if cur.fetchone():
                return False
            cur.execute(
                "INSERT INTO images (image_id, case_id, path, sha256, laterality, view, rows, cols,"
                " pixel_spacing_mm, modality, meta, file_size, file_mtime_ns, source_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [image.image_id, image.case_id, rel, image.sha256, image.laterality, image.view,
                 int(image.rows), int(image.cols), image.pixel_spacing_mm, image.modality,
                 json.dumps(image.meta or {}, default=str), size, mtime, image.source_key or ""],
            )
            self._audit(cur, actor, "save", "image", image.image_id, {"path": rel, "sha256": image.sha256})
            return True

        return self._write(write)

    def save_finding(self, finding: FindingRecord) -> None:
        """Insert or replace one ground-truth finding."""
        self.save_findings([finding])

    def save_findings(self, findings: list[FindingRecord]) -> int:
        """Insert or replace ground-truth findings in one transaction (bulk import).

        Returns the number of rows written; nothing is written if any row fails.
        """
        params = [f.row() for f in findings]
        if not params:
            return 0

        def write(cur):
            cur.executemany("DELETE FROM findings WHERE finding_id = ?", [[p[0]] for p in params])
            cur.executemany(
                "INSERT INTO findings (finding_id, image_id, concept, pathology, mask_path, x0, y0, x1, y1,"
                " cx, cy, radius, attributes, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            return len(params)

        return self._write(write)

    def undo_import(self, case_id: str, image_ids: list[str], *, drop_case: bool,
                    actor: str = "system") -> None:
        """Take back a case import that failed half-way: the findings and rows of ``image_ids`` (the
        images this import added; never one with drawings), and the case itself when ``drop_case``
        (the import created it) and no image of it is left. Three transactions, children first:
        DuckDB refuses to delete a row whose referencing rows were deleted in the same transaction;
        this order never leaves a reference dangling if it stops in between."""
        keep = {r["image_id"] for r in self.query(
            "SELECT DISTINCT image_id FROM annotations WHERE list_contains(?, image_id)", [list(image_ids)])}
        gone = [i for i in image_ids if i not in keep]

        def children(cur):
            for image_id in gone:
                cur.execute("DELETE FROM findings WHERE image_id = ?", [image_id])
                cur.execute("DELETE FROM predictions WHERE image_id = ?", [image_id])

        def images(cur):
            for image_id in gone:
                cur.execute("DELETE FROM images WHERE image_id = ?", [image_id])
                self._audit(cur, actor, "undo-import", "image", image_id)

        def case(cur):
            cur.execute("SELECT count(*) FROM images WHERE case_id = ?", [case_id])
            if not cur.fetchone()[0]:
                cur.execute("DELETE FROM cases WHERE case_id = ?", [case_id])
                self._audit(cur, actor, "undo-import", "case", case_id)

        self._write(children)
        self._write(images)
        if drop_case:
            self._write(case)

    def list_cases(self) -> list[dict]:
        """Cases with their image count and label status (drawings, concepts)."""
        return self.query(
            "SELECT c.*, count(DISTINCT i.image_id) AS n_images,"
            " count(DISTINCT a.annotation_id) AS n_annotations,"
            " coalesce(string_agg(DISTINCT a.concept, ', ' ORDER BY a.concept), '') AS concepts"
            " FROM cases c LEFT JOIN images i ON i.case_id = c.case_id"
            " LEFT JOIN annotations a ON a.image_id = i.image_id AND a.deleted_at IS NULL"
            " GROUP BY ALL ORDER BY c.case_id"
        )

    def get_case(self, case_id: str) -> dict:
        rows = self.query("SELECT * FROM cases WHERE case_id = ?", [case_id])
        if not rows:
            raise NotFoundError(f"No case {case_id!r} in the store.")
        return rows[0]

    def list_images(self, case_id: str | None = None, split: str | None = None,
                    source: str | None = None) -> list[dict]:
        sql, params = _where("SELECT i.*, c.split, c.label AS case_label, c.source FROM images i"
                             " JOIN cases c ON c.case_id = i.case_id WHERE true",
                             (("i.case_id", case_id), ("c.split", split), ("c.source", source)))
        return [self._image_row(r) for r in self.query(sql + " ORDER BY i.case_id, i.laterality DESC, i.view", params)]

    def get_image(self, image_id: str) -> dict:
        rows = self.query("SELECT * FROM images WHERE image_id = ?", [image_id])
        if not rows:
            raise NotFoundError(f"No image {image_id!r} in the store.")
        return self._image_row(rows[0])

    def list_findings(self, image_id: str | None = None) -> list[dict]:
        if image_id is None:
            rows = self.query("SELECT * FROM findings ORDER BY image_id, finding_id")
        else:
            rows = self.query("SELECT * FROM findings WHERE image_id = ? ORDER BY finding_id", [image_id])
        return [self._finding_row(r) for r in rows]

    def find_image_by_sha256(self, sha256: str) -> dict | None:
        """The image row whose file content hash is ``sha256``, or None (ingest's duplicate check)."""
        rows = self.query("SELECT * FROM images WHERE sha256 = ?", [sha256])
        return self._image_row(rows[0]) if rows else None

    def find_image_by_source(self, source_key: str) -> dict | None:
        """The image ingested from the file whose keyed hash is ``source_key`` (``data.files.source_key``)."""
        if not source_key:
            return None
        rows = self.query("SELECT * FROM images WHERE source_key = ?", [source_key])
        return self._image_row(rows[0]) if rows else None

    def update_image_file(self, image_id: str, *, path: str | None = None, sha256: str | None = None,
                          file_size: int, file_mtime_ns: int, actor: str = "system") -> None:
        """Record an image file's new stat (its content re-verified by hash), or the file a migration
        moved it to (``path``/``sha256``, audited)."""

        def write(cur):
            if path is None:
                cur.execute("UPDATE images SET file_size = ?, file_mtime_ns = ? WHERE image_id = ?",
                            [int(file_size), int(file_mtime_ns), image_id])
                return
            rel = self.relative_path(path)
            cur.execute("UPDATE images SET path = ?, sha256 = coalesce(?, sha256), file_size = ?, file_mtime_ns = ?"
                        " WHERE image_id = ?", [rel, sha256, int(file_size), int(file_mtime_ns), image_id])
            self._audit(cur, actor, "move", "image", image_id, {"path": rel, "sha256": sha256})

        self._write(write)

    def set_source_key(self, image_id: str, source_key: str) -> None:
        def write(cur):
            cur.execute("UPDATE images SET source_key = ? WHERE image_id = ?", [source_key, image_id])

        self._write(write)

    def mark_image_missing(self, image_id: str, placeholder: str, *, actor: str = "system") -> None:
        """Replace an image's path (outside the data dir, not adoptable) by a placeholder that opens as
        missing; the old path goes, because it may name the patient."""

        def write(cur):
            cur.execute("UPDATE images SET path = ?, file_size = NULL, file_mtime_ns = NULL WHERE image_id = ?",
                        [placeholder, image_id])
            self._audit(cur, actor, "unlink", "image", image_id, {"path": placeholder})

        self._write(write)

    def set_pixel_spacing(self, image_ids: list[str], spacing_mm: float, source: str, *,
                          actor: str = "system") -> int:
        """Give images without a pixel spacing ``spacing_mm``, recording where it came from in
        ``meta.spacing_source``. Images that have one keep it. Returns how many changed."""
        spacing = float(spacing_mm)
        if not 0.005 <= spacing <= 2.0:
            raise ValidationError(f"A pixel spacing of {spacing:g} mm is not a mammogram's (0.005 to 2 mm).")

        def write(cur):
            n = 0
            for image_id in image_ids:
                cur.execute("UPDATE images SET pixel_spacing_mm = ?, meta = json_merge_patch(coalesce(meta, '{}'), ?)"
                            " WHERE image_id = ? AND pixel_spacing_mm IS NULL RETURNING image_id",
                            [spacing, json.dumps({"spacing_source": source}), image_id])
                if cur.fetchall():
                    n += 1
                    self._audit(cur, actor, "set_spacing", "image", image_id, {"mm": spacing, "source": source})
            return n

        return self._write(write)

    def ensure_case(self, case_id: str, source: str, *, description: str = "", patient_ref: str = "",
                    actor: str = "system") -> bool:
        """Insert a case unless it exists; an existing case keeps its split and label. True if added."""

        def write(cur):
            cur.execute("SELECT 1 FROM cases WHERE case_id = ?", [case_id])
            if cur.fetchone():
                return False
            cur.execute(
                "INSERT INTO cases (case_id, source, description, patient_ref) VALUES (?, ?, ?, ?)",
                [case_id, source, description, patient_ref],
            )
            self._audit(cur, actor, "create", "case", case_id, {"source": source})
            return True

        return self._write(write)

    # ------------------------------------------------------------ readers and concepts
    def save_reader(self, reader: str) -> str:
        try:
            name = check_reader(reader)
        except InvalidNameError as exc:
            raise ValidationError(str(exc)) from exc

        def write(cur):
            cur.execute("INSERT INTO readers (reader) VALUES (?) ON CONFLICT (reader) DO NOTHING", [name])

        self._write(write)
        return name

    def list_concepts(self) -> list[dict]:
        return self.query("SELECT * FROM concepts ORDER BY builtin DESC, lexicon_group, name")

    def get_concept(self, name: str) -> dict:
        rows = self.query("SELECT * FROM concepts WHERE name = ?", [name])
        if not rows:
            raise UnknownConceptError(
                f"Unknown concept {name!r}. Pick one from the palette or add it as a custom concept first."
            )
        return rows[0]

    def save_concept(self, name: str, colour: str = "#00bcd4", lexicon_group: str = "custom",
                     description: str = "", actor: str = "system") -> str:
        """Add a custom concept. Names are lower-case words joined by hyphens."""
        try:
            check_name(name, "concept name", CONCEPT_MAX)
            if description:
                check_name(description, "concept description", 200)
        except InvalidNameError as exc:
            raise ValidationError(str(exc)) from exc
        clean = "-".join(name.strip().lower().split())
        if not clean or len(clean) > CONCEPT_MAX or not all(ch.isalnum() or ch == "-" for ch in clean):
            raise ValidationError("A concept name is 1 to 60 letters, digits or hyphens.")

        def write(cur):
            cur.execute(
                "INSERT INTO concepts (name, colour, lexicon_group, description, builtin)"
                " VALUES (?, ?, ?, ?, false) ON CONFLICT (name) DO NOTHING",
                [clean, colour, lexicon_group, description],
            )
            self._audit(cur, actor, "save", "concept", clean, {"group": lexicon_group})

        self._write(write)
        return clean

    # ------------------------------------------------------------ annotations
    def save_annotation(self, drawing: DrawingRecord, *, extra_writes=None, unit_ious: dict | None = None) -> str:
        """Store one drawing (its ``mask_png`` must be set). Journaled first, so a crash mid-write
        loses nothing. Returns the annotation id.

        ``study``/``arm``: the reader study and arm the drawing was made in (journaled with it).

        ``extra_writes(cur, annotation_id)`` runs in the same transaction, so the drawing and
        whatever depends on it land together. ``unit_ious`` (``{"model_card", "layer", "units",
        "ious"}``, the units whose IoU with the drawing passed the labeling threshold) is journaled
        with the drawing and written in the same transaction as ``annotation_units`` rows, after
        which ``unit_labels`` of that model and layer are recomputed (see ``_relabel_units``).
        """
        if not drawing.mask_png:
            raise ValidationError("The drawing is empty: draw a region before saving.")
        try:
            reader = check_reader(drawing.reader)
        except InvalidNameError as exc:
            raise ValidationError(str(exc)) from exc
        self.get_concept(drawing.concept)  # raises UnknownConceptError with a clear message
        self.get_image(drawing.image_id)  # raises NotFoundError before anything is journaled
        annotation_id = drawing.annotation_id or uuid.uuid4().hex
        record = dict(annotation_id=annotation_id, image_id=drawing.image_id, concept=drawing.concept,
                      reader=reader, patch_x0=int(drawing.patch_x0), patch_y0=int(drawing.patch_y0),
                      patch_size=int(drawing.patch_size), shape=drawing.shape, geometry=drawing.geometry,
                      mask_png=drawing.mask_png.hex(), model_card=drawing.model_card, study=drawing.study,
                      arm=drawing.arm)
        if unit_ious is not None:
            record["unit_ious"] = {
                "model_card": str(unit_ious["model_card"]), "layer": str(unit_ious["layer"]),
                "units": [int(u) for u in unit_ious["units"]],
                "ious": [float(v) for v in unit_ious["ious"]],
            }
            if len(record["unit_ious"]["units"]) != len(record["unit_ious"]["ious"]):
                raise ValidationError("unit_ious needs one IoU per unit.")
        if self.read_only:
            raise StoreError("The label store is open read-only; nothing was saved.")
        with self.journal.locked():
            jpath = self.journal.write(annotation_id, record)
            try:
                self._store_annotation(record, extra_writes)
            finally:
                # stored, or reported as failed: either way the record must not be replayed. Only a
                # crash before this line (the caller got no answer) leaves it for replay_journal.
                self.journal.discard(jpath)
        return annotation_id

    def _store_annotation(self, record: dict, extra_writes=None) -> None:
        def write(cur):
            cur.execute("SELECT 1 FROM annotations WHERE annotation_id = ?", [record["annotation_id"]])
            if cur.fetchone():
                return  # already stored (journal replay after a commit)
            cur.execute("SELECT 1 FROM images WHERE image_id = ?", [record["image_id"]])
            if not cur.fetchone():
                raise NotFoundError(f"No image {record['image_id']!r} in the store.")
            cur.execute("INSERT INTO readers (reader) VALUES (?) ON CONFLICT (reader) DO NOTHING",
                        [record["reader"]])
            cur.execute(
                "INSERT INTO annotations (annotation_id, image_id, concept, reader, patch_x0, patch_y0,"
                " patch_size, shape, geometry, mask_png, model_card, study, arm)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [record["annotation_id"], record["image_id"], record["concept"], record["reader"],
                 record["patch_x0"], record["patch_y0"], record["patch_size"], record["shape"],
                 json.dumps(record["geometry"]), bytes.fromhex(record["mask_png"]), record["model_card"],
                 record.get("study"), record.get("arm")],
            )
            self._audit(cur, record["reader"], "create", "annotation", record["annotation_id"],
                        {"image_id": record["image_id"], "concept": record["concept"]})
            if record.get("unit_ious"):
                ui = record["unit_ious"]
                self._write_annotation_units(cur, record["annotation_id"], ui["model_card"], ui["layer"],
                                             ui["units"], ui["ious"])
            if extra_writes is not None:
                extra_writes(cur, record["annotation_id"])

        self._write(write)

    def replay_journal(self) -> list[str]:
        """Store the annotations a crash left in this database's journal. Returns their ids.

        Records of another database (a journal folder shared by mistake) are left alone; a record
        that cannot be stored is kept beside the journal with the reason, never silently dropped."""
        done: list[str] = []
        if self.read_only or not self.journal_dir.is_dir():
            return done
        with self.journal.locked():
            for jpath, record in self.journal.pending():
                try:
                    record["reader"] = check_reader(record.get("reader"))
                    self._store_annotation(record)
                except (StoreError, InvalidNameError) as exc:
                    self.journal.reject(jpath, record, str(exc))
                    continue
                self.journal.discard(jpath)
                done.append(record["annotation_id"])
        return done

    def list_annotations(self, *, image_id: str | None = None, concept: str | None = None,
                         include_deleted: bool = False, model_card: str | None = None) -> list[Annotation]:
        live = "" if include_deleted else " AND deleted_at IS NULL"
        sql, params = _where("SELECT * FROM annotations WHERE true" + live,
                             (("image_id", image_id), ("concept", concept), ("model_card", model_card)))
        rows = self.query(sql + " ORDER BY created_at, annotation_id", params)
        out = []
        for r in rows:
            r["geometry"] = json.loads(r["geometry"]) if isinstance(r["geometry"], str) else r["geometry"]
            r["mask_png"] = bytes(r["mask_png"])
            out.append(Annotation(**r))
        return out

    def delete_annotation(self, annotation_id: str, actor: str, extra_writes=None) -> None:
        """Soft-delete a drawing (it stays in the table with ``deleted_at`` set)."""

        def write(cur):
            cur.execute("SELECT deleted_at FROM annotations WHERE annotation_id = ?", [annotation_id])
            row = cur.fetchone()
            if row is None:
                raise NotFoundError(f"No annotation {annotation_id!r}.")
            if row[0] is not None:
                return
            cur.execute("UPDATE annotations SET deleted_at = current_timestamp WHERE annotation_id = ?",
                        [annotation_id])
            self._audit(cur, actor, "delete", "annotation", annotation_id)
            # the drawing's unit labels go with it: recompute from the drawings still live
            cur.execute("SELECT DISTINCT model_card, layer FROM annotation_units WHERE annotation_id = ?",
                        [annotation_id])
            for model_card, layer in cur.fetchall():
                self._relabel_units(cur, model_card, layer)
            if extra_writes is not None:
                extra_writes(cur, annotation_id)

        self._write(write)

    # ------------------------------------------------------------ concept engine: unit labels
    def _write_annotation_units(self, cur, annotation_id: str, model_card: str, layer: str,
                                units: list[int], ious: list[float]) -> None:
        """Insert a drawing's unit IoUs, then recompute that model/layer's unit labels."""
        if units:
            cur.execute(
                "INSERT INTO annotation_units (annotation_id, model_card, layer, unit, iou)"
                " SELECT ?, ?, ?, unnest(?::INTEGER[]), unnest(?::DOUBLE[])",
                [annotation_id, model_card, layer, [int(u) for u in units], [float(v) for v in ious]],
            )
        self._relabel_units(cur, model_card, layer)

    @staticmethod
    def _relabel_units(cur, model_card: str, layer: str) -> None:
        """Keep-best rule over live drawings: each unit takes the concept of its highest IoU.

        Ties go to the earlier drawing (a later one must *beat* the best IoU), so replaying the
        drawings one by one with the seed's incremental rule gives the same table.
        """
        cur.execute("DELETE FROM unit_labels WHERE model_card = ? AND layer = ?", [model_card, layer])
        cur.execute(
            "INSERT INTO unit_labels (model_card, layer, unit, concept, iou, annotation_id, labeled_at)"
            " SELECT model_card, layer, unit, concept, iou, annotation_id, created_at FROM ("
            "  SELECT au.model_card, au.layer, au.unit, a.concept, au.iou, au.annotation_id, a.created_at,"
            "   row_number() OVER (PARTITION BY au.unit"
            "                      ORDER BY au.iou DESC, a.created_at, au.annotation_id) AS rn"
            "  FROM annotation_units au JOIN annotations a ON a.annotation_id = au.annotation_id"
            "  WHERE au.model_card = ? AND au.layer = ? AND a.deleted_at IS NULL"
            " ) WHERE rn = 1",
            [model_card, layer],
        )

    def list_unit_labels(self, model_card: str, layer: str) -> list[dict]:
        """Current unit labels of a model layer, with the drawing that earned each."""
        return self.query(
            "SELECT ul.unit, ul.concept, ul.iou, ul.annotation_id, a.image_id, a.reader, ul.labeled_at"
            " FROM unit_labels ul JOIN annotations a ON a.annotation_id = ul.annotation_id"
            " WHERE ul.model_card = ? AND ul.layer = ? ORDER BY ul.unit",
            [model_card, layer],
        )

    def list_annotation_units(self, *, annotation_id: str | None = None, model_card: str | None = None,
                              layer: str | None = None, include_deleted: bool = False) -> list[dict]:
        """Stored unit IoUs of drawings (above the labeling threshold), with the drawing's concept."""
        sql, params = _where("SELECT au.*, a.concept, a.image_id, a.reader, a.deleted_at FROM annotation_units au"
                             " JOIN annotations a ON a.annotation_id = au.annotation_id WHERE true"
                             + ("" if include_deleted else " AND a.deleted_at IS NULL"),
                             (("au.annotation_id", annotation_id), ("au.model_card", model_card), ("au.layer", layer)))
        return self.query(sql + " ORDER BY au.annotation_id, au.unit", params)

    # ------------------------------------------------------------ concept engine: probes
    def save_probe(self, *, model_card: str, layer: str, concepts: list[str], weights: bytes,
                   metrics: dict, annotation_ids: list[str], readers: list[str],
                   actor: str = "system") -> int:
        """Store a trained probe version (weights as safetensors bytes). Returns its version."""

        def write(cur):
            cur.execute(
                "INSERT INTO probes (model_card, layer, concepts, weights, metrics, annotation_ids, readers)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING version",
                [model_card, layer, json.dumps(list(concepts)), weights, json.dumps(metrics, default=float),
                 json.dumps(list(annotation_ids)), json.dumps(list(readers))],
            )
            version = int(cur.fetchone()[0])
            self._audit(cur, actor, "train", "probe", str(version),
                        {"model_card": model_card, "layer": layer, "concepts": list(concepts)})
            return version

        return self._write(write)

    @staticmethod
    def _probe_row(row: dict) -> dict:
        for key in ("concepts", "metrics", "annotation_ids", "readers"):
            if key in row and isinstance(row[key], str):
                row[key] = json.loads(row[key])
        if row.get("weights") is not None:
            row["weights"] = bytes(row["weights"])
        return row

    def get_probe(self, version: int | None = None, *, model_card: str | None = None,
                  layer: str | None = None) -> dict:
        """One probe version (the latest matching one when ``version`` is None)."""
        sql, params = _where("SELECT * FROM probes WHERE true",
                             (("version", version), ("model_card", model_card), ("layer", layer)))
        rows = self.query(sql + " ORDER BY version DESC LIMIT 1", params)
        if not rows:
            raise NotFoundError("No trained concept probe" + (f" version {version}" if version else "")
                                + ". Train the probes first.")
        return self._probe_row(rows[0])

    def list_probes(self, *, model_card: str | None = None, layer: str | None = None) -> list[dict]:
        """Probe versions, newest first, without their weights."""
        sql, params = _where("SELECT version, model_card, layer, concepts, metrics, annotation_ids, readers,"
                             " created_at FROM probes WHERE true", (("model_card", model_card), ("layer", layer)))
        return [self._probe_row(r) for r in self.query(sql + " ORDER BY version DESC", params)]

    # ------------------------------------------------------------ concept engine: runs
    def save_dissection_run(self, run: DissectionRun) -> None:
        """Record a finished dataset-statistics computation (idempotent on its key)."""

        def write(cur):
            cur.execute(
                "INSERT INTO dissection_runs (key, model_card, weights_sha, layer, data_key, quantile,"
                " top_k, n_patches, n_units, sample_rate, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET path = excluded.path",
                [run.key, run.model_card, run.weights_sha, run.layer, run.data_key, float(run.quantile),
                 int(run.top_k), int(run.n_patches), int(run.n_units), float(run.sample_rate), str(run.path)],
            )

        self._write(write)

    def list_dissection_runs(self, *, model_card: str | None = None, layer: str | None = None) -> list[dict]:
        sql, params = _where("SELECT * FROM dissection_runs WHERE true", (("model_card", model_card), ("layer", layer)))
        return self.query(sql + " ORDER BY created_at DESC", params)

    def save_tcav_run(self, *, probe_version: int, model_card: str, layer: str, target: int,
                      results: dict) -> int:
        def write(cur):
            cur.execute(
                "INSERT INTO tcav_runs (probe_version, model_card, layer, target, results)"
                " VALUES (?, ?, ?, ?, ?) RETURNING run_id",
                [int(probe_version), model_card, layer, int(target), json.dumps(results, default=float)],
            )
            return int(cur.fetchone()[0])

        return self._write(write)

    def latest_tcav_run(self, probe_version: int, target: int | None = None) -> dict | None:
        sql = "SELECT * FROM tcav_runs WHERE probe_version = ?"
        params: list = [int(probe_version)]
        if target is not None:
            sql += " AND target = ?"
            params.append(int(target))
        rows = self.query(sql + " ORDER BY run_id DESC LIMIT 1", params)
        if not rows:
            return None
        row = rows[0]
        row["results"] = json.loads(row["results"]) if isinstance(row["results"], str) else row["results"]
        return row

    # ------------------------------------------------------------ predictions (worklist scores)
    def save_prediction(self, model_card: str, weights_sha: str, image_id: str, score: float,
                        top_patches: list) -> None:
        def write(cur):
            cur.execute(
                "INSERT INTO predictions (model_card, weights_sha, image_id, score, top_patches)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (model_card, weights_sha, image_id) DO UPDATE SET"
                " score = excluded.score, top_patches = excluded.top_patches,"
                " computed_at = now()",
                [model_card, weights_sha, image_id, float(score), json.dumps(top_patches)],
            )

        self._write(write)

    def get_prediction(self, model_card: str, weights_sha: str, image_id: str) -> dict | None:
        rows = self.query(
            "SELECT * FROM predictions WHERE model_card = ? AND weights_sha = ? AND image_id = ?",
            [model_card, weights_sha, image_id],
        )
        if not rows:
            return None
        row = rows[0]
        row["top_patches"] = json.loads(row["top_patches"])
        return row

    def list_worklist(self, model_card: str, weights_sha: str) -> list[dict]:
        """One row per case: source, split, truth label, description, max image score under this
        model (NULL when not scored yet), drawings and concepts so far."""
        return self.query(
            "WITH ann AS (SELECT i.case_id, count(*) AS n_annotations,"
            "   string_agg(DISTINCT a.concept, ', ' ORDER BY a.concept) AS concepts"
            "   FROM annotations a JOIN images i ON i.image_id = a.image_id"
            "   WHERE a.deleted_at IS NULL GROUP BY i.case_id),"
            " img AS (SELECT i.case_id, count(*) AS n_images,"
            "   string_agg(i.laterality || ' ' || i.view, ', ' ORDER BY i.laterality DESC, i.view) AS views,"
            "   max(p.score) AS score, count(p.score) AS n_scored"
            "   FROM images i LEFT JOIN predictions p ON p.image_id = i.image_id"
            "   AND p.model_card = ? AND p.weights_sha = ? GROUP BY i.case_id)"
            " SELECT c.case_id, c.source, c.split, c.label, c.description, img.views,"
            "   coalesce(img.n_images, 0) AS n_images, img.score, coalesce(img.n_scored, 0) AS n_scored,"
            "   coalesce(ann.n_annotations, 0) AS n_annotations, coalesce(ann.concepts, '') AS concepts"
            " FROM cases c LEFT JOIN img ON img.case_id = c.case_id LEFT JOIN ann ON ann.case_id = c.case_id"
            " ORDER BY c.case_id",
            [model_card, weights_sha],
        )


def open_store(settings) -> Store:
    """Open (and migrate) the store named by the settings, copy in the files of any older row that
    points outside the data directory, then replay any journaled drawing.

    This is how a process (the app, a command line) takes up the data directory, so from here on every
    file it writes is private (umask 077: caches, exports, DuckDB's WAL), whoever writes it."""
    restrict_umask()
    if getattr(settings, "data_dir", None) is not None:
        private_dir(settings.data_dir)
    store = Store(settings.db_path, settings.journal_dir, data_dir=getattr(settings, "data_dir", None))
    adopted = adopt_outside_images(store)
    if adopted or getattr(store, "rewritten", 0):
        store.compact()  # the replaced paths must not linger in the file's free blocks
    store.replay_journal()
    return store


def run_with_store(settings, command: Callable[[Store], int]) -> int:
    """A command line's body with the settings' store open (``open_store``): ``command``'s exit status,
    or 2 after printing a ``ConceptLensError`` as ``error: …`` on stderr. The store is closed either way."""
    try:
        store = open_store(settings)
    except ConceptLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return command(store)
    except ConceptLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()

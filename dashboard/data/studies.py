"""The store's SQL for reader studies (migration 005): studies, assignments, reads, read events,
questionnaires, study drawings and the audit-log query.

``StudyStoreMixin`` is inherited by ``dashboard.data.store.Store`` and uses its plumbing (``query``,
``_write``, ``_audit``): ``?`` parameters, a cursor per call, every write in one transaction, every
study action audited in the same transaction as the write it records. The rules (who may open what,
which answers are valid, the washout) live in ``dashboard.study``; the few that protect the data
itself are enforced here as well: a submitted read is never updated, a read is submitted once,
a study edit names the revision it read (two coordinators: one wins, the other gets
``StudyConflictError``).

Time stamps are naive UTC ``datetime`` values passed in by the caller (the server's clock).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dashboard.errors import ConceptLensError


class StudyStoreError(ConceptLensError):
    """Base class of the study store's errors; the message is fit to show a user."""


class StudyNotFoundError(StudyStoreError):
    """No such study, assignment or read."""


class StudyConflictError(StudyStoreError):
    """Someone else changed the same study or read first (or it exists already)."""


class ReadLockedError(StudyStoreError):
    """The read was submitted already: it cannot be changed, only corrected by a new read."""


#: Columns of ``study_reads`` that hold answers (in the order the export writes them).
ANSWER_COLUMNS = ("birads", "malignancy", "click_image_id", "click_x", "click_y", "confidence", "helpfulness",
                  "comment")


@dataclass(frozen=True)
class StudyRow:
    """What the ``studies`` table keeps of a definition: its name and title, the TOML text and its
    SHA-256, the seed, and ``pinned`` (case ids, probe versions, card, weights: stored as JSON)."""

    name: str
    title: str
    definition_toml: str
    definition_sha256: str
    seed: int
    pinned: dict


@dataclass(frozen=True)
class QuestionnaireRow:
    """A reader's end-of-session answers: ``sus_items`` (10 answers 1-5, or None when the study asks
    no SUS) and their ``sus_score`` (0-100), ``trust_items`` {question: 1-5}, a free ``comment``."""

    study: str
    reader: str
    session_index: int
    arm: str
    sus_items: list[int] | None
    sus_score: float | None
    trust_items: dict
    comment: str


#: The read rows with their assignment's arm, session, position and case, and the read superseding them.
_READS_SQL = ("SELECT r.*, a.arm, a.session_index, a.position, a.case_id, s.read_id AS superseded_by"
              " FROM study_reads r JOIN study_assignments a ON a.assignment_id = r.assignment_id"
              " LEFT JOIN study_reads s ON s.supersedes = r.read_id")


def where_equal(sql: str, filters: Iterable[tuple[str, Any]], params: list | None = None) -> tuple[str, list]:
    """``sql`` (which ends in a WHERE clause) with ``AND column = ?`` for every (column, value) filter
    whose value is not None, and ``params`` followed by those values. Column names are the store's
    constants, never user input."""
    params = list(params or [])
    for column, value in filters:
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    return sql, params


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def _loads(value):
    return json.loads(value) if isinstance(value, str) else value


class StudyStoreMixin:
    """Reader-study tables. Mixed into ``Store``."""

    # ------------------------------------------------------------ studies
    def insert_study(self, study: StudyRow, assignments: list[dict], *, actor: str, now: datetime) -> None:
        """Create a study and its assignments in one transaction (audited ``create``/``study``).

        A study of that name existing already raises ``StudyConflictError`` (two coordinators
        creating the same study: the first one wins)."""

        name, sha, seed = study.name, study.definition_sha256, int(study.seed)

        def write(cur):
            cur.execute("SELECT created_by, created_at FROM studies WHERE name = ?", [name])
            row = cur.fetchone()
            if row:
                raise StudyConflictError(
                    f"A study named {name!r} exists already (created by {row[0]} at {row[1]:%Y-%m-%d %H:%M} UTC). "
                    "Pick another name, or open that study.")
            cur.execute(
                "INSERT INTO studies (name, title, definition_toml, definition_sha256, seed, pinned, created_by,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [name, study.title, study.definition_toml, sha, seed, _json(study.pinned), actor, now, now],
            )
            self._insert_assignments(cur, assignments)
            self._audit(cur, actor, "create", "study", name,
                        {"study": name, "sha256": sha, "seed": seed, "assignments": len(assignments)})

        self._write(write)

    @staticmethod
    def _insert_assignments(cur, assignments: list[dict]) -> None:
        if not assignments:
            return
        cur.executemany(
            "INSERT INTO study_assignments (assignment_id, study, reader, arm, session_index, position, case_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [[a["assignment_id"], a["study"], a["reader"], a["arm"], int(a["session_index"]), int(a["position"]),
              a["case_id"]] for a in assignments],
        )

    def replace_study_definition(self, study: StudyRow, assignments: list[dict], *, expected_revision: int,
                                 actor: str, now: datetime) -> int:
        """Replace a study's definition and assignments while no read has been opened.

        ``expected_revision`` is the revision the editor read; if another edit came first the
        call raises ``StudyConflictError`` and changes nothing. Returns the new revision."""

        name = study.name

        def write(cur):
            rev = self._check_revision(cur, name, expected_revision)
            cur.execute("SELECT count(*) FROM study_reads WHERE study = ?", [name])
            if cur.fetchone()[0]:
                raise StudyConflictError(
                    f"Study {name!r} cannot be redefined: readers have started reading. Create a new study instead.")
            cur.execute("DELETE FROM study_assignments WHERE study = ?", [name])
            cur.execute(
                "UPDATE studies SET title = ?, definition_toml = ?, definition_sha256 = ?, seed = ?, pinned = ?,"
                " revision = ?, updated_at = ? WHERE name = ?",
                [study.title, study.definition_toml, study.definition_sha256, int(study.seed), _json(study.pinned),
                 rev + 1, now, name],
            )
            self._insert_assignments(cur, assignments)
            self._audit(cur, actor, "edit", "study", name,
                        {"study": name, "sha256": study.definition_sha256, "revision": rev + 1})
            return rev + 1

        return self._write(write)

    def set_study_status(self, name: str, status: str, *, expected_revision: int, actor: str,
                         now: datetime) -> int:
        """Open or close a study (optimistic concurrency as ``replace_study_definition``)."""
        if status not in ("open", "closed"):
            raise StudyStoreError(f"Unknown study status {status!r}: use open or closed.")

        def write(cur):
            rev = self._check_revision(cur, name, expected_revision)
            cur.execute("UPDATE studies SET status = ?, revision = ?, updated_at = ? WHERE name = ?",
                        [status, rev + 1, now, name])
            self._audit(cur, actor, "close" if status == "closed" else "reopen", "study", name,
                        {"study": name, "revision": rev + 1})
            return rev + 1

        return self._write(write)

    @staticmethod
    def _check_revision(cur, name: str, expected_revision: int) -> int:
        cur.execute("SELECT revision FROM studies WHERE name = ?", [name])
        row = cur.fetchone()
        if row is None:
            raise StudyNotFoundError(f"No study named {name!r}.")
        if int(row[0]) != int(expected_revision):
            raise StudyConflictError(
                f"Study {name!r} was changed by someone else (revision {row[0]}, you edited revision "
                f"{expected_revision}). Reload it and apply your change again.")
        return int(row[0])

    def get_study_row(self, name: str) -> dict:
        rows = self.query("SELECT * FROM studies WHERE name = ?", [name])
        if not rows:
            raise StudyNotFoundError(f"No study named {name!r}. Known studies: "
                                     + (", ".join(r["name"] for r in self.list_study_rows()) or "none") + ".")
        row = rows[0]
        row["pinned"] = _loads(row["pinned"])
        return row

    def list_study_rows(self) -> list[dict]:
        rows = self.query("SELECT name, title, status, revision, seed, created_by, created_at, updated_at"
                          " FROM studies ORDER BY created_at, name")
        return rows

    # ------------------------------------------------------------ assignments
    def list_assignments(self, study: str, reader: str | None = None) -> list[dict]:
        sql, params = where_equal("SELECT * FROM study_assignments WHERE study = ?", [("reader", reader)], [study])
        return self.query(sql + " ORDER BY reader, session_index, position", params)

    def get_assignment(self, assignment_id: str) -> dict:
        rows = self.query("SELECT * FROM study_assignments WHERE assignment_id = ?", [assignment_id])
        if not rows:
            raise StudyNotFoundError(f"No study assignment {assignment_id!r}.")
        return rows[0]

    # ------------------------------------------------------------ reads
    def list_reads(self, study: str, reader: str | None = None) -> list[dict]:
        """Every read row of a study (corrections and superseded rows included), with its assignment's
        arm, session, position and case, and ``superseded_by`` (the correction replacing it, or NULL)."""
        sql, params = where_equal(_READS_SQL + " WHERE r.study = ?", [("r.reader", reader)], [study])
        return self.query(sql + " ORDER BY r.reader, a.session_index, a.position, r.opened_at, r.read_id", params)

    def get_read(self, read_id: str) -> dict:
        rows = self.query(_READS_SQL + " WHERE r.read_id = ?", [read_id])
        if not rows:
            raise StudyNotFoundError(f"No read {read_id!r}.")
        return rows[0]

    def open_read_row(self, *, read_id: str, assignment: dict, now: datetime) -> str:
        """Record the first render of an assignment; returns the open read's id (an existing open,
        unsubmitted read of that assignment is returned unchanged: the first render time stays)."""

        def write(cur):
            cur.execute("SELECT read_id FROM study_reads WHERE assignment_id = ? AND supersedes IS NULL"
                        " ORDER BY opened_at LIMIT 1", [assignment["assignment_id"]])
            row = cur.fetchone()
            if row:
                return row[0]
            cur.execute("INSERT INTO study_reads (read_id, assignment_id, study, reader, opened_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        [read_id, assignment["assignment_id"], assignment["study"], assignment["reader"], now])
            self._audit(cur, assignment["reader"], "open", "read", read_id,
                        {"study": assignment["study"], "assignment_id": assignment["assignment_id"],
                         "arm": assignment["arm"], "case_id": assignment["case_id"]})
            return read_id

        return self._write(write)

    def set_first_drawing(self, read_id: str, *, actor: str, now: datetime, cur=None) -> bool:
        """Set the read's first-drawing time unless set; True when this call set it. With ``cur``
        it runs inside the caller's transaction (a drawing saved with ``save_annotation``)."""

        def write(cur):
            row = self._read_row(cur, read_id, "submitted_at, first_drawing_at, study")
            if row[0] is not None:
                raise ReadLockedError(f"Read {read_id} was submitted at {row[0]:%Y-%m-%d %H:%M:%S} UTC; "
                                      "it takes no more drawings.")
            if row[1] is not None:
                return False
            cur.execute("UPDATE study_reads SET first_drawing_at = ? WHERE read_id = ?", [now, read_id])
            self._audit(cur, actor, "first_drawing", "read", read_id, {"study": row[2]})
            return True

        return write(cur) if cur is not None else self._write(write)

    @staticmethod
    def _read_row(cur, read_id: str, columns: str) -> tuple:
        """``columns`` (this module's constants) of the read ``read_id``; ``StudyNotFoundError`` if none."""
        cur.execute(f"SELECT {columns} FROM study_reads WHERE read_id = ?", [read_id])
        row = cur.fetchone()
        if row is None:
            raise StudyNotFoundError(f"No read {read_id!r}.")
        return row

    def submit_read_row(self, read_id: str, answers: dict, *, actor: str, now: datetime) -> None:
        """Write the answers of an open read and close it, once: a second submit raises
        ``ReadLockedError`` and changes nothing (audited ``submit``)."""

        def write(cur):
            row = self._read_row(cur, read_id, "submitted_at, study")
            if row[0] is not None:
                raise ReadLockedError(
                    f"This read was submitted already (at {row[0]:%Y-%m-%d %H:%M:%S} UTC) and cannot be changed. "
                    "To change an answer, submit a correction.")
            sets = ", ".join(f"{c} = ?" for c in ANSWER_COLUMNS)
            cur.execute(f"UPDATE study_reads SET {sets}, submitted_at = ? WHERE read_id = ? AND submitted_at IS NULL",
                        [answers.get(c) if c != "comment" else answers.get(c) or "" for c in ANSWER_COLUMNS]
                        + [now, read_id])
            self._audit(cur, actor, "submit", "read", read_id, {"study": row[1], **answers})

        self._write(write)

    def insert_correction(self, *, read_id: str, supersedes: str, answers: dict, reason: str, actor: str,
                          now: datetime) -> None:
        """A new submitted read replacing ``supersedes`` (which stays, unchanged). Only the current
        (not yet superseded) submitted read can be corrected; audited ``correct``."""

        def write(cur):
            cur.execute("SELECT assignment_id, study, reader, opened_at, first_drawing_at, submitted_at"
                        " FROM study_reads WHERE read_id = ?", [supersedes])
            old = cur.fetchone()
            if old is None:
                raise StudyNotFoundError(f"No read {supersedes!r}.")
            if old[5] is None:
                raise StudyStoreError("Only a submitted read can be corrected; submit this one instead.")
            cur.execute("SELECT read_id FROM study_reads WHERE supersedes = ?", [supersedes])
            later = cur.fetchone()
            if later:
                raise StudyConflictError(f"Read {supersedes} was corrected already by read {later[0]}; "
                                         "correct that one instead.")
            cols = ", ".join(ANSWER_COLUMNS)
            marks = ", ".join("?" for _ in ANSWER_COLUMNS)
            cur.execute(
                f"INSERT INTO study_reads (read_id, assignment_id, study, reader, opened_at, first_drawing_at,"
                f" submitted_at, {cols}, supersedes, correction_reason, corrected_by)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, {marks}, ?, ?, ?)",
                [read_id, old[0], old[1], old[2], old[3], old[4], now]
                + [answers.get(c) if c != "comment" else answers.get(c) or "" for c in ANSWER_COLUMNS]
                + [supersedes, reason, actor],
            )
            self._audit(cur, actor, "correct", "read", read_id,
                        {"study": old[1], "supersedes": supersedes, "reason": reason, **answers})

        self._write(write)

    # ------------------------------------------------------------ events
    def insert_read_event(self, *, read_id: str, kind: str, payload: dict | None, now: datetime) -> int:
        """One viewer event (window/level, overlay toggle, ...) of an open read; returns its id."""

        def write(cur):
            row = self._read_row(cur, read_id, "study, reader, submitted_at")
            if row[2] is not None:
                raise ReadLockedError(f"Read {read_id} was submitted already; it records no more events.")
            cur.execute("INSERT INTO study_read_events (read_id, study, reader, kind, payload, recorded_at)"
                        " VALUES (?, ?, ?, ?, ?, ?) RETURNING event_id",
                        [read_id, row[0], row[1], kind, _json(payload or {}), now])
            return int(cur.fetchone()[0])

        return self._write(write)

    def list_read_events(self, study: str) -> list[dict]:
        rows = self.query("SELECT * FROM study_read_events WHERE study = ? ORDER BY recorded_at, event_id", [study])
        for r in rows:
            r["payload"] = _loads(r["payload"])
        return rows

    # ------------------------------------------------------------ questionnaires
    def insert_questionnaire(self, q: QuestionnaireRow, *, now: datetime) -> None:
        """A reader's end-of-session questionnaire, once per session (audited ``questionnaire``)."""

        session_index = int(q.session_index)

        def write(cur):
            cur.execute("SELECT submitted_at FROM study_questionnaires WHERE study = ? AND reader = ?"
                        " AND session_index = ?", [q.study, q.reader, session_index])
            row = cur.fetchone()
            if row:
                raise ReadLockedError(f"The questionnaire of session {session_index + 1} was submitted already "
                                      f"(at {row[0]:%Y-%m-%d %H:%M} UTC).")
            cur.execute(
                "INSERT INTO study_questionnaires (study, reader, session_index, arm, sus_items, sus_score,"
                " trust_items, comment, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [q.study, q.reader, session_index, q.arm, None if q.sus_items is None else _json(q.sus_items),
                 q.sus_score, _json(q.trust_items), q.comment, now],
            )
            self._audit(cur, q.reader, "questionnaire", "study", q.study,
                        {"study": q.study, "session_index": session_index, "arm": q.arm, "sus_score": q.sus_score})

        self._write(write)

    def list_questionnaires(self, study: str) -> list[dict]:
        rows = self.query("SELECT * FROM study_questionnaires WHERE study = ? ORDER BY reader, session_index",
                          [study])
        for r in rows:
            r["sus_items"] = _loads(r["sus_items"])
            r["trust_items"] = _loads(r["trust_items"]) or {}
        return rows

    # ------------------------------------------------------------ study drawings
    def list_study_annotations(self, study: str, *, include_deleted: bool = False) -> list[dict]:
        """Drawings made in a study, with geometry and mask (PNG bytes), oldest first."""
        sql = ("SELECT annotation_id, image_id, concept, reader, study, arm, patch_x0, patch_y0, patch_size, shape,"
               " geometry, mask_png, model_card, created_at, deleted_at FROM annotations WHERE study = ?")
        if not include_deleted:
            sql += " AND deleted_at IS NULL"
        rows = self.query(sql + " ORDER BY created_at, annotation_id", [study])
        for r in rows:
            r["geometry"] = _loads(r["geometry"])
            r["mask_png"] = bytes(r["mask_png"])
        return rows

    # ------------------------------------------------------------ truth of the study's cases
    def list_case_truth(self, case_ids: list[str]) -> list[dict]:
        """case_id, source, split, label of the given cases (the truth the results compare with)."""
        if not case_ids:
            return []
        return self.query("SELECT case_id, source, split, label FROM cases WHERE case_id IN"
                          " (SELECT unnest(?::VARCHAR[])) ORDER BY case_id", [list(case_ids)])

    def list_case_image_ids(self, case_id: str) -> list[str]:
        return [r["image_id"] for r in self.query("SELECT image_id FROM images WHERE case_id = ? ORDER BY image_id",
                                                  [case_id])]

    # ------------------------------------------------------------ audit log
    def query_audit(self, *, actor: str | None = None, action: str | None = None, entity: str | None = None,
                    entity_id: str | None = None, study: str | None = None, since: datetime | None = None,
                    until: datetime | None = None, limit: int = 1000) -> list[dict]:
        """Audit rows, newest first, filtered by actor, action, entity, entity id, study (rows whose
        payload names it, or the study row itself) and a time range [since, until)."""
        sql, params = where_equal("SELECT * FROM audit_log WHERE true",
                                  (("actor", actor), ("action", action), ("entity", entity), ("entity_id", entity_id)))
        if study is not None:
            sql += " AND (json_extract_string(payload, '$.study') = ? OR (entity = 'study' AND entity_id = ?))"
            params += [study, study]
        if since is not None:
            sql += " AND logged_at >= ?"
            params.append(since)
        if until is not None:
            sql += " AND logged_at < ?"
            params.append(until)
        rows = self.query(sql + " ORDER BY seq DESC LIMIT ?", params + [int(limit)])
        for r in rows:
            r["payload"] = _loads(r["payload"])
        return rows

    def write_audit(self, actor: str, action: str, entity: str, entity_id: str, payload: Any = None) -> None:
        """An audit row on its own (an action that writes nothing else, e.g. an export)."""
        self._write(lambda cur: self._audit(cur, actor, action, entity, entity_id, payload))

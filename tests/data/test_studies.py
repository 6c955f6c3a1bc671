"""The store's study SQL: migration 005 on an existing database, the rules the store itself enforces
(a submitted read is never updated, a questionnaire once, revisions), and the audit-log query."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import duckdb
import pytest

from dashboard.data.store import SQL_DIR, ImageRecord, Store
from dashboard.data.studies import (
    QuestionnaireRow,
    ReadLockedError,
    StudyConflictError,
    StudyNotFoundError,
    StudyRow,
)

T0 = datetime(2025, 3, 1, 9, 0, 0)


def _v4_database(path):
    """A database as migrations 001-004 left it, with one drawing."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")
    for f in sorted(SQL_DIR.glob("00[1-4]_*.sql")):
        con.execute(f.read_text())
        con.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [int(f.name[:3]), f.stem])
    con.execute("INSERT INTO cases (case_id, source) VALUES ('c1', 'synthetic')")
    con.execute("INSERT INTO images (image_id, case_id, path, sha256, rows, cols) VALUES ('i1', 'c1', '/x', 'h', 8, 8)")
    con.execute("INSERT INTO concepts (name, colour, lexicon_group) VALUES ('mass', '#f00', 'mass')")
    con.execute("INSERT INTO readers (reader) VALUES ('old')")
    con.execute("INSERT INTO annotations (annotation_id, image_id, concept, reader, patch_x0, patch_y0, patch_size,"
                " shape, geometry, mask_png) VALUES ('a1', 'i1', 'mass', 'old', 0, 0, 8, 'rect', '[]', '\\x00'::BLOB)")
    con.close()


def test_migration_005_upgrades_a_database_with_drawings(tmp_path):
    _v4_database(tmp_path / "old.duckdb")
    with Store(tmp_path / "old.duckdb") as store:
        assert store.schema_version() >= 5
        [a] = store.list_annotations()
        assert a.annotation_id == "a1" and a.study is None and a.arm is None
        assert store.list_study_rows() == [] and store.list_users() == []


def _study(store, name="s"):
    store.save_case("c1", "synthetic", label="malignant")
    store.save_image(ImageRecord("i1", "c1", "x", hashlib.sha256(b"x").hexdigest(), rows=8, cols=8))
    store.insert_study(StudyRow(name=name, title="", definition_toml="name = 's'", definition_sha256="0" * 64, seed=1,
                                pinned={"case_ids": ["c1"]}), actor="coord", now=T0,
                       assignments=[{"assignment_id": f"{name}/r/0/0", "study": name, "reader": "r", "arm": "a",
                                     "session_index": 0, "position": 0, "case_id": "c1"}])
    return store.get_assignment(f"{name}/r/0/0")


def test_a_submitted_read_is_never_updated(store):
    a = _study(store)
    rid = store.open_read_row(read_id="r1", assignment=a, now=T0)
    assert store.open_read_row(read_id="r2", assignment=a, now=T0 + timedelta(1)) == "r1"  # one open read
    store.submit_read_row(rid, {"birads": 4, "malignancy": 60.0, "confidence": 3}, actor="r", now=T0)
    with pytest.raises(ReadLockedError):
        store.submit_read_row(rid, {"birads": 1, "malignancy": 1.0, "confidence": 1}, actor="r", now=T0)
    with pytest.raises(ReadLockedError):
        store.set_first_drawing(rid, actor="r", now=T0)
    assert store.get_read(rid)["birads"] == 4
    store.insert_correction(read_id="r3", supersedes=rid, answers={"birads": 5, "malignancy": 80.0, "confidence": 4},
                            reason="typo", actor="r", now=T0 + timedelta(minutes=1))
    rows = {r["read_id"]: r for r in store.list_reads("s")}
    assert rows["r1"]["birads"] == 4 and rows["r1"]["superseded_by"] == "r3" and rows["r3"]["supersedes"] == "r1"
    with pytest.raises(StudyNotFoundError):
        store.get_read("nope")


def test_revisions_and_duplicates_conflict(store):
    _study(store)
    with pytest.raises(StudyConflictError, match="exists already"):
        _study(store)
    assert store.set_study_status("s", "closed", expected_revision=1, actor="coord", now=T0) == 2
    with pytest.raises(StudyConflictError, match="revision 2"):
        store.set_study_status("s", "open", expected_revision=1, actor="other", now=T0)
    assert store.get_study_row("s")["status"] == "closed"


def test_questionnaire_once(store):
    _study(store)
    q = QuestionnaireRow(study="s", reader="r", session_index=0, arm="a", sus_items=[3] * 10, sus_score=50.0,
                         trust_items={"t": 3}, comment="")
    store.insert_questionnaire(q, now=T0)
    with pytest.raises(ReadLockedError):
        store.insert_questionnaire(q, now=T0)
    assert store.list_questionnaires("s")[0]["trust_items"] == {"t": 3}


def test_audit_query_filters(store):
    a = _study(store)
    store.open_read_row(read_id="r1", assignment=a, now=T0)
    store.write_audit("coord", "export", "study", "s", {"study": "s"})
    store.write_audit("coord", "export", "study", "other", {"study": "other"})
    assert [r["action"] for r in store.query_audit(study="s")] == ["export", "open", "create"]
    assert [r["entity_id"] for r in store.query_audit(actor="coord", action="export")] == ["other", "s"]
    assert store.query_audit(entity="read")[0]["payload"]["assignment_id"] == "s/r/0/0"
    assert len(store.query_audit(study="s", limit=1)) == 1
    assert store.query_audit(since=datetime(2999, 1, 1)) == []
    assert len(store.query_audit(until=datetime(2999, 1, 1), study="s")) == 3

"""The DuckDB store: migrations, typed errors, transactions, journal replay, concurrency."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import threading

import duckdb
import pytest

from dashboard.data.store import (
    BUILTIN_CONCEPTS,
    SQL_DIR,
    DrawingRecord,
    FindingRecord,
    ImageRecord,
    NotFoundError,
    Store,
    StoreError,
    UnknownConceptError,
    ValidationError,
    open_store,
)
from dashboard.settings import PROJECT_ROOT


def _seed_image(store: Store, image_id="img1", case_id="case1"):
    store.save_case(case_id, "synthetic", split="train", label="benign")
    store.save_image(ImageRecord(image_id, case_id, f"files/{image_id}.dcm", f"sha-{image_id}", laterality="L",
                                 view="CC", rows=100, cols=80, pixel_spacing_mm=0.2, modality="MG"))


def _annotation(**kw):
    base = dict(image_id="img1", concept="mass-round", reader="dr-a", patch_x0=10, patch_y0=20,
                patch_size=224, shape="polygon", geometry=[[1, 1], [50, 1], [50, 50]], mask_png=b"\x89PNG-bytes")
    base.update(kw)
    return base


def test_migrations_from_empty_file(tmp_path):
    path = tmp_path / "fresh.duckdb"
    store = Store(path)
    files = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    assert store.schema_version() == int(files[-1].name[:3])
    tables = {r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")}
    assert {"cases", "images", "findings", "readers", "concepts", "annotations", "audit_log",
            "unit_labels", "probes", "predictions", "schema_version"} <= tables
    assert len(store.list_concepts()) == len(BUILTIN_CONCEPTS)
    store.close()
    # reopening applies nothing twice and keeps the seeded palette unique
    again = Store(path)
    assert len(again.query("SELECT * FROM schema_version")) == len(files)
    assert len(again.list_concepts()) == len(BUILTIN_CONCEPTS)
    again.close()


def test_failed_transaction_rolls_back(store):
    _seed_image(store)
    with pytest.raises(RuntimeError):
        with store.transaction() as cur:
            cur.execute("INSERT INTO readers (reader) VALUES (?)", ["half-written"])
            raise RuntimeError("boom")
    assert store.query("SELECT * FROM readers WHERE reader = ?", ["half-written"]) == []


def test_annotation_round_trip_and_soft_delete(store):
    _seed_image(store)
    ann_id = store.save_annotation(DrawingRecord(**_annotation()))
    [ann] = store.list_annotations(image_id="img1")
    assert ann.annotation_id == ann_id and ann.geometry == [[1, 1], [50, 1], [50, 50]]
    assert ann.mask_png == b"\x89PNG-bytes" and ann.reader == "dr-a"
    assert store.list_cases()[0]["n_annotations"] == 1
    store.delete_annotation(ann_id, actor="dr-a")
    assert store.list_annotations() == []
    assert len(store.list_annotations(include_deleted=True)) == 1
    actions = [(r["action"], r["entity"]) for r in store.audit_log()]
    assert ("delete", "annotation") in actions and ("create", "annotation") in actions


def test_bad_input_gets_typed_clear_errors(store):
    _seed_image(store)
    with pytest.raises(UnknownConceptError, match="Unknown concept 'tumour-blob'"):
        store.save_annotation(DrawingRecord(**_annotation(concept="tumour-blob")))
    with pytest.raises(ValidationError, match="empty"):
        store.save_annotation(DrawingRecord(**_annotation(mask_png=b"")))
    with pytest.raises(NotFoundError):
        store.save_annotation(DrawingRecord(**_annotation(image_id="no-such-image")))
    with pytest.raises(ValidationError):
        store.save_reader("   ")
    with pytest.raises(ValidationError):
        store.save_concept("bad/name!")
    # nothing half-stored, and nothing invalid left in the journal to replay
    assert store.list_annotations(include_deleted=True) == []
    assert store.replay_journal() == []


def test_journal_record_that_cannot_be_stored_is_kept_with_reason(store):
    _seed_image(store)
    store.journal_dir.mkdir(parents=True, exist_ok=True)
    good = dict(_annotation(), annotation_id="ok1", mask_png=b"m".hex(), model_card="", db_id=store.db_id)
    bad = dict(good, annotation_id="bad1", image_id="gone")
    (store.journal_dir / "ok1.json").write_text(json.dumps(good))
    (store.journal_dir / "bad1.json").write_text(json.dumps(bad))
    assert store.replay_journal() == ["ok1"]
    kept = json.loads((store.journal_dir / "bad1.rejected.json").read_text())
    assert kept["record"]["annotation_id"] == "bad1" and "gone" in kept["reason"]
    assert store.replay_journal() == []  # the rejected record is not retried or double-counted


def test_custom_concept(store):
    name = store.save_concept("Dense Island", colour="#123456", lexicon_group="custom")
    assert name == "dense-island"
    assert store.get_concept("dense-island")["builtin"] is False


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from dashboard.data.store import DrawingRecord, Store
    store = Store({db!r}, {journal!r})
    store.save_annotation(DrawingRecord(image_id="img1", concept="mass-round", reader="dr-a", patch_x0=0,
                          patch_y0=0, patch_size=224, shape="rect", geometry=[[0, 0], [9, 9]], mask_png=b"committed"))
    def die(cur, annotation_id):
        os._exit(17)          # the process dies inside the transaction, before COMMIT
    store.save_annotation(DrawingRecord(image_id="img1", concept="calc-coarse", reader="dr-a", patch_x0=0,
                          patch_y0=0, patch_size=224, shape="rect", geometry=[[0, 0], [5, 5]],
                          mask_png=b"in-flight", annotation_id="crashed"), extra_writes=die)
    """
)


def test_crash_mid_write_loses_nothing(tmp_path):
    db, journal = tmp_path / "crash.duckdb", tmp_path / "journal"
    s = Store(db, journal)
    _seed_image(s)
    s.close()
    code = CRASH_SCRIPT.format(root=str(PROJECT_ROOT), db=str(db), journal=str(journal))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    assert (journal / "crashed.json").exists()

    class _S:
        db_path, journal_dir = db, journal

    store = open_store(_S)
    masks = sorted(a.mask_png for a in store.list_annotations())
    assert masks == [b"committed", b"in-flight"]
    assert not (journal / "crashed.json").exists()
    # replaying again is a no-op: no duplicates
    assert store.replay_journal() == []
    assert len(store.list_annotations()) == 2
    store.close()


def test_two_readers_labeling_at_once(store):
    _seed_image(store)
    errors: list[Exception] = []

    def reader(name):
        try:
            for i in range(15):
                store.save_annotation(DrawingRecord(**_annotation(reader=name, geometry=[[i, i]])))
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in ("dr-a", "dr-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    anns = store.list_annotations()
    assert len(anns) == 30
    assert {a.reader for a in anns} == {"dr-a", "dr-b"}
    assert len({a.annotation_id for a in anns}) == 30


def test_second_process_gets_clear_lock_error(tmp_path):
    db = tmp_path / "locked.duckdb"
    holder = Store(db)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from dashboard.data.store import Store, StoreLockedError
        try:
            Store({str(db)!r})
        except StoreLockedError as exc:
            print("LOCKED:", exc)
            sys.exit(3)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    holder.close()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "another ConceptLens process" in proc.stdout


def test_store_error_wraps_duckdb_errors(store):
    with pytest.raises(StoreError) as info:
        store.query("SELECT * FROM no_such_table")
    assert not isinstance(info.value, duckdb.Error)


def test_bulk_findings_replace_and_all_or_nothing(store):
    _seed_image(store)
    rows = [FindingRecord(f"f{k}", "img1", "mass", pathology="benign", bbox=(k, k, k + 5, k + 5), attributes={"k": k},
                          source="synthetic") for k in range(3)]
    assert store.save_findings(rows) == 3
    got = {f["finding_id"]: f for f in store.list_findings("img1")}
    assert sorted(got) == ["f0", "f1", "f2"] and got["f2"]["x1"] == 7
    # a second write replaces rows by id instead of duplicating them
    rows[0] = dataclasses.replace(rows[0], pathology="malignant")
    assert store.save_findings(rows[:1]) == 1
    got = {f["finding_id"]: f for f in store.list_findings("img1")}
    assert len(got) == 3 and got["f0"]["pathology"] == "malignant"
    # one bad row (unknown image) writes nothing of the batch
    bad = [FindingRecord("f9", "img1", "mass"), FindingRecord("f10", "no-such-image", "mass")]
    with pytest.raises(StoreError):
        store.save_findings(bad)
    assert "f9" not in {f["finding_id"] for f in store.list_findings("img1")}

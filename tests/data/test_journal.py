"""The drawing journal belongs to one database: beside its file, locked, its records naming the database.

Reproduces the cross-database replay (two databases in one data dir, a process killed with SIGKILL
inside the write) and checks that a Save reported as failed never comes back."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from dashboard.data.journal import Journal
from dashboard.data.store import DrawingRecord, ImageRecord, Store, ValidationError, open_store
from dashboard.settings import PROJECT_ROOT, load_settings


def _seed(store: Store) -> None:
    store.save_case("case1", "synthetic")
    store.save_image(ImageRecord("img1", "case1", "files/img1.dcm", "sha-img1", rows=100, cols=80))


def _drawing(**kw) -> DrawingRecord:
    base = dict(image_id="img1", concept="mass", reader="dr-a", patch_x0=0, patch_y0=0, patch_size=64,
                shape="rect", geometry=[[0, 0], [9, 9]], mask_png=b"\x89PNG-mask")
    base.update(kw)
    return DrawingRecord(**base)


def _settings_for(monkeypatch, data_dir, db_name):
    monkeypatch.setenv("CONCEPTLENS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CONCEPTLENS_DB_PATH", str(data_dir / db_name))
    return load_settings()


def test_the_journal_sits_beside_its_database_and_is_private(tmp_path, monkeypatch):
    s = _settings_for(monkeypatch, tmp_path / "data", "study-a.duckdb")
    assert s.journal_dir == tmp_path / "data" / "study-a.duckdb.journal"
    store = open_store(s)
    _seed(store)
    store.save_annotation(_drawing())
    assert store.journal_dir == s.journal_dir
    assert stat.S_IMODE(s.journal_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(s.db_path.stat().st_mode) == 0o600
    assert list(s.journal_dir.glob("*.json")) == []  # the record goes once the write has ended
    store.close()


KILLED_MID_SAVE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from dashboard.data.store import DrawingRecord, open_store
    from dashboard.settings import load_settings
    store = open_store(load_settings())
    def hang(cur, annotation_id):
        open({marker!r}, "w").write(annotation_id)   # inside the write transaction, before COMMIT
        time.sleep(600)                               # the parent kills us here with SIGKILL
    store.save_annotation(DrawingRecord(image_id="img1", concept="mass", reader="dr-a", patch_x0=0, patch_y0=0,
                          patch_size=64, shape="rect", geometry=[[0, 0], [5, 5]], mask_png=b"in-flight",
                          annotation_id="in-flight-1"), extra_writes=hang)
    """
)


def test_a_drawing_killed_mid_save_is_replayed_into_its_own_database_only(tmp_path, monkeypatch):
    data = tmp_path / "data"
    a = _settings_for(monkeypatch, data, "a.duckdb")
    b = _settings_for(monkeypatch, data, "b.duckdb")
    for s in (a, b):  # two databases in one data dir, the same image in both
        with open_store(s) as store:
            _seed(store)
    marker = tmp_path / "inside-the-write"
    env = {**os.environ, "CONCEPTLENS_DATA_DIR": str(data), "CONCEPTLENS_DB_PATH": str(a.db_path)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_SAVE.format(root=str(PROJECT_ROOT), marker=str(marker))],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the child never reached the write"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (a.journal_dir / "in-flight-1.json").exists()  # the drawing was journaled before the write

    with open_store(b) as other:  # a second process on the other database: nothing of a's
        assert other.list_annotations(include_deleted=True) == []
        assert other.replay_journal() == []
    assert (a.journal_dir / "in-flight-1.json").exists()
    with open_store(a) as own:  # its own database gets it back: a drawing in flight is not lost
        assert [x.annotation_id for x in own.list_annotations()] == ["in-flight-1"]
        assert own.list_annotations()[0].mask_png == b"in-flight"
    assert not (a.journal_dir / "in-flight-1.json").exists()


def test_a_record_of_another_database_is_never_replayed_even_in_a_shared_folder(tmp_path):
    shared = tmp_path / "one-journal"  # two stores pointed at one journal folder by mistake
    a, b = Store(tmp_path / "a.duckdb", shared), Store(tmp_path / "b.duckdb", shared)
    for s in (a, b):
        _seed(s)
    assert a.db_id and b.db_id and a.db_id != b.db_id
    record = dict(annotation_id="x1", image_id="img1", concept="mass", reader="dr-a", patch_x0=0, patch_y0=0,
                  patch_size=64, shape="rect", geometry=[[0, 0]], mask_png=b"m".hex(), model_card="")
    with a.journal.locked():
        a.journal.write("x1", record)
    assert b.replay_journal() == [] and b.list_annotations() == []
    assert json.loads((shared / "x1.json").read_text())["db_id"] == a.db_id
    assert a.replay_journal() == ["x1"]
    a.close()
    b.close()


def test_a_save_reported_as_failed_does_not_come_back(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    _seed(store)

    def fail(cur, annotation_id):
        raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError, match="the write failed"):
        store.save_annotation(_drawing(annotation_id="failed-1"), extra_writes=fail)
    assert list(store.journal_dir.glob("*.json")) == []
    store.close()
    again = Store(tmp_path / "db.duckdb")  # a restart: the failed Save is not replayed
    assert again.replay_journal() == [] and again.list_annotations(include_deleted=True) == []
    again.close()


def test_two_processes_never_hold_one_journal(tmp_path):
    journal = Journal(tmp_path / "j", "db-1")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from dashboard.data.journal import Journal, JournalBusyError
        try:
            with Journal({str(tmp_path / "j")!r}, "db-1").locked(timeout_s=0.5):
                sys.exit(0)
        except JournalBusyError as exc:
            print(exc)
            sys.exit(3)
    """)
    with journal.locked():
        held = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert held.returncode == 3 and "held by another process" in held.stdout
    assert free.returncode == 0, free.stdout + free.stderr


@pytest.mark.parametrize("reader, message", [
    ("", "required"), ("   ", "required"), ("x" * 10_000, "at most 80"), ("dr\x00a", "NUL"),
    ("dr\na", "control"), ("dr\u202ea", "control"),
])
def test_reader_names_are_checked_in_every_write_path(store, reader, message):
    _seed(store)
    with pytest.raises(ValidationError, match=message):
        store.save_annotation(_drawing(reader=reader))
    with pytest.raises(ValidationError, match=message):
        store.save_reader(reader)
    assert store.list_annotations(include_deleted=True) == [] and list(store.journal_dir.glob("*.json")) == []
    # a journal record with such a name (an older version wrote it) is kept aside, never stored
    with store.journal.locked():
        store.journal.write("old-1", dict(annotation_id="old-1", image_id="img1", concept="mass", reader=reader,
                                          patch_x0=0, patch_y0=0, patch_size=64, shape="rect", geometry=[],
                                          mask_png=b"m".hex(), model_card=""))
    assert store.replay_journal() == []
    assert (store.journal_dir / "old-1.rejected.json").exists()


def test_concept_names_and_descriptions_are_checked(store):
    with pytest.raises(ValidationError, match="NUL"):
        store.save_concept("dense\x00island")
    with pytest.raises(ValidationError, match="at most 60"):
        store.save_concept("a" * 61)
    with pytest.raises(ValidationError, match="control"):
        store.save_concept("island", description="line one\nline two")
    assert store.save_concept("  Dense  Island ") == "dense-island"

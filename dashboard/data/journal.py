"""The drawing journal of one database: a drawing is written here before the transaction that stores
it, so a crash mid-save loses nothing; the record goes once that transaction has ended.

* One journal per database: it sits beside the database file, named from it
  (``conceptlens.duckdb.journal/``, ``settings.journal_dir_for``), and each record names the database
  it belongs to (the id the store keeps in ``store_identity``). A record of another database is never
  replayed here, even when two stores are pointed at one journal folder.
* Locked: every save and every replay holds an OS lock (``fcntl.flock``) on the journal, so a
  record is only ever seen by another process once the process that wrote it is gone, and two
  processes never replay one journal.
* A save that raised is not replayed: its record is removed when the write fails. Only a crash
  (nothing returned to the caller) leaves a record behind, and that one is replayed: nothing
  acknowledged is lost, nothing reported as failed comes back.
* Private: the folder is 0700 and its files 0600.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dashboard.data.private import private_dir
from dashboard.errors import ConceptLensError

LOCK_FILE = ".lock"
REJECTED = ".rejected.json"
log = logging.getLogger(__name__)

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


class JournalBusyError(ConceptLensError):
    """Another process held the journal for longer than a save or a replay can take."""


def _thread_lock(directory: Path) -> threading.Lock:
    # flock locks belong to open files, so two threads of one process would each get the lock on their
    # own descriptor only after the other let go: a process-wide lock per journal orders them first
    key = str(directory.resolve())
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


class Journal:
    """The journal folder of one database (``db_id``)."""

    def __init__(self, directory: Path, db_id: str | None):
        self.dir = Path(directory)
        self.db_id = db_id

    @contextmanager
    def locked(self, timeout_s: float = 60.0) -> Iterator[None]:
        """Hold the journal: this thread of this process, and no other process, until the block ends."""
        private_dir(self.dir)
        with _thread_lock(self.dir):
            fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                deadline = time.monotonic() + timeout_s
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise JournalBusyError(
                                f"The drawing journal {self.dir.name} is held by another process; nothing was "
                                "saved. Try again, or stop the other ConceptLens process.") from None
                        time.sleep(0.01)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def path_for(self, record_id: str) -> Path:
        return self.dir / f"{record_id}.json"

    def write(self, record_id: str, record: dict) -> Path:
        """Write one record durably (temporary file, fsync, rename, fsync of the folder); hold ``locked``."""
        record = dict(record, db_id=self.db_id)
        path = self.path_for(record_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return path

    @staticmethod
    def discard(path: Path) -> None:
        path.unlink(missing_ok=True)

    def pending(self) -> Iterator[tuple[Path, dict]]:
        """This database's records, oldest name first; hold ``locked``. A torn record (written before a
        crash, nothing promised) is set aside as ``.corrupt``; another database's record is left alone."""
        if not self.dir.is_dir():
            return
        for path in sorted(p for p in self.dir.glob("*.json") if not p.name.endswith(REJECTED)):
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                path.rename(path.with_suffix(".corrupt"))
                continue
            if record.get("db_id") != self.db_id or self.db_id is None:
                log.warning("journal %s: record %s belongs to database %s, not %s; left for it",
                            self.dir, path.name, record.get("db_id"), self.db_id)
                continue
            yield path, record

    def reject(self, path: Path, record: dict, reason: str) -> None:
        """Keep a record that cannot be stored beside the journal, with the reason; never replayed again."""
        out = path.with_name(path.stem + REJECTED)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"record": record, "reason": reason}))
        path.unlink(missing_ok=True)

"""Private files and folders: what ConceptLens writes under the data directory is readable by the
user running it only (folders 0700, files 0600), whatever the process umask says.

``restrict_umask`` sets the umask to 077 for a whole process (the server and the command lines call
it first), so files written by libraries (DuckDB's WAL, caches, exports) are private too.
"""
from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def restrict_umask() -> int:
    """Make every file this process creates private (umask 077). Returns the previous umask."""
    return os.umask(0o077)


def private_dir(path: Path, *, ours: bool = True) -> Path:
    """``path`` and each missing parent created 0700. An existing ``path`` is set to 0700 when it is
    ConceptLens's own folder (``ours``); a folder the user chose to hold a file (the database's, e.g. a
    home directory) is left as it is."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(d, DIR_MODE)
    if ours:
        os.chmod(path, DIR_MODE)
    return path


def chmod_private(path: Path) -> None:
    """Set an existing file to 0600 (a file another library created)."""
    try:
        os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename) as a 0600 file."""
    path = Path(path)
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

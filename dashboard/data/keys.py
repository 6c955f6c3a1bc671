"""The installation's keyed pseudonyms: one random key beside the database file (0600, created once),
and the HMAC-SHA-256 ids drawn from it (case and patient references, image ids, source fingerprints, the
seed that keeps dicognito's pseudonymous UIDs consistent). Nothing here can be reversed without the key.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from dashboard.data.private import private_dir

KEY_FILE = "pseudonym.key"

def pseudonym_key(store) -> bytes:
    """The installation's pseudonymisation key (32 random bytes beside the DB file, 0600, created once)."""
    path = Path(store.db_path).parent / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    private_dir(path.parent, ours=False)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it a moment ago
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def pseudonym(key: bytes, kind: str, value: str, n: int = 16) -> str:
    """A stable, non-reversible id for ``value`` (e.g. a StudyInstanceUID): hex HMAC-SHA-256 prefix."""
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:n]


def source_key(key: bytes, sha256: str) -> str:
    """The keyed fingerprint of a source file (its SHA-256 under the installation's key)."""
    return "src-" + pseudonym(key, "source", sha256, 32)


def dicom_seed(key: bytes) -> str:
    """dicognito's seed for this installation: the same source UIDs always get the same pseudonyms."""
    return pseudonym(key, "dicognito", "seed", 64)

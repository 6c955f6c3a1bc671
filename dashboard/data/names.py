"""Checks on the names people type that the store keeps and pages show: reader names and concept names.

A name is stored only when it is printable text of a sane length: no NUL, no control or format
characters (line breaks, escapes, bidirectional overrides), not empty after trimming. Pages render
these names as plain text, never as markdown.
"""
from __future__ import annotations

import unicodedata

from dashboard.errors import ConceptLensError

#: Longest reader name (a name with a title and a suffix fits).
READER_MAX = 80
#: Longest concept name (the store's own rule: lower-case words joined by hyphens).
CONCEPT_MAX = 60


class InvalidNameError(ConceptLensError):
    """A typed name cannot be stored; the message says why. The store raises it as its ``ValidationError``."""


def check_name(value, what: str, max_len: int) -> str:
    """``value`` trimmed, if it is acceptable as ``what`` ("reader name", "concept name"); else a
    ``InvalidNameError`` that says exactly what is wrong."""
    if not isinstance(value, str):
        raise InvalidNameError(f"A {what} must be text, got {type(value).__name__}.")
    name = value.strip()
    if not name:
        raise InvalidNameError(f"A {what} is required (1 to {max_len} characters).")
    if len(name) > max_len:
        raise InvalidNameError(f"A {what} has at most {max_len} characters; this one has {len(name)}.")
    if "\x00" in name:
        raise InvalidNameError(f"A {what} cannot contain a NUL character.")
    bad = next((ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise InvalidNameError(f"A {what} cannot contain control characters such as line breaks or tabs "
                         f"(found U+{ord(bad):04X}).")
    return name


def check_reader(value) -> str:
    """A reader name as stored with every drawing: 1 to 80 printable characters."""
    return check_name(value, "reader name", READER_MAX)

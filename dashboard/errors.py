"""The error root: every error ConceptLens raises on purpose derives from ``ConceptLensError``, so a page
catches that one type and shows its message; anything else is a bug and goes to the log.

The typed errors stay beside the code that raises them (``data.store.StoreError``,
``imaging.ImagingError``, ``model_zoo.CardError``, ...). ``log_incident`` is the one place an unexpected
error is written down: its traceback goes to the server log under a short id, and only that id is
shown to a user (a traceback names files, paths and values nobody outside the server should see)."""
from __future__ import annotations

import logging
import uuid

from model_zoo.errors import ConceptLensError

__all__ = ["ConceptLensError", "log_incident"]

log = logging.getLogger("conceptlens.incidents")


def log_incident(exc: BaseException, where: str = "") -> str:
    """Log ``exc`` with its traceback under a new incident id (8 hex characters); return the id."""
    incident = uuid.uuid4().hex[:8]
    log.error("incident %s%s: %s", incident, f" ({where})" if where else "", type(exc).__name__,
              exc_info=(type(exc), exc, exc.__traceback__))
    return incident

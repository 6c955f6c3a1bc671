"""The study package's typed errors (all ``ConceptLensError``, so a page catches one type) and its clock."""
from __future__ import annotations

from datetime import UTC, datetime

from dashboard.data.accounts import AccountError, AccountExistsError, UnknownUserError
from dashboard.data.studies import ReadLockedError, StudyConflictError, StudyNotFoundError, StudyStoreError
from dashboard.errors import ConceptLensError

__all__ = [
    "StudyError", "StudyDefinitionError", "AuthError", "SignInError", "LockedOutError", "SessionExpiredError",
    "ReadingError", "NoAssignmentError", "AnswerError", "AccountError", "AccountExistsError", "UnknownUserError",
    "ReadLockedError", "StudyConflictError", "StudyNotFoundError", "StudyStoreError", "utcnow",
]


class StudyError(ConceptLensError):
    """Base class of the study package's own errors; the message is fit to show a user."""


class StudyDefinitionError(StudyError):
    """A study definition is malformed or inconsistent; the message names the field at fault."""


class AuthError(StudyError):
    """Signing in or using a sign-in failed."""


class SignInError(AuthError):
    """Wrong username or password (the message never says which)."""


class LockedOutError(AuthError):
    """Too many failed sign-ins: this username or client is locked for a while."""


class SessionExpiredError(AuthError):
    """The sign-in expired, was signed out, or never existed: sign in again."""


class ReadingError(StudyError):
    """A reading step is not possible now (wrong reader, wrong case, study closed, ...)."""


class NoAssignmentError(ReadingError):
    """The reader has nothing assigned in this study."""


class AnswerError(ReadingError):
    """An answer is missing or out of range; the message names the question."""


def utcnow() -> datetime:
    """The server's time, naive UTC (what every study time stamp holds)."""
    return datetime.now(UTC).replace(tzinfo=None)

"""What a page shows for an error: a ``ConceptLensError``'s own message (written for users), or, for
anything else (a bug), a message with an incident id whose traceback is in the server log
(``dashboard.errors.log_incident``). Streamlit itself shows no error details (``.streamlit/config.toml``:
``client.showErrorDetails = "none"``)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dashboard.errors import ConceptLensError, log_incident


def user_message(exc: BaseException, doing: str = "") -> str:
    """The text to show for ``exc``; an unexpected one is logged first (``doing``: "ingesting", ...)."""
    if isinstance(exc, ConceptLensError):
        return str(exc)
    incident = log_incident(exc, doing)
    what = f" while {doing}" if doing else ""
    return (f"Something went wrong{what}. The details are in the server log under incident {incident}; "
            "tell whoever runs ConceptLens.")


class Incident(ConceptLensError):
    """An unexpected error, already logged under an incident id; its message says where to look."""


@contextmanager
def incidents(doing: str) -> Iterator[None]:
    """Let ``ConceptLensError`` through; turn anything else into an ``Incident`` (logged, with an id), so
    a page that catches ``ConceptLensError`` shows a useful line and never a traceback."""
    try:
        yield
    except ConceptLensError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes an incident id
        raise Incident(user_message(exc, doing)) from exc

"""Who may see which page: the signed-in user of a session and the navigation their role gets.

``app.py`` asks ``current_user`` for the session's user (the token kept in session state) and
builds ``st.navigation`` from ``navigation``:

* nobody signed in: the demo pages as always plus "Sign in" (the demo's free reader name is marked
  unauthenticated); with ``settings.require_sign_in``, the sign-in page only;
* a **reader**: the study pages only (their reading page and the end-of-session questionnaire), so
  no page that shows truth, pathology or a case description is reachable;
* a **coordinator**: the coordinator pages and the demo pages.

A page that is not in the navigation is never run: Streamlit falls back to the default page. The
study pages check the role again (``require_role``), so a page run some other way still refuses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from dashboard.study.accounts import AuthSession, check_session
from dashboard.study.errors import AuthError

__all__ = ["PageSpec", "DEMO_PAGES", "READER_PAGES", "COORDINATOR_PAGES", "SIGN_IN_PAGE", "navigation",
           "current_user", "may_see_demo", "require_role", "literal", "AuthError", "AuthSession"]


@dataclass(frozen=True)
class PageSpec:
    """One page of the navigation: its script (relative to the app), title and icon."""

    path: str
    title: str
    icon: str
    default: bool = False


DEMO_PAGES = (
    PageSpec("pages/worklist.py", "Worklist", ":material/list:"),
    PageSpec("pages/read.py", "Read", ":material/visibility:"),
    PageSpec("pages/label.py", "Label concepts", ":material/draw:"),
    PageSpec("pages/units.py", "Units", ":material/scatter_plot:"),
    PageSpec("pages/report.py", "Report", ":material/summarize:"),
    PageSpec("pages/dataset_concepts.py", "Concepts across images", ":material/bar_chart:"),
    PageSpec("pages/model_data.py", "Model and data", ":material/settings:"),
)
READER_PAGES = (
    PageSpec("pages/study_read.py", "Reading", ":material/radiology:"),
    PageSpec("pages/study_questionnaire.py", "Questionnaire", ":material/checklist:"),
)
COORDINATOR_PAGES = (
    PageSpec("pages/coordinator_studies.py", "Studies", ":material/science:"),
    PageSpec("pages/coordinator_readers.py", "Readers", ":material/group:"),
    PageSpec("pages/coordinator_results.py", "Results", ":material/monitoring:"),
    PageSpec("pages/coordinator_audit.py", "Audit log", ":material/history:"),
)
SIGN_IN_PAGE = PageSpec("pages/sign_in.py", "Sign in", ":material/login:")


def _with_default(pages: tuple[PageSpec, ...]) -> list[PageSpec]:
    return [PageSpec(p.path, p.title, p.icon, default=(i == 0)) for i, p in enumerate(pages)]


def may_see_demo(role: str | None, require_sign_in: bool = False) -> bool:
    """Whether a session may run the demo pages (which show truth, pathology and descriptions):
    a coordinator, or nobody signed in while sign-in is not required; never a reader."""
    return role == "coordinator" or (role is None and not require_sign_in)


def navigation(role: str | None, require_sign_in: bool = False) -> dict[str, list[PageSpec]]:
    """Section title -> pages, for a session whose user has ``role`` (None: nobody signed in).
    The first page of the first section is the default page."""
    if role == "reader":
        return {"Study": _with_default(READER_PAGES)}
    if role == "coordinator":
        return {"Study": _with_default(COORDINATOR_PAGES), "Demo": list(DEMO_PAGES)}
    if require_sign_in:
        return {"": _with_default((SIGN_IN_PAGE,))}
    return {"Demo": _with_default(DEMO_PAGES), "Study": [SIGN_IN_PAGE]}


def current_user(store, token: str | None) -> tuple[AuthSession | None, str | None]:
    """(the session's user, None) while the token is valid; (None, why) when it expired, was signed
    out or the account was deactivated; (None, None) without a token."""
    if not token:
        return None, None
    try:
        return check_session(store, token), None
    except AuthError as exc:
        return None, str(exc)


def require_role(store, token: str | None, role: str) -> AuthSession:
    """The session's user if it has ``role``; else ``AuthError`` saying why (a page shows it and stops)."""
    if not token:
        raise AuthError("Please sign in first.")
    return check_session(store, token, role=role)


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def literal(text: str) -> str:
    """``text`` with every markdown (and HTML) special character escaped, for a markdown element
    that must show a user-typed string as typed (a reader name, a comment)."""
    return _MARKDOWN.sub(r"\\\1", str(text))

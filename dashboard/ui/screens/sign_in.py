"""Sign in: username and password through ``dashboard.study.accounts`` (argon2, expiring sessions,
rate-limited failures); the page keeps only the returned token, in session state.

The token is not put in the URL: a URL is kept in the browser history, in server and proxy logs
and in the Referer of outgoing requests, so a page reload asks to sign in again."""
from __future__ import annotations

from dataclasses import dataclass

from dashboard.settings import Settings
from dashboard.study import accounts
from dashboard.study.accounts import AuthSession
from dashboard.study.errors import AuthError

__all__ = ["AuthError", "AuthSession", "SignInView", "sign_in_view", "sign_in_user", "sign_out_user"]


@dataclass(frozen=True)
class SignInView:
    """What the sign-in page says around its form."""

    title: str
    intro: str
    session_hours: float


def sign_in_view(settings: Settings) -> SignInView:
    return SignInView(
        title="Sign in",
        intro=("Readers and study coordinators of a pilot study sign in with the username and password the "
               "coordinator gave them." + ("" if settings.require_sign_in else
                                            " The demo pages need no sign-in.")),
        session_hours=settings.study_session_hours)


def sign_in_user(store, settings: Settings, username: str, password: str, client="") -> AuthSession:
    """Check the password and open a session; ``AuthError`` with the message to show (a wrong
    username or password without saying which, or the lockout after too many failures)."""
    if not (username or "").strip() or not password:
        raise AuthError("Enter your username and your password.")
    # the browser's address (st.context.ip_address): None behind some proxies, not a str in tests
    return accounts.sign_in(store, username, password, settings=settings,
                            client=client if isinstance(client, str) else "")


def sign_out_user(store, token: str | None) -> None:
    """End the session on the server (its token no longer signs anyone in)."""
    if token:
        accounts.sign_out(store, token)

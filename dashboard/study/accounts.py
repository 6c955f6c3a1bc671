"""Study accounts: readers and coordinators, argon2-hashed passwords, expiring sign-in sessions and
rate-limited sign-in.

* Passwords are hashed with ``argon2-cffi`` (argon2id, its default parameters); the store keeps the
  encoded hash only. A sign-in of an unknown user still runs one verification, so the time taken
  does not tell which usernames exist.
* ``sign_in`` returns a random session token (``secrets``); the store keeps its SHA-256 only. A
  session lasts ``settings.study_session_hours``.
* ``settings.signin_max_failures`` failed attempts of one username, or from one client, within
  ``settings.signin_window_minutes`` lock that username (or client) until
  ``settings.signin_lockout_minutes`` after the last failure; a success clears the count.
* Outside a study the demo's free reader name stays: the UI marks it unauthenticated and never
  calls this module.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dashboard.data.accounts import ROLES
from dashboard.settings import Settings
from dashboard.study.definition import USERNAME_RE
from dashboard.study.errors import (
    AccountError,
    AuthError,
    LockedOutError,
    SessionExpiredError,
    SignInError,
    utcnow,
)

MIN_PASSWORD_LENGTH = 10
_HASHER = PasswordHasher()
# verified against when the username is unknown, so a miss costs as long as a wrong password
_DUMMY_HASH = _HASHER.hash("not a password of anyone: timing filler")


@dataclass(frozen=True)
class AuthSession:
    """A signed-in user. ``token`` is the secret the page keeps (in session state); it is shown once."""

    token: str
    username: str
    role: str
    expires_at: datetime


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_password() -> str:
    """A random initial password (about 96 bits), URL-safe characters."""
    return secrets.token_urlsafe(12)


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")


def create_user(store, username: str, role: str, *, actor: str, password: str | None = None,
                now: datetime | None = None) -> str:
    """Create an account; returns the password (the one given, or a random one to hand over once)."""
    name = (username or "").strip().lower()
    if not USERNAME_RE.match(name):
        raise AccountError(f"{username!r} is not a username: 1-64 lower-case letters, digits, '.', '-' or '_'.")
    if role not in ROLES:
        raise AccountError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
    password = generate_password() if password is None else password
    _check_password(password)
    store.insert_user(name, role, _HASHER.hash(password), created_by=actor, now=now or utcnow())
    return password


def set_password(store, username: str, password: str, *, actor: str) -> None:
    _check_password(password)
    store.update_password_hash(username, _HASHER.hash(password), actor=actor)


def set_active(store, username: str, active: bool, *, actor: str) -> None:
    """Deactivate an account (its sign-ins and open sessions are refused at once) or reactivate it."""
    store.set_user_active((username or "").strip().lower(), active, actor=actor)


def list_users(store, role: str | None = None) -> list[dict]:
    """username, role, active, created_by, created_at (never the hash)."""
    return store.list_users(role)


def _lock_message(what: str, until: datetime, now: datetime) -> str:
    minutes = max(1, int((until - now).total_seconds() // 60 + 1))
    return (f"Too many failed sign-ins for {what}. Sign-in is locked for about {minutes} more minute"
            f"{'s' if minutes != 1 else ''} (until {until:%H:%M} UTC); ask the study coordinator if you forgot "
            "your password.")


def _check_lockout(store, settings: Settings, username: str, client: str, now: datetime) -> None:
    window = timedelta(minutes=settings.signin_window_minutes)
    lockout = timedelta(minutes=settings.signin_lockout_minutes)
    since = now - window - lockout  # a lockout can outlast the window its failures fell in
    for what, kw in ((f"user {username!r}", {"username": username}), ("this computer", {"client": client})):
        if "client" in kw and not client:
            continue
        times = store.recent_signin_failures(since=since, **kw)
        # the lock starts when max_failures failures fit inside one window
        n = settings.signin_max_failures
        for i in range(len(times) - n + 1):
            if times[i + n - 1] - times[i] <= window:
                until = times[-1] + lockout
                if now < until:
                    raise LockedOutError(_lock_message(what, until, now))
                break


def sign_in(store, username: str, password: str, *, settings: Settings, client: str = "",
            now: datetime | None = None) -> AuthSession:
    """Check a password and open a session. Every attempt is recorded and audited.

    Raises ``LockedOutError`` (too many recent failures; the password is not even checked) or
    ``SignInError`` (wrong username or password, without saying which)."""
    now = now or utcnow()
    name = (username or "").strip().lower()
    try:
        _check_lockout(store, settings, name, client, now)
    except LockedOutError:
        # audited, but not counted as a failure: that would let anyone keep a reader locked out
        store.write_audit(name, "sign_in_locked", "user", name, {"client": client})
        raise
    user = store.get_user(name) if name else None
    ok = False
    try:
        ok = _HASHER.verify(user["password_hash"] if user else _DUMMY_HASH, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    ok = bool(ok and user is not None and user["active"])
    store.record_signin_attempt(name, client, ok, now=now)
    if not ok:
        raise SignInError("Wrong username or password.")
    if _HASHER.check_needs_rehash(user["password_hash"]):
        store.update_password_hash(name, _HASHER.hash(password), actor=name)
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(hours=settings.study_session_hours)
    store.insert_auth_session(_token_hash(token), name, client, now=now, expires_at=expires)
    return AuthSession(token=token, username=name, role=user["role"], expires_at=expires)


def check_session(store, token: str, *, now: datetime | None = None, role: str | None = None) -> AuthSession:
    """The session a token belongs to, if still valid (``SessionExpiredError`` otherwise); with
    ``role``, also require that role (``AuthError``)."""
    now = now or utcnow()
    row = store.get_auth_session(_token_hash(token or "")) if token else None
    if row is None or row["revoked_at"] is not None or not row["active"]:
        raise SessionExpiredError("You are not signed in (or were signed out). Sign in again.")
    if now >= row["expires_at"]:
        raise SessionExpiredError(f"Your sign-in expired at {row['expires_at']:%Y-%m-%d %H:%M} UTC. Sign in again.")
    if role is not None and row["role"] != role:
        raise AuthError(f"This needs a {role} account; {row['username']!r} is a {row['role']}.")
    return AuthSession(token=token, username=row["username"], role=row["role"], expires_at=row["expires_at"])


def sign_out(store, token: str, *, now: datetime | None = None) -> None:
    store.revoke_auth_session(_token_hash(token or ""), now=now or utcnow())

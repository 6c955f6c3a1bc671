"""The store's SQL for study accounts: users, sign-in sessions and sign-in attempts (migration 005).

``AccountStoreMixin`` is inherited by ``dashboard.data.store.Store``; it uses the store's plumbing
(``query``, ``_write``, ``_audit``) and never hashes or checks a password itself: that is
``dashboard.study.accounts`` (argon2). Time stamps are naive UTC ``datetime`` values passed in by the
caller, so the server's clock is the one place time comes from and tests can move it.
"""
from __future__ import annotations

from datetime import datetime

from dashboard.errors import ConceptLensError

ROLES = ("reader", "coordinator")


class AccountError(ConceptLensError):
    """An account cannot be created, found or used; the message says why."""


class AccountExistsError(AccountError):
    """A user with this name exists already."""


class UnknownUserError(AccountError):
    """No user with this name."""


class AccountStoreMixin:
    """Users, auth sessions and sign-in attempts. Mixed into ``Store``."""

    # ------------------------------------------------------------ users
    def insert_user(self, username: str, role: str, password_hash: str, *, created_by: str,
                    now: datetime) -> None:
        """Add a user; ``AccountExistsError`` if the name is taken. Audited as ``create``/``user``."""
        if role not in ROLES:
            raise AccountError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")

        def write(cur):
            cur.execute("SELECT 1 FROM users WHERE username = ?", [username])
            if cur.fetchone():
                raise AccountExistsError(f"A user named {username!r} exists already.")
            cur.execute(
                "INSERT INTO users (username, role, password_hash, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
                [username, role, password_hash, created_by, now],
            )
            self._audit(cur, created_by, "create", "user", username, {"role": role})

        self._write(write)

    def get_user(self, username: str) -> dict | None:
        rows = self.query("SELECT * FROM users WHERE username = ?", [username])
        return rows[0] if rows else None

    def list_users(self, role: str | None = None) -> list[dict]:
        """Users without their password hashes, by name."""
        sql = "SELECT username, role, active, created_by, created_at FROM users"
        params: list = []
        if role is not None:
            sql += " WHERE role = ?"
            params.append(role)
        return self.query(sql + " ORDER BY username", params)

    def update_password_hash(self, username: str, password_hash: str, *, actor: str) -> None:
        def write(cur):
            cur.execute("UPDATE users SET password_hash = ? WHERE username = ? RETURNING username",
                        [password_hash, username])
            if not cur.fetchall():
                raise UnknownUserError(f"No user named {username!r}.")
            self._audit(cur, actor, "set_password", "user", username)

        self._write(write)

    def set_user_active(self, username: str, active: bool, *, actor: str) -> None:
        """Deactivate (no sign-in, open sessions refused) or reactivate an account; audited
        ``deactivate``/``reactivate``. The user's rows stay: reads and drawings keep their author."""

        def write(cur):
            cur.execute("UPDATE users SET active = ? WHERE username = ? RETURNING username", [bool(active), username])
            if not cur.fetchall():
                raise UnknownUserError(f"No user named {username!r}.")
            self._audit(cur, actor, "reactivate" if active else "deactivate", "user", username)

        self._write(write)

    # ------------------------------------------------------------ sign-in attempts
    def record_signin_attempt(self, username: str, client: str, success: bool, *, now: datetime) -> None:
        """One sign-in attempt, audited as ``sign_in`` or ``sign_in_failed`` (no secret in the row)."""

        def write(cur):
            cur.execute("INSERT INTO signin_attempts (username, client, attempted_at, success) VALUES (?, ?, ?, ?)",
                        [username, client, now, bool(success)])
            self._audit(cur, username, "sign_in" if success else "sign_in_failed", "user", username,
                        {"client": client})

        self._write(write)

    def recent_signin_failures(self, *, since: datetime, username: str | None = None,
                               client: str | None = None) -> list[datetime]:
        """Times of failed attempts since ``since`` (for one username or one client) that no later
        success of the same username or client has cleared, oldest first."""
        if (username is None) == (client is None):
            raise ValueError("give exactly one of username, client")
        col, val = ("username", username) if username is not None else ("client", client)
        rows = self.query(
            f"SELECT attempted_at FROM signin_attempts WHERE {col} = ? AND NOT success AND attempted_at >= ?"
            f" AND attempted_at > coalesce((SELECT max(attempted_at) FROM signin_attempts"
            f"   WHERE {col} = ? AND success), TIMESTAMP '1970-01-01')"
            " ORDER BY attempted_at",
            [val, since, val],
        )
        return [r["attempted_at"] for r in rows]

    # ------------------------------------------------------------ auth sessions
    def insert_auth_session(self, token_sha256: str, username: str, client: str, *, now: datetime,
                            expires_at: datetime) -> None:
        def write(cur):
            cur.execute(
                "INSERT INTO auth_sessions (token_sha256, username, client, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [token_sha256, username, client, now, expires_at],
            )

        self._write(write)

    def get_auth_session(self, token_sha256: str) -> dict | None:
        rows = self.query(
            "SELECT s.*, u.role, u.active FROM auth_sessions s JOIN users u ON u.username = s.username"
            " WHERE s.token_sha256 = ?",
            [token_sha256],
        )
        return rows[0] if rows else None

    def revoke_auth_session(self, token_sha256: str, *, now: datetime) -> None:
        def write(cur):
            cur.execute("UPDATE auth_sessions SET revoked_at = ? WHERE token_sha256 = ? AND revoked_at IS NULL"
                        " RETURNING username", [now, token_sha256])
            rows = cur.fetchall()
            if rows:
                self._audit(cur, rows[0][0], "sign_out", "user", rows[0][0])

        self._write(write)

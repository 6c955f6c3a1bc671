"""Readers (a coordinator's page): the study accounts; create one (its random initial password is
shown once, never stored in clear), deactivate or reactivate one."""
from __future__ import annotations

from dashboard.study import accounts
from dashboard.study.accounts import MIN_PASSWORD_LENGTH

ROLES = ("reader", "coordinator")

__all__ = ["ROLES", "MIN_PASSWORD_LENGTH", "account_rows", "create_account", "set_account_active"]


def account_rows(store) -> list[dict]:
    """username, role, active, created by and at (never a hash)."""
    return [{"username": u["username"], "role": u["role"], "active": bool(u["active"]),
             "created by": u["created_by"], "created at": u["created_at"]} for u in accounts.list_users(store)]


def create_account(store, username: str, role: str, *, actor: str) -> tuple[str, str]:
    """Create an account with a random initial password: (stored username, password to hand over once).
    ``AccountError`` says what is wrong with the name or that it exists."""
    password = accounts.create_user(store, username, role, actor=actor)
    return (username or "").strip().lower(), password


def set_account_active(store, username: str, active: bool, *, actor: str) -> None:
    """Deactivate (signs the user out everywhere at once) or reactivate an account; a coordinator
    cannot deactivate their own account (nobody could then undo it from the app)."""
    if not active and (username or "").strip().lower() == actor:
        raise accounts.AccountError("You cannot deactivate your own account.")
    accounts.set_active(store, username, active, actor=actor)

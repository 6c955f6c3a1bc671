"""Accounts: argon2 hashes only, wrong passwords, lockout per username and per client, session expiry."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest

from dashboard.study import (
    AccountError,
    AccountExistsError,
    AuthError,
    LockedOutError,
    SessionExpiredError,
    SignInError,
    check_session,
    create_user,
    sign_in,
    sign_out,
)

T0 = datetime(2025, 3, 1, 9, 0, 0)


def _raw(store, sql, params=()):
    return store.query(sql, params)


def test_only_an_argon2_hash_is_stored_never_the_password(store):
    pw = create_user(store, "Alice", "reader", actor="coord", password="s3cret-enough-pw")
    row = store.get_user("alice")
    assert pw == "s3cret-enough-pw" and row["password_hash"].startswith("$argon2id$")
    dump = str(_raw(store, "SELECT * FROM users")) + str(_raw(store, "SELECT * FROM audit_log"))
    assert "s3cret-enough-pw" not in dump
    generated = create_user(store, "bob", "coordinator", actor="coord")
    assert len(generated) >= 16 and generated not in str(_raw(store, "SELECT * FROM users"))
    with pytest.raises(AccountExistsError):
        create_user(store, "alice", "reader", actor="coord", password="another-password")
    with pytest.raises(AccountError, match="at least 10"):
        create_user(store, "carol", "reader", actor="coord", password="short")
    with pytest.raises(AccountError, match="role"):
        create_user(store, "dave", "admin", actor="coord", password="long-enough-pw")


def test_sign_in_gives_a_token_whose_hash_only_is_stored(store, settings):
    create_user(store, "alice", "reader", actor="coord", password="s3cret-enough-pw")
    s = sign_in(store, "alice", "s3cret-enough-pw", settings=settings, client="c1", now=T0)
    assert s.username == "alice" and s.role == "reader"
    assert s.expires_at == T0 + timedelta(hours=settings.study_session_hours)
    rows = _raw(store, "SELECT * FROM auth_sessions")
    assert rows[0]["token_sha256"] == hashlib.sha256(s.token.encode()).hexdigest()
    assert s.token not in str(rows)
    assert check_session(store, s.token, now=T0 + timedelta(hours=1)).username == "alice"
    with pytest.raises(AuthError, match="coordinator"):
        check_session(store, s.token, now=T0, role="coordinator")
    actions = [(a["actor"], a["action"]) for a in store.query_audit(entity="user")]
    assert ("alice", "sign_in") in actions


def test_wrong_password_and_unknown_user_give_the_same_message(store, settings):
    create_user(store, "alice", "reader", actor="coord", password="s3cret-enough-pw")
    with pytest.raises(SignInError, match="Wrong username or password") as a:
        sign_in(store, "alice", "nope-nope-nope", settings=settings, now=T0)
    with pytest.raises(SignInError) as b:
        sign_in(store, "mallory", "whatever-pw", settings=settings, now=T0)
    assert str(a.value) == str(b.value)
    failed = store.query_audit(action="sign_in_failed")
    assert {r["actor"] for r in failed} == {"alice", "mallory"}


def test_lockout_after_n_failures_then_release(store, settings):
    create_user(store, "alice", "reader", actor="coord", password="s3cret-enough-pw")
    n = settings.signin_max_failures
    for i in range(n):
        with pytest.raises(SignInError):
            sign_in(store, "alice", "wrong-password", settings=settings, client=f"c{i}", now=T0 + timedelta(seconds=i))
    # even the right password is refused while locked, with a clear message
    with pytest.raises(LockedOutError, match="Too many failed sign-ins for user 'alice'"):
        sign_in(store, "alice", "s3cret-enough-pw", settings=settings, client="other", now=T0 + timedelta(minutes=1))
    later = T0 + timedelta(minutes=settings.signin_lockout_minutes, seconds=n + 1)
    assert sign_in(store, "alice", "s3cret-enough-pw", settings=settings, now=later).username == "alice"
    assert store.query_audit(action="sign_in_locked")


def test_failures_spread_wider_than_the_window_do_not_lock(store, settings):
    create_user(store, "alice", "reader", actor="coord", password="s3cret-enough-pw")
    step = timedelta(minutes=settings.signin_window_minutes / (settings.signin_max_failures - 1) + 0.5)
    for i in range(settings.signin_max_failures):
        with pytest.raises(SignInError):
            sign_in(store, "alice", "wrong-password", settings=settings, now=T0 + i * step)
    assert sign_in(store, "alice", "s3cret-enough-pw", settings=settings, now=T0 + 5 * step).username == "alice"


def test_lockout_per_client_across_usernames(store, settings):
    create_user(store, "alice", "reader", actor="coord", password="s3cret-enough-pw")
    for i in range(settings.signin_max_failures):
        with pytest.raises(SignInError):
            sign_in(store, f"guess{i}", "wrong-password", settings=settings, client="10.0.0.9", now=T0)
    with pytest.raises(LockedOutError, match="this computer"):
        sign_in(store, "alice", "s3cret-enough-pw", settings=settings, client="10.0.0.9", now=T0)
    assert sign_in(store, "alice", "s3cret-enough-pw", settings=settings, client="10.0.0.10", now=T0)


def test_sessions_expire_and_sign_out_ends_them(store, settings):
    create_user(store, "alice", "reader", actor="coord", password="s3cret-enough-pw")
    short = settings.with_overrides(study_session_hours=0.5)
    s = sign_in(store, "alice", "s3cret-enough-pw", settings=short, now=T0)
    assert check_session(store, s.token, now=T0 + timedelta(minutes=29))
    with pytest.raises(SessionExpiredError, match="expired"):
        check_session(store, s.token, now=T0 + timedelta(minutes=30))
    s2 = sign_in(store, "alice", "s3cret-enough-pw", settings=settings, now=T0)
    sign_out(store, s2.token, now=T0)
    with pytest.raises(SessionExpiredError):
        check_session(store, s2.token, now=T0)
    with pytest.raises(SessionExpiredError):
        check_session(store, "made-up-token", now=T0)

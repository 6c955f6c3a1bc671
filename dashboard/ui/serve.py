"""Start the app the safe way: ``python -m dashboard.ui.serve [--address A] [--port P] [--warmup]``
(what ``make run`` does).

A start-up check comes first (``refusal``): on a loopback address (127.0.0.1, ::1, localhost) the app
runs as before, for the person at this machine. Any other address (0.0.0.0, a LAN address, a host
name) puts it on the network, and then readers must sign in: ``CONCEPTLENS_REQUIRE_SIGN_IN`` must be on
and the store must hold an active coordinator account (``python -m dashboard.study user add ... --role
coordinator``); otherwise the server refuses to start and says why. Then the process makes every file
it writes private (umask 077), runs the warm-up in the foreground if asked (``--warmup``; without
it the app runs it in the background, ``dashboard.ui.warmup``), and replaces itself with ``streamlit run app.py`` on that address and port, so signals
reach Streamlit directly, with the security options on its command line (``SECURE_OPTIONS``).
``--check`` runs the check only.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from dashboard.data.private import restrict_umask
from dashboard.data.store import Store, StoreError
from dashboard.settings import PROJECT_ROOT, Settings, load_settings
from dashboard.ui import warmup

#: Host names that mean this machine only.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(address: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = (address or "").strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", 0.0.0.0-like words and every other host name: the network


def coordinators(settings: Settings) -> list[str]:
    """The active coordinator accounts of the settings' store (read-only; none when it does not exist)."""
    if not settings.db_path.is_file():
        return []
    with Store(settings.db_path, settings.journal_dir, data_dir=settings.data_dir, read_only=True) as store:
        try:
            return [u["username"] for u in store.list_users("coordinator") if u["active"]]
        except StoreError:  # a database from before accounts existed
            return []


def refusal(address: str, settings: Settings) -> str | None:
    """Why the server must not start on ``address`` with these settings, or None when it may."""
    if is_loopback(address):
        return None
    where = f"{address or 'every interface'}"
    if not settings.require_sign_in:
        return (f"Refusing to serve ConceptLens on {where}: that reaches beyond this machine, and sign-in is off. "
                "Either keep it local (ADDRESS=127.0.0.1, the default), or turn sign-in on with "
                "CONCEPTLENS_REQUIRE_SIGN_IN=1 after creating a coordinator account "
                "(python -m dashboard.study user add NAME --role coordinator). See docs/security.md.")
    try:
        found = coordinators(settings)
    except StoreError as exc:
        return f"Refusing to serve ConceptLens on {where}: the accounts cannot be checked ({exc})."
    if not found:
        return (f"Refusing to serve ConceptLens on {where}: sign-in is on but the store {settings.db_path.name} has "
                "no active coordinator account, so nobody could manage readers. Create one first "
                "(python -m dashboard.study user add NAME --role coordinator).")
    return None


#: The server options security depends on, passed on the command line too, so they hold whatever folder
#: streamlit is started from (``.streamlit/config.toml`` is read from the working directory).
SECURE_OPTIONS = (
    "--server.enableXsrfProtection", "true", "--server.enableCORS", "true",
    "--client.showErrorDetails", "none", "--client.toolbarMode", "viewer",
    "--server.maxUploadSize", "300", "--browser.gatherUsageStats", "false", "--server.runOnSave", "false",
)


def streamlit_command(address: str, port: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py"), "--server.headless", "true",
            "--server.address", address, "--server.port", str(port), *SECURE_OPTIONS, *extra]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.ui.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument("--warmup", action="store_true", help="run the warm-up (statistics, demo drawings, scores, TCAV) before serving")
    ap.add_argument("--check", action="store_true", help="run the start-up check only")
    args, extra = ap.parse_known_args(argv)
    settings = load_settings()
    problem = refusal(args.address, settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.check:
        print(f"ok: ConceptLens may serve on {args.address}:{args.port}"
              + (" with sign-in" if settings.require_sign_in else " (this machine only)"))
        return 0
    restrict_umask()
    if args.warmup:
        warmup.main([])
    cmd = streamlit_command(args.address, args.port, extra)
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())

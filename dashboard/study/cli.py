"""The study command line: ``python -m dashboard.study ...`` (see ``main``'s help).

    create FILE.toml [--passwords-out FILE]   check, create missing reader accounts, create the study
    status NAME                               progress per reader and arm
    results NAME [--json]                     AUROC per arm with CIs, sensitivity/specificity, agreement, ratings
    export NAME --out DIR [--real-ids]        Parquet + CSV + data dictionary
    list                                      the studies in the store
    user add NAME [--role reader|coordinator] [--passwords-out FILE]
    user list

The store is the one the settings name (``CONCEPTLENS_DATA_DIR`` / ``CONCEPTLENS_DB_PATH``). Bad input
(a malformed file, an unknown case or study) prints a clear message and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dashboard.data.store import run_with_store
from dashboard.settings import load_settings
from dashboard.study.accounts import create_user, list_users
from dashboard.study.definition import load_definition
from dashboard.study.errors import StudyError
from dashboard.study.export import export_study
from dashboard.study.protocol import create_study, list_studies, load_study, readers_without_account, validate_study
from dashboard.study.results import compute_progress, compute_results


def _write_passwords(path: str, passwords: dict[str, str]) -> None:
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.chmod(p, 0o600)  # an existing file keeps its mode through O_CREAT: set it
        with os.fdopen(fd, "w") as fh:
            for user, pw in passwords.items():
                fh.write(f"{user}\t{pw}\n")
    except OSError as exc:
        raise StudyError(f"Cannot write the passwords file {p}: {exc}") from None


def _hand_over(passwords: dict[str, str], out: str | None) -> None:
    if not passwords:
        return
    if out:
        _write_passwords(out, passwords)
        print(f"Initial passwords of {len(passwords)} new account(s) written to {out} (mode 0600).")
    else:
        print("Initial passwords (shown once; hand each to its reader):")
        for user, pw in passwords.items():
            print(f"  {user}\t{pw}")


def _cmd_create(store, settings, args) -> int:
    defn, text = load_definition(args.file)
    for w in validate_study(store, defn, settings=settings, check_accounts=False):
        print("warning: " + w, file=sys.stderr)
    passwords = {r: create_user(store, r, "reader", actor=args.actor) for r in readers_without_account(store, defn.readers)}
    _hand_over(passwords, args.passwords_out)
    st = create_study(store, defn, actor=args.actor, settings=settings, definition_text=text)
    print(f"Created study {st.name!r}: {len(st.readers)} readers x {len(st.case_ids)} cases x {len(st.arm_names)} arms "
          f"({', '.join(st.arm_names)}); seed {st.seed}; probes {st.probes}; model card {st.model_card}.")
    return 0


def _cmd_status(store, settings, args) -> int:
    st = load_study(store, args.name)
    d = st.definition
    print(f"Study {st.name!r} ({d.title or 'untitled'}): {st.status}, revision {st.revision}, created by "
          f"{st.created_by} at {st.created_at:%Y-%m-%d %H:%M} UTC")
    print(f"  {len(st.readers)} readers, {len(st.case_ids)} cases, arms {', '.join(st.arm_names)}; washout "
          f"{d.washout_days:g} days; seed {st.seed}; probes {st.probes}")
    print(f"  {'reader':<20} {'session':>7} {'arm':<16} {'submitted':>10} {'median s/case':>14} questionnaire")
    for p in compute_progress(store, st):
        med = f"{p['median_seconds_per_case']:.1f}" if p["median_seconds_per_case"] is not None else "-"
        print(f"  {p['reader']:<20} {p['session_index'] + 1:>7} {p['arm']:<16} "
              f"{p['submitted']:>4} / {p['assigned']:<3} {med:>14} {'done' if p['questionnaire_done'] else '-'}")
    return 0


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def _cmd_results(store, settings, args) -> int:
    res = compute_results(store, args.name, n_boot=args.n_boot).to_dict()
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"Study {res['study']!r}: {res['n_reads']} current reads; {res['n_cases_crossed']} cases read by every "
          f"reader in every arm")
    for arm, v in res["mean_auroc_by_arm"].items():
        ci = v["ci95"] or [None, None]
        readers = ", ".join(f"{r} {_fmt(a)}" for r, a in res["reader_auroc_by_arm"].get(arm, {}).items())
        print(f"  AUROC {arm:<16} {_fmt(v['auroc'])} (95 % CI {_fmt(ci[0])}-{_fmt(ci[1])}); readers: {readers}")
    for d in res["differences"]:
        print(f"  difference {d['arm']} - {d['reference']}: {_fmt(d['difference'], '+.3f')} "
              f"(95 % CI {_fmt(d['ci95'][0], '+.3f')} to {_fmt(d['ci95'][1], '+.3f')})")
    for arm, v in res["sensitivity_specificity_birads4"].items():
        p = v["pooled"] or {}
        print(f"  BI-RADS >= 4 {arm:<16} sensitivity {_fmt(p.get('sensitivity'))} specificity "
              f"{_fmt(p.get('specificity'))}")
    for arm in res["fleiss_kappa"]:
        print(f"  agreement {arm:<16} Fleiss kappa {_fmt(res['fleiss_kappa'][arm])}, Krippendorff alpha "
              f"{_fmt(res['krippendorff_alpha'][arm])}")
    print(f"  method: {res['auroc_method']}")
    return 0


def _cmd_export(store, settings, args) -> int:
    s = export_study(store, args.name, args.out, actor=args.actor, real_ids=args.real_ids)
    print(f"Exported study {args.name!r} to {s.out_dir} ({'real usernames' if s.real_ids else 'pseudonymised readers'}): "
          + ", ".join(f"{k} {v}" for k, v in s.rows.items()))
    return 0


def _cmd_list(store, settings, args) -> int:
    rows = list_studies(store)
    if not rows:
        print("No studies yet.")
    for r in rows:
        print(f"{r['name']:<24} {r['status']:<7} rev {r['revision']:<3} created by {r['created_by']} at "
              f"{r['created_at']:%Y-%m-%d %H:%M} UTC  {r['title']}")
    return 0


def _cmd_user(store, settings, args) -> int:
    if args.user_cmd == "add":
        pw = create_user(store, args.username, args.role, actor=args.actor)
        print(f"Created {args.role} account {args.username.strip().lower()!r}.")
        _hand_over({args.username.strip().lower(): pw}, args.passwords_out)
        return 0
    for u in list_users(store):
        print(f"{u['username']:<24} {u['role']:<12} {'active' if u['active'] else 'inactive'}  created by "
              f"{u['created_by']} at {u['created_at']:%Y-%m-%d %H:%M} UTC")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dashboard.study", description="Pilot reader studies (MRMC).")
    ap.add_argument("--actor", default="cli", help="name recorded in the audit log (default: cli)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("create", help="create a study from a TOML file")
    p.add_argument("file")
    p.add_argument("--passwords-out", help="write new accounts' initial passwords here (mode 0600) instead of printing")
    p = sub.add_parser("status", help="progress of a study")
    p.add_argument("name")
    p = sub.add_parser("results", help="statistics of a study")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print every figure as JSON")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates of the CIs (default 2000)")
    p = sub.add_parser("export", help="write a study as Parquet + CSV with a data dictionary")
    p.add_argument("name")
    p.add_argument("--out", required=True)
    p.add_argument("--real-ids", action="store_true", help="keep usernames (default: pseudonyms R01, R02, ...)")
    sub.add_parser("list", help="list studies")
    p = sub.add_parser("user", help="accounts")
    us = p.add_subparsers(dest="user_cmd", required=True)
    a = us.add_parser("add", help="create an account with a random initial password")
    a.add_argument("username")
    a.add_argument("--role", choices=("reader", "coordinator"), default="reader")
    a.add_argument("--passwords-out")
    us.add_parser("list", help="list accounts")
    return ap


_COMMANDS = {"create": _cmd_create, "status": _cmd_status, "results": _cmd_results, "export": _cmd_export,
             "list": _cmd_list, "user": _cmd_user}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    return run_with_store(settings, lambda store: _COMMANDS[args.cmd](store, settings, args))

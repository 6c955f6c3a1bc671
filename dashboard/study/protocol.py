"""Studies in the store: create one from a definition (resolving and recording what it pins), load,
list, redefine before anyone has read, close.

Creating a study resolves, once and for good: the case ids (a worklist filter becomes a fixed list),
the probe version of each concept-report arm ("latest" becomes a number), the model card's weights
hash (so the score shown is the one of these weights), and the randomised assignments. All of it is
recorded with the definition text, its SHA-256 and the seed, in one transaction.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from dashboard.data.demo import DEMO_READER
from dashboard.data.studies import StudyRow
from dashboard.study.definition import (
    StudyDefinition,
    check_definition,
    definition_sha256,
    definition_to_toml,
    parse_definition,
)
from dashboard.study.design import plan_assignments
from dashboard.study.errors import StudyDefinitionError, utcnow
from model_zoo.cards import load_card
from model_zoo.errors import CardError


@dataclass(frozen=True)
class Study:
    """A created study: its definition plus everything creation resolved."""

    name: str
    definition: StudyDefinition
    definition_toml: str
    definition_sha256: str
    seed: int
    case_ids: tuple[str, ...]
    probes: dict                 # arm -> pinned probe version (None: no concept report / none trained)
    model_card: str
    weights_sha256: str
    status: str = "open"
    revision: int = 1
    created_by: str = ""
    created_at: datetime | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def readers(self) -> tuple[str, ...]:
        return self.definition.readers

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.definition.arms)


def _select_cases(store, defn: StudyDefinition, errs: list[str]) -> list[str]:
    c = defn.cases
    known = {r["case_id"]: r for r in store.list_cases()}
    if c.ids:
        missing = [cid for cid in c.ids if cid not in known]
        if missing:
            errs.append(f"cases.ids: unknown case id{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        "(not in the store)")
        return list(c.ids)
    rows = [r for cid, r in sorted(known.items())
            if (c.source is None or r["source"] == c.source) and (c.split is None or r["split"] == c.split)
            and (not c.labels or r["label"] in c.labels)]
    what = ", ".join(f"{k}={v!r}" for k, v in (("source", c.source), ("split", c.split),
                                                ("labels", list(c.labels) or None)) if v is not None) or "no filter"
    if not rows:
        errs.append(f"cases: no case in the store matches ({what})")
        return []
    if c.limit is None:
        return [r["case_id"] for r in rows]
    if c.limit > len(rows):
        errs.append(f"cases.limit: {c.limit} cases asked, but only {len(rows)} match ({what})")
        return []
    # a stratified draw: labels take turns, so a small study still holds every truth label
    rng = np.random.default_rng([int(c.seed), 0xCA5E5])
    groups = {}
    for r in rows:
        groups.setdefault(r["label"], []).append(r["case_id"])
    queues = {lab: [ids[i] for i in rng.permutation(len(ids))] for lab, ids in sorted(groups.items())}
    picked: list[str] = []
    while len(picked) < c.limit:
        for lab in sorted(queues):
            if queues[lab] and len(picked) < c.limit:
                picked.append(queues[lab].pop(0))
    return sorted(picked)


def _resolve(store, defn: StudyDefinition, settings, *, check_accounts: bool = True,
             new_study: bool = False) -> tuple[list[str], dict, str, str, list[str]]:
    """(case ids, arm -> probe version, model card, weights sha, warnings); every problem at once."""
    errs: list[str] = []
    warnings: list[str] = []
    if new_study and any(r["name"] == defn.name for r in store.list_study_rows()):
        errs.append(f"name: a study named {defn.name!r} exists already")
    for r in defn.readers:
        user = store.get_user(r)
        if user is None:
            if check_accounts:
                errs.append(f"readers: {r!r} has no account (python -m dashboard.study user add {r} --role reader)")
        elif user["role"] != "reader":
            errs.append(f"readers: {r!r} is a {user['role']} account, not a reader")
    case_ids = _select_cases(store, defn, errs)
    card_name = defn.model_card or (settings.model_card if settings is not None else "")
    weights_sha = ""
    if not card_name:
        errs.append("model_card: missing (and no settings to take the default from)")
    else:
        try:
            card = load_card(card_name, [settings.user_cards_dir] if settings is not None else [])
            weights_sha = card.weights_sha256
        except CardError as exc:
            errs.append(f"model_card: {exc}")
    probes: dict = {}
    for i, a in enumerate(defn.arms):
        if a.probe is None:
            probes[a.name] = None
            continue
        where = f"arms[{i}] ({a.name!r}).probe"
        if a.probe == "latest":
            # the demo's seeded drawings ('demo truth') never reach a study: their probes are passed over
            rows = [r for r in (store.list_probes(model_card=card_name) if card_name else [])
                    if DEMO_READER not in (r["readers"] or [])]
            if rows:
                probes[a.name] = int(rows[0]["version"])
            elif a.probe_optional:
                probes[a.name] = None
                warnings.append(f"Arm {a.name!r} shows the concept report, but no probe is trained for model card "
                                f"{card_name!r} yet: its readers will see no concept report. Train the probes "
                                "before a real study.")
            else:
                errs.append(f"{where}: \"latest\", but no probe is trained for model card {card_name!r}; train "
                            "the probes first (Report page), pin a version, or set probe_optional = true")
        else:
            versions = {int(r["version"]): r for r in store.list_probes()}
            row = versions.get(int(a.probe))
            if row is None:
                errs.append(f"{where}: no probe version {a.probe} in the store (known: "
                            f"{', '.join(map(str, sorted(versions))) or 'none'})")
            elif card_name and row["model_card"] != card_name:
                errs.append(f"{where}: probe version {a.probe} belongs to model card {row['model_card']!r}, "
                            f"not {card_name!r}")
            elif DEMO_READER in (row["readers"] or []):
                errs.append(f"{where}: probe version {a.probe} was trained on the demo's seeded drawings "
                            f"({DEMO_READER!r}); remove them (Model and data) and retrain, then pin the new version")
            else:
                probes[a.name] = int(a.probe)
    if errs:
        raise StudyDefinitionError(f"Study {defn.name!r} cannot be created:\n  - " + "\n  - ".join(errs))
    return case_ids, probes, card_name, weights_sha, warnings


def _pinned(case_ids, probes, card_name, weights_sha, warnings) -> dict:
    return {"case_ids": list(case_ids), "probes": probes, "model_card": card_name, "weights_sha256": weights_sha,
            "warnings": list(warnings)}


def validate_study(store, definition: StudyDefinition, *, settings=None, check_accounts: bool = True) -> list[str]:
    """Check a new study against the store without writing anything; returns the warnings creation
    would record, or raises ``StudyDefinitionError`` listing every problem. ``check_accounts=False``
    leaves out missing reader accounts (the command line creates them once the rest is valid)."""
    check_definition(definition)
    return _resolve(store, definition, settings, check_accounts=check_accounts, new_study=True)[4]


def _plan_study(store, definition: StudyDefinition, settings,
                definition_text: str | None) -> tuple[StudyRow, list[dict]]:
    """The checked definition as the row to store (its TOML, what it pins) and its randomised assignments."""
    check_definition(definition)
    text = definition_text if definition_text is not None else definition_to_toml(definition)
    case_ids, probes, card_name, weights_sha, warnings = _resolve(store, definition, settings)
    assignments = plan_assignments(definition.name, definition.readers, [a.name for a in definition.arms],
                                   case_ids, definition.seed)
    row = StudyRow(definition.name, definition.title, text, definition_sha256(text), definition.seed,
                   _pinned(case_ids, probes, card_name, weights_sha, warnings))
    return row, assignments


def create_study(store, definition: StudyDefinition, *, actor: str, settings=None, definition_text: str | None = None,
                 now: datetime | None = None) -> Study:
    """Check ``definition`` against the store, resolve what it pins, randomise, and store it all.

    ``definition_text``: the TOML it was read from (kept verbatim); code-built definitions are
    written as TOML. Raises ``StudyDefinitionError`` (every problem listed) or
    ``StudyConflictError`` (a study of that name exists: the first creator wins)."""
    row, assignments = _plan_study(store, definition, settings, definition_text)
    store.insert_study(row, assignments, actor=actor, now=now or utcnow())
    return load_study(store, definition.name)


def edit_study(store, definition: StudyDefinition, *, expected_revision: int, actor: str, settings=None,
               definition_text: str | None = None, now: datetime | None = None) -> Study:
    """Replace a study's definition (same name) while no reader has opened a case.

    ``expected_revision`` is the revision the coordinator loaded: if another coordinator saved
    first, ``StudyConflictError`` says so and nothing changes."""
    row, assignments = _plan_study(store, definition, settings, definition_text)
    store.replace_study_definition(row, assignments, expected_revision=expected_revision, actor=actor,
                                   now=now or utcnow())
    return load_study(store, definition.name)


def close_study(store, name: str, *, expected_revision: int, actor: str, reopen: bool = False,
                now: datetime | None = None) -> Study:
    """Close a study (no more opens or submits) or reopen it."""
    store.set_study_status(name, "open" if reopen else "closed", expected_revision=expected_revision, actor=actor,
                           now=now or utcnow())
    return load_study(store, name)


def load_study(store, name: str) -> Study:
    """A stored study (``StudyNotFoundError`` names the known ones if there is none)."""
    row = store.get_study_row(name)
    defn = parse_definition(row["definition_toml"], source=f"the stored definition of {name!r}")
    pinned = row["pinned"]
    return Study(name=row["name"], definition=defn, definition_toml=row["definition_toml"],
                 definition_sha256=row["definition_sha256"], seed=int(row["seed"]),
                 case_ids=tuple(pinned["case_ids"]), probes=dict(pinned["probes"]),
                 model_card=pinned["model_card"], weights_sha256=pinned["weights_sha256"], status=row["status"],
                 revision=int(row["revision"]), created_by=row["created_by"], created_at=row["created_at"],
                 warnings=tuple(pinned.get("warnings", ())))


def list_studies(store) -> list[dict]:
    """name, title, status, revision, seed, created_by, created_at, updated_at of every study."""
    return store.list_study_rows()


def readers_without_account(store, readers: Iterable[str]) -> list[str]:
    """The usernames among ``readers`` that have no account yet (the CLI creates them)."""
    return [r for r in readers if store.get_user(r) is None]


@dataclass(frozen=True)
class AuditQuery:
    """The audit view's filters (None: any): study, actor, action, entity, entity id, and the time
    range [since, until) in naive UTC."""

    study: str | None = None
    actor: str | None = None
    action: str | None = None
    entity: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_audit(store, query: AuditQuery = AuditQuery(), limit: int = 1000) -> list[dict]:
    """The coordinator's audit view: rows (seq, logged_at, actor, action, entity, entity_id, payload),
    newest first, that match ``query``; at most ``limit``."""
    return store.query_audit(study=query.study, actor=query.actor, action=query.action, entity=query.entity,
                             entity_id=query.entity_id, since=query.since, until=query.until, limit=limit)

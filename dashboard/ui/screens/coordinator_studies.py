"""Studies (a coordinator's page): the studies in the store; create one from a TOML file or a form;
redefine one before anyone has read; close or reopen one.

Every check is the library's (``dashboard.study``): a definition's problems are listed at once,
each naming its field. Edits name the revision the coordinator loaded, so when two coordinators
edit one study at once the second gets the library's ``StudyConflictError`` and nothing changes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from dashboard.settings import Settings
from dashboard.study import (
    Study,
    close_study,
    create_study,
    create_user,
    definition_from_dict,
    edit_study,
    list_studies,
    load_study,
    parse_definition,
    readers_without_account,
    validate_study,
)
from dashboard.study.definition import LABELS, SHOWS, StudyDefinition
from dashboard.study.errors import StudyDefinitionError

__all__ = ["LABELS", "SHOWS", "StudyForm", "ArmRow", "TomlCheck", "EditState", "study_rows", "reader_accounts",
           "case_sources", "arm_rows", "check_toml", "create_from_toml", "form_to_dict", "create_from_form", "load_for_edit",
           "save_edit", "set_status", "DEFAULT_ARMS"]


def study_rows(store) -> list[dict]:
    """One row per study: name, title, status, revision, readers, cases, arms, created by and at."""
    out = []
    for r in list_studies(store):
        st = load_study(store, r["name"])
        out.append({"study": st.name, "title": st.definition.title, "status": st.status, "revision": st.revision,
                    "readers": len(st.readers), "cases": len(st.case_ids), "arms": ", ".join(st.arm_names),
                    "probes": ", ".join(f"{a}: v{v}" for a, v in st.probes.items() if v is not None) or "—",
                    "created by": st.created_by, "created at": st.created_at})
    return out


def reader_accounts(store) -> list[str]:
    """Usernames of the active reader accounts (the form's reader choices)."""
    return [u["username"] for u in store.list_users("reader") if u["active"]]


def case_sources(store) -> tuple[list[str], list[str]]:
    """(sources, splits) present in the store, for the form's worklist filter."""
    cases = store.list_cases()
    return sorted({c["source"] for c in cases}), sorted({c["split"] for c in cases})


# ---------------------------------------------------------------- from a TOML file
@dataclass(frozen=True)
class TomlCheck:
    definition: StudyDefinition
    warnings: list[str]
    missing_accounts: list[str]      # readers without an account (created on request)


def check_toml(store, settings: Settings, text: str, source: str = "the uploaded file") -> TomlCheck:
    """Parse and check a study file against the store without writing; ``StudyDefinitionError``
    lists every problem (missing reader accounts are reported, not raised)."""
    defn = parse_definition(text, source=source)
    warnings = validate_study(store, defn, settings=settings, check_accounts=False)
    return TomlCheck(defn, warnings, readers_without_account(store, defn.readers))


def create_from_toml(store, settings: Settings, text: str, *, actor: str, create_accounts: bool = False,
                     source: str = "the uploaded file") -> tuple[Study, dict[str, str]]:
    """Create the study of a TOML file (kept verbatim). With ``create_accounts``, readers without an
    account get one with a random password first. Returns the study and {username: password} of
    the accounts created (to show once)."""
    check = check_toml(store, settings, text, source)
    if check.missing_accounts and not create_accounts:
        raise StudyDefinitionError(
            "These readers have no account yet: " + ", ".join(check.missing_accounts)
            + ". Tick 'Create missing reader accounts' or create them on the Readers page.")
    passwords = {r: create_user(store, r, "reader", actor=actor) for r in check.missing_accounts}
    return create_study(store, check.definition, actor=actor, settings=settings, definition_text=text), passwords


# ---------------------------------------------------------------- from the form
@dataclass
class ArmRow:
    """One arm as the form's table holds it."""

    name: str
    label: str = ""
    score: bool = True
    attribution: bool = False
    concept_report: bool = False
    probe: str = ""                 # "", "latest" or a version number
    probe_optional: bool = False


DEFAULT_ARMS = (ArmRow("score", "AI score only", True, False, False, ""),
                ArmRow("concepts", "AI score + concept report", True, False, True, "latest"))


def arm_rows(table) -> list[ArmRow]:
    """The arms table of the form (a list of dicts or a DataFrame, one row per arm) as ``ArmRow``s;
    empty rows are left out."""
    records = table.to_dict("records") if hasattr(table, "to_dict") else list(table or [])
    out = []
    for r in records:
        name = str(r.get("name") or "").strip()
        if not name:
            continue
        out.append(ArmRow(name=name, label=_text(r.get("label")), score=_flag(r.get("score")),
                          attribution=_flag(r.get("attribution")), concept_report=_flag(r.get("concept_report")),
                          probe=_text(r.get("probe")), probe_optional=_flag(r.get("probe_optional"))))
    return out


def _flag(v) -> bool:
    return bool(v) and v == v  # a new table row holds None or NaN


def _text(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


@dataclass
class StudyForm:
    """The create-a-study form's values (cases by ``case_ids`` or by the worklist filter)."""

    name: str
    title: str = ""
    readers: list[str] = field(default_factory=list)
    case_ids: str = ""               # one id per line (or comma-separated); empty: use the filter
    source: str | None = None
    split: str | None = None
    labels: list[str] = field(default_factory=list)
    limit: int | None = None
    case_seed: int = 0
    arms: list[ArmRow] = field(default_factory=lambda: list(DEFAULT_ARMS))
    washout_days: float = 28.0
    seed: int = 0
    blind_truth: bool = True
    blind_pathology: bool = True
    blind_description: bool = True
    blind_other_drawings: bool = True
    location: bool = True
    free_text: bool = True
    sus: bool = True
    trust: str = ""                  # one item per line; empty: the default items
    model_card: str = ""


def _probe(value: str):
    v = (value or "").strip()
    if not v:
        return None
    return int(v) if v.isdigit() else v


def form_to_dict(form: StudyForm) -> dict:
    """The form as the study file's dict (what ``definition_from_dict`` checks)."""
    ids = [x for x in re.split(r"[\s,;]+", form.case_ids or "") if x]
    if ids:
        cases: dict = {"ids": ids}
    else:
        cases = {k: v for k, v in (("source", form.source), ("split", form.split),
                                   ("labels", list(form.labels) or None), ("limit", form.limit)) if v}
        cases["seed"] = int(form.case_seed)
    arms = []
    for a in form.arms:
        if not (a.name or "").strip():
            continue
        arm = {"name": a.name.strip(), "label": a.label or "",
               "shows": [s for s, on in (("score", a.score), ("attribution", a.attribution),
                                         ("concept_report", a.concept_report)) if on],
               "probe_optional": bool(a.probe_optional)}
        probe = _probe(a.probe)
        if probe is not None:
            arm["probe"] = probe
        arms.append(arm)
    trust = [t.strip() for t in (form.trust or "").splitlines() if t.strip()]
    raw = {"name": (form.name or "").strip(), "title": form.title or "", "readers": list(form.readers),
           "cases": cases, "arms": arms,
           "design": {"seed": int(form.seed), "washout_days": float(form.washout_days)},
           "blinding": {"truth": form.blind_truth, "pathology": form.blind_pathology,
                        "description": form.blind_description, "other_drawings": form.blind_other_drawings},
           "questions": {"location": form.location, "free_text": form.free_text},
           "questionnaire": {"sus": form.sus, **({"trust": trust} if trust else {})}}
    if form.model_card:
        raw["model_card"] = form.model_card
    return raw


def create_from_form(store, settings: Settings, form: StudyForm, *, actor: str) -> Study:
    """Check the form's study (every problem at once) and create it."""
    defn = definition_from_dict(form_to_dict(form), source="the study form")
    return create_study(store, defn, actor=actor, settings=settings)


# ---------------------------------------------------------------- redefine, close
@dataclass(frozen=True)
class EditState:
    """A study loaded into the editor: its text and the revision it was loaded at."""

    name: str
    revision: int
    text: str
    status: str
    started: bool                   # a reader has opened a case: the definition can no longer change


def load_for_edit(store, name: str) -> EditState:
    st = load_study(store, name)
    return EditState(st.name, st.revision, st.definition_toml, st.status, bool(store.list_reads(st.name)))


def save_edit(store, settings: Settings, name: str, text: str, *, expected_revision: int, actor: str) -> Study:
    """Replace the definition of ``name`` with ``text`` (``StudyConflictError`` when someone saved
    since ``expected_revision`` or readers have started)."""
    defn = parse_definition(text, source="the edited definition")
    if defn.name != name:
        raise StudyDefinitionError(f"name: the edited definition is named {defn.name!r}; a study keeps its name "
                                   f"({name!r}). Create a new study for a new name.")
    return edit_study(store, defn, expected_revision=expected_revision, actor=actor, settings=settings,
                      definition_text=text)


def set_status(store, name: str, *, close: bool, expected_revision: int, actor: str) -> Study:
    """Close (no more reads) or reopen a study, at the revision the coordinator saw."""
    return close_study(store, name, expected_revision=expected_revision, actor=actor, reopen=not close)

"""A study definition: who reads which cases under which arms, how the order is randomised, what is
blinded, what is asked. Written as a TOML file (``studies/demo-study.toml``) or built in code (the
coordinator page); both paths go through ``check_definition``, and every problem is reported at once,
each line naming the field at fault.

TOML layout (every table but ``[cases]`` and ``[[arms]]`` is optional)::

    name = "demo-study"                 # lower-case letters, digits, '-', '_'
    title = "Concept report pilot"
    model_card = "demo-lite0-synth"     # default: the settings' card when the study is created
    readers = ["reader-a", "reader-b", "reader-c"]   # usernames; each needs a reader account

    [cases]                             # either ids = [...] or a worklist filter:
    source = "synthetic"                # cases.source
    split = "test"                      # cases.split
    labels = ["normal", "benign", "malignant"]   # truth labels kept (a stratified draw over them)
    limit = 12
    seed = 7                            # which cases the limit keeps

    [design]
    seed = 20250101                     # randomisation seed (recorded with the study)
    washout_days = 28                   # between a reader's sessions; 0 for demos

    [blinding]                          # true = hidden from readers (all default true)
    truth = true
    pathology = true
    description = true
    other_drawings = true

    [questions]
    location = true                     # offer the optional click on the most suspicious location
    free_text = true

    [questionnaire]                     # end of each session
    sus = true                          # System Usability Scale, 10 standard items
    trust = ["I trusted the AI score.", "..."]   # Likert 1-5 items

    [[arms]]
    name = "score"
    label = "AI score only"
    shows = ["score"]                   # any of score, attribution, concept_report ([] = unaided)

    [[arms]]
    name = "concepts"
    label = "AI score + concept report"
    shows = ["score", "concept_report"]
    probe = "latest"                    # an int, or "latest" (resolved and recorded at creation)
    probe_optional = false              # true: create the study even if no probe is trained yet
    ask_helpfulness = true              # default: true exactly when the arm shows an explanation
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dashboard.study.errors import StudyDefinitionError
from model_zoo.cards import dumps_toml

SHOWS = ("score", "attribution", "concept_report")
EXPLANATIONS = ("attribution", "concept_report")
LABELS = ("normal", "benign", "malignant", "unknown")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

#: The System Usability Scale (Brooke 1996), in its standard order; odd items are positive, even negative.
SUS_ITEMS = (
    "I think that I would like to use this system frequently.",
    "I found the system unnecessarily complex.",
    "I thought the system was easy to use.",
    "I think that I would need the support of a technical person to be able to use this system.",
    "I found the various functions in this system were well integrated.",
    "I thought there was too much inconsistency in this system.",
    "I would imagine that most people would learn to use this system very quickly.",
    "I found the system very cumbersome to use.",
    "I felt very confident using the system.",
    "I needed to learn a lot of things before I could get going with this system.",
)
DEFAULT_TRUST = (
    "I trusted the AI score.",
    "The explanation matched what I saw in the image.",
    "I would rely on this system in my practice.",
)


@dataclass(frozen=True)
class Arm:
    """One reading condition. ``probe``: an int version, "latest", or None (no concept report)."""

    name: str
    label: str = ""
    shows: tuple[str, ...] = ("score",)
    probe: int | str | None = None
    probe_optional: bool = False
    ask_helpfulness: bool | None = None   # None: asked exactly when the arm shows an explanation

    @property
    def shows_explanation(self) -> bool:
        return any(s in EXPLANATIONS for s in self.shows)

    @property
    def asks_helpfulness(self) -> bool:
        return self.shows_explanation if self.ask_helpfulness is None else bool(self.ask_helpfulness)


@dataclass(frozen=True)
class CaseSelection:
    """Explicit ``ids``, or a worklist filter (source, split, truth labels, limit, seed)."""

    ids: tuple[str, ...] = ()
    source: str | None = None
    split: str | None = None
    labels: tuple[str, ...] = ()
    limit: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Blinding:
    """True = hidden from the reader."""

    truth: bool = True
    pathology: bool = True
    description: bool = True
    other_drawings: bool = True


@dataclass(frozen=True)
class Questions:
    location: bool = True
    free_text: bool = True


@dataclass(frozen=True)
class Questionnaire:
    sus: bool = True
    trust: tuple[str, ...] = DEFAULT_TRUST

    @property
    def asked(self) -> bool:
        return self.sus or bool(self.trust)


@dataclass(frozen=True)
class StudyDefinition:
    """Everything a study is, before the store resolves it (see ``protocol.create_study``)."""

    name: str
    readers: tuple[str, ...]
    cases: CaseSelection
    arms: tuple[Arm, ...]
    title: str = ""
    model_card: str = ""
    seed: int = 0
    washout_days: float = 0.0
    blinding: Blinding = field(default_factory=Blinding)
    questions: Questions = field(default_factory=Questions)
    questionnaire: Questionnaire = field(default_factory=Questionnaire)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise StudyDefinitionError(f"Study {self.name!r} has no arm {name!r}.")


# ----------------------------------------------------------------------------- checks
def _dupes(values) -> list:
    seen, out = set(), []
    for v in values:
        if v in seen and v not in out:
            out.append(v)
        seen.add(v)
    return out


def check_definition(defn: StudyDefinition) -> StudyDefinition:
    """Raise ``StudyDefinitionError`` listing every inconsistency (each naming its field); return ``defn``."""
    errs: list[str] = []
    if not isinstance(defn.name, str) or not NAME_RE.match(defn.name):
        errs.append(f"name: {defn.name!r} is not a study name (1-64 lower-case letters, digits, '-' or '_', "
                    "starting with a letter or digit)")
    if not defn.readers:
        errs.append("readers: at least one reader is needed")
    for r in defn.readers:
        if not isinstance(r, str) or not USERNAME_RE.match(r):
            errs.append(f"readers: {r!r} is not a username (lower-case letters, digits, '.', '-', '_')")
    for r in _dupes(defn.readers):
        errs.append(f"readers: {r!r} is listed twice")
    c = defn.cases
    if c.ids and any(v is not None for v in (c.source, c.split, c.limit)) or (c.ids and c.labels):
        errs.append("cases: give either ids or a filter (source, split, labels, limit), not both")
    for cid in _dupes(c.ids):
        errs.append(f"cases.ids: {cid!r} is listed twice")
    for lab in c.labels:
        if lab not in LABELS:
            errs.append(f"cases.labels: {lab!r} is not a truth label ({', '.join(LABELS)})")
    if c.limit is not None and (not isinstance(c.limit, int) or c.limit < 1):
        errs.append(f"cases.limit: {c.limit!r} must be a whole number of at least 1")
    if not defn.arms:
        errs.append("arms: at least one arm is needed")
    for a in _dupes([a.name for a in defn.arms]):
        errs.append(f"arms: the name {a!r} is used twice")
    for i, a in enumerate(defn.arms):
        where = f"arms[{i}] ({a.name!r})"
        if not isinstance(a.name, str) or not NAME_RE.match(a.name):
            errs.append(f"{where}.name: not an arm name (lower-case letters, digits, '-' or '_')")
        for s in a.shows:
            if s not in SHOWS:
                errs.append(f"{where}.shows: {s!r} is unknown; use any of {', '.join(SHOWS)}")
        for s in _dupes(a.shows):
            errs.append(f"{where}.shows: {s!r} is listed twice")
        if "concept_report" in a.shows:
            if a.probe is None:
                errs.append(f"{where}.probe: an arm that shows the concept report pins a probe version "
                            "(an int, or \"latest\")")
            elif not (a.probe == "latest" or (isinstance(a.probe, int) and not isinstance(a.probe, bool)
                                              and a.probe >= 1)):
                errs.append(f"{where}.probe: {a.probe!r} is neither a probe version (an int >= 1) nor \"latest\"")
        elif a.probe is not None:
            errs.append(f"{where}.probe: only the concept report uses a probe; this arm does not show it")
        if a.ask_helpfulness and not a.shows_explanation:
            errs.append(f"{where}.ask_helpfulness: \"the explanation helped me\" is asked only in arms that show "
                        "an explanation (attribution or concept_report); this arm shows "
                        + (", ".join(a.shows) or "nothing"))
    if not isinstance(defn.washout_days, (int, float)) or defn.washout_days < 0:
        errs.append(f"design.washout_days: {defn.washout_days!r} must be a number of days >= 0")
    if not isinstance(defn.seed, int) or isinstance(defn.seed, bool) or defn.seed < 0:
        errs.append(f"design.seed: {defn.seed!r} must be a whole number >= 0")
    for t in _dupes(defn.questionnaire.trust):
        errs.append(f"questionnaire.trust: the item {t!r} is listed twice")
    if errs:
        raise StudyDefinitionError(f"Study definition {defn.name!r} is not valid:\n  - " + "\n  - ".join(errs))
    return defn


# ----------------------------------------------------------------------------- dict / TOML
_TOP = {"name", "title", "model_card", "readers", "cases", "design", "blinding", "questions", "questionnaire", "arms"}
_TABLES = {
    "cases": {"ids", "source", "split", "labels", "limit", "seed"},
    "design": {"seed", "washout_days"},
    "blinding": {"truth", "pathology", "description", "other_drawings"},
    "questions": {"location", "free_text"},
    "questionnaire": {"sus", "trust"},
}
_ARM_KEYS = {"name", "label", "shows", "probe", "probe_optional", "ask_helpfulness"}


class _Reader:
    """Typed access to a raw dict that collects errors with the field's path instead of raising."""

    def __init__(self, errs: list[str]):
        self.errs = errs

    def get(self, d: dict, key: str, where: str, kind, default=None, required: bool = False):
        if key not in d:
            if required:
                self.errs.append(f"{where}{key}: missing")
            return default
        v = d[key]
        ok = isinstance(v, kind) and not (kind in (int, (int, float)) and isinstance(v, bool))
        if not ok:
            names = {str: "a string", bool: "true or false", int: "a whole number", list: "a list",
                     dict: "a table", (int, float): "a number"}
            self.errs.append(f"{where}{key}: expected {names.get(kind, kind)}, got {v!r}")
            return default
        return v

    def strings(self, d: dict, key: str, where: str, default=()) -> tuple[str, ...]:
        v = self.get(d, key, where, list, None)
        if v is None:
            return tuple(default)
        bad = [x for x in v if not isinstance(x, str)]
        if bad:
            self.errs.append(f"{where}{key}: every entry must be a string, got {bad[0]!r}")
            return tuple(default)
        return tuple(v)

    def unknown(self, d: dict, allowed: set, where: str) -> None:
        for k in d:
            if k not in allowed:
                self.errs.append(f"{where}{k}: unknown field (known: {', '.join(sorted(allowed))})")


def definition_from_dict(raw: dict, *, source: str = "the study definition") -> StudyDefinition:
    """Build and check a definition from the TOML's dict; every problem in one ``StudyDefinitionError``."""
    if not isinstance(raw, dict):
        raise StudyDefinitionError(f"{source}: expected a table of fields")
    errs: list[str] = []
    rd = _Reader(errs)
    rd.unknown(raw, _TOP, "")
    tables = {}
    for t in _TABLES:
        tables[t] = rd.get(raw, t, "", dict, {}, required=(t == "cases"))
        rd.unknown(tables[t], _TABLES[t], f"{t}.")
    c = tables["cases"]
    cases = CaseSelection(ids=rd.strings(c, "ids", "cases."), source=rd.get(c, "source", "cases.", str),
                          split=rd.get(c, "split", "cases.", str), labels=rd.strings(c, "labels", "cases."),
                          limit=rd.get(c, "limit", "cases.", int), seed=rd.get(c, "seed", "cases.", int, 0))
    arms = []
    raw_arms = rd.get(raw, "arms", "", list, [], required=True)
    for i, a in enumerate(raw_arms):
        where = f"arms[{i}]."
        if not isinstance(a, dict):
            errs.append(f"arms[{i}]: expected a table ([[arms]]), got {a!r}")
            continue
        rd.unknown(a, _ARM_KEYS, where)
        probe = a.get("probe")
        if probe is not None and not (isinstance(probe, int) and not isinstance(probe, bool)) and probe != "latest":
            errs.append(f"{where}probe: {probe!r} is neither a probe version (an int) nor \"latest\"")
            probe = None
        arms.append(Arm(name=rd.get(a, "name", where, str, f"arm{i}", required=True),
                        label=rd.get(a, "label", where, str, ""),
                        shows=rd.strings(a, "shows", where, ("score",)), probe=probe,
                        probe_optional=rd.get(a, "probe_optional", where, bool, False),
                        ask_helpfulness=rd.get(a, "ask_helpfulness", where, bool, None)))
    d, b, q, qn = tables["design"], tables["blinding"], tables["questions"], tables["questionnaire"]
    defn = StudyDefinition(
        name=rd.get(raw, "name", "", str, "", required=True),
        title=rd.get(raw, "title", "", str, ""),
        model_card=rd.get(raw, "model_card", "", str, ""),
        readers=rd.strings(raw, "readers", ""),
        cases=cases,
        arms=tuple(arms),
        seed=rd.get(d, "seed", "design.", int, 0),
        washout_days=float(rd.get(d, "washout_days", "design.", (int, float), 0.0)),
        blinding=Blinding(**{k: rd.get(b, k, "blinding.", bool, True) for k in _TABLES["blinding"]}),
        questions=Questions(**{k: rd.get(q, k, "questions.", bool, True) for k in _TABLES["questions"]}),
        questionnaire=Questionnaire(sus=rd.get(qn, "sus", "questionnaire.", bool, True),
                                    trust=rd.strings(qn, "trust", "questionnaire.", DEFAULT_TRUST)),
    )
    if "readers" not in raw:
        errs.append("readers: missing")
    if errs:
        raise StudyDefinitionError(f"{source} is not valid:\n  - " + "\n  - ".join(errs))
    try:
        return check_definition(defn)
    except StudyDefinitionError as exc:
        raise StudyDefinitionError(str(exc).replace(f"Study definition {defn.name!r}", source, 1)) from None


def parse_definition(text: str, *, source: str = "the study definition") -> StudyDefinition:
    """A definition from TOML text (``source`` names it in messages)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyDefinitionError(f"{source} is not valid TOML: {exc}") from None
    return definition_from_dict(raw, source=source)


def load_definition(path: str | Path) -> tuple[StudyDefinition, str]:
    """(definition, file text) of a TOML study file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyDefinitionError(f"Cannot read the study file {p}: {exc}") from None
    return parse_definition(text, source=str(p)), text


def definition_to_dict(defn: StudyDefinition) -> dict[str, Any]:
    """The TOML-shaped dict of a definition (None values left out)."""
    d = asdict(defn)
    cases = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d["cases"].items()}
    if defn.cases.ids:
        cases = {"ids": list(defn.cases.ids)}
    else:
        cases.pop("ids")
    out = {"name": defn.name, "title": defn.title, "model_card": defn.model_card or None,
           "readers": list(defn.readers), "cases": {k: v for k, v in cases.items() if v is not None},
           "design": {"seed": defn.seed, "washout_days": float(defn.washout_days)},
           "blinding": asdict(defn.blinding), "questions": asdict(defn.questions),
           "questionnaire": {"sus": defn.questionnaire.sus, "trust": list(defn.questionnaire.trust)},
           "arms": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(a).items() if v is not None}
                    for a in defn.arms]}
    return out


def definition_to_toml(defn: StudyDefinition) -> str:
    """TOML text that ``parse_definition`` reads back to an equal definition."""
    return dumps_toml(definition_to_dict(defn))


def definition_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

"""A reader's way through a study, as the reading page will call it (``reader`` is the username of a
session ``accounts.check_session`` accepted):

    step = next_assignment(store, study, reader)          # "read" | "questionnaire" | "washout" | "complete" | "closed"
    view = visible_fields(store, step.assignment.assignment_id)   # the one blinding decision
    form = read_form(store, step.assignment.assignment_id)        # which questions to ask
    read_id = open_read(store, step.assignment.assignment_id, reader)   # server time of first render
    record_event(store, read_id, reader, "window_level", {"center": 0.4, "width": 0.8})
    save_drawing(store, read_id, reader, image_id=..., concept=..., ...)  # optional; times the first drawing
    submit_read(store, read_id, reader, ReadAnswers(birads=4, malignancy=70, confidence=3, helpfulness=4))
    submit_questionnaire(store, study, reader, session_index, sus=[...10 answers...], trust={...})

Order is enforced: a reader opens only the case ``next_assignment`` names, a later session opens
only after the earlier one (and its questionnaire) is done and the washout has passed, a read is
submitted once, and a correction (``correct_read``) is a new row that supersedes the old one.
Every time is the server's (UTC); ``now`` exists for tests.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from dashboard.data.store import DrawingRecord
from dashboard.data.studies import QuestionnaireRow
from dashboard.study.definition import SUS_ITEMS
from dashboard.study.errors import AnswerError, NoAssignmentError, ReadingError, utcnow
from dashboard.study.protocol import Study, load_study

EVENT_KINDS = ("window_level", "overlay_toggle", "zoom", "pan", "image_switch")
MAX_COMMENT = 4000


@dataclass(frozen=True)
class Assignment:
    """One case to read in one arm: session and position are 0-based."""

    assignment_id: str
    study: str
    reader: str
    arm: str
    session_index: int
    position: int
    case_id: str
    n_in_session: int
    read_id: str | None = None      # the open (not yet submitted) read, when the reader left mid-case


@dataclass(frozen=True)
class NextStep:
    """What a reader does next. ``state``: read | questionnaire | washout | complete | closed."""

    state: str
    study: str
    reader: str
    message: str
    assignment: Assignment | None = None
    session_index: int | None = None
    arm: str | None = None
    n_sessions: int = 0
    done: int = 0                    # reads submitted, all sessions
    total: int = 0
    available_at: datetime | None = None   # washout: when the next session opens (UTC)


@dataclass(frozen=True)
class ReadAnswers:
    """A reader's answers for one case. ``click``: (image_id, x, y) in model-space pixels, or None."""

    birads: int
    malignancy: float               # probability of malignancy, 0..100 %
    confidence: int                 # 1..5
    helpfulness: int | None = None  # 1..5, only in arms that show an explanation
    click: tuple[str, float, float] | None = None
    comment: str = ""


@dataclass(frozen=True)
class Visibility:
    """What a page may show for an assignment (True = show). Outside a study everything is shown."""

    in_study: bool
    truth: bool
    pathology: bool
    description: bool
    score: bool
    attribution: bool
    concept_report: bool
    other_drawings: bool
    study: str | None = None
    arm: str | None = None
    probe_version: int | None = None    # the pinned probe the concept report must use
    model_card: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class ReadForm:
    """The questions of one case: BI-RADS 0-6, malignancy 0-100, confidence 1-5 always."""

    location: bool
    helpfulness: bool
    free_text: bool
    birads: tuple[int, int] = (0, 6)
    malignancy: tuple[int, int] = (0, 100)
    confidence: tuple[int, int] = (1, 5)
    helpfulness_range: tuple[int, int] = (1, 5)


# ----------------------------------------------------------------------------- where the reader is
def _study(store, study: str | Study) -> Study:
    return study if isinstance(study, Study) else load_study(store, study)


def _original_reads(store, study: str, reader: str) -> dict[str, dict]:
    """assignment_id -> the reader's first (non-correction) read of it."""
    out: dict[str, dict] = {}
    for r in store.list_reads(study, reader):
        if r["supersedes"] is None and r["assignment_id"] not in out:
            out[r["assignment_id"]] = r
    return out


def next_assignment(store, study: str | Study, reader: str, *, now: datetime | None = None) -> NextStep:
    """The reader's next step: the case to read (resuming an open one), the questionnaire of a
    finished session, the washout before the next session (with the time it opens), or done.

    Raises ``NoAssignmentError`` when the reader has nothing assigned in this study."""
    now = now or utcnow()
    st = _study(store, study)
    rows = store.list_assignments(st.name, reader)
    if not rows:
        raise NoAssignmentError(f"{reader!r} has no cases to read in study {st.name!r}. Ask the study coordinator "
                                "to add you as a reader.")
    reads = _original_reads(store, st.name, reader)
    q_done = {q["session_index"] for q in store.list_questionnaires(st.name) if q["reader"] == reader}
    sessions: dict[int, list[dict]] = {}
    for a in rows:
        sessions.setdefault(int(a["session_index"]), []).append(a)
    n_sessions = len(sessions)
    done = sum(1 for r in reads.values() if r["submitted_at"] is not None)
    common = dict(study=st.name, reader=reader, n_sessions=n_sessions, done=done, total=len(rows))
    last_submit: datetime | None = None
    for si in sorted(sessions):
        todo = [a for a in sorted(sessions[si], key=lambda a: a["position"])
                if reads.get(a["assignment_id"], {}).get("submitted_at") is None]
        arm = sessions[si][0]["arm"]
        label = st.definition.arm(arm).label or arm
        if todo:
            if st.status != "open":
                return NextStep("closed", message=f"Study {st.name!r} is closed.", session_index=si, arm=arm, **common)
            if si > 0 and last_submit is not None:
                opens = last_submit + timedelta(days=float(st.definition.washout_days))
                if now < opens:
                    return NextStep("washout", session_index=si, arm=arm, available_at=opens,
                                    message=(f"Session {si + 1} of {n_sessions} ({label}) opens on "
                                             f"{opens:%Y-%m-%d %H:%M} UTC, after the {st.definition.washout_days:g}-day "
                                             "washout since your previous session."), **common)
            a = todo[0]
            open_read = reads.get(a["assignment_id"])
            assignment = Assignment(assignment_id=a["assignment_id"], study=st.name, reader=reader, arm=arm,
                                    session_index=si, position=int(a["position"]), case_id=a["case_id"],
                                    n_in_session=len(sessions[si]),
                                    read_id=open_read["read_id"] if open_read else None)
            return NextStep("read", assignment=assignment, session_index=si, arm=arm,
                            message=(f"Session {si + 1} of {n_sessions} ({label}): case {int(a['position']) + 1} of "
                                     f"{len(sessions[si])}" + (" (resumed)" if open_read else "") + "."), **common)
        if st.definition.questionnaire.asked and si not in q_done:
            return NextStep("questionnaire", session_index=si, arm=arm,
                            message=f"Session {si + 1} of {n_sessions} ({label}) is done: please answer the "
                                    "end-of-session questionnaire.", **common)
        last_submit = max(reads[a["assignment_id"]]["submitted_at"] for a in sessions[si])
    return NextStep("complete", message=f"You have read every case of study {st.name!r}. Thank you.", **common)


def _own_assignment(store, assignment_id: str, reader: str) -> dict:
    a = store.get_assignment(assignment_id)
    if a["reader"] != reader:
        raise ReadingError(f"Case {assignment_id!r} is assigned to another reader.")
    return a


def open_read(store, assignment_id: str, reader: str, *, now: datetime | None = None) -> str:
    """Record the server time the case was first rendered; returns the read id (the same id again
    when the reader comes back to an open case). Only the case ``next_assignment`` names can open."""
    now = now or utcnow()
    a = _own_assignment(store, assignment_id, reader)
    step = next_assignment(store, a["study"], reader, now=now)
    if step.state != "read" or step.assignment is None or step.assignment.assignment_id != assignment_id:
        raise ReadingError("This is not your next case. " + step.message)
    return store.open_read_row(read_id=uuid.uuid4().hex, assignment=a, now=now)


def _own_read(store, read_id: str, reader: str) -> dict:
    r = store.get_read(read_id)
    if r["reader"] != reader:
        raise ReadingError(f"Read {read_id!r} belongs to another reader.")
    return r


def record_event(store, read_id: str, reader: str, kind: str, payload: dict | None = None, *,
                 now: datetime | None = None) -> int:
    """A viewer event of an open read (``kind`` one of ``EVENT_KINDS``), timed on the server."""
    if kind not in EVENT_KINDS:
        raise ReadingError(f"Unknown viewer event {kind!r}; use one of {', '.join(EVENT_KINDS)}.")
    _own_read(store, read_id, reader)
    return store.insert_read_event(read_id=read_id, kind=kind, payload=payload, now=now or utcnow())


def record_first_drawing(store, read_id: str, reader: str, *, now: datetime | None = None) -> bool:
    """Time the read's first drawing (later calls change nothing); True when this call set it."""
    _own_read(store, read_id, reader)
    return store.set_first_drawing(read_id, actor=reader, now=now or utcnow())


def save_drawing(store, read_id: str, reader: str, *, now: datetime | None = None, **annotation) -> str:
    """Save a drawing made during a read through ``store.save_annotation`` (journaled as always),
    tagged with the study and arm and timing the read's first drawing in the same transaction."""
    r = _own_read(store, read_id, reader)
    if r["submitted_at"] is not None:
        raise ReadingError("This read was submitted: it takes no more drawings.")
    now = now or utcnow()

    def first_drawing(cur, annotation_id):
        store.set_first_drawing(read_id, actor=reader, now=now, cur=cur)

    drawing = DrawingRecord(reader=reader, study=r["study"], arm=r["arm"], **annotation)
    return store.save_annotation(drawing, extra_writes=first_drawing)


# ----------------------------------------------------------------------------- blinding and questions
def visible_fields(store, assignment_id: str | None) -> Visibility:
    """What the page may show while reading ``assignment_id`` (None: outside a study, everything).

    Truth, pathology, description and other readers' drawings follow the study's blinding; score,
    attribution and concept report follow the arm (a concept report only with a pinned probe)."""
    if assignment_id is None:
        return Visibility(in_study=False, truth=True, pathology=True, description=True, score=True, attribution=True,
                          concept_report=True, other_drawings=True)
    a = store.get_assignment(assignment_id)
    st = load_study(store, a["study"])
    arm = st.definition.arm(a["arm"])
    b = st.definition.blinding
    probe = st.probes.get(arm.name)
    return Visibility(in_study=True, truth=not b.truth, pathology=not b.pathology, description=not b.description,
                      score="score" in arm.shows, attribution="attribution" in arm.shows,
                      concept_report="concept_report" in arm.shows and probe is not None,
                      other_drawings=not b.other_drawings, study=st.name, arm=arm.name, probe_version=probe,
                      model_card=st.model_card, weights_sha256=st.weights_sha256)


def read_form(store, assignment_id: str) -> ReadForm:
    """The questions to ask for this assignment."""
    a = store.get_assignment(assignment_id)
    st = load_study(store, a["study"])
    return ReadForm(location=st.definition.questions.location, free_text=st.definition.questions.free_text,
                    helpfulness=st.definition.arm(a["arm"]).asks_helpfulness)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_answers(store, st: Study, arm: str, case_id: str, answers: ReadAnswers) -> dict:
    """The answers as store columns, or ``AnswerError`` naming every question at fault."""
    errs = []
    if not (_is_int(answers.birads) and 0 <= answers.birads <= 6):
        errs.append(f"BI-RADS: {answers.birads!r} is not a category 0 to 6")
    if not (_is_number(answers.malignancy) and 0 <= answers.malignancy <= 100):
        errs.append(f"probability of malignancy: {answers.malignancy!r} is not a number from 0 to 100 (%)")
    if not (_is_int(answers.confidence) and 1 <= answers.confidence <= 5):
        errs.append(f"confidence: {answers.confidence!r} is not 1 to 5")
    asks = st.definition.arm(arm).asks_helpfulness
    if asks and not (_is_int(answers.helpfulness) and 1 <= answers.helpfulness <= 5):
        errs.append(f"'the explanation helped me': {answers.helpfulness!r} is not 1 to 5 (required in this arm)")
    if not asks and answers.helpfulness is not None:
        errs.append(f"'the explanation helped me' is not asked in arm {arm!r} (it shows no explanation)")
    click = answers.click
    if click is not None:
        if not st.definition.questions.location:
            errs.append("location: this study does not ask for a location click")
        elif not (isinstance(click, (tuple, list)) and len(click) == 3):
            errs.append(f"location: {click!r} is not (image_id, x, y)")
        else:
            image_id, x, y = click
            if image_id not in store.list_case_image_ids(case_id):
                errs.append(f"location: image {image_id!r} is not an image of this case")
            if not (_is_number(x) and _is_number(y) and x >= 0 and y >= 0):
                errs.append(f"location: ({x!r}, {y!r}) is not a model-space pixel position (x, y >= 0)")
    comment = answers.comment or ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        errs.append(f"comment: at most {MAX_COMMENT} characters of text")
    elif comment.strip() and not st.definition.questions.free_text:
        errs.append("comment: this study asks for no free text")
    if errs:
        raise AnswerError("Please check your answers:\n  - " + "\n  - ".join(errs))
    cx = click if click is not None else (None, None, None)
    return {"birads": int(answers.birads), "malignancy": float(answers.malignancy), "click_image_id": cx[0],
            "click_x": None if cx[1] is None else float(cx[1]), "click_y": None if cx[2] is None else float(cx[2]),
            "confidence": int(answers.confidence),
            "helpfulness": None if answers.helpfulness is None else int(answers.helpfulness),
            "comment": comment.strip()}


def submit_read(store, read_id: str, reader: str, answers: ReadAnswers, *, now: datetime | None = None) -> dict:
    """Validate and store a read's answers, once (``ReadLockedError`` on a second submit; nothing is
    lost or changed). Returns the stored read row."""
    r = _own_read(store, read_id, reader)
    if r["supersedes"] is not None:
        raise ReadingError("A correction is submitted when it is made; it cannot be submitted again.")
    st = load_study(store, r["study"])
    if st.status != "open":
        raise ReadingError(f"Study {st.name!r} is closed: no more reads are accepted.")
    values = check_answers(store, st, r["arm"], r["case_id"], answers)
    store.submit_read_row(read_id, values, actor=reader, now=now or utcnow())
    return store.get_read(read_id)


def correct_read(store, read_id: str, actor: str, answers: ReadAnswers, reason: str, *,
                 now: datetime | None = None) -> str:
    """Correct a submitted read: a new read row with the new answers supersedes it; both are kept.
    The reader of the read or a coordinator may correct; ``reason`` is required. Returns the new id."""
    r = store.get_read(read_id)
    user = store.get_user(actor)
    if actor != r["reader"] and (user is None or user["role"] != "coordinator"):
        raise ReadingError("Only the reader of a read or a study coordinator can correct it.")
    if not (reason or "").strip():
        raise AnswerError("A correction needs a reason (what was wrong).")
    st = load_study(store, r["study"])
    values = check_answers(store, st, r["arm"], r["case_id"], answers)
    new_id = uuid.uuid4().hex
    store.insert_correction(read_id=new_id, supersedes=read_id, answers=values, reason=reason.strip(), actor=actor,
                            now=now or utcnow())
    return new_id


# ----------------------------------------------------------------------------- questionnaire
def sus_score(items) -> float:
    """System Usability Scale score, 0-100 (Brooke 1996): odd items contribute answer - 1, even
    items 5 - answer, the sum times 2.5. ``items``: the 10 answers (1-5) in the standard order."""
    vals = list(items)
    if len(vals) != len(SUS_ITEMS) or not all(_is_int(v) and 1 <= v <= 5 for v in vals):
        raise AnswerError(f"The usability scale needs {len(SUS_ITEMS)} answers, each 1 to 5; got {vals!r}.")
    return 2.5 * sum((v - 1) if i % 2 == 0 else (5 - v) for i, v in enumerate(vals))


def submit_questionnaire(store, study: str | Study, reader: str, session_index: int, *, sus=None,
                         trust: dict | None = None, comment: str = "", now: datetime | None = None) -> dict:
    """Store the end-of-session questionnaire of a finished session, once. Returns the stored row."""
    st = _study(store, study)
    rows = [a for a in store.list_assignments(st.name, reader) if a["session_index"] == session_index]
    if not rows:
        raise NoAssignmentError(f"{reader!r} has no session {session_index + 1} in study {st.name!r}.")
    reads = _original_reads(store, st.name, reader)
    left = sum(1 for a in rows if reads.get(a["assignment_id"], {}).get("submitted_at") is None)
    if left:
        raise ReadingError(f"Session {session_index + 1} is not finished ({left} case{'s' if left > 1 else ''} left); "
                           "the questionnaire comes at its end.")
    q = st.definition.questionnaire
    errs = []
    score = None
    if q.sus:
        try:
            score = sus_score(sus if sus is not None else [])
        except AnswerError as exc:
            errs.append(str(exc))
    elif sus is not None:
        errs.append("This study asks no usability scale.")
    trust = dict(trust or {})
    missing = [t for t in q.trust if t not in trust]
    extra = [t for t in trust if t not in q.trust]
    if missing:
        errs.append("Please answer: " + "; ".join(missing))
    if extra:
        errs.append("Not a question of this study: " + "; ".join(extra))
    bad = [t for t, v in trust.items() if t in q.trust and not (_is_int(v) and 1 <= v <= 5)]
    if bad:
        errs.append("Answer 1 to 5: " + "; ".join(bad))
    if errs:
        raise AnswerError("Please check the questionnaire:\n  - " + "\n  - ".join(errs))
    store.insert_questionnaire(QuestionnaireRow(
        study=st.name, reader=reader, session_index=session_index, arm=rows[0]["arm"],
        sus_items=None if sus is None else [int(v) for v in sus], sus_score=score,
        trust_items={t: int(trust[t]) for t in q.trust}, comment=(comment or "").strip()), now=now or utcnow())
    return next(x for x in store.list_questionnaires(st.name)
                if x["reader"] == reader and x["session_index"] == session_index)



"""Questionnaire (a pilot-study reader's page): at the end of each session, the System Usability
Scale and the study's trust items (Likert 1-5), then what comes next: the washout, with the date
the next session opens, or the next session at once."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dashboard.study import SUS_ITEMS, load_study, reading
from dashboard.study.errors import AnswerError
from dashboard.study.reading import NextStep


@dataclass(frozen=True)
class QuestionnaireView:
    """The questions of the questionnaire due now (none when ``step.state`` is not "questionnaire")."""

    step: NextStep
    sus_items: tuple[str, ...]
    trust_items: tuple[str, ...]

    @property
    def due(self) -> bool:
        return self.step.state == "questionnaire"


def questionnaire_view(store, step: NextStep) -> QuestionnaireView:
    q = load_study(store, step.study).definition.questionnaire
    return QuestionnaireView(step, SUS_ITEMS if q.sus else (), tuple(q.trust))


def submit(store, view: QuestionnaireView, reader: str, *, sus: list, trust: dict, comment: str = "") -> NextStep:
    """Store the questionnaire of the finished session (``AnswerError`` lists what is missing) and
    return the reader's next step."""
    missing = [str(i + 1) for i, v in enumerate(sus or []) if v is None] if view.sus_items else []
    if missing:
        raise AnswerError("Please answer every usability statement: " + ", ".join(missing) + " left.")
    reading.submit_questionnaire(store, view.step.study, reader, view.step.session_index,
                                 sus=list(sus) if view.sus_items else None, trust=dict(trust), comment=comment)
    return reading.next_assignment(store, view.step.study, reader)


def opens_text(at: datetime | None) -> str:
    """"Monday 2 March 2026, 14:05 UTC" for the washout message."""
    return "" if at is None else f"{at:%A %-d %B %Y, %H:%M} UTC"


def next_text(step: NextStep) -> str:
    """What the reader is told after a questionnaire (or on this page when none is due)."""
    if step.state == "washout":
        return (f"Thank you. Your next session opens on {opens_text(step.available_at)}, after the washout. "
                "Please come back then and sign in again.")
    if step.state == "read":
        return "Thank you. Your next session is open now: go to Reading to start it."
    return step.message


def not_due_text(step: NextStep) -> str:
    """What the page says when no questionnaire is due (the reader came here on their own)."""
    if step.state == "read":
        return "No questionnaire is due now: it comes at the end of each session."
    return "No questionnaire is due now. " + step.message

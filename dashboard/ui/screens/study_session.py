"""What the two reader pages (Reading, Questionnaire) share: the studies a reader is assigned to,
the one being read, and the reader's next step in it (``dashboard.study.reading.next_assignment``).

Only the reader's own assignments are ever looked up: every query here is by the signed-in
username."""
from __future__ import annotations

from dataclasses import dataclass

from dashboard.study import reading
from dashboard.study.reading import NextStep


@dataclass(frozen=True)
class StudyChoice:
    """A study the reader has cases in."""

    name: str
    title: str
    status: str

    @property
    def label(self) -> str:
        return f"{self.title or self.name}" + ("" if self.status == "open" else f" ({self.status})")


def reader_studies(store, reader: str) -> list[StudyChoice]:
    """The studies with at least one case assigned to ``reader``, open ones first, oldest first."""
    out = [StudyChoice(r["name"], r["title"], r["status"]) for r in store.list_study_rows()
           if store.list_assignments(r["name"], reader)]
    return sorted(out, key=lambda c: c.status != "open")


def pick_study(choices: list[StudyChoice], wanted: str | None) -> StudyChoice | None:
    """The study the reader asked for if it is one of theirs, else their first (None: no study)."""
    for c in choices:
        if c.name == wanted:
            return c
    return choices[0] if choices else None


def next_step(store, study: str, reader: str) -> NextStep:
    """The reader's next step in ``study`` (read, questionnaire, washout, complete, closed)."""
    return reading.next_assignment(store, study, reader)


def progress_text(step: NextStep) -> str:
    """"3 of 24 cases submitted" for the reader's own progress."""
    return f"{step.done} of {step.total} cases submitted"

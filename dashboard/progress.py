"""The one progress protocol of every long job: ``progress(done, total, message)``.

Engine, data, evaluation and screen functions take ``progress: Progress | None``; the UI turns the
calls into an ``st.progress`` bar (``dashboard.ui.resources.progress``) and the command lines into
a tqdm bar (``tqdm_progress``). ``done`` and ``total`` count the job's own units (patches, images,
cases); ``total`` may be 0 when unknown.
"""
from __future__ import annotations

# defined in the lowest layer so that model_zoo's training speaks the same protocol
from model_zoo.progress import Progress, tqdm_progress

__all__ = ["Progress", "fraction", "report", "scaled", "tqdm_progress"]


def report(progress: Progress | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` when there is one (the jobs' optional callback)."""
    if progress is not None:
        progress(int(done), int(total), message)


def fraction(done: int, total: int) -> float:
    """done / total clipped to [0, 1]; 0 when the total is unknown."""
    return min(max(done / total, 0.0), 1.0) if total else 0.0


def scaled(progress: Progress | None, start: float, stop: float, total: int = 1000) -> Progress | None:
    """A sub-job's progress mapped into [start, stop] of its parent's ``total`` units."""
    if progress is None:
        return None

    def sub(done: int, sub_total: int, message: str = "") -> None:
        progress(int(round(total * (start + (stop - start) * fraction(done, sub_total)))), total, message)

    return sub

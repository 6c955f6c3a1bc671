"""The one progress protocol of every long job: ``progress(done, total, message)``.

Engine, data, evaluation and screen functions take ``progress: Progress | None``; the UI turns the
calls into an ``st.progress`` bar (``dashboard.ui.resources.progress``) and the command lines into
a tqdm bar (``tqdm_progress``). ``done`` and ``total`` count the job's own units (patches, images,
cases); ``total`` may be 0 when unknown.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from tqdm import tqdm


class Progress(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


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


@contextmanager
def tqdm_progress(desc: str, unit: str = "it") -> Iterator[Progress]:
    """A tqdm bar on the command line, fed by ``progress(done, total, message)`` calls."""
    bar = tqdm(total=0, desc=desc, unit=unit)

    def update(done: int, total: int, message: str = "") -> None:
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message[:40])
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()

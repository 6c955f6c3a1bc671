"""The one progress protocol of every long job, ``progress(done, total, message)``, and its tqdm bar.

It lives here, in the lowest layer, so that training (``model_zoo.train``) speaks it too;
``dashboard.progress`` re-exports both names with its helpers (``report``, ``scaled``).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from tqdm import tqdm


class Progress(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


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

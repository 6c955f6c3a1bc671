"""A small thread-safe LRU keyed by explicit inputs: no work is repeated on a rerun that did not
change them (image loads, lesion maps, attribution maps, unit matches).

Keys must name everything the result depends on (model card, weights SHA-256, layer, image
SHA-256, parameters), so a changed model never reuses stale numbers. Concurrent callers asking
for the same key wait for the first one instead of computing twice (a lock per key), whichever
session they come from. A foreground caller that waits for a key a head start is computing
raises that head start's model work to the foreground (``model_queue.Job.boost``), so a reader
never waits for it at background priority.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from dashboard.engine.model_queue import FOREGROUND, Job, background_thread, current_job


class Memo:
    def __init__(self, maxsize: int = 64):
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._computing: dict[Hashable, Job] = {}   # key -> the job computing it now
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value of ``key``; ``compute()`` runs once for it, whoever asks at the same time."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
            running = self._computing.get(key)
        if running is not None and current_job().priority == FOREGROUND:
            running.boost()  # a reader waits for this head start now
        with key_lock:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    return self._data[key]
                self._computing[key] = current_job()
            try:
                value = compute()
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            with self._lock:
                self.misses += 1
                self._data[key] = value
                self._data.move_to_end(key)
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
                self._key_locks.pop(key, None)
            return value

    def clear(self, predicate: Callable[[Hashable], bool] | None = None) -> None:
        with self._lock:
            for k in [k for k in self._data if predicate is None or predicate(k)]:
                del self._data[k]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class HeadStart:
    """Background work started at most once per key at a time: a head start for a ``Memo`` that a
    later foreground call would otherwise compute (and then waits for instead). The work must not
    call streamlit. It runs as a BACKGROUND job of the starting session (``model_queue``): its model
    passes wait while any reader's foreground work waits, unless a reader waits for its result.
    ``once``: a key whose work finished without error is never started again.
    Falsy when nothing is running."""

    def __init__(self, once: bool = False):
        self._once = once
        self._running: set[Hashable] = set()
        self._finished: set[Hashable] = set()
        self._busy: set[Hashable] = set()                 # slots with work running
        self._next: dict[Hashable, tuple] = {}            # slot -> the newest work waiting for it
        self._lock = threading.Lock()

    def start(self, key: Hashable, work: Callable[[], Any], *, done: Callable[[], bool] = lambda: False,
              name: str = "", slot: Hashable | None = None) -> threading.Thread | None:
        """Run ``work`` in a daemon thread unless ``key`` is running (or finished, with ``once``)
        or ``done()``; the thread when started, else None.

        ``slot``: at most one work of a slot runs at a time; a start while the slot is busy is kept
        (replacing an older kept one) and runs when the slot frees, so a burst of newer versions
        of one thing (e.g. an image's report under each new probe version) costs two runs, not one
        per version."""
        with self._lock:
            if key in self._running or key in self._finished or done():
                return None
            if slot is not None and slot in self._busy:
                self._next[slot] = (key, work, done, name)
                return None
            self._running.add(key)
            if slot is not None:
                self._busy.add(slot)

        def run():
            ok = False
            try:
                work()
                ok = True
            except Exception:  # noqa: BLE001 - only a head start: the foreground call redoes it and shows the error
                pass
            finally:
                with self._lock:
                    self._running.discard(key)
                    if ok and self._once:
                        self._finished.add(key)
                    if slot is not None:
                        self._busy.discard(slot)
                    waiting = self._next.pop(slot, None) if slot is not None else None
                if waiting is not None:
                    k, w, d, n = waiting
                    self.start(k, w, done=d, name=n, slot=slot)

        return background_thread(run, name=name or f"head-start-{key!r}"[:60])

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)

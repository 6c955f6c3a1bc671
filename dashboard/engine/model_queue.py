"""One queue in front of a shared model: whose work runs next, and which work runs together.

A Streamlit server keeps ONE model object for every session, and a model runs one pass at a time
(hooks and train/eval state are per model, see ``model_state``). ``ModelQueue`` is that one-at-a-time
rule as a re-entrant lock with a waiting line (``lock_for(model)`` returns the model's queue, so
every ``with lock_for(model):`` in the engine queues here):

* **foreground before background**: work a reader waits for (a script run) goes before head
  starts computed in background threads (``background_thread``). A head start that a foreground
  caller is waiting for is raised to the foreground (``Job.boost``, done by ``dashboard.ui.memo``).
* **fair between sessions**: among waiters of one priority, the owner served longest ago goes
  first (round robin over owners), and one owner's requests go in the order of their jobs, then of
  arrival (FIFO): a session's earlier head start is not overtaken by its later one.
* **batched where shapes allow**: ``batch(key, item, run_batch)`` puts an item in a line of items
  with the same key (e.g. patches of one size for one layer); whoever's turn comes runs every
  waiting item of its key in one call, and the others get their results without a turn.

The queue is re-entrant: a thread holding it takes it again at once (engine calls nest).
Who is asking comes from a context variable (``job``/``current_job``); without one, a caller is a
foreground job owned by its thread. No streamlit here.
"""
from __future__ import annotations

import contextvars
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

FOREGROUND = 0
BACKGROUND = 1
#: Waiters re-check their turn at least this often, s (a safety net: every change notifies them).
_RECHECK_S = 0.25


_JOB_SEQ = itertools.count()


@dataclass(eq=False)
class Job:
    """Who asks for the model: an ``owner`` (a session; default the thread) and a priority class,
    which a waiting foreground caller may raise (``boost``). ``seq`` orders one owner's jobs: an
    earlier job's requests go first (a session's head starts run in the order they were started)."""

    owner: Hashable
    priority: int = FOREGROUND
    seq: int = field(default_factory=lambda: next(_JOB_SEQ))
    _waiting_on: set = field(default_factory=set, repr=False)

    def boost(self) -> None:
        """Run this job's model work as foreground work from now on (a reader waits for it)."""
        if self.priority == FOREGROUND:
            return
        self.priority = FOREGROUND
        for queue in list(self._waiting_on):
            queue._wake()


_JOB: contextvars.ContextVar[Job | None] = contextvars.ContextVar("conceptlens_model_job", default=None)


def current_job() -> Job:
    """The job of the calling context: the one set by ``job``, else a foreground job of this thread."""
    j = _JOB.get()
    return j if j is not None else Job(owner=("thread", threading.get_ident()))


def act_as(owner: Hashable) -> None:
    """From now on in the calling context (e.g. the thread running one session's script), model work
    is a foreground job of ``owner``: the session, not the thread, takes its turn in the queue."""
    current = _JOB.get()
    if current is None or current.owner != owner or current.priority != FOREGROUND:
        _JOB.set(Job(owner=owner))


@contextmanager
def job(owner: Hashable | None = None, priority: int = FOREGROUND) -> Iterator[Job]:
    """Run the body as one job (``owner`` default: the current job's owner)."""
    j = Job(owner=current_job().owner if owner is None else owner, priority=priority)
    token = _JOB.set(j)
    try:
        yield j
    finally:
        _JOB.reset(token)


def background_thread(work: Callable[[], Any], *, name: str) -> threading.Thread:
    """Start ``work`` in a daemon thread as a BACKGROUND job of the caller's owner, with the caller's
    context variables. Returns the started thread."""
    owner = current_job().owner
    ctx = contextvars.copy_context()

    def run():
        with job(owner, BACKGROUND):
            work()

    thread = threading.Thread(target=ctx.run, args=(run,), name=name, daemon=True)
    thread.start()
    return thread


@dataclass(eq=False)
class _Ticket:
    job: Job
    seq: int


@dataclass(eq=False)
class _Item:
    item: Any
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class ModelQueue:
    """A re-entrant lock whose waiting line is ordered by priority, then round robin over owners,
    then arrival; with ``batch`` for work that several callers can share one pass for.

    Use it as ``threading.RLock``: ``with queue:``, ``acquire(blocking, timeout)``, ``release()``.
    ``stats`` counts turns, batches and batched items (for tests and benchmarks)."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._holder: int | None = None
        self._depth = 0
        self._waiting: list[_Ticket] = []
        self._seq = itertools.count()
        self._turns = itertools.count()
        self._served: dict[Hashable, int] = {}   # owner -> the turn it was last given
        self._pending: dict[Hashable, list[_Item]] = {}
        self.stats: Counter = Counter()

    # ------------------------------------------------------------ the lock
    def _next(self) -> _Ticket | None:
        if not self._waiting:
            return None
        return min(self._waiting, key=self._order)

    def _order(self, t: _Ticket) -> tuple:
        """Foreground first; then the owner served longest ago; then the owner's earliest job; then arrival."""
        return t.job.priority, self._served.get(t.job.owner, -1), t.job.seq, t.seq

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _take(self, me: int, ticket: _Ticket | None, j: Job) -> None:
        if ticket is not None:
            self._waiting.remove(ticket)
            j._waiting_on.discard(self)
        self._holder, self._depth = me, 1
        self._served[j.owner] = next(self._turns)
        self.stats["turns"] += 1
        self.stats["turns_background" if j.priority == BACKGROUND else "turns_foreground"] += 1

    def _acquire(self, blocking: bool = True, timeout: float = -1, cancel: Callable[[], bool] | None = None) -> bool:
        me = threading.get_ident()
        j = current_job()
        with self._cv:
            if self._holder == me:
                self._depth += 1
                return True
            if self._holder is None and not self._waiting:
                self._take(me, None, j)
                return True
            if not blocking:
                return False
            ticket = _Ticket(j, next(self._seq))
            self._waiting.append(ticket)
            j._waiting_on.add(self)
            remaining = None if timeout is None or timeout < 0 else float(timeout)
            while True:
                if cancel is not None and cancel():
                    break
                if self._holder is None and self._next() is ticket:
                    self._take(me, ticket, j)
                    return True
                if remaining is not None and remaining <= 0:
                    break
                wait = _RECHECK_S if remaining is None else min(_RECHECK_S, remaining)
                self._cv.wait(wait)
                if remaining is not None:
                    remaining -= wait
            self._waiting.remove(ticket)
            j._waiting_on.discard(self)
            self._cv.notify_all()  # the line changed: the next one may go
            return False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._acquire(blocking, timeout)

    def release(self) -> None:
        with self._cv:
            if self._holder != threading.get_ident():
                raise RuntimeError("cannot release a model queue turn this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._holder = None
                self._cv.notify_all()

    def __enter__(self) -> ModelQueue:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def waiting(self) -> list[tuple[Hashable, int]]:
        """(owner, priority) of the waiters, in the order they would be served now."""
        with self._cv:
            line = sorted(self._waiting, key=self._order)
            return [(t.job.owner, t.job.priority) for t in line]

    # ------------------------------------------------------------ batches
    def batch(self, key: Hashable, item: Any, run_batch: Callable[[Sequence[Any]], Sequence[Any]], *,
              max_batch: int = 16) -> Any:
        """``run_batch([item, ...])[i]`` for this ``item``, computed in one call with the items other
        callers are waiting to run under the same ``key`` (up to ``max_batch``). The call runs in the
        turn of whichever of them is served first; the others return without a turn of their own.
        If a batch of several items fails, each of its items is run alone, so one bad item fails
        only its own caller."""
        mine = _Item(item)
        with self._cv:
            self._pending.setdefault(key, []).append(mine)
        if not self._acquire(cancel=lambda: mine.done):
            return self._result(mine)  # another caller's batch answered it
        try:
            with self._cv:
                line = self._pending.get(key, [])
                group = [mine] + [e for e in line if e is not mine and not e.done][:max_batch - 1] \
                    if not mine.done else []
                for e in group:
                    line.remove(e)
                if not line:
                    self._pending.pop(key, None)
            if group:
                self._run_group(group, run_batch)
        finally:
            self.release()
        return self._result(mine)

    def _run_group(self, group: list[_Item], run_batch) -> None:
        try:
            results = list(run_batch([e.item for e in group]))
            if len(results) != len(group):
                raise RuntimeError(f"a batch of {len(group)} items gave {len(results)} results")
            answers = [(r, None) for r in results]
        except Exception as exc:  # noqa: BLE001 - the items' own errors go to their callers
            if len(group) == 1:
                answers = [(None, exc)]
            else:
                answers = []
                for e in group:
                    try:
                        answers.append((run_batch([e.item])[0], None))
                    except Exception as one:  # noqa: BLE001
                        answers.append((None, one))
        with self._cv:
            for e, (r, err) in zip(group, answers):
                e.result, e.error, e.done = r, err, True
            self.stats["batches"] += 1
            self.stats["batched_items"] += len(group)
            self._cv.notify_all()

    @staticmethod
    def _result(e: _Item) -> Any:
        if e.error is not None:
            raise e.error
        return e.result

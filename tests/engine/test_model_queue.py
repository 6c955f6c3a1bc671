"""The model's queue: foreground before background, sessions in turn, one owner's requests in order,
batches shared between callers; re-entrant like the lock it replaces."""
from __future__ import annotations

import threading
import time

import pytest

from dashboard.engine.model_queue import BACKGROUND, FOREGROUND, ModelQueue, background_thread, current_job, job
from dashboard.engine.model_state import lock_for
from dashboard.testing.tinymodels import make_model


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def queued(q: ModelQueue, owner, order: list, *, priority=FOREGROUND) -> threading.Thread:
    """A thread that waits for a turn as ``owner`` and records it in ``order`` when served."""
    def run():
        with job(owner, priority), q:
            order.append(owner)

    n = len(q.waiting())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: len(q.waiting()) == n + 1)  # in line before the next one comes
    return t


def held(q: ModelQueue):
    """Hold the queue in another thread until the returned event is set."""
    go, taken = threading.Event(), threading.Event()

    def run():
        with job("holder"), q:
            taken.set()
            go.wait(10)

    threading.Thread(target=run, daemon=True).start()
    taken.wait(10)
    return go


def test_lock_for_is_the_models_queue_and_reentrant():
    model = make_model("resnet10t", seed=5)
    q = lock_for(model)
    assert isinstance(q, ModelQueue) and lock_for(model) is q
    with q:
        with q:  # engine calls nest
            assert q.acquire(blocking=False)
            q.release()
    go = held(q)
    assert not q.acquire(blocking=False)  # another thread holds it
    assert not q.acquire(timeout=0.05)
    assert q.waiting() == []  # a timed-out waiter leaves the line
    go.set()
    assert q.acquire(timeout=5)
    q.release()
    with pytest.raises(RuntimeError):
        q.release()


def test_foreground_before_background_and_sessions_in_turn():
    q, order = ModelQueue(), []
    go = held(q)
    threads = [queued(q, "prefetch", order, priority=BACKGROUND),
               queued(q, "A", order), queued(q, "A", order), queued(q, "A", order), queued(q, "B", order)]
    assert q.waiting()[0] == ("A", FOREGROUND) and q.waiting()[-1] == ("prefetch", BACKGROUND)
    go.set()
    for t in threads:
        t.join(10)
    # FIFO would be prefetch, A, A, A, B: the background head start goes last, B gets the second turn
    assert order == ["A", "B", "A", "A", "prefetch"]
    assert q.stats["turns_background"] == 1


def test_a_boosted_background_job_goes_before_later_foreground_work():
    q, order = ModelQueue(), []
    go = held(q)
    started = {}

    def prefetch():
        started["job"] = current_job()
        with q:
            order.append("prefetch")

    with job("A"):
        t = background_thread(prefetch, name="prefetch")
    wait_for(lambda: len(q.waiting()) == 1)
    assert started["job"].priority == BACKGROUND and started["job"].owner == "A"  # the starter's session
    other = queued(q, "C", order)
    started["job"].boost()  # a reader now waits for what the head start computes
    assert q.waiting()[0] == ("A", FOREGROUND)
    go.set()
    t.join(10)
    other.join(10)
    assert order == ["prefetch", "C"]


def test_batch_runs_the_waiting_items_of_one_key_in_one_call():
    q, calls = ModelQueue(), []

    def run(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [f"act({i})" for i in items]

    go = held(q)
    out, errors = {}, {}

    def ask(name, key="size-224"):
        try:
            out[name] = q.batch(key, name, run)
        except ValueError as exc:
            errors[name] = str(exc)

    threads = []
    for i, name in enumerate(["p1", "p2", "p3"]):
        threads.append(threading.Thread(target=ask, args=(name,), daemon=True))
        threads[-1].start()
        wait_for(lambda i=i: len(q.waiting()) == i + 1)
    other = threading.Thread(target=ask, args=("q1", "size-512"), daemon=True)
    other.start()
    wait_for(lambda: len(q.waiting()) == 4)
    go.set()
    for t in threads + [other]:
        t.join(10)
    assert out == {"p1": "act(p1)", "p2": "act(p2)", "p3": "act(p3)", "q1": "act(q1)"}
    assert sorted(map(sorted, calls)) == [["p1", "p2", "p3"], ["q1"]]  # one pass per key
    assert q.stats["batches"] == 2 and q.stats["batched_items"] == 4

    # a failing item fails only its own caller
    calls.clear()
    go = held(q)
    threads = []
    for i, name in enumerate(["ok", "bad"]):
        threads.append(threading.Thread(target=ask, args=(name,), daemon=True))
        threads[-1].start()
        wait_for(lambda i=i: len(q.waiting()) == i + 1)
    go.set()
    for t in threads:
        t.join(10)
    assert out["ok"] == "act(ok)" and errors == {"bad": "bad item"}


def test_one_sessions_earlier_head_start_goes_before_its_later_one():
    """Opening a patch starts the drawing's head start, then the Report's: whichever asks the model
    first, the drawing's is served first."""
    q, order = ModelQueue(), []
    go = held(q)
    with job("A", BACKGROUND) as first, job("A", BACKGROUND) as second:
        assert first.seq < second.seq

    def run(j, name):
        with job(j.owner, j.priority) as mine:
            mine.seq = j.seq
            with q:
                order.append(name)

    late = threading.Thread(target=run, args=(second, "report"), daemon=True)
    late.start()
    wait_for(lambda: len(q.waiting()) == 1)
    early = threading.Thread(target=run, args=(first, "drawing"), daemon=True)
    early.start()
    wait_for(lambda: len(q.waiting()) == 2)
    go.set()
    late.join(10)
    early.join(10)
    assert order == ["drawing", "report"]


"""Several sessions at once on the app's one process-wide ``Caches`` (``resources.get_caches``): work on
one image is computed once whoever asks, and a reader waiting for a head start raises it to the
foreground of the model's queue. Real store, real DICOM, a tiny real timm model, real threads."""
from __future__ import annotations

import threading
import time

import pytest

from dashboard.data.store import Store
from dashboard.engine import report
from dashboard.engine.model_queue import BACKGROUND, FOREGROUND, job
from dashboard.engine.model_state import lock_for
from dashboard.testing import app_data
from dashboard.ui import canvas, resources
from dashboard.ui.context import build_context, load_model
from dashboard.ui.memo import HeadStart
from dashboard.ui.screens import label as lb
from dashboard.ui.types import PatchRef
from dashboard.ui.work import concepts as cx
from dashboard.ui.work.evidence import _evidence_key, image_evidence, prefetch_evidence

IMAGE = "SYN-0001-LCC"


@pytest.fixture
def sessions(settings):
    """Two sessions' contexts as ``resources.get_context`` builds them: one store, one model, and the
    app's process-wide caches (emptied of evidence, so this test's image is computed here)."""
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    app_data.make_tiny_card(settings)
    loaded = load_model(app_data.TINY_CARD, settings.user_cards_dir, "cpu")
    assert loaded.error is None
    caches = resources.get_caches()
    assert resources.get_caches() is caches  # st.cache_resource: one object for every session
    caches.evidence.clear()
    yield [build_context(settings, store, loaded, caches) for _ in range(2)]
    store.close()


@pytest.fixture
def counted(monkeypatch):
    """Count the engine's evidence computations (the real function still runs)."""
    calls = []
    real = report.compute_image_evidence

    def spy(*args, **kwargs):
        calls.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "compute_image_evidence", spy)
    return calls


def test_two_sessions_asking_for_one_images_evidence_at_once_compute_it_once(sessions, counted):
    a, b = sessions
    assert a.caches is b.caches
    row = a.store.get_image(IMAGE)
    misses = a.caches.evidence.misses
    start, out = threading.Barrier(2), {}

    def ask(name, ctx):
        with job(name):  # each session is its own owner in the model's queue
            start.wait()
            out[name] = image_evidence(ctx, row)

    threads = [threading.Thread(target=ask, args=(n, c)) for n, c in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert out["a"] is out["b"]
    assert len(counted) == 1 and a.caches.evidence.misses == misses + 1
    assert image_evidence(b, row) is out["a"] and len(counted) == 1  # a later ask is a cache hit


def test_a_reader_waiting_for_another_sessions_head_start_raises_it_to_the_foreground(sessions, counted):
    a, b = sessions
    row = a.store.get_image(IMAGE)
    queue = lock_for(a.model)
    go, taken = threading.Event(), threading.Event()

    def hold():  # a third session's long model pass
        with job("c"), queue:
            taken.set()
            go.wait(60)

    threading.Thread(target=hold, daemon=True).start()
    taken.wait(10)
    with job("a"):
        assert prefetch_evidence(a, IMAGE) is True  # session a's head start, in the background
    deadline = time.monotonic() + 30
    while ("a", BACKGROUND) not in queue.waiting():  # it waits for the model at background priority
        assert time.monotonic() < deadline, queue.waiting()
        time.sleep(0.01)
    out = {}

    def read():
        with job("b"):
            out["b"] = image_evidence(b, row)  # waits for a's head start instead of computing again

    reader = threading.Thread(target=read)
    reader.start()
    while ("a", FOREGROUND) not in queue.waiting():  # b's wait raised a's head start
        assert time.monotonic() < deadline, queue.waiting()
        time.sleep(0.01)
    go.set()
    reader.join(120)
    assert out["b"] is image_evidence(a, row)
    assert len(counted) == 1 and _evidence_key(a, row) in a.caches.evidence


def test_a_second_click_on_save_stores_the_drawing_once(sessions):
    """Save's callback may run twice for one drawing (a double click queued behind the first): the
    patch's SaveRecord finds its canvas objects saved and stores nothing."""
    ctx = sessions[0]
    cx.compute_stats(ctx, 120)
    view = lb.load_patch(ctx, PatchRef(IMAGE, 20, 70, 64))
    record = lb.SaveRecord()
    obj = {"type": "rect", "left": 8, "top": 8, "width": 150, "height": 150, "scaleX": 1, "scaleY": 1}
    json_data = {"objects": [obj]}
    fresh, keys = lb.unsaved_objects(json_data, record)
    drawings = lb.drawings_from_canvas(view, fresh, None)
    m = lb.match(ctx, view, drawings)
    first = lb.save_once(ctx, record, keys, view, m, "mass", "Dr Twice")
    second = lb.save_once(ctx, record, keys, view, m, "mass", "Dr Twice")
    assert first is not None and second is None
    assert [a.reader for a in ctx.store.list_annotations(image_id=IMAGE)] == ["Dr Twice"]
    # the saved outline stays on the canvas but is no longer a drawing; a new one next to it is
    assert lb.unsaved_objects(json_data, record) == ({"objects": []}, ())
    new = {**obj, "left": 200, "top": 200, "width": 100, "height": 100}
    fresh, keys = lb.unsaved_objects({"objects": [obj, new]}, record)
    assert fresh["objects"] == [new] and len(keys) == 1
    (d,) = lb.drawings_from_canvas(view, fresh, None)
    assert isinstance(d, canvas.Drawing) and d.shape == "rect"
    assert "Saved 'mass': labeled" in lb.saved_message(record.last)


def test_a_burst_of_report_versions_prepares_one_at_a_time_and_the_newest_last():
    hs, ran = HeadStart(once=True), []
    gate = threading.Event()
    first = hs.start("v1", lambda: (gate.wait(10), ran.append("v1")), slot="image")
    assert first is not None
    for v in ("v2", "v3", "v4"):  # Saves while v1 is being prepared
        assert hs.start(v, lambda v=v: ran.append(v), slot="image") is None
    assert hs.start("other", lambda: ran.append("other"), slot="other image") is not None  # its own slot
    gate.set()
    deadline = time.monotonic() + 10
    while (hs or "v4" not in ran) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [v for v in ran if v != "other"] == ["v1", "v4"]  # v2 and v3 were superseded
    assert hs.start("v4", lambda: ran.append("again"), slot="image") is None  # finished once

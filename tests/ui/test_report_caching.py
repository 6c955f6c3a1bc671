"""The Report's slow parts are computed once: the integrated-gradients decomposition of an image's
report patch (probe- and label-independent) once per image, in memory and on disk (a restarted
server reads it back), and the drawn patches a probe retrain reads once per patch. Real store, real
DICOM, a tiny real timm model whose concept layer (layer3) is an inner layer, real threads."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch

from dashboard.data.store import Store
from dashboard.engine import report
from dashboard.testing import app_data
from dashboard.ui import canvas, warmup
from dashboard.ui.caches import Caches
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import report as rp
from dashboard.ui.types import PatchRef
from dashboard.ui.work import concepts as cx
from dashboard.ui.work.evidence import image_decomposition
from dashboard.ui.work.probe_versions import prepare_drawn_patches

IMAGE = "SYN-0001-LCC"
INNER = "tiny-inner"


def inner_card(settings) -> None:
    """The tiny card with its concept layer one block before the pool (an inner layer)."""
    path = app_data.make_tiny_card(settings, name=INNER)
    text = path.read_text()
    assert 'default_layer = "layer4"' in text
    path.write_text(text.replace('default_layer = "layer4"', 'default_layer = "layer3"'))


@pytest.fixture
def inner(settings):
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    inner_card(settings)
    loaded = load_model(INNER, settings.user_cards_dir, "cpu")
    assert loaded.error is None and report.needs_decomposition(loaded.card)
    ctx = build_context(settings, store, loaded)
    cx.compute_stats(ctx, 120)
    yield ctx
    store.close()


@pytest.fixture
def counted(monkeypatch):
    """Count the engine's integrated-gradients runs (the real function still runs)."""
    calls = []
    real = report.layer_logit_decomposition

    def spy(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.2)  # long enough for a second caller to arrive while the first computes
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "layer_logit_decomposition", spy)
    return calls


def save_drawing(ctx, x0: int, side: int):
    """Save a box drawing with retrain; its IoUs made to pass the labeling rule for a few units
    (a random network's units rarely fit a box), so the report has labeled units to give parts to."""
    view = lb.load_patch(ctx, PatchRef(IMAGE, x0, 60, 64))
    d = canvas.Drawing("rect", ((4, 4), (4 + side, 4), (4 + side, 4 + side), (4, 4 + side)))
    m = lb.match(ctx, view, [d])
    ious = np.random.default_rng(x0 + side).uniform(0, m.tau * 1.5, len(m.ious))
    res = lb.save(ctx, view, dataclasses.replace(m, ious=ious), "mass", "Dr Test", retrain=True)
    assert res.retrain_error is None and res.n_labeled > 0
    return res


def logit_parts(view) -> dict:
    return {r["concept"]: r["logit part"] for r in view.concepts}


def test_the_decomposition_is_computed_once_per_image_and_read_back_after_a_restart(inner, counted, settings):
    ctx = inner
    save_drawing(ctx, 20, 30)
    first = rp.load_report(ctx, "SYN-0001", IMAGE)
    assert first.probe.version == 1 and len(counted) >= 1  # steps double until it converges: one run or more
    runs = len(counted)
    assert any("integrated gradients" in n for n in first.notes)
    files = list((settings.cache_dir / "decompositions").rglob("*.safetensors"))
    assert len(files) == 1
    # a new drawing: new unit labels and a new probe version, the same decomposition
    save_drawing(ctx, 100, 20)
    second = rp.load_report(ctx, "SYN-0001", IMAGE)
    assert second.probe.version == 2 and len(counted) == runs
    assert second.concepts and logit_parts(second)["mass"] is not None
    # a restarted server: a new model object and empty caches read it from the data dir
    loaded = load_model(INNER, settings.user_cards_dir, "cpu")
    fresh = build_context(settings, ctx.store, loaded, Caches())
    cold = rp.load_report(fresh, "SYN-0001", IMAGE)
    assert len(counted) == runs and cold.probe.version == 2
    assert logit_parts(cold) == logit_parts(second)
    assert [r["attribution share"] for r in cold.concepts] == [r["attribution share"] for r in second.concepts]
    row = ctx.store.get_image(IMAGE)
    a, b = image_decomposition(ctx, row), image_decomposition(fresh, row)
    torch.testing.assert_close(a.attribution, b.attribution, rtol=0, atol=0)
    assert (a.logit, a.baseline_logit, a.delta, a.n_steps) == (b.logit, b.baseline_logit, b.delta, b.n_steps)


def test_two_sessions_asking_for_the_decomposition_at_once_compute_it_once(inner, counted, settings):
    caches = Caches()
    sessions = [build_context(settings, inner.store, load_model(INNER, settings.user_cards_dir, "cpu"), caches)
                for _ in range(2)]
    row = inner.store.get_image(IMAGE)
    out, gate = {}, threading.Barrier(2)

    def ask(i):
        gate.wait()
        out[i] = image_decomposition(sessions[i], row)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out[0] is out[1] and out[0] is not None
    first = len(counted)
    assert first >= 1 and caches.decompositions.misses == 1
    # only the first step count's run, and its doublings, by one thread
    assert len(set(counted)) == 1


def test_a_retrain_reads_each_drawn_patch_once(inner):
    ctx = inner
    save_drawing(ctx, 20, 30)
    ctx.caches.model_images.clear()  # as when more images were drawn on than the image cache holds
    misses = ctx.caches.model_images.misses
    save_drawing(ctx, 20, 24)  # the same patch: its retrain reads the first drawing's patch again
    assert ctx.caches.model_images.misses == misses  # from the drawn patches, not a new decode
    # a fresh server's head start reads them all before the first Save
    fresh = build_context(ctx.settings, ctx.store, load_model(INNER, ctx.settings.user_cards_dir, "cpu"), Caches())
    assert prepare_drawn_patches(fresh) == 2 and len(fresh.caches.drawn_patches) == 1
    np.testing.assert_array_equal(fresh.caches.drawn_patches.get(next(iter(fresh.caches.drawn_patches._data)),
                                                                 lambda: None),
                                  ctx.caches.drawn_patches.get(next(iter(ctx.caches.drawn_patches._data)),
                                                               lambda: None))


def test_the_warm_up_leaves_the_decompositions_of_the_most_suspicious_images_on_disk(inner, counted, settings):
    ctx = inner
    app_data.score(ctx.store, ctx.card_name, ctx.weights_sha, {IMAGE: 0.9, "SYN-0002-RCC": 0.4, "SYN-0001-RCC": 0.1})
    assert warmup.step_decompositions(ctx, limit=2) == 2  # the two highest scores
    assert len(list((settings.cache_dir / "decompositions").rglob("*.safetensors"))) == 2
    runs = len(counted)
    # a restarted server: the Report's decomposition of those images is read, not computed
    fresh = build_context(settings, ctx.store, load_model(INNER, settings.user_cards_dir, "cpu"), Caches())
    assert image_decomposition(fresh, ctx.store.get_image(IMAGE)) is not None and len(counted) == runs
    image_decomposition(fresh, ctx.store.get_image("SYN-0001-RCC"))  # left out by the limit: computed
    assert len(counted) > runs
    snap = warmup.run_warmup(ctx, warmup.WarmUp(("decompositions",))).snapshot()["decompositions"]
    assert snap.state == "done" and snap.message == "3 image(s)"


def test_before_the_first_save_the_label_page_prepares_only_the_evidence(inner):
    ctx = inner
    save_drawing(ctx, 20, 30)  # probe v1 exists: a report could be prepared
    fresh = build_context(ctx.settings, ctx.store, load_model(INNER, ctx.settings.user_cards_dir, "cpu"), Caches())
    assert lb.prepare_report(fresh, IMAGE, saved=False) is True  # the evidence's head start
    assert not fresh.caches.report_head_start and fresh.caches.reports.misses == 0
    assert not any(t.name.startswith("report-") for t in threading.enumerate())
    assert lb.prepare_report(fresh, IMAGE) is True  # after a Save: the report under the new version too
    assert any(t.name == f"report-{IMAGE}-v1" for t in threading.enumerate()) or fresh.caches.reports.misses == 1
    deadline = time.monotonic() + 300  # the head starts finish before the store closes
    while (fresh.caches.evidence_head_start or fresh.caches.report_head_start) and time.monotonic() < deadline:
        time.sleep(0.1)

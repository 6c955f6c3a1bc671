"""An image's model evidence for its concept report: the probe-independent part (best patch, its
unit activations and logits, the concept layer's whole-image feature map, the attribution map, and
the logit's decomposition at the concept layer), computed once per model, image and method and
reused by every probe version; and its head start in a background thread while the reader labels."""
from __future__ import annotations

from collections.abc import Callable

from dashboard.engine import report
from dashboard.imaging import crop_patch
from dashboard.ui.context import AppContext
from dashboard.ui.work.concepts import layer_of
from dashboard.ui.work.images import attribution_for, lesion_map_for, model_image, model_spacing

#: Attribution method of the report's evidence shares (fast on a whole image on 2 CPU cores).
REPORT_METHOD = "gradcam"


def _evidence_key(ctx: AppContext, row: dict) -> tuple:
    return (ctx.card_name, ctx.weights_sha, layer_of(ctx), row["sha256"], model_spacing(ctx), REPORT_METHOD)


def image_evidence(ctx: AppContext, row: dict):
    """The probe-independent part of an image's report (``report.compute_image_evidence``), cached.

    The candidate patches are the lesion map's most suspicious ones (already scored exactly when
    the case was read), and the attribution is the Read page's cached whole-image map, so nothing
    the Read page computed is computed again."""
    layer = layer_of(ctx)

    def compute():
        img, mask, _ = model_image(ctx, row)
        pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"])
        tops = pred["top_patches"] if pred and pred["top_patches"] else lesion_map_for(ctx, row["image_id"]).top_patches
        tiles = [(int(t[0]), int(t[1])) for t in tops]
        att = attribution_for(ctx, row["image_id"], REPORT_METHOD).map
        return report.compute_image_evidence(
            ctx.model, ctx.card, img, layers=[layer],
            config=report.ReportConfig(attribution_method=REPORT_METHOD, device=ctx.device),
            inputs=report.ReportInputs(mask=mask, tiles=tiles, tile_source="the lesion map's most suspicious patches",
                                       attribution_map=att))

    return ctx.caches.evidence.get(_evidence_key(ctx, row), compute)


def report_config(ctx: AppContext, **kw) -> report.ReportConfig:
    """The engine's report config of the app: its device, and the data dir's cache for the
    decompositions (kept across server restarts)."""
    return report.ReportConfig(device=ctx.device, cache_dir=ctx.settings.cache_dir, **kw)


def image_decomposition(ctx: AppContext, row: dict):
    """The integrated-gradients decomposition of the image's report patch (the evidence's best
    tile) at the card's concept layer, or None when the card's head is linear there (cached in
    memory, and on disk under the data dir's cache: a restarted server reads it back).

    It depends on the model, the image and the target class only: every probe version and every
    new drawing reuses it (the unit labels only group its per-unit parts)."""
    if not report.needs_decomposition(ctx.card):
        return None
    ev = image_evidence(ctx, row)
    key = _evidence_key(ctx, row) + ("decomposition", ev.best_tile, ev.target)

    def compute():
        img, _, _ = model_image(ctx, row)
        return report.compute_decomposition(ctx.model, ctx.card, crop_patch(img, *ev.best_tile, ctx.card.patch_size),
                                            ev.target, report_config(ctx))

    return ctx.caches.decompositions.get(key, compute)


def _evidence_done(ctx: AppContext, row: dict) -> bool:
    if _evidence_key(ctx, row) not in ctx.caches.evidence:
        return False
    if not report.needs_decomposition(ctx.card):
        return True
    ev = image_evidence(ctx, row)
    return _evidence_key(ctx, row) + ("decomposition", ev.best_tile, ev.target) in ctx.caches.decompositions


def prefetch_evidence(ctx: AppContext, image_id: str, *, after: Callable[[], object] | None = None) -> bool:
    """Start computing an image's report evidence and its logit decomposition in a background
    thread (once), so the Report after a Save only does the probe's part. Returns True when a thread was started.

    after: what the thread waits for first (e.g. the open patch's unit masks, which the reader's
    first drawing needs sooner: the evidence's long model passes then never hold the model while
    that drawing waits).

    The thread only calls ``image_evidence`` (no streamlit); a Report that asks for the same
    image meanwhile waits for it instead of computing it twice (``Memo``)."""
    if not ctx.model_ready:
        return False
    row = ctx.store.get_image(image_id)
    key = _evidence_key(ctx, row)

    def work():
        if after is not None:
            after()
        image_evidence(ctx, row)
        image_decomposition(ctx, row)

    return ctx.caches.evidence_head_start.start(key, work, done=lambda: _evidence_done(ctx, row),
                                                name=f"evidence-{image_id}") is not None

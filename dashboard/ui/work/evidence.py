"""An image's model evidence for its concept report: the probe-independent part (best patch, its
unit activations and logits, the concept layer's whole-image feature map, the attribution map),
computed once per model, image and method and reused by every probe version; and its head start
in a background thread while the reader labels."""
from __future__ import annotations

from collections.abc import Callable

from dashboard.engine import report
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


def prefetch_evidence(ctx: AppContext, image_id: str, *, after: Callable[[], object] | None = None) -> bool:
    """Start computing an image's report evidence in a background thread (once), so the Report
    after a Save only does the probe's part. Returns True when a thread was started.

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

    return ctx.caches.evidence_head_start.start(key, work, done=lambda: key in ctx.caches.evidence,
                                                name=f"evidence-{image_id}") is not None

"""Where to draw next in the app: the engine's suggestions (``engine.suggestions``) over a set of
store images under the newest probe version, cached per probe version.

Candidates are each image's lesion-map patches and a grid of labeling patches over its breast;
novelty counts on the images the model flags (score at or above the card's operating point). The
concept layer's features of a whole image are computed once per image and weights (one partial
pass through the network, under the model's lock); a new probe version, drawing or unit label
re-ranks them without another pass.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from dashboard.engine import suggestions as sg
from dashboard.engine.activations import compute_activations
from dashboard.engine.model_state import lock_for
from dashboard.ui.context import AppContext
from dashboard.ui.types import operating_threshold
from dashboard.ui.work.concepts import find_stats, layer_of
from dashboard.ui.work.images import lesion_map_for, model_image, model_spacing, patch_size
from dashboard.ui.work.probe_versions import load_probe_version, probe_info, probe_key

#: Suggestions shown by default.
LIMIT = 8


def image_features(ctx: AppContext, row: dict) -> torch.Tensor:
    """(C, h, w) features of the card's concept layer over a whole model-space image (cached)."""
    ctx.require_model()
    layer = layer_of(ctx)

    def compute():
        img, _, _ = model_image(ctx, row)
        x = torch.as_tensor(np.asarray(ctx.card.preprocess(img[None])), dtype=torch.float32)  # (1, 3, H, W)
        with lock_for(ctx.model):
            return compute_activations(ctx.model, [layer], x, device=ctx.device, out_device="cpu")[layer][0]

    key = (ctx.card_name, ctx.weights_sha, layer, row["sha256"], model_spacing(ctx))
    return ctx.caches.image_features.get(key, compute)


def _lesion_candidates(ctx: AppContext, row: dict) -> tuple[list[sg.Candidate], float]:
    """The lesion map's top patches as candidates (labeling-patch size, same centres) and the image's score."""
    pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"])
    if pred is None:
        lm = lesion_map_for(ctx, row["image_id"])
        score, tops = lm.score, lm.top_patches
    else:
        score, tops = pred["score"], pred["top_patches"]
    size = patch_size(ctx)
    out = []
    for rank, (x0, y0, s, _) in enumerate(tops, start=1):
        cx, cy = float(x0) + float(s) / 2, float(y0) + float(s) / 2
        out.append(sg.Candidate(row["image_id"], int(round(cx - size / 2)), int(round(cy - size / 2)), size,
                                f"lesion map #{rank}"))
    return out, float(score)


def where_to_draw(ctx: AppContext, image_ids: list[str], *, limit: int = LIMIT,
                  config: sg.SuggestConfig = sg.SuggestConfig()) -> list[sg.Suggestion] | None:
    """The ``limit`` best patches of these images to draw on next under the newest probe version of
    the card's concept layer, best first; None when there is no probe version yet. Patches the
    readers already drew on (under this card) are left out. Cached by the probe version, the images,
    the live drawings' patches, the unit labels and the dataset statistics."""
    ctx.require_model()
    info = probe_info(ctx)
    if info is None:
        return None
    rows = [r for r in (ctx.store.get_image(i) for i in image_ids) if r is not None]
    labelled = sorted({(a.image_id, int(a.patch_x0), int(a.patch_y0), int(a.patch_size))
                       for a in ctx.store.list_annotations(model_card=ctx.card_name)})
    units = sorted({int(r["unit"]) for r in ctx.store.list_unit_labels(ctx.card_name, layer_of(ctx))})
    stats = find_stats(ctx)
    cfg = sg.SuggestConfig(**{**config.__dict__, "limit": int(limit)})
    digest = hashlib.sha256(repr((labelled, units)).encode()).hexdigest()[:16]
    key = probe_key(ctx, info) + (tuple(r["sha256"] for r in rows), digest,
                                  stats.key if stats is not None else "", cfg)

    def compute():
        probe = load_probe_version(ctx, info)
        thr = None if stats is None else np.asarray(stats.thresholds)
        level = operating_threshold(ctx.card)
        images = []
        for r in rows:  # the case's few images
            _, mask, _ = model_image(ctx, r)
            lesion, score = _lesion_candidates(ctx, r)
            grid = sg.grid_candidates(r["image_id"], mask, patch_size(ctx), stride=cfg.grid_stride,
                                      min_breast=cfg.min_breast)
            images.append(sg.ImageFeatures(r["image_id"], image_features(ctx, r), tuple(mask.shape), lesion + grid,
                                           flagged=score >= level))
        return sg.suggest_patches(probe, images, labelled=labelled, thresholds=thr, labelled_units=units, config=cfg)

    return ctx.caches.suggestions.get(key, compute)

"""Concept-engine plumbing the Label, Units, Report and Model pages share.

* the dissection patch set: breast tiles of the store's images in model space (reproducible:
  the list of patch refs is written beside the statistics, so exemplars can be shown later);
* the dataset statistics of the card's concept layer (thresholds, unit map, exemplars), found
  through the store's ``dissection_runs`` for this model's weights;
* a patch's grey pixels and its activation at the concept layer (disk-cached by the engine);
* the plotly unit map.

All results are cached by their inputs (card, weights, layer, image SHA-256, patch).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dashboard.errors import ConceptLensError
from dashboard.ui.context import AppContext
from dashboard.ui.memo import Memo
from dashboard.ui.screens.reading import PatchRef, model_image

#: IoU above which a drawing labels a unit (the engine's default rule).
TAU = 0.2
#: Activation quantile that switches a unit "on" (Network Dissection uses 0.995; the seed 0.99).
QUANTILE = 0.99
#: Most patches the dataset statistics run over by default (a 2-core laptop does ~20 patches/s).
MAX_PATCHES = 600
PATCHES_FILE = "patches.json"
#: How many of the matched units the unit map writes the number of.
LABELLED_UNITS = 12

_STATS = Memo(8)      # stats directory -> DissectionStats
_ACTS = Memo(128)     # (card, weights, layer, image sha, x0, y0, size) -> (C, h, w) tensor
_UNIT_MASKS = Memo(8)  # the same + stats key -> unit_iou.UnitMasks (~7 MB each for 1280 units)


class EngineNotReady(ConceptLensError, RuntimeError):
    """The concept engine cannot answer yet (no model, or no dataset statistics)."""


def layer_of(ctx: AppContext) -> str:
    return str(getattr(ctx.card, "default_layer", "") or "")


def fingerprint(ctx: AppContext) -> str:
    from dashboard.engine.activations import model_fingerprint

    return model_fingerprint(ctx.model)


# ---------------------------------------------------------------- patches
def patch_gray(ctx: AppContext, ref: PatchRef) -> np.ndarray:
    """The model's view of a patch: (S, S) float32 in [0, 1], model space, zero outside the image."""
    from dashboard import imaging

    img, _, _ = model_image(ctx, ctx.store.get_image(ref.image_id))
    return imaging.crop_patch(img, ref.x0, ref.y0, ref.size)


def patch_activation(ctx: AppContext, ref: PatchRef):
    """(C, h, w) float32 activation of the card's concept layer for a patch (memory + disk cache)."""
    ctx.require_model()
    from dashboard.engine.activations import compute_patch_activations

    layer = layer_of(ctx)
    row = ctx.store.get_image(ref.image_id)
    key = (ctx.card_name, ctx.weights_sha, layer, row["sha256"], ref.x0, ref.y0, ref.size)
    return _ACTS.get(key, lambda: compute_patch_activations(
        ctx.model, ctx.card, layer, [patch_gray(ctx, ref)], cache_dir=ctx.settings.cache_dir,
        device=ctx.device)[0])


def patch_unit_masks(ctx: AppContext, ref: PatchRef, stats):
    """The drawing-independent part of matching drawings on a patch (each unit's mask area and its
    cells that straddle the threshold), cached by patch and statistics: every drawing on the
    patch then costs only its outline's cells (``unit_iou.unit_ious``)."""
    from dashboard.engine.unit_iou import prepare_unit_masks

    return _UNIT_MASKS.get(_unit_masks_key(ctx, ref, stats),
                           lambda: prepare_unit_masks(patch_activation(ctx, ref), stats.thresholds, ref.size))


def has_unit_masks(ctx: AppContext, ref: PatchRef, stats) -> bool:
    return _unit_masks_key(ctx, ref, stats) in _UNIT_MASKS


def _unit_masks_key(ctx: AppContext, ref: PatchRef, stats) -> tuple:
    row = ctx.store.get_image(ref.image_id)
    return (ctx.card_name, ctx.weights_sha, layer_of(ctx), row["sha256"], ref.x0, ref.y0, ref.size, stats.key)


def dissection_patch_refs(ctx: AppContext, max_patches: int = MAX_PATCHES, seed: int = 0,
                          splits: tuple[str, ...] | None = None) -> list[PatchRef]:
    """Breast tiles (half the tile in the breast) of the store's images, a seeded even sample of
    at most ``max_patches``, in a fixed order."""
    from dashboard import imaging

    size = int(ctx.card.input_size[-1])
    refs: list[PatchRef] = []
    for row in ctx.store.list_images():
        if splits and row.get("split") not in splits:
            continue
        try:
            _, mask, _ = model_image(ctx, row)
        except Exception:  # noqa: BLE001 - an unreadable image contributes no patch
            continue
        for x0, y0 in imaging.tile(mask, size, size // 2, min_fraction=0.5):
            refs.append(PatchRef(row["image_id"], int(x0), int(y0), size))
    if len(refs) > max_patches:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(refs), size=max_patches, replace=False))
        refs = [refs[i] for i in keep]
    return refs


def _data_key(ctx: AppContext, refs: list[PatchRef]) -> str:
    h = hashlib.sha256()
    shas = {r["image_id"]: r["sha256"] for r in ctx.store.list_images()}
    for r in refs:
        h.update(f"{shas.get(r.image_id, r.image_id)}:{r.x0}:{r.y0}:{r.size};".encode())
    return h.hexdigest()[:24]


# ---------------------------------------------------------------- dataset statistics
@dataclass
class StatsInfo:
    layer: str
    n_units: int
    n_patches: int
    quantile: float
    sample_rate: float
    path: str
    created_at: object = None


def find_stats(ctx: AppContext):
    """The newest dataset statistics of this model's concept layer (None when never computed)."""
    if not ctx.model_ready:
        return None
    from dashboard.engine import dissection

    layer = layer_of(ctx)
    fp = fingerprint(ctx)
    for run in ctx.store.list_dissection_runs(model_card=ctx.card_name, layer=layer):
        if run["weights_sha"] != fp or not (Path(run["path"]) / "stats.safetensors").is_file():
            continue
        stats = _STATS.get(run["path"], lambda p=run["path"]: dissection.load_dataset_stats(Path(p)))
        if stats.version == dissection.STATS_VERSION:  # older rules' thresholds are not reused
            return stats
    return None


def require_stats(ctx: AppContext):
    ctx.require_model()
    stats = find_stats(ctx)
    if stats is None:
        raise EngineNotReady(
            f"No dataset statistics for {ctx.card_name} / {layer_of(ctx)} yet: compute them on the "
            "Model and data page (they give each unit its activation threshold).")
    return stats


def stats_patch_refs(stats) -> list[PatchRef]:
    """The patch refs the statistics were computed over (exemplar indices point into this list)."""
    path = Path(stats.path) / PATCHES_FILE
    if not path.is_file():
        return []
    return [PatchRef.from_tuple(t) for t in json.loads(path.read_text())]


def compute_stats(ctx: AppContext, max_patches: int = MAX_PATCHES,
                  progress: Callable[[float, str], None] | None = None):
    """Dataset statistics of the concept layer over the store's breast tiles (resumable, cached)."""
    ctx.require_model()
    from dashboard.engine import dissection

    if progress:
        progress(0.0, "Collecting breast tiles")
    refs = dissection_patch_refs(ctx, max_patches)
    if not refs:
        raise EngineNotReady("The store has no readable images to compute dataset statistics on.")
    data_key = _data_key(ctx, refs)

    def batches(batch: int = 16):
        for s in range(0, len(refs), batch):
            yield np.stack([patch_gray(ctx, r) for r in refs[s:s + batch]])  # (B, S, S)

    def cb(done: int, total: int, message: str) -> None:
        if progress:
            progress(done / max(total, 1), message)

    stats = dissection.compute_dataset_stats(
        ctx.model, ctx.card, layer_of(ctx), batches(), dissection.StatsConfig(
            n_patches=len(refs), data_key=data_key, quantile=QUANTILE, cache_dir=ctx.settings.cache_dir / "dissection",
            device=ctx.device, batch_size=16), progress=cb, store=ctx.store)
    (Path(stats.path) / PATCHES_FILE).write_text(json.dumps([r.as_tuple() for r in refs]))
    _STATS.clear()
    return stats


# ---------------------------------------------------------------- the unit map
def unit_colours(ctx: AppContext, labels: dict[int, str]) -> dict[str, str]:
    colours = {c["name"]: c["colour"] for c in ctx.store.list_concepts()}
    return {c: colours.get(c, "#00bcd4") for c in set(labels.values())}


def unit_scatter(ctx: AppContext, stats, labels: dict[int, str], *, highlight: dict[int, float] | None = None,
                 selected: int | None = None, title: str = ""):
    """Plotly map of the layer's units (PCA of their activation profiles), coloured by concept.

    labels {unit: concept}; highlight {unit: IoU} draws those units large with their IoU;
    selected gets a ring. Unlabeled units are small grey dots.
    """
    import plotly.graph_objects as go

    xy = np.asarray(stats.unit_xy, dtype=float)
    n = len(xy)
    units = np.arange(n)
    colours = unit_colours(ctx, labels)
    fig = go.Figure()
    unl = np.array([u not in labels for u in units])
    fig.add_trace(go.Scattergl(
        x=xy[unl, 0], y=xy[unl, 1], mode="markers", name="unlabeled", customdata=units[unl],
        marker=dict(size=5, color="rgba(160,160,160,0.45)"),
        hovertemplate="unit %{customdata}<extra>unlabeled</extra>"))
    for concept in sorted(set(labels.values())):
        sel = np.array([labels.get(int(u)) == concept for u in units])
        fig.add_trace(go.Scattergl(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=concept, customdata=units[sel],
            marker=dict(size=8, color=colours[concept], line=dict(width=0.5, color="#111")),
            hovertemplate="unit %{customdata}<extra>" + concept + "</extra>"))
    if highlight:
        hu = np.array(sorted(highlight, key=lambda u: -highlight[u]), dtype=int)
        fig.add_trace(go.Scatter(
            x=xy[hu, 0], y=xy[hu, 1], mode="markers+text", name=f"IoU > {TAU:g}", customdata=hu,
            # numbers on the best few only: hundreds of labels would hide the map
            text=[f"{u}" if i < LABELLED_UNITS else "" for i, u in enumerate(hu)], textposition="top center",
            textfont=dict(size=10),
            marker=dict(size=[10 + 30 * highlight[int(u)] for u in hu], color="rgba(255,213,79,0.25)",
                        line=dict(width=2, color="#ffd54f")),
            hovertext=[f"IoU {highlight[int(u)]:.2f}" for u in hu],
            hovertemplate="unit %{customdata}<br>%{hovertext}<extra>matched</extra>"))
    if selected is not None and 0 <= selected < n:
        fig.add_trace(go.Scatter(
            x=[xy[selected, 0]], y=[xy[selected, 1]], mode="markers", name=f"unit {selected}",
            marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(width=3, color="#4fc3f7")),
            hoverinfo="skip"))
    var = getattr(stats, "unit_xy_var", [0, 0])
    fig.update_layout(
        title=title or f"Units of {stats.layer} ({n})", height=460, margin=dict(l=10, r=10, t=40, b=10),
        xaxis_title=f"PC 1 ({100 * float(var[0]):.0f} %)", yaxis_title=f"PC 2 ({100 * float(var[1]):.0f} %)",
        legend=dict(orientation="h", y=-0.18), template="plotly_dark")
    return fig


def heat_rgb(gray: np.ndarray, heat: np.ndarray, outline: np.ndarray | None = None, alpha: float = 0.6) -> np.ndarray:
    """A grey patch (S, S) uint8 with a heat map and an optional bool outline region, as RGB."""
    from scipy import ndimage

    from dashboard.ui.screens.reading import blend

    rgb = blend(gray, heat, alpha)
    if outline is not None and outline.any():
        edge = outline & ~ndimage.binary_erosion(outline, iterations=1)
        rgb[edge] = (79, 195, 247)
    return rgb


def upsample(act_map: np.ndarray, size: int) -> np.ndarray:
    """(h, w) -> (size, size) exactly as the engine thresholds it (bilinear, align_corners=False)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(act_map, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()

"""The card's concept layer, as the Label, Units, Report and Model pages need it:

* the dissection patch set: breast tiles of the store's images in model space (reproducible:
  the list of patch refs is written beside the statistics, so exemplars can be shown later);
* the dataset statistics of the layer (thresholds, unit map, exemplars), found through the
  store's ``dissection_runs`` for this model's weights;
* a patch's activation at the layer (disk-cached by the engine) and its unit masks;
* an activation map upsampled exactly as the engine thresholds it.

All results are cached in ``ctx.caches`` by their inputs (card, weights, layer, image SHA-256, patch).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dashboard import imaging
from dashboard.data.files import stored_image_path
from dashboard.data.patch_source import StoredImagePatches, StoredPatches
from dashboard.engine import dissection
from dashboard.engine.activations import compute_patch_activations, model_fingerprint
from dashboard.engine.distributed import RayEngine
from dashboard.engine.model_state import lock_for
from dashboard.engine.shards import CardModel
from dashboard.engine.unit_iou import prepare_unit_masks
from dashboard.progress import Progress
from dashboard.progress import report as report_progress
from dashboard.ui.context import AppContext
from dashboard.ui.types import QUANTILE, EngineNotReady, PatchRef
from dashboard.ui.work.images import model_image, model_spacing, patch_gray

#: Most patches the dataset statistics run over by default (a 2-core laptop does ~20 patches/s).
MAX_PATCHES = 600
PATCHES_FILE = "patches.json"
#: Patches per forward pass of the dataset statistics.
STATS_BATCH = 16


def layer_of(ctx: AppContext) -> str:
    """The card's concept layer (the one readers label)."""
    return str(getattr(ctx.card, "default_layer", "") or "")


# ---------------------------------------------------------------- patches
def patch_activation(ctx: AppContext, ref: PatchRef):
    """(C, h, w) float32 activation of the card's concept layer for a patch (memory + disk cache).

    Computed through the model's queue as a batch item: patches of one size that other sessions
    ask for at the same moment go through the network in one pass (``ModelQueue.batch``)."""
    ctx.require_model()
    layer = layer_of(ctx)
    row = ctx.store.get_image(ref.image_id)
    key = (ctx.card_name, ctx.weights_sha, layer, row["sha256"], ref.x0, ref.y0, ref.size)

    def run(patches):
        return compute_patch_activations(ctx.model, ctx.card, layer, list(patches), cache_dir=ctx.settings.cache_dir,
                                         device=ctx.device)

    batch_key = ("patch activations", ctx.card_name, ctx.weights_sha, layer, ref.size, str(ctx.device))
    return ctx.caches.activations.get(key, lambda: lock_for(ctx.model).batch(batch_key, patch_gray(ctx, ref), run))


def patch_unit_masks(ctx: AppContext, ref: PatchRef, stats):
    """The drawing-independent part of matching drawings on a patch (each unit's mask area and its
    cells that straddle the threshold), cached by patch and statistics: every drawing on the
    patch then costs only its outline's cells (``unit_iou.unit_ious``)."""
    return ctx.caches.unit_masks.get(_unit_masks_key(ctx, ref, stats),
                                     lambda: prepare_unit_masks(patch_activation(ctx, ref), stats.thresholds, ref.size))


def prefetch_unit_masks(ctx: AppContext, ref: PatchRef) -> bool:
    """Start computing a patch's activation and unit masks in a background thread (once), so the
    reader's first drawing on it only waits for its own IoUs. True when a thread was started."""
    if not ctx.model_ready:
        return False
    try:
        stats = find_stats(ctx)
    except Exception:  # noqa: BLE001 - only a head start: the match reports what is missing
        return False
    if stats is None:
        return False
    key = (ctx.card_name, ctx.weights_sha, stats.key, ref.as_tuple())
    return ctx.caches.unit_masks_head_start.start(
        key, lambda: patch_unit_masks(ctx, ref, stats), done=lambda: has_unit_masks(ctx, ref, stats),
        name=f"patch-{ref.image_id}") is not None


def has_unit_masks(ctx: AppContext, ref: PatchRef, stats) -> bool:
    return _unit_masks_key(ctx, ref, stats) in ctx.caches.unit_masks


def _unit_masks_key(ctx: AppContext, ref: PatchRef, stats) -> tuple:
    row = ctx.store.get_image(ref.image_id)
    return (ctx.card_name, ctx.weights_sha, layer_of(ctx), row["sha256"], ref.x0, ref.y0, ref.size, stats.key)


def upsample(act_map: np.ndarray, size: int) -> np.ndarray:
    """(h, w) -> (size, size) exactly as the engine thresholds it (bilinear, align_corners=False)."""
    t = torch.as_tensor(np.asarray(act_map, dtype=np.float32))[None, None]  # (1, 1, h, w)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def dissection_patch_refs(ctx: AppContext, max_patches: int = MAX_PATCHES, seed: int = 0,
                          splits: tuple[str, ...] | None = None) -> list[PatchRef]:
    """Breast tiles (half the tile in the breast) of the store's images, a seeded even sample of
    at most ``max_patches``, in a fixed order."""
    size = int(ctx.card.label_patch_size)  # the statistics' tiles are the patches readers label
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
def find_stats(ctx: AppContext):
    """The newest dataset statistics of this model's concept layer (None when never computed)."""
    if not ctx.model_ready:
        return None
    layer = layer_of(ctx)
    fp = model_fingerprint(ctx.model)
    for run in ctx.store.list_dissection_runs(model_card=ctx.card_name, layer=layer):
        if run["weights_sha"] != fp or not (Path(run["path"]) / "stats.safetensors").is_file():
            continue
        stats = ctx.caches.stats.get(run["path"], lambda p=run["path"]: dissection.load_dataset_stats(Path(p)))
        if stats.version == dissection.STATS_VERSION:  # older rules' thresholds are not reused
            return stats
    return None


def require_stats(ctx: AppContext):
    """``find_stats``, or EngineNotReady saying where to compute them."""
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


def stats_engine(ctx: AppContext) -> RayEngine | None:
    """Where the dataset statistics run: the Ray cluster of ``CONCEPTLENS_RAY_ADDRESS``, else None (here)."""
    return RayEngine(address=ctx.settings.ray_address) if ctx.settings.ray_address else None


def stored_patches(ctx: AppContext, refs: list[PatchRef]) -> StoredPatches:
    """The patch refs as a source that workers load from the image files themselves."""
    rows = {r["image_id"]: r for r in ctx.store.list_images()}
    images: list[StoredImagePatches] = []
    for ref in refs:  # consecutive refs of one image share its entry
        if images and images[-1].image_id == ref.image_id:
            last = images[-1]
            images[-1] = StoredImagePatches(last.image_id, last.path, last.sha256, last.default_spacing_mm,
                                            last.patches + ((ref.x0, ref.y0, ref.size),))
            continue
        row = rows[ref.image_id]
        images.append(StoredImagePatches(ref.image_id, str(stored_image_path(ctx.store, row)), row["sha256"],
                                         row.get("pixel_spacing_mm"), ((ref.x0, ref.y0, ref.size),)))
    return StoredPatches(tuple(images), model_spacing(ctx), _data_key(ctx, refs), ctx.settings.max_pixels)


def compute_stats(ctx: AppContext, max_patches: int = MAX_PATCHES, progress: Progress | None = None,
                  engine: RayEngine | None = None):
    """Dataset statistics of the concept layer over the store's breast tiles (resumable, cached).
    ``progress(done, total, message)`` counts patches. ``engine``: a Ray engine (default: the one of
    ``CONCEPTLENS_RAY_ADDRESS``, else this process); the numbers are the same either way."""
    ctx.require_model()
    report_progress(progress, 0, 0, "Collecting breast tiles")
    refs = dissection_patch_refs(ctx, max_patches)
    if not refs:
        raise EngineNotReady("The store has no readable images to compute dataset statistics on.")
    engine = engine if engine is not None else stats_engine(ctx)

    def batches():
        for s in range(0, len(refs), STATS_BATCH):
            yield np.stack([patch_gray(ctx, r) for r in refs[s:s + STATS_BATCH]])  # (B, S, S)

    extra = {} if engine is None else {"engine": engine, "model_source": CardModel(
        ctx.card_name, (str(ctx.settings.user_cards_dir),), ctx.settings.device)}
    stats = dissection.compute_dataset_stats(
        ctx.model, ctx.card, layer_of(ctx), batches() if engine is None else stored_patches(ctx, refs),
        dissection.StatsConfig(
            n_patches=len(refs), data_key=_data_key(ctx, refs), quantile=QUANTILE,
            cache_dir=ctx.settings.cache_dir / "dissection", device=ctx.device, batch_size=STATS_BATCH),
        progress=progress, store=ctx.store, **extra)
    (Path(stats.path) / PATCHES_FILE).write_text(json.dumps([r.as_tuple() for r in refs]))
    ctx.caches.stats.clear()
    return stats

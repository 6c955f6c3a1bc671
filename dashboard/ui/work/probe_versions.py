"""Concept probe versions of the card's concept layer: the latest one's summary, a stored version
loaded once, and training a new version on the readers' live drawings."""
from __future__ import annotations

from dataclasses import dataclass

from dashboard.engine import probes
from dashboard.progress import Progress
from dashboard.ui.context import AppContext
from dashboard.ui.types import PatchRef
from dashboard.ui.work.concepts import layer_of
from dashboard.ui.work.images import model_spacing, patch_gray


@dataclass
class ProbeInfo:
    version: int
    layer: str
    created_at: object
    concepts: list[str]
    metrics: list[dict]           # concept, auroc, drawings, images, note
    readers: list[str]
    n_drawings: int
    stale: bool                   # drawings were added or undone since it was trained
    n_live: int = 0               # of its drawings, how many are still live (0: all were removed)


def drawn_patch(ctx: AppContext, ref: PatchRef):
    """``patch_gray`` of a patch readers drew on, cached by image and patch: every retrain reads the
    patch of every live drawing, on more images than ``model_images`` holds, and would otherwise
    decode and segment each of those images again on every Save."""
    row = ctx.store.get_image(ref.image_id)
    key = (row["sha256"], model_spacing(ctx), row.get("pixel_spacing_mm"), ref.x0, ref.y0, ref.size)
    return ctx.caches.drawn_patches.get(key, lambda: patch_gray(ctx, ref))


def annotation_patch(ctx: AppContext):
    """The ``load_patch`` the engine's probe trainer needs: annotation -> (S, S) grey patch."""
    return lambda a: drawn_patch(ctx, PatchRef(a.image_id, a.patch_x0, a.patch_y0, a.patch_size))


def prepare_drawn_patches(ctx: AppContext) -> int:
    """Read the patch of every live drawing of this card into ``drawn_patches`` (the next retrain's
    inputs); the number read. For a background head start: a fresh server's first Save then
    retrains without decoding every drawn image first."""
    n = 0
    for a in ctx.store.list_annotations(model_card=ctx.card_name):
        annotation_patch(ctx)(a)
        n += 1
    return n


def probe_versions(ctx: AppContext) -> list[int]:
    """The stored probe versions of the card's concept layer, newest first."""
    return [int(r["version"]) for r in ctx.store.list_probes(model_card=ctx.card_name, layer=layer_of(ctx))]


def probe_info(ctx: AppContext, version: int | None = None) -> ProbeInfo | None:
    """A probe version of the card's concept layer (default the latest; without its weights), or None."""
    rows = ctx.store.list_probes(model_card=ctx.card_name, layer=layer_of(ctx))
    if version is not None:
        rows = [r for r in rows if int(r["version"]) == int(version)]
    if not rows:
        return None
    p = rows[0]
    live = {a.annotation_id for a in ctx.store.list_annotations(model_card=ctx.card_name)}
    metrics = p["metrics"] if isinstance(p["metrics"], dict) else {}
    rows_out = []
    for c in p["concepts"]:
        m = metrics.get(c, {}) or {}
        rows_out.append({"concept": c, "auroc": m.get("auroc"), "drawings": m.get("n_drawings"),
                         "images": m.get("n_images"), "note": m.get("reason") or m.get("note") or ""})
    return ProbeInfo(version=int(p["version"]), layer=p["layer"], created_at=p["created_at"],
                     concepts=list(p["concepts"]), metrics=rows_out, readers=list(p["readers"] or []),
                     n_drawings=len(p["annotation_ids"] or []), stale=set(p["annotation_ids"] or []) != live,
                     n_live=len(set(p["annotation_ids"] or []) & live))


def probe_key(ctx: AppContext, info_or_version) -> tuple:
    """Names one stored probe version across stores (tests and sessions may hold several)."""
    version = getattr(info_or_version, "version", info_or_version)
    created = getattr(info_or_version, "created_at", None)
    return (str(ctx.settings.db_path), ctx.card_name, ctx.weights_sha, int(version), str(created))


def load_probe_version(ctx: AppContext, version):
    """A stored probe version (cached: versions never change once written)."""
    return ctx.caches.probes.get(probe_key(ctx, version),
                                 lambda: probes.load_probe(ctx.store, int(getattr(version, "version", version))))


def retrain(ctx: AppContext, reader: str = "", progress: Progress | None = None) -> ProbeInfo:
    """Train a new probe version on every live drawing made under this model card.
    ``progress(done, total, message)`` as the engine's trainer reports it."""
    ctx.require_model()
    probes.train_probes(ctx.store, ctx.model, ctx.card, layer_of(ctx), load_patch=annotation_patch(ctx),
                        progress=progress, config=probes.ProbeConfig(device=ctx.device, cache_dir=ctx.settings.cache_dir,
                                                                     actor=reader or "system"))
    return probe_info(ctx)

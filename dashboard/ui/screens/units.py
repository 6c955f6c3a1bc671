"""Units: the map of the concept layer's units coloured by concept, one unit's exemplars, labels
and the drawings behind them; undoing a drawing undoes exactly its labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dashboard import imaging
from dashboard.engine import dissection
from dashboard.ui.context import AppContext
from dashboard.ui.types import PatchRef, UnitsError
from dashboard.ui.work import concepts as cx
from dashboard.ui.work.images import display_patch
from dashboard.ui.work.overlays import heat_rgb
from dashboard.ui.work.unit_map import unit_scatter


@dataclass
class UnitDetail:
    unit: int
    concept: str | None
    iou: float | None
    threshold: float
    mean: float
    exemplars: list[tuple[np.ndarray, str]]   # (RGB (S, S, 3), caption), best first
    drawings: list[dict]                      # every drawing whose IoU with this unit passed tau


@dataclass
class UnitsView:
    layer: str
    n_units: int
    figure: object
    labels: list[dict]                        # one row per labeled unit
    counts: list[dict]                        # concept, units
    detail: UnitDetail | None
    notes: list[str] = field(default_factory=list)


def load_units(ctx: AppContext, unit: int | None = None, concept: str | None = None) -> UnitsView:
    """The unit map and label table; with ``unit``, its exemplars and drawings. ``concept``
    restricts the label table (the map always shows every unit)."""
    stats = cx.require_stats(ctx)
    layer = cx.layer_of(ctx)
    rows = ctx.store.list_unit_labels(ctx.card_name, layer)
    labels = {int(r["unit"]): r["concept"] for r in rows}
    counts: dict[str, int] = {}
    for c in labels.values():
        counts[c] = counts.get(c, 0) + 1
    table = [{"unit": int(r["unit"]), "concept": r["concept"], "iou": round(float(r["iou"]), 3),
              "reader": r["reader"], "image_id": r["image_id"], "annotation_id": r["annotation_id"]}
             for r in rows if concept in (None, "", r["concept"])]
    if unit is not None and not 0 <= int(unit) < stats.n_units:
        raise UnitsError(f"Unit {unit} does not exist: {layer} has units 0 to {stats.n_units - 1}.")
    detail = unit_detail(ctx, stats, int(unit), rows) if unit is not None else None
    fig = unit_scatter(ctx, stats, labels, selected=None if unit is None else int(unit),
                          title=f"{stats.n_units} units of {layer}: {len(labels)} labeled")
    notes = [] if labels else ["No unit is labeled yet: draw concepts on the Label page."]
    return UnitsView(layer=layer, n_units=stats.n_units, figure=fig, labels=table,
                     counts=sorted(({"concept": k, "units": v} for k, v in counts.items()),
                                   key=lambda r: -r["units"]),
                     detail=detail, notes=notes)


def unit_exemplars(ctx: AppContext, stats, unit: int) -> list[tuple[np.ndarray, str]]:
    """The unit's top patches with its activation as heat, display orientation, best first.

    Cached by model, weights, layer, dataset statistics and unit: a rerun of the Units page
    (a click elsewhere, an undo) does not rebuild them."""
    return ctx.caches.exemplars.get(exemplars_key(ctx, stats, unit), lambda: _build_exemplars(ctx, stats, int(unit)))


def exemplars_key(ctx: AppContext, stats, unit: int) -> tuple:
    return (ctx.card_name, ctx.weights_sha, stats.layer, str(getattr(stats, "key", "")), str(stats.path), int(unit))


def ready_exemplars(ctx: AppContext, stats, units: list[int], *, defer: bool = False) -> tuple[dict[int, list], list[int]]:
    """The exemplars of ``units`` already built ({unit: [(RGB, caption)]}) and the units still
    missing, whose exemplars are then built in a background thread (never while a reader waits;
    ``defer``: not now, a later call starts them)."""
    ready = {int(u): unit_exemplars(ctx, stats, u) for u in units  # cached (rebuilt only if evicted meanwhile)
             if exemplars_key(ctx, stats, u) in ctx.caches.exemplars}
    missing = [int(u) for u in units if int(u) not in ready]
    if missing and not defer:
        ctx.caches.exemplars_head_start.start(
            (ctx.card_name, ctx.weights_sha, str(stats.path), tuple(missing)),
            lambda: [unit_exemplars(ctx, stats, u) for u in missing], name="exemplars")
    return ready, missing


def _build_exemplars(ctx: AppContext, stats, unit: int) -> list[tuple[np.ndarray, str]]:
    refs = cx.stats_patch_refs(stats)
    exemplars = []
    thr = float(stats.thresholds[unit])
    for k in range(stats.top_indices.shape[1]):  # the unit's top-k patches, not units: k is small
        idx = int(stats.top_indices[unit, k])
        if idx < 0 or idx >= len(refs):
            continue
        ref: PatchRef = refs[idx]
        try:
            row = ctx.store.get_image(ref.image_id)
            patch = display_patch(ctx, row, ref)
        except Exception:  # noqa: BLE001 - an image removed since the statistics were computed
            continue
        amap = cx.upsample(stats.top_maps[unit, k], ref.size)
        on = amap > thr
        vmax = max(float(amap.max()), 1e-6)
        rgb = heat_rgb(patch, np.clip(amap, 0, None) / vmax, outline=on)
        if imaging.display_flip(row["laterality"]):
            rgb = rgb[:, ::-1]
        exemplars.append((np.ascontiguousarray(rgb),
                          f"#{k + 1} {row['laterality']}{row['view']} {row['case_id']} · max {float(stats.top_values[unit, k]):.2f}"))
    return exemplars


def unit_detail(ctx: AppContext, stats, unit: int, label_rows: list[dict]) -> UnitDetail:
    label = next((r for r in label_rows if int(r["unit"]) == unit), None)
    thr = float(stats.thresholds[unit])
    exemplars = unit_exemplars(ctx, stats, unit)
    drawings = []
    for r in ctx.store.list_annotation_units(model_card=ctx.card_name, layer=cx.layer_of(ctx), include_deleted=True):
        if int(r["unit"]) != unit:
            continue
        drawings.append({"annotation_id": r["annotation_id"], "concept": r["concept"], "iou": round(float(r["iou"]), 3),
                         "image_id": r["image_id"], "reader": r["reader"],
                         "status": "undone" if r["deleted_at"] is not None else
                         ("labels this unit" if label and label["annotation_id"] == r["annotation_id"] else "live")})
    drawings.sort(key=lambda d: (d["status"] == "undone", -d["iou"]))
    return UnitDetail(unit=unit, concept=label["concept"] if label else None,
                      iou=float(label["iou"]) if label else None, threshold=thr, mean=float(stats.mean[unit]),
                      exemplars=exemplars, drawings=drawings)


def undo(ctx: AppContext, annotation_id: str, reader: str) -> dict[int, str | None]:
    """Undo a drawing: soft-delete it and give its units back their next-best live label."""
    return dissection.undo_annotation(ctx.store, annotation_id, reader or "unknown")

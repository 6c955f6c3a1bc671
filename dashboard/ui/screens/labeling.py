"""Label concepts: a patch on the drawing canvas, the concept palette, unit matching and saving.

The canvas shows the patch in display orientation (a right breast mirrored, as on the Read page)
at ``CANVAS_SCALE`` times its model size; ``dashboard.ui.canvas`` maps drawings back to model-space
patch pixels. As soon as a drawing arrives, every unit of the card's concept layer is matched
against it (the engine's IoU); Save stores the annotation and labels the units in one transaction.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from dashboard.errors import ConceptLensError
from dashboard.ui import canvas
from dashboard.ui.context import AppContext
from dashboard.ui.memo import HeadStart, Memo
from dashboard.ui.screens.reading import PatchRef, WindowChoice, display_gray

#: Canvas pixels per model pixel when the patch is small; the canvas is at most MAX_CANVAS wide.
MAX_CANVAS = 448
DRAW_TOOLS = {"polygon": "Polygon", "freedraw": "Freehand", "rect": "Rectangle"}

_PREPARING = HeadStart()  # patches whose unit masks a background thread is computing
_MATCHES = Memo(64)  # (card, weights, layer, image sha, patch, drawing geometry) -> MatchView


class LabelingError(ConceptLensError, ValueError):
    """The patch or drawing cannot be used; the message says what to do."""


@dataclass
class PatchView:
    ref: PatchRef
    image: dict
    label: str                      # "R CC · SYN-0001"
    background: np.ndarray          # (C, C, 3) uint8 shown under the canvas, display orientation
    canvas_size: int                # C, canvas pixels per side
    mirrored: bool
    palette: OrderedDict[str, list[dict]]   # lexicon group -> concepts (name, colour, description)
    annotations: list[dict]         # drawings already saved on this image
    layer: str
    notes: list[str] = field(default_factory=list)


def canvas_side(size: int) -> int:
    """Canvas side in pixels for a patch of ``size`` model pixels: an integer zoom, at most MAX_CANVAS."""
    return int(size * max(1, MAX_CANVAS // max(size, 1))) if size <= MAX_CANVAS else MAX_CANVAS


def palette(ctx: AppContext) -> OrderedDict[str, list[dict]]:
    """The store's concepts grouped by BI-RADS lexicon group (built-in groups first, custom last)."""
    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for c in ctx.store.list_concepts():
        groups.setdefault(c["lexicon_group"], []).append(
            {"name": c["name"], "colour": c["colour"], "description": c["description"], "builtin": c["builtin"]})
    return groups


def concept_layer(ctx: AppContext) -> str:
    return str(getattr(ctx.card, "default_layer", "") or "")


def load_patch(ctx: AppContext, ref: PatchRef | None, window: WindowChoice = WindowChoice()) -> PatchView | None:
    """The patch to draw on, the palette, and what was drawn before on this image."""
    from PIL import Image

    from dashboard import imaging

    if ref is None:
        return None
    row = ctx.store.get_image(ref.image_id)
    gray, _ = display_gray(ctx, row, window)                    # (h, w) uint8, model orientation
    patch = imaging.crop_patch(gray, ref.x0, ref.y0, ref.size)  # (S, S), zero outside the image
    mirrored = imaging.display_flip(row["laterality"])
    if mirrored:
        patch = patch[:, ::-1]
    side = canvas_side(ref.size)
    big = Image.fromarray(np.ascontiguousarray(patch)).resize((side, side), Image.NEAREST).convert("RGB")
    anns = [a for a in ctx.store.list_annotations(image_id=ref.image_id)]
    notes = []
    if not ctx.model_ready:
        notes.append(f"Units cannot be matched without the model: {ctx.model_error}")
    return PatchView(
        ref=ref, image=row, label=f"{row['laterality']} {row['view']} · {row['case_id']}",
        background=np.asarray(big), canvas_size=side, mirrored=mirrored, palette=palette(ctx),
        annotations=[{"annotation_id": a.annotation_id, "concept": a.concept, "reader": a.reader,
                      "patch": (a.patch_x0, a.patch_y0, a.patch_size), "shape": a.shape,
                      "created_at": a.created_at} for a in anns],
        layer=concept_layer(ctx), notes=notes)


def prepare_patch(ctx: AppContext, ref: PatchRef) -> bool:
    """Start computing the open patch's activation and unit masks in the background (once), so
    the reader's first drawing only waits for its own IoUs. True when a thread was started."""
    from dashboard.ui.screens import concepts as cx

    if not ctx.model_ready:
        return False
    try:
        stats = cx.find_stats(ctx)
    except Exception:  # noqa: BLE001 - the match reports what is missing
        return False
    if stats is None:
        return False
    key = (ctx.card_name, ctx.weights_sha, stats.key, ref.as_tuple())
    return _PREPARING.start(key, lambda: cx.patch_unit_masks(ctx, ref, stats),
                            done=lambda: cx.has_unit_masks(ctx, ref, stats), name=f"patch-{ref.image_id}") is not None


def prepare_report(ctx: AppContext, image_id: str) -> bool:
    """Start preparing the Report of the image being labeled in the background: its model evidence
    (once per image), then its report under the latest probe version (once per version, so
    right after a Save retrained the probes). Save -> Report then finds it ready. True when a
    background thread was started; cheap when there is nothing new."""
    from dashboard.ui.screens import reporting

    started = False
    for prefetch in (reporting.prefetch_evidence, reporting.prefetch_report):
        try:
            started = bool(prefetch(ctx, image_id)) or started
        except Exception:  # noqa: BLE001 - only a head start; the Report computes it otherwise
            pass
    return started


def drawings_from_canvas(view: PatchView, json_data: dict | None, fit: dict | None) -> list[canvas.Drawing]:
    """The canvas JSON as usable drawings in model-space patch pixels (DrawingError if none)."""
    drawings = canvas.parse_canvas(json_data, patch_size=view.ref.size, fit=fit,
                                   canvas_size=(view.canvas_size, view.canvas_size), mirror=view.mirrored)
    return canvas.validate(drawings, view.ref.size)


def add_concept(ctx: AppContext, name: str, group: str, colour: str, description: str,
                reader: str) -> tuple[str, str]:
    """Add a custom concept to the palette; returns its stored (normalised) name and its group
    (an existing concept of that name keeps its own group)."""
    added = ctx.store.save_concept(name, colour=colour, lexicon_group=(group or "custom").strip() or "custom",
                                   description=description, actor=reader or "unknown")
    return added, ctx.store.get_concept(added)["lexicon_group"]


def start_session(ctx: AppContext, reader: str) -> str:
    """Record the reader's name (asked once per session); ValidationError on an empty name."""
    return ctx.store.save_reader(reader)


# ---------------------------------------------------------------- drawings -> the engine
def engine_geometry(d: canvas.Drawing) -> tuple[str, object]:
    """(shape, geometry) in the engine's ``drawing_to_mask`` format.

    The engine rasterises polygons and strokes with pixel (c, r) at integer coordinates (pixel
    centres), ours are continuous (pixel corners at integers), hence the half-pixel shift.
    Axis-aligned rectangles use the engine's rect (continuous, pixel centres inside); a rotated
    rectangle is a polygon.
    """
    pts = np.asarray(d.points, dtype=float)
    centred = (pts - 0.5).round(3).tolist()
    if d.shape == "rect":
        xs, ys = np.unique(pts[:, 0].round(6)), np.unique(pts[:, 1].round(6))
        if len(xs) == 2 and len(ys) == 2:
            return "rect", {"x0": float(xs[0]), "y0": float(ys[0]), "x1": float(xs[1]), "y1": float(ys[1])}
        return "polygon", {"points": centred}
    if d.shape == "freehand":
        return "freehand", {"points": centred, "width": max(float(d.stroke_width), 1.0), "closed": bool(d.closed)}
    return "polygon", {"points": centred}


def drawings_mask(drawings: list[canvas.Drawing], size: int) -> tuple[np.ndarray, str, object]:
    """Union mask (S, S) bool of the drawings, with the (shape, geometry) to store.

    One drawing is stored in the engine's format (``drawing_to_mask(shape, geometry)`` gives the
    mask back); several as {"drawings": [{"shape", "geometry"}, ...]} under the largest one's shape.
    """
    from dashboard.data.store import ValidationError
    from dashboard.engine import dissection

    mask = np.zeros((size, size), dtype=bool)
    parts = []
    for d in drawings:
        shape, geo = engine_geometry(d)
        try:
            mask |= dissection.drawing_to_mask(shape, geo, size)
        except ValidationError:
            continue  # this piece covers no pixel; the others may
        parts.append({"shape": shape, "geometry": geo})
    if not mask.any():
        raise canvas.DrawingError("The drawing covers no pixel of the patch: draw it again, larger.")
    if len(parts) == 1:
        return mask, parts[0]["shape"], parts[0]["geometry"]
    shape = engine_geometry(max(drawings, key=lambda d: d.area))[0]
    return mask, shape, {"drawings": parts}


@dataclass
class MatchView:
    """What one drawing picks out of the concept layer."""

    drawings: list[canvas.Drawing]
    mask: np.ndarray                 # (S, S) bool, model space
    shape: str
    geometry: object
    ious: np.ndarray                 # (C,)
    best_unit: int
    best_iou: float
    units_above: list[int]           # IoU > tau, best first
    tau: float
    best_rgb: np.ndarray             # (S, S, 3) the best unit's activation over the patch, display orientation
    table: list[dict]                # unit, IoU, current label
    figure: object                   # plotly unit map with the matched units highlighted


def match(ctx: AppContext, view: PatchView, drawings: list[canvas.Drawing], tau: float | None = None) -> MatchView:
    """IoU of every unit of the concept layer with the drawing (cached by patch and geometry)."""
    from dashboard.engine import dissection
    from dashboard.ui.screens import concepts as cx

    tau = cx.TAU if tau is None else float(tau)
    stats = cx.require_stats(ctx)
    ref = view.ref
    mask, shape, geometry = drawings_mask(drawings, ref.size)
    key = (ctx.card_name, ctx.weights_sha, stats.key, view.image["sha256"], ref.as_tuple(),
           json.dumps(geometry, sort_keys=True), tau)

    def compute() -> MatchView:
        act = cx.patch_activation(ctx, ref)                                   # (C, h, w)
        m = dissection.match_drawing(act, stats.thresholds, mask, tau=tau,
                                     prepared=cx.patch_unit_masks(ctx, ref, stats))
        labels = {int(r["unit"]): r["concept"] for r in ctx.store.list_unit_labels(ctx.card_name, cx.layer_of(ctx))}
        best_map = cx.upsample(np.asarray(act[m.best_unit]), ref.size)     # (S, S)
        on = best_map > float(stats.thresholds[m.best_unit])
        gray = display_patch(ctx, view)                                       # (S, S) uint8, model orientation
        vmax = max(float(best_map.max()), 1e-6)
        rgb = cx.heat_rgb(gray, np.clip(best_map, 0, None) / vmax, outline=mask)
        rgb[on & ~mask] = (0.5 * rgb[on & ~mask] + 0.5 * np.array([255, 213, 79])).astype(np.uint8)
        if view.mirrored:
            rgb = rgb[:, ::-1]
        above = [int(u) for u in m.units_above]
        table = [{"unit": u, "iou": round(float(m.ious[u]), 3), "label now": labels.get(u, "")} for u in above[:50]]
        fig = cx.unit_scatter(ctx, stats, labels, highlight={u: float(m.ious[u]) for u in above},
                              selected=m.best_unit, title=f"{len(above)} unit(s) with IoU > {tau:g}")
        return MatchView(drawings=drawings, mask=mask, shape=shape, geometry=geometry, ious=m.ious,
                         best_unit=m.best_unit, best_iou=m.best_iou, units_above=above, tau=tau,
                         best_rgb=np.ascontiguousarray(rgb), table=table, figure=fig)

    return _MATCHES.get(key, compute)


def display_patch(ctx: AppContext, view: PatchView) -> np.ndarray:
    """The windowed patch, model orientation, (S, S) uint8."""
    from dashboard import imaging

    gray, _ = display_gray(ctx, view.image, WindowChoice())
    return imaging.crop_patch(gray, view.ref.x0, view.ref.y0, view.ref.size)


@dataclass
class SaveResult:
    annotation_id: str
    concept: str
    n_above: int
    n_labeled: int
    replaced: dict
    probe_version: int | None = None   # the probe retrained with this drawing (retrain=True)
    probe_drawings: int = 0
    retrain_error: str | None = None   # why the probe could not be retrained (the drawing is saved)
    timings_s: dict = field(default_factory=dict)


def save(ctx: AppContext, view: PatchView, m: MatchView, concept: str, reader: str, *,
         retrain: bool = False) -> SaveResult:
    """Store the drawing and label its units in one transaction (the engine's rule).

    retrain: then retrain the concept probes in the same request, so the Report shows the new
    drawing at once. The drawing's patch activation is already cached (computed when it was
    matched), so this is the probe fit on the stored drawings, not a pass through the network
    for each of them. A failed retrain keeps the saved drawing and says why."""
    import time

    from dashboard.engine import dissection
    from dashboard.ui.screens import concepts as cx

    if not reader:
        raise LabelingError("Enter your reader name first.")
    ref = view.ref
    t0 = time.perf_counter()
    from dashboard.data.store import DrawingRecord

    res = dissection.label_units_from_drawing(
        ctx.store, DrawingRecord(image_id=ref.image_id, concept=concept, reader=reader, patch_x0=ref.x0,
                                 patch_y0=ref.y0, patch_size=ref.size, shape=m.shape, geometry=m.geometry,
                                 model_card=ctx.card_name),
        layer=cx.layer_of(ctx), ious=m.ious, tau=m.tau, mask=m.mask)
    _MATCHES.clear()  # the "label now" column and the unit map changed
    out = SaveResult(annotation_id=res.annotation_id, concept=concept, n_above=int(len(res.units_above)),
                     n_labeled=int(len(res.labeled_units)), replaced=dict(res.replaced))
    out.timings_s["store_and_label"] = time.perf_counter() - t0
    if retrain:
        from dashboard.ui.screens import reporting

        t0 = time.perf_counter()
        try:
            info = reporting.retrain(ctx, reader)
        except Exception as exc:  # noqa: BLE001 - the drawing is stored; the Report page can retrain
            out.retrain_error = str(exc)
        else:
            out.probe_version, out.probe_drawings = info.version, info.n_drawings
        out.timings_s["retrain"] = time.perf_counter() - t0
    return out

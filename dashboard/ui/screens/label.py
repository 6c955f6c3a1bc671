"""Label concepts: a patch on the drawing canvas, the concept palette, unit matching and saving.

The canvas shows the patch in display orientation (a right breast mirrored, as on the Read page)
at ``canvas_side`` pixels; ``dashboard.ui.canvas`` maps drawings back to model-space patch
pixels. As soon as a drawing arrives, every unit of the card's concept layer is matched against
it (the engine's IoU); Save stores the annotation and labels the units in one transaction.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from dashboard import imaging
from dashboard.data.store import DrawingRecord, ValidationError
from dashboard.engine import dissection
from dashboard.errors import ConceptLensError
from dashboard.ui import canvas
from dashboard.ui.context import AppContext
from dashboard.ui.screens.units import ready_exemplars
from dashboard.ui.types import TAU, LabelingError, PatchRef, WindowChoice
from dashboard.ui.work import concepts as cx
from dashboard.ui.work import images
from dashboard.ui.work.evidence import prefetch_evidence
from dashboard.ui.work.overlays import heat_rgb
from dashboard.ui.work.probe_versions import retrain as retrain_probes
from dashboard.ui.work.report_parts import prefetch_report
from dashboard.ui.work.unit_map import unit_scatter

#: Units of a drawing's match shown as a gallery of their top exemplars (best IoU first).
GALLERY_UNITS = 4

#: The canvas is at most MAX_CANVAS pixels wide (an integer zoom of the patch below that).
MAX_CANVAS = 448
DRAW_TOOLS = {"polygon": "Polygon", "freedraw": "Freehand", "rect": "Rectangle"}
#: Most matched units listed in the table under the unit map.
TABLE_UNITS = 50
#: Yellow of the best unit's region outside the drawing.
ABOVE_RGB = np.array([255, 213, 79])


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
    background_png: bytes = b""     # ``background`` as PNG, encoded once (the canvas gets it on every run)


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


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


def load_patch(ctx: AppContext, ref: PatchRef | None, window: WindowChoice = WindowChoice()) -> PatchView | None:
    """The patch to draw on, the palette, and what was drawn before on this image."""
    if ref is None:
        return None
    row = ctx.store.get_image(ref.image_id)
    gray, _ = images.display_gray(ctx, row, window)                    # (h, w) uint8, model orientation
    patch = imaging.crop_patch(gray, ref.x0, ref.y0, ref.size)  # (S, S), zero outside the image
    mirrored = imaging.display_flip(row["laterality"])
    if mirrored:
        patch = patch[:, ::-1]
    side = canvas_side(ref.size)
    big = Image.fromarray(np.ascontiguousarray(patch)).resize((side, side), Image.NEAREST).convert("RGB")
    notes = []
    if not ctx.model_ready:
        notes.append(f"Units cannot be matched without the model: {ctx.model_error}")
    return PatchView(
        ref=ref, image=row, label=f"{row['laterality']} {row['view']} · {row['case_id']}",
        background=np.asarray(big), canvas_size=side, mirrored=mirrored, palette=palette(ctx),
        annotations=list_drawings(ctx, ref.image_id),
        layer=cx.layer_of(ctx), notes=notes, background_png=png_bytes(big))


def prepare_patch(ctx: AppContext, ref: PatchRef) -> bool:
    """Start computing the open patch's activation and unit masks in the background (once), so
    the reader's first drawing only waits for its own IoUs. True when a thread was started."""
    return cx.prefetch_unit_masks(ctx, ref)


def prepare_report(ctx: AppContext, image_id: str, *, saved: bool = True) -> bool:
    """Start preparing the Report of the image being labeled in the background: its model evidence
    (once per image), then its report under the latest probe version (once per version, so
    right after a Save retrained the probes). Save -> Report then finds it ready. True when a
    background thread was started; cheap when there is nothing new.

    saved: False before this reader's first Save: only the evidence then. The report under the
    probe version of before the Save is not the one the Save leads to, and building its panels
    (Python-heavy image work) while the reader draws slowed the first drawing's IoU panel."""
    started = False
    for prefetch in (prefetch_evidence, prefetch_report) if saved else (prefetch_evidence,):
        try:
            started = bool(prefetch(ctx, image_id)) or started
        except Exception:  # noqa: BLE001 - only a head start; the Report computes it otherwise
            pass
    return started


def object_key(o: dict) -> str:
    """A canvas object's identity: the hash of its Fabric JSON (a moved or reshaped object is a new one)."""
    return hashlib.sha1(json.dumps(o, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class SaveRecord:
    """What Save stored from one patch's canvas in this session. The canvas is never reset after a
    Save (a remount would drop clicks made meanwhile), so its saved outlines stay on it: ``saved``
    names them (``object_key``) and only the other objects make up the next drawing. A second
    click on Save for the same outlines finds them here and stores nothing."""

    saved: set[str] = field(default_factory=set)
    last: dict | None = None        # the last Save's result, for its message
    error: str | None = None        # why the last Save failed (shown once)


def unsaved_objects(json_data: dict | None, record: SaveRecord) -> tuple[dict, tuple[str, ...]]:
    """The canvas JSON without the objects already saved, and the keys of the objects left."""
    objects = [o for o in (json_data or {}).get("objects") or [] if object_key(o) not in record.saved]
    return {**(json_data or {}), "objects": objects}, tuple(object_key(o) for o in objects)


def save_once(ctx: AppContext, record: SaveRecord, keys: tuple[str, ...], view: PatchView, m: MatchView,
              concept: str, reader: str, *, retrain: bool = False) -> SaveResult | None:
    """``save`` the drawing made of the canvas objects ``keys``, unless they are saved already (a
    second click on Save): then None. The record is updated in place, with the result or the
    error (a ConceptLensError is kept in ``record.error``, not raised)."""
    if not keys or set(keys) <= record.saved:
        return None
    try:
        res = save(ctx, view, m, concept, reader, retrain=retrain)
    except ConceptLensError as exc:  # UnknownConceptError, ValidationError, StoreError, LabelingError
        record.error = str(exc)
        return None
    record.saved.update(keys)
    record.error = None
    record.last = {"concept": res.concept, "n_labeled": res.n_labeled, "n_above": res.n_above, "tau": m.tau,
                   "probe_version": res.probe_version, "probe_drawings": res.probe_drawings,
                   "retrain_error": res.retrain_error, "annotation_id": res.annotation_id}
    return res


def saved_message(last: dict) -> str:
    """The Saved line of a ``SaveRecord.last``."""
    probe = (f" Concept probe v{last['probe_version']} retrained on {last['probe_drawings']} drawing(s): "
             "see the Report." if last.get("probe_version") else "")
    return (f"Saved {last['concept']!r}: labeled {last['n_labeled']} unit(s) "
            f"({last['n_above']} above IoU {last['tau']:g}).{probe}")


def list_drawings(ctx: AppContext, image_id: str) -> list[dict]:
    """The drawings already saved on an image, for the page's table."""
    return [{"annotation_id": a.annotation_id, "concept": a.concept, "reader": a.reader,
             "patch": (a.patch_x0, a.patch_y0, a.patch_size), "shape": a.shape, "created_at": a.created_at}
            for a in ctx.store.list_annotations(image_id=image_id)]


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


def display_patch(ctx: AppContext, view: PatchView) -> np.ndarray:
    """The windowed patch of a view, model orientation, (S, S) uint8."""
    return images.display_patch(ctx, view.image, view.ref)


def _best_unit_rgb(ctx: AppContext, view: PatchView, act, stats, unit: int, mask: np.ndarray) -> np.ndarray:
    """The best unit's activation as heat over the patch, its region above threshold in yellow and
    the drawing's outline in blue: (S, S, 3) uint8, display orientation."""
    best_map = cx.upsample(np.asarray(act[unit]), view.ref.size)          # (S, S)
    on = best_map > float(stats.thresholds[unit])
    vmax = max(float(best_map.max()), 1e-6)
    rgb = heat_rgb(display_patch(ctx, view), np.clip(best_map, 0, None) / vmax, outline=mask)
    rgb[on & ~mask] = (0.5 * rgb[on & ~mask] + 0.5 * ABOVE_RGB).astype(np.uint8)
    if view.mirrored:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)


def _compute_match(ctx: AppContext, view: PatchView, drawings: list[canvas.Drawing], stats, tau: float,
                   drawn: tuple[np.ndarray, str, object]) -> MatchView:
    mask, shape, geometry = drawn
    ref = view.ref
    act = cx.patch_activation(ctx, ref)                                       # (C, h, w)
    m = dissection.match_drawing(act, stats.thresholds, mask, tau=tau, prepared=cx.patch_unit_masks(ctx, ref, stats))
    labels = {int(r["unit"]): r["concept"] for r in ctx.store.list_unit_labels(ctx.card_name, cx.layer_of(ctx))}
    above = [int(u) for u in m.units_above]
    table = [{"unit": u, "iou": round(float(m.ious[u]), 3), "label now": labels.get(u, "")} for u in above[:TABLE_UNITS]]
    fig = unit_scatter(ctx, stats, labels, highlight={u: float(m.ious[u]) for u in above},
                       selected=m.best_unit, title=f"{len(above)} unit(s) with IoU > {tau:g}")
    return MatchView(drawings=drawings, mask=mask, shape=shape, geometry=geometry, ious=m.ious,
                     best_unit=m.best_unit, best_iou=m.best_iou, units_above=above, tau=tau,
                     best_rgb=_best_unit_rgb(ctx, view, act, stats, m.best_unit, mask), table=table, figure=fig)


def match(ctx: AppContext, view: PatchView, drawings: list[canvas.Drawing], tau: float | None = None) -> MatchView:
    """IoU of every unit of the concept layer with the drawing (cached by patch and geometry)."""
    tau = TAU if tau is None else float(tau)
    stats = cx.require_stats(ctx)
    drawn = drawings_mask(drawings, view.ref.size)
    key = (ctx.card_name, ctx.weights_sha, stats.key, view.image["sha256"], view.ref.as_tuple(),
           json.dumps(drawn[2], sort_keys=True), tau)
    return ctx.caches.matches.get(key, lambda: _compute_match(ctx, view, drawings, stats, tau, drawn))


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
    if not reader:
        raise LabelingError("Enter your reader name first.")
    ref = view.ref
    t0 = time.perf_counter()
    res = dissection.label_units_from_drawing(
        ctx.store, DrawingRecord(image_id=ref.image_id, concept=concept, reader=reader, patch_x0=ref.x0,
                                 patch_y0=ref.y0, patch_size=ref.size, shape=m.shape, geometry=m.geometry,
                                 model_card=ctx.card_name),
        layer=cx.layer_of(ctx), ious=m.ious, tau=m.tau, mask=m.mask)
    ctx.caches.matches.clear()  # the "label now" column and the unit map changed
    out = SaveResult(annotation_id=res.annotation_id, concept=concept, n_above=int(len(res.units_above)),
                     n_labeled=int(len(res.labeled_units)), replaced=dict(res.replaced))
    out.timings_s["store_and_label"] = time.perf_counter() - t0
    if retrain:
        t0 = time.perf_counter()
        try:
            info = retrain_probes(ctx, reader)
        except Exception as exc:  # noqa: BLE001 - the drawing is stored; the Report page can retrain
            out.retrain_error = str(exc)
        else:
            out.probe_version, out.probe_drawings = info.version, info.n_drawings
        out.timings_s["retrain"] = time.perf_counter() - t0
    return out


def unit_gallery(ctx: AppContext, m: MatchView, per_unit: int = 3) -> tuple[list[dict], int]:
    """The drawing's best units (IoU above tau, else the best one) with their top exemplars: rows
    {unit, iou, label, exemplars [(RGB, caption)]} of those whose exemplars are built, and how many
    are still being built in the background (they show on the next run)."""
    stats = cx.find_stats(ctx)
    if stats is None:
        return [], 0
    units = list(m.units_above[:GALLERY_UNITS]) or [int(m.best_unit)]
    # while the Report's evidence is being prepared (the reader's next wait), the exemplars wait their turn
    busy = bool(ctx.caches.evidence_head_start) or bool(ctx.caches.unit_masks_head_start)
    ready, missing = ready_exemplars(ctx, stats, units, defer=busy)
    labels = {int(r["unit"]): r["concept"] for r in ctx.store.list_unit_labels(ctx.card_name, cx.layer_of(ctx))}
    rows = [{"unit": u, "iou": float(m.ious[u]), "label": labels.get(u, ""), "exemplars": ready[u][:per_unit]}
            for u in units if u in ready]
    return rows, len(missing)

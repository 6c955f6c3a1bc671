"""Label concepts: a patch on the drawing canvas, the concept palette, unit matching and saving.

The canvas shows the patch in display orientation (a right breast mirrored, as on the Read page)
at ``CANVAS_SCALE`` times its model size; ``dashboard.canvas`` maps drawings back to model-space
patch pixels. As soon as a drawing arrives, every unit of the card's concept layer is matched
against it (the engine's IoU); Save stores the annotation and labels the units in one transaction.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .. import canvas
from ..context import AppContext
from ..memo import Memo
from .reading import PatchRef, display_gray, model_image, WindowChoice

#: Canvas pixels per model pixel when the patch is small; the canvas is at most MAX_CANVAS wide.
MAX_CANVAS = 448
DRAW_TOOLS = {"polygon": "Polygon", "freedraw": "Freehand", "rect": "Rectangle"}

_MATCHES = Memo(64)  # (card, weights, layer, image sha, patch, drawing geometry) -> MatchView


class LabelingError(ValueError):
    """The patch or drawing cannot be used; the message says what to do."""


@dataclass
class PatchView:
    ref: PatchRef
    image: dict
    label: str                      # "R CC · SYN-0001"
    background: np.ndarray          # (C, C, 3) uint8 shown under the canvas, display orientation
    canvas_size: int                # C, canvas pixels per side
    mirrored: bool
    palette: "OrderedDict[str, list[dict]]"   # lexicon group -> concepts (name, colour, description)
    annotations: list[dict]         # drawings already saved on this image
    layer: str
    notes: list[str] = field(default_factory=list)


def canvas_side(size: int) -> int:
    """Canvas side in pixels for a patch of ``size`` model pixels: an integer zoom, at most MAX_CANVAS."""
    return int(size * max(1, MAX_CANVAS // max(size, 1))) if size <= MAX_CANVAS else MAX_CANVAS


def palette(ctx: AppContext) -> "OrderedDict[str, list[dict]]":
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

    from .. import imaging

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


def drawings_from_canvas(view: PatchView, json_data: dict | None, fit: dict | None) -> list[canvas.Drawing]:
    """The canvas JSON as usable drawings in model-space patch pixels (DrawingError if none)."""
    drawings = canvas.parse_canvas(json_data, patch_size=view.ref.size, fit=fit,
                                   canvas_size=(view.canvas_size, view.canvas_size), mirror=view.mirrored)
    return canvas.validate(drawings, view.ref.size)


def add_concept(ctx: AppContext, name: str, group: str, colour: str, description: str, reader: str) -> str:
    """Add a custom concept to the palette; returns its stored (normalised) name."""
    return ctx.store.save_concept(name, colour=colour, lexicon_group=(group or "custom").strip() or "custom",
                                  description=description, actor=reader or "unknown")


def start_session(ctx: AppContext, reader: str) -> str:
    """Record the reader's name (asked once per session); ValidationError on an empty name."""
    return ctx.store.save_reader(reader)

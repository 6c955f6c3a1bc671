"""Read: a case's mammograms hung as radiologists hang them, with window/level and overlays.

Hanging: RCC | LCC on the first row, RMLO | LMLO below, every image in model space (card pixel
spacing, chest wall left) and a right breast mirrored for display (``imaging.display_flip``), so
the chest walls meet in the middle. Overlays (the lesion-probability map, a captum attribution)
live in model space and are mirrored with their image. The suspicious patches are listed in
model pixels and drawn as numbered boxes.

Everything expensive is cached by its inputs (image SHA-256, model card, weights SHA-256, window,
method) in ``ctx.caches`` (see ``dashboard.ui.work.images``), so a rerun that changed nothing
recomputes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import model_zoo
from dashboard import imaging
from dashboard.data.domain import card_modality, case_domains, domain_warning, suggest_card
from dashboard.data.files import BURNED_IN_WARNING, burned_in_annotation
from dashboard.data.store import StoreError
from dashboard.ui.context import AppContext
from dashboard.ui.types import PatchRef, ReadingError, WindowChoice, operating_threshold
from dashboard.ui.work.concepts import find_stats, patch_unit_masks, prefetch_unit_masks
from dashboard.ui.work.evidence import prefetch_evidence
from dashboard.ui.work.images import VIEWER_METHODS as VIEWER_METHODS  # the page's method choices
from dashboard.ui.work.images import (
    attribution_for,
    display_gray,
    lesion_map_for,
    load_mammogram,
    model_image,
    model_spacing,
    patch_size,
)
from dashboard.ui.work.overlays import blend, jpeg
from dashboard.ui.work.probe_versions import prepare_drawn_patches
from dashboard.ui.work.suggestions import where_to_draw

OVERLAYS = ("none", "lesion map", "attribution")
HANGING = (("R", "CC"), ("L", "CC")), (("R", "MLO"), ("L", "MLO"))
#: Box colours of the most suspicious patch and of the others.
FIRST_BOX, OTHER_BOX = "#ffd54f", "#4fc3f7"

@dataclass
class Tile:
    """One hung image, ready to show."""

    image_id: str
    laterality: str
    view: str
    label: str
    rgb: np.ndarray | None            # (h, w, 3) uint8, display orientation
    mirrored: bool                    # display = model space mirrored left-right
    model_shape: tuple[int, int]
    window: tuple[float, float, str]  # centre, width, name actually used
    presets: list[str]                # the file's own windows, named for the preset box
    score: float | None = None
    patches: list[dict] = field(default_factory=list)
    error: str | None = None
    jpeg: bytes = b""                 # ``rgb`` encoded for the browser (cached with it)


@dataclass
class ReadingView:
    case_ids: list[str]
    case: dict | None
    rows: list[list[Tile | None]]
    extra: list[Tile]
    patches: list[dict]
    presets: list[str]
    overlay: str
    method: str
    notes: list[str] = field(default_factory=list)
    domain_warnings: list[str] = field(default_factory=list)  # images from another domain than the model's

    @property
    def tiles(self) -> list[Tile]:
        return [t for row in self.rows for t in row if t is not None] + list(self.extra)


@dataclass(frozen=True)
class Overlay:
    """What to paint over every image: ``kind`` one of OVERLAYS, the attribution ``method``, ``opacity``."""

    kind: str = "none"
    method: str = "gradcam"
    opacity: float = 0.5


# ---------------------------------------------------------------- rendering helpers
def draw_boxes(rgb: np.ndarray, boxes: list[tuple[int, int, int, str, str]]) -> np.ndarray:
    """Numbered rectangles (x0, y0, size, label, colour) in display pixels."""
    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    lw = max(2, min(im.size) // 250)
    font = ImageFont.load_default(size=max(12, min(im.size) // 28))
    for x0, y0, size, label, colour in boxes:
        d.rectangle([x0, y0, x0 + size - 1, y0 + size - 1], outline=colour, width=lw)
        d.text((x0 + 3 * lw, y0 + 2 * lw), label, fill=colour, font=font, stroke_width=1, stroke_fill="#000000")
    return np.asarray(im)


def to_display_box(x0: int, size: int, width: int, mirrored: bool) -> int:
    """A model-space patch's left edge in display pixels."""
    return width - (x0 + size) if mirrored else x0


def display_to_model_x(x: float, width: int, mirrored: bool) -> float:
    return (width - x) if mirrored else x


# ---------------------------------------------------------------- the screen
def hang(images: list[dict]) -> tuple[list[list[dict | None]], list[dict]]:
    """Rows of the standard hanging (RCC | LCC, RMLO | LMLO) and the images that fit no slot."""
    rows: list[list[dict | None]] = []
    used: set[str] = set()
    for slots in HANGING:
        row = []
        for lat, view in slots:
            hit = next((i for i in images if i["laterality"] == lat and i["view"] == view
                        and i["image_id"] not in used), None)
            if hit:
                used.add(hit["image_id"])
            row.append(hit)
        if any(row):
            rows.append(row)
    return rows, [i for i in images if i["image_id"] not in used]


def _model_layer(ctx: AppContext, row: dict, overlay: Overlay):
    """(score, top patches, heat (h, w) in [0, 1] or None) of an image under the model in use."""
    pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"])
    heat = None
    if overlay.kind == "lesion map" or pred is None:
        lm = lesion_map_for(ctx, row["image_id"])
        score, tops = lm.score, lm.top_patches
        if overlay.kind == "lesion map":
            # only what the model calls suspicious is coloured: above its operating point
            thr = operating_threshold(ctx.card)
            heat = np.clip((lm.prob - thr) / max(1.0 - thr, 1e-6), 0.0, 1.0)
    else:
        score, tops = pred["score"], pred["top_patches"]
    if overlay.kind == "attribution":
        heat = np.clip(attribution_for(ctx, row["image_id"], overlay.method).map, 0, None)
    return score, tops, heat


def window_names(m) -> list[str]:
    """The preset box's names of a mammogram's own windows, in file order."""
    return [f"{i + 1}: {w.name or 'window'} (C {w.center:g} / W {w.width:g})" for i, w in enumerate(m.windows)]


#: JPEG quality of the hung images sent to the browser.
TILE_JPEG_QUALITY = 90


def _tile(ctx: AppContext, row: dict, window: WindowChoice, overlay: Overlay) -> Tile:
    """One image of the hanging, windowed, with its overlay and numbered suspicious patches.

    The painted image and its JPEG are cached by what they show (image, window, model, overlay,
    patches), for every session: a rerun, or another reader opening the case, only sends them."""
    lat, view = row["laterality"] or "?", row["view"] or "?"
    label = f"{lat} {view}"
    mirrored = imaging.display_flip(lat)
    gray, win = display_gray(ctx, row, window)
    m = load_mammogram(ctx, row)
    presets = window_names(m)
    h, w = gray.shape
    score, patches, heat = None, [], None
    if ctx.model_ready:
        score, tops, heat = _model_layer(ctx, row, overlay)
        patches = [{"image_id": row["image_id"], "view": label, "rank": rank, "x0": int(x0), "y0": int(y0),
                    "size": int(size), "probability": float(prob)}
                   for rank, (x0, y0, size, prob) in enumerate(tops, start=1)]

    def paint():
        rgb = np.repeat(gray[..., None], 3, axis=2) if heat is None else blend(gray, heat, overlay.opacity)
        if mirrored:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        boxes = [(to_display_box(p["x0"], p["size"], w, mirrored), p["y0"], p["size"], str(p["rank"]),
                  FIRST_BOX if p["rank"] == 1 else OTHER_BOX) for p in patches]
        rgb = draw_boxes(rgb, boxes) if boxes else rgb
        return rgb, jpeg(rgb, TILE_JPEG_QUALITY)

    key = (row["sha256"], model_spacing(ctx), row.get("pixel_spacing_mm"), window.key(), ctx.card_name,
           ctx.weights_sha, overlay if heat is not None else None,
           tuple((p["x0"], p["y0"], p["size"], p["probability"]) for p in patches))
    rgb, encoded = ctx.caches.tiles.get(key, paint)
    return Tile(row["image_id"], lat, view, label, rgb, mirrored, (h, w),
                (float(win.center), float(win.width), win.name or ""), presets, score, patches, jpeg=encoded)


def _tile_or_error(ctx: AppContext, row: dict | None, window: WindowChoice, overlay: Overlay) -> Tile | None:
    if row is None:
        return None
    try:
        return _tile(ctx, row, window, overlay)
    except Exception as exc:  # noqa: BLE001 - one unreadable image must not hide the others
        lat, view = row["laterality"] or "?", row["view"] or "?"
        return Tile(row["image_id"], lat, view, f"{lat} {view}", None, imaging.display_flip(lat), (0, 0),
                    (0.0, 0.0, ""), [], error=str(exc))


def current_case(ctx: AppContext, case_id: str | None) -> tuple[list[str], str | None]:
    """The store's case ids and the case the Read page shows: ``case_id`` when it exists, else the first."""
    case_ids = [c["case_id"] for c in ctx.store.list_cases()]
    if case_id in case_ids:
        return case_ids, case_id
    return case_ids, (case_ids[0] if case_ids else None)


def case_presets(ctx: AppContext, case_id: str | None) -> list[str]:
    """The names of the case's file windows for the preset box, as ``load_reading`` gives them (the
    first image that has the i-th window names it), without windowing or scoring anything: the
    page builds its controls from them before the images are prepared, so no second run is needed.
    An unreadable image names none."""
    _, case_id = current_case(ctx, case_id)
    if case_id is None:
        return []
    presets: list[str] = []
    rows_raw, extra_raw = hang(ctx.store.list_images(case_id=case_id))
    for image in [r for hung in rows_raw for r in hung if r is not None] + extra_raw:
        try:
            m = load_mammogram(ctx, image)
        except Exception:  # noqa: BLE001 - its tile shows the error
            continue
        presets += window_names(m)[len(presets):]
    return presets


def load_reading(ctx: AppContext, case_id: str | None, window: WindowChoice = WindowChoice(), overlay: str = "none",
                 method: str = "gradcam", opacity: float = 0.5) -> ReadingView:
    """Everything the Read page shows for one case. Images that fail to load become tiles with
    an error, the others still show; a missing model only disables the overlays."""
    if overlay not in OVERLAYS:
        raise ReadingError(f"Unknown overlay {overlay!r}; choose one of {', '.join(OVERLAYS)}.")
    case_ids, case_id = current_case(ctx, case_id)
    if case_id is None:
        return ReadingView(case_ids=[], case=None, rows=[], extra=[], patches=[], presets=[], overlay=overlay,
                           method=method, notes=["The store has no cases yet."])
    case = ctx.store.get_case(case_id)
    images = ctx.store.list_images(case_id=case_id)
    notes = [BURNED_IN_WARNING.format(label=f"{r['laterality']} {r['view']}".strip() or r["image_id"])
             for r in images if burned_in_annotation(r)]
    if not images:
        notes.append("This case has no images.")
    warnings = case_domain_warnings(ctx, case_id)
    notes = warnings + notes
    if overlay != "none" and not ctx.model_ready:
        notes.append(f"Overlays need the model, which is not available: {ctx.model_error}")
        overlay = "none"
    paint = Overlay(overlay, method, opacity)
    rows_raw, extra_raw = hang(images)
    rows = [[_tile_or_error(ctx, r, window, paint) for r in row] for row in rows_raw]
    extra = [_tile_or_error(ctx, r, window, paint) for r in extra_raw]
    view = ReadingView(case_ids=case_ids, case=case, rows=rows, extra=extra, patches=[], presets=[],
                       overlay=overlay, method=method, notes=notes, domain_warnings=warnings)
    for t in view.tiles:  # the first image that has the i-th window names it
        view.presets += t.presets[len(view.presets):]
        view.patches += t.patches
    view.patches.sort(key=lambda p: -p["probability"])
    return view


def patch_at(ctx: AppContext, image_id: str, x: float, y: float, *, display: bool = True) -> PatchRef:
    """The patch of the card's size centred on a point of an image.

    (x, y) in display pixels of the hung image (``display=True``: mirrored for a right breast)
    or model pixels. Raises ReadingError when the point is outside the image.
    """
    row = ctx.store.get_image(image_id)
    _, _, frame = model_image(ctx, row)
    h, w = frame.model_shape
    if not (0 <= x <= w and 0 <= y <= h):
        raise ReadingError(f"The point ({x:.0f}, {y:.0f}) is outside the image ({w} x {h} model pixels).")
    mx = display_to_model_x(x, w, imaging.display_flip(row["laterality"])) if display else x
    size = patch_size(ctx)
    return PatchRef(image_id, int(round(mx - size / 2)), int(round(y - size / 2)), size)


def prepare_labeling(ctx: AppContext, ref: PatchRef) -> bool:
    """A patch is being opened for labeling: start preparing, in the background, first what the
    reader's first drawing needs (the patch's activation and unit masks), then the Report's model
    evidence of its image (``evidence.prefetch_evidence``, which waits for the first), while the
    reader signs in and draws: the evidence's long model passes never hold the model while the
    drawing's part waits. True when a thread was started."""
    try:
        started = prefetch_unit_masks(ctx, ref)
        stats = find_stats(ctx)

        def after():  # what the reader needs first: the first drawing's unit masks, then Save's retrain inputs
            if stats is not None:
                patch_unit_masks(ctx, ref, stats)
            prepare_drawn_patches(ctx)

        return prefetch_evidence(ctx, ref.image_id, after=after) or started
    except Exception:  # noqa: BLE001 - only a head start: the pages compute it otherwise and show why
        return False


# ---------------------------------------------------------------- where to draw next
@dataclass
class DrawNext:
    """The Read page's "Where to draw next" list for a case: one row per suggestion (rank, view,
    image_id, x0, y0, size, score and its parts, reason) best first, or a note saying why there is none."""

    rows: list[dict]
    note: str = ""

    def ref(self, i: int) -> PatchRef:
        r = self.rows[i]
        return PatchRef(r["image_id"], r["x0"], r["y0"], r["size"])


def draw_next(ctx: AppContext, case_id: str | None, limit: int = 8) -> DrawNext:
    """Where a drawing on this case's images would teach the concept probes most (``work.suggestions``)."""
    if not ctx.model_ready:
        return DrawNext([], f"Suggestions need the model, which is not available: {ctx.model_error}")
    _, case_id = current_case(ctx, case_id)
    images = ctx.store.list_images(case_id=case_id) if case_id else []
    found = where_to_draw(ctx, [r["image_id"] for r in images], limit=limit)
    if found is None:
        return DrawNext([], "No concept probe yet: draw a few concepts and retrain the probes (Label or Report "
                            "page); then this list says where a drawing would teach them most.")
    views = {r["image_id"]: f"{r['laterality'] or '?'} {r['view'] or '?'}" for r in images}
    rows = [{"rank": i + 1, "view": views.get(s.image_id, s.image_id), "image_id": s.image_id, "x0": s.x0,
             "y0": s.y0, "size": s.size, "source": s.source, "score": round(s.score, 3),
             "uncertainty": round(s.uncertainty, 3), "disagreement": round(s.disagreement, 3),
             "novelty": round(s.novelty, 3), "reason": s.reason} for i, s in enumerate(found)]
    return DrawNext(rows, "" if rows else "Every patch of this case has been drawn on.")


# ---------------------------------------------------------------- clicking a point on an image
#: Prefix of the session-state keys of the Read page's clickable images (one per image id).
CLICK_KEY = "read.img."


def new_click(session: dict, seen: float | None) -> tuple[str, dict] | None:
    """The newest click on one of the Read page's images not yet taken: (image_id, its value
    {"x", "y", "width", "height", "unix_time"}), or None. ``seen``: the unix time of the last one taken."""
    best = None
    for key in list(session.keys()):
        value = session.get(key) if isinstance(key, str) and key.startswith(CLICK_KEY) else None
        if not isinstance(value, dict) or value.get("unix_time") is None:
            continue
        if seen is not None and float(value["unix_time"]) <= float(seen):
            continue
        if best is None or value["unix_time"] > best[1]["unix_time"]:
            best = (key[len(CLICK_KEY):], value)
    return best


def patch_from_click(ctx: AppContext, image_id: str, value: dict) -> PatchRef:
    """The patch centred on a click on a shown image: (x, y) in shown pixels of an image shown
    ``value["width"]`` px wide (display orientation) -> ``patch_at`` in display pixels."""
    row = ctx.store.get_image(image_id)
    if row is None:
        raise ReadingError(f"Image {image_id!r} is not in the store.")
    _, _, frame = model_image(ctx, row)
    h, w = frame.model_shape
    scale = w / max(float(value.get("width") or w), 1.0)
    return patch_at(ctx, image_id, float(value["x"]) * scale, float(value["y"]) * scale)


# ---------------------------------------------------------------- the model for this case
def case_domain_warnings(ctx: AppContext, case_id: str) -> list[str]:
    """The domain warnings of a case's images under the model in use, each once (data.domain)."""
    if ctx.card is None:
        return []
    out: list[str] = []
    for d in case_domains(ctx.store, case_id):
        w = domain_warning(ctx.card, d)
        if w and w not in out:
            out.append(w)
    return out


@dataclass(frozen=True)
class CardChoice:
    """The cards a reader may score a case with, and the one trained on the case's domain ('' if none)."""

    options: list[str]
    suggested: str
    current: str

    @property
    def switch(self) -> bool:
        """True when another card than the one in use fits the case's images."""
        return bool(self.suggested) and self.suggested != self.current


def case_card_choice(ctx: AppContext, case_id: str | None) -> CardChoice:
    """Cards with a lesion score (built-in and the user's), and the one matching the case's domain.
    A card without a recorded domain (a user's, or a test's) is never switched away from."""
    try:
        cards = [c for c in model_zoo.list_cards(extra_dirs=[ctx.settings.user_cards_dir]) if c.positive_class]
    except model_zoo.ModelZooError:
        cards = []
    options = [c.name for c in cards]
    if ctx.card_name not in options:
        options.insert(0, ctx.card_name)
    if case_id is None or ctx.card is None or not card_modality(ctx.card):
        return CardChoice(options, "", ctx.card_name)
    try:
        domains = case_domains(ctx.store, case_id)
    except StoreError:  # the case is gone: nothing to suggest
        return CardChoice(options, "", ctx.card_name)
    return CardChoice(options, suggest_card(cards, domains, ctx.card_name), ctx.card_name)

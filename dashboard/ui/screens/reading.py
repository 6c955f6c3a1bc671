"""Read: a case's mammograms hung as radiologists hang them, with window/level and overlays.

Hanging: RCC | LCC on the first row, RMLO | LMLO below, every image in model space (card pixel
spacing, chest wall left) and a right breast mirrored for display (``imaging.display_flip``), so
the chest walls meet in the middle. Overlays (the lesion-probability map, a captum attribution)
live in model space and are mirrored with their image. The suspicious patches are listed in
model pixels and drawn as numbered boxes.

Everything expensive is cached by its inputs (image SHA-256, model card, weights SHA-256, window,
method) in ``Memo``s, so a rerun that changed nothing recomputes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dashboard.errors import ConceptLensError
from dashboard.ui.context import AppContext
from dashboard.ui.memo import Memo
from dashboard.ui.screens.worklist import operating_threshold

OVERLAYS = ("none", "lesion map", "attribution")
#: Attribution methods offered in the viewer (fast enough on a whole image on 2 CPU cores).
VIEWER_METHODS = ("gradcam", "saliency", "guided-gradcam")
HANGING = (("R", "CC"), ("L", "CC")), (("R", "MLO"), ("L", "MLO"))
#: Model pixel spacing used for display when no card is loaded.
FALLBACK_SPACING_MM = 0.2

_LOADED = Memo(24)        # image sha -> Mammogram
_PREPARED = Memo(24)      # (image sha, spacing, default spacing) -> (img, mask, Frame)
_DISPLAY = Memo(48)       # (image sha, spacing, window key) -> (h, w) uint8, model orientation
_LESION = Memo(48)        # (card, weights sha, image sha, spacing) -> LesionMap
_ATTR = Memo(24)          # (card, weights sha, image sha, method) -> Attribution


class ReadingError(ConceptLensError, ValueError):
    """A case or image cannot be shown; the message says why."""


@dataclass(frozen=True)
class WindowChoice:
    """How to window every image of the case.

    mode    "file": the i-th window the file carries (``preset``), else its default;
            "auto": robust percentiles of the breast; "manual": ``center`` / ``width`` in the
            file's modality units
    """

    mode: str = "file"
    preset: int = 0
    center: float | None = None
    width: float | None = None

    def key(self) -> tuple:
        return (self.mode, self.preset if self.mode == "file" else None,
                self.center if self.mode == "manual" else None, self.width if self.mode == "manual" else None)


@dataclass(frozen=True)
class PatchRef:
    """A patch to label: ``(x0, y0, size)`` in model pixels of ``image_id``."""

    image_id: str
    x0: int
    y0: int
    size: int

    def as_tuple(self) -> tuple[str, int, int, int]:
        return (self.image_id, int(self.x0), int(self.y0), int(self.size))

    @classmethod
    def from_tuple(cls, t) -> PatchRef:
        return cls(str(t[0]), int(t[1]), int(t[2]), int(t[3]))


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
    presets: list[str]
    score: float | None = None
    patches: list[dict] = field(default_factory=list)
    error: str | None = None


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

    @property
    def tiles(self) -> list[Tile]:
        return [t for row in self.rows for t in row if t is not None] + list(self.extra)


# ---------------------------------------------------------------- cached pieces
def model_spacing(ctx: AppContext) -> float:
    return float(getattr(ctx.card, "pixel_spacing_mm", 0) or FALLBACK_SPACING_MM)


def load_mammogram(ctx: AppContext, row: dict):
    from dashboard import imaging

    return _LOADED.get(row["sha256"], lambda: imaging.load_image(row["path"], show_phi=ctx.settings.show_phi))


def model_image(ctx: AppContext, row: dict):
    """(img (h, w) float32 [0, 1], mask (h, w) bool, Frame) of a store image row, cached."""
    from dashboard import imaging

    spacing = model_spacing(ctx)
    default = row.get("pixel_spacing_mm")
    return _PREPARED.get((row["sha256"], spacing, default), lambda: imaging.prepare_model_image(
        load_mammogram(ctx, row), spacing, default_spacing_mm=default))


def _window_for(m, choice: WindowChoice, mask_src=None):
    from dashboard import imaging

    if choice.mode == "manual" and choice.center is not None and choice.width:
        return imaging.Window(float(choice.center), max(float(choice.width), 1.0), "MANUAL")
    if choice.mode == "auto":
        work = -m.pixels if m.invert else m.pixels
        w = imaging.auto_window(work)
        return imaging.Window(-w.center, w.width, "AUTO") if m.invert else w
    if m.windows:
        return m.windows[min(max(int(choice.preset), 0), len(m.windows) - 1)]
    return imaging.default_window(m)


def display_gray(ctx: AppContext, row: dict, choice: WindowChoice) -> tuple[np.ndarray, Any]:
    """The windowed image resampled onto the model grid, model orientation: ((h, w) uint8, Window)."""
    from dashboard import imaging

    m = load_mammogram(ctx, row)
    window = _window_for(m, choice)

    def compute():
        _, _, frame = model_image(ctx, row)
        shown = imaging.window_image(m, window).astype(np.float32)  # (H, W) source space
        g = imaging.resample(shown, frame)  # (h, w) model grid, before the flip
        if frame.flip:
            g = g[:, ::-1]
        return np.ascontiguousarray(np.clip(np.rint(g), 0, 255).astype(np.uint8))

    key = (row["sha256"], model_spacing(ctx), row.get("pixel_spacing_mm"), choice.key())
    return _DISPLAY.get(key, compute), window


def lesion_map_for(ctx: AppContext, image_id: str):
    """The model's lesion map of an image (cached); its score is saved as the worklist score."""
    ctx.require_model()
    row = ctx.store.get_image(image_id)

    def compute():
        from dashboard.engine import inference

        img, mask, _ = model_image(ctx, row)
        lm = inference.compute_lesion_map(ctx.model, ctx.card, img, mask)
        ctx.store.save_prediction(ctx.card_name, ctx.weights_sha, image_id, lm.score,
                                  [list(map(float, p)) for p in lm.top_patches])
        return lm

    return _LESION.get((ctx.card_name, ctx.weights_sha, row["sha256"], model_spacing(ctx)), compute)


def attribution_for(ctx: AppContext, image_id: str, method: str):
    """A captum attribution over the whole image (cached by model, weights, image and method)."""
    ctx.require_model()
    if method not in VIEWER_METHODS:
        raise ReadingError(f"Unknown attribution method {method!r}; choose one of {', '.join(VIEWER_METHODS)}.")
    row = ctx.store.get_image(image_id)

    def compute():
        from dashboard.engine import attribution

        img, mask, _ = model_image(ctx, row)
        return attribution.attribute_image(ctx.model, ctx.card, img, mask, attribution.AttributionConfig(method=method))

    return _ATTR.get((ctx.card_name, ctx.weights_sha, row["sha256"], model_spacing(ctx), method), compute)


# ---------------------------------------------------------------- rendering helpers
def blend(gray: np.ndarray, heat: np.ndarray, alpha: float, vmax: float = 1.0, cmap: str = "inferno") -> np.ndarray:
    """Grey (h, w) uint8 + heat (h, w) -> RGB uint8, the colour's opacity growing with the heat, so
    cold regions keep the plain image. Signed maps show their positive part."""
    import matplotlib

    g = gray.astype(np.float32)[..., None] / 255.0
    h = np.clip(np.nan_to_num(heat.astype(np.float32)) / max(float(vmax), 1e-6), 0.0, 1.0)
    colour = matplotlib.colormaps[cmap](h)[..., :3]
    a = (alpha * np.sqrt(h))[..., None]
    return np.clip(np.rint(((1 - a) * g + a * colour) * 255), 0, 255).astype(np.uint8)


def draw_boxes(rgb: np.ndarray, boxes: list[tuple[int, int, int, str, str]]) -> np.ndarray:
    """Numbered rectangles (x0, y0, size, label, colour) in display pixels."""
    from PIL import Image, ImageDraw, ImageFont

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


def load_reading(ctx: AppContext, case_id: str | None, window: WindowChoice = WindowChoice(), overlay: str = "none",
                 method: str = "gradcam", opacity: float = 0.5) -> ReadingView:
    """Everything the Read page shows for one case. Images that fail to load become tiles with
    an error, the others still show; a missing model only disables the overlays."""
    from dashboard import imaging

    if overlay not in OVERLAYS:
        raise ReadingError(f"Unknown overlay {overlay!r}; choose one of {', '.join(OVERLAYS)}.")
    case_ids = [c["case_id"] for c in ctx.store.list_cases()]
    if case_id is None or case_id not in case_ids:
        if not case_ids:
            return ReadingView(case_ids=[], case=None, rows=[], extra=[], patches=[], presets=[], overlay=overlay,
                               method=method, notes=["The store has no cases yet."])
        case_id = case_ids[0]
    case = ctx.store.get_case(case_id)
    images = ctx.store.list_images(case_id=case_id)
    notes = []
    if not images:
        notes.append("This case has no images.")
    if overlay != "none" and not ctx.model_ready:
        notes.append(f"Overlays need the model, which is not available: {ctx.model_error}")
        overlay = "none"
    rows_raw, extra_raw = hang(images)
    presets: list[str] = []
    all_patches: list[dict] = []

    def tile_for(row: dict | None) -> Tile | None:
        if row is None:
            return None
        lat, view = row["laterality"] or "?", row["view"] or "?"
        label = f"{lat} {view}"
        mirrored = imaging.display_flip(lat)
        try:
            gray, win = display_gray(ctx, row, window)
            m = load_mammogram(ctx, row)
            for i, w in enumerate(m.windows):
                name = f"{i + 1}: {w.name or 'window'} (C {w.center:g} / W {w.width:g})"
                if i >= len(presets):
                    presets.append(name)
            h, w_ = gray.shape
            score, patches = None, []
            heat, vmax = None, 1.0
            if ctx.model_ready:
                pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"])
                if overlay == "lesion map" or pred is None:
                    lm = lesion_map_for(ctx, row["image_id"])
                    score, tops = lm.score, lm.top_patches
                    if overlay == "lesion map":
                        # only what the model calls suspicious is coloured: above its operating point
                        thr = operating_threshold(ctx.card)
                        heat = np.clip((lm.prob - thr) / max(1.0 - thr, 1e-6), 0.0, 1.0)
                else:
                    score, tops = pred["score"], pred["top_patches"]
                if overlay == "attribution":
                    heat = np.clip(attribution_for(ctx, row["image_id"], method).map, 0, None)
                for rank, (x0, y0, size, prob) in enumerate(tops, start=1):
                    patches.append({"image_id": row["image_id"], "view": label, "rank": rank, "x0": int(x0),
                                    "y0": int(y0), "size": int(size), "probability": float(prob)})
            rgb = np.repeat(gray[..., None], 3, axis=2) if heat is None else blend(gray, heat, opacity, vmax)
            if mirrored:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
            boxes = [(to_display_box(p["x0"], p["size"], w_, mirrored), p["y0"], p["size"], str(p["rank"]),
                      "#ffd54f" if p["rank"] == 1 else "#4fc3f7") for p in patches]
            rgb = draw_boxes(rgb, boxes) if boxes else rgb
            all_patches.extend(patches)
            return Tile(row["image_id"], lat, view, label, rgb, mirrored, (h, w_),
                        (float(win.center), float(win.width), win.name or ""), [], score, patches)
        except Exception as exc:  # noqa: BLE001 - one unreadable image must not hide the others
            return Tile(row["image_id"], lat, view, label, None, mirrored, (0, 0), (0.0, 0.0, ""), [],
                        error=str(exc))

    rows = [[tile_for(r) for r in row] for row in rows_raw]
    extra = [tile_for(r) for r in extra_raw]
    all_patches.sort(key=lambda p: -p["probability"])
    return ReadingView(case_ids=case_ids, case=case, rows=rows, extra=extra, patches=all_patches, presets=presets,
                       overlay=overlay, method=method, notes=notes)


def patch_at(ctx: AppContext, image_id: str, x: float, y: float, *, display: bool = True) -> PatchRef:
    """The patch of the card's size centred on a point of an image.

    (x, y) in display pixels of the hung image (``display=True``: mirrored for a right breast)
    or model pixels. Raises ReadingError when the point is outside the image.
    """
    from dashboard import imaging

    row = ctx.store.get_image(image_id)
    _, _, frame = model_image(ctx, row)
    h, w = frame.model_shape
    if not (0 <= x <= w and 0 <= y <= h):
        raise ReadingError(f"The point ({x:.0f}, {y:.0f}) is outside the image ({w} x {h} model pixels).")
    mx = display_to_model_x(x, w, imaging.display_flip(row["laterality"])) if display else x
    size = patch_size(ctx)
    return PatchRef(image_id, int(round(mx - size / 2)), int(round(y - size / 2)), size)


def prepare_labeling(ctx: AppContext, ref: PatchRef) -> None:
    """A patch is being opened for labeling: start preparing the Report's model evidence of its
    image in the background now, while the reader signs in and draws (see reporting.prefetch_evidence)."""
    from dashboard.ui.screens.reporting import prefetch_evidence

    try:
        prefetch_evidence(ctx, ref.image_id)
    except Exception:  # noqa: BLE001 - only a head start
        pass


def patch_size(ctx: AppContext) -> int:
    if ctx.card is not None:
        return int(ctx.card.input_size[-1])
    return 224

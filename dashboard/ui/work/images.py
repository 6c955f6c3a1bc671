"""A store image as the screens show it and the model sees it, each step cached in ``ctx.caches``:
the file read once (``load_mammogram``), resampled to the card's pixel spacing in model space
(``model_image``), windowed for display (``display_gray``), the model's lesion map and a captum
attribution over it, and a patch of it.

Keys hold the image's SHA-256 (and model card, weights SHA-256, spacing, window, method where the
result depends on them), so every session shares the work and a changed model never reuses it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dashboard import imaging
from dashboard.data.files import check_stored_file, load_stored_image
from dashboard.engine import attribution, inference
from dashboard.ui.context import AppContext
from dashboard.ui.types import PatchRef, ReadingError, WindowChoice

#: Attribution methods offered in the viewer (fast enough on a whole image on 2 CPU cores).
VIEWER_METHODS = ("gradcam", "saliency", "guided-gradcam")
#: Model pixel spacing used for display when no card is loaded.
FALLBACK_SPACING_MM = 0.2
#: Patch side (model pixels) when no card is loaded.
FALLBACK_PATCH = 224


def model_spacing(ctx: AppContext) -> float:
    return float(getattr(ctx.card, "pixel_spacing_mm", 0) or FALLBACK_SPACING_MM)


def patch_size(ctx: AppContext) -> int:
    """The patch a reader labels, in model pixels: the card's labeling patch (``ModelCard.label_patch_size``)."""
    if ctx.card is not None:
        return ctx.card.label_patch_size
    return FALLBACK_PATCH


def load_mammogram(ctx: AppContext, row: dict):
    """The stored file of an image row, read once per SHA-256 (``imaging.Mammogram``).

    Verified before any cache is filled: the bytes decoded must hash to the stored SHA-256, and a
    cached image's file is checked again (size and mtime, the hash on a change) every time it is
    asked for, so a replaced file gives ``ImageChangedError``, never other pixels under this id."""
    check_stored_file(ctx.store, row)
    return ctx.caches.mammograms.get(row["sha256"], lambda: load_stored_image(
        ctx.store, row, show_phi=ctx.settings.show_phi, max_pixels=ctx.settings.max_pixels))


def model_image(ctx: AppContext, row: dict):
    """(img (h, w) float32 [0, 1], mask (h, w) bool, Frame) of a store image row, cached."""
    spacing = model_spacing(ctx)
    default = row.get("pixel_spacing_mm")
    return ctx.caches.model_images.get((row["sha256"], spacing, default), lambda: imaging.prepare_model_image(
        load_mammogram(ctx, row), spacing, default_spacing_mm=default))


def window_for(m, choice: WindowChoice):
    """The ``imaging.Window`` a choice means for one mammogram (modality units)."""
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
    m = load_mammogram(ctx, row)
    window = window_for(m, choice)

    def compute():
        _, _, frame = model_image(ctx, row)
        shown = imaging.window_image(m, window).astype(np.float32)  # (H, W) source space
        g = imaging.resample(shown, frame)  # (h, w) model grid, before the flip
        if frame.flip:
            g = g[:, ::-1]
        return np.ascontiguousarray(np.clip(np.rint(g), 0, 255).astype(np.uint8))

    key = (row["sha256"], model_spacing(ctx), row.get("pixel_spacing_mm"), choice.key())
    return ctx.caches.display.get(key, compute), window


def lesion_map_for(ctx: AppContext, image_id: str):
    """The model's lesion map of an image (cached); its score is saved as the worklist score."""
    ctx.require_model()
    row = ctx.store.get_image(image_id)

    def compute():
        img, mask, _ = model_image(ctx, row)
        lm = inference.compute_lesion_map(ctx.model, ctx.card, img, mask)
        ctx.store.save_prediction(ctx.card_name, ctx.weights_sha, image_id, lm.score,
                                  [list(map(float, p)) for p in lm.top_patches])
        return lm

    return ctx.caches.lesion_maps.get((ctx.card_name, ctx.weights_sha, row["sha256"], model_spacing(ctx)), compute)


def attribution_for(ctx: AppContext, image_id: str, method: str):
    """A captum attribution over the whole image (cached by model, weights, image and method)."""
    ctx.require_model()
    if method not in VIEWER_METHODS:
        raise ReadingError(f"Unknown attribution method {method!r}; choose one of {', '.join(VIEWER_METHODS)}.")
    row = ctx.store.get_image(image_id)

    def compute():
        img, mask, _ = model_image(ctx, row)
        return attribution.attribute_image(ctx.model, ctx.card, img, mask, attribution.AttributionConfig(method=method))

    key = (ctx.card_name, ctx.weights_sha, row["sha256"], model_spacing(ctx), method)
    return ctx.caches.attributions.get(key, compute)


def patch_gray(ctx: AppContext, ref: PatchRef) -> np.ndarray:
    """The model's view of a patch: (S, S) float32 in [0, 1], model space, zero outside the image."""
    img, _, _ = model_image(ctx, ctx.store.get_image(ref.image_id))
    return imaging.crop_patch(img, ref.x0, ref.y0, ref.size)


def display_patch(ctx: AppContext, row: dict, ref: PatchRef, window: WindowChoice = WindowChoice()) -> np.ndarray:
    """The windowed patch of an image row as shown, model orientation: (S, S) uint8, zero outside."""
    gray, _ = display_gray(ctx, row, window)
    return imaging.crop_patch(gray, ref.x0, ref.y0, ref.size)

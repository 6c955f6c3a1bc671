"""Colour over grey: heat maps blended on an image, concept maps painted on it, JPEG display copies.

Arrays in, arrays out: (h, w) uint8 grey, (h, w) heat, (h, w, 3) uint8 RGB.
"""
from __future__ import annotations

import io

import matplotlib
import numpy as np
from PIL import Image
from scipy import ndimage

#: Colour of the outline ``heat_rgb`` draws (the reader's drawing, a unit's region).
OUTLINE_RGB = (79, 195, 247)


def blend(gray: np.ndarray, heat: np.ndarray, alpha: float, vmax: float = 1.0, cmap: str = "inferno") -> np.ndarray:
    """Grey (h, w) uint8 + heat (h, w) -> RGB uint8, the colour's opacity growing with the heat, so
    cold regions keep the plain image. Signed maps show their positive part."""
    g = gray.astype(np.float32)[..., None] / 255.0
    h = np.clip(np.nan_to_num(heat.astype(np.float32)) / max(float(vmax), 1e-6), 0.0, 1.0)
    colour = matplotlib.colormaps[cmap](h)[..., :3]
    a = (alpha * np.sqrt(h))[..., None]
    return np.clip(np.rint(((1 - a) * g + a * colour) * 255), 0, 255).astype(np.uint8)


def heat_rgb(gray: np.ndarray, heat: np.ndarray, outline: np.ndarray | None = None, alpha: float = 0.6) -> np.ndarray:
    """A grey patch (S, S) uint8 with a heat map and an optional bool outline region, as RGB."""
    rgb = blend(gray, heat, alpha)
    if outline is not None and outline.any():
        edge = outline & ~ndimage.binary_erosion(outline, iterations=1)
        rgb[edge] = OUTLINE_RGB
    return rgb


def hex_rgb(colour: str) -> np.ndarray:
    """"#rrggbb" -> (3,) float32 in 0..255."""
    c = colour.lstrip("#")[:6]
    return np.array([int(c[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)


def composite(gray: np.ndarray, maps: np.ndarray, colours: list[str], level: float) -> np.ndarray:
    """Paint each pixel with its most probable concept's colour where that probability >= level.

    gray (H, W) uint8, maps (K, H, W) probabilities, colours K hex strings -> (H, W, 3) uint8."""
    rgb = np.repeat(gray[..., None].astype(np.float32), 3, axis=2)
    if len(maps):
        best = maps.argmax(0)
        p = maps.max(0)
        cols = np.stack([hex_rgb(c) for c in colours])  # (K, 3)
        a = np.where(p >= level, 0.35 + 0.4 * (p - level) / max(1 - level, 1e-6), 0.0)[..., None]
        rgb = (1 - a) * rgb + a * cols[best]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """Display copy of an RGB image, encoded once and cached with it (JPEG: a tenth of PNG's encode
    time on these overlays; the numbers behind them stay in the report and its exports)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

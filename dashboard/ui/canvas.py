"""Canvas drawings -> geometry in patch pixels (model space) -> a mask.

The label page shows a patch on streamlit-drawable-canvas (Fabric.js 7). The component returns
Fabric's JSON: every object carries its own points plus a transform (``left``/``top`` at an
origin, ``scaleX``/``scaleY``, ``angle``, flips, skews, a ``pathOffset`` that may be absent).
This module turns that JSON into ``Drawing`` outlines in *patch pixels of model space*:

    canvas px --(Fabric object matrix)--> canvas px --(background fit)--> displayed patch px
              --(un-mirror a right breast, see imaging.display_flip)--> model-space patch px

Coordinates are continuous: (0, 0) is the top-left corner of the patch's top-left pixel and
(size, size) the bottom-right corner, so mirroring is ``x -> size - x``.
No streamlit here; the page passes ``CanvasResult.json_data`` and ``background_fit``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dashboard.errors import ConceptLensError

#: Fabric's ``resolveOrigin``: where an origin keyword sits along the object's box, centre = 0.
_ORIGIN = {"left": -0.5, "top": -0.5, "center": 0.0, "right": 0.5, "bottom": 0.5}

#: Drawing shapes stored in ``annotations.shape``.
SHAPES = ("polygon", "freehand", "rect")

#: A freehand stroke whose ends are closer than this fraction of its extent counts as a closed
#: outline (the reader circled a region); otherwise it is a painted stroke of the brush width.
CLOSE_FRACTION = 0.25

#: Curve segments of a freehand path are flattened into this many line pieces.
_CURVE_STEPS = 12


class DrawingError(ConceptLensError, ValueError):
    """The drawing cannot be used (empty, degenerate, unsupported). The message says what to do."""


@dataclass(frozen=True)
class Drawing:
    """One outline drawn on a patch.

    shape         "polygon" | "freehand" | "rect"
    points        ((x, y), ...) in model-space patch pixels (continuous, see module doc)
    closed        True for an area (polygon, rect, a circled freehand loop); False for a stroke
    stroke_width  brush width in patch pixels (what an open stroke covers)
    """

    shape: str
    points: tuple[tuple[float, float], ...]
    closed: bool = True
    stroke_width: float = 0.0
    meta: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        d = asdict(self)
        d["points"] = [[round(float(x), 3), round(float(y), 3)] for x, y in self.points]
        d.pop("meta")
        return d

    @classmethod
    def from_json(cls, d: dict) -> Drawing:
        return cls(shape=d["shape"], points=tuple((float(x), float(y)) for x, y in d["points"]),
                   closed=bool(d.get("closed", True)), stroke_width=float(d.get("stroke_width", 0.0)))

    @property
    def area(self) -> float:
        """Shoelace area in patch px^2 (0 for an open stroke)."""
        if not self.closed or len(self.points) < 3:
            return 0.0
        p = np.asarray(self.points)
        x, y = p[:, 0], p[:, 1]
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


# ---------------------------------------------------------------- Fabric geometry
def _matrix(a: float, b: float, c: float, d: float, e: float = 0.0, f: float = 0.0) -> np.ndarray:
    """Fabric's [a, b, c, d, e, f] as a 3x3 affine: x' = a x + c y + e, y' = b x + d y + f."""
    return np.array([[a, c, e], [b, d, f], [0.0, 0.0, 1.0]])


def _dimensions_matrix(o: dict) -> np.ndarray:
    """Fabric ``calcDimensionsMatrix``: scale (with flips), then skewX, then skewY."""
    sx = float(o.get("scaleX", 1) or 1) * (-1 if o.get("flipX") else 1)
    sy = float(o.get("scaleY", 1) or 1) * (-1 if o.get("flipY") else 1)
    m = _matrix(sx, 0, 0, sy)
    if o.get("skewX"):
        m = m @ _matrix(1, 0, math.tan(math.radians(float(o["skewX"]))), 1)
    if o.get("skewY"):
        m = m @ _matrix(1, math.tan(math.radians(float(o["skewY"]))), 0, 1)
    return m


def _transformed_dimensions(o: dict) -> tuple[float, float]:
    """Fabric ``_getTransformedDimensions``: the object's box size on the canvas, stroke included."""
    sw = float(o.get("strokeWidth", 0) or 0)
    pre, post = (0.0, sw) if o.get("strokeUniform") else (sw, 0.0)
    w, h = float(o.get("width", 0) or 0) + pre, float(o.get("height", 0) or 0) + pre
    if not o.get("skewX") and not o.get("skewY"):
        sx, sy = float(o.get("scaleX", 1) or 1), float(o.get("scaleY", 1) or 1)
        return abs(w * sx) + post, abs(h * sy) + post
    m = _dimensions_matrix({**o, "flipX": False, "flipY": False})
    corners = np.array([[-w / 2, -h / 2, 1], [w / 2, -h / 2, 1], [w / 2, h / 2, 1], [-w / 2, h / 2, 1]]).T
    t = (m @ corners)[:2]
    return float(np.ptp(t[0])) + post, float(np.ptp(t[1])) + post


def object_matrix(o: dict) -> np.ndarray:
    """The 3x3 matrix taking an object's own (centred) coordinates to canvas pixels.

    Mirrors Fabric 7: the centre is ``left/top`` moved from the object's origin to its centre
    by the transformed box size, rotated about ``left/top`` by ``angle``; then
    translate(centre) . rotate(angle) . scale/flip . skew.
    """
    left, top = float(o.get("left", 0) or 0), float(o.get("top", 0) or 0)
    angle = math.radians(float(o.get("angle", 0) or 0))
    ox = 0.0 - _ORIGIN.get(str(o.get("originX", "left")), -0.5)
    oy = 0.0 - _ORIGIN.get(str(o.get("originY", "top")), -0.5)
    dx, dy = 0.0, 0.0
    if ox or oy:
        w, h = _transformed_dimensions(o)
        dx, dy = ox * w, oy * h
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = left + dx * cos - dy * sin, top + dx * sin + dy * cos
    return _matrix(1, 0, 0, 1, cx, cy) @ _matrix(cos, sin, -sin, cos) @ _dimensions_matrix(o)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) points through a 3x3 affine."""
    h = np.c_[pts, np.ones(len(pts))]
    return (m @ h.T).T[:, :2]


def _flatten_path(commands: Iterable[list]) -> list[np.ndarray]:
    """Fabric path commands (M, L, Q, C, Z, absolute) -> polylines (one per sub-path), own coords."""
    subpaths: list[list[tuple[float, float]]] = []
    cur: list[tuple[float, float]] = []
    pos = (0.0, 0.0)
    start = pos
    for cmd in commands:
        op, args = str(cmd[0]).upper(), [float(v) for v in cmd[1:]]
        if op == "M":
            if len(cur) > 1:
                subpaths.append(cur)
            pos = start = (args[0], args[1])
            cur = [pos]
        elif op == "L":
            pos = (args[0], args[1])
            cur.append(pos)
        elif op == "Q":
            (x0, y0), (x1, y1), (x2, y2) = pos, (args[0], args[1]), (args[2], args[3])
            for t in np.linspace(0, 1, _CURVE_STEPS + 1)[1:]:
                u = 1 - t
                cur.append((u * u * x0 + 2 * u * t * x1 + t * t * x2, u * u * y0 + 2 * u * t * y1 + t * t * y2))
            pos = (x2, y2)
        elif op == "C":
            (x0, y0), (x1, y1), (x2, y2), (x3, y3) = pos, (args[0], args[1]), (args[2], args[3]), (args[4], args[5])
            for t in np.linspace(0, 1, _CURVE_STEPS + 1)[1:]:
                u = 1 - t
                cur.append((u ** 3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t ** 3 * x3,
                            u ** 3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t ** 3 * y3))
            pos = (x3, y3)
        elif op == "Z":
            cur.append(start)
            pos = start
        else:
            raise DrawingError(f"Unsupported path command {op!r} in a freehand drawing.")
    if cur:
        subpaths.append(cur)
    return [np.asarray(s, dtype=float) for s in subpaths if len(s)]


def _path_offset(o: dict, own: np.ndarray) -> np.ndarray:
    """``pathOffset`` when the JSON carries it, else the centre of the points' bounding box
    (which is how Fabric computes it for Polygon and Path)."""
    po = o.get("pathOffset")
    if isinstance(po, dict) and "x" in po:
        return np.array([float(po["x"]), float(po["y"])])
    return (own.min(axis=0) + own.max(axis=0)) / 2


def object_outline(o: dict) -> tuple[str, list[np.ndarray], bool, float]:
    """One Fabric object -> (shape, polylines in canvas px, closed, stroke width in canvas px)."""
    kind = str(o.get("type", "")).lower()
    m = object_matrix(o)
    sw = float(o.get("strokeWidth", 0) or 0) * math.sqrt(abs(np.linalg.det(m[:2, :2]))) \
        if not o.get("strokeUniform") else float(o.get("strokeWidth", 0) or 0)
    if kind in ("polygon", "polyline"):
        own = np.asarray([[float(p["x"]), float(p["y"])] for p in o.get("points") or []], dtype=float)
        if len(own) == 0:
            return "polygon", [], True, sw
        return "polygon", [_apply(m, own - _path_offset(o, own))], kind == "polygon", sw
    if kind in ("rect", "labeledrect"):
        w, h = float(o.get("width", 0) or 0), float(o.get("height", 0) or 0)
        own = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
        return "rect", [_apply(m, own)], True, sw
    if kind == "path":
        lines = _flatten_path(o.get("path") or [])
        if not lines:
            return "freehand", [], False, sw
        offset = _path_offset(o, np.concatenate(lines))
        return "freehand", [_apply(m, line - offset) for line in lines], False, sw
    raise DrawingError(
        f"A {o.get('type')!r} object cannot outline a concept: use the polygon, freehand or rectangle tool.")


def _canvas_to_patch(pts: np.ndarray, fit: dict | None, canvas_size: tuple[int, int] | None,
                     patch_size: int) -> np.ndarray:
    """Canvas px -> displayed patch px, through the component's ``background_fit`` when present."""
    if fit:
        nat_w = float(fit.get("natural_width") or patch_size)
        nat_h = float(fit.get("natural_height") or patch_size)
        img = (pts - [float(fit.get("offset_x", 0)), float(fit.get("offset_y", 0))]) \
            / [float(fit["scale_x"]), float(fit["scale_y"])]
        # the background image may be rendered larger than the patch (e.g. upsampled to 448 px)
        return img * [patch_size / nat_w, patch_size / nat_h]
    if not canvas_size:
        raise DrawingError("The canvas size is unknown: cannot map the drawing onto the patch.")
    return pts * [patch_size / canvas_size[0], patch_size / canvas_size[1]]


def parse_canvas(json_data: dict | None, *, patch_size: int, fit: dict | None = None,
                 canvas_size: tuple[int, int] | None = None, mirror: bool = False) -> list[Drawing]:
    """Fabric JSON from the canvas -> drawings in model-space patch pixels.

    json_data    ``CanvasResult.json_data`` ({"objects": [...]}); None or no objects -> []
    patch_size   the patch side in model pixels
    fit          ``CanvasResult.background_fit`` (natural size, scale, offset); when None the
                 canvas is assumed to show the whole patch stretched over ``canvas_size`` (w, h)
    mirror       True when the canvas shows the patch mirrored for display (a right breast,
                 ``imaging.display_flip``): x is mirrored back so drawings are stored in model space
    Raises DrawingError for unsupported objects. Degenerate outlines are kept (see ``validate``).
    """
    out: list[Drawing] = []
    for o in (json_data or {}).get("objects") or []:
        if str(o.get("type", "")).lower() == "circle" and o.get("radius", 0) and o.get("width", 0) <= 10:
            continue  # stray point-tool dots carry no area
        shape, lines, closed, sw_canvas = object_outline(o)
        for line in lines:
            pts = _canvas_to_patch(line, fit, canvas_size, patch_size)
            if mirror:
                pts = np.c_[patch_size - pts[:, 0], pts[:, 1]]
            scale = patch_size / float(fit["natural_width"]) / float(fit["scale_x"]) if fit else \
                (patch_size / canvas_size[0] if canvas_size else 1.0)
            sw = sw_canvas * scale
            is_closed = closed
            if shape == "freehand" and len(pts) >= 3:
                extent = float(np.hypot(*np.ptp(pts, axis=0)))
                gap = float(np.hypot(*(pts[0] - pts[-1])))
                is_closed = extent > 0 and gap <= CLOSE_FRACTION * extent
            if is_closed and len(pts) > 1 and np.allclose(pts[0], pts[-1]):
                pts = pts[:-1]
            out.append(Drawing(shape=shape, points=tuple(map(tuple, pts.tolist())), closed=is_closed,
                               stroke_width=float(sw)))
    return out


def parse_points(json_data: dict | None, *, image_size: tuple[int, int], fit: dict | None = None,
                 canvas_size: tuple[int, int] | None = None) -> list[tuple[float, float]]:
    """Point-tool clicks (Fabric ``Circle`` objects) -> (x, y) in the background image's pixels.

    Used on the reader view to pick a region: the caller maps display pixels to model space.
    """
    out = []
    for o in (json_data or {}).get("objects") or []:
        if str(o.get("type", "")).lower() != "circle":
            continue
        centre = _apply(object_matrix(o), np.zeros((1, 2)))
        if fit:
            x = (centre[0, 0] - float(fit.get("offset_x", 0))) / float(fit["scale_x"])
            y = (centre[0, 1] - float(fit.get("offset_y", 0))) / float(fit["scale_y"])
            x *= image_size[0] / float(fit.get("natural_width") or image_size[0])
            y *= image_size[1] / float(fit.get("natural_height") or image_size[1])
        elif canvas_size:
            x = centre[0, 0] * image_size[0] / canvas_size[0]
            y = centre[0, 1] * image_size[1] / canvas_size[1]
        else:
            raise DrawingError("The canvas size is unknown: cannot map the click onto the image.")
        out.append((float(x), float(y)))
    return out


#: The smallest drawing worth matching: 4 model pixels of area.
MIN_AREA_PX = 4.0


def validate(drawings: list[Drawing], patch_size: int) -> list[Drawing]:
    """Keep the usable drawings; raise DrawingError with a clear message when none is usable."""
    if not drawings:
        raise DrawingError("Nothing is drawn yet: outline the concept on the patch "
                           "(polygon: click the vertices, then click the first vertex again to close it).")
    usable = []
    for d in drawings:
        pts = np.asarray(d.points, dtype=float)
        inside = (pts[:, 0] > 0) & (pts[:, 0] < patch_size) & (pts[:, 1] > 0) & (pts[:, 1] < patch_size)
        if d.closed and d.area >= MIN_AREA_PX and (inside.any() or _covers_patch(pts, patch_size)):
            usable.append(d)
        elif not d.closed and len(pts) >= 2 and d.stroke_width > 0 and inside.any():
            usable.append(d)
    if not usable:
        raise DrawingError(
            f"The drawing is too small or lies outside the patch (it must cover at least "
            f"{MIN_AREA_PX:.0f} model pixels inside the {patch_size} x {patch_size} patch). Draw it again.")
    return usable


def _covers_patch(pts: np.ndarray, size: int) -> bool:
    return pts[:, 0].min() <= 0 and pts[:, 1].min() <= 0 and pts[:, 0].max() >= size and pts[:, 1].max() >= size


def to_geometry(drawings: list[Drawing]) -> list[dict[str, Any]]:
    """JSON-able geometry for ``annotations.geometry`` (points in model-space patch pixels)."""
    return [d.to_json() for d in drawings]


def main_shape(drawings: list[Drawing]) -> str:
    """The shape recorded in ``annotations.shape``: the largest drawing's tool."""
    return max(drawings, key=lambda d: (d.area, len(d.points))).shape

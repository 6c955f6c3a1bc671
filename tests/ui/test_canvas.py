"""Canvas geometry against Fabric JSON captured from the real component in chromium.

The fixtures in tests/fixtures/fabric/ were written by ``python -m tests.fixtures.fabric.capture``:
each JSON holds what streamlit-drawable-canvas 0.13.0 returned, the background fit, and the canvas
points the mouse visited; each PNG is the canvas as the browser rendered it (red where the shape is).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.draw import polygon2mask

from dashboard.ui import canvas
from dashboard.ui.canvas import Drawing, DrawingError, parse_canvas, parse_points, validate

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "fabric"


def load(name: str) -> dict:
    return json.loads((FIX / f"{name}.json").read_text())


def rendered(name: str) -> np.ndarray:
    """(H, W) bool: where the browser painted the shape."""
    return np.asarray(Image.open(FIX / f"{name}.png"))[..., 3] > 127


def raster(d: Drawing, size: int) -> np.ndarray:
    pts = np.asarray(d.points)
    return polygon2mask((size, size), pts[:, ::-1])  # polygon2mask wants (row, col)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("name", ["polygon_448", "polygon_300", "rect_448", "rect_300",
                                  "rect_edited_448", "polygon_edited_448"])
def test_outline_matches_what_the_browser_rendered(name):
    rec = load(name)
    size = rec["size"]
    # patch_size = canvas size: the outline comes back in canvas pixels, comparable with the PNG
    (d,) = parse_canvas(rec["json"], patch_size=size, fit=rec["fit"])
    assert d.closed
    assert iou(raster(d, size), rendered(name)) > 0.97


def test_edited_rect_really_was_moved_scaled_and_rotated():
    o = load("rect_edited_448")["json"]["objects"][0]
    assert o["angle"] > 30 and o["scaleX"] > 1.2 and o["originX"] == "left"
    # ignoring the transform would put the rect somewhere else entirely
    naive = Drawing("rect", ((o["left"], o["top"]), (o["left"] + o["width"], o["top"]),
                             (o["left"] + o["width"], o["top"] + o["height"]),
                             (o["left"], o["top"] + o["height"])))
    assert iou(raster(naive, 448), rendered("rect_edited_448")) < 0.5


@pytest.mark.parametrize("size", [448, 300])
def test_polygon_vertices_map_to_patch_pixels(size):
    rec = load(f"polygon_{size}")
    (d,) = parse_canvas(rec["json"], patch_size=224, fit=rec["fit"])
    expected = np.asarray(rec["drawn"]) * 224 / size
    assert d.shape == "polygon" and len(d.points) == 4
    # Fabric rounds the scene point to whole canvas pixels
    assert np.abs(np.asarray(d.points) - expected).max() < 1.0 * 224 / size + 1e-6


def test_rect_corners_in_patch_pixels():
    rec = load("rect_448")
    (d,) = parse_canvas(rec["json"], patch_size=224, fit=rec["fit"])
    pts = np.asarray(d.points)
    (ax, ay), (bx, by) = np.asarray(rec["drawn"]) / 2
    assert d.shape == "rect"
    assert abs(pts[:, 0].min() - ax) < 1.5 and abs(pts[:, 0].max() - bx) < 1.5
    assert abs(pts[:, 1].min() - ay) < 1.5 and abs(pts[:, 1].max() - by) < 1.5


@pytest.mark.parametrize("size", [448, 300])
def test_freehand_loop_is_a_closed_outline_through_the_mouse_path(size):
    rec = load(f"freedraw_{size}")
    (d,) = parse_canvas(rec["json"], patch_size=size, fit=rec["fit"])
    assert d.shape == "freehand" and d.closed
    drawn = np.asarray(rec["drawn"])
    pts = np.asarray(d.points)
    # every mouse position lies on the flattened path (Fabric smooths with quadratic curves)
    dist = np.sqrt(((drawn[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).min(axis=1)
    assert dist.max() < 3.0
    # and the outline encloses the ellipse the mouse went round
    expected_area = np.pi * 0.25 * size * 0.2 * size
    assert abs(d.area - expected_area) / expected_area < 0.05
    # the rendered stroke runs along our outline
    stroke = rendered(f"freedraw_{size}")
    rr = np.clip(np.round(pts[:, 1]).astype(int), 0, size - 1)
    cc = np.clip(np.round(pts[:, 0]).astype(int), 0, size - 1)
    assert stroke[rr, cc].mean() > 0.9


def test_open_freehand_stroke_keeps_its_brush_width():
    path = [["M", 10, 10], ["Q", 10, 10, 30, 12], ["L", 60, 15]]
    obj = {"type": "Path", "originX": "center", "originY": "center", "left": 35, "top": 12.5,
           "width": 50, "height": 5, "strokeWidth": 8, "scaleX": 1, "scaleY": 1, "angle": 0, "path": path}
    (d,) = parse_canvas({"objects": [obj]}, patch_size=100, canvas_size=(200, 200))
    assert not d.closed and d.shape == "freehand"
    assert d.stroke_width == pytest.approx(4.0)  # 8 canvas px on a 2x canvas
    assert np.asarray(d.points)[:, 0].min() == pytest.approx(5.0)
    assert np.asarray(d.points)[:, 0].max() == pytest.approx(30.0)


def test_right_breast_drawings_are_mirrored_back_to_model_space():
    rec = load("polygon_448")
    (plain,) = parse_canvas(rec["json"], patch_size=224, fit=rec["fit"])
    (mirrored,) = parse_canvas(rec["json"], patch_size=224, fit=rec["fit"], mirror=True)
    a, b = np.asarray(plain.points), np.asarray(mirrored.points)
    np.testing.assert_allclose(b[:, 0], 224 - a[:, 0])
    np.testing.assert_allclose(b[:, 1], a[:, 1])
    assert mirrored.area == pytest.approx(plain.area)


def test_canvas_size_is_used_when_the_fit_is_not_known_yet():
    rec = load("polygon_448")
    (with_fit,) = parse_canvas(rec["json"], patch_size=224, fit=rec["fit"])
    (without,) = parse_canvas(rec["json"], patch_size=224, canvas_size=(448, 448))
    np.testing.assert_allclose(with_fit.points, without.points)
    with pytest.raises(DrawingError, match="canvas size"):
        parse_canvas(rec["json"], patch_size=224)


def test_contain_fit_with_margins_is_honoured():
    # a 224 px patch shown "contain" on a 600 x 448 canvas: scale 2, 76 px margin left and right
    fit = {"natural_width": 224, "natural_height": 224, "scale_x": 2, "scale_y": 2, "offset_x": 76, "offset_y": 0}
    obj = {"type": "Rect", "originX": "left", "originY": "top", "left": 76, "top": 0, "width": 448,
           "height": 448, "strokeWidth": 0, "scaleX": 1, "scaleY": 1, "angle": 0}
    (d,) = parse_canvas({"objects": [obj]}, patch_size=224, fit=fit)
    pts = np.asarray(d.points)
    assert pts.min() == pytest.approx(0) and pts.max() == pytest.approx(224)


def test_fabric_origins_flips_and_skew():
    base = {"type": "Rect", "width": 20, "height": 10, "strokeWidth": 0, "scaleX": 2, "scaleY": 1}
    for ox, oy, left, top in [("left", "top", 10, 20), ("center", "center", 30, 25), ("right", "bottom", 50, 30)]:
        (d,) = parse_canvas({"objects": [{**base, "originX": ox, "originY": oy, "left": left, "top": top}]},
                            patch_size=100, canvas_size=(100, 100))
        pts = np.asarray(d.points)
        assert pts[:, 0].min() == pytest.approx(10) and pts[:, 0].max() == pytest.approx(50)
        assert pts[:, 1].min() == pytest.approx(20) and pts[:, 1].max() == pytest.approx(30)
    # a flip about the centre does not move a symmetric rect's footprint
    (f,) = parse_canvas({"objects": [{**base, "originX": "center", "originY": "center", "left": 30, "top": 25,
                                      "flipX": True}]}, patch_size=100, canvas_size=(100, 100))
    assert np.asarray(f.points)[:, 0].min() == pytest.approx(10)
    # skewX shears x by tan(angle) * y about the centre
    (s,) = parse_canvas({"objects": [{**base, "originX": "center", "originY": "center", "left": 30, "top": 25,
                                      "scaleX": 1, "skewX": 45}]}, patch_size=100, canvas_size=(100, 100))
    top_row = [p for p in s.points if p[1] < 25]
    assert min(p[0] for p in top_row) == pytest.approx(15)  # -10 + (-5) shifted from 30


def test_polygon_with_path_offset_present():
    # later Fabric builds serialise pathOffset; then it is used as given
    obj = {"type": "Polygon", "originX": "center", "originY": "center", "left": 50, "top": 50, "width": 20,
           "height": 20, "strokeWidth": 0, "points": [{"x": 0, "y": 0}, {"x": 20, "y": 0}, {"x": 20, "y": 20}],
           "pathOffset": {"x": 10, "y": 10}}
    (d,) = parse_canvas({"objects": [obj]}, patch_size=100, canvas_size=(100, 100))
    assert d.points[0] == pytest.approx((40, 40))


def test_point_clicks_for_region_picking():
    rec = load("point_448")
    (xy,) = parse_points(rec["json"], image_size=(224, 224), fit=rec["fit"])
    assert xy == pytest.approx((50, 100), abs=0.6)


def test_empty_and_degenerate_drawings_get_clear_messages():
    with pytest.raises(DrawingError, match="Nothing is drawn"):
        validate(parse_canvas(None, patch_size=224, canvas_size=(448, 448)), 224)
    with pytest.raises(DrawingError, match="Nothing is drawn"):
        validate(parse_canvas({"objects": []}, patch_size=224, canvas_size=(448, 448)), 224)
    flat = Drawing("polygon", ((10, 10), (20, 10), (30, 10)))
    with pytest.raises(DrawingError, match="too small"):
        validate([flat], 224)
    outside = Drawing("rect", ((300, 300), (320, 300), (320, 320), (300, 320)))
    with pytest.raises(DrawingError, match="outside the patch"):
        validate([outside], 224)
    ok = Drawing("rect", ((10, 10), (20, 10), (20, 20), (10, 20)))
    assert validate([flat, ok], 224) == [ok]


def test_unsupported_objects_are_refused_with_a_hint():
    with pytest.raises(DrawingError, match="polygon, freehand or rectangle"):
        parse_canvas({"objects": [{"type": "Textbox", "text": "hi"}]}, patch_size=224, canvas_size=(448, 448))


def test_geometry_round_trips_through_json():
    rec = load("polygon_448")
    ds = parse_canvas(rec["json"], patch_size=224, fit=rec["fit"])
    geo = json.loads(json.dumps(canvas.to_geometry(ds)))
    back = [Drawing.from_json(g) for g in geo]
    assert [b.shape for b in back] == ["polygon"]
    np.testing.assert_allclose(back[0].points, ds[0].points, atol=1e-3)
    assert canvas.main_shape(ds) == "polygon"

"""Properties where hand cases run out: coordinate round trips (source <-> model <-> display) and display
windows (monotone, in range, the DICOM formula at its breakpoints)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.imaging.geometry import Frame, display_flip, display_to_source, source_to_display
from dashboard.imaging.model import ImagingError, Mammogram, VoiLut, Window
from dashboard.imaging.windowing import apply_voi_lut, apply_window, auto_window, default_window, window_image

FAST = settings(max_examples=60, deadline=None)

frames = st.builds(Frame, src_rows=st.integers(1, 5000), src_cols=st.integers(1, 5000),
                   scale=st.floats(0.25, 16.0, allow_nan=False), flip=st.booleans())
lateralities = st.sampled_from(["R", "L", "r", "l", "RIGHT", "LEFT", "", "B"])


def _points(frame: Frame, draw, n=5):
    xs = draw(st.lists(st.floats(-1.0, frame.src_cols, allow_nan=False), min_size=n, max_size=n))
    ys = draw(st.lists(st.floats(-1.0, frame.src_rows, allow_nan=False), min_size=n, max_size=n))
    return np.stack([xs, ys], 1)  # (n, 2) source (x, y)


@FAST
@given(frame=frames, lat=lateralities, data=st.data())
def test_source_model_display_round_trip(frame, lat, data):
    src = _points(frame, data.draw)
    kept = src.copy()
    model = frame.to_model(src)
    np.testing.assert_allclose(frame.to_source(model), src, rtol=1e-9, atol=1e-6)
    shown = source_to_display(frame, lat, src)
    np.testing.assert_allclose(display_to_source(frame, lat, shown), src, rtol=1e-9, atol=1e-6)
    # display is model space, mirrored exactly when the hanging says so
    w = frame.model_shape[1]
    expect_x = (w - 1) - model[:, 0] if display_flip(lat) else model[:, 0]
    np.testing.assert_allclose(shown[:, 0], expect_x, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(shown[:, 1], model[:, 1])
    np.testing.assert_array_equal(src, kept)  # the caller's points are not modified in place
    np.testing.assert_array_equal(display_to_source(frame, lat, shown), display_to_source(frame, lat, shown.copy()))


@FAST
@given(frame=frames)
def test_frame_maps_the_image_extent_onto_the_model_grid(frame):
    """Pixel edges -0.5 .. n - 0.5 of the source map to -0.5 .. n/scale - 0.5 in model space, in order
    (mirrored when flipped), and model pixel centres land inside the source image."""
    h, w = frame.model_shape
    assert h == max(1, round(frame.src_rows / frame.scale)) and w == max(1, round(frame.src_cols / frame.scale))
    corners = np.array([[-0.5, -0.5], [frame.src_cols - 0.5, frame.src_rows - 0.5]])
    m = frame.to_model(corners)
    np.testing.assert_allclose(m[:, 1], [-0.5, frame.src_rows / frame.scale - 0.5], rtol=1e-12, atol=1e-9)
    xs = [-0.5, frame.src_cols / frame.scale - 0.5]
    np.testing.assert_allclose(m[:, 0], [(w - 1) - x for x in xs] if frame.flip else xs, rtol=1e-12, atol=1e-9)
    # moving right in the source moves right in model space unless flipped
    a, b = frame.to_model([[1.0, 0.0], [2.0, 0.0]])
    assert (b[0] < a[0]) == frame.flip


@FAST
@given(center=st.floats(-5000, 5000, allow_nan=False), width=st.floats(1.0, 8000, allow_nan=False),
       fn=st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID"]), invert=st.booleans(),
       values=st.lists(st.floats(-20000, 20000, allow_nan=False), min_size=2, max_size=40))
def test_window_is_monotone_and_in_range(center, width, fn, invert, values):
    x = np.sort(np.array(values, np.float64))
    y = apply_window(x, center, width, fn, invert=invert).astype(int)
    assert y.dtype == np.int64 and y.shape == x.shape and (y >= 0).all() and (y <= 255).all()
    d = np.diff(y)
    assert (d <= 0).all() if invert else (d >= 0).all()
    np.testing.assert_array_equal(apply_window(x, center, width, fn, invert=not invert).astype(int), 255 - y)


@FAST
@given(center=st.floats(-5000, 5000, allow_nan=False), width=st.floats(2.0, 8000, allow_nan=False))
def test_linear_window_breakpoints(center, width):
    """DICOM LINEAR: 0 at and below c - 0.5 - (w-1)/2, 255 above c - 0.5 + (w-1)/2, mid-grey at c - 0.5."""
    lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    y = apply_window(np.array([lo - 1, lo, center - 0.5, hi + 1e-6 * max(1, abs(hi)), hi + 1]), center, width)
    assert y[0] == 0 and y[1] == 0 and y[2] in (127, 128) and y[3] == 255 and y[4] == 255
    exact = apply_window(np.array([center - width / 2, center, center + width / 2 + 1e-6 * width]), center, width,
                         "LINEAR_EXACT")
    assert exact[0] == 0 and exact[1] in (127, 128) and exact[2] == 255
    sig = apply_window(np.array([center]), center, width, "SIGMOID")
    assert sig[0] in (127, 128)


def test_window_widths_the_standard_refuses():
    with pytest.raises(ImagingError):
        apply_window(np.zeros(3), 0, 0.5, "LINEAR")
    with pytest.raises(ImagingError):
        apply_window(np.zeros(3), 0, 0.0, "SIGMOID")
    with pytest.raises(ImagingError):
        apply_window(np.zeros(3), 0, 10, "CUBIC")


@FAST
@given(first=st.integers(-1000, 1000), bits=st.integers(8, 16), data=st.data(),
       values=st.lists(st.integers(-3000, 3000), min_size=2, max_size=40), invert=st.booleans())
def test_voi_lut_is_monotone_for_a_monotone_table_and_in_range(first, bits, data, values, invert):
    top = (1 << bits) - 1
    table = np.sort(np.array(data.draw(st.lists(st.integers(0, top), min_size=1, max_size=64)), np.int64))
    lut = VoiLut(first_mapped=first, bits=bits, table=table)
    x = np.sort(np.array(values))
    y = apply_voi_lut(x, lut, invert=invert).astype(int)
    assert (y >= 0).all() and (y <= 255).all()
    d = np.diff(y)
    assert (d <= 0).all() if invert else (d >= 0).all()
    # below the table clamps to its first entry, above to its last
    ends = apply_voi_lut(np.array([first - 10, first + len(table) + 10]), lut).astype(int)
    assert ends.tolist() == [round(table[0] * 255 / top), round(table[-1] * 255 / top)]


# ---------------------------------------------------------------- values mutation testing asked for
def _mammogram(pixels, *, photometric="MONOCHROME2", windows=(), fn="LINEAR") -> Mammogram:
    return Mammogram(pixels=np.asarray(pixels, np.float32), photometric=photometric, bits_stored=12, laterality="L",
                     view="CC", pixel_spacing_mm=0.1, windows=list(windows), voi_lut_function=fn, meta={},
                     path=Path("x.dcm"), sha256="0")


def test_voi_lut_output_is_uint8_and_clamps_a_table_beyond_its_bits():
    """A table entry above 2**bits - 1 (a file that declares too few bits) shows white, not wrapped."""
    lut = VoiLut(first_mapped=10, bits=8, table=np.array([0, 128, 255, 600]))
    out = apply_voi_lut(np.array([0, 10, 11, 12, 13, 99]), lut)
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 128, 255, 255, 255]
    assert apply_voi_lut(np.array([11.4, 11.6]), lut).tolist() == [128, 255]  # stored values are rounded


def test_auto_window_from_the_breast_or_every_pixel():
    ramp = np.linspace(0, 1000, 201).reshape(1, -1)  # (1, 201)
    w = auto_window(ramp, np.zeros_like(ramp, bool), 0.0, 100.0)  # an empty mask: every pixel counts
    assert (w.center, w.width, w.name) == (500.0, 1000.0, "AUTO")
    mask = ramp >= 500
    assert auto_window(ramp, mask, 0.0, 100.0).center == 750.0
    alternating = np.tile([0.0, 1000.0], 50)[None]  # every pixel: no subsample of a small image
    assert auto_window(alternating, np.ones_like(alternating, bool), 0.0, 100.0).width == 1000.0
    flat = auto_window(np.full((4, 4), 7.0), np.ones((4, 4), bool))
    assert (flat.center, flat.width) == (7.5, 1.0)  # a flat image gets the narrowest LINEAR window


def test_window_image_inverts_monochrome1_and_uses_linear_for_auto_windows():
    px = np.array([[0.0, 100.0, 200.0]])
    lut = Window(center=100, width=200, name="LUT", lut=VoiLut(first_mapped=0, bits=8, table=np.arange(256)))
    plain = window_image(_mammogram(px, windows=[lut]))
    inverted = window_image(_mammogram(px, photometric="MONOCHROME1", windows=[lut]))
    assert plain.tolist() == [[0, 100, 200]] and inverted.tolist() == [[255, 155, 55]]
    # the file's SIGMOID function applies to its own windows, never to an automatic one
    auto = Window(center=100, width=200, name="AUTO")
    assert window_image(_mammogram(px, fn="SIGMOID"), auto).tolist() == apply_window(px, 100, 200).tolist()
    own = Window(center=100, width=200, name="auto")
    assert window_image(_mammogram(px, fn="SIGMOID"), own).tolist() == apply_window(px, 100, 200, "SIGMOID").tolist()
    # MONOCHROME1 without a window: computed on the negated values, named AUTO, expressed in stored units
    w = default_window(_mammogram(np.tile(np.linspace(0, 1000, 64), (64, 1)), photometric="MONOCHROME1"))
    assert w.name == "AUTO" and w.center > 0


def test_display_flip_reads_the_first_letter_of_the_laterality():
    assert display_flip("R") and display_flip("r") and display_flip("RIGHT") and display_flip("Right breast")
    assert not display_flip("L") and not display_flip("LEFT") and not display_flip("") and not display_flip("B")

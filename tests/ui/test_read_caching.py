"""The Read page's hung images are painted and encoded once for every session: a rerun, or a second
reader opening the same case, only sends them. Real store, real DICOM, a tiny real timm model."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dashboard.data.store import Store
from dashboard.testing import app_data
from dashboard.ui.caches import Caches
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import read


@pytest.fixture
def two_sessions(settings):
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    app_data.make_tiny_card(settings)
    loaded = load_model(app_data.TINY_CARD, settings.user_cards_dir, "cpu")
    caches = Caches()
    yield [build_context(settings, store, loaded, caches) for _ in range(2)]
    store.close()


def test_a_second_reader_opening_the_case_gets_the_painted_images_without_painting_them(two_sessions):
    a, b = two_sessions
    first = read.load_reading(a, "SYN-0001")
    misses = a.caches.tiles.misses
    assert misses == len(first.tiles) == 4
    again = read.load_reading(b, "SYN-0001")
    assert a.caches.tiles.misses == misses
    for t, u in zip(first.tiles, again.tiles):
        assert u.rgb is t.rgb and u.jpeg is t.jpeg and u.patches == t.patches
        shown = np.asarray(Image.open(io.BytesIO(t.jpeg)))  # the JPEG is the painted image
        assert shown.shape == t.rgb.shape and np.abs(shown.astype(int) - t.rgb).mean() < 4
    # another overlay is another picture
    lesion = read.load_reading(a, "SYN-0001", overlay="lesion map")
    assert a.caches.tiles.misses == misses + 4
    assert not np.array_equal(lesion.tiles[0].rgb, first.tiles[0].rgb)

"""Fixtures of the UI tests: the screens' AppContext over a real store with the tiny app data set."""
from __future__ import annotations

import pytest

from dashboard.data.store import Store
from dashboard.testing import app_data
from dashboard.ui.context import build_context, load_model


@pytest.fixture
def ctx(settings):
    """The tiny card loaded on the CPU over a store populated with the tiny app data set."""
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    app_data.make_tiny_card(settings)
    loaded = load_model(app_data.TINY_CARD, settings.user_cards_dir, "cpu")
    assert loaded.error is None
    yield build_context(settings, store, loaded)
    store.close()

"""The one module of ``dashboard/`` that imports streamlit: cached loaders for the pages.

``st.cache_resource`` holds the store (one per database file) and the models (one per card,
weights and device, each with its own lock). Pages call ``get_context()`` once per rerun.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from dashboard.data.store import Store
from dashboard.settings import Settings, load_settings, pick_device
from dashboard.ui import state
from dashboard.ui.context import AppContext, LoadedModel, build_context, load_model


def get_settings() -> Settings:
    """Settings from the environment (cheap; read each rerun so tests can point elsewhere)."""
    return load_settings()


@st.cache_resource(show_spinner="Opening the label store…")
def _store(db_path: str, journal_dir: str) -> Store:
    store = Store(Path(db_path), Path(journal_dir))
    store.replay_journal()  # what open_store does: a drawing a crash left in the journal is stored now
    return store


def get_store(settings: Settings | None = None) -> Store:
    settings = settings or get_settings()
    return _store(str(settings.db_path), str(settings.journal_dir))


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _model(card_name: str, user_cards_dir: str, device: str) -> LoadedModel:
    return load_model(card_name, Path(user_cards_dir), device)


def get_model(card_name: str, settings: Settings | None = None) -> LoadedModel:
    settings = settings or get_settings()
    return _model(card_name, str(settings.user_cards_dir), pick_device(settings.device))


def selected_card(settings: Settings) -> str:
    """The card chosen on the Model and data page for this session (default: the settings')."""
    return st.session_state.get(state.MODEL_CARD) or settings.model_card


def get_context() -> AppContext:
    """Settings, store and the selected model for this rerun."""
    settings = get_settings()
    store = get_store(settings)
    return build_context(settings, store, get_model(selected_card(settings), settings))


def forget_models() -> None:
    """Drop cached models (after a card changed on disk or new weights were trained)."""
    _model.clear()


@contextmanager
def progress(label: str, *, done: str | None = None) -> Iterator[Callable[[float, str], None]]:
    """An ``st.status`` box with a progress bar; yields ``callback(fraction, text)`` for long jobs."""
    with st.status(label, expanded=True) as box:
        bar = st.progress(0.0, text=label)

        def update(fraction: float, text: str = "") -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=text or label)

        try:
            yield update
        except Exception:
            box.update(label=f"{label}: failed", state="error")
            raise
        box.update(label=done or label, state="complete", expanded=False)

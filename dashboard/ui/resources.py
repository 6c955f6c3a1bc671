"""The one module of ``dashboard/`` that imports streamlit: cached loaders for the pages, the
progress box of long jobs and the drawing canvas component.

``st.cache_resource`` holds the store (one per database file), the models (one per card,
weights and device, each with its own lock) and the one ``Caches`` every session shares.
Pages call ``get_context()`` once per rerun.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.runtime.scriptrunner import get_script_run_ctx

from dashboard.data.store import Store, open_store
from dashboard.engine.model_queue import act_as
from dashboard.errors import ConceptLensError
from dashboard.progress import Progress, fraction
from dashboard.settings import Settings, load_settings, pick_device
from dashboard.ui import access, state
from dashboard.ui.caches import Caches
from dashboard.ui.context import AppContext, LoadedModel, build_context, load_model
from dashboard.ui.warmup import FIRST_PAGE_S as WARMUP_FIRST_PAGE_S
from dashboard.ui.warmup import STEPS as WARMUP_STEPS
from dashboard.ui.warmup import TITLES as WARMUP_TITLES
from dashboard.ui.warmup import WarmUp


def get_settings() -> Settings:
    """Settings from the environment (cheap; read each rerun so tests can point elsewhere)."""
    return load_settings()


@st.cache_resource(show_spinner="Opening the label store…")
def _store(db_path: str, data_dir: str, _settings: Settings) -> Store:
    # one store per database file and data dir (``_settings`` is not part of the cache key): open_store
    # migrates, copies in older rows' files and replays the drawings a crash left in the journal; from
    # then on the files the app writes (caches, exports) are private, even when streamlit was started
    # without dashboard.ui.serve
    return open_store(_settings)


def get_store(settings: Settings | None = None) -> Store:
    settings = settings or get_settings()
    return _store(str(settings.db_path), str(settings.data_dir), settings)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _model(card_name: str, user_cards_dir: str, device: str) -> LoadedModel:
    return load_model(card_name, Path(user_cards_dir), device)


def get_model(card_name: str, settings: Settings | None = None) -> LoadedModel:
    settings = settings or get_settings()
    return _model(card_name, str(settings.user_cards_dir), pick_device(settings.device))


@st.cache_resource
def get_caches() -> Caches:
    """The process-wide caches: every session shares the work on the same images and model."""
    return Caches()


def selected_card(settings: Settings) -> str:
    """The card chosen on the Model and data page for this session (default: the settings')."""
    return st.session_state.get(state.MODEL_CARD) or settings.model_card


def get_context(card: str | None = None) -> AppContext:
    """Settings, store, the selected model (or ``card``: a study's pinned card) and the shared
    caches for this rerun.

    Without ``card`` (the demo pages' call, their first line) it also refuses the demo pages to a
    session that may not see them (a signed-in reader; anyone before sign-in when sign-in is
    required): Streamlit runs a ``pages/`` file directly, without ``app.py``'s navigation, for the
    first requests a fresh server gets, so the pages must not rely on the navigation alone. The session's model
    work takes its turns in the model's queue as this session (``model_queue.act_as``)."""
    run = get_script_run_ctx()
    if run is not None:
        act_as(("session", run.session_id))
    settings = get_settings()
    store = get_store(settings)
    if card is None:
        user, _ = access.current_user(store, st.session_state.get(state.AUTH_TOKEN))
        if not access.may_see_demo(user.role if user else None, settings.require_sign_in):
            st.error("This page is not open to you" + (f" ({user.username} is a {user.role})" if user else
                                                       ": sign in first") + ". Use the pages in the sidebar.")
            st.stop()
    return build_context(settings, store, get_model(card or selected_card(settings), settings), get_caches())


def require_role(store: Store, role: str) -> access.AuthSession:
    """The signed-in user (``AuthSession``) if this session has ``role``; otherwise the page shows why
    (not signed in, expired, another role) and stops. A study page's first call after its title."""
    try:
        return access.require_role(store, st.session_state.get(state.AUTH_TOKEN), role)
    except ConceptLensError as exc:  # AuthError
        st.error(str(exc))
        st.stop()


def open_study_page(title: str, role: str) -> tuple[Settings, Store, str]:
    """A study page's first lines: the settings and store, the page title, then ``require_role``;
    returns the settings, the store and the signed-in username."""
    settings = get_settings()
    store = get_store(settings)
    st.title(title)
    return settings, store, require_role(store, role).username


def show_flash(key: str) -> str | None:
    """Show, once, the success message an action left under the session-state ``key`` before its
    rerun; returns it (None when there was none)."""
    flash = st.session_state.pop(key, None)
    if flash:
        st.success(flash, icon=":material/check:")
    return flash


@st.cache_resource
def _warmup(db_path: str, data_dir: str, card_name: str) -> WarmUp:
    return WarmUp()


def get_warmup(settings: Settings | None = None) -> WarmUp:
    """The process's warm-up of this database and default card (``dashboard.ui.warmup``), started
    in a background thread on first use (every page's run asks, so the first request starts it)."""
    settings = settings or get_settings()
    warm = _warmup(str(settings.db_path), str(settings.data_dir), settings.model_card)
    if warm.thread is None:
        if not settings.warmup:
            warm.disable("off (CONCEPTLENS_WARMUP=0)")
        else:
            store, loaded, caches = get_store(settings), get_model(settings.model_card, settings), get_caches()
            warm.start(lambda: build_context(settings, store, loaded, caches), first_page_s=WARMUP_FIRST_PAGE_S)
    return warm


def warming_up(step: str, card_name: str) -> bool:
    """True while the warm-up still prepares ``step`` (one of ``WARMUP_STEPS``) for ``card_name``; it
    prepares the default card only."""
    settings = get_settings()
    return card_name == settings.model_card and not get_warmup(settings).snapshot()[step].finished


def page_shown(settings: Settings | None = None) -> None:
    """The page of this script run has been sent (``app.py``'s last line): the warm-up may start."""
    settings = settings or get_settings()
    _warmup(str(settings.db_path), str(settings.data_dir), settings.model_card).page_shown.set()


def warmup_notice(needs: tuple[str, ...], *, key: str, refresh_every: float = 0.0, rerun: bool = True) -> bool:
    """Say what this page waits for while the warm-up prepares ``needs`` (steps of ``WARMUP_STEPS``),
    with their progress, updated every 2 s; the page runs again when one of them finishes (and, with
    ``refresh_every`` (a fraction), each time that much more of a step is done). True when all are
    finished (nothing drawn then, except a failed step's message). ``rerun=False`` (a page where the
    reader may be drawing): the notice says it is ready instead, and the reader's next action uses it."""
    warm = get_warmup()
    seen = warm.snapshot()
    for n in needs:
        if seen[n].state == "failed":
            st.warning(f"Preparing the {WARMUP_TITLES[n]} failed: {seen[n].message}")
    if all(seen[n].finished for n in needs):
        return True

    @st.fragment(run_every=2.0)
    def notice():
        snap = warm.snapshot()
        with st.container(border=True, key=f"{key}.warmup"):
            st.markdown("**Getting ready in the background** · the app works meanwhile")
            for n in WARMUP_STEPS:
                s = snap[n]
                if n not in needs and s.state != "running":
                    continue
                if s.finished:
                    st.caption(f":material/check: {WARMUP_TITLES[n].capitalize()}: {s.state}")
                elif s.state == "running":
                    count = f" · {s.done}/{s.total}" if s.total else ""
                    st.progress(s.fraction, text=f"Preparing the {WARMUP_TITLES[n]}{count}"
                                                 + (f" · {s.message}" if s.message else ""))
                else:
                    st.caption(f":material/schedule: Waiting to prepare the {WARMUP_TITLES[n]}")
        changed = any(snap[n].finished != seen[n].finished for n in needs)
        grown = refresh_every > 0 and any(
            snap[n].total and snap[n].done - seen[n].done >= max(1.0, refresh_every * snap[n].total) for n in needs)
        if rerun and (changed or grown):
            st.rerun()  # the whole page: what it waited for is there
        elif all(snap[n].finished for n in needs):
            st.success("Ready: go ahead.", icon=":material/check:")

    notice()
    return False


def forget_models() -> None:
    """Drop cached models (after a card changed on disk or new weights were trained)."""
    _model.clear()


@contextmanager
def progress(label: str, *, done: str | None = None) -> Iterator[Progress]:
    """An ``st.status`` box with a progress bar; yields ``progress(done, total, message)`` for a
    long job (``dashboard.progress.Progress``)."""
    with st.status(label, expanded=True) as box:
        bar = st.progress(0.0, text=label)

        def update(n_done: int, total: int, message: str = "") -> None:
            bar.progress(fraction(n_done, total), text=message or label)

        try:
            yield update
        except Exception:
            box.update(label=f"{label}: failed", state="error")
            raise  # the page shows the message (a ConceptLensError) or streamlit the bug
        box.update(label=done or label, state="complete", expanded=False)


def canvas(background: np.ndarray | bytes, *, key: str, width: int, height: int, drawing_mode: str, **style):
    """streamlit-drawable-canvas over an RGB (h, w, 3) uint8 background (or its encoded PNG, which
    saves encoding it again on every run); returns its result (``json_data``, ``background_fit``).
    ``style``: stroke/fill colours, widths, point radius."""
    # Imported here, not at the top: importing the package registers its component, which only
    # works inside a running app (outside one, e.g. in pytest, the import raises).
    from streamlit_drawable_canvas import st_canvas  # optional until a page draws a canvas (see above)

    image = background if isinstance(background, bytes) else Image.fromarray(background)
    return st_canvas(background_image=image, width=width, height=height,
                     drawing_mode=drawing_mode, key=key, **style)


class _Encoded:
    """Image bytes encoded once (and cached): what the image component's ``source.save`` writes,
    instead of encoding the array again on every script run."""

    def __init__(self, data: bytes):
        self.data = data

    def save(self, buf, format: str = "", **_kw) -> None:  # noqa: A002 - PIL's own keyword
        buf.write(self.data)


def image_coordinates(rgb: np.ndarray, *, key: str, width: int, jpeg: bytes = b"") -> dict | None:
    """An RGB (h, w, 3) uint8 image that reports where it was last clicked: {"x", "y" (shown px),
    "width", "height" (shown size), "unix_time"} or None (streamlit-image-coordinates).
    ``jpeg``: the image already encoded as JPEG (sent as it is)."""
    # imported here for the same reason as the canvas: the package registers a component on import
    from streamlit_image_coordinates import streamlit_image_coordinates  # optional until a page uses it

    # the height too: given a width alone, the component keeps the image's own height (a distorted image)
    height = max(1, round(width * rgb.shape[0] / rgb.shape[1]))
    return streamlit_image_coordinates(_Encoded(jpeg) if jpeg else Image.fromarray(rgb), key=key, width=width,
                                       height=height, image_format="JPEG", jpeg_quality=90, cursor="crosshair")

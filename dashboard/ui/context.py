"""AppContext: what every screen function needs, built once per rerun by ``resources.get_context``.

Screen functions take an ``AppContext`` instead of reaching for globals, so tests build one from a
real store in ``tmp_path`` (``build_context``) and call them without Streamlit.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import model_zoo
from dashboard.data.store import Store, open_store
from dashboard.engine.model_state import lock_for
from dashboard.errors import ConceptLensError
from dashboard.settings import Settings, load_settings, pick_device
from dashboard.ui.caches import Caches


@dataclass(frozen=True)
class LoadedModel:
    """A model card with its network (or the reason it could not be loaded) and its lock.

    The lock serialises every forward/backward pass through this model (attribution hooks and
    eval/train state are per model, so two sessions must not interleave on one).
    """

    card: Any | None
    model: Any | None
    device: str
    weights_sha: str
    lock: threading.RLock = field(default_factory=threading.RLock, compare=False)
    error: str | None = None


@dataclass(frozen=True)
class AppContext:
    """settings, store, the model in use (card, network, device, weights SHA-256, lock) and the
    caches of the app's computations (shared by every session of the app, see ``Caches``)."""

    settings: Settings
    store: Store
    card: Any | None
    model: Any | None
    device: str
    weights_sha: str
    lock: threading.RLock
    model_error: str | None = None
    caches: Caches = field(default_factory=Caches, compare=False)

    @property
    def card_name(self) -> str:
        return self.card.name if self.card is not None else self.settings.model_card

    @property
    def model_ready(self) -> bool:
        return self.model is not None and self.card is not None

    def require_model(self) -> None:
        """Raise ModelUnavailable with the load error when the model could not be loaded."""
        if not self.model_ready:
            raise ModelUnavailable(self.model_error or f"Model card {self.card_name!r} is not loaded.")


class ModelUnavailable(ConceptLensError, RuntimeError):
    """The model of the selected card cannot be used (missing weights, bad card...)."""


def load_model(card_name: str, user_cards_dir: Path | None, device: str) -> LoadedModel:
    """Load a card and its checked weights onto ``device`` (already resolved, see pick_device).

    Errors are kept in ``LoadedModel.error``, not raised, so the pages that do not need the
    model keep working and the others show why it is missing."""
    dev = device
    try:
        card = model_zoo.load_card(card_name, extra_dirs=[user_cards_dir] if user_cards_dir else [])
    except Exception as exc:  # noqa: BLE001 - any card problem becomes a message on the page
        return LoadedModel(None, None, dev, "", error=f"Model card {card_name!r}: {exc}")
    try:
        model = model_zoo.create_model(card, device=dev)
    except Exception as exc:  # noqa: BLE001
        return LoadedModel(card, None, dev, card.weights_sha256 or "", error=str(exc))
    # the same lock every inference, activation and attribution call takes (``lock_for``)
    return LoadedModel(card, model, dev, card.weights_sha256 or "", lock=lock_for(model))


def build_context(settings: Settings, store: Store, loaded: LoadedModel, caches: Caches | None = None) -> AppContext:
    """The context of one rerun. ``caches``: the app's shared instance (``resources.get_context``);
    a fresh one when not given (tests, command lines)."""
    return AppContext(settings=settings, store=store, card=loaded.card, model=loaded.model,
                      device=loaded.device, weights_sha=loaded.weights_sha, lock=loaded.lock,
                      model_error=loaded.error, caches=caches if caches is not None else Caches())


@contextmanager
def command_line_context(prog: str, settings: Settings | None = None) -> Iterator[AppContext | None]:
    """The context of a command-line tool: the settings' model card loaded on its device and the store
    opened, then closed on exit. Yields None, after saying why on stderr, when the card is not usable."""
    settings = settings or load_settings()
    loaded = load_model(settings.model_card, settings.user_cards_dir, pick_device(settings.device))
    if loaded.error:
        print(f"{prog}: model card {settings.model_card!r} not usable ({loaded.error})", file=sys.stderr)
        yield None
        return
    store = open_store(settings)
    try:
        yield build_context(settings, store, loaded)
    finally:
        store.close()

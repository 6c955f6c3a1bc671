"""Prepare the default model for the app: ``python -m dashboard.ui.warmup``.

Computes the dataset statistics of the selected card's concept layer (each unit's activation
threshold, exemplars and unit map) when they are missing, so a new user can label concepts right
after ``make run``. Resumable and cached by model, layer and data; a second run does nothing.
"""
from __future__ import annotations

import sys

from dashboard.data.store import open_store
from dashboard.progress import tqdm_progress
from dashboard.settings import load_settings, pick_device
from dashboard.ui.context import build_context, load_model
from dashboard.ui.work import concepts as cx


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    loaded = load_model(settings.model_card, settings.user_cards_dir, pick_device(settings.device))
    if loaded.error:
        print(f"warmup: model card {settings.model_card!r} not usable ({loaded.error}); skipped", file=sys.stderr)
        return 0
    store = open_store(settings)
    try:
        ctx = build_context(settings, store, loaded)
        if cx.find_stats(ctx) is not None:
            print(f"warmup: dataset statistics for {settings.model_card} / {cx.layer_of(ctx)} present; nothing to do")
            return 0
        with tqdm_progress(f"dataset statistics {settings.model_card}/{cx.layer_of(ctx)}", unit="patch") as progress:
            stats = cx.compute_stats(ctx, progress=progress)
        print(f"warmup: dataset statistics written to {stats.path}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The simulated reader in the app's suggested order: each concept's next drawings are the remaining
findings whose patches the suggestions score highest under the last probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dashboard import evaluation as ev
from dashboard.engine.activations import compute_patch_activations
from dashboard.engine.suggestions import score_patches
from dashboard.evaluation import label_efficiency as le


def test_an_unknown_order_is_refused(store):
    with pytest.raises(ValueError, match="order must be one of"):
        ev.run_label_efficiency(store, None, type("Card", (), {"name": "x"})(),
                                ev.EvaluationConfig(order="alphabetical"))


@pytest.mark.slow
def test_the_suggested_order_draws_the_best_scored_findings_first(settings, store):
    import model_zoo
    from dashboard.data.demo import build_demo

    build_demo(settings, store, n_cases=12, seed=7, workers=2, contact_sheet=False)
    card = model_zoo.load_card("demo-lite0-synth")
    model = model_zoo.create_model(card)
    concepts = ("mass", "nipple", "skin")
    cfg = ev.EvaluationConfig(concepts=concepts, budgets=(1, 2), stats_patches=24, stats_images=6, n_boot=20,
                              report_images=0, random_images=0, learning_curve=False, order="suggested", pool=6)
    ctx = ev.RunContext(store, model, card, card.default_layer, settings.cache_dir, None)
    stats = ev.compute_train_stats(ctx, cfg)
    plan = ev.plan_drawings(store, concepts, cfg.pool, seed=0)
    reader = ev.SimulatedReader(ctx, stats, concepts=concepts, seed=0)
    reader.draw([plan[c][0] for c in concepts if plan[c]])
    probe = reader.retrain()
    left = {c: list(plan[c][1:]) for c in concepts}
    picks = le._suggested_batch(ctx, reader, probe, left, 2, cfg)
    checked = 0
    for c in concepts:
        if c not in probe.concepts or len(left[c]) < 3:
            continue
        keys = reader.patch_keys(left[c])
        live = [(t, k) for t, k in zip(left[c], keys) if k is not None]
        acts = compute_patch_activations(model, card, ctx.layer, [reader.patches[k] for _, k in live],
                                         cache_dir=settings.cache_dir)
        sc = score_patches(probe, torch.stack([torch.as_tensor(a).float() for a in acts]),
                           thresholds=stats.thresholds, flagged=True,
                           labelled_units=[int(r["unit"]) for r in store.list_unit_labels(card.name, ctx.layer)])
        value = sc.per_concept[:, probe.concepts.index(c)] + sc.novelty
        best = [live[i][0] for i in np.argsort(-value, kind="stable")[:2]]
        assert picks[c] == best
        checked += 1
    assert checked >= 1

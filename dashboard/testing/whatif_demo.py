"""The random-direction control of the What if panel on the synthetic demo set, for the slow test and
``bench/whatif_control.py``: the trained demo model (demo-lite0-synth), a few demo cases, probe v1
from the phantom's truth drawings (the warm-up's "demo drawings"), and for every abnormal image the
change of P(lesion) on the report's patch when the concept the report ranks first is projected out
of the concept layer, against seeded random unit directions."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dashboard import imaging
from dashboard.data.store import Store
from dashboard.engine import intervention
from dashboard.testing import e2e_data
from dashboard.ui.caches import Caches
from dashboard.ui.context import AppContext, build_context, load_model
from dashboard.ui.warmup import seed_demo_drawings
from dashboard.ui.work import concepts, images
from dashboard.ui.work.probe_versions import load_probe_version, probe_info
from dashboard.ui.work.report_parts import engine_report
from dashboard.ui.work.whatif import ranked_concepts


@dataclass
class ControlFigures:
    """Per abnormal image: its top concept, P before, dP removing it, the median |dP| of random
    directions; per concept: mean |dP| over the images (every concept removed from every image)."""

    rows: list[dict]
    per_concept: dict[str, float]
    mean_abs_top: float
    mean_abs_random: float
    n_random: int
    alpha: float
    per_concept_log_odds: dict[str, float] | None = None
    mean_abs_top_log_odds: float = 0.0
    mean_abs_random_log_odds: float = 0.0


def demo_context(data_dir: Path, store: Store, stats_patches: int = 160) -> AppContext:
    """The demo data dir's context (demo cases in ``store``), with the concept layer's dataset
    statistics and probe v1 seeded from the phantom's truth when the store has none."""
    settings = e2e_data._settings(Path(data_dir))
    ctx = build_context(settings, store, load_model(e2e_data.E2E_CARD, settings.user_cards_dir, "cpu"), Caches())
    if concepts.find_stats(ctx) is None:
        concepts.compute_stats(ctx, stats_patches)
    if probe_info(ctx) is None:
        seed_demo_drawings(ctx)
    return ctx


def abnormal_images(ctx: AppContext) -> list[dict]:
    """The demo images with a benign or malignant finding."""
    return [r for r in ctx.store.list_images(source="synthetic")
            if any(f["pathology"] in ("benign", "malignant") for f in ctx.store.list_findings(r["image_id"]))]


def control_figures(ctx: AppContext, *, n_random: int = 16, alpha: float = 1.0, seed: int = 0,
                    limit: int | None = None) -> ControlFigures:
    """The control over the abnormal demo images (the first ``limit`` of them)."""
    info = probe_info(ctx)
    probe = load_probe_version(ctx, info)
    rows_in = abnormal_images(ctx)[:limit]
    patches, tops, ids = [], [], []
    for row in rows_in:
        rep, _, _ = engine_report(ctx, info, row)
        ranked = ranked_concepts(rep)
        if not ranked:
            continue
        img, _, _ = images.model_image(ctx, row)
        x0, y0, size = rep.patch
        patches.append(imaging.crop_patch(img, x0, y0, size))
        tops.append(ranked[0])
        ids.append(row["image_id"])
    patches_a = np.stack(patches)
    dc = intervention.direction_control(ctx.model, ctx.card, patches_a, probe, tops, n_random=n_random,
                                        alpha=alpha, seed=seed)
    per_concept, per_concept_lo = {}, {}
    for concept in probe.concepts:  # a handful of concepts, each one batched pass per patch
        one = intervention.direction_control(ctx.model, ctx.card, patches_a, probe, [concept] * len(ids),
                                             n_random=0, alpha=alpha, seed=seed)
        per_concept[concept] = float(np.abs(one.dp_concept).mean())
        per_concept_lo[concept] = float(np.abs(one.dl_concept).mean())
    rows = [{"image": i, "top concept": t, "P before": float(p), "dP top": float(d), "median |dP| random": float(m),
             "log-odds before": float(lo), "dlog-odds top": float(dl), "median |dlog-odds| random": float(ml)}
            for i, t, p, d, m, lo, dl, ml in zip(ids, tops, dc.p_before, dc.dp_concept, dc.median_random,
                                                 dc.lo_before, dc.dl_concept, dc.median_random_log_odds)]
    return ControlFigures(rows=rows, per_concept=per_concept, mean_abs_top=float(np.abs(dc.dp_concept).mean()),
                          mean_abs_random=float(np.abs(dc.dp_random).mean()), n_random=n_random, alpha=float(alpha),
                          per_concept_log_odds=per_concept_lo,
                          mean_abs_top_log_odds=float(np.abs(dc.dl_concept).mean()),
                          mean_abs_random_log_odds=float(np.abs(dc.dl_random).mean()))

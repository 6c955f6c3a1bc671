"""The app's learning curve: probes refitted on the first n drawings of each concept, validated by image;
the browser bench's drawing speed."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dashboard.engine.probes import ProbeConfig, auroc_one_vs_rest, collect_probe_data, fit_probes, image_folds
from dashboard.evaluation.reader import READER
from dashboard.progress import Progress, report


def load_drawing_speed(path: str | Path) -> dict | None:
    """Drawings per minute measured in the browser (``bench/results/browser.json`` of branch ``app``).

    Accepts ``drawings_per_minute``, ``seconds_per_drawing`` or a list ``draw_seconds`` at the top
    level or under ``drawing``/``label``. Returns {"drawings_per_minute", "seconds_per_drawing",
    "source"} or None when the file or the figure is missing.
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for node in (d, d.get("drawing") if isinstance(d, dict) else None, d.get("label") if isinstance(d, dict) else None):
        if not isinstance(node, dict):
            continue
        spd = None
        dpm = node.get("drawings_per_minute")
        if isinstance(dpm, dict):  # bench_browser: {"drawings_per_minute_p50": ..., "human_s": ..., ...}
            dpm = dpm.get("drawings_per_minute_p50")
        if dpm:
            spd = 60.0 / float(dpm)
        elif node.get("seconds_per_drawing"):
            spd = float(node["seconds_per_drawing"])
        elif isinstance(node.get("draw_seconds"), list) and node["draw_seconds"]:
            spd = float(np.median(np.asarray(node["draw_seconds"], np.float64)))
        if spd and spd > 0:
            return {"drawings_per_minute": 60.0 / spd, "seconds_per_drawing": spd, "source": str(p)}
    return None


# ====================================================================== learning curve for the app
CURVE_COLUMNS = ["n_step", "concept", "n_drawings", "n_available", "n_images", "auroc", "n_eval_positions", "reason"]


@dataclass(frozen=True)
class LearningCurveConfig:
    """Settings of ``compute_learning_curve``.

    layer            the concept layer (default: card.default_layer)
    steps            drawings per concept at which probes are refitted (cut at the most drawn; the
                     last step always uses every drawing)
    readers          only these readers' drawings (None: all);  exclude_readers: left out (by
                     default the simulated reader)
    folds            folds of images held out;  l2, max_iter: the probes' fit (``probes.fit_probes``)
    min_images       a concept drawn on fewer images gets no validated AUROC
    seed             folds and background sampling
    """

    layer: str | None = None
    steps: tuple[int, ...] = (1, 2, 3, 5, 10, 20)
    readers: tuple[str, ...] | None = None
    exclude_readers: tuple[str, ...] = (READER,)
    folds: int = 5
    l2: float = 1e-2
    max_iter: int = 60
    min_images: int = 2
    seed: int = 0


def compute_learning_curve(store, card, model, *, load_patch: Callable,
                           config: LearningCurveConfig = LearningCurveConfig(), cache_dir=None, device=None,
                           progress: Progress | None = None) -> pd.DataFrame:
    """Validation AUROC (by image) of each concept against the number of its drawings so far.

    From the live drawings made under ``card`` (``config.readers``, ``config.exclude_readers``) in
    time order: for each step n, probes are refitted on the first n drawings of each concept, folds
    of images held out (the probe module's folds), and every position of the held-out images (all
    drawings, so the evaluation set is the same at every step) is scored. All steps x folds are
    fitted in one batched solve (``probes.fit_probes``). ``load_patch(annotation) -> (S, S)`` as
    for ``train_probes``.

    Returns a pandas DataFrame, one row per (step, concept): n_step (the cap), concept,
    n_drawings (used), n_available, n_images (of the used drawings), auroc (None with a reason
    when it cannot be validated), n_eval_positions; the last step uses every drawing. Empty when
    there are no drawings.
    """
    anns = _curve_annotations(store, card, config)
    if not anns:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    data = collect_probe_data(model, card, config.layer or card.default_layer, anns, load_patch,
                              ProbeConfig(cache_dir=cache_dir, device=device, seed=config.seed), progress=progress)
    rank = _ranks_in_concept(anns)
    steps = sorted({int(s) for s in config.steps if 0 < int(s) < rank.max() + 1} | {int(rank.max()) + 1})
    n_img = len(data.image_ids)
    k = min(config.folds, n_img)
    aucs = None
    if k >= 2:
        sel = _step_rows(data, anns, rank, steps)
        fold = image_folds(data.group.numpy(), n_img, k, config.seed)
        aucs = _out_of_fold_aurocs(data, sel, fold, k, config, progress)
    return pd.DataFrame(_curve_rows(anns, rank, steps, data.y.numpy(), data.classes[1:], aucs, k, config.min_images),
                        columns=CURVE_COLUMNS)


def _curve_annotations(store, card, config: LearningCurveConfig) -> list:
    """The card's live drawings the curve is made of, in the store's time order."""
    anns = store.list_annotations(model_card=card.name)
    if config.readers is not None:
        anns = [a for a in anns if a.reader in set(config.readers)]
    return [a for a in anns if a.reader not in set(config.exclude_readers)]


def _ranks_in_concept(anns: list) -> np.ndarray:
    """(A,) rank of each drawing within its concept, in time order (0 = the concept's first)."""
    rank = np.zeros(len(anns), np.int64)
    seen: dict[str, int] = {}
    for i, a in enumerate(anns):
        rank[i] = seen.get(a.concept, 0)
        seen[a.concept] = rank[i] + 1
    return rank


def _step_rows(data, anns: list, rank: np.ndarray, steps: list[int]) -> np.ndarray:
    """(S, N) bool: the rows of ``data`` each step trains on: the positions of its drawings and the
    background of the images drawn on so far."""
    drawing, group = data.drawing.numpy(), data.group.numpy()
    img_of_ann = np.array([data.image_ids.index(a.image_id) for a in anns])
    drawn = drawing >= 0
    selected = []
    for s in steps:
        used = rank < s  # (A,)
        sel = np.zeros(len(drawing), bool)
        sel[drawn] = used[drawing[drawn]]
        imgs = np.zeros(len(data.image_ids), bool)
        imgs[img_of_ann[used]] = True
        sel[~drawn] = imgs[group[~drawn]]
        selected.append(sel)
    return np.stack(selected)


def _out_of_fold_aurocs(data, sel: np.ndarray, fold: np.ndarray, k: int, config: LearningCurveConfig,
                        progress: Progress | None) -> np.ndarray:
    """(S, K+1) one-vs-rest AUROC of each step's out-of-fold probabilities: every step x fold model
    fitted in one batched solve, each scoring its held-out fold's positions."""
    n_steps, n_cls, y = len(sel), len(data.classes), data.y.numpy()
    train = np.concatenate([sel & (fold != f)[None] for f in range(k)])  # (k*S, N), fold-major
    fitted = np.flatnonzero(train.any(1))  # a model with no training rows has learnt nothing
    report(progress, 0, 1, f"fitting {n_steps} steps x {k} folds")
    W, b, mu, sd = fit_probes(data.X, data.y, n_cls, torch.from_numpy(train[fitted]), l2=config.l2,
                              max_iter=config.max_iter)
    slot = {int(m): j for j, m in enumerate(fitted)}
    with torch.no_grad():
        oof = np.full((n_steps, len(y), n_cls), 1.0 / n_cls)  # unfitted models: uniform, no ranking
        for f in range(k):  # folds, not units: a few small matmuls
            test = torch.from_numpy(fold == f)
            x = data.X[test]
            for si in range(n_steps):
                j = slot.get(f * n_steps + si)
                if j is not None:
                    oof[si, test.numpy()] = torch.softmax(((x - mu[j]) / sd[j]) @ W[j].T + b[j], 1).double().numpy()
    report(progress, 1, 1, "learning curve done")
    return np.stack([auroc_one_vs_rest(oof[si], y, n_cls) for si in range(n_steps)])


def _curve_rows(anns: list, rank: np.ndarray, steps: list[int], y: np.ndarray, concepts: list[str],
                aucs: np.ndarray | None, k: int, min_images: int) -> list[dict]:
    """One row per (step, concept) with the AUROC or the reason there is none."""
    rows = []
    for si, s in enumerate(steps):
        for ci, c in enumerate(concepts, start=1):
            used_anns = [i for i, a in enumerate(anns) if a.concept == c and rank[i] < s]
            all_images = len({a.image_id for a in anns if a.concept == c})
            reason, auc = None, None
            if k < 2:
                reason = "drawings on fewer than two images: no validation by image"
            elif all_images < min_images:
                reason = f"drawings on {all_images} image(s); at least {min_images} are needed for validation by image"
            elif not np.isfinite(aucs[si, ci]):
                reason = "not enough held-out positions to score"
            else:
                auc = float(aucs[si, ci])
            rows.append({"n_step": s, "concept": c, "n_drawings": len(used_anns),
                         "n_available": sum(1 for a in anns if a.concept == c),
                         "n_images": len({anns[i].image_id for i in used_anns}), "auroc": auc,
                         "n_eval_positions": int((y == ci).sum()), "reason": reason})
    return rows

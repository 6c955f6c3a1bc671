"""The app's learning curve: probes refitted on the first n drawings of each concept, validated by image;
the browser bench's drawing speed."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dashboard.evaluation.reader import READER, Progress


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
def compute_learning_curve(store, card, model, *, load_patch: Callable, layer: str | None = None,
                           steps: Sequence[int] = (1, 2, 3, 5, 10, 20), readers: Sequence[str] | None = None,
                           exclude_readers: Sequence[str] = (READER,), folds: int = 5, l2: float = 1e-2,
                           max_iter: int = 60, min_images: int = 2, seed: int = 0, cache_dir=None, device=None,
                           progress: Progress | None = None):
    """Validation AUROC (by image) of each concept against the number of its drawings so far.

    From the live drawings made under ``card`` (optionally only ``readers``; ``exclude_readers``
    left out, by default the simulated reader) in time order: for each step n, probes are refitted
    on the first n drawings of each concept, folds of images held out (the probe module's folds),
    and every position of the held-out images (all drawings, so the evaluation set is the same at
    every step) is scored. All steps x folds are fitted in one batched solve
    (``probes.fit_probes``). ``load_patch(annotation) -> (S, S)`` as for ``train_probes``.

    Returns a pandas DataFrame, one row per (step, concept): n_step (the cap), concept,
    n_drawings (used), n_available, n_images (of the used drawings), auroc (None with a reason
    when it cannot be validated), n_eval_positions; the last step uses every drawing. Empty when
    there are no drawings.
    """
    import pandas as pd
    import torch

    from dashboard.engine.probes import ProbeConfig, auroc_one_vs_rest, collect_probe_data, fit_probes, image_folds

    cols = ["n_step", "concept", "n_drawings", "n_available", "n_images", "auroc", "n_eval_positions", "reason"]
    layer = layer or card.default_layer
    anns = store.list_annotations(model_card=card.name)
    if readers is not None:
        anns = [a for a in anns if a.reader in set(readers)]
    anns = [a for a in anns if a.reader not in set(exclude_readers)]
    if not anns:
        return pd.DataFrame(columns=cols)
    data = collect_probe_data(model, card, layer, anns, load_patch,
                              ProbeConfig(cache_dir=cache_dir, device=device, seed=seed), progress=progress)
    concepts = data.classes[1:]
    # rank of each drawing within its concept, in time order
    rank = np.zeros(len(anns), np.int64)
    seen: dict[str, int] = {}
    for i, a in enumerate(anns):
        rank[i] = seen.get(a.concept, 0)
        seen[a.concept] = rank[i] + 1
    n_max = max(seen.values())
    steps = sorted({int(s) for s in steps if 0 < int(s) < n_max} | {n_max})
    drawing = data.drawing.numpy()
    group = data.group.numpy()
    y = data.y.numpy()
    n_img = len(data.image_ids)
    k = min(folds, n_img)
    fold = image_folds(group, n_img, k, seed) if k >= 2 else np.zeros(len(y), np.int64)
    img_of_ann = np.array([data.image_ids.index(a.image_id) for a in anns])
    selected = []  # (S, N) rows each step trains on
    for s in steps:
        used = rank < s  # (A,)
        sel = np.zeros(len(y), bool)
        sel[drawing >= 0] = used[drawing[drawing >= 0]]
        imgs = np.zeros(n_img, bool)
        imgs[img_of_ann[used]] = True
        sel[drawing < 0] = imgs[group[drawing < 0]]  # background of the images drawn on so far
        selected.append(sel)
    sel = np.stack(selected)  # (S, N)
    n_cls = len(data.classes)
    rows = []
    if k >= 2:
        train = np.concatenate([sel & (fold != f)[None] for f in range(k)])  # (k*S, N), fold-major
        fitted = np.flatnonzero(train.any(1))  # a model with no training rows has learnt nothing
        if progress:
            progress(0, 1, f"fitting {len(steps)} steps x {k} folds")
        W, b, mu, sd = fit_probes(data.X, data.y, n_cls, torch.from_numpy(train[fitted]), l2=l2, max_iter=max_iter)
        slot = {int(m): j for j, m in enumerate(fitted)}
        with torch.no_grad():
            oof = np.full((len(steps), len(y), n_cls), 1.0 / n_cls)  # unfitted models: uniform, no ranking
            for f in range(k):  # folds, not units: a few small matmuls
                test = torch.from_numpy(fold == f)
                x = data.X[test]
                for si in range(len(steps)):
                    j = slot.get(f * len(steps) + si)
                    if j is not None:
                        oof[si, test.numpy()] = torch.softmax(((x - mu[j]) / sd[j]) @ W[j].T + b[j], 1).double().numpy()
        aucs = np.stack([auroc_one_vs_rest(oof[si], y, n_cls) for si in range(len(steps))])  # (S, K+1)
        if progress:
            progress(1, 1, "learning curve done")
    avail = {c: seen.get(c, 0) for c in concepts}
    for si, s in enumerate(steps):
        for ci, c in enumerate(concepts, start=1):
            used_anns = [i for i, a in enumerate(anns) if a.concept == c and rank[i] < s]
            n_images = len({anns[i].image_id for i in used_anns})
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
            rows.append({"n_step": s, "concept": c, "n_drawings": len(used_anns), "n_available": avail[c],
                         "n_images": n_images, "auroc": auc, "n_eval_positions": int((y == ci).sum()),
                         "reason": reason})
    return pd.DataFrame(rows, columns=cols)



"""Held-out evaluation of a lesion card on real data: patch AUROC, image AUROC, patient bootstrap.

The patches are cut again from the store exactly as the card's training run cut them (the
parameters in ``card.training["patchset"]``: seed, patches per image, patient split fractions and
seed), so the held-out split here is the one the card was evaluated on. An image's score is the
maximum of its whole-mammogram lesion map (``dashboard.engine.inference.compute_lesion_map``); an image is
abnormal when it has any lesion finding (located or image-level) and normal when it has none.
Confidence intervals resample patients (a woman's images and patches stay together).

    python -m dashboard.evaluation.scoring --card mias-lite0 --source mini-mias [--split test] [--write-card]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace

import numpy as np
import torch

import model_zoo
from dashboard import imaging
from dashboard.data import patchset
from dashboard.data.files import load_stored_image
from dashboard.data.store import Store, StoreError
from dashboard.engine.inference import LesionMapConfig, compute_lesion_map, predict_patches
from dashboard.errors import ConceptLensError
from dashboard.evaluation.metrics import percentile_interval
from dashboard.progress import Progress, report, scaled, tqdm_progress
from dashboard.settings import load_settings, pick_device
from model_zoo.metrics import compute_auroc

BOOTSTRAP_RESAMPLES = 2000
# the held-out patients (first by id) whose patch AUROC the card records for a quick re-check in tests
CHECK_PATIENTS = 8


class ScoringError(ConceptLensError):
    """The evaluation cannot run as asked (card without patch-set parameters, one class only...)."""


@dataclass
class ImageScores:
    """Per-image results of one split. All arrays (N,), in ``image_id`` order of the store."""

    image_id: np.ndarray   # str
    patient: np.ndarray    # str, the grouping key for the bootstrap (patient_ref or case_id)
    abnormal: np.ndarray   # bool
    score: np.ndarray      # float64, max of the lesion map
    method: str = "fcn"


def card_patchset_params(card) -> dict:
    """The patch-set parameters the card's training recorded; ScoringError when there are none."""
    params = dict((card.training or {}).get("patchset") or {})
    if not params:
        raise ScoringError(f"card {card.name!r} records no [training.patchset] parameters, so its held-out "
                           "patches cannot be cut again")
    return params


def rebuild_patches(store, card, *, source: str | None, split: str = "test", max_images: int | None = None,
                    split_of: dict[str, str] | None = None, progress: Progress | None = None) -> patchset.PatchSet:
    """Cut the card's ``split`` patches again from the store, with the card's recorded parameters.

    split_of  case_id -> split, when the store holds only part of the data the split was made over
              (default: the card's patient split over this store's images)
    """
    p = card_patchset_params(card)
    fractions = p.get("split_by_patient")
    return patchset.build_patchset(store, card, patchset.PatchSetConfig(
        source=source, splits=(split,), per_image_lesion=int(p["per_image_lesion"]),
        per_image_normal=int(p["per_image_normal"]), seed=int(p["seed"]), jitter=p.get("jitter"),
        exclusion_margin=p.get("exclusion_margin"), max_images=max_images,
        split_by_patient=tuple(fractions) if fractions and split_of is None else None,
        split_seed=int(p.get("split_seed", 0)), split_of=split_of), progress=progress)


def split_images(store, card, *, source: str | None, split: str = "test") -> list[dict]:
    """The store's image rows in the card's ``split`` (patient split from the card when it used one)."""
    rows = store.list_images(source=source)
    p = card_patchset_params(card)
    if p.get("split_by_patient"):
        split_of = patchset.assign_patient_splits(rows, tuple(p["split_by_patient"]), int(p.get("split_seed", 0)))
        rows = [dict(r, split=split_of[r["case_id"]]) for r in rows]
    return [r for r in rows if r["split"] == split]


def image_is_abnormal(store, image_id: str, lesion_names: set[str]) -> bool:
    """True when the image has a lesion finding (any concept outside 'normal structure')."""
    return any(f["concept"] in lesion_names and f.get("pathology") != "normal"
               for f in store.list_findings(image_id))


def compute_image_scores(model, card, store, rows: list[dict], *, method: str = "fcn",
                         progress: Progress | None = None) -> ImageScores:
    """Whole-image lesion-map maxima of ``rows`` (store image rows), with their labels and patients."""
    lesion_names = patchset.lesion_concept_names(store)
    ids, patients, abnormal, scores = [], [], [], []
    used = method
    for i, row in enumerate(rows):
        m = load_stored_image(store, row)
        img, mask, _ = imaging.prepare_model_image(m, card.pixel_spacing_mm,
                                                   default_spacing_mm=row.get("pixel_spacing_mm"))
        lm = compute_lesion_map(model, card, img, mask, LesionMapConfig(method=method))
        used = lm.method
        ids.append(row["image_id"])
        patients.append(str(row.get("patient_ref") or row["case_id"]))
        abnormal.append(image_is_abnormal(store, row["image_id"], lesion_names))
        scores.append(float(lm.prob.max()))
        report(progress, i + 1, len(rows), "whole-image lesion maps")
    return ImageScores(np.array(ids, str), np.array(patients, str), np.array(abnormal, bool),
                       np.array(scores, np.float64), used)


def bootstrap_auroc(labels, scores, groups, *, n: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the AUROC, resampling ``groups`` (patients) with replacement.

    labels (N,) bool, scores (N,) float, groups (N,) hashable. Resamples that lack a class are
    drawn again (they are rare for a split stratified by label).
    """
    y = np.asarray(labels, bool)
    s = np.asarray(scores, np.float64)
    uniq, gidx = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(gidx == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    values = []
    tries = 0
    while len(values) < n and tries < 10 * n:
        tries += 1
        pick = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        yy = y[pick]
        if yy.all() or not yy.any():
            continue
        values.append(compute_auroc(yy, s[pick]))
    if not values:
        raise ScoringError("no bootstrap resample holds both classes")
    lo, hi = percentile_interval(values, level)
    return float(lo), float(hi)


def evaluate_card(model, card, store, *, source: str | None, split: str = "test", seed: int = 0,
                  n_boot: int = BOOTSTRAP_RESAMPLES, progress: Progress | None = None) -> dict:
    """Patch and image AUROC of ``split`` with patient-bootstrap 95 % CIs and the split sizes.
    ``progress``: the patches are the first half of the job, the whole images the second."""
    ps = rebuild_patches(store, card, source=source, split=split, progress=scaled(progress, 0.0, 0.5))
    pos = card.positive_index
    p_patch = predict_patches(model, card, ps.patches.astype(np.float32) / 255.0)[:, pos].astype(np.float64)
    y_patch = ps.labels == pos
    patient_of = {r["image_id"]: str(r.get("patient_ref") or r["case_id"]) for r in store.list_images(source=source)}
    g_patch = np.array([patient_of[i] for i in ps.image_id])
    rows = split_images(store, card, source=source, split=split)
    im = compute_image_scores(model, card, store, rows, progress=scaled(progress, 0.5, 1.0))
    if im.abnormal.all() or not im.abnormal.any():
        raise ScoringError(f"the {split!r} split needs abnormal and normal images for an image AUROC")
    check = sorted(set(g_patch))[:CHECK_PATIENTS]
    in_check = np.isin(g_patch, check)
    patch_ci = bootstrap_auroc(y_patch, p_patch, g_patch, n=n_boot, seed=seed)
    image_ci = bootstrap_auroc(im.abnormal, im.score, im.patient, n=n_boot, seed=seed)
    return {
        "eval_split": split,
        "patch_auroc": round(compute_auroc(y_patch, p_patch), 4),
        "patch_auroc_ci95": [round(patch_ci[0], 4), round(patch_ci[1], 4)],
        "n_eval_patch_lesion": int(y_patch.sum()), "n_eval_patch_normal": int((~y_patch).sum()),
        "image_auroc": round(compute_auroc(im.abnormal, im.score), 4),
        "image_auroc_ci95": [round(image_ci[0], 4), round(image_ci[1], 4)],
        "image_score": f"max of the whole-image lesion map (compute_lesion_map, method {im.method})",
        "n_eval_images_abnormal": int(im.abnormal.sum()), "n_eval_images_normal": int((~im.abnormal).sum()),
        "n_eval_patients": int(len(np.unique(im.patient))),
        "bootstrap": f"{n_boot} patient resamples, percentile 95 % interval, seed {seed}",
        "check_patients": [str(c) for c in check],
        "check_auroc": round(compute_auroc(y_patch[in_check], p_patch[in_check]), 4),
        "check_n_patches": int(in_check.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.evaluation.scoring", description=__doc__.splitlines()[0])
    ap.add_argument("--card", required=True)
    ap.add_argument("--source", default=None, help="only images of this source (e.g. mini-mias)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--write-card", action="store_true",
                    help="add the image-level results and CIs to the card's [metrics] table")
    args = ap.parse_args(argv)

    settings = load_settings()
    try:
        card = model_zoo.load_card(args.card, extra_dirs=(settings.user_cards_dir,))
        device = pick_device(settings.device)
        # channels-last: about twice as fast on CPU (oneDNN), the same numbers
        model = model_zoo.create_model(card, weights=True, device=device).to(memory_format=torch.channels_last)
        with Store(settings.db_path, settings.journal_dir, data_dir=settings.data_dir, read_only=True) as store, \
                tqdm_progress(f"scoring {card.name}", unit="step") as progress:
            result = evaluate_card(model, card, store, source=args.source, split=args.split, seed=args.seed,
                                   progress=progress)
    except (model_zoo.ModelZooError, StoreError, patchset.PatchSetError, ScoringError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, value in result.items():
        print(f"{key}: {value}")
    if args.write_card:
        metrics = dict(card.metrics)
        metrics.update({k: v for k, v in result.items() if k != "eval_split"})
        written = model_zoo.save_card(replace(card, metrics=metrics), card.path)
        print(f"wrote {written.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

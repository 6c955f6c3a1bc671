"""Label efficiency end to end on a demo store: the simulated reader draws, probes retrain, every
metric is measured on held-out images (``run_label_efficiency``, ``summarise``)."""
from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from dashboard.data.patchset import assign_patient_splits, lesion_concept_names
from dashboard.data.store import ValidationError
from dashboard.engine.activations import compute_activations, compute_patch_activations
from dashboard.engine.dissection import StatsConfig, compute_dataset_stats, units_by_concept
from dashboard.engine.model_state import lock_for
from dashboard.engine.probes import compute_concept_maps
from dashboard.engine.report import ReportConfig, ReportInputs, build_report
from dashboard.engine.suggestions import SuggestConfig, score_patches
from dashboard.evaluation.faithfulness import deletion_drops, inpaint_regions, randomize_model, region_curves
from dashboard.evaluation.learning_curve import LearningCurveConfig, compute_learning_curve
from dashboard.evaluation.metrics import (
    attribution_in_region,
    bootstrap_auroc_iou,
    bootstrap_mean,
    map_similarity,
    sample_grid,
    score_histograms,
    spearman,
    top_concept_match,
)
from dashboard.evaluation.reader import (
    DEFAULT_CONCEPTS,
    ImageTruth,
    ReaderConfig,
    RunContext,
    SimulatedReader,
    load_image_truth,
    plan_drawings,
)
from dashboard.imaging import crop_patch, tile
from dashboard.progress import Progress, report, scaled

#: Drawings per concept after each batch (the x axis of the label-efficiency curve).
DEFAULT_BUDGETS = (1, 2, 3, 5, 10, 20)
#: Deletion test variants: where a concept is (its true region / the report's region) and how it is removed.
DELETION_VARIANTS = ("deletion_truth", "deletion_report", "deletion_truth_blur")
#: Deletion/insertion curve variants (``region_curves``): the true regions / the report's, texture inpainting.
CURVE_VARIANTS = ("curves_truth", "curves_report")
#: The reader's drawing orders (``EvaluationConfig.order``).
ORDERS = ("random", "suggested")


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of ``run_label_efficiency``.

    concepts          what the reader draws;  budgets: drawings per concept after each batch
    heldout_splits    where the metrics are measured;  max_heldout_images: cap (None: all), a
                      seeded sample that keeps every image with a lesion first
    stats_patches     breast tiles of the train split for the dataset statistics (unit thresholds)
    quantile          activation quantile that switches a unit on (the app's 0.99)
    eval_stride       held-out maps are scored every eval_stride pixels (offset stride // 2);
                      unit_stride: the same for the units' on-maps (1280 units: coarser)
    layer             the concept layer drawings label and probes read (default: card.default_layer,
                      what the app uses)
    n_boot            bootstrap resamples over held-out images
    report_images     abnormal held-out images for the report checks (None: all)
    random_images     of those, how many get the randomisation check;  random_scopes: "top", "full"
    min_region_px     a concept region smaller than this (px) is not deleted
    order             which drawing of a concept the reader makes next: "random" (the plan's seeded
                      order) or "suggested" (``_suggested_batch``: the remaining findings of the concept
                      among the first ``pool`` of the plan, ranked by the app's suggestion score of
                      their patch under the probe of the last round; the first batch, before any
                      probe, is the plan's)
    suggest_weights   the suggested order's weights of uncertainty, fold disagreement and novelty
    curve_orders      random orders the deletion/insertion curves compare with (``region_curves``)
    """

    concepts: tuple[str, ...] = DEFAULT_CONCEPTS
    budgets: tuple[int, ...] = DEFAULT_BUDGETS
    reader: ReaderConfig = ReaderConfig()
    seed: int = 0
    heldout_splits: tuple[str, ...] = ("val", "test")
    max_heldout_images: int | None = None
    stats_patches: int = 256
    stats_images: int = 48
    quantile: float = 0.99
    eval_stride: int = 4
    unit_stride: int = 8
    layer: str | None = None
    n_boot: int = 1000
    report_images: int | None = None
    random_images: int = 8
    random_scopes: tuple[str, ...] = ("top", "full")
    min_region_px: int = 16
    attribution_method: str = "gradcam"
    learning_curve: bool = True
    order: str = "random"
    pool: int = 30
    suggest_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    curve_orders: int = 24


@dataclass
class _Heldout:
    """One held-out image as the metrics need it (``_prepare_heldout``)."""

    image_id: str
    case_id: str
    split: str
    feats: Any                   # (C, h', w') float16 torch tensor at the concept layer
    truth: np.ndarray            # (K, h_g, w_g) bool on the evaluation grid
    breast: np.ndarray           # (h_g, w_g) bool
    shape: tuple[int, int]
    lesion_concepts: set
    unit_on: np.ndarray | None = None         # (C, ceil(P/8)) uint8 packed: unit above threshold, unit grid
    unit_inter: np.ndarray | None = None      # (C, K) pixels where unit u is on inside concept k's truth
    unit_on_count: np.ndarray | None = None   # (C,) pixels where unit u is on (in the breast)
    unit_truth: np.ndarray | None = None      # (K, P) bool truth on the unit grid (in the breast)
    tile: tuple[int, int] | None = None       # top tile (x0, y0) by the model's FCN log-odds
    tile_score: float | None = None
    patches: dict = field(default_factory=dict)   # name -> {x0, y0, patch (S, S), lesion (S, S), truth (K, S, S)}


def compute_train_stats(ctx: RunContext, cfg: EvaluationConfig, *, progress: Progress | None = None):
    """Dataset statistics of the context's layer over breast tiles of the TRAIN split (as the app's
    Model page computes them over the store's images, ``dissection.compute_dataset_stats``):
    half-overlapping tiles at least half breast (``imaging.tile``), ``cfg.stats_patches`` of them, an
    even share from each of a seeded sample of ``cfg.stats_images`` images; units switch on at
    ``cfg.quantile``. Cached under ``ctx.cache_dir``."""
    size = _label_patch(ctx.card)  # thresholds are quantiles over patches of the size readers label
    rows = ctx.store.list_images(split="train")
    pick = np.random.default_rng([cfg.seed, 0x57A7]).permutation(len(rows))[:cfg.stats_images]
    rows = [rows[i] for i in sorted(pick)]
    per = int(math.ceil(cfg.stats_patches / max(len(rows), 1)))
    tiles_progress = scaled(progress, 0.0, 0.2)
    patches, h = [], hashlib.sha256()
    for i, r in enumerate(rows):
        t = load_image_truth(ctx.store, ctx.card, r, concepts=())
        xy = tile(t.breast, size, size // 2, min_fraction=0.5)
        keep = np.sort(np.random.default_rng([cfg.seed, i, 0x711E]).permutation(len(xy))[:per])
        for x0, y0 in np.asarray(xy)[keep]:
            patches.append(crop_patch(t.img, int(x0), int(y0), size))
            h.update(f"{r['sha256']}:{int(x0)}:{int(y0)}:{size};".encode())
        report(tiles_progress, i + 1, len(rows), "breast tiles for the dataset statistics")
    if not patches:
        raise ValueError("no breast tiles in the train split for the dataset statistics")
    arr = np.stack(patches[:cfg.stats_patches])  # (N, S, S)
    return compute_dataset_stats(ctx.model, ctx.card, ctx.layer, arr, StatsConfig(
        data_key=h.hexdigest()[:24], quantile=cfg.quantile, cache_dir=Path(ctx.cache_dir) / "dissection",
        device=ctx.device, batch_size=16), progress=scaled(progress, 0.2, 1.0), store=ctx.store)


def split_by_woman(rows: Sequence[dict], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                   seed: int = 0) -> dict[str, list[dict]]:
    """Image rows of a real-film source cut into "train" and "heldout" (val + test) by woman.

    The cut is ``patchset.assign_patient_splits`` (grouped by ``patient_ref``, stratified by the
    woman's worst label), the one a real-film card was trained with (its [training.patchset]
    split_by_patient and split_seed), so no held-out woman was seen in training. Raises
    ValueError if a woman ends up on both sides."""
    split = assign_patient_splits(rows, fractions, seed=seed)
    out: dict[str, list[dict]] = {"train": [], "heldout": []}
    for r in rows:
        out["train" if split[str(r["case_id"])] == "train" else "heldout"].append(r)
    women = {k: {str(r.get("patient_ref") or r["case_id"]) for r in v} for k, v in out.items()}
    if women["train"] & women["heldout"]:
        raise ValueError(f"women on both sides of the split: {sorted(women['train'] & women['heldout'])[:5]}")
    return out


def _label_patch(card) -> int:
    """The labeling patch side of ``card`` (``ModelCard.label_patch_size``; the input side for
    card-like objects without it)."""
    return int(getattr(card, "label_patch_size", None) or card.input_size[-1])


def _logodds(logits, target: int):
    z = torch.as_tensor(logits).double()
    others = torch.cat([z[..., :target], z[..., target + 1:]], -1)
    return z[..., target] - torch.logsumexp(others, -1)


def _score_fn(model, card, target: int, device=None) -> Callable[[np.ndarray], np.ndarray]:
    """(N, S, S) grey patches -> (N,) class log-odds (logit of the target against the others)."""
    layer = getattr(card, "head_layer", None) or card.default_layer

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(card.preprocess(np.asarray(batch, np.float32))), dtype=torch.float32)
        with lock_for(model):
            _, out = compute_activations(model, [layer], x, device=device, with_output=True, out_device="cpu",
                                         batch_size=16)
        return _logodds(out, target).numpy()

    return fn


def _target_index(card) -> int:
    """The class whose log-odds the checks read: the card's positive class, else its last."""
    return card.classes.index(card.positive_class) if getattr(card, "positive_class", None) else len(card.classes) - 1


def _unit_maps(h: _Heldout, t: ImageTruth, feats, thresholds: np.ndarray, concepts: Sequence[str], stride: int,
               chunk: int = 256) -> None:
    """Which units are on where (bilinear upsampling then threshold, as the engine does), on a grid
    of ``stride`` px inside the breast, packed 8 pixels a byte; and per unit and concept the pixels
    on inside the truth, so per-unit IoUs over any set of images are sums. Chunked over units."""
    off = stride // 2
    breast = t.breast[off::stride, off::stride].reshape(-1)  # (P,)
    truth = np.stack([t.concept_mask(c)[off::stride, off::stride].reshape(-1) for c in concepts]) & breast  # (K, P)
    c = feats.shape[0]
    packed, inter, count = [], np.zeros((c, len(concepts)), np.int64), np.zeros(c, np.int64)
    tf = truth.T.astype(np.float32)  # (P, K)
    for s0 in range(0, c, chunk):
        a = feats[s0:s0 + chunk].float().numpy() - thresholds[s0:s0 + chunk, None, None]  # (U, h', w')
        on = (sample_grid(a, t.img.shape, stride, off).reshape(a.shape[0], -1) > 0) & breast  # (U, P)
        packed.append(np.packbits(on, axis=1))
        inter[s0:s0 + chunk] = np.rint(on.astype(np.float32) @ tf).astype(np.int64)
        count[s0:s0 + chunk] = on.sum(1)
    h.unit_on, h.unit_inter, h.unit_on_count, h.unit_truth = np.concatenate(packed), inter, count, truth


def _heldout_rows(store, cfg: EvaluationConfig) -> list[dict]:
    """Store image rows of the held-out splits; with ``cfg.max_heldout_images`` a seeded sample that
    takes the images with a lesion first (store order kept)."""
    rows = [r for s in cfg.heldout_splits for r in store.list_images(split=s)]
    if cfg.max_heldout_images is not None and len(rows) > cfg.max_heldout_images:
        lesion_imgs = {f["image_id"] for f in store.list_findings() if f.get("pathology") not in (None, "normal")}
        perm = np.random.default_rng([cfg.seed, 0x4E1D]).permutation(len(rows)).tolist()
        ranked = sorted(perm, key=lambda i: rows[i]["image_id"] not in lesion_imgs)  # stable: lesions first
        rows = [rows[i] for i in sorted(ranked[:cfg.max_heldout_images])]
    return rows


def _top_tile(hfeats: torch.Tensor, clf, t: ImageTruth, size: int, target: int):
    """The model's most suspicious patch: its pool-linear head over every window of size/stride cells
    of the head layer's features hfeats (C, h, w), windows centred in the breast. Returns ((x0, y0),
    log-odds) or (None, None) when no window is centred in the breast."""
    stride = t.img.shape[0] // hfeats.shape[1]
    cells = max(1, size // stride)
    with torch.no_grad():
        pooled = F.avg_pool2d(hfeats[None].float(), cells, stride=1)[0]  # (C, gh, gw)
        logits = torch.einsum("kc,cij->ijk", clf.weight.detach().float().cpu(), pooled) + clf.bias.detach().float().cpu()
        lo = _logodds(logits, target).numpy()  # (gh, gw)
    gy, gx = np.indices(lo.shape)
    cy = np.clip(gy * stride + size // 2, 0, t.img.shape[0] - 1)
    cx = np.clip(gx * stride + size // 2, 0, t.img.shape[1] - 1)
    lo = np.where(t.breast[cy, cx], lo, -np.inf)
    if not np.isfinite(lo).any():
        return None, None
    j = np.unravel_index(int(np.argmax(lo)), lo.shape)
    return (int(j[1] * stride), int(j[0] * stride)), float(lo[j])


def _report_patches(t: ImageTruth, top: tuple[int, int], size: int, concepts: Sequence[str]) -> dict:
    """The patches of the report checks on an abnormal image: the top tile (with each concept's truth
    in it) and the patch centred on the largest finding."""
    lesion = t.lesion_mask().astype(np.float32)
    x0, y0 = top
    truth_tile = np.stack([crop_patch(t.concept_mask(c).astype(np.float32), x0, y0, size) > 0.5
                           for c in concepts])  # (K, S, S)
    big = max((reg for reg in t.regions if reg.is_lesion), key=lambda reg: int(reg.mask.sum()))
    fx, fy = int(round(big.centre[0] - size / 2)), int(round(big.centre[1] - size / 2))
    return {"top_tile": {"x0": x0, "y0": y0, "patch": crop_patch(t.img, x0, y0, size),
                         "lesion": crop_patch(lesion, x0, y0, size) > 0.5, "truth": truth_tile},
            "finding": {"x0": fx, "y0": fy, "patch": crop_patch(t.img, fx, fy, size),
                        "lesion": crop_patch(lesion, fx, fy, size) > 0.5}}


def _prepare_heldout(ctx: RunContext, thresholds: np.ndarray, cfg: EvaluationConfig, *,
                     progress: Progress | None = None) -> list[_Heldout]:
    """Held-out images: FCN features at the concept layer, truth on the evaluation grid, the units'
    on-maps (``_unit_maps``), the top tile by the classifier's own FCN log-odds (its pool-linear head
    on every window of patch-size cells of the head layer, as ``inference.compute_lesion_map``
    does) and, for abnormal images, the patches of the report checks."""
    card = ctx.card
    rows = _heldout_rows(ctx.store, cfg)
    size = int(card.input_size[-1])
    st, off = cfg.eval_stride, cfg.eval_stride // 2
    head = getattr(card, "head_layer", None) or card.default_layer
    clf = ctx.model.get_classifier()
    target = _target_index(card)
    out = []
    for i, r in enumerate(rows):
        t = load_image_truth(ctx.store, card, r, cfg.concepts)
        x = torch.as_tensor(np.asarray(card.preprocess(t.img[None])), dtype=torch.float32)  # (1, 3, H, W)
        with lock_for(ctx.model):
            acts = compute_activations(ctx.model, list(dict.fromkeys([ctx.layer, head])), x, device=ctx.device,
                                       out_device="cpu")
        feats, hfeats = acts[ctx.layer][0], acts[head][0]  # (C, h', w') each
        truth = np.stack([t.concept_mask(c)[off::st, off::st] for c in cfg.concepts])  # (K, h_g, w_g)
        h = _Heldout(t.image_id, t.case_id, t.split, feats.half(), truth, t.breast[off::st, off::st], t.img.shape,
                     t.lesion_concepts())
        _unit_maps(h, t, h.feats, thresholds, cfg.concepts, cfg.unit_stride)
        h.tile, h.tile_score = _top_tile(hfeats, clf, t, size, target)
        if h.lesion_concepts and h.tile is not None:
            h.patches = _report_patches(t, h.tile, size, cfg.concepts)
        out.append(h)
        report(progress, i + 1, len(rows), f"held-out image {i + 1}/{len(rows)}")
    return out


def _evaluate_maps(heldout: list[_Heldout], probe, concepts: Sequence[str], units: dict[str, np.ndarray],
                   cfg: EvaluationConfig) -> dict[str, dict]:
    """Per concept, pooled over held-out images with bootstrap intervals over images: concept-map
    pixel AUROC and IoU (p >= 0.5); the IoU of the union of the concept's labeled units' on-maps;
    and the labeled units' own dataset-level IoUs (Network Dissection's per-unit IoU: mean, best)."""
    k = len(concepts)
    st, off = cfg.eval_stride, cfg.eval_stride // 2
    in_probe = [c in probe.concepts for c in concepts]
    hists, inter, union, u_inter, u_union = [], [], [], [], []
    for h in heldout:
        # the probe's probabilities at the feature positions (the engine's call at feature size), then
        # read on the evaluation grid exactly as compute_concept_maps' bilinear upsampling would give them
        coarse = compute_concept_maps(probe, h.feats.float(), tuple(h.feats.shape[1:]))  # (K_p, h', w')
        maps = sample_grid(coarse, h.shape, st, off)  # (K_p, h_g, w_g)
        probs = np.zeros((k,) + h.breast.shape, np.float32)
        for ci, c in enumerate(concepts):
            if in_probe[ci]:
                probs[ci] = maps[probe.concepts.index(c)]
        hists.append(score_histograms(probs, h.truth, h.breast))
        pred = (probs >= 0.5) & h.breast[None]
        tr = h.truth & h.breast[None]
        inter.append((pred & tr).reshape(k, -1).sum(1))
        union.append((pred | tr).reshape(k, -1).sum(1))
        ui, uu = np.zeros(k), np.zeros(k)
        n_px = h.unit_truth.shape[1]
        for ci, c in enumerate(concepts):  # concepts, not units: a bitwise OR over the concept's units
            us = units.get(c)
            truth_c = h.unit_truth[ci]
            if us is None or len(us) == 0:
                uu[ci] = truth_c.sum()
                continue
            on = np.unpackbits(np.bitwise_or.reduce(h.unit_on[us], axis=0), count=n_px).astype(bool)
            ui[ci], uu[ci] = (on & truth_c).sum(), (on | truth_c).sum()
        u_inter.append(ui)
        u_union.append(uu)
    hist = np.stack(hists)
    res = bootstrap_auroc_iou(hist, np.stack(inter), np.stack(union), n_boot=cfg.n_boot, seed=cfg.seed)
    ures = bootstrap_auroc_iou(hist, np.stack(u_inter), np.stack(u_union), n_boot=cfg.n_boot, seed=cfg.seed)
    # per-unit dataset IoU: sums over images of each unit's intersection and union with the truth
    tot_inter = sum(h.unit_inter for h in heldout)  # (C, K)
    tot_on = sum(h.unit_on_count for h in heldout)  # (C,)
    tot_truth = sum(h.unit_truth.sum(1) for h in heldout)  # (K,)
    pos_imgs = np.stack([h.truth.reshape(k, -1).any(1) for h in heldout]).sum(0)
    out = {}
    for ci, c in enumerate(concepts):
        f = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 4)  # noqa: E731
        us = units.get(c, np.zeros(0, np.int64))
        n_u = int(len(us))
        per_unit = None
        if n_u and tot_truth[ci] > 0:
            per_unit = tot_inter[us, ci] / np.maximum(tot_on[us] + tot_truth[ci] - tot_inter[us, ci], 1)
        out[c] = {"in_probe": in_probe[ci], "auroc": f(res["auroc"][ci]), "auroc_lo": f(res["auroc_lo"][ci]),
                  "auroc_hi": f(res["auroc_hi"][ci]), "iou": f(res["iou"][ci]), "iou_lo": f(res["iou_lo"][ci]),
                  "iou_hi": f(res["iou_hi"][ci]), "n_units": n_u,
                  "unit_iou": f(ures["iou"][ci]) if n_u else None,
                  "unit_iou_lo": f(ures["iou_lo"][ci]) if n_u else None,
                  "unit_iou_hi": f(ures["iou_hi"][ci]) if n_u else None,
                  "unit_iou_mean": f(per_unit.mean()) if per_unit is not None else None,
                  "unit_iou_best": f(per_unit.max()) if per_unit is not None else None,
                  "n_pos_images": int(pos_imgs[ci]), "n_pos_px": int(hist[:, ci, 1].sum()),
                  "n_neg_px": int(hist[:, ci, 0].sum())}
    return out


@dataclass
class _ReportChecks:
    """What the report checks of one run share: the run's context and settings, the final probe,
    the head layer's unit labels, the class scored, the lesion concepts, the log-odds scorer of the
    deletion test and the randomised models."""

    ctx: RunContext
    cfg: EvaluationConfig
    probe: Any
    unit_labels: list[dict]
    target: int
    lesion_names: set
    score: Callable[[np.ndarray], np.ndarray]
    randomized: dict

    def build(self, model, patch: np.ndarray, **where):
        return build_report(model, self.ctx.card, patch, self.probe,
                            ReportConfig(attribution_method=self.cfg.attribution_method, target=self.target,
                                         device=self.ctx.device),
                            ReportInputs(unit_labels=self.unit_labels, **where))


def _reports(ctx: RunContext, heldout: list[_Heldout], probe, cfg: EvaluationConfig, *,
             progress: Progress | None = None) -> tuple[list[dict], list[dict]]:
    """Report checks on the abnormal held-out images: top concept, attribution on the finding,
    deletion, and (on the first ``random_images``) the randomisation sanity check. Returns one row
    per image and one randomisation row per (image, scope)."""
    card, store = ctx.card, ctx.store
    target = _target_index(card)
    checks = _ReportChecks(
        ctx, cfg, probe, store.list_unit_labels(card.name, ctx.layer),
        target, lesion_concept_names(store),
        _score_fn(ctx.model, card, target, ctx.device),
        {s: randomize_model(ctx.model, s, cfg.seed) for s in cfg.random_scopes} if cfg.random_images else {})
    cases = [h for h in heldout if "top_tile" in h.patches]
    if cfg.report_images is not None:
        cases = cases[:cfg.report_images]
    rows, rand_rows = [], []
    for i, h in enumerate(cases):
        row = {"image_id": h.image_id, "case_id": h.case_id, "finding_concepts": sorted(h.lesion_concepts),
               "tile": list(h.tile), "tile_logodds": h.tile_score}
        rep = _patch_checks(checks, h, "top_tile", row)
        _deletion_checks(checks, h.patches["top_tile"], rep, row)
        if i < cfg.random_images:
            rand_rows.extend(_randomisation_rows(checks, h, rep))
        _patch_checks(checks, h, "finding", row)
        rows.append(row)
        report(progress, i + 1, len(cases), f"report checks {i + 1}/{len(cases)}")
    return rows, rand_rows


def _shares(rep) -> dict[str, float]:
    return {c.concept: c.attribution_share for c in rep.concepts if c.attribution_share is not None}


def _patch_checks(checks: _ReportChecks, h: _Heldout, name: str, row: dict):
    """The report of patch ``name`` of ``h`` and its checks into ``row`` (keys ``name.*``): top
    concept by attribution share and by logit part, attribution on the finding. Returns the report."""
    pt = h.patches[name]
    patch, lesion = pt["patch"], pt["lesion"]
    rep = checks.build(checks.ctx.model, patch, image_id=h.image_id, patch_xy=(pt["x0"], pt["y0"]))
    shares = _shares(rep)
    m = top_concept_match(shares, h.lesion_concepts, checks.lesion_names)
    row[f"{name}.top"] = m["top"]
    row[f"{name}.top_share"] = m["share"]
    row[f"{name}.match"] = m["match"]
    row[f"{name}.lesion"] = m["lesion"]
    row[f"{name}.lesion_in_patch"] = bool(lesion.any())
    row[f"{name}.attr_on_finding"] = attribution_in_region(rep.attribution_map, lesion)
    row[f"{name}.finding_area"] = float(lesion.mean())
    row[f"{name}.share_finding_concepts"] = float(sum(s for c, s in shares.items() if c in h.lesion_concepts))
    row[f"{name}.probability"] = rep.probability
    # the other reading of "top concept": the largest exact logit part of the labeled units
    parts = {c.concept: c.logit_part for c in rep.concepts if c.logit_part is not None}
    ml = top_concept_match(parts, h.lesion_concepts, checks.lesion_names)
    row[f"{name}.top_logit"], row[f"{name}.match_logit"] = ml["top"], ml["match"]
    row[f"{name}.n_logit_parts"] = len(parts)  # 0: no labeled units at the head layer, no reading
    return rep


def _deletion_checks(checks: _ReportChecks, pt: dict, rep, row: dict) -> None:
    """Deletion on the top tile ``pt``, two ways of saying where a concept is: its true region in the
    patch, and the report's own region (each pixel to its most probable class, background included,
    as the shares split it). Texture inpainting; the plain blur for comparison on the true regions.
    Writes ``row`` keys ``deletion_truth.*``, ``deletion_report.*``, ``deletion_truth_blur.*``."""
    cfg = checks.cfg
    patch, lesion = pt["patch"], pt["lesion"]
    entries = {c.concept: c for c in rep.concepts if c.probe_map is not None}
    truth_regions = {c: pt["truth"][k] for k, c in enumerate(cfg.concepts)
                     if c in entries and pt["truth"][k].sum() >= cfg.min_region_px}
    report_regions = {}
    if entries:
        names = list(entries)
        pk = np.stack([entries[c].probe_map.astype(np.float32) for c in names])  # (K, S, S)
        winner = np.concatenate([1 - pk.sum(0, keepdims=True), pk]).argmax(0)  # 0 = background
        report_regions = {c: winner == k + 1 for k, c in enumerate(names)
                          if (winner == k + 1).sum() >= cfg.min_region_px}
    for prefix, regions, method in (("deletion_truth", truth_regions, "texture"),
                                    ("deletion_report", report_regions, "texture"),
                                    ("deletion_truth_blur", truth_regions, "blur")):
        names = list(regions)
        regs = np.stack([regions[c] for c in names] + ([lesion] if lesion.any() else [])) \
            if (names or lesion.any()) else np.zeros((0,) + patch.shape, bool)
        base, drops = deletion_drops(checks.score, patch, regs, inpaint=partial(inpaint_regions, method=method))
        sh = [float(entries[c].attribution_share) for c in names]
        lp = [entries[c].logit_part for c in names]
        row[f"{prefix}.concepts"] = names
        row[f"{prefix}.shares"] = sh
        row[f"{prefix}.drops"] = [float(v) for v in drops[:len(names)]]
        row[f"{prefix}.logit_parts"] = lp
        row[f"{prefix}.base_logodds"] = base
        row[f"{prefix}.finding_drop"] = float(drops[-1]) if lesion.any() else None
        row[f"{prefix}.spearman"] = spearman(sh, row[f"{prefix}.drops"])
        pairs = [(p, d) for p, d in zip(lp, row[f"{prefix}.drops"]) if p is not None]
        row[f"{prefix}.spearman_logit_parts"] = spearman([p for p, _ in pairs], [d for _, d in pairs])
    # the second method: deletion and insertion curves, most relevant (largest share) first vs random order
    for prefix, regions in (("curves_truth", truth_regions), ("curves_report", report_regions)):
        names = list(regions)
        row[f"{prefix}.n_regions"] = len(names)
        if len(names) < 2:  # one region has one order: nothing to compare
            continue
        cur = region_curves(checks.score, patch, np.stack([regions[c] for c in names]),
                            [float(entries[c].attribution_share) for c in names], n_random=cfg.curve_orders,
                            seed=cfg.seed)
        for key in ("deletion_auc", "deletion_random_auc", "insertion_auc", "insertion_random_auc", "deletion_gap",
                    "insertion_gap", "span", "n_orders"):
            row[f"{prefix}.{key}"] = cur[key]
        for key in ("deletion", "insertion", "deletion_random", "insertion_random"):
            row[f"{prefix}.{key}"] = [float(v) for v in cur[key]]


def _randomisation_rows(checks: _ReportChecks, h: _Heldout, rep) -> list[dict]:
    """The randomisation sanity check on the top tile of ``h``: the report of each randomised model
    against ``rep``, the original's (share Spearman, attribution Pearson and SSIM, same top concept)."""
    shares = _shares(rep)
    names = sorted(shares)
    out = []
    for scope, rm in checks.randomized.items():
        rr = checks.build(rm, h.patches["top_tile"]["patch"])
        r_shares = _shares(rr)
        sim = map_similarity(rep.attribution_map, rr.attribution_map)
        flat = float(np.ptp(rr.attribution_map)) == 0.0
        if flat:  # the randomised model has no attribution left: nothing in common with the original
            sim = {"pearson": 0.0, "ssim": 0.0}
        out.append({"image_id": h.image_id, "scope": scope, "attr_constant": flat,
                    "share_spearman": spearman([shares[c] for c in names], [r_shares[c] for c in names]),
                    "attr_pearson": sim["pearson"], "attr_ssim": sim["ssim"],
                    "top_same": _top_of(shares) is not None and _top_of(r_shares) == _top_of(shares),
                    "probability": rep.probability, "probability_random": rr.probability})
    return out


def _top_of(shares: dict) -> str | None:
    return top_concept_match(shares, [], [])["top"]


@dataclass
class EvaluationResult:
    """Everything ``run_label_efficiency`` measured (JSON-able via ``to_dict``)."""

    config: dict
    rounds: list[dict]            # budget, drawings so far, probe version, per-concept metrics
    drawings: list[dict]          # one row per simulated drawing
    reports: list[dict]           # one row per abnormal held-out image
    randomisation: list[dict]     # one row per (image, scope)
    learning_curve: list[dict]    # compute_learning_curve on the simulated drawings
    available: dict[str, int]     # drawable instances per concept on the train split
    heldout: dict                 # counts of held-out images
    timings: dict[str, float]
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> EvaluationResult:
        """The inverse of ``to_dict`` (extra keys, e.g. a bench's ``environment``, are ignored)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def jsonable(v):
    """``v`` with numpy scalars as Python ones, tuples and sets as lists, NaN and inf as None (for JSON)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


# the run's share of the progress bar: statistics, held-out features, the rounds, the reports, the curve
_STAGES = {"statistics": (0.0, 0.15), "held-out": (0.15, 0.3), "rounds": (0.3, 0.85), "reports": (0.85, 0.97),
           "learning curve": (0.97, 1.0)}


def _stage(progress: Progress | None, name: str, span: tuple[float, float] | None = None) -> Progress | None:
    """A stage of the run: its progress mapped into ``span`` of the whole (default: the stage's share
    in ``_STAGES``; ``progress.scaled``), its messages led by the stage's name."""
    sub = scaled(progress, *(span or _STAGES[name]))
    if sub is None:
        return None

    def staged(done: int, total: int, message: str = "") -> None:
        sub(done, total, f"{name}: {message}" if message else name)

    return staged


def run_label_efficiency(store, model, card, cfg: EvaluationConfig = EvaluationConfig(), *, cache_dir=None,
                         device=None, drawing_speed: dict | None = None,
                         progress: Progress | None = None) -> EvaluationResult:
    """The whole evaluation on a demo store: statistics, the simulated reader in batches (probe
    retrained after each), held-out metrics per batch, report checks on the last probe, and the
    in-app learning curve on the same drawings. ``progress(done, total, message)`` over the whole
    run, each message led by its stage ("statistics", "held-out", "rounds", "reports", ...).

    The store must hold no live drawings under ``card`` yet (a fresh copy of a demo store).
    """
    if cfg.order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {cfg.order!r}")
    if store.list_annotations(model_card=card.name):
        raise ValidationError("The store already holds drawings for this model card: run on a fresh copy.")
    ctx = RunContext(store, model, card, cfg.layer or card.default_layer,
                     cache_dir if cache_dir is not None else tempfile.mkdtemp(prefix="conceptlens-eval-"), device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stats = compute_train_stats(ctx, cfg, progress=_stage(progress, "statistics"))
    timings["statistics_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    heldout = _prepare_heldout(ctx, stats.thresholds, cfg, progress=_stage(progress, "held-out"))
    timings["heldout_features_s"] = time.perf_counter() - t0
    # the plan's first max(budgets) per concept are the random order's drawings; the suggested order
    # picks from a larger pool of the same plan
    depth = max(cfg.budgets) if cfg.order == "random" else max(max(cfg.budgets), cfg.pool)
    plan = plan_drawings(store, cfg.concepts, depth, seed=cfg.seed)
    reader = SimulatedReader(ctx, stats, concepts=cfg.concepts, config=cfg.reader, seed=cfg.seed)
    rounds, probe = _run_rounds(ctx, reader, plan, heldout, cfg, timings, progress)
    t0 = time.perf_counter()
    reports, rand_rows = _reports(ctx, heldout, probe, cfg, progress=_stage(progress, "reports"))
    timings["reports_s"] = time.perf_counter() - t0
    curve = []
    if cfg.learning_curve:
        t0 = time.perf_counter()
        df = compute_learning_curve(
            store, card, model, load_patch=reader.load_patch, cache_dir=ctx.cache_dir, device=device,
            config=LearningCurveConfig(layer=ctx.layer, steps=cfg.budgets, exclude_readers=(), seed=cfg.seed),
            progress=_stage(progress, "learning curve"))
        curve = df.to_dict("records")
        timings["learning_curve_s"] = time.perf_counter() - t0
    res = EvaluationResult(
        config=jsonable(asdict(cfg)), rounds=rounds, drawings=reader.log, reports=reports, randomisation=rand_rows,
        learning_curve=curve, available={c: len(v) for c, v in plan.items()},
        heldout={"images": len(heldout), "abnormal_images": sum(1 for h in heldout if h.lesion_concepts),
                 "report_images": len(reports)},
        timings={k: round(v, 1) for k, v in timings.items()})
    res.summary = summarise(res, drawing_speed=drawing_speed)
    return res


def _run_rounds(ctx: RunContext, reader: SimulatedReader, plan: dict, heldout: list[_Heldout], cfg: EvaluationConfig,
                timings: dict[str, float], progress: Progress | None) -> tuple[list[dict], Any]:
    """The reader's batches: up to each budget, draw round robin over the concepts (the store's time
    order interleaves them), retrain the probe, score the maps on the held-out images. Adds the
    drawing, training and maps seconds to ``timings``. Returns one row per round and the last probe."""
    budgets = sorted(set(cfg.budgets))
    start, stop = _STAGES["rounds"]
    step = (stop - start) / len(budgets)
    rounds, prev, probe = [], 0, None
    timings["drawing_s"] = timings["training_s"] = timings["maps_s"] = 0.0
    left = {c: list(plan[c]) for c in cfg.concepts}  # each concept's findings not drawn yet, in plan order
    for ri, budget in enumerate(budgets):
        at = start + ri * step
        if cfg.order == "suggested" and probe is not None:
            picks = _suggested_batch(ctx, reader, probe, left, budget - prev, cfg)
        else:
            picks = {c: left[c][:budget - prev] for c in cfg.concepts}
        batch = [picks[c][j] for j in range(budget - prev) for c in cfg.concepts if j < len(picks[c])]
        for c in cfg.concepts:
            left[c] = [t for t in left[c] if t not in picks[c]]
        prev = budget
        t0 = time.perf_counter()
        if batch:
            reader.draw(batch, ri, progress=_stage(progress, f"drawings to {budget}/concept", (at, at + 0.6 * step)))
        timings["drawing_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        probe = reader.retrain(progress=_stage(progress, f"probe at {budget}/concept", (at + 0.6 * step, at + step)))
        timings["training_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        units = units_by_concept(ctx.store, ctx.card.name, ctx.layer)
        metrics = _evaluate_maps(heldout, probe, cfg.concepts, units, cfg)
        timings["maps_s"] += time.perf_counter() - t0
        counts = {c: sum(1 for r in reader.log if r["concept"] == c) for c in cfg.concepts}
        rounds.append({"budget": budget, "probe_version": probe.version, "n_drawings": counts,
                       "n_drawings_total": len(reader.log), "metrics": metrics,
                       "probe_validation": {c: (probe.metrics.get(c) or {}).get("auroc") for c in probe.concepts}})
        report(_stage(progress, "rounds"), ri + 1, len(budgets), f"{budget} drawings/concept evaluated")
    return rounds, probe


def _suggested_batch(ctx: RunContext, reader: SimulatedReader, probe, left: dict[str, list], n: int,
                     cfg: EvaluationConfig) -> dict[str, list]:
    """The next ``n`` findings of each concept in the app's suggested order: every remaining finding's
    patch (as the reader would open it) scored by ``suggestions.score_patches`` under ``probe`` (the
    concept's own uncertainty + fold disagreement, plus unlabelled units firing; every image counts
    as flagged), best first. A concept the probe does not know yet keeps the plan's order."""
    tasks = [t for c in cfg.concepts for t in left[c]]
    keys = reader.patch_keys(tasks)
    live = [(t, k) for t, k in zip(tasks, keys) if k is not None]
    if not live:
        return {c: [] for c in cfg.concepts}
    uniq = list(dict.fromkeys(k for _, k in live))
    acts = compute_patch_activations(ctx.model, ctx.card, ctx.layer, [reader.patches[k] for k in uniq],
                                     cache_dir=ctx.cache_dir, device=ctx.device)
    labelled = [int(r["unit"]) for r in ctx.store.list_unit_labels(ctx.card.name, ctx.layer)]
    wu, wd, wn = cfg.suggest_weights
    sc = score_patches(probe, torch.stack([torch.as_tensor(a).float() for a in acts]),
                       thresholds=reader.stats.thresholds, labelled_units=labelled, flagged=True,
                       config=SuggestConfig(uncertainty=wu, disagreement=wd, novelty=wn))
    row = {k: i for i, k in enumerate(uniq)}
    out = {}
    for c in cfg.concepts:
        mine = [(t, k) for t, k in live if t.concept == c]
        if c in probe.concepts:
            ci = probe.concepts.index(c)
            value = [float(sc.per_concept[row[k], ci] + wn * sc.novelty[row[k]]) for _, k in mine]
            order = np.argsort(-np.asarray(value), kind="stable")
            mine = [mine[i] for i in order]
        out[c] = [t for t, _ in mine[:n]]
    return out


def _first_reaching(rounds: list[dict], concept: str, key: str, target: float, *, stay: bool = False):
    """Drawings of ``concept`` at the first batch whose metric is >= target (``stay``: and every later one)."""
    vals = [r["metrics"][concept][key] for r in rounds]
    for i, r in enumerate(rounds):
        ok = [v is not None and v >= target for v in (vals[i:] if stay else vals[i:i + 1])]
        if all(ok):
            return r["n_drawings"][concept]
    return None


def summarise(res: EvaluationResult, *, auroc_target: float = 0.90, max_drawings: int = 5,
              top1_target: float = 0.90, spearman_target: float = 0.7, flag_threshold: float = 0.5,
              drawing_speed: dict | None = None) -> dict:
    """Headline figures and the targets: drawings per concept to reach concept-map AUROC >= 0.90
    (target <= 5), top-concept match on abnormal images (target >= 90 %; also on the images the model
    flags, top-tile probability >= ``flag_threshold``), mean per-patch deletion
    Spearman (target >= 0.7), randomisation similarity, and the reader time those drawings cost."""
    final = res.rounds[-1] if res.rounds else None
    evaluable = [c for c in (final["metrics"] if final else {}) if final["metrics"][c]["auroc"] is not None]
    need = {c: _first_reaching(res.rounds, c, "auroc", auroc_target) for c in evaluable}
    need_stable = {c: _first_reaching(res.rounds, c, "auroc", auroc_target, stay=True) for c in evaluable}
    met = [c for c, n in need.items() if n is not None and n <= max_drawings]
    deletion = _deletion_summary(res.reports)
    curves = _curves_summary(res.reports)
    out = {
        "auroc_target": auroc_target, "max_drawings_target": max_drawings,
        "drawings_to_auroc_target": need, "drawings_to_auroc_target_stable": need_stable,
        "concepts_meeting_target": met, "n_concepts_evaluable": len(evaluable),
        "final_budget": final["budget"] if final else None,
        "final_auroc": {c: final["metrics"][c]["auroc"] for c in evaluable} if final else {},
        "final_auroc_mean": _nanmean([final["metrics"][c]["auroc"] for c in evaluable]) if final else None,
        **_top_concept_summary(res.reports, flag_threshold), "top1_target": top1_target,
        "deletion": deletion, "spearman_target": spearman_target, "curves": curves,
        "randomisation": _randomisation_summary(res.randomisation),
        **_drawings_summary(res.drawings),
    }
    out["targets"] = {
        "auroc_within_5_drawings": f"{len(met)}/{len(evaluable)} concepts",
        "auroc_within_5_drawings_stable": f"{sum(1 for n in need_stable.values() if n is not None and n <= max_drawings)}"
                                          f"/{len(evaluable)} concepts",
        "top1_match_ge_90": None if out["top1_match_rate"] is None else bool(out["top1_match_rate"] >= top1_target),
        "deletion_spearman_ge_0.7": {
            v: None if deletion[v]["spearman_mean"] is None else bool(deletion[v]["spearman_mean"] >= spearman_target)
            for v in ("deletion_truth", "deletion_report")},
    }
    if drawing_speed:
        dpm = float(drawing_speed["drawings_per_minute"])
        out["drawing_speed"] = dict(drawing_speed)
        total_needed = sum(n for n in need.values() if n is not None)
        out["reader_minutes_to_target"] = round(total_needed / dpm, 2) if need else None
        out["reader_minutes_total"] = round(len(res.drawings) / dpm, 2)
    else:
        out["drawing_speed"] = "missing: bench/results/browser.json (branch app) not found or has no drawing time"
    return out


def _finite(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]


def _top_concept_summary(rep: list[dict], flag_threshold: float) -> dict:
    """Top-concept match rates of the report rows: on the top tile (all images, the flagged ones,
    by logit part), on the finding patch; and the attribution on the finding."""
    def rate(key):
        v = [bool(r[key]) for r in rep if r.get(key) is not None]
        return (float(np.mean(v)) if v else None), len(v)

    top1, n_top = rate("top_tile.match")
    flagged = [r for r in rep if (r.get("top_tile.probability") or 0) >= flag_threshold]
    with_parts = [r for r in rep if r.get("top_tile.n_logit_parts", 1 if r.get("top_tile.top_logit") else 0)]
    return {
        "top1_match_rate": top1, "top1_lesion_rate": rate("top_tile.lesion")[0], "top1_n_images": n_top,
        "top1_match_rate_finding_patch": rate("finding.match")[0],
        "top1_logit_part_match_rate":
            float(np.mean([bool(r["top_tile.match_logit"]) for r in with_parts])) if with_parts else None,
        "top1_logit_part_n_images": len(with_parts),
        "top1_match_rate_flagged": float(np.mean([bool(r["top_tile.match"]) for r in flagged])) if flagged else None,
        "top1_n_flagged": len(flagged), "flag_threshold": flag_threshold,
        "finding_area_mean": _nanmean(_finite(rep, "top_tile.finding_area")),
        "attr_on_finding_mean": _nanmean(_finite(rep, "top_tile.attr_on_finding")),
        "attr_on_finding_mean_finding_patch": _nanmean(_finite(rep, "finding.attr_on_finding")),
        "share_finding_concepts_mean": _nanmean(_finite(rep, "top_tile.share_finding_concepts")),
    }


def _deletion_summary(rep: list[dict]) -> dict:
    """Per deletion variant: mean per-patch Spearman of share vs drop with its bootstrap interval,
    the pooled Spearman, the logit-part Spearman and the mean drop when the finding is removed."""
    deletion = {}
    for variant in DELETION_VARIANTS:
        sp = _finite(rep, f"{variant}.spearman")
        ci = bootstrap_mean(sp, seed=0)
        lp = _finite(rep, f"{variant}.spearman_logit_parts")
        deletion[variant] = {"spearman_mean": ci[0], "spearman_ci": list(ci[1:]), "n_patches": len(sp),
                             "spearman_pooled": _pooled_deletion(rep, variant),
                             "spearman_logit_parts_mean": _nanmean(lp), "n_patches_logit_parts": len(lp),
                             "finding_drop_mean": _nanmean(_finite(rep, f"{variant}.finding_drop"))}
    return deletion


def _curves_summary(rep: list[dict]) -> dict:
    """Per curve variant: over the patches with at least two regions, the mean deletion and insertion
    gaps (random-order AUC minus relevance-order AUC for deletion, the reverse for insertion; log-odds
    x fraction of regions; > 0: the shares order the regions better than chance) with bootstrap
    intervals, the share of patches where each gap is positive, and the gaps over |span| (the score
    lost when every region is removed), which puts patches on one scale."""
    out = {}
    for variant in CURVE_VARIANTS:
        rows = [r for r in rep if r.get(f"{variant}.deletion_gap") is not None]
        d = [float(r[f"{variant}.deletion_gap"]) for r in rows]
        i = [float(r[f"{variant}.insertion_gap"]) for r in rows]
        spans = [abs(float(r[f"{variant}.span"])) for r in rows]
        norm = [(a / s, b / s) for a, b, s in zip(d, i, spans) if s > 1e-6]
        dci, ici = bootstrap_mean(d, seed=0), bootstrap_mean(i, seed=0)
        out[variant] = {
            "n_patches": len(rows), "regions_mean": _nanmean([r[f"{variant}.n_regions"] for r in rows]),
            "deletion_gap_mean": dci[0], "deletion_gap_ci": list(dci[1:]),
            "insertion_gap_mean": ici[0], "insertion_gap_ci": list(ici[1:]),
            "deletion_better_than_random": float(np.mean([v > 0 for v in d])) if d else None,
            "insertion_better_than_random": float(np.mean([v > 0 for v in i])) if i else None,
            "deletion_gap_over_span_mean": _nanmean([a for a, _ in norm]),
            "insertion_gap_over_span_mean": _nanmean([b for _, b in norm]),
            "deletion_auc_mean": _nanmean([r[f"{variant}.deletion_auc"] for r in rows]),
            "deletion_random_auc_mean": _nanmean([r[f"{variant}.deletion_random_auc"] for r in rows]),
            "insertion_auc_mean": _nanmean([r[f"{variant}.insertion_auc"] for r in rows]),
            "insertion_random_auc_mean": _nanmean([r[f"{variant}.insertion_random_auc"] for r in rows]),
        }
    return out


def _randomisation_summary(randomisation: list[dict]) -> dict:
    """Per scope: median similarity of the randomised model's report to the original's."""
    rnd = {}
    for scope in sorted({r["scope"] for r in randomisation}):
        rows = [r for r in randomisation if r["scope"] == scope]
        rnd[scope] = {"n": len(rows)}
        for k in ("share_spearman", "attr_pearson", "attr_ssim"):
            vals = [r[k] for r in rows]
            undefined = sum(1 for v in vals if v is None or not np.isfinite(v))
            # undefined = a constant side (e.g. Grad-CAM all zero after randomisation): no agreement, 0
            rnd[scope][k] = _nanmedian([0.0 if v is None or not np.isfinite(v) else v for v in vals])
            rnd[scope][k + "_undefined"] = undefined
        rnd[scope]["top_same_rate"] = _nanmean([float(r["top_same"]) for r in rows])
        rnd[scope]["attr_all_zero"] = sum(1 for r in rows if r.get("attr_constant"))
    return rnd


def _drawings_summary(drawings: list[dict]) -> dict:
    """The reader's log: wrong labels, units above tau and units won per drawing (per concept too)."""
    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    by_concept = {}
    for c in dict.fromkeys(r["concept"] for r in drawings):
        rows = [r for r in drawings if r["concept"] == c]
        by_concept[c] = {"above_tau": mean(rows, "units_above"), "won": mean(rows, "units_won"),
                         "recall": mean(rows, "recall"), "outside": mean(rows, "outside")}
    return {"wrong_label_rate_observed": mean(drawings, "wrong_label") if drawings else None,
            "units_won_per_drawing": mean(drawings, "units_won") if drawings else None,
            "units_above_per_drawing": mean(drawings, "units_above") if drawings else None,
            "units_per_drawing_by_concept": by_concept}


def _nanmean(v):
    a = np.asarray([x for x in v if x is not None], np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _nanmedian(v):
    a = np.asarray([x for x in v if x is not None], np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else None


def _pooled_deletion(reports: list[dict], variant: str) -> float | None:
    """Spearman of share vs drop pooled over all (patch, concept) pairs, each side first replaced by
    its rank within its patch (scaled to (0, 1)), so patches with larger scores do not dominate."""
    xs, ys = [], []
    for r in reports:
        s, d = r.get(f"{variant}.shares") or [], r.get(f"{variant}.drops") or []
        if len(s) >= 2:
            xs.extend((rankdata(s) - 0.5) / len(s))
            ys.extend((rankdata(d) - 0.5) / len(d))
    v = spearman(xs, ys)
    return None if not np.isfinite(v) else v

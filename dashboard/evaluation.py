"""Are the explanations true, and is labeling cheap? A simulated reader and the checks behind it.

Three parts:

* **The simulated reader** (``simulate_drawing``, ``plan_drawings``, ``SimulatedReader``). On the
  demo set's TRAIN split a scripted reader draws concept regions the way a person would: a patch
  of the card's size (model space, card spacing) centred on the finding (up to ``patch_jitter_px``),
  the ground-truth mask cropped to it, partly covered (``partial_rate`` of the drawings cover
  ``coverage`` of the truth: eroded to the interior or clipped to a part) or over-drawn
  (``overdraw_rate`` of the drawings spill ``overdraw`` x the drawn area outside the truth), traced
  as simplified polygons (Douglas-Peucker, ``simplify_px``) whose vertices jitter by
  ``jitter_px``, and now and then saved under a wrong concept (``wrong_label_rate``). Each
  drawing goes through the library calls the canvas path uses: geometry -> ``drawing_to_mask`` ->
  ``match_drawing`` -> ``label_units_from_drawing``, into a real store as reader ``sim-reader``;
  after each batch ``train_probes`` fits a new probe version, as the app's "Retrain probes" does.
* **Metrics**, each a small function with a hand-made-case test: pixel AUROC and IoU of concept
  maps against ground-truth masks, IoU of the union of a concept's labeled units' thresholded
  activations, the report's top concept against the true finding, the attribution share on the
  finding, deletion (inpaint a concept's region, measure the drop of the class log-odds) with its
  Spearman correlation to the report's shares, and a model-randomisation sanity check.
* **The learning curve for the app** (``compute_learning_curve``): probes refitted on the first n
  drawings of each concept (time order) of the readers' real drawings, validated by image.

``run_label_efficiency`` runs everything end to end on a demo store; ``bench/label_efficiency.py``
is its command line. Nothing happens at import time.
"""
from __future__ import annotations

import copy
import json
import math
import time
import zlib
from collections import OrderedDict
from functools import partial
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "READER", "DEFAULT_CONCEPTS", "DEFAULT_BUDGETS", "ReaderConfig", "SimDrawing", "DrawingTask", "ImageTruth",
    "TruthRegion", "simulate_drawing", "choose_label", "plan_drawings", "load_image_truth", "SimulatedReader",
    "pixel_auroc", "auroc_from_counts", "score_histograms", "mask_iou", "bootstrap_auroc_iou", "spearman",
    "top_concept_match", "attribution_in_region", "inpaint_regions", "deletion_drops", "randomize_model",
    "map_similarity", "sample_grid", "load_drawing_speed", "compute_learning_curve", "EvaluationConfig",
    "run_label_efficiency", "summarise",
]

READER = "sim-reader"
#: Concepts the simulated reader draws by default: the finding kinds and the normal structures.
DEFAULT_CONCEPTS = ("mass", "calcification", "architectural-distortion", "vessel", "fibroglandular", "skin",
                    "nipple", "pectoral-muscle")
#: Drawings per concept after each batch (the x axis of the label-efficiency curve).
DEFAULT_BUDGETS = (1, 2, 3, 5, 10, 20)
NORMAL_GROUP = "normal structure"
#: Deletion test variants: where a concept is (its true region / the report's region) and how it is removed.
DELETION_VARIANTS = ("deletion_truth", "deletion_report", "deletion_truth_blur")
Progress = Callable[[int, int, str], None]


# ====================================================================== the simulated reader
@dataclass(frozen=True)
class ReaderConfig:
    """How the scripted reader draws. Lengths in model pixels of the patch.

    jitter_px         standard deviation of the Gaussian jitter of each polygon vertex
    simplify_px       Douglas-Peucker tolerance when the traced contour becomes a polygon
    coverage          fraction of the true region a *partial* drawing covers
    partial_rate      fraction of drawings that are partial (eroded to the interior or clipped to a part)
    overdraw          pixels drawn outside the truth, as a fraction of the drawn part of the truth,
                      on an *over-drawn* drawing (a dilation)
    overdraw_rate     fraction of drawings that are over-drawn
    wrong_label_rate  fraction of drawings saved under another concept (uniform over the others)
    max_parts         connected pieces of the truth outlined per drawing (largest first)
    min_part_px       smaller pieces are skipped (unless nothing else is there)
    patch_jitter_px   the patch centre is the finding centre shifted by up to this (uniform, per axis)
    tau               the labeling IoU threshold (the app's default)
    """

    jitter_px: float = 1.5
    simplify_px: float = 1.0
    coverage: float = 0.75
    partial_rate: float = 0.3
    overdraw: float = 0.3
    overdraw_rate: float = 0.3
    wrong_label_rate: float = 0.05
    max_parts: int = 3
    min_part_px: int = 9
    patch_jitter_px: int = 28
    tau: float = 0.2


@dataclass
class SimDrawing:
    """One simulated drawing on a patch.

    shape, geometry  what the store keeps (``drawing_to_mask(shape, geometry)`` format; several
                     pieces as {"drawings": [{"shape", "geometry"}, ...]}, as the Label page stores them)
    mask             (S, S) bool, the rasterised drawing (union of its pieces)
    truth            (S, S) bool, the true region in the patch
    partial_mode     "" | "erode" | "clip";  overdrawn: whether it was dilated
    recall           |mask & truth| / |truth|;  outside: |mask - truth| / |truth|
    """

    shape: str
    geometry: Any
    mask: np.ndarray
    truth: np.ndarray
    partial_mode: str
    overdrawn: bool
    recall: float
    outside: float


def _keep_top(score: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """bool mask of the ``n`` allowed pixels with the highest score (ties broken by position)."""
    flat = np.flatnonzero(allowed)
    n = int(min(max(n, 0), flat.size))
    out = np.zeros(allowed.shape, bool)
    if n == 0:
        return out
    s = score.reshape(-1)[flat]
    pick = flat[np.argpartition(-s, n - 1)[:n]] if n < flat.size else flat
    out.reshape(-1)[pick] = True
    return out


def _partial(truth: np.ndarray, coverage: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The part of ``truth`` a reader covers: ``round(coverage * |truth|)`` pixels, either its interior
    (the deepest pixels by the distance transform: an erosion) or the pixels nearest a random point
    of it (clipped to a part). Thin regions (max inner distance < 3 px) are always clipped."""
    from scipy import ndimage

    n = int(round(coverage * truth.sum()))
    depth = ndimage.distance_transform_edt(truth)
    mode = "clip" if depth.max() < 3 or rng.random() < 0.5 else "erode"
    if mode == "erode":
        score = depth + rng.uniform(0, 1e-3, depth.shape)
    else:
        ys, xs = np.nonzero(truth)
        k = int(rng.integers(len(ys)))
        yy, xx = np.indices(truth.shape)
        score = -np.hypot(yy - ys[k], xx - xs[k])
    return _keep_top(score, truth, n), mode


def _overdraw(target: np.ndarray, truth: np.ndarray, extra: float, rng: np.random.Generator) -> np.ndarray:
    """Dilate ``target`` until ``round(extra * |target|)`` pixels outside ``truth`` are drawn: the outside
    pixels nearest the target are added, and so are the truth pixels no farther than the last one."""
    from scipy import ndimage

    n = int(round(extra * target.sum()))
    if n <= 0:
        return target.copy()
    dist = ndimage.distance_transform_edt(~target) + rng.uniform(0, 1e-3, target.shape)
    added = _keep_top(-dist, ~truth & ~target, n)
    reach = dist[added].max() if added.any() else 0.0
    return target | added | (truth & (dist <= reach))


def _trace(mask: np.ndarray, cfg: ReaderConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Outline the largest ``max_parts`` pieces of ``mask``: contour -> simplified polygon -> jittered
    vertices. Returns polygons (P, 2) as (x, y) in the engine's patch coordinates (pixel centres at
    integers), holes ignored (a person outlines the outside)."""
    from scipy import ndimage
    from skimage import measure

    lab, n = ndimage.label(mask)
    if n == 0:
        return []
    sizes = np.asarray(ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1)))  # (n,)
    order = np.argsort(-sizes, kind="stable")[:cfg.max_parts]
    keep = [int(i) for i in order if sizes[i] >= cfg.min_part_px] or [int(order[0])]
    polys = []
    for i in keep:  # at most max_parts pieces
        comp = np.pad(lab == i + 1, 1).astype(np.float32)
        contour = max(measure.find_contours(comp, 0.5), key=len) - 1.0  # (P, 2) row, col
        if cfg.simplify_px > 0:
            contour = measure.approximate_polygon(contour, tolerance=cfg.simplify_px)
        if len(contour) > 3 and np.allclose(contour[0], contour[-1]):
            contour = contour[:-1]
        xy = contour[:, ::-1] + rng.normal(0.0, cfg.jitter_px, contour.shape) if cfg.jitter_px > 0 else contour[:, ::-1]
        if len(xy) < 3:  # a one- or two-pixel piece: a small square around it
            c = xy.mean(0)
            xy = c + np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        polys.append(np.round(xy, 3))
    return polys


def simulate_drawing(truth: np.ndarray, cfg: ReaderConfig, rng: np.random.Generator) -> SimDrawing:
    """What the scripted reader draws for the true region ``truth`` (S, S) bool of one patch.

    Partial with probability ``partial_rate`` (``coverage`` of the truth), over-drawn with
    probability ``overdraw_rate`` (``overdraw`` x the drawn part outside the truth), traced as
    polygons and rasterised with ``dissection.drawing_to_mask`` (the canvas path's call).
    Raises ValueError when the truth is empty.
    """
    from dashboard.dissection import drawing_to_mask
    from dashboard.store import ValidationError

    truth = np.asarray(truth, bool)
    if not truth.any():
        raise ValueError("the true region is empty in this patch: nothing to draw")
    size = truth.shape[0]
    target, mode = truth, ""
    if rng.random() < cfg.partial_rate:
        target, mode = _partial(truth, cfg.coverage, rng)
    over = rng.random() < cfg.overdraw_rate
    if over:
        target = _overdraw(target, truth, cfg.overdraw, rng)
    parts, mask = [], np.zeros(truth.shape, bool)
    for poly in _trace(target, cfg, rng):
        geometry = {"points": poly.tolist()}
        try:
            mask |= drawing_to_mask("polygon", geometry, size)
        except ValidationError:
            continue  # this piece covers no pixel centre; the others may
        parts.append({"shape": "polygon", "geometry": geometry})
    if not mask.any():  # everything collapsed: a small square on the truth's deepest pixel
        yx = np.unravel_index(int(np.argmax(truth)), truth.shape)
        sq = [[yx[1] - 1.5, yx[0] - 1.5], [yx[1] + 1.5, yx[0] - 1.5], [yx[1] + 1.5, yx[0] + 1.5], [yx[1] - 1.5, yx[0] + 1.5]]
        parts = [{"shape": "polygon", "geometry": {"points": sq}}]
        mask = drawing_to_mask("polygon", parts[0]["geometry"], size)
    shape, geometry = ("polygon", parts[0]["geometry"]) if len(parts) == 1 else ("polygon", {"drawings": parts})
    area = float(truth.sum())
    return SimDrawing(shape=shape, geometry=geometry, mask=mask, truth=truth, partial_mode=mode, overdrawn=over,
                      recall=float((mask & truth).sum() / area), outside=float((mask & ~truth).sum() / area))


def choose_label(concept: str, concepts: Sequence[str], rate: float, rng: np.random.Generator) -> str:
    """The concept the reader saves: ``concept``, or with probability ``rate`` another of ``concepts``."""
    others = [c for c in concepts if c != concept]
    if others and rng.random() < rate:
        return str(others[int(rng.integers(len(others)))])
    return concept


# ---------------------------------------------------------------- ground truth in model space
@dataclass
class TruthRegion:
    """One ground-truth region of an image in model space: its concepts (a lesion's rows share one
    mask), pathology (benign | malignant | normal), mask (h, w) bool, centre (x, y) and the mask
    file it came from (``key``)."""

    concepts: tuple[str, ...]
    pathology: str
    mask: np.ndarray
    centre: tuple[float, float]
    key: str = ""

    @property
    def is_lesion(self) -> bool:
        return self.pathology != "normal"


@dataclass
class ImageTruth:
    """A store image in model space with its ground truth. img (h, w) float32 in [0, 1]; breast (h, w) bool."""

    image_id: str
    case_id: str
    split: str
    case_label: str
    img: np.ndarray
    breast: np.ndarray
    regions: list[TruthRegion]

    def concept_mask(self, concept: str) -> np.ndarray:
        out = np.zeros(self.breast.shape, bool)
        for r in self.regions:
            if concept in r.concepts:
                out |= r.mask
        return out

    def lesion_concepts(self) -> set[str]:
        return {c for r in self.regions if r.is_lesion for c in r.concepts}

    def lesion_mask(self) -> np.ndarray:
        out = np.zeros(self.breast.shape, bool)
        for r in self.regions:
            if r.is_lesion:
                out |= r.mask
        return out


def load_image_truth(store, card, row: dict, concepts: Sequence[str] | None = None) -> ImageTruth:
    """Load a store image into model space (``imaging.prepare_model_image`` at the card's spacing)
    with the masks of its findings (``patchset.finding_regions``); only regions holding one of
    ``concepts`` (default: all) are read."""
    from dashboard import imaging
    from dashboard.patchset import finding_regions

    m = imaging.load_image(row["path"])
    img, breast, frame = imaging.prepare_model_image(m, card.pixel_spacing_mm,
                                                     default_spacing_mm=row.get("pixel_spacing_mm"))
    groups: "OrderedDict[str, list[dict]]" = OrderedDict()
    for f in store.list_findings(row["image_id"]):
        if f.get("mask_path"):
            groups.setdefault(str(f["mask_path"]), []).append(f)
    wanted = set(concepts) if concepts is not None else None
    regions = []
    for key, rows in groups.items():
        names = tuple(sorted({r["concept"] for r in rows}))
        if wanted is not None and not wanted.intersection(names):
            continue
        found, _ = finding_regions(rows, frame)
        for reg in found:
            pathology = str(rows[0].get("pathology") or "unknown")
            regions.append(TruthRegion(names, pathology, reg.mask & breast if pathology == "normal" else reg.mask,
                                       (reg.cx, reg.cy), key))
    return ImageTruth(row["image_id"], row["case_id"], str(row.get("split")), str(row.get("case_label")), img,
                      breast, regions)


# ---------------------------------------------------------------- the drawing plan
@dataclass(frozen=True)
class DrawingTask:
    """The k-th drawing of ``concept`` (0-based): on ``image_id``, of the region whose mask file is ``mask_path``."""

    concept: str
    k: int
    image_id: str
    mask_path: str


def plan_drawings(store, concepts: Sequence[str], max_per_concept: int, *, split: str = "train",
                  seed: int = 0) -> dict[str, list[DrawingTask]]:
    """Which finding the reader draws for each concept, in order, from the store's rows alone.

    Lesion concepts: every (image, lesion) holding the concept, in a seeded random order. Normal
    structures: one per image, images in one seeded order shared by all structures (a reader
    outlines several structures on the image in front of them). At most ``max_per_concept`` each.
    """
    rng = np.random.default_rng([int(seed), 0x9A11])
    images = [r["image_id"] for r in store.list_images(split=split)]
    order = {img: i for i, img in enumerate(rng.permutation(images).tolist())}
    groups = {c["name"]: c["lexicon_group"] for c in store.list_concepts()}
    rows_by_concept: dict[str, dict[tuple, None]] = {c: {} for c in concepts}
    for f in store.list_findings():
        c = f["concept"]
        if c in rows_by_concept and f["image_id"] in order and f.get("mask_path"):
            rows_by_concept[c][(f["image_id"], str(f["mask_path"]))] = None
    plan = {}
    for ci, c in enumerate(concepts):
        items = sorted(rows_by_concept[c], key=lambda t: (order[t[0]], t[1]))
        if groups.get(c) != NORMAL_GROUP:
            perm = np.random.default_rng([int(seed), ci, 0x1E51]).permutation(len(items))
            items = [items[i] for i in perm]
        plan[c] = [DrawingTask(c, k, img, mp) for k, (img, mp) in enumerate(items[:max_per_concept])]
    return plan


def _task_rng(seed: int, task: DrawingTask) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(task.image_id.encode()), zlib.crc32(task.concept.encode()),
                                  task.k])


def _patch_origin(truth: ImageTruth, region: TruthRegion, concept_is_lesion: bool, size: int, jitter: int,
                  rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner (x0, y0) of the patch: centred on a lesion's centre, or on a random pixel of a
    normal structure, shifted by up to ``jitter`` px per axis."""
    if concept_is_lesion:
        cx, cy = region.centre
    else:
        ys, xs = np.nonzero(region.mask)
        k = int(rng.integers(len(ys)))
        cx, cy = float(xs[k]), float(ys[k])
    j = rng.integers(-jitter, jitter + 1, size=2) if jitter > 0 else np.zeros(2, int)
    return int(round(cx - size / 2)) + int(j[0]), int(round(cy - size / 2)) + int(j[1])


class SimulatedReader:
    """The scripted reader: draws its tasks into ``store`` through the canvas path's library calls.

    One instance per run. ``draw(tasks)`` draws a batch in the given order; ``retrain()`` fits a
    probe version as the app does. ``log`` holds one dict per drawing (what was meant, what was
    saved, recall, outside, units above tau and units won). Patches are kept in memory for
    ``load_patch`` (what ``train_probes`` needs).
    """

    def __init__(self, store, model, card, stats, *, concepts: Sequence[str], config: ReaderConfig = ReaderConfig(),
                 seed: int = 0, layer: str | None = None, cache_dir=None, device=None, reader: str = READER,
                 image_cache: int = 4):
        self.store, self.model, self.card, self.stats = store, model, card, stats
        self.concepts = list(concepts)
        self.cfg, self.seed, self.reader = config, int(seed), reader
        self.layer = layer or card.default_layer
        self.cache_dir, self.device = cache_dir, device
        self.size = int(card.input_size[-1]) if not np.isscalar(card.input_size) else int(card.input_size)
        self.patches: dict[tuple, np.ndarray] = {}
        self.log: list[dict] = []
        self._images: "OrderedDict[str, ImageTruth]" = OrderedDict()
        self._image_cache = int(image_cache)
        self._rows = {r["image_id"]: r for r in store.list_images()}
        self._groups = {c["name"]: c["lexicon_group"] for c in store.list_concepts()}

    def _truth(self, image_id: str) -> ImageTruth:
        if image_id in self._images:
            self._images.move_to_end(image_id)
            return self._images[image_id]
        t = load_image_truth(self.store, self.card, self._rows[image_id], self.concepts)
        self._images[image_id] = t
        while len(self._images) > self._image_cache:
            self._images.popitem(last=False)
        return t

    def load_patch(self, a) -> np.ndarray:
        """``train_probes``' loader: annotation -> (S, S) grey patch in [0, 1]."""
        from dashboard.imaging import crop_patch

        key = (a.image_id, int(a.patch_x0), int(a.patch_y0), int(a.patch_size))
        if key not in self.patches:
            self.patches[key] = crop_patch(self._truth(a.image_id).img, key[1], key[2], key[3])
        return self.patches[key]

    def draw(self, tasks: Sequence[DrawingTask], round_index: int = 0, progress: Progress | None = None) -> list[dict]:
        """Draw, match and save ``tasks`` in order (the time order of the store). Returns their log rows."""
        from dashboard.activations import compute_patch_activations
        from dashboard.dissection import label_units_from_drawing, match_drawing
        from dashboard.imaging import crop_patch

        prepared = []
        # read each image once: the tasks of one image are prepared together, saved in plan order
        by_image: "OrderedDict[str, list[int]]" = OrderedDict()
        for i, t in enumerate(tasks):
            by_image.setdefault(t.image_id, []).append(i)
        slots: list[Any] = [None] * len(tasks)
        for image_id, idx in by_image.items():
            truth = self._truth(image_id)
            for i in idx:
                t = tasks[i]
                rng = _task_rng(self.seed, t)
                region = next((r for r in truth.regions if r.key == t.mask_path and r.mask.any()), None)
                if region is None:
                    continue
                is_lesion = self._groups.get(t.concept) != NORMAL_GROUP
                x0, y0 = _patch_origin(truth, region, is_lesion, self.size, self.cfg.patch_jitter_px, rng)
                truth_patch = crop_patch(region.mask.astype(np.float32), x0, y0, self.size) > 0.5
                if not truth_patch.any():
                    continue
                d = simulate_drawing(truth_patch, self.cfg, rng)
                saved = choose_label(t.concept, self.concepts, self.cfg.wrong_label_rate, rng)
                key = (image_id, x0, y0, self.size)
                if key not in self.patches:
                    self.patches[key] = crop_patch(truth.img, x0, y0, self.size)
                slots[i] = (t, d, saved, key)
        prepared = [s for s in slots if s is not None]
        keys = list(dict.fromkeys(s[3] for s in prepared))
        acts = compute_patch_activations(self.model, self.card, self.layer, [self.patches[k] for k in keys],
                                         cache_dir=self.cache_dir, device=self.device)
        act_of = dict(zip(keys, acts))
        rows = []
        for n, (t, d, saved, key) in enumerate(prepared):
            m = match_drawing(act_of[key], self.stats.thresholds, d.mask, tau=self.cfg.tau)
            res = label_units_from_drawing(
                self.store, image_id=t.image_id, concept=saved, reader=self.reader, patch_x0=key[1],
                patch_y0=key[2], patch_size=self.size, shape=d.shape, geometry=d.geometry,
                model_card=self.card.name, layer=self.layer, ious=m.ious, tau=self.cfg.tau, mask=d.mask)
            row = {"round": int(round_index), "annotation_id": res.annotation_id, "concept": t.concept,
                   "saved_as": saved, "wrong_label": saved != t.concept, "k": t.k, "image_id": t.image_id,
                   "patch_x0": key[1], "patch_y0": key[2], "recall": round(d.recall, 4),
                   "outside": round(d.outside, 4), "partial": d.partial_mode, "overdrawn": d.overdrawn,
                   "n_pieces": len(d.geometry["drawings"]) if "drawings" in d.geometry else 1,
                   "best_iou": round(m.best_iou, 4), "units_above": int(len(res.units_above)),
                   "units_won": int(len(res.labeled_units))}
            rows.append(row)
            if progress:
                progress(n + 1, len(prepared), f"drawing {n + 1}/{len(prepared)} ({t.concept})")
        self.log.extend(rows)
        return rows

    def retrain(self, *, progress: Progress | None = None):
        """A new probe version on every live drawing of the card (the app's "Retrain probes")."""
        from dashboard.probes import train_probes

        return train_probes(self.store, self.model, self.card, self.layer, load_patch=self.load_patch,
                            progress=progress, device=self.device, cache_dir=self.cache_dir, seed=self.seed,
                            actor=self.reader)


# ====================================================================== metrics
def pixel_auroc(scores, labels) -> float:
    """AUROC of ``scores`` for bool ``labels`` (any shape; Mann-Whitney, ties averaged). NaN when
    one class is missing."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: Score histograms are binned on the logit of the probability over [-LOGIT_RANGE, LOGIT_RANGE].
N_BINS = 2048
LOGIT_RANGE = 16.0


def score_histograms(probs: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Positive and negative counts of probabilities per logit bin, for every concept at once.

    probs (K, ...) in [0, 1], truth (K, ...) bool, valid (...) bool (pixels that count, e.g. the
    breast). Returns (K, 2, N_BINS) int64: [:, 1] positives, [:, 0] negatives. Pooled histograms
    of many images give the pooled AUROC (``auroc_from_counts``); ties within a bin count 1/2.
    """
    k = probs.shape[0]
    p = np.clip(np.asarray(probs, np.float64).reshape(k, -1), 1e-30, 1.0)
    t = np.asarray(truth, bool).reshape(k, -1)
    if valid is not None:
        v = np.asarray(valid, bool).reshape(-1)
        p, t = p[:, v], t[:, v]
    with np.errstate(divide="ignore"):
        z = np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-16))
    b = np.clip(((z + LOGIT_RANGE) / (2 * LOGIT_RANGE) * N_BINS).astype(np.int64), 0, N_BINS - 1)
    flat = (np.arange(k)[:, None] * 2 + t) * N_BINS + b  # (K, n)
    return np.bincount(flat.reshape(-1), minlength=k * 2 * N_BINS).reshape(k, 2, N_BINS)


def auroc_from_counts(hist: np.ndarray) -> np.ndarray:
    """AUROC from score histograms (..., 2, B) (negatives, positives per ascending bin): the
    probability that a positive outscores a negative, ties 1/2. NaN where a class is empty."""
    h = np.asarray(hist, np.float64)
    neg, pos = h[..., 0, :], h[..., 1, :]
    below = np.cumsum(neg, -1) - neg
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(-1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def mask_iou(pred, truth) -> float:
    """IoU of two bool masks; NaN when both are empty."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    union = int((p | t).sum())
    return float((p & t).sum() / union) if union else float("nan")


def bootstrap_auroc_iou(hist: np.ndarray, inter: np.ndarray, union: np.ndarray, *, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95, chunk: int = 100) -> dict[str, np.ndarray]:
    """Pooled AUROC and IoU per concept with bootstrap confidence intervals over images.

    hist (I, K, 2, B) per-image score histograms; inter, union (I, K) per-image pixel counts.
    Images are resampled with replacement ``n_boot`` times (seeded). Returns {"auroc", "iou"}
    (K,) point estimates and {"auroc_lo", "auroc_hi", "iou_lo", "iou_hi"} percentile bounds.
    """
    hist = np.asarray(hist, np.float64)
    n_img, k = hist.shape[:2]
    out = {"auroc": auroc_from_counts(hist.sum(0)),
           "iou": np.divide(inter.sum(0), union.sum(0), out=np.full(k, np.nan), where=union.sum(0) > 0)}
    if n_img == 0 or n_boot <= 0:
        for key in ("auroc_lo", "auroc_hi", "iou_lo", "iou_hi"):
            out[key] = np.full(k, np.nan)
        return out
    rng = np.random.default_rng(seed)
    flat = hist.reshape(n_img, -1)
    aucs, ious = [], []
    for s in range(0, n_boot, chunk):
        w = rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=min(chunk, n_boot - s)).astype(np.float64)
        aucs.append(auroc_from_counts((w @ flat).reshape(-1, k, 2, hist.shape[-1])))  # (b, K)
        ui = w @ union
        ious.append(np.divide(w @ inter, ui, out=np.full(ui.shape, np.nan), where=ui > 0))
    a, i = np.concatenate(aucs), np.concatenate(ious)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["auroc_lo"], out["auroc_hi"] = np.nanpercentile(a, q, axis=0)
            out["iou_lo"], out["iou_hi"] = np.nanpercentile(i, q, axis=0)
    return out


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length sequences; NaN with < 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def top_concept_match(shares: dict[str, float], finding_concepts, lesion_concepts) -> dict:
    """Does the report's top concept (largest attribution share) name the true finding?

    shares {concept: share}; finding_concepts: the concepts of the image's true lesion(s) (e.g.
    {"mass", "mass-irregular", "margin-spiculated"}); lesion_concepts: every concept that is a
    lesion (not a normal structure). Returns {"top", "share", "match" (top names a true finding),
    "lesion" (top is some lesion concept)}; top None (no match) when no concept has a positive share.
    """
    items = [(c, s) for c, s in shares.items() if s is not None and np.isfinite(s)]
    if not items or max(s for _, s in items) <= 0:  # no attribution on any concept: no top concept
        return {"top": None, "share": None, "match": False, "lesion": False}
    top, share = max(items, key=lambda t: (t[1], t[0]))
    return {"top": top, "share": float(share), "match": top in set(finding_concepts),
            "lesion": top in set(lesion_concepts)}


def attribution_in_region(attribution: np.ndarray, region: np.ndarray) -> float:
    """Share of the positive attribution mass inside ``region`` (same shape); NaN without positive mass."""
    a = np.clip(np.asarray(attribution, np.float64), 0, None)
    total = a.sum()
    return float(a[np.asarray(region, bool)].sum() / total) if total > 0 else float("nan")


def inpaint_regions(img: np.ndarray, regions: np.ndarray, *, method: str = "texture",
                    sigmas: Sequence[float] = (4, 8, 16, 32, 64), min_weight: float = 0.05,
                    texture_sigma: float = 8.0) -> np.ndarray:
    """Replace each region by blurred surrounding tissue, with borrowed texture by default.

    img (H, W) float; regions (R, H, W) bool; returns (R, H, W) float32 (pixels outside each
    region unchanged), all regions at once per step.

    "blur": normalised convolution: the pixels outside the region are blurred with a Gaussian of
    sigma s and divided by the blurred outside-indicator; each region pixel takes the smallest s
    whose outside weight is >= ``min_weight``. A smooth featureless fill is out of distribution for
    a classifier (on the demo model a mass filled this way scores *higher*), hence
    "texture" (default): the blurred fill plus the image's high-pass texture (image minus its
    Gaussian blur at ``texture_sigma``) copied from outside the region, through a few fixed cyclic
    shifts of the image (the first shift whose source pixel lies outside the region).
    """
    from scipy import ndimage

    if method not in ("texture", "blur"):
        raise ValueError("method must be 'texture' or 'blur'")
    img = np.asarray(img, np.float32)
    reg = np.asarray(regions, bool)
    if reg.ndim == 2:
        reg = reg[None]
    out = np.repeat(img[None], len(reg), 0)
    if not reg.any():
        return out
    keep = (~reg).astype(np.float32)  # (R, H, W)
    todo = reg.copy()
    for i, s in enumerate(sigmas):
        last = i == len(sigmas) - 1
        sig = (0, float(s), float(s))
        num = ndimage.gaussian_filter(keep * img[None], sig, mode="constant", cval=0.0)
        den = ndimage.gaussian_filter(keep, sig, mode="constant", cval=0.0)
        ok = todo & ((den >= min_weight) | (last & (den > 0)))
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
        if not todo.any():
            break
    if todo.any():  # a region covering everything: the mean of the image
        out[todo] = float(img.mean())
    if method == "texture":
        h, w = img.shape
        resid = img - ndimage.gaussian_filter(img, texture_sigma, mode="reflect")  # (H, W) high-pass
        shifts = [(h // 2, w // 2), (h // 2, 0), (0, w // 2), (h // 4, 3 * w // 4), (3 * h // 4, w // 4),
                  (h // 4, w // 4), (3 * h // 4, 3 * w // 4), (h // 2, w // 4), (h // 4, w // 2)]
        need = reg.copy()
        for dy, dx in shifts:  # a fixed handful of shifts, each for all regions and pixels at once
            src_ok = ~np.roll(reg, (dy, dx), (1, 2))  # the source pixel (p - shift) is outside the region
            take = need & src_ok
            out += np.where(take, np.roll(resid, (dy, dx), (0, 1))[None], 0.0)
            need &= ~take
            if not need.any():
                break
        out = np.clip(out, float(img.min()), float(img.max()))
    return out.astype(np.float32)


def deletion_drops(score_fn: Callable[[np.ndarray], np.ndarray], img: np.ndarray, regions: np.ndarray, *,
                   inpaint: Callable[[np.ndarray, np.ndarray], np.ndarray] = inpaint_regions) -> tuple[float, np.ndarray]:
    """Deletion test: the class score of ``img`` and its drop when each region is inpainted.

    score_fn (N, H, W) -> (N,) scores; img (H, W); regions (R, H, W) bool. Returns (base score,
    drops (R,) = base - score of the image with region r inpainted). One batch of R + 1 images.
    """
    reg = np.asarray(regions, bool)
    if reg.ndim == 2:
        reg = reg[None]
    batch = np.concatenate([np.asarray(img, np.float32)[None], inpaint(img, reg)], 0) if len(reg) else \
        np.asarray(img, np.float32)[None]
    s = np.asarray(score_fn(batch), np.float64).reshape(-1)
    return float(s[0]), s[0] - s[1:]


def randomize_model(model, scope: str = "top", seed: int = 0, *, top_modules: Sequence[str] = ("blocks.6",
                    "conv_head", "bn2")):
    """A copy of ``model`` with part of its backbone re-initialised (Adebayo et al. 2018 sanity check).

    scope "top": the modules named in ``top_modules`` (efficientnet: the last block, the head
    conv and its norm); "full": every module of the backbone (all but the classifier). Every
    submodule with ``reset_parameters`` is reset under ``torch.manual_seed(seed)``; batch-norm
    running statistics go back to 0/1. The classifier is kept. The original is untouched.
    """
    import torch

    if scope not in ("top", "full"):
        raise ValueError("scope must be 'top' or 'full'")
    m = copy.deepcopy(model)
    clf = m.get_classifier() if hasattr(m, "get_classifier") else None
    skip = {id(p) for p in clf.parameters()} if clf is not None else set()
    if scope == "top":
        named = dict(m.named_modules())
        missing = [n for n in top_modules if n not in named]
        if missing:
            raise KeyError(f"model has no module(s) {missing}")
        roots = [named[n] for n in top_modules]
    else:
        roots = [m]
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        seen = set()
        for root in roots:
            for mod in root.modules():
                if id(mod) in seen or not hasattr(mod, "reset_parameters"):
                    continue
                if any(id(p) in skip for p in mod.parameters(recurse=False)):
                    continue
                seen.add(id(mod))
                mod.reset_parameters()
    finally:
        torch.random.set_rng_state(gen_state)
    return m.eval()


def map_similarity(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Pearson correlation and SSIM (data range 1 after scaling each map to [0, 1]) of two (H, W)
    maps. Pearson is NaN when a map is constant."""
    from skimage.metrics import structural_similarity

    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def unit(v):
        lo, hi = v.min(), v.max()
        return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)

    pear = float(np.corrcoef(x.ravel(), y.ravel())[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    ssim = float(structural_similarity(unit(x), unit(y), data_range=1.0))
    return {"pearson": pear, "ssim": ssim}


def sample_grid(maps, out_hw: tuple[int, int], stride: int = 4, offset: int = 2) -> np.ndarray:
    """Bilinear upsampling of (N, h, w) maps to (H, W) (align_corners=False, as the engine does),
    read only at the pixels (offset + stride*i, offset + stride*j): (N, ceil((H-offset)/stride), ...).
    Equal to ``F.interpolate(maps, (H, W))[..., offset::stride, offset::stride]`` without the full map."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(maps, np.float32))
    if t.dim() == 2:
        t = t[None]
    hh, ww = out_hw
    ys = torch.arange(offset, hh, stride, dtype=torch.float32)
    xs = torch.arange(offset, ww, stride, dtype=torch.float32)
    gy = (ys + 0.5) / hh * 2 - 1
    gx = (xs + 0.5) / ww * 2 - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]  # (1, h', w', 2) as (x, y)
    out = F.grid_sample(t[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return out.numpy()


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

    from dashboard.probes import _folds, auroc_one_vs_rest, collect_probe_data, fit_probes

    cols = ["n_step", "concept", "n_drawings", "n_available", "n_images", "auroc", "n_eval_positions", "reason"]
    layer = layer or card.default_layer
    anns = store.list_annotations(model_card=card.name)
    if readers is not None:
        anns = [a for a in anns if a.reader in set(readers)]
    anns = [a for a in anns if a.reader not in set(exclude_readers)]
    if not anns:
        return pd.DataFrame(columns=cols)
    data = collect_probe_data(model, card, layer, anns, load_patch, cache_dir=cache_dir, device=device, seed=seed,
                              progress=progress)
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
    fold = _folds(n_img, k, seed)[group] if k >= 2 else np.zeros(len(y), np.int64)
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


# ====================================================================== the end-to-end run
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


@dataclass
class _Heldout:
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


def compute_train_stats(store, model, card, *, cache_dir, layer: str | None = None, n_patches: int = 256,
                        n_images: int = 48, quantile: float = 0.99, seed: int = 0, device=None,
                        progress: Progress | None = None):
    """Dataset statistics of the card's concept layer over breast tiles of the TRAIN split (as the
    app's Model page computes them over the store's images, ``dissection.compute_dataset_stats``):
    half-overlapping tiles at least half breast (``imaging.tile``), ``n_patches`` of them, an even
    share from each of a seeded sample of ``n_images`` images (seeded). Cached under ``cache_dir``."""
    import hashlib

    from dashboard.dissection import compute_dataset_stats
    from dashboard.imaging import crop_patch, tile

    size = int(card.input_size[-1])
    rows = store.list_images(split="train")
    pick = np.random.default_rng([seed, 0x57A7]).permutation(len(rows))[:n_images]
    rows = [rows[i] for i in sorted(pick)]
    per = int(math.ceil(n_patches / max(len(rows), 1)))
    patches, h = [], hashlib.sha256()
    for i, r in enumerate(rows):
        t = load_image_truth(store, card, r, concepts=())
        xy = tile(t.breast, size, size // 2, min_fraction=0.5)
        keep = np.sort(np.random.default_rng([seed, i, 0x711E]).permutation(len(xy))[:per])
        for x0, y0 in np.asarray(xy)[keep]:
            patches.append(crop_patch(t.img, int(x0), int(y0), size))
            h.update(f"{r['sha256']}:{int(x0)}:{int(y0)}:{size};".encode())
        if progress:
            progress(i + 1, len(rows), "breast tiles for the dataset statistics")
    if not patches:
        raise ValueError("no breast tiles in the train split for the dataset statistics")
    arr = np.stack(patches[:n_patches]) if len(patches) > n_patches else np.stack(patches)  # (N, S, S)
    return compute_dataset_stats(model, card, layer or card.default_layer, arr, data_key=h.hexdigest()[:24],
                                 quantile=quantile, cache_dir=Path(cache_dir) / "dissection", progress=progress,
                                 device=device, batch_size=16, store=store)


def _logodds(logits, target: int):
    import torch

    z = torch.as_tensor(logits).double()
    others = torch.cat([z[..., :target], z[..., target + 1:]], -1)
    return z[..., target] - torch.logsumexp(others, -1)


def _score_fn(model, card, target: int, device=None):
    """(N, S, S) grey patches -> (N,) class log-odds (logit of the target against the others)."""
    import torch

    from dashboard.activations import compute_activations
    from dashboard.model_state import lock_for

    layer = getattr(card, "head_layer", None) or card.default_layer

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(card.preprocess(np.asarray(batch, np.float32))), dtype=torch.float32)
        with lock_for(model):
            _, out = compute_activations(model, [layer], x, device=device, with_output=True, out_device="cpu",
                                         batch_size=16)
        return _logodds(out, target).numpy()

    return fn


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


def _prepare_heldout(store, model, card, layer: str, thresholds: np.ndarray, cfg: EvaluationConfig, *, device=None,
                     progress: Progress | None = None) -> list[_Heldout]:
    """Held-out images: FCN features at the concept layer, truth on the evaluation grid, the units'
    on-maps (``_unit_maps``), the top tile by the classifier's own FCN log-odds (its pool-linear head
    on every window of patch-size cells of the head layer, as ``inference.compute_lesion_map``
    does) and, for abnormal images, the patches of the report checks."""
    import torch
    import torch.nn.functional as F

    from dashboard.activations import compute_activations
    from dashboard.imaging import crop_patch
    from dashboard.model_state import lock_for

    rows = [r for s in cfg.heldout_splits for r in store.list_images(split=s)]
    if cfg.max_heldout_images is not None and len(rows) > cfg.max_heldout_images:
        lesion_imgs = {f["image_id"] for f in store.list_findings() if f.get("pathology") not in (None, "normal")}
        perm = np.random.default_rng([cfg.seed, 0x4E1D]).permutation(len(rows)).tolist()
        ranked = sorted(perm, key=lambda i: rows[i]["image_id"] not in lesion_imgs)  # stable: lesions first
        rows = [rows[i] for i in sorted(ranked[:cfg.max_heldout_images])]
    size = int(card.input_size[-1])
    st, off = cfg.eval_stride, cfg.eval_stride // 2
    t_idx = card.classes.index(card.positive_class) if getattr(card, "positive_class", None) else len(card.classes) - 1
    head = getattr(card, "head_layer", None) or card.default_layer
    clf = model.get_classifier()
    out = []
    for i, r in enumerate(rows):
        t = load_image_truth(store, card, r, cfg.concepts)
        x = torch.as_tensor(np.asarray(card.preprocess(t.img[None])), dtype=torch.float32)  # (1, 3, H, W)
        with lock_for(model):
            acts = compute_activations(model, list(dict.fromkeys([layer, head])), x, device=device, out_device="cpu")
        feats, hfeats = acts[layer][0], acts[head][0]  # (C, h', w') each
        truth = np.stack([t.concept_mask(c)[off::st, off::st] for c in cfg.concepts])  # (K, h_g, w_g)
        h = _Heldout(t.image_id, t.case_id, t.split, feats.half(), truth, t.breast[off::st, off::st], t.img.shape,
                     t.lesion_concepts())
        _unit_maps(h, t, h.feats, thresholds, cfg.concepts, cfg.unit_stride)
        # the model's most suspicious patch: pool-linear head over every window of size/stride cells
        stride = t.img.shape[0] // hfeats.shape[1]
        cells = max(1, size // stride)
        with torch.no_grad():
            pooled = F.avg_pool2d(hfeats[None].float(), cells, stride=1)[0]  # (C, gh, gw)
            logits = torch.einsum("kc,cij->ijk", clf.weight.detach().float().cpu(), pooled) + clf.bias.detach().float().cpu()
            lo = _logodds(logits, t_idx).numpy()  # (gh, gw)
        gy, gx = np.indices(lo.shape)
        cy = np.clip(gy * stride + size // 2, 0, t.img.shape[0] - 1)
        cx = np.clip(gx * stride + size // 2, 0, t.img.shape[1] - 1)
        lo = np.where(t.breast[cy, cx], lo, -np.inf)
        if np.isfinite(lo).any():
            j = np.unravel_index(int(np.argmax(lo)), lo.shape)
            h.tile, h.tile_score = (int(j[1] * stride), int(j[0] * stride)), float(lo[j])
        if h.lesion_concepts and h.tile is not None:
            lesion = t.lesion_mask().astype(np.float32)
            x0, y0 = h.tile
            truth_tile = np.stack([crop_patch(t.concept_mask(c).astype(np.float32), x0, y0, size) > 0.5
                                   for c in cfg.concepts])  # (K, S, S)
            h.patches["top_tile"] = {"x0": x0, "y0": y0, "patch": crop_patch(t.img, x0, y0, size),
                                     "lesion": crop_patch(lesion, x0, y0, size) > 0.5, "truth": truth_tile}
            big = max((reg for reg in t.regions if reg.is_lesion), key=lambda reg: int(reg.mask.sum()))
            fx, fy = int(round(big.centre[0] - size / 2)), int(round(big.centre[1] - size / 2))
            h.patches["finding"] = {"x0": fx, "y0": fy, "patch": crop_patch(t.img, fx, fy, size),
                                    "lesion": crop_patch(lesion, fx, fy, size) > 0.5}
        out.append(h)
        if progress:
            progress(i + 1, len(rows), f"held-out image {i + 1}/{len(rows)}")
    return out


def _evaluate_maps(heldout: list[_Heldout], probe, concepts: Sequence[str], units: dict[str, np.ndarray],
                   cfg: EvaluationConfig) -> dict[str, dict]:
    """Per concept, pooled over held-out images with bootstrap intervals over images: concept-map
    pixel AUROC and IoU (p >= 0.5); the IoU of the union of the concept's labeled units' on-maps;
    and the labeled units' own dataset-level IoUs (Network Dissection's per-unit IoU: mean, best)."""
    from dashboard.probes import compute_concept_maps

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


def _reports(heldout: list[_Heldout], model, card, probe, store, cfg: EvaluationConfig, lesion_names: set,
             *, device=None, progress: Progress | None = None) -> tuple[list[dict], list[dict]]:
    """Report checks on the abnormal held-out images: top concept, attribution on the finding,
    deletion, and (on the first ``random_images``) the randomisation sanity check."""
    from dashboard.report import build_report

    t_idx = card.classes.index(card.positive_class) if getattr(card, "positive_class", None) else len(card.classes) - 1
    labels = store.list_unit_labels(card.name, getattr(card, "head_layer", None) or card.default_layer)
    score = _score_fn(model, card, t_idx, device)
    cases = [h for h in heldout if "top_tile" in h.patches]
    if cfg.report_images is not None:
        cases = cases[:cfg.report_images]
    randomized = {s: randomize_model(model, s, cfg.seed) for s in cfg.random_scopes} if cfg.random_images else {}
    rows, rand_rows = [], []
    for i, h in enumerate(cases):
        row = {"image_id": h.image_id, "case_id": h.case_id, "finding_concepts": sorted(h.lesion_concepts),
               "tile": list(h.tile), "tile_logodds": h.tile_score}
        for name in ("top_tile", "finding"):
            pt = h.patches[name]
            x0, y0, patch, lesion = pt["x0"], pt["y0"], pt["patch"], pt["lesion"]
            rep = build_report(model, card, patch, probe, attribution_method=cfg.attribution_method,
                               unit_labels=labels, target=t_idx, image_id=h.image_id, patch_xy=(x0, y0), device=device)
            shares = {c.concept: c.attribution_share for c in rep.concepts if c.attribution_share is not None}
            m = top_concept_match(shares, h.lesion_concepts, lesion_names)
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
            ml = top_concept_match(parts, h.lesion_concepts, lesion_names)
            row[f"{name}.top_logit"], row[f"{name}.match_logit"] = ml["top"], ml["match"]
            row[f"{name}.n_logit_parts"] = len(parts)  # 0: no labeled units at the head layer, no reading
            if name != "top_tile":
                continue
            # deletion, two ways of saying where a concept is: its true region in the patch, and the
            # report's own region (each pixel to its most probable class, background included, as the
            # shares split it). Texture inpainting; the plain blur for comparison on the true regions.
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
                base, drops = deletion_drops(score, patch, regs, inpaint=partial(inpaint_regions, method=method))
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
            if i < cfg.random_images:
                for scope, rm in randomized.items():
                    rr = build_report(rm, card, patch, probe, attribution_method=cfg.attribution_method,
                                      unit_labels=labels, target=t_idx, device=device)
                    r_shares = {c.concept: c.attribution_share for c in rr.concepts if c.attribution_share is not None}
                    names = sorted(shares)
                    sim = map_similarity(rep.attribution_map, rr.attribution_map)
                    flat = float(np.ptp(rr.attribution_map)) == 0.0
                    if flat:  # the randomised model has no attribution left: nothing in common with the original
                        sim = {"pearson": 0.0, "ssim": 0.0}
                    rand_rows.append({"image_id": h.image_id, "scope": scope, "attr_constant": flat,
                                      "share_spearman": spearman([shares[c] for c in names], [r_shares[c] for c in names]),
                                      "attr_pearson": sim["pearson"], "attr_ssim": sim["ssim"],
                                      "top_same": _top_of(shares) is not None and _top_of(r_shares) == _top_of(shares),
                                      "probability": rep.probability, "probability_random": rr.probability})
        rows.append(row)
        if progress:
            progress(i + 1, len(cases), f"report checks {i + 1}/{len(cases)}")
    return rows, rand_rows


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
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluationResult":
        """The inverse of ``to_dict`` (extra keys, e.g. a bench's ``environment``, are ignored)."""
        from dataclasses import fields

        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def run_label_efficiency(store, model, card, cfg: EvaluationConfig = EvaluationConfig(), *, cache_dir=None,
                         device=None, drawing_speed: dict | None = None,
                         progress: Callable[[str, int, int, str], None] | None = None) -> EvaluationResult:
    """The whole evaluation on a demo store: statistics, the simulated reader in batches (probe
    retrained after each), held-out metrics per batch, report checks on the last probe, and the
    in-app learning curve on the same drawings. ``progress(stage, done, total, message)``.

    The store must hold no live drawings under ``card`` yet (a fresh copy of a demo store).
    """
    from dashboard.dissection import units_by_concept
    from dashboard.store import ValidationError

    if store.list_annotations(model_card=card.name):
        raise ValidationError("The store already holds drawings for this model card: run on a fresh copy.")

    def stage(name):
        return (lambda d, t, m="": progress(name, d, t, m)) if progress else None

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if cache_dir is None:
        import tempfile

        cache_dir = tempfile.mkdtemp(prefix="conceptlens-eval-")
    layer = cfg.layer or card.default_layer
    stats = compute_train_stats(store, model, card, layer=layer, n_patches=cfg.stats_patches,
                                n_images=cfg.stats_images, quantile=cfg.quantile, seed=cfg.seed, cache_dir=cache_dir,
                                device=device, progress=stage("statistics"))
    timings["statistics_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    heldout = _prepare_heldout(store, model, card, layer, stats.thresholds, cfg, device=device,
                               progress=stage("held-out"))
    timings["heldout_features_s"] = time.perf_counter() - t0
    plan = plan_drawings(store, cfg.concepts, max(cfg.budgets), seed=cfg.seed)
    available = {c: len(v) for c, v in plan.items()}
    reader = SimulatedReader(store, model, card, stats, concepts=cfg.concepts, config=cfg.reader, seed=cfg.seed,
                             layer=layer, cache_dir=cache_dir, device=device)
    rounds, prev = [], 0
    timings["drawing_s"] = timings["training_s"] = timings["maps_s"] = 0.0
    for ri, budget in enumerate(sorted(set(cfg.budgets))):
        # round robin over concepts: the store's time order interleaves them
        batch = []
        for j in range(prev, budget):
            batch.extend(plan[c][j] for c in cfg.concepts if j < len(plan[c]))
        prev = budget
        t0 = time.perf_counter()
        if batch:
            reader.draw(batch, ri, progress=stage(f"drawings to {budget}/concept"))
        timings["drawing_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        probe = reader.retrain(progress=stage(f"probe at {budget}/concept"))
        timings["training_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        units = units_by_concept(store, card.name, layer)
        metrics = _evaluate_maps(heldout, probe, cfg.concepts, units, cfg)
        timings["maps_s"] += time.perf_counter() - t0
        counts = {c: sum(1 for r in reader.log if r["concept"] == c) for c in cfg.concepts}
        rounds.append({"budget": budget, "probe_version": probe.version, "n_drawings": counts,
                       "n_drawings_total": len(reader.log), "metrics": metrics,
                       "probe_validation": {c: (probe.metrics.get(c) or {}).get("auroc") for c in probe.concepts}})
        if progress:
            progress("rounds", ri + 1, len(set(cfg.budgets)), f"{budget} drawings/concept evaluated")
    t0 = time.perf_counter()
    lesion_names = {c["name"] for c in store.list_concepts() if c["lexicon_group"] != NORMAL_GROUP}
    reports, rand_rows = _reports(heldout, model, card, probe, store, cfg, lesion_names, device=device,
                                  progress=stage("reports"))
    timings["reports_s"] = time.perf_counter() - t0
    curve = []
    if cfg.learning_curve:
        t0 = time.perf_counter()
        df = compute_learning_curve(store, card, model, load_patch=reader.load_patch, layer=layer, steps=cfg.budgets,
                                    exclude_readers=(), seed=cfg.seed, cache_dir=cache_dir, device=device)
        curve = df.to_dict("records")
        timings["learning_curve_s"] = time.perf_counter() - t0
    res = EvaluationResult(
        config=_jsonable(asdict(cfg)), rounds=rounds, drawings=reader.log, reports=reports, randomisation=rand_rows,
        learning_curve=curve, available=available,
        heldout={"images": len(heldout), "abnormal_images": sum(1 for h in heldout if h.lesion_concepts),
                 "report_images": len(reports)},
        timings={k: round(v, 1) for k, v in timings.items()})
    res.summary = summarise(res, drawing_speed=drawing_speed)
    return res


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
    rep = res.reports

    def rate(key):
        v = [bool(r[key]) for r in rep if r.get(key) is not None]
        return (float(np.mean(v)) if v else None), len(v)

    def mean(key):
        v = [r[key] for r in rep if r.get(key) is not None and np.isfinite(r[key])]
        return (float(np.mean(v)) if v else None), len(v)

    top1, n_top = rate("top_tile.match")
    flagged = [r for r in rep if (r.get("top_tile.probability") or 0) >= flag_threshold]
    top1_flagged = float(np.mean([bool(r["top_tile.match"]) for r in flagged])) if flagged else None
    top1_lesion, _ = rate("top_tile.lesion")
    with_parts = [r for r in rep if r.get("top_tile.n_logit_parts", 1 if r.get("top_tile.top_logit") else 0)]
    top1_logit = float(np.mean([bool(r["top_tile.match_logit"]) for r in with_parts])) if with_parts else None
    top1_f, _ = rate("finding.match")
    def finite(key):
        return [r[key] for r in rep if r.get(key) is not None and np.isfinite(r[key])]

    deletion = {}
    for variant in DELETION_VARIANTS:
        sp = finite(f"{variant}.spearman")
        ci = _mean_ci(sp, seed=0)
        lp = finite(f"{variant}.spearman_logit_parts")
        deletion[variant] = {"spearman_mean": ci[0], "spearman_ci": list(ci[1:]), "n_patches": len(sp),
                             "spearman_pooled": _pooled_deletion(rep, variant),
                             "spearman_logit_parts_mean": _nanmean(lp), "n_patches_logit_parts": len(lp),
                             "finding_drop_mean": mean(f"{variant}.finding_drop")[0]}
    rnd = {}
    for scope in sorted({r["scope"] for r in res.randomisation}):
        rows = [r for r in res.randomisation if r["scope"] == scope]
        rnd[scope] = {"n": len(rows)}
        for k in ("share_spearman", "attr_pearson", "attr_ssim"):
            vals = [r[k] for r in rows]
            undefined = sum(1 for v in vals if v is None or not np.isfinite(v))
            # undefined = a constant side (e.g. Grad-CAM all zero after randomisation): no agreement, 0
            rnd[scope][k] = _nanmedian([0.0 if v is None or not np.isfinite(v) else v for v in vals])
            rnd[scope][k + "_undefined"] = undefined
        rnd[scope]["top_same_rate"] = _nanmean([float(r["top_same"]) for r in rows])
        rnd[scope]["attr_all_zero"] = sum(1 for r in rows if r.get("attr_constant"))
    total_needed = sum(n for n in need.values() if n is not None)
    out = {
        "auroc_target": auroc_target, "max_drawings_target": max_drawings,
        "drawings_to_auroc_target": need, "drawings_to_auroc_target_stable": need_stable,
        "concepts_meeting_target": met, "n_concepts_evaluable": len(evaluable),
        "final_budget": final["budget"] if final else None,
        "final_auroc": {c: final["metrics"][c]["auroc"] for c in evaluable} if final else {},
        "final_auroc_mean": _nanmean([final["metrics"][c]["auroc"] for c in evaluable]) if final else None,
        "top1_match_rate": top1, "top1_lesion_rate": top1_lesion, "top1_n_images": n_top,
        "top1_match_rate_finding_patch": top1_f, "top1_target": top1_target,
        "top1_logit_part_match_rate": top1_logit, "top1_logit_part_n_images": len(with_parts), "top1_match_rate_flagged": top1_flagged, "top1_n_flagged": len(flagged), "flag_threshold": flag_threshold,
        "finding_area_mean": mean("top_tile.finding_area")[0],
        "attr_on_finding_mean": mean("top_tile.attr_on_finding")[0],
        "attr_on_finding_mean_finding_patch": mean("finding.attr_on_finding")[0],
        "share_finding_concepts_mean": mean("top_tile.share_finding_concepts")[0],
        "deletion": deletion, "spearman_target": spearman_target,
        "randomisation": rnd,
        "wrong_label_rate_observed": float(np.mean([r["wrong_label"] for r in res.drawings])) if res.drawings else None,
        "units_won_per_drawing": float(np.mean([r["units_won"] for r in res.drawings])) if res.drawings else None,
        "units_above_per_drawing": float(np.mean([r["units_above"] for r in res.drawings])) if res.drawings else None,
        "units_per_drawing_by_concept": {
            c: {"above_tau": float(np.mean([r["units_above"] for r in res.drawings if r["concept"] == c])),
                "won": float(np.mean([r["units_won"] for r in res.drawings if r["concept"] == c])),
                "recall": float(np.mean([r["recall"] for r in res.drawings if r["concept"] == c])),
                "outside": float(np.mean([r["outside"] for r in res.drawings if r["concept"] == c]))}
            for c in dict.fromkeys(r["concept"] for r in res.drawings)},
    }
    out["targets"] = {
        "auroc_within_5_drawings": f"{len(met)}/{len(evaluable)} concepts",
        "auroc_within_5_drawings_stable": f"{sum(1 for n in need_stable.values() if n is not None and n <= max_drawings)}"
                                          f"/{len(evaluable)} concepts",
        "top1_match_ge_90": None if top1 is None else bool(top1 >= top1_target),
        "deletion_spearman_ge_0.7": {
            v: None if deletion[v]["spearman_mean"] is None else bool(deletion[v]["spearman_mean"] >= spearman_target)
            for v in ("deletion_truth", "deletion_report")},
    }
    if drawing_speed:
        dpm = float(drawing_speed["drawings_per_minute"])
        out["drawing_speed"] = dict(drawing_speed)
        out["reader_minutes_to_target"] = round(total_needed / dpm, 2) if need else None
        out["reader_minutes_total"] = round(len(res.drawings) / dpm, 2)
    else:
        out["drawing_speed"] = "missing: bench/results/browser.json (branch app) not found or has no drawing time"
    return out


def _nanmean(v):
    a = np.asarray([x for x in v if x is not None], np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _nanmedian(v):
    a = np.asarray([x for x in v if x is not None], np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else None


def _mean_ci(values, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """(mean, lo, hi) with a bootstrap percentile interval; Nones when empty."""
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return (None, None, None)
    rng = np.random.default_rng(seed)
    boots = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(1)
    lo, hi = np.percentile(boots, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return (float(a.mean()), float(lo), float(hi))


def _pooled_deletion(reports: list[dict], variant: str) -> float | None:
    """Spearman of share vs drop pooled over all (patch, concept) pairs, each side first replaced by
    its rank within its patch (scaled to (0, 1)), so patches with larger scores do not dominate."""
    xs, ys = [], []
    for r in reports:
        s, d = r.get(f"{variant}.shares") or [], r.get(f"{variant}.drops") or []
        if len(s) >= 2:
            from scipy.stats import rankdata

            xs.extend((rankdata(s) - 0.5) / len(s))
            ys.extend((rankdata(d) - 0.5) / len(d))
    v = spearman(xs, ys)
    return None if not np.isfinite(v) else v

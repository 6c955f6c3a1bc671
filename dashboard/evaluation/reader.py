"""The simulated reader: scripted drawings of ground-truth regions through the canvas path's calls."""
from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import measure

from dashboard import imaging
from dashboard.data.files import load_stored_image
from dashboard.data.patchset import NORMAL_STRUCTURE_GROUP, finding_regions
from dashboard.data.store import DrawingRecord, ValidationError
from dashboard.engine.activations import compute_patch_activations
from dashboard.engine.dissection import drawing_to_mask, label_units_from_drawing, match_drawing
from dashboard.engine.probes import ProbeConfig, train_probes
from dashboard.progress import Progress, report

READER = "sim-reader"
#: Concepts the simulated reader draws by default: the finding kinds and the normal structures.
DEFAULT_CONCEPTS = ("mass", "calcification", "architectural-distortion", "vessel", "fibroglandular", "skin",
                    "nipple", "pectoral-muscle")


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
    m = load_stored_image(store, row)
    img, breast, frame = imaging.prepare_model_image(m, card.pixel_spacing_mm,
                                                     default_spacing_mm=row.get("pixel_spacing_mm"))
    groups: OrderedDict[str, list[dict]] = OrderedDict()
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
        if groups.get(c) != NORMAL_STRUCTURE_GROUP:
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


@dataclass(frozen=True)
class RunContext:
    """What an evaluation job works with, as the app's session does: the store that drawings go
    into, the model and its card, the concept layer drawings label, the activation cache folder
    and the device (None: the engine's choice)."""

    store: Any
    model: Any
    card: Any
    layer: str
    cache_dir: Any = None
    device: Any = None


class SimulatedReader:
    """The scripted reader: draws its tasks into the context's store through the canvas path's library calls.

    One instance per run. ``draw(tasks)`` draws a batch in the given order; ``retrain()`` fits a
    probe version as the app does. ``log`` holds one dict per drawing (what was meant, what was
    saved, recall, outside, units above tau and units won). Patches are kept in memory for
    ``load_patch`` (what ``train_probes`` needs). ``stats``: the dataset statistics of the context's
    layer (their unit thresholds decide which units a drawing labels).
    """

    def __init__(self, ctx: RunContext, stats, *, concepts: Sequence[str], config: ReaderConfig = ReaderConfig(),
                 seed: int = 0, reader: str = READER, image_cache: int = 4):
        self.ctx, self.stats = ctx, stats
        self.concepts = list(concepts)
        self.cfg, self.seed, self.reader = config, int(seed), reader
        card = ctx.card
        # the Label page's patch: the card's labeling patch (may exceed the model input)
        self.size = int(getattr(card, "label_patch_size", None) or
                        (card.input_size[-1] if not np.isscalar(card.input_size) else card.input_size))
        self.patches: dict[tuple, np.ndarray] = {}
        self.log: list[dict] = []
        self._images: OrderedDict[str, ImageTruth] = OrderedDict()
        self._image_cache = int(image_cache)
        self._rows = {r["image_id"]: r for r in ctx.store.list_images()}
        self._groups = {c["name"]: c["lexicon_group"] for c in ctx.store.list_concepts()}
        self._keys: dict[DrawingTask, tuple | None] = {}

    def _truth(self, image_id: str) -> ImageTruth:
        if image_id in self._images:
            self._images.move_to_end(image_id)
            return self._images[image_id]
        t = load_image_truth(self.ctx.store, self.ctx.card, self._rows[image_id], self.concepts)
        self._images[image_id] = t
        while len(self._images) > self._image_cache:
            self._images.popitem(last=False)
        return t

    def load_patch(self, a) -> np.ndarray:
        """``train_probes``' loader: annotation -> (S, S) grey patch in [0, 1]."""
        key = (a.image_id, int(a.patch_x0), int(a.patch_y0), int(a.patch_size))
        if key not in self.patches:
            self.patches[key] = imaging.crop_patch(self._truth(a.image_id).img, key[1], key[2], key[3])
        return self.patches[key]

    def _prepare(self, tasks: Sequence[DrawingTask]) -> list[tuple]:
        """(task, SimDrawing, concept saved, patch key) of each task that has something to draw, in
        task order; each image is read once and its patches kept for ``load_patch``."""
        by_image: OrderedDict[str, list[int]] = OrderedDict()
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
                is_lesion = self._groups.get(t.concept) != NORMAL_STRUCTURE_GROUP
                x0, y0 = _patch_origin(truth, region, is_lesion, self.size, self.cfg.patch_jitter_px, rng)
                truth_patch = imaging.crop_patch(region.mask.astype(np.float32), x0, y0, self.size) > 0.5
                if not truth_patch.any():
                    continue
                d = simulate_drawing(truth_patch, self.cfg, rng)
                saved = choose_label(t.concept, self.concepts, self.cfg.wrong_label_rate, rng)
                key = (image_id, x0, y0, self.size)
                if key not in self.patches:
                    self.patches[key] = imaging.crop_patch(truth.img, x0, y0, self.size)
                slots[i] = (t, d, saved, key)
        return [s for s in slots if s is not None]

    def patch_keys(self, tasks: Sequence[DrawingTask]) -> list[tuple | None]:
        """The patch (image_id, x0, y0, size) each task would be drawn on (None: nothing to draw
        there), as ``draw`` would open it; remembered per task, the patches kept for ``load_patch``."""
        todo = [t for t in dict.fromkeys(tasks) if t not in self._keys]
        for t in todo:
            self._keys[t] = None
        for t, _, _, key in self._prepare(todo):
            self._keys[t] = key
        return [self._keys[t] for t in tasks]

    def draw(self, tasks: Sequence[DrawingTask], round_index: int = 0, progress: Progress | None = None) -> list[dict]:
        """Draw, match and save ``tasks`` in order (the time order of the store). Returns their log rows."""
        ctx = self.ctx
        prepared = self._prepare(tasks)
        keys = list(dict.fromkeys(s[3] for s in prepared))
        acts = compute_patch_activations(ctx.model, ctx.card, ctx.layer, [self.patches[k] for k in keys],
                                         cache_dir=ctx.cache_dir, device=ctx.device)
        act_of = dict(zip(keys, acts))
        rows = []
        for n, (t, d, saved, key) in enumerate(prepared):
            m = match_drawing(act_of[key], self.stats.thresholds, d.mask, tau=self.cfg.tau)
            res = label_units_from_drawing(
                ctx.store, DrawingRecord(image_id=t.image_id, concept=saved, reader=self.reader, patch_x0=key[1],
                                         patch_y0=key[2], patch_size=self.size, shape=d.shape, geometry=d.geometry,
                                         model_card=ctx.card.name),
                layer=ctx.layer, ious=m.ious, tau=self.cfg.tau, mask=d.mask)
            rows.append({"round": int(round_index), "annotation_id": res.annotation_id, "concept": t.concept,
                         "saved_as": saved, "wrong_label": saved != t.concept, "k": t.k, "image_id": t.image_id,
                         "patch_x0": key[1], "patch_y0": key[2], "recall": round(d.recall, 4),
                         "outside": round(d.outside, 4), "partial": d.partial_mode, "overdrawn": d.overdrawn,
                         "n_pieces": len(d.geometry["drawings"]) if "drawings" in d.geometry else 1,
                         "best_iou": round(m.best_iou, 4), "units_above": int(len(res.units_above)),
                         "units_won": int(len(res.labeled_units))})
            report(progress, n + 1, len(prepared), f"drawing {n + 1}/{len(prepared)} ({t.concept})")
        self.log.extend(rows)
        return rows

    def retrain(self, *, progress: Progress | None = None):
        """A new probe version on every live drawing of the card (the app's "Retrain probes")."""
        ctx = self.ctx
        return train_probes(ctx.store, ctx.model, ctx.card, ctx.layer, load_patch=self.load_patch,
                            progress=progress, config=ProbeConfig(device=ctx.device, cache_dir=ctx.cache_dir,
                                                                  seed=self.seed, actor=self.reader))

"""Where to draw next: candidate patches ranked by how much a drawing there would teach the probes.

Three signals, each in [0, 1], read off the concept layer's features of every candidate patch:

* **uncertainty**: the probe's concept probabilities near 0.5 (binary entropy in bits of each
  concept's probability, averaged over the patch's feature cells; the concept with the highest);
* **disagreement**: the validation folds' models (``ProbeVersion.fold_*``, trained with the probe
  and kept with its version) disagree (standard deviation over folds of each concept's
  probability, x 2, averaged over the cells; zero when the folds agree or were not kept);
* **novelty**: on an image the model flags, a unit with no concept label is above its dataset
  threshold (the statistics' top quantile) over a large share of the patch (the largest share of any
  unlabelled unit).

The score is their weighted sum (``SuggestConfig``); each suggestion carries a reason in words from
its largest part. Patches the reader already labelled are left out, and overlapping candidates give
way to the better one. Everything is batched over patches, cells, concepts and units (no loop over
units or cells). ``score_patches`` works on patch features (the simulated reader's bench uses it);
``suggest_patches`` crops the candidates out of whole-image feature maps (the app).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dashboard.imaging import tile

__all__ = ["SuggestConfig", "Candidate", "ImageFeatures", "PatchScores", "Suggestion", "score_patches",
           "suggest_patches", "grid_candidates", "crop_features", "overlap_fraction", "reason_for"]


@dataclass(frozen=True)
class SuggestConfig:
    """How candidates are scored and picked.

    uncertainty, disagreement, novelty  weights of the three parts of the score
    limit               suggestions returned
    labelled_overlap    a candidate covering at least this fraction of a labelled patch's area (or
                        covered by one) is left out
    nms_overlap         a candidate overlapping a better one by at least this fraction is left out
    grid_stride         grid step in model pixels (None: the patch size, so grid tiles do not overlap)
    min_breast          grid tiles need at least this breast fraction
    second_reason       a second part joins the reason when it is at least this fraction of the first
    """

    uncertainty: float = 1.0
    disagreement: float = 1.0
    novelty: float = 1.0
    limit: int = 10
    labelled_overlap: float = 0.5
    nms_overlap: float = 0.5
    grid_stride: int | None = None
    min_breast: float = 0.5
    second_reason: float = 0.6


@dataclass(frozen=True)
class Candidate:
    """A patch (x0, y0, size) in model pixels of an image; ``source`` says where it came from
    ("grid", "lesion map #1", ...)."""

    image_id: str
    x0: int
    y0: int
    size: int
    source: str = "grid"


@dataclass
class ImageFeatures:
    """One image's concept-layer features (C, h, w) over its model-space shape (H, W), its
    candidate patches and whether the model flags it (novelty counts on flagged images only)."""

    image_id: str
    feats: torch.Tensor
    shape: tuple[int, int]
    candidates: list[Candidate]
    flagged: bool = False


@dataclass
class PatchScores:
    """The three parts and the score of N patches, with what each part points at (arrays (N,)).

    unsure_concept / disputed_concept index ``probe.concepts``; unsure_p is the concept's probability
    at its most uncertain cell; fold_low / fold_high the folds' lowest and highest probability at the
    cell where they disagree most; novel_unit is -1 where no unlabelled unit fires. per_concept
    (N, K): each concept's own weighted uncertainty + disagreement (what a drawing *of that
    concept* there would settle)."""

    uncertainty: np.ndarray
    unsure_concept: np.ndarray
    unsure_p: np.ndarray
    disagreement: np.ndarray
    disputed_concept: np.ndarray
    fold_low: np.ndarray
    fold_high: np.ndarray
    novelty: np.ndarray
    novel_unit: np.ndarray
    score: np.ndarray
    per_concept: np.ndarray


@dataclass
class Suggestion:
    """A patch worth drawing on, with its score, parts and the reason in words."""

    image_id: str
    x0: int
    y0: int
    size: int
    source: str
    score: float
    uncertainty: float
    disagreement: float
    novelty: float
    reason: str
    concept: str | None = None
    unit: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ref(self) -> tuple[str, int, int, int]:
        return (self.image_id, self.x0, self.y0, self.size)


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of a Bernoulli(p): 1 at p = 0.5, 0 at 0 and 1."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def _at_best_cell(values: torch.Tensor, key: torch.Tensor, concept: torch.Tensor) -> torch.Tensor:
    """values (..., N, P, K) at the cell where key (N, P, K) is largest for each patch's ``concept`` (N,)."""
    n = key.shape[0]
    rows = torch.arange(n)
    cell = key[rows, :, concept].argmax(1)  # (N,)
    return values[..., rows, cell, concept]


def score_patches(probe, feats: torch.Tensor, *, thresholds: np.ndarray | None = None,
                  labelled_units: Sequence[int] = (), flagged: np.ndarray | bool = False,
                  config: SuggestConfig = SuggestConfig()) -> PatchScores:
    """Score N candidate patches from their features at the probe's layer.

    feats (N, C, h, w) raw activations; thresholds (C,) the units' dataset thresholds (None: no
    novelty); labelled_units the units that already have a concept; flagged (N,) bool or one bool
    for all: whether the patch's image is flagged by the model. All patches, cells, concepts and
    folds in a few batched ops.
    """
    x = torch.as_tensor(feats).float()
    n, c, h, w = x.shape
    k = len(probe.concepts)
    rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # (N*P, C)
    with torch.no_grad():
        pc = torch.softmax(probe.logits(rows), 1)[:, 1:].reshape(n, h * w, k)  # (N, P, K) concepts
        ent = _binary_entropy(pc)  # (N, P, K)
        u_k = ent.mean(1)  # (N, K)
        d_k = torch.zeros(n, k)
        unc, unsure = u_k.max(1) if k else (torch.zeros(n), torch.zeros(n, dtype=torch.long))
        unsure_p = _at_best_cell(pc, ent, unsure) if k else torch.full((n,), float("nan"))
        if probe.n_folds >= 2 and k:
            fp = torch.softmax(probe.fold_logits(rows), 2)[:, :, 1:].reshape(-1, n, h * w, k)  # (F, N, P, K)
            sd = fp.std(0, unbiased=False) * 2.0  # (N, P, K) in [0, 1]
            d_k = sd.mean(1)  # (N, K)
            dis, disputed = d_k.max(1)
            at = _at_best_cell(fp, sd, disputed)  # (F, N)
            low, high = at.min(0).values, at.max(0).values
        else:
            dis, disputed = torch.zeros(n), torch.zeros(n, dtype=torch.long)
            low = high = torch.full((n,), float("nan"))
        if thresholds is not None:
            thr = torch.as_tensor(np.asarray(thresholds), dtype=torch.float32)  # (C,)
            area = (x > thr[None, :, None, None]).float().mean((2, 3))  # (N, C) share of cells above
            lab = torch.as_tensor(np.asarray(list(labelled_units), dtype=np.int64))
            if lab.numel():
                area[:, lab] = 0.0
            flag = torch.as_tensor(np.broadcast_to(np.asarray(flagged, bool), (n,)).copy())
            area = area * flag[:, None].float()
            nov, unit = area.max(1)
            unit = torch.where(nov > 0, unit, torch.full_like(unit, -1))
        else:
            nov, unit = torch.zeros(n), torch.full((n,), -1, dtype=torch.long)
    score = config.uncertainty * unc + config.disagreement * dis + config.novelty * nov
    f = lambda t: t.detach().cpu().numpy()  # noqa: E731
    return PatchScores(uncertainty=f(unc).astype(np.float32), unsure_concept=f(unsure).astype(np.int64),
                       unsure_p=f(unsure_p).astype(np.float32), disagreement=f(dis).astype(np.float32),
                       disputed_concept=f(disputed).astype(np.int64), fold_low=f(low).astype(np.float32),
                       fold_high=f(high).astype(np.float32), novelty=f(nov).astype(np.float32),
                       novel_unit=f(unit).astype(np.int64), score=f(score).astype(np.float32),
                       per_concept=f(config.uncertainty * u_k + config.disagreement * d_k).astype(np.float32))


def reason_for(scores: PatchScores, i: int, concepts: Sequence[str],
               config: SuggestConfig = SuggestConfig()) -> tuple[str, str | None, int | None]:
    """The reason in words for patch ``i``: its largest weighted part, and a second part when it is
    nearly as large. Returns (reason, the concept it names or None, the unit it names or None)."""
    parts = []
    if len(concepts):
        c = concepts[int(scores.unsure_concept[i])]
        parts.append((config.uncertainty * float(scores.uncertainty[i]),
                      f"the {c} probe is unsure here (p≈{float(scores.unsure_p[i]):.2f})", c, None))
        if scores.disagreement[i] > 0:
            d = concepts[int(scores.disputed_concept[i])]
            parts.append((config.disagreement * float(scores.disagreement[i]),
                          f"the probes of the validation folds disagree about {d} "
                          f"(p from {float(scores.fold_low[i]):.2f} to {float(scores.fold_high[i]):.2f})", d, None))
    if scores.novel_unit[i] >= 0:
        u = int(scores.novel_unit[i])
        parts.append((config.novelty * float(scores.novelty[i]),
                      f"unit {u} fires strongly here ({100 * float(scores.novelty[i]):.0f} % of the patch) "
                      "and has no concept yet", None, u))
    if not parts:
        return "no probe signal here", None, None
    parts.sort(key=lambda t: -t[0])
    first = parts[0]
    text = first[1]
    if len(parts) > 1 and parts[1][0] > 0 and parts[1][0] >= config.second_reason * first[0]:
        text += "; " + parts[1][1]
    return text[0].upper() + text[1:], first[2], first[3]


def overlap_fraction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boxes a (N, 3) and b (M, 3) as (x0, y0, size) -> (N, M): the intersection's area over the
    smaller box's area (1 when one lies inside the other)."""
    a = np.asarray(a, np.float64).reshape(-1, 3)
    b = np.asarray(b, np.float64).reshape(-1, 3)
    ix = np.clip(np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
                 - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 1] + a[:, None, 2], b[None, :, 1] + b[None, :, 2])
                 - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    small = np.minimum(a[:, None, 2] ** 2, b[None, :, 2] ** 2)
    return ix * iy / np.maximum(small, 1.0)


def grid_candidates(image_id: str, breast: np.ndarray, size: int, *, stride: int | None = None,
                    min_breast: float = 0.5) -> list[Candidate]:
    """Grid tiles of ``size`` over an image's breast mask (H, W) bool (``imaging.tile``)."""
    xy = tile(breast, int(size), int(stride or size), min_fraction=min_breast)
    return [Candidate(image_id, int(x0), int(y0), int(size), "grid") for x0, y0 in np.asarray(xy).reshape(-1, 2)]


def crop_features(feats: torch.Tensor, shape: tuple[int, int], boxes: np.ndarray) -> torch.Tensor:
    """The feature cells under boxes (N, 3) of (x0, y0, size) model pixels of an image of ``shape``
    (H, W) whose features are feats (C, h, w): (N, C, c, c), c = size / stride (the first box's
    size sets c). Cells outside the map are zero (a patch off the image's edge is zero-padded too)."""
    f = torch.as_tensor(feats).float()
    c_, h, w = f.shape
    boxes = np.asarray(boxes, np.int64).reshape(-1, 3)
    sy, sx = shape[0] / h, shape[1] / w
    cells = max(1, int(round(boxes[0, 2] / sy))) if len(boxes) else 1
    cy = np.rint(boxes[:, 1] / sy).astype(np.int64)
    cx = np.rint(boxes[:, 0] / sx).astype(np.int64)
    pad = cells
    fp = F.pad(f, (pad, pad, pad, pad))  # (C, h + 2p, w + 2p)
    ry = torch.as_tensor(np.clip(cy[:, None] + np.arange(cells) + pad, 0, h + 2 * pad - 1))  # (N, c)
    rx = torch.as_tensor(np.clip(cx[:, None] + np.arange(cells) + pad, 0, w + 2 * pad - 1))
    out = fp[:, ry[:, :, None], rx[:, None, :]]  # (C, N, c, c)
    return out.permute(1, 0, 2, 3).contiguous()


def suggest_patches(probe, images: Sequence[ImageFeatures], *, labelled: Sequence[tuple] = (),
                    thresholds: np.ndarray | None = None, labelled_units: Sequence[int] = (),
                    config: SuggestConfig = SuggestConfig()) -> list[Suggestion]:
    """The ``config.limit`` best candidate patches of ``images`` to draw on next, best first.

    labelled: patches the reader already drew on, (image_id, x0, y0, size); a candidate overlapping
    one by ``config.labelled_overlap`` or more is never suggested. Per image the candidates' feature
    cells are cropped from its map and all scored at once (``score_patches``); then the best are
    picked greedily, skipping candidates that overlap a better pick by ``config.nms_overlap``.
    """
    done: dict[str, list[tuple[int, int, int]]] = {}
    for img, x0, y0, size in labelled:
        done.setdefault(str(img), []).append((int(x0), int(y0), int(size)))
    pool: list[tuple[Candidate, PatchScores, int]] = []
    for im in images:
        cands = list(dict.fromkeys(im.candidates))
        if not cands:
            continue
        boxes = np.array([(c.x0, c.y0, c.size) for c in cands], np.int64)
        if im.image_id in done:
            keep = overlap_fraction(boxes, np.array(done[im.image_id])).max(1) < config.labelled_overlap
            cands, boxes = [c for c, k in zip(cands, keep) if k], boxes[keep]
        if not cands:
            continue
        sc = score_patches(probe, crop_features(im.feats, im.shape, boxes), thresholds=thresholds,
                           labelled_units=labelled_units, flagged=im.flagged, config=config)
        pool.extend((c, sc, i) for i, c in enumerate(cands))
    if not pool:
        return []
    scores = np.array([sc.score[i] for _, sc, i in pool], np.float64)
    order = np.argsort(-scores, kind="stable")
    picked: list[int] = []
    for j in order:  # greedy: at most ``limit`` picks, each checked against the picks so far
        cand = pool[j][0]
        mine = [p for p in picked if pool[p][0].image_id == cand.image_id]
        if mine:
            prev = np.array([(pool[p][0].x0, pool[p][0].y0, pool[p][0].size) for p in mine])
            if overlap_fraction(np.array([(cand.x0, cand.y0, cand.size)]), prev).max() >= config.nms_overlap:
                continue
        picked.append(int(j))
        if len(picked) >= config.limit:
            break
    out = []
    for j in picked:
        cand, sc, i = pool[j]
        reason, concept, unit = reason_for(sc, i, probe.concepts, config)
        out.append(Suggestion(cand.image_id, cand.x0, cand.y0, cand.size, cand.source, float(sc.score[i]),
                              float(sc.uncertainty[i]), float(sc.disagreement[i]), float(sc.novelty[i]), reason,
                              concept, unit))
    return out

"""Concept probes: a multinomial logistic regression over a layer's feature vectors.

Training data come from the readers' drawings. Every drawing's mask is averaged over the
feature grid; positions at least half covered are examples of its concept (a drawing too small
to half-cover any cell gives its best-covered cell). Background examples are positions of the
same patches that no drawing touches, sampled (seeded) up to the patch's number of concept
positions. Overlapping drawings of two concepts give the position to both (the softmax then
shares the probability). Classes are balanced by weights, features are standardised with the
training mean and standard deviation, and the model (classes: "background" + concepts) is fitted
in torch with L-BFGS (25 iterations) and an L2 penalty (0.1 on standardised features); the fold
models and the final one share every pass over the data (``fit_probes``).

Validation is by image: images are split into k groups (seeded), each fold's model is trained
without that fold's images and scores its positions; per concept the one-vs-rest AUROC of the
pooled out-of-fold scores is reported, with the drawings, images and positions behind it.
Concepts with fewer than ``min_drawings`` drawings or ``min_images`` images get ``auroc=None``
and the reason. Probe versions are stored in DuckDB (weights as safetensors bytes).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dashboard.data.store import ValidationError
from dashboard.engine.activations import compute_activations, compute_patch_activations
from dashboard.engine.dissection import mask_from_png
from dashboard.progress import Progress, report
from model_zoo.metrics import compute_aurocs

__all__ = ["ProbeVersion", "ProbeData", "ProbeConfig", "collect_probe_data", "fit_probe", "fit_probes",
           "train_probes", "load_probe", "image_folds", "compute_concept_maps", "compute_image_concept_maps",
           "auroc_one_vs_rest"]

BACKGROUND = "background"
#: The validation folds' tensors a probe version stores beside its own (absent in older versions).
_FOLD_TENSORS = ("fold_weight", "fold_bias", "fold_mean", "fold_std")


@dataclass(frozen=True)
class ProbeConfig:
    """How probes are trained (``train_probes``) and their feature vectors collected (``collect_probe_data``).

    folds         validation folds by image (fewer when there are fewer images; < 2: no validation)
    l2, max_iter  the L2 penalty on standardised features and the L-BFGS iterations (``fit_probes``)
    min_drawings, min_images  a concept's AUROC is reported only above these counts (else a reason)
    seed          background sampling and the fold assignment
    device        where the activations are computed (default: the model's device)
    cache_dir     the activation cache (``activations.compute_patch_activations``); None: no cache
    annotations   the drawings to use (default: the live drawings made under the card)
    save          store the probe as a new version
    actor         who trained it, for the audit log
    """

    folds: int = 5
    l2: float = 0.1
    max_iter: int = 25
    min_drawings: int = 3
    min_images: int = 2
    seed: int = 0
    device: str | torch.device | None = None
    cache_dir: Path | str | None = None
    annotations: list | None = None
    save: bool = True
    actor: str = "system"


@dataclass
class ProbeVersion:
    """A trained probe. classes = ["background", concept...]; weight (K+1, C) and bias (K+1,) act
    on standardised features (x - mean) / std, mean and std (C,)."""

    model_card: str
    layer: str
    classes: list[str]
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    metrics: dict[str, dict] = field(default_factory=dict)
    annotation_ids: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)
    version: int | None = None
    created_at: Any = None
    # the validation folds' models (F, K+1, C), (F, K+1), (F, C), (F, C); None: trained without
    # validation, or stored before they were kept (``suggestions`` reads their disagreement)
    fold_weight: np.ndarray | None = None
    fold_bias: np.ndarray | None = None
    fold_mean: np.ndarray | None = None
    fold_std: np.ndarray | None = None

    @property
    def concepts(self) -> list[str]:
        return self.classes[1:]

    @property
    def n_folds(self) -> int:
        return 0 if self.fold_weight is None else int(self.fold_weight.shape[0])

    def fold_logits(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, C) raw activations -> (F, N, K+1) logits of the validation folds' models."""
        if self.fold_weight is None:
            raise ValueError("this probe version has no validation folds")
        dev = features.device
        w, b, mu, sd = (torch.as_tensor(v, dtype=torch.float32, device=dev)
                        for v in (self.fold_weight, self.fold_bias, self.fold_mean, self.fold_std))
        z = (features.float()[None] - mu[:, None, :]) / sd[:, None, :]  # (F, N, C)
        return torch.einsum("fnc,fkc->fnk", z, w) + b[:, None, :]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, C) raw activations -> (N, K+1) logits."""
        w = torch.as_tensor(self.weight, dtype=torch.float32, device=features.device)
        b = torch.as_tensor(self.bias, dtype=torch.float32, device=features.device)
        mu = torch.as_tensor(self.mean, dtype=torch.float32, device=features.device)
        sd = torch.as_tensor(self.std, dtype=torch.float32, device=features.device)
        return ((features.float() - mu) / sd) @ w.T + b

    def directions(self) -> np.ndarray:
        """(K, C) concept-vs-background directions in raw activation space: (W_k - W_bg) / std."""
        return ((self.weight[1:] - self.weight[:1]) / self.std[None, :]).astype(np.float32)

    def to_bytes(self) -> bytes:
        names = ("weight", "bias", "mean", "std") + (_FOLD_TENSORS if self.fold_weight is not None else ())
        tensors = {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float32)) for k in names}
        return st_save(tensors, metadata={"classes": json.dumps(self.classes), "layer": self.layer,
                                          "model_card": self.model_card})


@dataclass
class ProbeData:
    """Feature vectors behind a probe. X (N, C) float32; y (N,) class index (0 = background);
    group (N,) image index; drawing (N,) annotation index (-1 for background); ``layer`` they come from."""

    X: torch.Tensor
    y: torch.Tensor
    group: torch.Tensor
    drawing: torch.Tensor
    classes: list[str]
    image_ids: list[str]
    annotation_ids: list[str]
    readers: list[str]
    annotation_concepts: list[str]
    feature_shape: tuple[int, int]
    layer: str = ""


def _cell_coverage(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Fraction of each feature cell covered by each mask: (M, S, S) bool -> (M, h, w) float32.

    Exact block means when the patch divides into the grid (the usual case), else area pooling."""
    m, hh, ww = masks.shape
    if hh % h == 0 and ww % w == 0:
        blocks = masks.view(m, h, hh // h, w, ww // w)
        return blocks.sum(dim=(2, 4), dtype=torch.int32).float() / float((hh // h) * (ww // w))
    return F.adaptive_avg_pool2d(masks.float()[:, None], (h, w))[:, 0]


def collect_probe_data(model, card, layer: str, annotations: list, load_patch: Callable,
                       config: ProbeConfig = ProbeConfig(), *, progress: Progress | None = None) -> ProbeData:
    """Feature vectors of drawn positions and sampled background (see module doc).

    annotations: store.Annotation rows (live drawings). load_patch(annotation) -> (S, S) grey
    patch in [0, 1] for the annotation's (image_id, patch_x0, patch_y0, patch_size).
    Uses ``config.cache_dir``, ``config.device`` and ``config.seed`` (background sampling).
    """
    if not annotations:
        raise ValidationError("No drawings to train concept probes on: draw some concepts first.")
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(annotations):
        groups.setdefault((a.image_id, a.patch_x0, a.patch_y0, a.patch_size), []).append(i)
    keys = list(groups)
    patches = [np.asarray(load_patch(annotations[groups[k][0]]), dtype=np.float32) for k in keys]
    report(progress, 0, len(keys), "activations of the drawn patches")
    acts = compute_patch_activations(model, card, layer, patches, cache_dir=config.cache_dir, device=config.device)
    concepts = sorted({a.concept for a in annotations})
    classes = [BACKGROUND] + concepts
    cidx = {c: i for i, c in enumerate(classes)}
    image_ids = sorted({k[0] for k in keys})
    gidx = {g: i for i, g in enumerate(image_ids)}
    rng = np.random.default_rng(config.seed)
    sel_patch, sel_pos, sel_y, sel_d = [], [], [], []
    h = w = None
    for pi, k in enumerate(keys):  # per patch (not per unit): masks -> cell coverage -> positions
        c, h, w = acts[pi].shape
        members = groups[k]
        masks = torch.from_numpy(np.stack([mask_from_png(annotations[i].mask_png) for i in members]))  # (M, S, S)
        if tuple(masks.shape[1:]) != patches[pi].shape:
            raise ValidationError(f"drawing mask {tuple(masks.shape[1:])} does not match its patch {patches[pi].shape}")
        frac = _cell_coverage(masks, h, w).reshape(len(members), -1).numpy()  # (M, h*w)
        pos = frac >= 0.5
        # a drawing smaller than half a cell still marks its best-covered cell
        tiny = ~pos.any(1) & (frac.max(1) > 0)
        pos[np.nonzero(tiny)[0], frac[tiny].argmax(1)] = True
        m_idx, p_idx = np.nonzero(pos)
        free = np.nonzero(frac.max(0) == 0)[0]
        n_bg = min(len(free), max(int(pos.sum()), 4))
        bg = rng.choice(free, size=n_bg, replace=False) if n_bg else np.zeros(0, np.int64)
        member_arr = np.asarray(members)
        sel_patch.append(np.full(len(p_idx) + n_bg, pi))
        sel_pos.append(np.concatenate([p_idx, bg]))
        sel_y.append(np.concatenate([[cidx[annotations[members[m]].concept] for m in m_idx], np.zeros(n_bg)]))
        sel_d.append(np.concatenate([member_arr[m_idx], np.full(n_bg, -1)]))
        report(progress, pi + 1, len(keys), "feature vectors of the drawings")
    patch_of = np.concatenate(sel_patch).astype(np.int64)
    pos_of = np.concatenate(sel_pos).astype(np.int64)
    # one gather per patch of only the chosen positions: (C, k) columns, transposed to rows
    X = torch.cat([acts[pi].reshape(acts[pi].shape[0], -1)[:, torch.from_numpy(pos_of[patch_of == pi])].T
                   for pi in range(len(keys))])  # (N, C), rows in patch order like patch_of
    group = torch.as_tensor(np.array([gidx[keys[pi][0]] for pi in range(len(keys))])[patch_of])
    return ProbeData(X=X.float().contiguous(), y=torch.as_tensor(np.concatenate(sel_y).astype(np.int64)),
                     group=group, drawing=torch.as_tensor(np.concatenate(sel_d).astype(np.int64)),
                     classes=classes, image_ids=image_ids, annotation_ids=[a.annotation_id for a in annotations],
                     readers=sorted({a.reader for a in annotations}),
                     annotation_concepts=[a.concept for a in annotations], feature_shape=(h, w), layer=layer)


def fit_probes(X: torch.Tensor, y: torch.Tensor, n_classes: int, train: torch.Tensor, *, l2: float = 0.1,
               max_iter: int = 25):
    """Several class-balanced multinomial logistic regressions at once (validation folds + final).

    X (N, C) raw features; y (N,) in [0, n_classes), or (F, N) when each model labels the samples
    its own way (TCAV's concept-vs-random CAVs); train (F, N) bool, the samples of each model.
    Each model f standardises with its own training mean/std and minimises
    ``sum_i w_fi CE(x_i) + l2/2 ||W_f||^2`` (w_f class-balanced over its training samples, summing
    to 1). All F models share every pass over X: one matmul X @ V^T (N, F*K) per evaluation, where
    V_f = W_f / std_f and the bias absorbs the mean, so the F problems cost about as much as one.
    Solved jointly by L-BFGS (the objective is a sum of independent convex parts), stopped after
    ``max_iter`` iterations: every model gets the same budget, so the folds validate exactly the
    procedure that makes the probe. On 200 drawings x 1280 units, 25 iterations land within ~5 %
    (relative weight norm) of the optimum with the same held-out AUROC (bench/bench_engine.py).
    Returns W (F, K, C) on standardised features, b (F, K), mean (F, C), std (F, C).
    """
    n, c = X.shape
    nf = train.shape[0]
    tw = train.float()  # (F, N)
    cnt = tw.sum(1, keepdim=True).clamp_min(1)  # (F, 1)
    mean = (tw @ X) / cnt  # (F, C)
    var = (tw @ (X * X)) / cnt - mean * mean
    std = (var * cnt / (cnt - 1).clamp_min(1)).clamp_min(0).sqrt().clamp_min(1e-6)  # (F, C)
    yf = y.expand(nf, n) if y.dim() == 1 else y  # (F, N)
    onehot = F.one_hot(yf, n_classes).float()  # (F, N, K)
    counts = torch.einsum("fn,fnk->fk", tw, onehot)  # (F, K) training samples per class and model
    present = (counts > 0).float()
    # a model with no training rows (empty fold) gets zero weights, not 0/0 = NaN, which would
    # poison the summed loss and with it every model of the joint fit
    cw = present * counts.sum(1, keepdim=True) / (counts.clamp_min(1) * present.sum(1, keepdim=True).clamp_min(1))  # (F, K)
    sw = tw * torch.einsum("fk,fnk->fn", cw, onehot)  # (F, N) class-balanced sample weights
    sw = sw / sw.sum(1, keepdim=True).clamp_min(1e-12)
    W = torch.zeros(nf, n_classes, c, requires_grad=True)
    b = torch.zeros(nf, n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=10, tolerance_grad=1e-6,
                            tolerance_change=1e-8, line_search_fn="strong_wolfe")
    inv = 1.0 / std  # (F, C)

    def closure():
        opt.zero_grad()
        V = W * inv[:, None, :]  # (F, K, C) raw-space weights
        bias = b - (V * mean[:, None, :]).sum(2)  # (F, K)
        logits = (X @ V.reshape(nf * n_classes, c).T).view(n, nf, n_classes) + bias[None]  # (N, F, K)
        nll = -(torch.log_softmax(logits, 2).transpose(0, 1) * onehot).sum(2)  # (F, N)
        loss = (nll * sw).sum() + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach(), mean, std


def fit_probe(X: torch.Tensor, y: torch.Tensor, n_classes: int, *, l2: float = 0.1, max_iter: int = 25):
    """One probe on all of X (see ``fit_probes``). Returns W (K, C), b (K,), mean (C,), std (C,)."""
    W, b, mean, std = fit_probes(X, y, n_classes, torch.ones(1, X.shape[0], dtype=torch.bool), l2=l2,
                                 max_iter=max_iter)
    return W[0], b[0], mean[0], std[0]


def auroc_one_vs_rest(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """AUROC of each class vs the rest, all classes at once (``model_zoo.metrics.compute_aurocs``).

    scores (N, K) probabilities, labels (N,) -> (K,) float64, NaN where a class has no positives
    or no negatives.
    """
    return compute_aurocs(np.asarray(labels)[:, None] == np.arange(n_classes), scores)  # (N, K) one-hot


def image_folds(group, n_images: int, k: int, seed: int) -> np.ndarray:
    """Validation fold (0..k-1) of every position, by image, so an image's positions stay together.

    group (N,) image index of each position (``ProbeData.group``) in 0..n_images-1. The images are
    dealt to the k folds round-robin in a seeded random order (fold sizes differ by one at most).
    Returns (N,) int64.
    """
    perm = np.random.default_rng(seed).permutation(n_images)
    fold = np.empty(n_images, dtype=np.int64)
    fold[perm] = np.arange(n_images) % k
    return fold[np.asarray(group)]


def _metrics(data: ProbeData, oof: np.ndarray | None, min_drawings: int, min_images: int, k: int) -> dict:
    y = data.y.numpy()
    draw = data.drawing.numpy()
    grp = data.group.numpy()
    auc = auroc_one_vs_rest(oof, y, len(data.classes)) if oof is not None else None
    out = {}
    for ci, concept in enumerate(data.classes[1:], start=1):
        sel = y == ci
        n_draw = int(sum(1 for c in data.annotation_concepts if c == concept))
        n_img = int(len(np.unique(grp[sel])))
        m = {"auroc": None, "n_drawings": n_draw, "n_images": n_img, "n_positions": int(sel.sum()),
             "n_drawings_used": int(len(np.unique(draw[sel]))), "folds": k, "reason": None}
        if n_draw < min_drawings:
            m["reason"] = f"only {n_draw} drawing(s); at least {min_drawings} are needed for a validated score"
        elif n_img < min_images:
            m["reason"] = f"drawings on {n_img} image(s); at least {min_images} are needed for validation by image"
        elif auc is None or not np.isfinite(auc[ci]):
            m["reason"] = "not enough held-out positions of other classes to score"
        else:
            m["auroc"] = float(auc[ci])
        out[concept] = m
    return out


def train_probes(store, model, card, layer: str | None = None, *, load_patch: Callable,
                 config: ProbeConfig = ProbeConfig(), progress: Progress | None = None) -> ProbeVersion:
    """Train (and store) a new probe version on the live drawings made under this model card.

    layer: default the card's ``default_layer``. load_patch(annotation) -> (S, S) grey patch in [0, 1].
    Returns the ProbeVersion with its store version number (``config.save``).
    """
    layer = layer or card.default_layer
    annotations = config.annotations
    if annotations is None:
        annotations = store.list_annotations(model_card=card.name)
    data = collect_probe_data(model, card, layer, annotations, load_patch, config, progress=progress)
    n_cls = len(data.classes)
    k = min(config.folds, len(data.image_ids))
    # models 0..k-1 leave one image fold out each; model k (the probe) sees every drawing
    fold = torch.zeros(len(data.y), dtype=torch.int64)
    if k >= 2:
        fold = torch.from_numpy(image_folds(data.group.numpy(), len(data.image_ids), k, config.seed))  # (N,)
        train = torch.stack([fold != f for f in range(k)] + [torch.ones_like(fold, dtype=torch.bool)])
    else:
        train = torch.ones(1, len(data.y), dtype=torch.bool)
    report(progress, 0, 1, f"training the probe and {k if k >= 2 else 0} validation folds")
    Ws, bs, mus, sds = fit_probes(data.X, data.y, n_cls, train, l2=config.l2, max_iter=config.max_iter)
    oof = None
    if k >= 2:
        with torch.no_grad():
            oof_t = torch.zeros(len(data.y), n_cls, dtype=torch.float64)
            for f in range(k):  # k folds, not units: a handful of small matmuls
                test = fold == f
                oof_t[test] = torch.softmax(((data.X[test] - mus[f]) / sds[f]) @ Ws[f].T + bs[f], 1).double()
        oof = oof_t.numpy()
    W, b, mu, sd = Ws[-1], bs[-1], mus[-1], sds[-1]
    report(progress, 1, 1, "probe trained")
    folds = {}
    if k >= 2:  # kept with the version: where they disagree is where a drawing would teach most
        folds = dict(zip(_FOLD_TENSORS, (Ws[:-1].numpy(), bs[:-1].numpy(), mus[:-1].numpy(), sds[:-1].numpy())))
    probe = ProbeVersion(model_card=card.name, layer=layer, classes=data.classes, weight=W.numpy(), bias=b.numpy(),
                         mean=mu.numpy(), std=sd.numpy(), **folds,
                         metrics=_metrics(data, oof, config.min_drawings, config.min_images, k),
                         annotation_ids=data.annotation_ids, readers=data.readers,
                         created_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    if config.save:
        probe.version = store.save_probe(model_card=probe.model_card, layer=layer, concepts=probe.concepts,
                                         weights=probe.to_bytes(), metrics=probe.metrics,
                                         annotation_ids=probe.annotation_ids, readers=probe.readers,
                                         actor=config.actor)
    return probe


def load_probe(store, version: int | None = None, *, model_card: str | None = None,
               layer: str | None = None) -> ProbeVersion:
    """A stored probe version (the latest, optionally for a model card and layer)."""
    row = store.get_probe(version, model_card=model_card, layer=layer)
    t = st_load(row["weights"])
    classes = [BACKGROUND] + list(row["concepts"])
    return ProbeVersion(model_card=row["model_card"], layer=row["layer"], classes=classes,
                        weight=t["weight"].numpy(), bias=t["bias"].numpy(), mean=t["mean"].numpy(),
                        std=t["std"].numpy(), metrics=row["metrics"], annotation_ids=row["annotation_ids"],
                        readers=row["readers"], version=int(row["version"]), created_at=row["created_at"],
                        **{k: t[k].numpy() for k in _FOLD_TENSORS if k in t})


def _probabilities(probe: ProbeVersion, activation) -> torch.Tensor:
    a = torch.as_tensor(activation).float()
    if a.dim() == 4:
        a = a[0]
    c, h, w = a.shape  # (C, h, w)
    if c != probe.weight.shape[1]:
        raise ValueError(f"probe expects {probe.weight.shape[1]} units at {probe.layer!r}, got {c}")
    with torch.no_grad():
        p = torch.softmax(probe.logits(a.reshape(c, -1).T), dim=1)  # (h*w, K+1)
    return p.T.reshape(-1, h, w)  # (K+1, h, w)


def compute_concept_maps(probe: ProbeVersion, activation, size, *, include_background: bool = False) -> np.ndarray:
    """Probability map of every concept at patch (or image) resolution.

    activation (C, h, w) at ``probe.layer``; size S or (H, W). Returns (K, H, W) float32 in
    probe.concepts order (with ``include_background`` (K+1, H, W), background first). Probabilities
    are upsampled bilinearly (align_corners=False), which keeps them summing to 1 per pixel.
    """
    hw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    p = _probabilities(probe, activation)  # (K+1, h, w)
    up = F.interpolate(p[None], size=hw, mode="bilinear", align_corners=False)[0]  # (K+1, H, W)
    return (up if include_background else up[1:]).numpy().astype(np.float32)


def compute_image_concept_maps(probe: ProbeVersion, model, card, image: np.ndarray, *, device=None,
                               include_background: bool = False) -> np.ndarray:
    """Concept maps over a whole mammogram by running the network fully convolutionally.

    image (H, W) grey in [0, 1] (model space). The layer's feature map of the whole image
    (C, H', W') feeds the probe at every position; maps are upsampled to (H, W).
    """
    img = np.asarray(image, dtype=np.float32)
    x = torch.as_tensor(np.asarray(card.preprocess(img[None])), dtype=torch.float32)  # (1, 3, H, W)
    feats = compute_activations(model, [probe.layer], x, device=device, out_device="cpu")[probe.layer][0]
    return compute_concept_maps(probe, feats, img.shape, include_background=include_background)

"""Run the classifier: patch probabilities, the whole-mammogram lesion map, and which class to explain
(``target_class``; layer activations are ``dashboard.engine.activations``').

Everything here works in model space (see ARCHITECTURE.md): grey images float in [0, 1]
at the card's pixel spacing, chest wall on the left. A patch is ``(x0, y0, size)`` in
model pixels and may reach outside the image (zero padded, like ``imaging.crop_patch``).

The model is the shared cached one: every call holds ``lock_for(model)`` and runs inside
``model_state_guard(model)`` (eval mode, no parameter gradients, state restored after).
Inputs go to the model's own device unless ``device`` says otherwise; the model is never
moved here (it belongs to the cache).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import maximum_filter
from torch import nn
from torchvision.ops import nms

from dashboard.engine.model_state import lock_for, model_device, model_state_guard
from dashboard.imaging import crop_patch

__all__ = [
    "LesionMap",
    "LesionMapConfig",
    "target_class",
    "feature_stride",
    "is_pool_linear",
    "predict_patches",
    "compute_lesion_map",
]


# --------------------------------------------------------------------------- card helpers
def target_class(card: Any, target: int | str | None = None) -> tuple[int, str]:
    """(index, name) of the class to explain: ``target`` as an index or a class name, default the
    card's positive class (``card.positive_index``, which raises CardError for a card without one)."""
    classes = [str(c) for c in card.classes]
    if target is None:
        target = card.positive_index
    if isinstance(target, str):
        if target not in classes:
            raise ValueError(f"unknown class {target!r}; the card has {classes}")
        return classes.index(target), target
    t = int(target)
    if not 0 <= t < len(classes):
        raise ValueError(f"class index {t} is outside the card's {len(classes)} classes")
    return t, classes[t]


def preprocess(card: Any, gray: torch.Tensor) -> torch.Tensor:
    """``card.preprocess`` on a torch tensor, result float32 on ``gray``'s device.

    gray: (N, H, W) float in [0, 1]  ->  (N, 3, H, W) normalised as the card says.
    """
    x = card.preprocess(gray)
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    return x.to(device=gray.device, dtype=torch.float32)


# --------------------------------------------------------------------------- patches
def predict_patches(
    model: nn.Module,
    card: Any,
    patches: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class probabilities (softmax) of grey patches.

    patches: (N, S, S) float in [0, 1], model space.  Returns (N, n_classes) float32.
    Batched by ``batch_size`` under ``torch.inference_mode``.
    """
    device = model_device(model, device)
    x = torch.as_tensor(np.asarray(patches, dtype=np.float32) if not isinstance(patches, torch.Tensor) else patches)
    if x.ndim != 3:
        raise ValueError(f"patches must be (N, S, S), got {tuple(x.shape)}")
    n_classes = len(card.classes)
    if len(x) == 0:
        return np.zeros((0, n_classes), np.float32)
    out = []
    with lock_for(model), model_state_guard(model), torch.inference_mode():
        for start in range(0, len(x), batch_size):
            gray = x[start : start + batch_size].to(device=device, dtype=torch.float32)  # (B, S, S)
            logits = model(preprocess(card, gray))  # (B, n_classes)
            out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy().astype(np.float32)  # (N, n_classes)


# --------------------------------------------------------------------------- lesion map
@dataclass(frozen=True)
class LesionMap:
    """Lesion probability over a whole model-space image.

    prob         (H, W) float32 in [0, 1]: positive-class probability of the patch centred
                 at each pixel (interpolated between evaluated positions); 0 outside the breast
    top_patches  up to top_k ``(x0, y0, size, prob)`` in model pixels, most suspicious first:
                 local maxima of the map after non-maximum suppression, centres in the breast
                 (fcn with ``refine``: prob is the exact patch probability)
    score        image-level score: the highest patch probability whose centre is in the breast
                 (fcn with ``refine``: the highest exact probability among the candidates)
    method       "fcn" or "tiles" (what actually ran)
    grid_prob    (rows, cols) probabilities at the evaluated positions
    grid_xy      (rows, cols, 2) int model-pixel (x, y) of each evaluated patch's top-left corner
    """

    prob: np.ndarray
    top_patches: list[tuple[int, int, int, float]]
    score: float
    method: str
    grid_prob: np.ndarray = field(repr=False)
    grid_xy: np.ndarray = field(repr=False)


def feature_stride(model: nn.Module, size: int) -> int:
    """Total downsampling (input pixels per feature cell) of ``model.forward_features``.

    From timm's ``feature_info`` when present, else measured with one forward pass.
    """
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1]
        reduction = last.get("reduction") if isinstance(last, dict) else None
        if reduction:
            return int(reduction)
    with lock_for(model), model_state_guard(model), torch.inference_mode():
        x = torch.zeros(1, 3, size, size, device=model_device(model))
        h = model.forward_features(x).shape[-1]
    return max(1, int(round(size / h)))


def is_pool_linear(model: nn.Module) -> bool:
    """True when ``forward_head`` is global average pooling followed by one Linear layer.

    Then a 1x1 convolution with the classifier weights, averaged over a window, gives each
    window's logits exactly (both steps are linear). Checked numerically on random
    features, so heads with a norm or an MLP after pooling are caught.
    """
    head = getattr(model, "forward_head", None)
    get_classifier = getattr(model, "get_classifier", None)
    if head is None or get_classifier is None:
        return False
    classifier = get_classifier()
    if not isinstance(classifier, nn.Linear):
        return False
    device = model_device(model)
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(2, classifier.in_features, 3, 2, generator=gen).to(device)  # (2, C, 3, 2)
    with lock_for(model), model_state_guard(model), torch.inference_mode():
        try:
            ref = model.forward_head(feat)  # (2, K)
        except Exception:  # noqa: BLE001 - any failure means "not this kind of head"
            return False
        lin = F.linear(feat.mean(dim=(2, 3)), classifier.weight, classifier.bias)
    return ref.shape == lin.shape and bool(torch.allclose(ref, lin, rtol=1e-4, atol=1e-4))


def _fcn_grid(model: nn.Module, card: Any, img: torch.Tensor, size: int) -> tuple[torch.Tensor, int, int]:
    """One fully convolutional pass: positive-class probability of the size-S patch centred
    at every feature-stride step.

    img: (H, W) float in [0, 1] on the model's device.
    Returns (grid (rows, cols) float32, stride st, offset) where grid[i, j] belongs to the
    patch with top-left corner (j*st - offset, i*st - offset), centre (j*st, i*st) + S/2 - offset.
    """
    h, w = img.shape
    st = feature_stride(model, size)
    win = max(1, int(round(size / st)))
    if win * st != size:
        warnings.warn(f"patch size {size} is not a multiple of the feature stride {st}; "
                      f"FCN window of {win} cells covers {win * st} px", stacklevel=3)
    off = size // 2
    # padded so that the grid of patch centres reaches every image row/column
    hp = st * (int(np.ceil((h - 1) / st)) + win)
    wp = st * (int(np.ceil((w - 1) / st)) + win)
    padded = F.pad(img, (off, wp - w - off, off, hp - h - off))  # (Hp, Wp); zero = outside, as crop_patch
    x = preprocess(card, padded[None])  # (1, 3, Hp, Wp)
    feat = model.forward_features(x)  # (1, C, hf, wf)
    clf = model.get_classifier()
    logit_map = F.conv2d(feat, clf.weight[:, :, None, None], clf.bias)  # (1, K, hf, wf)
    logit_map = F.avg_pool2d(logit_map, kernel_size=win, stride=1)  # (1, K, rows, cols)
    prob = torch.softmax(logit_map.float(), dim=1)[0, card.positive_index]  # (rows, cols)
    return prob, st, off


def _grid_to_image(grid: torch.Tensor, centre0: float, step: int, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a regular grid of values at pixel centres
    ``centre0 + k*step`` to every pixel of ``shape`` (edges held constant).

    grid: (rows, cols) -> (H, W) float32.
    """
    h, w = shape
    ys = (torch.arange(h, device=grid.device, dtype=torch.float32) - centre0) / step
    xs = (torch.arange(w, device=grid.device, dtype=torch.float32) - centre0) / step
    rows, cols = grid.shape
    # normalised sampling coordinates for grid_sample (align_corners=True: -1 = first cell centre)
    gy = 2 * ys / max(rows - 1, 1) - 1
    gx = 2 * xs / max(cols - 1, 1) - 1
    sample = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]  # (1, H, W, 2)
    out = F.grid_sample(grid[None, None].float(), sample, mode="bilinear",
                        padding_mode="border", align_corners=True)  # (1, 1, H, W)
    return out[0, 0]


def _tiles_grid(
    model: nn.Module, card: Any, img: torch.Tensor, mask: torch.Tensor, size: int, stride: int,
    min_fraction: float, batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overlapping size-S tiles with top-left corners on a ``stride`` grid from (0, 0).

    Tiles whose breast fraction is below ``min_fraction`` are not run (probability 0, not kept).
    Returns (probs (rows, cols), keep (rows, cols) bool, padded shape as a tensor (2,)).
    """
    h, w = img.shape
    rows = max(1, int(np.ceil((h - size) / stride)) + 1)
    cols = max(1, int(np.ceil((w - size) / stride)) + 1)
    hp, wp = (rows - 1) * stride + size, (cols - 1) * stride + size
    img_p = F.pad(img, (0, wp - w, 0, hp - h))[None, None]  # (1, 1, Hp, Wp)
    mask_p = F.pad(mask.float(), (0, wp - w, 0, hp - h))[None, None]
    frac = F.avg_pool2d(mask_p, kernel_size=size, stride=stride)[0, 0]  # (rows, cols)
    keep = frac >= min_fraction
    probs = torch.zeros(rows, cols, device=img.device)
    idx = keep.flatten().nonzero()[:, 0]
    for start in range(0, len(idx), batch_size):
        sel = idx[start : start + batch_size]
        r, c = sel // cols, sel % cols
        # gather the tiles of this batch without unfolding the whole image
        oy = (r * stride)[:, None] + torch.arange(size, device=img.device)[None]  # (B, S)
        ox = (c * stride)[:, None] + torch.arange(size, device=img.device)[None]  # (B, S)
        tiles = img_p[0, 0][oy[:, :, None], ox[:, None, :]]  # (B, S, S)
        logits = model(preprocess(card, tiles))  # (B, K)
        probs.view(-1)[sel] = torch.softmax(logits.float(), dim=1)[:, card.positive_index]
    return probs, keep, torch.tensor([hp, wp])


def _top_patches(
    grid: np.ndarray, x0: np.ndarray, y0: np.ndarray, valid: np.ndarray, size: int, top_k: int,
    iou_threshold: float = 0.25,
) -> list[tuple[int, int, int, float]]:
    """Local maxima of the grid (3x3 neighbourhood) among ``valid`` positions, greedy
    non-maximum suppression by box IoU, best ``top_k`` as (x0, y0, size, prob)."""
    masked = np.where(valid, grid, -np.inf)
    peaks = valid & (masked >= maximum_filter(masked, size=3, mode="constant", cval=-np.inf))
    if not peaks.any() or top_k <= 0:
        return []
    px, py, pp = x0[peaks], y0[peaks], grid[peaks]
    boxes = torch.as_tensor(np.stack([px, py, px + size, py + size], axis=1), dtype=torch.float32)  # (K, 4)
    keep = nms(boxes, torch.as_tensor(pp, dtype=torch.float32), iou_threshold)[:top_k].numpy()
    return [(int(px[i]), int(py[i]), int(size), float(pp[i])) for i in keep]


@dataclass(frozen=True)
class LesionMapConfig:
    """How ``compute_lesion_map`` scans an image.

    method        "fcn": one fully convolutional pass over the zero-padded image:
                  ``forward_features``, the classifier as a 1x1 convolution, averaged over a window of
                  S/stride cells, so each position gets what the S-pixel patch centred there would get
                  (up to padding effects); evaluated every feature stride (32 px for most backbones)
                  and bilinearly interpolated. Needs a pool-linear head (``card.head`` and a numeric
                  check of ``forward_head``); otherwise "tiles" runs (with a warning) and
                  ``LesionMap.method`` says so.
                  "tiles": overlapping S-pixel tiles every ``stride`` px (default S/2) from (0, 0),
                  batched by ``batch_size``; tiles under ``min_fraction`` breast are skipped; each pixel
                  gets the mean probability of the kept tiles covering it.
    stride        tiles only, in model px (FCN steps by the backbone's feature stride in its one pass)
    top_k         how many suspicious patches to return
    refine        fcn only: the best ``refine`` FCN candidates (local maxima after NMS) are re-scored
                  by exact patch passes; top patches and the score are then those exact
                  probabilities (0: pure FCN figures). The map itself stays the FCN map.
    min_fraction  tiles only: least breast fraction of a tile that is run
    batch_size    patches per forward pass (tiles, refinement)
    device        where the model is (default: the model's own device; the model is never moved)
    """

    method: str = "fcn"
    stride: int | None = None
    top_k: int = 5
    refine: int = 8
    min_fraction: float = 0.1
    batch_size: int = 32
    device: str | torch.device | None = None


def compute_lesion_map(model: nn.Module, card: Any, img: np.ndarray, mask: np.ndarray | None = None,
                       config: LesionMapConfig = LesionMapConfig()) -> LesionMap:
    """Lesion probability map of a whole mammogram in model space (see ``LesionMapConfig``).

    img   (H, W) float in [0, 1], model space (card pixel spacing)
    mask  (H, W) bool breast mask (None: everything)
    """
    method = config.method
    if method not in ("fcn", "tiles"):
        raise ValueError(f"unknown lesion-map method {method!r}")
    img_np = np.asarray(img, dtype=np.float32)
    if img_np.ndim != 2:
        raise ValueError(f"img must be (H, W), got {img_np.shape}")
    mask_np = np.ones(img_np.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask_np.shape != img_np.shape:
        raise ValueError(f"mask {mask_np.shape} does not match image {img_np.shape}")
    size = card.patch_size
    if method == "fcn" and (getattr(card, "head", "pool-linear") not in (None, "pool-linear")
                            or not is_pool_linear(model)):
        warnings.warn("classifier head is not pool-linear; lesion map falls back to tiles", stacklevel=2)
        method = "tiles"
    device = model_device(model, config.device)
    img_t = torch.from_numpy(img_np).to(device)  # (H, W)
    mask_t = torch.from_numpy(mask_np).to(device)  # (H, W)
    with lock_for(model), model_state_guard(model), torch.inference_mode():
        if method == "fcn":
            prob, grid, x0, y0, keep = _fcn_map(model, card, img_t, size)
        else:
            stride = int(config.stride or max(1, size // 2))
            prob, grid, x0, y0, keep = _tiles_map(model, card, img_t, mask_t, size, stride, config)
        prob = (prob * mask_t).float().cpu().numpy()  # (H, W)
        grid_np = grid.float().cpu().numpy()  # (rows, cols)
    gx0, gy0 = np.meshgrid(x0, y0)  # (rows, cols) each
    h, w = img_np.shape
    cx = np.clip(gx0 + size // 2, 0, w - 1)
    cy = np.clip(gy0 + size // 2, 0, h - 1)
    inside = (gx0 + size // 2 < w) & (gy0 + size // 2 < h) & mask_np[cy, cx]
    if keep is not None:
        inside &= keep
    score = float(grid_np[inside].max()) if inside.any() else 0.0
    refine = max(int(config.refine), 0) if method == "fcn" else 0
    top = _top_patches(grid_np, gx0, gy0, inside, size, max(config.top_k, refine))
    if refine and top:
        top, score = _refine_top(model, card, img_np, top, size, config, device)
    return LesionMap(
        prob=prob.astype(np.float32),
        top_patches=top[:config.top_k],
        score=score,
        method=method,
        grid_prob=grid_np,
        grid_xy=np.stack([gx0, gy0], axis=-1).astype(np.int64),
    )


def _fcn_map(model: nn.Module, card: Any, img: torch.Tensor, size: int):
    """The FCN pass: (prob (H, W), grid (rows, cols), x0 (cols,), y0 (rows,), None): patch top-left
    corners of the grid positions in model px; every position was evaluated."""
    h, w = img.shape
    grid, st, _ = _fcn_grid(model, card, img, size)
    rows, cols = grid.shape
    centres_y = torch.arange(rows, device=img.device) * st  # patch centre pixels
    centres_x = torch.arange(cols, device=img.device) * st
    prob = _grid_to_image(grid, 0.0, st, (h, w))
    x0 = (centres_x - size // 2).cpu().numpy()
    y0 = (centres_y - size // 2).cpu().numpy()
    return prob, grid, x0, y0, None


def _tiles_map(model: nn.Module, card: Any, img: torch.Tensor, mask: torch.Tensor, size: int, stride: int,
               config: LesionMapConfig):
    """The tiled pass: (prob (H, W), grid (rows, cols), x0 (cols,), y0 (rows,), keep (rows, cols) bool):
    each pixel's probability is the mean over the kept tiles that cover it."""
    h, w = img.shape
    grid, keep, (hp, wp) = _tiles_grid(model, card, img, mask, size, stride, config.min_fraction,
                                       config.batch_size)
    rows, cols = grid.shape
    # mean over covering tiles: fold sums each tile's constant value over its footprint
    values = (grid * keep).flatten()[None, None].expand(1, size * size, -1)  # (1, S*S, L)
    weights = keep.float().flatten()[None, None].expand(1, size * size, -1)
    num = F.fold(values.contiguous(), (int(hp), int(wp)), size, stride=stride)[0, 0, :h, :w]
    den = F.fold(weights.contiguous(), (int(hp), int(wp)), size, stride=stride)[0, 0, :h, :w]
    prob = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    x0 = (torch.arange(cols) * stride).numpy()
    y0 = (torch.arange(rows) * stride).numpy()
    return prob, grid, x0, y0, keep.cpu().numpy()


def _refine_top(model: nn.Module, card: Any, img: np.ndarray, top: list, size: int, config: LesionMapConfig,
                device: torch.device) -> tuple[list[tuple[int, int, int, float]], float]:
    """Exact patch passes on the FCN's candidates: (candidates re-ranked by exact probability, best).

    FCN proposes, the classifier confirms: window-averaged features lack the patch-border context
    the model was trained with."""
    crops = np.stack([crop_patch(img, x0_, y0_, size) for x0_, y0_, _, _ in top])  # (K, S, S)
    exact = predict_patches(model, card, crops, batch_size=config.batch_size, device=device)[:, card.positive_index]
    order = np.argsort(-exact, kind="stable")
    return [(top[i][0], top[i][1], size, float(exact[i])) for i in order], float(exact[order[0]])

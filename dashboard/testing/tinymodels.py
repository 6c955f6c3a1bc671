"""Tiny real timm models and real model cards with test defaults for the engine's tests.

``TinyCard`` is a ``model_zoo.ModelCard`` (so ``positive_index``, ``patch_size`` and
``preprocess`` are the product's own) whose fields default to a 64-px two-class resnet10t;
``input_size`` may be given as the patch side alone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import timm
import torch
from scipy.ndimage import gaussian_filter

from model_zoo import ModelCard, create_model, load_card


@dataclass(frozen=True)
class TinyCard(ModelCard):
    name: str = "tiny-resnet10t"
    arch: str = "resnet10t"
    classes: tuple[str, ...] = ("normal", "lesion")
    pixel_spacing_mm: float = 0.2
    concept_layers: tuple[str, ...] = ("layer3", "layer4")
    default_layer: str = "layer4"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    input_size: tuple[int, int, int] | int = 64
    positive_class: str | None = "lesion"

    def __post_init__(self):
        if isinstance(self.input_size, (int, np.integer)):  # the patch side alone: (3, S, S)
            object.__setattr__(self, "input_size", (3, int(self.input_size), int(self.input_size)))


def make_model(arch: str = "resnet10t", seed: int = 0) -> torch.nn.Module:
    """A seeded randomly initialised 2-class timm model in eval mode."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=2, pretrained=False)
    return model.eval()


def blob(shape: tuple[int, int], cy: float, cx: float, sigma: float, amp: float = 0.7) -> np.ndarray:
    """A Gaussian bright spot (H, W) float32."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))).astype(np.float32)


def background(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth tissue-like texture (H, W) float32 around 0.3."""
    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.standard_normal(shape), 3.0)
    return (0.3 + 0.3 * tex / (np.abs(tex).max() + 1e-9)).astype(np.float32).clip(0, 1)


def fit_blob_head(model: torch.nn.Module, card: TinyCard, n: int = 96, seed: int = 1, l2: float = 1e-3) -> torch.nn.Module:
    """Turn a random backbone into a bright-blob detector by fitting only its linear head.

    Positives: patches of synthetic breasts centred (+-S/8) on a planted blob. Negatives:
    patches at random places of blob-free synthetic breasts (tissue, skin line, air).
    The head is an L2-penalised logistic regression on the pooled features (L-BFGS,
    backbone frozen); a weak penalty lets the head lean on patch-border features that a
    fully convolutional pass does not reproduce.
    """
    s = card.patch_size
    rng = np.random.default_rng(seed)
    shape = (3 * s, 4 * s)
    pos, neg = [], []
    for _k in range(n // 4):
        clean, mask = breast_image(shape, blob_at=None, seed=int(rng.integers(1 << 30)))
        padded = np.pad(clean, s)
        for _ in range(4):
            y, x = rng.integers(-s // 2, shape[0] - s // 2), rng.integers(-s // 2, shape[1] - s // 2)
            neg.append(padded[y + s : y + 2 * s, x + s : x + 2 * s])
            ys, xs = np.nonzero(mask[s // 2 : -s // 2, s // 2 : -s // 2])
            i = rng.integers(len(ys))
            cy, cx = ys[i] + s // 2, xs[i] + s // 2
            spot = np.clip(clean + blob(shape, cy, cx, rng.uniform(4, 8)) * mask, 0, 1)
            jy, jx = rng.integers(-s // 8, s // 8 + 1, size=2)
            y0, x0 = cy - s // 2 + jy, cx - s // 2 + jx
            pos.append(np.pad(spot, s)[y0 + s : y0 + 2 * s, x0 + s : x0 + 2 * s])
    x = torch.from_numpy(np.stack(neg + pos).astype(np.float32))  # (2n, S, S)
    y = torch.cat([torch.zeros(len(neg)), torch.ones(len(pos))]).long()
    with torch.no_grad():
        feats = model.forward_features(card.preprocess(x)).mean((2, 3))  # (2n, C)
    fc = model.get_classifier()
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(fc.weight.shape, generator=gen) * 1e-3).requires_grad_(True)
    bias = torch.zeros(fc.bias.shape, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(feats @ weight.T + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
    return model


def breast_image(shape=(192, 256), blob_at=(100, 150), seed: int = 3, sigma: float = 6.5):
    """A model-space synthetic mammogram: half-ellipse breast on the left, planted blob
    (none when ``blob_at`` is None).

    Returns (img (H, W) float32 in [0, 1], mask (H, W) bool).
    """
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - h / 2) / (h * 0.48)) ** 2 + (xx / (w * 0.9)) ** 2 <= 1.0
    img = background(shape, seed) * mask
    if blob_at is not None:
        img = np.clip(img + blob(shape, blob_at[0], blob_at[1], sigma) * mask, 0, 1)
    return img.astype(np.float32), mask


@lru_cache(maxsize=4)
def blob_detector(arch: str = "resnet10t", size: int = 64, seed: int = 0) -> torch.nn.Module:
    """A cached ``fit_blob_head`` model shared by the test files of one pytest run.

    Tests must leave it as they found it (which is what they check anyway).
    """
    card = TinyCard(input_size=size)
    return fit_blob_head(make_model(arch, seed=seed), card)


@lru_cache(maxsize=1)
def demo_card_detector(size: int = 64):
    """The real ``demo-lite0-synth`` ModelCard (input size shrunk to ``size``) and its
    efficientnet_lite0 built by ``model_zoo.create_model`` without weights, head fitted to blobs.

    Returns (card, model); shared by the test files of one pytest run.
    """
    card = dataclasses.replace(load_card("demo-lite0-synth"), input_size=(3, size, size))
    torch.manual_seed(0)
    return card, fit_blob_head(create_model(card, weights=False), card)

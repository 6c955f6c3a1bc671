"""Helpers for the concept-engine tests: a 128-px efficientnet_lite0 card, tiny seeded timm models,
synthetic patches and store rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dashboard.data.store import ImageRecord
from dashboard.testing import tinymodels


@dataclass(frozen=True)
class TinyCard(tinymodels.TinyCard):
    """``tinymodels.TinyCard`` with the engine tests' defaults: efficientnet_lite0, 128 px."""

    name: str = "test-lite0"
    arch: str = "efficientnet_lite0"
    classes: tuple[str, ...] = ("benign", "malignant")
    positive_class: str | None = "malignant"
    input_size: tuple[int, int, int] | int = 128
    concept_layers: tuple[str, ...] = ("blocks.5", "bn2")
    default_layer: str = "bn2"


def tiny_model(arch: str = "efficientnet_lite0", seed: int = 0) -> torch.nn.Module:
    """A seeded randomly initialised 2-class timm model in eval mode (``tinymodels.make_model``)."""
    return tinymodels.make_model(arch, seed)


def synthetic_patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Grey patches in [0, 1] with a few bright blobs and texture: (n, size, size) float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        img = 0.25 + 0.05 * rng.standard_normal((size, size)).astype(np.float32)
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            r = rng.uniform(0.05, 0.2) * size
            img += 0.5 * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
        out[i] = np.clip(img, 0, 1)
    return out


def blob_mask(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def add_image(store, image_id: str = "img1", case_id: str = "case1") -> str:
    store.save_case(case_id, "synthetic")
    store.save_image(ImageRecord(image_id, case_id, f"tmp/{image_id}.png", f"sha-{image_id}", rows=512, cols=512))
    return image_id

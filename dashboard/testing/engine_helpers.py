"""Helpers for the concept-engine tests: a card-like object and tiny seeded timm models.

The real ModelCard comes from model_zoo (branch `model`); these tests only need its fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import timm
import torch


@dataclass
class TinyCard:
    name: str = "test-lite0"
    arch: str = "efficientnet_lite0"
    classes: tuple = ("benign", "malignant")
    positive_class: str = "malignant"
    input_size: int = 128
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    pixel_spacing_mm: float = 0.2
    concept_layers: tuple = ("blocks.5", "bn2")
    default_layer: str = "bn2"
    head: str = "pool-linear"
    weights_sha256: str = ""
    extra: dict = field(default_factory=dict)

    def preprocess(self, gray):
        g = torch.as_tensor(np.asarray(gray, dtype=np.float32))
        if g.dim() == 2:
            g = g[None]
        x = g[:, None].expand(-1, 3, -1, -1)  # (N, 3, H, W)
        mean = torch.tensor(self.mean, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[None, :, None, None]
        return (x - mean) / std


def tiny_model(arch: str = "efficientnet_lite0", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=2, pretrained=False)
    return model.eval()


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
    store.save_image(image_id, case_id, f"/tmp/{image_id}.png", f"sha-{image_id}", rows=512, cols=512)
    return image_id

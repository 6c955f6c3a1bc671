"""Small real data directories for the page tests: a DuckDB store in tmp_path with cases, images
written to disk (DICOM by pydicom through imaging.write_dicom, and a PNG), and a tiny seeded timm
model behind a real model card in the user cards folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

import model_zoo
from dashboard import imaging
from dashboard.data.store import ImageRecord, Store
from dashboard.settings import Settings

TINY_CARD = "tiny-test"
SHAPE = (256, 200)  # rows, cols of every test image (0.2 mm pixels)

CASES = [
    # case_id, source, label, description, [(laterality, view)]
    ("SYN-0001", "synthetic", "malignant", "irregular spiculated mass, left upper outer",
     [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]),
    ("SYN-0002", "synthetic", "normal", "scattered fibroglandular", [("R", "CC"), ("L", "CC")]),
    ("MIAS-mdb001", "mini-mias", "benign", "circumscribed mass", [("L", "MLO")]),
]


def breast_pixels(seed: int, laterality: str, shape=SHAPE, blob: tuple[int, int] | None = None) -> np.ndarray:
    """A grey breast-like half-ellipse, chest wall on the laterality's hanging side, 12-bit values."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cx = 0 if laterality == "L" else w - 1
    r = np.sqrt(((xx - cx) / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2)
    img = np.where(r < 1, 1800 + 1200 * (1 - r), 80) + rng.normal(0, 40, shape)
    if blob is not None:
        by, bx = blob
        img += 1500 * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * 6.0 ** 2))
    return np.clip(img, 0, 4095).astype(np.uint16)


def populate(settings: Settings, store: Store) -> list[str]:
    """Write the cases above under data_dir/images and into the store. Returns the image ids."""
    img_dir = settings.data_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    ids = []
    for k, (case_id, source, label, desc, views) in enumerate(CASES):
        store.save_case(case_id, source, split="test", label=label, description=desc)
        for j, (lat, view) in enumerate(views):
            image_id = f"{case_id}-{lat}{view}"
            blob = (110, 60) if image_id == "SYN-0001-LCC" else None
            px = breast_pixels(100 * k + j, lat, blob=blob)
            if source == "synthetic":
                path = imaging.write_dicom(img_dir / f"{image_id}.dcm", px, imaging.DicomHeader(
                    laterality=lat, view=view, pixel_spacing_mm=0.2, window_centers=[2000, 2400],
                    window_widths=[3000, 1200], window_explanations=["STANDARD", "DENSE"]))
            else:
                path = img_dir / f"{image_id}.png"
                Image.fromarray((px >> 4).astype(np.uint8)).save(path)
            store.save_image(ImageRecord(image_id, case_id, str(path), imaging.file_sha256(path), laterality=lat,
                                         view=view, rows=SHAPE[0], cols=SHAPE[1], pixel_spacing_mm=0.2, modality="MG"))
            ids.append(image_id)
    return ids


def make_tiny_card(settings: Settings, name: str = TINY_CARD, seed: int = 0, patch: int = 64,
                   description: str = "A tiny random resnet10t for the page tests.", domain: str = "") -> Path:
    """A real model card for a seeded, randomly initialised timm resnet10t (``patch`` px patches);
    ``domain``: the training modality its ``[domain]`` table records (none when empty)."""
    torch.manual_seed(seed)
    model = timm.create_model("resnet10t", num_classes=2, pretrained=False)
    cards = settings.user_cards_dir
    sha = model_zoo.save_weights(model, cards / f"{name}.safetensors")
    text = f'''name = "{name}"
description = "{description}"
arch = "resnet10t"
classes = ["normal", "lesion"]
positive_class = "lesion"
input_size = [3, {patch}, {patch}]
pixel_spacing_mm = 0.2
concept_layers = ["layer4", "layer3"]
default_layer = "layer4"
head = "pool-linear"
head_layer = "layer4"
classifier = "fc"

[weights]
file = "{name}.safetensors"
sha256 = "{sha}"

[metrics]
auroc = 0.5
threshold = 0.5
'''
    if domain:
        text += f'\n[domain]\nmodality = "{domain}"\ndescribed_as = "{domain} test images"\n'
    path = cards / f"{name}.toml"
    path.write_text(text)
    return path


def score(store: Store, model_card: str, weights_sha: str, scores: dict[str, float]) -> None:
    for image_id, s in scores.items():
        store.save_prediction(model_card, weights_sha, image_id, s, [[8, 16, 64, s]])

"""Small real data directories for the page tests: a DuckDB store in tmp_path with cases, images
written to disk, findings and cached predictions."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from dashboard.settings import Settings
from dashboard.store import Store

CASES = [
    # case_id, source, label, description, [(laterality, view)]
    ("SYN-0001", "synthetic", "malignant", "irregular spiculated mass, left upper outer",
     [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]),
    ("SYN-0002", "synthetic", "normal", "scattered fibroglandular", [("R", "CC"), ("L", "CC")]),
    ("MIAS-mdb001", "mini-mias", "benign", "circumscribed mass", [("L", "MLO")]),
]


def _phantom_png(path: Path, seed: int, laterality: str, size=(160, 128)) -> str:
    """A grey breast-like blob (chest wall on the file's side for the laterality) as a 16-bit PNG."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    cx = 0 if laterality == "L" else w - 1
    r = np.sqrt(((xx - cx) / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2)
    img = np.where(r < 1, 20000 + 15000 * (1 - r), 500) + rng.normal(0, 300, size)
    img = np.clip(img, 0, 65535).astype(np.uint16)
    Image.fromarray(img).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def populate(settings: Settings, store: Store) -> list[str]:
    """Write the cases above (images as PNG under data_dir/images). Returns the image ids."""
    img_dir = settings.data_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    ids = []
    for k, (case_id, source, label, desc, views) in enumerate(CASES):
        store.save_case(case_id, source, split="test", label=label, description=desc)
        for j, (lat, view) in enumerate(views):
            image_id = f"{case_id}-{lat}{view}"
            path = img_dir / f"{image_id}.png"
            sha = _phantom_png(path, 100 * k + j, lat)
            store.save_image(image_id, case_id, str(path), sha, laterality=lat, view=view, rows=160, cols=128,
                             pixel_spacing_mm=0.2, modality="MG")
            ids.append(image_id)
    return ids


def score(store: Store, model_card: str, weights_sha: str, scores: dict[str, float]) -> None:
    for image_id, s in scores.items():
        store.save_prediction(model_card, weights_sha, image_id, s, [[8, 16, 64, s]])

"""The data directory the browser tests and the browser benchmark run the app on: a few cases of
the synthetic demo set (real DICOM files), the trained demo model (model_zoo's demo-lite0-synth
card), and the dataset statistics of its concept layer, so the Label page can match units at once."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from dashboard import imaging
from dashboard.data import demo
from dashboard.data.store import Store
from dashboard.settings import load_settings
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import read
from dashboard.ui.work import concepts, images

E2E_CARD = "demo-lite0-synth"
N_CASES = 4
SEED = 11


def _settings(data_dir: Path):
    old = {k: os.environ.get(k) for k in ("CONCEPTLENS_DATA_DIR", "CONCEPTLENS_DB_PATH")}
    os.environ["CONCEPTLENS_DATA_DIR"] = str(data_dir)
    os.environ.pop("CONCEPTLENS_DB_PATH", None)
    try:
        return load_settings().with_overrides(model_card=E2E_CARD)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prepare_data_dir(data_dir: Path, *, stats_patches: int = 160) -> dict[str, str]:
    """Build the data dir (idempotent) and return the environment for ``streamlit run``."""
    data_dir = Path(data_dir)
    settings = _settings(data_dir)
    with Store(settings.db_path, settings.journal_dir) as store:
        demo.build_demo(settings, store, n_cases=N_CASES, seed=SEED, workers=1, contact_sheet=False,
                        only_missing=True)
        ctx = build_context(settings, store, load_model(E2E_CARD, settings.user_cards_dir, "cpu"))
        if concepts.find_stats(ctx) is None:
            concepts.compute_stats(ctx, stats_patches)
    return {"CONCEPTLENS_DATA_DIR": str(data_dir), "CONCEPTLENS_DB_PATH": str(settings.db_path),
            "CONCEPTLENS_MODEL_CARD": E2E_CARD, "CONCEPTLENS_DEVICE": "cpu"}


def case_with_lesion(data_dir: Path) -> str:
    """A demo case whose truth is not normal (the flow labels a mass on it)."""
    settings = _settings(Path(data_dir))
    with Store(settings.db_path, settings.journal_dir, read_only=True) as store:
        cases = store.list_cases()
    return next((c["case_id"] for c in cases if c["label"] != "normal"), cases[0]["case_id"])


def plan_drawing(data_dir: Path, case_id: str) -> dict:
    """Where the browser flow opens a patch and what it outlines, like a reader who outlines the mass.

    The patch is centred on the case's first lesion finding (picked on the Read page by its display
    x/y); the outline is the bounding box of the region where one unit of the concept layer fires
    (above its dataset threshold) in that patch, so the drawing's IoU with that unit is known to
    pass the labeling rule. Returns the image's hanging label, the display point, the patch, the
    polygon in fractions of the canvas (display orientation) and the IoU the engine should find.
    """
    settings = _settings(Path(data_dir))
    with Store(settings.db_path, settings.journal_dir, read_only=True) as store:
        ctx = build_context(settings, store, load_model(E2E_CARD, settings.user_cards_dir, "cpu"))
        stats = concepts.require_stats(ctx)
        case_images = store.list_images(case_id=case_id)
        finding = next(f for i in case_images for f in store.list_findings(i["image_id"])
                       if f["pathology"] in ("benign", "malignant") and f["x0"] is not None)
        row = store.get_image(finding["image_id"])
        _, _, frame = images.model_image(ctx, row)
        h, w = frame.model_shape
        cx_src, cy_src = (finding["x0"] + finding["x1"]) / 2, (finding["y0"] + finding["y1"]) / 2
        mx, my = frame.to_model([cx_src, cy_src])
        mirrored = imaging.display_flip(row["laterality"])
        x_disp, y_disp = int(round(w - mx if mirrored else mx)), int(round(my))
        ref = read.patch_at(ctx, row["image_id"], x_disp, y_disp)
        act = concepts.patch_activation(ctx, ref)  # (C, h', w')
        size = ref.size
        up = F.interpolate(torch.as_tensor(act)[None], size=(size, size), mode="bilinear",
                           align_corners=False)[0]  # (C, S, S)
        on = (up > torch.as_tensor(stats.thresholds)[:, None, None]).numpy()  # (C, S, S)
        area = on.reshape(len(on), -1).mean(1)
        candidates = np.nonzero((area > 0.04) & (area < 0.35))[0]
        if not len(candidates):
            raise RuntimeError("no unit fires on a usable part of the lesion patch")
        best, best_iou, best_box = None, 0.0, None
        for u in candidates:  # a handful of candidate units, not the layer: test set-up only
            # the bounding box of the unit's largest connected region (at a fine layer a unit fires in
            # several places, and the box around all of them would match none)
            regions, n = ndimage.label(on[u])
            largest = np.argmax(np.bincount(regions.ravel())[1:]) + 1 if n else 0
            rows, cols = np.nonzero(regions == largest)
            x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
            box = np.zeros((size, size), bool)
            box[y0:y1, x0:x1] = True
            iou = (box & on[u]).sum() / (box | on[u]).sum()
            inside = min(x0, y0) >= 0.04 * size and max(x1, y1) <= 0.96 * size  # clickable corners
            iou = iou if inside else iou / 4
            if iou > best_iou:
                best, best_iou, best_box = int(u), float(iou), (x0, y0, x1, y1)
        lo, hi = int(0.03 * size), int(np.ceil(0.97 * size))
        x0, y0, x1, y1 = (int(np.clip(v, lo, hi)) for v in best_box)
        box = np.zeros((size, size), bool)
        box[y0:y1, x0:x1] = True
        best_iou = float((box & on[best]).sum() / (box | on[best]).sum())
        if best_iou <= 0.3:  # the labeling threshold is 0.2: leave the browser room for its few pixels
            raise RuntimeError(f"no unit's region in the lesion patch can be outlined by a box (best IoU {best_iou:.2f})")
        if mirrored:
            x0, x1 = size - x1, size - x0
        poly = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        label = f"{row['laterality']} {row['view']}"
    return {"image_label": label, "layer": concepts.layer_of(ctx), "x": x_disp, "y": y_disp, "patch": ref.as_tuple(), "unit": best,
            "expected_iou": best_iou, "polygon": [(float(x) / size, float(y) / size) for x, y in poly]}

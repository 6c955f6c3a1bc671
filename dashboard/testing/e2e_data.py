"""The data directory the browser tests and the browser benchmark run the app on: a few cases of
the synthetic demo set (real DICOM files), the trained demo model (model_zoo's demo-lite0-synth
card), and the dataset statistics of its concept layer, so the Label page can match units at once."""
from __future__ import annotations

import dataclasses
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
        size = ref.size
        thresholds = torch.as_tensor(stats.thresholds)[:, None, None]

        def fires(dx: int, dy: int) -> np.ndarray:  # (C, S, S): where each unit fires in the patch moved by dx, dy
            moved = dataclasses.replace(ref, x0=ref.x0 + dx, y0=ref.y0 + dy)
            act = concepts.patch_activation(ctx, moved)  # (C, h', w')
            up = F.interpolate(torch.as_tensor(act)[None], size=(size, size), mode="bilinear", align_corners=False)[0]
            return (up > thresholds).numpy()

        def box_plan(on: np.ndarray) -> dict | None:  # the unit and box of one exact patch
            area = on.reshape(len(on), -1).mean(1)
            best, best_iou, best_box = None, 0.0, None
            for u in np.nonzero((area > 0.04) & (area < 0.35))[0]:  # a handful of units: test set-up only
                # the bounding box of the unit's largest connected region (at a fine layer a unit fires
                # in several places, and the box around all of them would match none)
                regions, n = ndimage.label(on[u])
                largest = np.argmax(np.bincount(regions.ravel())[1:]) + 1 if n else 0
                rows, cols = np.nonzero(regions == largest)
                lo, hi = int(0.03 * size), int(np.ceil(0.97 * size))
                x0, x1 = int(np.clip(cols.min(), lo, hi)), int(np.clip(cols.max() + 1, lo, hi))
                y0, y1 = int(np.clip(rows.min(), lo, hi)), int(np.clip(rows.max() + 1, lo, hi))
                box = np.zeros((size, size), bool)
                box[y0:y1, x0:x1] = True
                iou = float((box & on[u]).sum() / (box | on[u]).sum())
                if min(x0, y0) >= 0.04 * size and max(x1, y1) <= 0.96 * size and iou > best_iou:  # clickable
                    best, best_iou, best_box = int(u), iou, (x0, y0, x1, y1)
            if best is None or best_iou <= 0.3:  # the labeling threshold is 0.2: room for rasterisation
                return None
            x0, y0, x1, y1 = best_box
            if mirrored:
                x0, x1 = size - x1, size - x0
            poly = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            return {"unit": best, "expected_iou": best_iou,
                    "polygon": [(float(x) / size, float(y) / size) for x, y in poly]}

        # a click opens the patch to within a few model px (a shown pixel is ~2.4 model px), and at a
        # fine concept layer a few px move what fires: a plan for every patch the click may open; the
        # browser test takes the one of the patch the page shows
        by_patch = {}
        for dx in range(-3, 4):
            for dy in range(-3, 4):
                plan = box_plan(fires(dx, dy))
                if plan is not None:
                    by_patch[(ref.x0 + dx, ref.y0 + dy)] = plan
        if (ref.x0, ref.y0) not in by_patch:
            raise RuntimeError("no unit's region in the lesion patch can be outlined by a box")
        label = f"{row['laterality']} {row['view']}"
    return {"image_label": label, "layer": concepts.layer_of(ctx), "x": x_disp, "y": y_disp, "patch": ref.as_tuple(),
            **by_patch[(ref.x0, ref.y0)], "by_patch": by_patch}


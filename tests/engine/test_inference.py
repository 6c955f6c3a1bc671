"""dashboard.engine.inference on real tiny seeded timm models (resnet10t, efficientnet_lite0)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dashboard.engine.activations import compute_patch_activations
from dashboard.engine.inference import (
    LesionMap,
    LesionMapConfig,
    compute_lesion_map,
    feature_stride,
    is_pool_linear,
    predict_patches,
    target_class,
)
from dashboard.engine.model_state import HOOK_DICTS, hook_counts
from dashboard.testing.tinymodels import TinyCard, blob, blob_detector, breast_image, demo_card_detector, make_model
from model_zoo.errors import CardError

S = 64
BLOB = (100, 150)  # (y, x) of the planted blob in breast_image()


@pytest.fixture(scope="module")
def card():
    return TinyCard(input_size=S)


@pytest.fixture(scope="module")
def detector(card):
    """resnet10t whose linear head was fitted to detect bright blobs."""
    return blob_detector("resnet10t", S)


@pytest.fixture(scope="module")
def image():
    return breast_image(blob_at=BLOB)


def _crops(img: np.ndarray, xy: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S) zero-padded crops with top-left corners xy (N, 2) = (x0, y0)."""
    padded = np.pad(img, size)
    return np.stack([padded[y + size : y + 2 * size, x + size : x + 2 * size] for x, y in xy])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def test_card_helpers(card):
    """Patch size and positive class come from the card (model_zoo.ModelCard), the class to explain
    from ``target_class``; a card without a usable positive class says so."""
    assert card.patch_size == S
    assert TinyCard(input_size=(3, 96, 96)).patch_size == 96
    with pytest.raises(CardError, match="not square"):
        _ = TinyCard(input_size=(3, 96, 64)).patch_size
    assert card.positive_index == 1
    assert TinyCard(classes=("lesion", "normal"), positive_class="lesion").positive_index == 0
    with pytest.raises(CardError, match="no positive_class"):
        _ = TinyCard(positive_class=None).positive_index
    with pytest.raises(CardError, match="not one of its classes"):
        _ = TinyCard(positive_class="cancer").positive_index
    assert target_class(card) == (1, "lesion")
    assert target_class(card, "normal") == (0, "normal") and target_class(card, 0) == (0, "normal")
    for bad in ("cancer", 2, -1):
        with pytest.raises(ValueError):
            target_class(card, bad)
    with pytest.raises(CardError, match="no positive_class"):
        target_class(TinyCard(positive_class=None))


def test_predict_patches_matches_model_and_batching(detector, card, image):
    img, _ = image
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 150, size=(7, 2))
    patches = _crops(img, xy, S)
    probs = predict_patches(detector, card, patches, batch_size=3)
    assert probs.shape == (7, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = torch.softmax(detector(card.preprocess(torch.from_numpy(patches))), 1).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    np.testing.assert_allclose(predict_patches(detector, card, patches, batch_size=1), probs, atol=1e-5)
    assert predict_patches(detector, card, np.zeros((0, S, S), np.float32)).shape == (0, 2)


def test_predict_patches_separates_blob_from_tissue(detector, card, image):
    img, _ = image
    on_blob = _crops(img, np.array([[BLOB[1] - S // 2, BLOB[0] - S // 2]]), S)
    tissue = _crops(img, np.array([[20, 60]]), S)
    p = predict_patches(detector, card, np.concatenate([on_blob, tissue]))[:, card.positive_index]
    assert p[0] > 0.5 > p[1]


def test_predict_keeps_train_mode_and_state(card, image):
    """A model left in train mode: prediction uses eval (BN running stats), then restores."""
    model = make_model("resnet10t", seed=1).train()
    patches = _crops(image[0], np.array([[10, 10], [60, 40], [120, 80]]), S)
    before = _state(model)
    probs_train = predict_patches(model, card, patches)
    assert model.training and all(m.training for m in model.modules())
    _assert_same_state(model, before)  # BN running stats untouched
    model.eval()
    np.testing.assert_allclose(predict_patches(model, card, patches), probs_train, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())


def test_pool_linear_and_stride():
    assert is_pool_linear(make_model("resnet10t"))
    lite = make_model("efficientnet_lite0")
    assert is_pool_linear(lite)
    assert feature_stride(lite, S) == 32
    # MobileNetV3 has a conv + activation after the pooling: not pool-linear
    assert not is_pool_linear(make_model("mobilenetv3_small_050"))


@pytest.mark.parametrize("method", ["fcn", "tiles"])
def test_lesion_map_peaks_at_blob(detector, card, image, method):
    img, mask = image
    before = _state(detector)
    lm = compute_lesion_map(detector, card, img, mask, LesionMapConfig(method=method, stride=S // 4, top_k=4))
    assert isinstance(lm, LesionMap) and lm.method == method
    assert lm.prob.shape == img.shape and lm.prob.dtype == np.float32
    assert np.isfinite(lm.prob).all() and lm.prob.min() >= 0 and lm.prob.max() <= 1
    assert (lm.prob[~mask] == 0).all()
    peak = np.unravel_index(lm.prob.argmax(), lm.prob.shape)
    assert np.hypot(peak[0] - BLOB[0], peak[1] - BLOB[1]) < S / 2, peak
    # the most suspicious patch contains the blob and carries the image score
    x0, y0, size, p = lm.top_patches[0]
    assert size == S and x0 <= BLOB[1] < x0 + S and y0 <= BLOB[0] < y0 + S
    assert p == pytest.approx(lm.score)
    if method == "tiles":
        assert lm.score == pytest.approx(lm.grid_prob.max())
    else:  # refined: the top patches carry exact patch probabilities
        xy = np.array([(x, y) for x, y, *_ in lm.top_patches])
        exact = predict_patches(detector, card, _crops(img, xy, S))[:, 1]
        np.testing.assert_allclose([q for *_, q in lm.top_patches], exact, atol=1e-5)
        raw = compute_lesion_map(detector, card, img, mask, LesionMapConfig(method="fcn", refine=0))
        assert raw.score == pytest.approx(raw.grid_prob.max()) and raw.top_patches[0][3] == pytest.approx(raw.score)
    _assert_same_state(detector, before)
    assert sum(hook_counts(detector).values()) == 0 and not detector.training


@pytest.mark.parametrize("blob_at", [(100, 150), (57, 83), (141, 199)])
def test_default_method_ranks_lesion_patch_first(detector, card, blob_at):
    """What the app calls (every default) puts the planted lesion's patch first, at the right place."""
    img, mask = breast_image(blob_at=blob_at)
    lm = compute_lesion_map(detector, card, img, mask)
    x0, y0, size, p = lm.top_patches[0]
    assert size == S and x0 <= blob_at[1] < x0 + S and y0 <= blob_at[0] < y0 + S, (lm.method, lm.top_patches[0])
    # the blob sits well inside the patch, not on its edge: coordinates are patch top-left corners
    cx, cy = x0 + S / 2, y0 + S / 2
    assert np.hypot(cx - blob_at[1], cy - blob_at[0]) < S / 2
    peak = np.unravel_index(lm.prob.argmax(), lm.prob.shape)
    assert np.hypot(peak[0] - blob_at[0], peak[1] - blob_at[1]) < S / 2, peak
    assert p == pytest.approx(lm.score) and lm.prob.shape == img.shape


def test_top_patches_nms_and_breast(detector, card, image):
    img, mask = image
    lm = compute_lesion_map(detector, card, img, mask, LesionMapConfig(method="fcn", top_k=10))
    assert 1 <= len(lm.top_patches) <= 10
    probs = [p for *_, p in lm.top_patches]
    assert probs == sorted(probs, reverse=True)
    boxes = np.array([(x, y, x + s, y + s) for x, y, s, _ in lm.top_patches], float)
    for i in range(len(boxes)):
        cx, cy = int(boxes[i, 0] + S // 2), int(boxes[i, 1] + S // 2)
        assert mask[cy, cx]
        for j in range(i):
            ix = max(0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            iy = max(0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            assert ix * iy / (2 * S * S - ix * iy) <= 0.25 + 1e-6
    assert len(compute_lesion_map(detector, card, img, mask, LesionMapConfig(top_k=2)).top_patches) <= 2


def test_fcn_equals_patches_and_agrees_with_tiles(detector, card, image):
    """FCN grid values are the probabilities of the patches at those places (up to padding
    effects), and the FCN map follows the tiled map."""
    img, mask = image
    fcn = compute_lesion_map(detector, card, img, mask, LesionMapConfig(method="fcn"))
    tiles = compute_lesion_map(detector, card, img, mask, LesionMapConfig(method="tiles", stride=S // 4))
    xy = fcn.grid_xy.reshape(-1, 2)
    exact = predict_patches(detector, card, _crops(img, xy, S))[:, 1].reshape(fcn.grid_prob.shape)
    assert np.corrcoef(exact.ravel(), fcn.grid_prob.ravel())[0, 1] > 0.95
    # the upsampled map passes through the grid values at the patch centres
    centres = fcn.grid_xy + S // 2  # (rows, cols, 2) = (x, y)
    inside = (centres[..., 0] < img.shape[1]) & (centres[..., 1] < img.shape[0])
    cx, cy = centres[inside][:, 0], centres[inside][:, 1]
    keep = mask[cy, cx]
    np.testing.assert_allclose(fcn.prob[cy[keep], cx[keep]], fcn.grid_prob[inside][keep], atol=1e-5)
    # tiles: grid values are exactly the tile probabilities
    txy = tiles.grid_xy.reshape(-1, 2)
    run = (tiles.grid_prob.ravel() > 0)
    exact_t = predict_patches(detector, card, _crops(img, txy[run], S))[:, 1]
    np.testing.assert_allclose(tiles.grid_prob.ravel()[run], exact_t, atol=1e-5)
    assert np.corrcoef(fcn.prob[mask], tiles.prob[mask])[0, 1] > 0.8


def test_tiles_average_overlaps(detector, card):
    """With one bright blob, the tiled map at a pixel is the mean of the covering tiles."""
    model = detector
    img = np.zeros((96, 128), np.float32) + 0.3
    img = np.clip(img + blob(img.shape, 48, 70, 6.0), 0, 1)
    lm = compute_lesion_map(model, card, img, None, LesionMapConfig(method="tiles", stride=32, min_fraction=0.0))
    g = lm.grid_prob  # tile corners every 32 px; pixel (40, 70) is covered by tiles (0|1, 1|2)
    np.testing.assert_allclose(lm.prob[40, 70], g[0:2, 1:3].mean(), atol=1e-5)
    np.testing.assert_allclose(lm.prob[5, 5], g[0, 0], atol=1e-5)


def test_empty_mask_and_bad_input(detector, card, image):
    img, mask = image
    lm = compute_lesion_map(detector, card, img, np.zeros_like(mask), LesionMapConfig(method="fcn"))
    assert lm.score == 0.0 and lm.top_patches == [] and not lm.prob.any()
    with pytest.raises(ValueError):
        compute_lesion_map(detector, card, img, mask, LesionMapConfig(method="nope"))
    with pytest.raises(ValueError):
        compute_lesion_map(detector, card, img, mask[:10])


def test_non_pool_linear_falls_back_to_tiles(card, image):
    img, mask = image
    model = make_model("mobilenetv3_small_050")
    with pytest.warns(UserWarning, match="tiles"):
        lm = compute_lesion_map(model, card, img, mask, LesionMapConfig(method="fcn"))
    assert lm.method == "tiles" and lm.prob.shape == img.shape
    tiles = compute_lesion_map(model, card, img, mask, LesionMapConfig(method="tiles"))  # what the fallback ran
    np.testing.assert_array_equal(lm.prob, tiles.prob)
    np.testing.assert_array_equal(lm.grid_prob, tiles.grid_prob)
    assert lm.score == tiles.score and lm.grid_prob.std() > 0


def test_lesion_map_efficientnet_lite0(card, image):
    """The demo backbone: FCN pass runs, is finite, matches the image and leaves the model as it was."""
    img, mask = image
    model = make_model("efficientnet_lite0", seed=2)
    before = _state(model)
    lm = compute_lesion_map(model, card, img, mask, LesionMapConfig(method="fcn"))
    assert lm.prob.shape == img.shape and np.isfinite(lm.prob).all()
    assert lm.grid_prob.shape[0] >= int(np.ceil((img.shape[0] - 1) / 32)) + 1
    # the grid is the definition: the head applied to the mean feature of each 2 x 2 window (patch S = 2
    # cells of stride 32) of one pass over the image zero-padded by S/2, grid step 32
    h, w = img.shape
    hp, wp = 32 * (int(np.ceil((h - 1) / 32)) + 2), 32 * (int(np.ceil((w - 1) / 32)) + 2)
    padded = np.zeros((hp, wp), np.float32)
    padded[S // 2:S // 2 + h, S // 2:S // 2 + w] = img
    with torch.no_grad():
        feat = model.forward_features(card.preprocess(torch.from_numpy(padded)[None]))[0]  # (C, hf, wf)
        pooled = torch.nn.functional.avg_pool2d(feat[None], 2, stride=1)[0]  # (C, rows, cols)
        logits = torch.einsum("kc,cij->kij", model.get_classifier().weight, pooled) + model.get_classifier().bias[:, None, None]
        expected = torch.softmax(logits, 0)[1].numpy()
    assert expected.shape == lm.grid_prob.shape and lm.grid_prob.std() > 0.01
    np.testing.assert_allclose(lm.grid_prob, expected, atol=1e-4)
    np.testing.assert_array_equal(lm.grid_xy[0, :, 0], np.arange(lm.grid_prob.shape[1]) * 32 - S // 2)
    # the map passes through the grid at the patch centres, is 0 outside the breast, and the score is the
    # best grid value whose centre is in the breast
    cy, cx = np.meshgrid(np.arange(expected.shape[0]) * 32, np.arange(expected.shape[1]) * 32, indexing="ij")
    inside = (cy < h) & (cx < w)
    inside[inside] = mask[cy[inside], cx[inside]]
    np.testing.assert_allclose(lm.prob[cy[inside], cx[inside]], lm.grid_prob[inside], atol=1e-5)
    assert not lm.prob[~mask].any() and lm.score == pytest.approx(float(lm.grid_prob[inside].max()), abs=1e-6)
    _assert_same_state(model, before)
    assert sum(hook_counts(model).values()) == 0


def test_patch_activations_leave_model_unchanged(detector, card, image):
    img, _ = image
    patches = _crops(img, np.array([[10, 10], [60, 40], [120, 80]]), S)
    before_probs = predict_patches(detector, card, patches)
    acts = {layer: torch.stack(compute_patch_activations(detector, card, layer, list(patches), batch_size=2))
            for layer in ("layer3", "layer4")}  # {layer: (N, C, h, w)}
    assert acts["layer3"].shape[:2] == (3, 256) and acts["layer4"].shape == (3, 512, 2, 2)
    with torch.no_grad():
        feat = detector.forward_features(card.preprocess(torch.from_numpy(patches)))
    torch.testing.assert_close(acts["layer4"], feat.float(), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(predict_patches(detector, card, patches), before_probs)
    for module in detector.modules():
        for name in HOOK_DICTS:
            assert len(getattr(module, name, ())) == 0


def test_real_model_card_end_to_end(image):
    """model_zoo's ModelCard and create_model (demo card, lite0, no weights, head fitted to blobs)."""
    card, model = demo_card_detector(S)
    img, mask = image
    assert card.patch_size == S and card.positive_index == 1
    on_blob = _crops(img, np.array([[BLOB[1] - S // 2, BLOB[0] - S // 2], [20, 60]]), S)
    p = predict_patches(model, card, on_blob)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert p[0, card.positive_index] > p[1, card.positive_index]
    lm = compute_lesion_map(model, card, img, mask, LesionMapConfig(method="fcn"))
    assert lm.method == "fcn" and lm.prob.shape == img.shape and np.isfinite(lm.prob).all()
    assert lm.grid_prob.std() > 0
    # the top patches are re-scored by exact patch passes (refine): each one's probability is that of its
    # crop, they come most suspicious first, and the image score is the first one's
    xy = np.array([(x0, y0) for x0, y0, _, _ in lm.top_patches])
    exact = predict_patches(model, card, _crops(img, xy, S))[:, card.positive_index]
    assert len(lm.top_patches) == 5 and all(size == S for _, _, size, _ in lm.top_patches)
    np.testing.assert_allclose([p for *_, p in lm.top_patches], exact, atol=1e-5)
    assert list(exact) == sorted(exact, reverse=True) and lm.score == pytest.approx(exact[0], abs=1e-5)

"""dashboard.engine.attribution: captum methods on a real tiny seeded timm model, state safety, locks."""
from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest
import torch

from dashboard.engine.activations import compute_activations
from dashboard.engine.attribution import (
    METHODS,
    Attribution,
    AttributionConfig,
    attribute,
    attribute_image,
    hook_counts,
    lock_for,
    model_state_guard,
    overlay,
)
from dashboard.engine.model_state import HOOK_DICTS
from dashboard.testing.tinymodels import TinyCard, blob_detector, breast_image, demo_card_detector, make_model

S = 64
BLOB = (100, 150)
IN_PATCH = (20, 44)  # (y, x) of the blob inside the test patch


@pytest.fixture(scope="module")
def card():
    return TinyCard(input_size=S, default_layer="layer3")


@pytest.fixture(scope="module")
def detector():
    return blob_detector("resnet10t", S)


@pytest.fixture(scope="module")
def image():
    return breast_image(blob_at=BLOB)


@pytest.fixture(scope="module")
def patch(image):
    """(S, S) patch of the synthetic breast with the blob off-centre at IN_PATCH."""
    img, _ = image
    y0, x0 = BLOB[0] - IN_PATCH[0], BLOB[1] - IN_PATCH[1]
    return np.ascontiguousarray(img[y0 : y0 + S, x0 : x0 + S])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _no_hooks(model) -> bool:
    return all(len(getattr(m, name, ())) == 0 for m in model.modules() for name in HOOK_DICTS)


FAST = dict(n_steps=8, internal_batch_size=8, nt_samples=3, window=16, stride=8)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_nontrivial_and_model_unchanged(detector, card, patch, method):
    before = _state(detector)
    grads_before = [p.requires_grad for p in detector.parameters()]
    att = attribute(detector, card, patch, AttributionConfig(method=method, **FAST))
    assert isinstance(att, Attribution) and att.method == method and att.target == 1
    m = att.map
    assert m.shape == (S, S) and m.dtype == np.float32 and np.isfinite(m).all()
    assert m.std() > 1e-4  # not constant
    if att.signed:
        assert np.abs(m).max() == pytest.approx(1.0) and m.min() >= -1 - 1e-6
    else:
        assert m.min() >= 0 and m.max() == pytest.approx(1.0)
    # evidence concentrates on the blob, the only lesion-like structure in the patch
    yy, xx = np.mgrid[:S, :S]
    near = np.hypot(yy - IN_PATCH[0], xx - IN_PATCH[1]) < 12
    assert m[near].mean() > m[~near].mean()
    # the shared model is exactly as before
    after = detector.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert not detector.training and not any(mod.training for mod in detector.modules())
    assert [p.requires_grad for p in detector.parameters()] == grads_before
    assert all(p.grad is None for p in detector.parameters())
    assert _no_hooks(detector)


def test_gradcam_layer_and_target(detector, card, patch):
    a3 = attribute(detector, card, patch, AttributionConfig(method="gradcam"))
    assert a3.layer == "layer3" and a3.stats["layer_h"] == S / 16
    a4 = attribute(detector, card, patch, AttributionConfig(method="gradcam", layer="layer4"))
    assert a4.layer == "layer4" and a4.stats["layer_h"] == S / 32
    ig1 = attribute(detector, card, patch, AttributionConfig(method="ig", **FAST))
    ig0 = attribute(detector, card, patch, AttributionConfig(method="ig", target=0, **FAST))
    assert ig0.target == 0 and ig1.target == 1
    assert np.corrcoef(ig0.map.ravel(), ig1.map.ravel())[0, 1] < 0  # opposite evidence
    with pytest.raises(AttributeError):
        attribute(detector, card, patch, AttributionConfig(method="gradcam", layer="no.such.layer"))
    with pytest.raises(ValueError):
        attribute(detector, card, patch, AttributionConfig(method="lime"))


def test_ig_completeness(detector, card, patch):
    """IG sums to logit(x) - logit(black) (captum's convergence delta is small)."""
    att = attribute(detector, card, patch, AttributionConfig(method="ig", n_steps=32, internal_batch_size=16))
    with torch.no_grad():
        x = card.preprocess(torch.from_numpy(patch)[None])
        b = card.preprocess(torch.zeros(1, S, S))
        gap = (detector(x) - detector(b))[0, 1].item()
    assert att.stats["sum"] == pytest.approx(gap, rel=0.05, abs=0.05)
    assert att.stats["delta"] < 0.05 * max(1.0, abs(gap))


def test_train_mode_model_restored(card, patch):
    model = make_model("resnet10t", seed=3).train()
    model.layer1.requires_grad_(False)  # a partly frozen model: flags must come back as they were
    flags = [p.requires_grad for p in model.parameters()]
    before = _state(model)
    attribute(model, card, patch, AttributionConfig(method="guided-gradcam"))  # ReLU(inplace=True) in resnet10t
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(m.inplace for m in model.modules() if isinstance(m, torch.nn.ReLU))
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert _no_hooks(model)


def test_guard_restores_on_exception_and_keeps_user_hooks():
    model = make_model("resnet10t", seed=4)
    calls = []
    user = model.layer2.register_forward_hook(lambda *a: calls.append(1))
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    with pytest.raises(RuntimeError):
        with model_state_guard(model, no_inplace=True):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            model.layer3.register_forward_hook(lambda *a: None)
            model.layer1.register_full_backward_hook(lambda *a: None)
            model.conv1[0].register_forward_pre_hook(lambda *a: None)
            model.train()
            model.fc.weight.grad = None
            raise RuntimeError("attribution failed halfway")
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training  # was eval before the guard
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
    counts = hook_counts(model)
    assert counts["_forward_hooks"] == 1 and counts["_backward_hooks"] == 0 and counts["_forward_pre_hooks"] == 0
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert calls == [1]  # the user's own hook survived and still fires
    user.remove()


def test_lock_for_is_per_model_reentrant_and_weak():
    a, b = make_model("resnet10t", seed=5), make_model("resnet10t", seed=6)
    la = lock_for(a)
    assert lock_for(a) is la and lock_for(b) is not la
    with la:
        assert la.acquire(blocking=False)  # re-entrant in the same thread
        la.release()
    ref = weakref.ref(la)
    del a, la
    import gc

    gc.collect()
    assert ref() is None  # the lock goes with the model


def test_concurrent_attribution_equals_sequential(detector, card, image, patch):
    img, _ = image
    other = np.ascontiguousarray(img[40 : 40 + S, 30 : 30 + S])
    jobs = [(patch, "gradcam"), (other, "ig"), (patch, "saliency"), (other, "guided-gradcam")]
    sequential = [attribute(detector, card, p, AttributionConfig(method=m, **FAST)).map for p, m in jobs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def work(i, p, m):
        try:
            start.wait()
            results[i] = attribute(detector, card, p, AttributionConfig(method=m, **FAST)).map
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, p, m)) for i, (p, m) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, ref in enumerate(sequential):
        np.testing.assert_allclose(results[i], ref, atol=1e-5)
    assert _no_hooks(detector)


def test_attribute_image_gradcam(detector, card, image):
    img, mask = image
    before = _state(detector)
    att = attribute_image(detector, card, img, mask, AttributionConfig(layer="layer4"))
    assert att.map.shape == img.shape and np.isfinite(att.map).all()
    assert (att.map[~mask] == 0).all() and att.map.max() == pytest.approx(1.0)
    peak = np.unravel_index(att.map.argmax(), att.map.shape)
    assert np.hypot(peak[0] - BLOB[0], peak[1] - BLOB[1]) < S / 2, peak
    sal = attribute_image(detector, card, img, mask, AttributionConfig(method="saliency"))
    assert sal.map.shape == img.shape and sal.map.std() > 0
    # saliency too: nothing outside the breast, and more evidence around the blob than elsewhere (0.23 vs 0.15)
    assert (sal.map[~mask] == 0).all() and sal.map.max() == pytest.approx(1.0)
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    near = np.hypot(yy - BLOB[0], xx - BLOB[1]) < S / 4
    assert sal.map[near].mean() > 1.3 * sal.map[mask & ~near].mean(), (sal.map[near].mean(), sal.map[mask & ~near].mean())
    for k, v in before.items():
        assert torch.equal(v, detector.state_dict()[k]), k
    assert _no_hooks(detector)


def test_overlay(image):
    img, _ = image
    heat = np.zeros_like(img)
    heat[80:120, 130:170] = 1.0
    rgb = overlay(img, heat, alpha=0.5, cmap="jet")
    assert rgb.shape == img.shape + (3,) and rgb.dtype == np.uint8
    grey = overlay(img, heat, alpha=0.0)
    np.testing.assert_allclose(grey[..., 0], img * 255, atol=0.51)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    full = overlay(img, heat, alpha=1.0, cmap="jet")
    assert full[100, 150, 0] > 100 and full[100, 150, 2] < 50  # jet(1) is dark red
    assert full[10, 10, 2] > 100 and full[10, 10, 0] < 50  # jet(0) is dark blue
    signed = overlay(img, heat - 0.5 * (heat == 0), alpha=1.0, cmap="bwr")
    assert signed[100, 150, 0] > 200 and signed[10, 10, 2] > 200
    with pytest.raises(ValueError):
        overlay(img, heat[:10])


@pytest.mark.parametrize("method", ["gradcam", "ig"])
def test_real_model_card(patch, method):
    """model_zoo's demo card with its efficientnet_lite0."""
    card, model = demo_card_detector(S)
    before = _state(model)
    # Grad-CAM by hand at the pool-linear layer bn2 (the card's concept layer may be an inner one)
    att = attribute(model, card, patch, AttributionConfig(method=method, layer="bn2" if method == "gradcam" else None,
                                                          **FAST))
    assert att.map.shape == (S, S) and np.isfinite(att.map).all() and att.map.std() > 1e-4
    assert att.target == card.positive_index
    x = card.preprocess(torch.from_numpy(patch)[None])
    if method == "gradcam":
        assert att.layer == "bn2"
        default = attribute(model, card, patch, AttributionConfig(method=method, **FAST))
        assert default.layer == card.default_layer
        # at the pool-linear layer the gradient is W[target] / (h w) everywhere: Grad-CAM is the ReLU of
        # the head's per-cell logit contributions, bilinearly upsampled and scaled to a maximum of 1
        with torch.no_grad():
            acts = compute_activations(model, ["bn2"], x)["bn2"][0]  # (C, h, w)
            w = model.get_classifier().weight[card.positive_index]
            cam = torch.relu(torch.einsum("c,chw->hw", w, acts) / (acts.shape[1] * acts.shape[2]))
            up = torch.nn.functional.interpolate(cam[None, None], size=(S, S), mode="bilinear")[0, 0].numpy()
        assert up.max() > 0 and att.stats["max"] == pytest.approx(float(up.max()), rel=1e-4)
        np.testing.assert_allclose(att.map, up / up.max(), atol=1e-4)
    else:  # IG adds up to the logit's change from the black baseline
        with torch.no_grad():
            gap = (model(x) - model(card.preprocess(torch.zeros(1, S, S))))[0, card.positive_index].item()
        assert abs(gap) > 0.1 and att.stats["sum"] == pytest.approx(gap, rel=0.1, abs=0.05)
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert _no_hooks(model)

"""compute_activations: hooks removed, outputs unchanged, shapes right, copies safe from inplace ops."""
from __future__ import annotations

import pytest
import timm
import torch

from dashboard.engine.activations import compute_activations, layer_shapes, list_layers


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return timm.create_model("efficientnet_lite0", num_classes=2, pretrained=False).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    return timm.create_model("resnet10t", num_classes=2, pretrained=False).eval()


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_logits_identical_and_no_hooks_left(lite0):
    torch.manual_seed(2)
    x = torch.randn(3, 3, 128, 128)  # (N, 3, H, W)
    with torch.no_grad():
        ref = lite0(x)
    acts, out = compute_activations(lite0, ["blocks.3", "bn2"], x, with_output=True)
    assert torch.equal(out, ref)
    assert _hook_count(lite0) == 0
    assert acts["bn2"].shape == (3, 1280, 4, 4)
    assert acts["blocks.3"].shape[0] == 3 and acts["blocks.3"].dim() == 4
    with torch.no_grad():
        assert torch.equal(lite0(x), ref)


def test_pool_linear_head_reproduces_logits_from_bn2(lite0):
    x = torch.randn(2, 3, 96, 96)
    acts, out = compute_activations(lite0, ["bn2"], x, with_output=True)
    a = acts["bn2"].mean(dim=(2, 3))  # (N, C)
    logits = a @ lite0.classifier.weight.T + lite0.classifier.bias
    assert torch.allclose(logits, out, atol=1e-5)


def test_capture_is_copy_before_inplace_relu(resnet):
    # resnet's bn1 is followed by ReLU(inplace=True): without a copy we'd see non-negative values
    x = torch.randn(2, 3, 64, 64)
    acts = compute_activations(resnet, ["bn1", "act1"], x)
    assert (acts["bn1"] < 0).any()
    assert torch.equal(acts["act1"], acts["bn1"].clamp_min(0))


def test_hooks_removed_on_error_and_mode_restored(resnet):
    resnet.train()
    try:
        with pytest.raises(KeyError):
            compute_activations(resnet, ["layer4", "no.such.layer"], torch.randn(1, 3, 32, 32))
        bad = torch.randn(1, 5, 32, 32)  # wrong channel count -> forward raises
        with pytest.raises(RuntimeError):
            compute_activations(resnet, ["layer4"], bad)
        assert _hook_count(resnet) == 0
        assert resnet.training and all(m.training for m in resnet.modules())
    finally:
        resnet.eval()


def test_batched_equals_single_pass_and_early_stop(resnet):
    x = torch.randn(5, 3, 64, 64)
    full = compute_activations(resnet, ["layer2", "layer4"], x)
    chunked = compute_activations(resnet, ["layer2", "layer4"], x, batch_size=2)
    for k in full:
        assert torch.allclose(full[k], chunked[k], atol=1e-5)
    # stopping after layer2 gives the same numbers as a full pass
    early = compute_activations(resnet, ["layer2"], x)
    assert torch.equal(early["layer2"], full["layer2"])
    assert torch.is_grad_enabled() and not early["layer2"].requires_grad  # no graph kept, though grad is on


def test_list_layers_and_shapes(lite0):
    names = list_layers(lite0)
    assert "bn2" in names and "blocks.6" in names and "" not in names
    leaves = list_layers(lite0, leaves_only=True)
    assert "blocks" not in leaves and "conv_stem" in leaves
    shapes = layer_shapes(lite0, ["bn2"], 512)
    assert shapes["bn2"] == (1280, 16, 16)


def test_two_sessions_at_once_get_their_own_activations(lite0):
    """Two threads (two Streamlit sessions) on one shared model: without the model's lock the
    hooks of one would capture, and stop, the other's forward pass."""
    import threading

    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(2, 3, 96, 96, generator=g) for _ in range(2)]
    layers = [["bn2"], ["blocks.3"]]
    expected = [compute_activations(lite0, l, x) for l, x in zip(layers, xs)]
    got: dict[int, dict] = {}
    errors: list[BaseException] = []

    def work(i):
        try:
            for _ in range(15):
                got[i] = compute_activations(lite0, layers[i], xs[i])
                for name in layers[i]:
                    torch.testing.assert_close(got[i][name], expected[i][name], rtol=0, atol=0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert set(got) == {0, 1}

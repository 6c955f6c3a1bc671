"""Model cards, the factory (SHA-256 checked safetensors), user models and the offline ImageNet start."""
from __future__ import annotations

import tomllib

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

import model_zoo as mz
from model_zoo import imagenet
from model_zoo.cards import card_from_dict, dumps_toml


def _user_card(tmp_path, name="my-resnet", arch="resnet10t", **extra) -> dict:
    raw = dict(name=name, arch=arch, classes=["normal", "lesion"], positive_class="lesion",
               input_size=[3, 64, 64], pixel_spacing_mm=0.2, concept_layers=["layer4", "layer3"],
               default_layer="layer4", head="pool-linear", head_layer="layer4")
    raw.update(extra)
    return raw


@pytest.fixture(scope="module")
def tiny_resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=2, pretrained=False).eval()


def _write_user_model(tmp_path, model, name="my-resnet", dtype=torch.float16, **extra):
    cards = tmp_path / "cards"
    sha = mz.save_weights(model, cards / f"{name}.safetensors", dtype=dtype)
    raw = _user_card(tmp_path, name=name, **extra)
    raw["weights"] = {"file": f"{name}.safetensors", "sha256": sha}
    (cards / f"{name}.toml").write_text(dumps_toml(raw))
    return cards


# ---------------------------------------------------------------- cards
def test_builtin_cards_are_listed_and_the_demo_card_matches_its_contract():
    cards = {c.name: c for c in mz.list_cards()}
    assert {"demo-lite0-synth", "imagenet-lite0"} <= set(cards)
    demo = mz.load_card("demo-lite0-synth")
    assert demo.arch == "efficientnet_lite0"
    assert demo.classes == ("normal", "lesion") and demo.positive_index == 1
    assert demo.pixel_spacing_mm == 0.2 and demo.input_size == (3, 224, 224) and demo.patch_size == 224
    assert demo.concept_layers == ("bn2", "blocks.5", "blocks.4") and demo.default_layer == "blocks.4" and demo.label_patch_size == 224
    assert demo.head == "pool-linear" and demo.head_layer == "bn2" and demo.classifier == "classifier"
    assert demo.grayscale_to == "repeat"


def test_mean_and_std_come_from_timm_unless_the_card_overrides_them(tmp_path):
    card = card_from_dict(_user_card(tmp_path))
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("resnet10t", pretrained=False))
    assert card.mean == tuple(cfg["mean"]) and card.std == tuple(cfg["std"]) and card.mean_std_from_timm
    own = card_from_dict(_user_card(tmp_path, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))
    assert own.mean == (0.5, 0.5, 0.5) and own.std == (0.25, 0.25, 0.25) and not own.mean_std_from_timm
    # the override survives a round trip; the timm default is not written down
    assert "mean" in own.to_toml() and "mean" not in card.to_toml()


def test_preprocess_repeats_grey_and_normalises_with_the_cards_mean_std():
    card = mz.load_card("demo-lite0-synth")
    gray = np.random.default_rng(0).random((2, 40, 30)).astype(np.float32)  # (N, H, W)
    x = card.preprocess(gray)
    assert x.shape == (2, 3, 40, 30) and x.dtype == torch.float32
    mean = torch.tensor(card.mean).view(1, 3, 1, 1)
    std = torch.tensor(card.std).view(1, 3, 1, 1)
    back = x * std + mean  # undo the normalisation: every channel is the grey image
    for c in range(3):
        np.testing.assert_allclose(back[:, c].numpy(), gray, atol=1e-5)
    assert not torch.allclose(x[:, 0], x[:, 1])  # channels were normalised differently
    with pytest.raises(ValueError):
        card.preprocess(gray[0])
    with pytest.raises(ValueError, match="uint8"):
        card.preprocess((gray * 255).astype(np.uint8))


def test_toml_writer_round_trips_a_card_with_awkward_strings(tmp_path):
    card = card_from_dict(_user_card(tmp_path, description='quote " backslash \\ tab\t newline\n é 😀 \x7f',
                                     training={"command": "python -m x --a 'b'", "seed": 3},
                                     metrics={"auroc": 0.9731, "n_test": 120, "nested": {"x": 1.5e-7}}))
    back = mz.save_card(card, tmp_path / "c" / "my-resnet.toml")
    assert back.description == card.description
    assert back.training == card.training and back.metrics == card.metrics
    assert back.classes == card.classes and back.input_size == card.input_size
    assert tomllib.loads((tmp_path / "c" / "my-resnet.toml").read_text())["metrics"]["nested"]["x"] == 1.5e-7


@pytest.mark.parametrize("change, fragment", [
    ({"positive_class": "cancer"}, "positive_class"),
    ({"default_layer": "layer1"}, "default_layer"),
    ({"classes": ["only"]}, "classes"),
    ({"arch": "no_such_arch_xyz"}, "no_such_arch_xyz"),
    ({"grayscale_to": "rgb"}, "grayscale_to"),
    ({"head_layer": ""}, "head_layer"),
    ({"mean": [0.5, 0.5, 0.5]}, "mean"),
])
def test_invalid_cards_raise_card_error_naming_the_field(tmp_path, change, fragment):
    with pytest.raises(mz.CardError, match=fragment):
        card_from_dict(_user_card(tmp_path, **change))


def test_unknown_card_and_file_name_mismatch(tmp_path):
    with pytest.raises(mz.CardError, match="No model card named"):
        mz.load_card("nope", extra_dirs=[tmp_path])
    (tmp_path / "other.toml").write_text(dumps_toml(_user_card(tmp_path, name="mine")))
    with pytest.raises(mz.CardError, match="differs from its file name"):
        mz.load_card("other", extra_dirs=[tmp_path])
    with pytest.warns(UserWarning, match="other.toml"):
        assert "mine" not in [c.name for c in mz.list_cards(extra_dirs=[tmp_path])]
    (tmp_path / "other.toml").unlink()
    (tmp_path / "broken.toml").write_text("name = ")
    with pytest.warns(UserWarning, match="broken.toml"):
        names = [c.name for c in mz.list_cards(extra_dirs=[tmp_path])]
    assert "broken" not in names and "demo-lite0-synth" in names


# ---------------------------------------------------------------- factory and user models
def test_user_model_round_trips_through_fp16_safetensors_and_card(tmp_path, tiny_resnet):
    cards = _write_user_model(tmp_path, tiny_resnet)
    assert "my-resnet" in [c.name for c in mz.list_cards(extra_dirs=[cards])]
    card = mz.load_card("my-resnet", extra_dirs=[cards])
    model = mz.create_model(card)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    from safetensors import safe_open

    with safe_open(str(card.weights_path), "pt") as f:
        assert f.get_tensor("fc.weight").dtype == torch.float16
    x = card.preprocess(torch.rand(3, 64, 64))
    with torch.no_grad():
        want, got = tiny_resnet(x), model(x)
    torch.testing.assert_close(got, want, atol=0.02, rtol=0.02)  # fp16 storage, fp32 compute
    fresh = mz.create_model(card, weights=False)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), want, atol=0.02)


def test_changed_weights_raise_integrity_error_with_file_and_both_hashes(tmp_path, tiny_resnet):
    cards = _write_user_model(tmp_path, tiny_resnet)
    card = mz.load_card("my-resnet", extra_dirs=[cards])
    data = bytearray(card.weights_path.read_bytes())
    data[-1] ^= 0xFF
    card.weights_path.write_bytes(bytes(data))
    with pytest.raises(mz.WeightsIntegrityError) as err:
        mz.create_model(card)
    msg = str(err.value)
    assert str(card.weights_path) in msg and card.weights_sha256 in msg
    assert mz.sha256_file(card.weights_path) in msg
    card.weights_path.unlink()
    with pytest.raises(mz.WeightsMissingError):
        mz.create_model(card)


def test_card_naming_a_layer_the_model_lacks_is_rejected(tmp_path, tiny_resnet):
    cards = _write_user_model(tmp_path, tiny_resnet, concept_layers=["layer4", "blocks.5"])
    card = mz.load_card("my-resnet", extra_dirs=[cards])
    with pytest.raises(mz.CardError, match="blocks.5"):
        mz.create_model(card)


def test_weights_of_another_architecture_do_not_load(tmp_path):
    other = timm.create_model("resnet18", num_classes=2, pretrained=False)
    cards = _write_user_model(tmp_path, other)  # card says resnet10t
    with pytest.raises(mz.CardError, match="do not fit"):
        mz.create_model(mz.load_card("my-resnet", extra_dirs=[cards]))


# ---------------------------------------------------------------- offline ImageNet start
@pytest.fixture(scope="module")
def lite0_imagenet():
    return imagenet.load_efficientnet_lite0_imagenet()


def _top1(model, rgb: np.ndarray) -> int:
    from PIL import Image

    cfg = timm.data.resolve_data_config({}, model=model)
    x = timm.data.create_transform(**cfg)(Image.fromarray(rgb))[None]  # (1, 3, 224, 224)
    with torch.no_grad():
        return int(model(x).argmax(-1))


def test_mapped_lite0_is_a_real_imagenet_classifier(lite0_imagenet):
    from skimage import data

    assert _top1(lite0_imagenet, data.chelsea()) in {281, 282, 283, 284, 285}  # domestic cats
    assert _top1(lite0_imagenet, data.coffee()) in {967, 968, 504}  # espresso, cup, coffee mug


def test_imagenet_card_builds_the_same_model(lite0_imagenet):
    card = mz.load_card("imagenet-lite0")
    assert card.num_classes == 1000 and card.classes[281].startswith("tabby")
    with pytest.raises(mz.CardError, match="no positive_class"):  # a reference backbone scores no lesions
        _ = card.positive_index
    model = mz.create_model(card)
    x = card.preprocess(torch.rand(1, 224, 224))
    with torch.no_grad():
        torch.testing.assert_close(model(x), lite0_imagenet(x))


def test_in_order_mapping_checks_every_pair():
    src = torch.load(imagenet.imagenet_lite0_path(), weights_only=True)
    dst = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert len(imagenet.map_state_dict_in_order(src, dst)) == 296
    keys = list(src)
    swapped = dict(src)
    # running_mean and running_var have the same shape: only the kind check catches the swap
    order = keys[:3] + [keys[4], keys[3]] + keys[5:]
    with pytest.raises(mz.WeightsMappingError, match=r"_bn0.running_var -> bn1.running_mean"):
        imagenet.map_state_dict_in_order({k: swapped[k] for k in order}, dst)
    order = [keys[1], keys[0]] + keys[2:]
    with pytest.raises(mz.WeightsMappingError, match=r"_bn0.weight \(32,\) -> conv_stem.weight"):
        imagenet.map_state_dict_in_order({k: swapped[k] for k in order}, dst)
    with pytest.raises(mz.WeightsMappingError, match="295 tensors"):
        imagenet.map_state_dict_in_order({k: swapped[k] for k in keys[:-1]}, dst)


def test_fine_tuning_start_keeps_the_backbone_and_replaces_the_classifier(lite0_imagenet):
    two = imagenet.load_efficientnet_lite0_imagenet(num_classes=2)
    assert two.classifier.out_features == 2
    torch.testing.assert_close(two.conv_head.weight, lite0_imagenet.conv_head.weight)
    torch.testing.assert_close(two.bn2.running_var, lite0_imagenet.bn2.running_var)


# ---------------------------------------------------------------- the committed demo model
def test_demo_model_weights_load_and_match_their_card():
    card = mz.load_card("demo-lite0-synth")
    assert card.weights_path is not None and card.weights_path.is_file()
    assert mz.sha256_file(card.weights_path) == card.weights_sha256 and card.weights_dtype == "float16"
    model = mz.create_model(card)
    with torch.no_grad():
        out = model(card.preprocess(torch.rand(2, 224, 224)))  # (2, 2) logits
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    # the model holds the committed tensors (fp16 on disk, so float32 values equal to the file's)
    saved = load_file(str(card.weights_path))
    state = model.state_dict()
    assert saved.keys() <= state.keys() and any(k.startswith("classifier") for k in saved)
    for k, v in saved.items():
        assert torch.equal(state[k].to(v.dtype), v) and (v.dtype != torch.float16 or state[k].dtype == torch.float32), k
    m = card.metrics
    assert {"auroc", "sensitivity", "specificity", "threshold", "n_train", "n_val", "n_test"} <= set(m)
    assert m["n_test"] == m["n_eval_lesion"] + m["n_eval_normal"]


@pytest.mark.slow
def test_demo_model_reproduces_its_carded_auroc_on_held_out_cases(settings, store):
    """Re-render a few held-out demo cases with the card's seed, cut the same patches, predict, compare."""
    from dashboard.data import demo, patchset, phantom
    from dashboard.data.patchset import PatchSetConfig
    from model_zoo.metrics import compute_auroc
    from model_zoo.train import predict_patches

    card = mz.load_card("demo-lite0-synth")
    seed, n_cases, split = card.training["demo_seed"], card.training["demo_cases"], card.metrics["eval_split"]
    plans = [phantom.plan_case(seed, i) for i in range(n_cases)]
    splits = demo.assign_splits(plans, seed)
    held = [p for p in plans if splits[p.case_id] == split]
    pick = [p for p in held if p.label != "normal"][:4] + [p for p in held if p.label == "normal"][:3]
    for plan in pick:
        rec = demo.render_case(str(settings.demo_dir), seed, plan.index)
        demo._store_case(store, rec, split)  # the same rows build_demo writes
    params = card.training["patchset"]
    ps = patchset.build_patchset(store, card,
                                 PatchSetConfig(source="synthetic", splits=(split,), seed=params["seed"],
                                                per_image_lesion=params["per_image_lesion"],
                                                per_image_normal=params["per_image_normal"], jitter=params["jitter"],
                                                exclusion_margin=params["exclusion_margin"]))
    y = ps.labels == card.positive_index
    assert 20 <= y.sum() and 20 <= (~y).sum()
    p = predict_patches(mz.create_model(card), card, ps.patches)
    auroc = compute_auroc(y, p)
    print(f"held-out subset: {len(y)} patches, AUROC {auroc:.4f}, card {card.metrics['auroc']}")
    assert auroc == pytest.approx(card.metrics["auroc"], abs=0.05)

"""The training command: a tiny fine-tune writes fp16 weights and a card that load and match; metrics; augmentation."""
from __future__ import annotations

import json
import shlex
from itertools import combinations

import numpy as np
import pytest
import torch

import model_zoo as mz
from model_zoo import metrics, train
from model_zoo.cards import dumps_toml

SIZE = 64


def _toy_patchset(path, n_per_split=(64, 16, 24), seed=0):
    """Blobs (lesion) vs smooth noise (normal), 64 px, in the patch-set .npz layout."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    patches, labels, split = [], [], []
    for name, n in zip(("train", "val", "test"), n_per_split):
        for i in range(n):
            lab = i % 2
            img = 0.35 + 0.08 * rng.standard_normal((SIZE, SIZE))
            if lab:
                cx, cy = rng.uniform(24, 40, 2)
                img += 0.45 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(5, 8) ** 2))
            patches.append(np.clip(img * 255, 0, 255).astype(np.uint8))
            labels.append(lab)
            split.append(name)
    n = len(labels)
    np.savez_compressed(path, patches=np.stack(patches), labels=np.array(labels), split=np.array(split),
                        image_id=np.array([f"img{i // 4}" for i in range(n)]), x0=np.zeros(n, int),
                        y0=np.zeros(n, int), meta=np.array(json.dumps({"licence": "toy, CC0", "seed": 9, "per_image_lesion": 2})))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run the CLI once: efficientnet_lite0 at 64 px from ImageNet, a few steps, into a tmp cards dir."""
    tmp = tmp_path_factory.mktemp("train")
    cards = tmp / "cards"
    cards.mkdir()
    raw = dict(name="toy-lite0", arch="efficientnet_lite0", classes=["normal", "lesion"], positive_class="lesion",
               input_size=[3, SIZE, SIZE], pixel_spacing_mm=0.2, concept_layers=["bn2", "blocks.5"],
               default_layer="bn2", head="pool-linear", head_layer="bn2")
    (cards / "toy-lite0.toml").write_text(dumps_toml(raw))
    patches = _toy_patchset(tmp / "toy.npz")
    argv = ["--card", "toy-lite0", "--patches", str(patches), "--epochs", "3", "--batch", "16", "--lr", "2e-3",
            "--seed", "3", "--device", "cpu", "--out-card", "toy-lite0-ft", "--cards-dir", str(cards),
            "--note", "demo_seed=77", "--note", "origin=toy blobs", "--threads", "1", "--no-progress"]
    threads = torch.get_num_threads()
    assert train.main(argv) == 0
    assert torch.get_num_threads() == threads  # --threads does not leak into the caller
    return dict(cards=cards, patches=patches, argv=argv)


def test_training_writes_fp16_weights_and_a_loadable_card_whose_sha_matches(trained):
    card = mz.load_card("toy-lite0-ft", extra_dirs=[trained["cards"]])
    assert card.weights_path == (trained["cards"] / "toy-lite0-ft.safetensors").resolve()
    assert mz.sha256_file(card.weights_path) == card.weights_sha256
    assert card.weights_dtype == "float16"
    from safetensors import safe_open

    with safe_open(str(card.weights_path), "pt") as f:
        assert f.get_tensor("classifier.weight").dtype == torch.float16
    model = mz.create_model(card)
    assert not model.training
    # the card records what was run and on what
    assert card.training["command"] == "python -m model_zoo.train " + shlex.join(trained["argv"])
    assert card.training["init"] == "imagenet-lite0" and card.training["seed"] == 3
    assert card.training["licence"] == "toy, CC0"
    assert card.training["demo_seed"] == 77 and card.training["origin"] == "toy blobs"
    assert card.training["patchset"] == {"seed": 9, "per_image_lesion": 2}
    assert card.training["patches_sha256"] == mz.sha256_file(trained["patches"])
    assert (card.metrics["n_train"], card.metrics["n_val"], card.metrics["n_test"]) == (64, 16, 24)
    assert (card.metrics["n_eval_lesion"], card.metrics["n_eval_normal"]) == (12, 12)


def test_carded_metrics_are_those_of_the_weights_on_disk(trained):
    card = mz.load_card("toy-lite0-ft", extra_dirs=[trained["cards"]])
    data = train.load_patches(trained["patches"])
    test = data["split"] == "test"
    p = train.predict_patches(mz.create_model(card), card, data["patches"][test])
    assert card.metrics["auroc"] == pytest.approx(metrics.compute_auroc(data["labels"][test], p), abs=1e-4)
    op = metrics.apply_threshold(data["labels"][test], p, card.metrics["threshold"])
    assert card.metrics["sensitivity"] == pytest.approx(op["sensitivity"], abs=1e-4)
    # blobs vs noise is easy: a few steps from ImageNet already separate them
    assert card.metrics["auroc"] > 0.8


def test_training_tuned_the_late_layers_and_kept_the_frozen_stem(trained):
    from model_zoo.imagenet import imagenet_lite0_state_dict

    card = mz.load_card("toy-lite0-ft", extra_dirs=[trained["cards"]])
    start, tuned = imagenet_lite0_state_dict(), mz.load_state_dict(card)
    assert tuned["conv_head.weight"].shape == start["conv_head.weight"].shape
    assert not torch.allclose(tuned["conv_head.weight"], start["conv_head.weight"], atol=1e-3)
    assert not torch.allclose(tuned["bn2.running_var"], start["bn2.running_var"], rtol=0.01)
    assert card.training["frozen"] == ["conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2"]
    for key in ("conv_stem.weight", "bn1.running_mean", "bn1.running_var", "blocks.2.0.conv_pwl.weight"):
        torch.testing.assert_close(tuned[key], start[key].half().float())  # only the fp16 rounding


def test_patch_size_must_match_the_card(trained, tmp_path):
    card = mz.load_card("demo-lite0-synth")  # 224 px; the toy patches are 64 px
    with pytest.raises(mz.ModelZooError, match="64x64"):
        train.train(card, trained["patches"], train.TrainConfig(cards_dir=tmp_path))


def test_auroc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 8, 60).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert metrics.compute_auroc(y, s) == pytest.approx(pairs)
    assert metrics.compute_auroc(y, -s) == pytest.approx(1 - pairs)


def test_operating_point_is_the_lowest_threshold_reaching_the_specificity():
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(50, int), np.ones(30, int)]
    s = np.r_[rng.normal(0, 1, 50), rng.normal(1.5, 1, 30)]
    op = metrics.compute_operating_point(y, s, 0.9)
    assert op["specificity"] >= 0.9
    lower = s[s < op["threshold"]].max()
    assert metrics.apply_threshold(y, s, lower)["specificity"] < 0.9
    assert op["sensitivity"] == pytest.approx((s[y == 1] >= op["threshold"]).mean())


def test_balanced_sampling_draws_both_classes_equally():
    labels = np.r_[np.zeros(900, int), np.ones(100, int)]
    idx = train.balanced_indices(labels, 4000, np.random.default_rng(0))
    assert abs(labels[idx].mean() - 0.5) < 0.05


def test_augmentation_keeps_shape_range_and_moves_a_corner_to_a_corner():
    x = torch.zeros(64, 8, 8)
    x[:, 0, 0] = 1.0
    out = train.augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    flat = out.flatten(1).argmax(1)
    rows, cols = flat // 8, flat % 8
    assert set(zip(rows.tolist(), cols.tolist())) == {(0, 0), (0, 7), (7, 0), (7, 7)}
    again = train.augment_batch(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again)
    assert any(not torch.equal(a, b) for a, b in combinations(out[:4], 2))

"""Fine-tune a card's backbone on a patch set and write fp16 safetensors plus an updated model card.

    python -m model_zoo.train --card demo-lite0-synth --patches patches.npz \
        [--epochs 3 --batch 32 --lr 3e-4 --seed 0 --device auto --out-card NAME]

The patch set is the ``.npz`` written by ``dashboard.data.patchset`` (patches uint8 (N, S, S), labels (N,)
with 1 = lesion, split (N,) of "train"/"val"/"test"). Training starts from the offline ImageNet
EfficientNet-Lite0 (``--init imagenet``), the card's own weights (``--init card``) or timm's random
initialisation (``--init random``); ``auto`` picks ImageNet for efficientnet_lite0, else the card's
weights when it has some. From a pretrained start the stem and first blocks stay frozen
(``--freeze auto``; their BatchNorm statistics too). Batches are class-balanced. Augmentation
(``--augment``): "patch" is flips, 90-degree rotations and a small gamma/contrast change (synthetic
patches have no up or left); "mammo" keeps the model-space anatomy of real films (chest wall left,
so no left-right flip and no 90-degree turn) and uses an up-down flip, a small rotation and scale
jitter and small gamma/contrast changes.
The held-out split gives AUROC and the sensitivity at 90 % specificity, computed from the
fp16 weights as written, so the card describes the file on disk.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cards import CARDS_DIR, WEIGHTS_DIR, ModelCard, load_card, save_card
from .errors import CardError, ModelZooError
from .factory import create_model, save_weights, sha256_file
from .imagenet import load_efficientnet_lite0_imagenet
from .metrics import apply_threshold, compute_auroc, compute_operating_point
from .progress import Progress, tqdm_progress

TARGET_SPECIFICITY = 0.9
# "auto" freezing: the stem and the first blocks keep their ImageNet filters (edges, blobs, texture);
# it also halves the step time on a 2-core CPU, since their backward pass is skipped
AUTO_FREEZE = {
    "efficientnet": ("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2"),
    "resnet": ("conv1", "bn1", "layer1"),
}


def resolve_device(setting: str = "auto") -> torch.device:
    """Pick the device once: CUDA when present and asked for ("auto"), else CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_patches(path: str | Path) -> dict[str, np.ndarray]:
    """Read a patch set ``.npz`` (no pickles) and check the arrays agree in length."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    for key in ("patches", "labels", "split"):
        if key not in data:
            raise ModelZooError(f"{path}: patch set has no {key!r} array")
    n = len(data["patches"])
    if data["patches"].ndim != 3 or data["patches"].dtype != np.uint8:
        raise ModelZooError(f"{path}: patches must be uint8 (N, S, S), got {data['patches'].dtype} "
                            f"{data['patches'].shape}")
    if len(data["labels"]) != n or len(data["split"]) != n:
        raise ModelZooError(f"{path}: patches, labels and split differ in length")
    data["split"] = data["split"].astype(str)
    return data


AUGMENTATIONS = ("patch", "mammo")


def augment_batch(x: torch.Tensor, gen: torch.Generator, preset: str = "patch") -> torch.Tensor:
    """Random per-patch augmentation of a batch. x: (N, S, S) float in [0, 1]; returns the same shape.

    "patch"  flips, 90-degree rotations, gamma in [0.8, 1.25] and contrast in [0.9, 1.1]
    "mammo"  see ``augment_mammo``
    """
    if preset == "mammo":
        return augment_mammo(x, gen)
    if preset != "patch":
        raise ModelZooError(f"unknown augmentation {preset!r}; use one of {AUGMENTATIONS}")
    n = x.shape[0]
    r = torch.rand(n, 5, generator=gen).to(x.device)  # (N, 5): one column per random choice
    x = torch.where((r[:, 0] < 0.5).view(-1, 1, 1), x.flip(-1), x)
    x = torch.where((r[:, 1] < 0.5).view(-1, 1, 1), x.flip(-2), x)
    k = (r[:, 2] * 4).long().clamp(max=3)
    out = x.clone()
    for turns in range(1, 4):  # four groups at most, not a loop over patches
        sel = k == turns
        if sel.any():
            out[sel] = torch.rot90(x[sel], turns, dims=(-2, -1))
    gamma = torch.exp((r[:, 3] * 2 - 1) * math.log(1.25)).view(-1, 1, 1)
    out = out.clamp(0, 1) ** gamma
    contrast = (0.9 + 0.2 * r[:, 4]).view(-1, 1, 1)
    mean = out.mean(dim=(-2, -1), keepdim=True)
    return ((out - mean) * contrast + mean).clamp(0, 1)  # (N, S, S)


def augment_mammo(x: torch.Tensor, gen: torch.Generator, *, max_degrees: float = 10.0,
                  scale_range: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Augmentation for real mammogram patches in model space (chest wall on the left).

    Up-down flip (p = 0.5: superior/inferior mirror, the chest wall stays left; CC views are near
    symmetric about the nipple axis), rotation within +-``max_degrees`` and scale in ``scale_range``
    about the patch centre (positioning and breast-size variation; bilinear, reflected border),
    gamma in [0.85, 1.18] and contrast in [0.9, 1.1] over the breast (zero background stays zero).
    No left-right flip or 90-degree rotation: model space never shows a chest wall on the right
    or the pectoral muscle sideways. x: (N, S, S) float in [0, 1] -> (N, S, S).
    """
    n = x.shape[0]
    r = torch.rand(n, 5, generator=gen).to(x.device)  # (N, 5)
    x = torch.where((r[:, 0] < 0.5).view(-1, 1, 1), x.flip(-2), x)
    angle = (r[:, 1] * 2 - 1) * math.radians(max_degrees)  # (N,)
    lo, hi = scale_range
    zoom = torch.exp(math.log(lo) + r[:, 2] * (math.log(hi) - math.log(lo)))  # (N,) >1 magnifies
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], -1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], -1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, (n, 1, x.shape[-2], x.shape[-1]), align_corners=False)
    out = F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="reflection",
                        align_corners=False)[:, 0]  # (N, S, S)
    gamma = torch.exp((r[:, 3] * 2 - 1) * math.log(1.18)).view(-1, 1, 1)
    out = out.clamp(0, 1) ** gamma
    tissue = out > 0
    contrast = (0.9 + 0.2 * r[:, 4]).view(-1, 1, 1)
    mean = (out * tissue).sum(dim=(-2, -1), keepdim=True) / tissue.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
    return torch.where(tissue, (out - mean) * contrast + mean, out).clamp(0, 1)  # (N, S, S)


@torch.no_grad()
def predict_patches(model: nn.Module, card: ModelCard, patches: np.ndarray, *, batch: int = 64,
                    device: torch.device | str = "cpu") -> np.ndarray:
    """Positive-class probability of each patch. patches: uint8 (N, S, S) -> float64 (N,)."""
    model.eval()
    out = []
    for i in range(0, len(patches), batch):
        x = torch.from_numpy(patches[i:i + batch]).to(device, torch.float32) / 255.0  # (B, S, S)
        logits = model(card.preprocess(x).contiguous(memory_format=torch.channels_last))  # (B, classes)
        out.append(logits.float().softmax(-1)[:, card.positive_index].cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def initial_model(card: ModelCard, init: str) -> tuple[nn.Module, str]:
    """The model training starts from and a word saying which start it is."""
    if init == "auto":
        if card.arch == "efficientnet_lite0":
            init = "imagenet"
        elif card.weights_path is not None and card.weights_path.is_file():
            init = "card"
        else:
            init = "random"
    if init == "imagenet":
        if card.arch != "efficientnet_lite0":
            raise CardError(f"--init imagenet is only available for efficientnet_lite0, not {card.arch}")
        model = load_efficientnet_lite0_imagenet(num_classes=card.num_classes)
        # timm's default init of a 2-way head gives logits of several units on ImageNet features
        # (initial loss ~2); a small head starts at chance and trains in fewer steps
        head = model.get_classifier()
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        return model, "imagenet-lite0"
    if init == "card":
        return create_model(card, weights=True), f"card:{card.name}@{card.weights_sha256[:12]}"
    if init == "random":
        return create_model(card, weights=False), "random"
    raise CardError(f"unknown --init {init!r} (auto, imagenet, card, random)")


def resolve_freeze(card: ModelCard, freeze: str, init_used: str) -> tuple[str, ...]:
    """Module names whose parameters stay fixed: "auto" (early layers, only for a pretrained start),
    "none", or a comma-separated list."""
    if freeze == "none":
        return ()
    if freeze == "auto":
        if init_used == "random":
            return ()
        family = next((k for k in AUTO_FREEZE if card.arch.startswith(k)), None)
        return AUTO_FREEZE[family] if family else ()
    return tuple(x.strip() for x in freeze.split(",") if x.strip())


def freeze_modules(model: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    """Stop gradients into the named modules; returns them (callers keep them in eval mode,
    so their BatchNorm statistics stay those of the start weights)."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise CardError(f"cannot freeze {missing}: {type(model).__name__} has no such modules")
    for n in names:
        for p in modules[n].parameters():
            p.requires_grad_(False)
    return [modules[n] for n in names]


def balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices drawn with replacement so every class is drawn equally often on average."""
    classes, counts = np.unique(labels, return_counts=True)
    weight = 1.0 / counts[np.searchsorted(classes, labels)]
    return rng.choice(len(labels), size=n, replace=True, p=weight / weight.sum())


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


@dataclass(frozen=True)
class TrainConfig:
    """How ``train`` fine-tunes a card (the command line's options; see the module doc).

    epochs, batch, lr, weight_decay  AdamW, linear warm-up over 5 % of the steps then cosine decay;
                                     ``batch`` patches per step, class-balanced
    seed              torch, numpy and the augmentation generator
    device            "auto", "cpu" or "cuda[:N]"
    init              "auto", "imagenet", "card" or "random" (``initial_model``)
    freeze            "auto", "none" or module names (``resolve_freeze``)
    augment           "patch" or "mammo" (``augment_batch``)
    max_train         training patches drawn per epoch (cap); None: the whole train split
    eval_split        the split AUROC and the operating point are reported on
    out_card          name of the written card (default: the card's own)
    cards_dir, weights_dir  where the card and its fp16 weights go (default: the built-in folders)
    data_description, licence, command, notes  facts for the card's [training] table
    """

    epochs: int = 3
    batch: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    init: str = "auto"
    freeze: str = "auto"
    augment: str = "patch"
    max_train: int | None = None
    eval_split: str = "test"
    out_card: str | None = None
    cards_dir: str | Path | None = None
    weights_dir: str | Path | None = None
    data_description: str | None = None
    licence: str | None = None
    command: str | None = None
    notes: dict | None = None


def train(card: ModelCard, patches_path: str | Path, config: TrainConfig = TrainConfig(), *,
          progress: Progress | None = None) -> ModelCard:
    """Fine-tune, evaluate on ``config.eval_split``, write fp16 weights and the card; return the written card.

    The threshold for sensitivity/specificity is picked at 90 % specificity on "val" (when it holds
    both classes) and applied to the eval split; AUROC is computed on the eval split.
    ``progress(step, total_steps, "loss ...")`` after every optimiser step.
    """
    if config.augment not in AUGMENTATIONS:
        raise ModelZooError(f"unknown augmentation {config.augment!r}; use one of {AUGMENTATIONS}")
    t_start = time.perf_counter()
    data = load_patches(patches_path)
    _check_patches(card, data, config.eval_split)
    dev = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model, init_used = initial_model(card, config.init)
    frozen_names = resolve_freeze(card, config.freeze, init_used)
    frozen = freeze_modules(model, frozen_names)
    # channels-last convolutions are about twice as fast on CPU (oneDNN) and no slower on CUDA
    model = model.to(dev, memory_format=torch.channels_last).train()
    for mod in frozen:
        mod.eval()
    steps, losses = _fit(model, card, data, config, dev, progress)
    train_seconds = time.perf_counter() - t_start

    # write the weights, then evaluate the model as stored (fp16 -> fp32), through the card
    written = _write_weights(model, card, config, init_used)
    model = create_model(written, weights=True, device=dev).to(memory_format=torch.channels_last)
    metrics = evaluate(model, written, data["patches"], data["labels"].astype(np.int64), data["split"],
                       eval_split=config.eval_split, device=dev)
    metrics.update(train_final_loss=float(np.mean(losses[-20:])))
    training = _training_table(config, patches_path, data, init_used, frozen_names,
                               dict(steps=steps, device=str(dev), train_seconds=round(train_seconds, 1)))
    return save_card(replace(written, training=training, metrics=metrics), written.path)


def _check_patches(card: ModelCard, data: dict[str, np.ndarray], eval_split: str) -> None:
    """Raise ModelZooError unless the patch set fits the card and both classes are in train and eval."""
    patches, labels, split = data["patches"], data["labels"].astype(np.int64), data["split"]
    if patches.shape[1] != card.patch_size or patches.shape[2] != card.patch_size:
        raise ModelZooError(f"patches are {patches.shape[1]}x{patches.shape[2]} px but card {card.name!r} "
                            f"expects {card.patch_size}; build the patch set with this card")
    if labels.max(initial=0) >= card.num_classes or labels.min(initial=0) < 0:
        raise ModelZooError(f"labels out of range for {card.num_classes} classes")
    if len(np.unique(labels[split == "train"])) < 2:
        raise ModelZooError("the training split needs patches of both classes")
    if len(np.unique(labels[split == eval_split])) < 2:
        raise ModelZooError(f"the {eval_split!r} split needs patches of both classes for AUROC")


def _fit(model: nn.Module, card: ModelCard, data: dict[str, np.ndarray], config: TrainConfig,
         dev: torch.device, progress: Progress | None) -> tuple[int, list[float]]:
    """The training loop: class-balanced batches, augmentation, AdamW with warm-up and cosine decay.

    Returns (optimiser steps, loss of every step)."""
    patches, labels = data["patches"], data["labels"].astype(np.int64)
    train_idx = np.flatnonzero(data["split"] == "train")
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    batch = config.batch
    steps_per_epoch = max(1, math.ceil(min(len(train_idx), config.max_train or len(train_idx)) / batch))
    total = steps_per_epoch * config.epochs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, max(1, total // 20)))
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    for _epoch in range(config.epochs):
        order = train_idx[balanced_indices(labels[train_idx], steps_per_epoch * batch, rng)]
        for step in range(steps_per_epoch):
            idx = np.sort(order[step * batch:(step + 1) * batch])
            x = torch.from_numpy(patches[idx]).to(dev, torch.float32) / 255.0  # (B, S, S)
            y = torch.from_numpy(labels[idx]).to(dev)  # (B,)
            x = augment_batch(x, gen, config.augment)
            x = card.preprocess(x).contiguous(memory_format=torch.channels_last)  # (B, 3, S, S)
            loss = loss_fn(model(x), y)  # logits (B, classes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(len(losses), total, f"loss {np.mean(losses[-20:]):.3f}")
    return total, losses


def _write_weights(model: nn.Module, card: ModelCard, config: TrainConfig, init_used: str) -> ModelCard:
    """Save the weights as fp16 safetensors; the card (not yet written) that points to them."""
    name = config.out_card or card.name
    cards_dir = Path(config.cards_dir) if config.cards_dir else CARDS_DIR
    weights_dir = config.weights_dir
    if weights_dir is None:
        weights_dir = WEIGHTS_DIR if cards_dir.resolve() == CARDS_DIR else cards_dir
    weights_path = Path(weights_dir) / f"{name}.safetensors"
    sha = save_weights(model, weights_path, dtype=torch.float16,
                       metadata={"card": name, "arch": card.arch, "init": init_used})
    card_path = cards_dir / f"{name}.toml"
    rel = Path(_relpath(weights_path, card_path.parent))
    return replace(card, name=name, weights_file=rel.as_posix(), weights_sha256=sha, weights_dtype="float16",
                   path=card_path.resolve())


def _training_table(config: TrainConfig, patches_path: str | Path, data: dict[str, np.ndarray], init_used: str,
                    frozen_names: tuple[str, ...], run: dict) -> dict:
    """The card's [training] table: data, licence, command, start, hyper-parameters, the run's facts."""
    meta = str(data["meta"]) if "meta" in data else ""
    training = {
        "data": config.data_description or _describe(patches_path, data, meta),
        "licence": config.licence or _licence(meta),
        "command": config.command or "python -m model_zoo.train " + shlex.join(sys.argv[1:]),
        "init": init_used,
        "frozen": list(frozen_names),
        "patches_sha256": sha256_file(patches_path),
        "seed": config.seed, "epochs": config.epochs, "batch": config.batch, "lr": config.lr,
        "weight_decay": config.weight_decay,
        "augment": config.augment,
        "steps": run["steps"], "device": run["device"], "train_seconds": run["train_seconds"],
        "trained_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        **(config.notes or {}),
    }
    patchset = _patchset_params(meta)
    if patchset:
        training["patchset"] = patchset
    return training


def evaluate(model: nn.Module, card: ModelCard, patches: np.ndarray, labels: np.ndarray, split: np.ndarray, *,
             eval_split: str = "test", device: torch.device | str = "cpu") -> dict:
    """AUROC on ``eval_split`` and the operating point at 90 % specificity (threshold from "val" if usable)."""
    pos = card.positive_index
    y = labels == pos
    ev = split == eval_split
    p_eval = predict_patches(model, card, patches[ev], device=device)
    metrics: dict = {"eval_split": eval_split, "auroc": round(compute_auroc(y[ev], p_eval), 4)}
    va = split == "val"
    threshold_split = eval_split
    if eval_split != "val" and va.any() and 0 < y[va].sum() < va.sum():
        p_val = predict_patches(model, card, patches[va], device=device)
        op_val = compute_operating_point(y[va], p_val, TARGET_SPECIFICITY)
        metrics["val_auroc"] = round(compute_auroc(y[va], p_val), 4)
        threshold_split = "val"
        op = apply_threshold(y[ev], p_eval, op_val["threshold"])
    else:
        op = compute_operating_point(y[ev], p_eval, TARGET_SPECIFICITY)
    # the sensitivity the held-out split itself allows at 90 % specificity (its own ROC curve)
    own = compute_operating_point(y[ev], p_eval, TARGET_SPECIFICITY)
    metrics.update({
        "target_specificity": TARGET_SPECIFICITY,
        "threshold": round(op["threshold"], 6),
        "threshold_split": threshold_split,
        "sensitivity": round(op["sensitivity"], 4),
        "specificity": round(op["specificity"], 4),
        "sensitivity_at_90_specificity": round(own["sensitivity"], 4),
        "n_eval_lesion": int(y[ev].sum()),
        "n_eval_normal": int((~y[ev]).sum()),
    })
    for s in ("train", "val", "test"):
        metrics[f"n_{s}"] = int((split == s).sum())
    return metrics


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(Path(target).resolve(), Path(start).resolve())


def _describe(path, data: dict, meta: str) -> str:
    n = len(data["labels"])
    n_pos = int((data["labels"] == 1).sum())
    n_img = len(np.unique(data["image_id"])) if "image_id" in data else "?"
    desc = f"{n} patches ({n_pos} lesion, {n - n_pos} normal) from {n_img} images, file {Path(path).name}"
    return desc + (f"; patch set meta: {meta}" if meta else "")


PATCHSET_KEYS = ("card", "patch_size", "pixel_spacing_mm", "seed", "splits", "sources", "per_image_lesion",
                 "per_image_normal", "jitter", "exclusion_margin", "min_breast_fraction", "n_images",
                 "split_by_patient", "split_seed", "split_images")


def _patchset_params(meta: str) -> dict:
    """How the patch set was cut (from its meta), so a test can cut the same patches again."""
    try:
        d = json.loads(meta) if meta else {}
    except ValueError:
        return {}
    return {k: d[k] for k in PATCHSET_KEYS if k in d and d[k] is not None} if isinstance(d, dict) else {}


def _parse_notes(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ModelZooError(f"--note needs KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = int(value)
        except ValueError:
            try:
                out[key.strip()] = float(value)
            except ValueError:
                out[key.strip()] = value
    return out


def _licence(meta: str) -> str:
    try:
        return str(json.loads(meta).get("licence", "")) or "unknown"
    except (ValueError, AttributeError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model_zoo.train", description=__doc__.splitlines()[0])
    ap.add_argument("--card", required=True, help="model card to fine-tune (its arch, classes, input size)")
    ap.add_argument("--patches", required=True, help=".npz patch set from python -m dashboard.data.patchset")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument("--init", default="auto", choices=["auto", "imagenet", "card", "random"])
    ap.add_argument("--out-card", default=None, help="name of the written card (default: --card)")
    ap.add_argument("--cards-dir", default=None, help="folder to read extra cards from and write the card to")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--max-train", type=int, default=None, help="training patches drawn per epoch (cap)")
    ap.add_argument("--eval-split", default="test")
    ap.add_argument("--data-description", default=None)
    ap.add_argument("--licence", default=None)
    ap.add_argument("--freeze", default="auto",
                    help="modules kept fixed: auto (stem + early blocks when starting pretrained), none, "
                         "or names like conv_stem,bn1,blocks.0")
    ap.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                    help="extra facts for the card's [training] table, e.g. demo_seed=1234 (repeatable)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: torch's choice); on a shared machine also "
                         "set OMP_WAIT_POLICY=PASSIVE")
    ap.add_argument("--augment", default="patch", choices=AUGMENTATIONS,
                    help="patch: flips + 90-degree turns (synthetic patches); mammo: real films in model "
                         "space (up-down flip, small rotation/scale, gamma/contrast)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        notes = _parse_notes(args.note)
        card = load_card(args.card, extra_dirs=[args.cards_dir] if args.cards_dir else ())
        config = TrainConfig(
            epochs=args.epochs, batch=args.batch, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
            device=args.device, init=args.init, freeze=args.freeze, augment=args.augment, max_train=args.max_train,
            eval_split=args.eval_split, out_card=args.out_card, cards_dir=args.cards_dir,
            weights_dir=args.weights_dir, data_description=args.data_description, licence=args.licence,
            command="python -m model_zoo.train " + shlex.join(sys.argv[1:] if argv is None else argv), notes=notes)
        if args.no_progress:
            written = train(card, args.patches, config)
        else:
            with tqdm_progress(f"train {card.name}", unit="step") as progress:
                written = train(card, args.patches, config, progress=progress)
    except ModelZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads_before)  # main() may run inside another process (tests)
    m = written.metrics
    print(f"wrote {written.path} and {written.weights_path}")
    print(f"{m['eval_split']}: AUROC {m['auroc']:.4f}, sensitivity {m['sensitivity']:.3f} at specificity "
          f"{m['specificity']:.3f} (threshold {m['threshold']:.4f} from {m['threshold_split']}); "
          f"n_train={m['n_train']} n_val={m['n_val']} n_test={m['n_test']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

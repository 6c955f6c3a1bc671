"""The one factory: a model card -> a timm model with its checked weights, in eval mode.

Weights are safetensors files whose SHA-256 is recorded in the card and checked at every load;
fp16 files are loaded into fp32 models. ``save_weights`` writes the files the cards point to.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .cards import PACKAGE_WEIGHTS, ModelCard
from .errors import CardError, WeightsIntegrityError, WeightsMissingError
from .imagenet import imagenet_lite0_state_dict


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_weights(card: ModelCard) -> Path:
    """Path of the card's weights after checking the file exists and its SHA-256 matches the card."""
    path = card.weights_path
    if path is None:
        raise CardError(f"Model card {card.name!r} names no weights file.")
    if not path.is_file():
        raise WeightsMissingError(f"Weights file of model card {card.name!r} not found: {path}")
    got = sha256_file(path)
    if got != card.weights_sha256:
        raise WeightsIntegrityError(path, card.weights_sha256, got)
    return path


def load_state_dict(card: ModelCard) -> dict[str, torch.Tensor]:
    """The card's checked weights as a CPU state dict, floating tensors in fp32."""
    path = verify_weights(card)
    if card.weights_file in PACKAGE_WEIGHTS:
        return dict(imagenet_lite0_state_dict())
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CardError(f"{path}: not a readable safetensors file ({exc})") from exc
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def check_layers(card: ModelCard, model: nn.Module) -> None:
    """Raise CardError when a layer the card names is not a module of the model."""
    names = dict(model.named_modules())
    wanted = [*card.concept_layers, *(x for x in (card.head_layer, card.classifier) if x)]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise CardError(f"Model card {card.name!r}: {card.arch} has no module(s) {missing}")
    if card.head == "pool-linear" and card.classifier and not isinstance(names[card.classifier], nn.Linear):
        raise CardError(f"Model card {card.name!r}: head 'pool-linear' but {card.classifier!r} is not nn.Linear")


def create_model(card: ModelCard, *, weights: bool = True, device: str | torch.device = "cpu",
                 pretrained: bool | None = None) -> nn.Module:
    """``timm.create_model(card.arch, num_classes=len(card.classes), pretrained=False)`` + the card's weights.

    weights     load the card's safetensors (SHA-256 checked: WeightsIntegrityError on mismatch);
                False gives timm's random initialisation. ``pretrained`` is an alias kept for
                ARCHITECTURE.md's spelling.
    Returns the model in eval mode on ``device``: (N, C, S, S) normalised input -> (N, classes) logits.
    """
    if pretrained is not None:
        weights = pretrained
    try:
        model = timm.create_model(card.arch, num_classes=card.num_classes, pretrained=False)
    except RuntimeError as exc:  # timm raises RuntimeError for an unknown architecture
        raise CardError(f"Model card {card.name!r}: timm cannot build {card.arch!r} ({exc})") from exc
    check_layers(card, model)
    if weights:
        state = load_state_dict(card)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CardError(
                f"Weights {card.weights_path} do not fit {card.arch} with {card.num_classes} classes: "
                + str(exc).splitlines()[0]) from exc
    return model.to(device).eval()


def save_weights(state: nn.Module | Mapping[str, torch.Tensor], path: str | Path, *,
                 dtype: torch.dtype = torch.float16, metadata: dict[str, str] | None = None) -> str:
    """Write a model's (or state dict's) tensors as safetensors, floats cast to ``dtype``.

    Returns the file's SHA-256 for the card. Integer buffers (BatchNorm counters) keep their type.
    """
    if isinstance(state, nn.Module):
        state = state.state_dict()
    out = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
           for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(out, str(tmp), metadata=metadata)
    tmp.replace(path)
    return sha256_file(path)

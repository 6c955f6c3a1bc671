"""Where does the classifier look? Captum attributions for a patch or a whole mammogram.

Methods (all computed by captum; nothing here re-implements attribution math):

gradcam         LayerGradCam at the card's default layer, ReLU'd, bilinearly upsampled with
                ``LayerAttribution.interpolate`` to the input. The fast default (1 forward + 1 backward).
guided-gradcam  GuidedGradCam (guided backprop x Grad-CAM). Guided backprop only changes
                ``nn.ReLU`` modules; a backbone with ReLU6/SiLU gets plain gradients x Grad-CAM.
saliency        |d logit / d input| (Saliency, abs=True).
ig              IntegratedGradients from a black (0) image, Gauss-Legendre steps, batched by
                ``internal_batch_size``; the convergence delta goes in ``stats``.
ig-smooth       NoiseTunnel(smoothgrad) over IG: ``nt_samples`` noisy copies, noise ``noise_sd``
                in grey units ([0, 1]).
occlusion       Occlusion with a black window (default S/8 px, stride half the window).

Attributions are taken with respect to the preprocessed 3-channel input (the card's
``preprocess`` need not be differentiable) and summed over channels, which for IG and
occlusion equals the attribution of the grey pixel (preprocessing is per-channel affine).

The shared model is run under ``lock_for(model)`` and ``model_state_guard(model)``: after
any call (or exception) parameters, training flags, requires_grad, hooks and in-place flags
are as before.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from captum.attr import (
    GuidedGradCam,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from dashboard.engine.inference import preprocess, target_class
from dashboard.engine.model_state import hook_counts, lock_for, model_device, model_state_guard

__all__ = [
    "METHODS",
    "Attribution",
    "AttributionConfig",
    "attribute",
    "attribute_image",
    "overlay",
    "lock_for",
    "model_state_guard",
    "hook_counts",
]

METHODS = ("gradcam", "guided-gradcam", "saliency", "ig", "ig-smooth", "occlusion")
SIGNED = {"guided-gradcam", "ig", "ig-smooth", "occlusion"}


@dataclass(frozen=True)
class Attribution:
    """One attribution map.

    map     (H, W) float32; unsigned methods (gradcam, saliency) in [0, 1] (divided by the
            max), signed ones (ig, ig-smooth, occlusion, guided-gradcam) in [-1, 1] (divided
            by the max |value|); positive = evidence for ``target``
    method  the method name, ``target`` the class index explained, ``layer`` for layer methods
    signed  whether negative values are meaningful
    stats   raw (unnormalised) figures: min, max, sum, abs_sum, prob (softmax prob of target),
            plus method extras (IG: delta = convergence error)
    """

    map: np.ndarray
    method: str
    target: int
    signed: bool
    layer: str | None = None
    stats: dict[str, float] = field(default_factory=dict)


def _resolve_layer(model: nn.Module, card: Any, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    """(name, module) of the layer for layer methods; default ``card.default_layer``."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError("layer module is not part of the model")
    name = layer or getattr(card, "default_layer", None)
    if not name:
        raise ValueError("no layer given and the card has no default_layer")
    return name, model.get_submodule(name)


@dataclass(frozen=True)
class AttributionConfig:
    """Which attribution ``attribute`` / ``attribute_image`` compute, and how.

    method               one of ``METHODS`` (module doc)
    target               class index or name explained (default: the card's positive class)
    layer                layer name or module for gradcam / guided-gradcam (default ``card.default_layer``)
    n_steps              IG integration steps (default 32 for a patch, 16 for a whole image)
    internal_batch_size  how many IG steps (and occlusion windows) go through the model at once
                         (default 16 for a patch, 4 for a whole image)
    nt_samples, noise_sd ig-smooth: noisy copies, and their noise in grey units ([0, 1])
    window, stride       occlusion window and stride in model px (patch: S/8 and window/2;
                         whole image: the card's S/2 and S/4)
    device               where the model is (default its own device)
    """

    method: str = "gradcam"
    target: int | str | None = None
    layer: str | nn.Module | None = None
    n_steps: int | None = None
    internal_batch_size: int | None = None
    nt_samples: int = 8
    noise_sd: float = 0.1
    window: int | None = None
    stride: int | None = None
    device: str | torch.device | None = None


def _raw_attribution(model: nn.Module, x: torch.Tensor, base: torch.Tensor, layer: nn.Module | None,
                     config: AttributionConfig, card_std) -> tuple[torch.Tensor, dict[str, float]]:
    """Captum attribution of ``model`` at ``x`` for ``config.target`` (an index here).

    x, base: (1, 3, H, W) preprocessed input and the preprocessed black image.
    Returns ((H, W) float32 map summed over channels, extra stats).
    """
    method, target, n_steps, batch = config.method, config.target, config.n_steps, config.internal_batch_size
    h, w = x.shape[-2:]
    extra: dict[str, float] = {}
    x = x.detach().clone().requires_grad_(True)  # captum's layer methods need a graph
    if method == "gradcam":
        cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)  # (1, 1, h', w')
        extra["layer_h"], extra["layer_w"] = float(cam.shape[-2]), float(cam.shape[-1])
        up = LayerAttribution.interpolate(cam, (h, w), interpolate_mode="bilinear")  # (1, 1, H, W)
        return up[0, 0], extra
    if method == "guided-gradcam":
        with warnings.catch_warnings():  # captum announces its (temporary) ReLU hooks every call
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            attr = GuidedGradCam(model, layer).attribute(x, target=target, interpolate_mode="bilinear")  # (1, 3, H, W)
    elif method == "saliency":
        attr = Saliency(model).attribute(x, target=target, abs=True)  # (1, 3, H, W)
    elif method == "ig":
        attr, delta = IntegratedGradients(model).attribute(
            x, baselines=base, target=target, n_steps=n_steps, method="gausslegendre",
            internal_batch_size=batch, return_convergence_delta=True,
        )  # (1, 3, H, W), (1,)
        extra["delta"] = float(delta.abs().max())
    elif method == "ig-smooth":
        std = float(np.mean(card_std))  # noise is in grey units; preprocessing divides by std
        attr = NoiseTunnel(IntegratedGradients(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=int(config.nt_samples),
            nt_samples_batch_size=max(1, batch // n_steps), stdevs=float(config.noise_sd) / std,
            baselines=base, target=target, n_steps=n_steps, method="gausslegendre",
            internal_batch_size=batch,
        )  # (1, 3, H, W)
        extra["nt_samples"] = float(int(config.nt_samples))
    elif method == "occlusion":
        size = int(config.window or max(4, min(h, w) // 8))
        stride = int(config.stride or max(1, size // 2))
        attr = Occlusion(model).attribute(
            x, sliding_window_shapes=(3, size, size), strides=(3, stride, stride), baselines=base,
            target=target, perturbations_per_eval=batch,
        )  # (1, 3, H, W)
        extra["window"], extra["stride"] = float(size), float(stride)
    else:
        raise ValueError(f"unknown attribution method {method!r}; one of {METHODS}")
    return attr[0].sum(dim=0), extra  # (H, W)


def _normalise(raw: np.ndarray, signed: bool) -> np.ndarray:
    """Divide by the max (unsigned) or the max |value| (signed); an all-zero map stays zero."""
    raw = np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(np.abs(raw).max()) if signed else float(raw.max())
    if scale <= 0:
        return np.zeros_like(raw)
    out = raw / scale
    return out if signed else np.clip(out, 0.0, 1.0)


def _attribute_gray(model: nn.Module, card: Any, gray: np.ndarray, config: AttributionConfig) -> Attribution:
    """Shared body of ``attribute`` and ``attribute_image``: gray (H, W) -> Attribution.

    ``config`` has its step and batch defaults filled in; target and layer are resolved here."""
    if config.method not in METHODS:
        raise ValueError(f"unknown attribution method {config.method!r}; one of {METHODS}")
    device = model_device(model, config.device)
    target = target_class(card, config.target)[0]
    layer_name, layer_module = (None, None)
    if config.method in ("gradcam", "guided-gradcam"):
        layer_name, layer_module = _resolve_layer(model, card, config.layer)
    g = torch.as_tensor(np.asarray(gray, dtype=np.float32), device=device)[None]  # (1, H, W)
    with lock_for(model), model_state_guard(model, no_inplace=True):
        with torch.no_grad():
            x = preprocess(card, g)  # (1, 3, H, W)
            base = preprocess(card, torch.zeros_like(g))  # (1, 3, H, W): black image
            prob = float(torch.softmax(model(x).float(), dim=1)[0, target])
        with torch.enable_grad():
            raw_t, extra = _raw_attribution(model, x, base, layer_module, replace(config, target=target),
                                            getattr(card, "std", (1.0,)))
        raw = raw_t.detach().float().cpu().numpy()  # (H, W)
    signed = config.method in SIGNED
    stats = {
        "min": float(raw.min()),
        "max": float(raw.max()),
        "sum": float(raw.sum()),
        "abs_sum": float(np.abs(raw).sum()),
        "prob": prob,
        **extra,
    }
    return Attribution(_normalise(raw, signed), config.method, target, signed, layer_name, stats)


def attribute(model: nn.Module, card: Any, patch: np.ndarray,
              config: AttributionConfig = AttributionConfig()) -> Attribution:
    """Attribution map of one grey patch (``AttributionConfig`` says which and for what class).

    patch: (S, S) float in [0, 1], model space -> ``Attribution.map`` (S, S) float32.
    """
    patch = np.asarray(patch, dtype=np.float32)
    if patch.ndim != 2:
        raise ValueError(f"patch must be (S, S), got {patch.shape}")
    config = replace(config, n_steps=config.n_steps or 32, internal_batch_size=config.internal_batch_size or 16)
    return _attribute_gray(model, card, patch, config)


def attribute_image(model: nn.Module, card: Any, img: np.ndarray, mask: np.ndarray | None = None,
                    config: AttributionConfig = AttributionConfig()) -> Attribution:
    """Attribution over a whole model-space image for the viewer overlay.

    img (H, W) float in [0, 1], mask (H, W) bool -> ``Attribution.map`` (H, W), zero outside
    the mask and renormalised inside it. The model runs fully convolutionally on the whole
    image (its global pooling averages the per-position scores), so Grad-CAM gives the class
    activation map of the FCN pass. Occlusion defaults to a window of half the card's patch size
    (slow on a whole image; prefer gradcam).
    """
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"img must be (H, W), got {img.shape}")
    config = replace(config, n_steps=config.n_steps or 16, internal_batch_size=config.internal_batch_size or 4)
    if config.method == "occlusion":
        size = card.patch_size
        config = replace(config, window=config.window or size // 2, stride=config.stride or size // 4)
    att = _attribute_gray(model, card, img, config)
    if mask is None:
        return att
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != img.shape:
        raise ValueError(f"mask {mask.shape} does not match image {img.shape}")
    return Attribution(
        _normalise(att.map * mask, att.signed), att.method, att.target, att.signed, att.layer, att.stats
    )


def overlay(
    gray: np.ndarray,
    heat: np.ndarray,
    alpha: float = 0.45,
    cmap: str = "jet",
    *,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Blend a heat map over a grey image for display.

    gray (H, W) in [0, 1]; heat (H, W) any range, mapped to [vmin, vmax] (default: [0, max] for a
    non-negative map, [-m, m] with m = max |heat| for a signed one). Returns uint8 RGB (H, W, 3):
    (1 - alpha) * grey + alpha * cmap(heat).
    """
    import matplotlib  # optional: not in requirements.txt; only this display helper needs it

    gray = np.asarray(gray, dtype=np.float32)
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    if gray.shape != heat.shape or gray.ndim != 2:
        raise ValueError(f"gray {gray.shape} and heat {heat.shape} must be the same (H, W)")
    if vmin is None or vmax is None:
        m = float(np.abs(heat).max())
        lo, hi = (-m, m) if heat.min() < 0 else (0.0, float(heat.max()))
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    norm = np.clip((heat - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    colour = matplotlib.colormaps[cmap](norm)[..., :3]  # (H, W, 3) in [0, 1]
    base = np.clip(gray, 0.0, 1.0)[..., None]  # (H, W, 1)
    rgb = (1.0 - alpha) * base + alpha * colour
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

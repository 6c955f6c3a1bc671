"""What if a concept were absent: two interventions on one patch and what they do to the prediction.

In activation space (``remove_concept``) the concept's probe direction is projected out of the
concept layer, a' = a - alpha (a . w) w at every position (w the probe's concept-vs-background
direction in raw activation space, ``ProbeVersion.directions``, unit-normalised), by a forward
hook at the probe's layer; the rest of the network runs on a'. So a' . w = (1 - alpha)(a . w)
exactly and alpha = 0 is the identity. Why every position and not only where the concept map is
on: the probe is a linear read-out of each position, so evidence for the concept below the map's
threshold is still evidence the network can use; removing it only inside the map would leave it
there (``WhatIfConfig.region = "map"`` restricts it all the same, for comparison).

In image space (``inpaint_concept``) the pixels where the concept's map is on (probability >=
``level``, dilated by ``dilate_px``) are inpainted (OpenCV's Telea method when ``cv2`` imports,
else scikit-image's biharmonic inpainting; the result names which) and blended in by alpha; pixels
outside the region are left exactly as they were.

Both give the target probability and logit before and after, the concept shares before and after
(the report's definition: positive Grad-CAM attribution at the card's layer, each pixel split across
concepts by the probe's probabilities, ``report.concept_shares``), re-computed on the intervened
network, and the concept maps after. ``intervened_lesion_map`` gives an image's lesion map under
either intervention. ``direction_control`` compares removing a concept with removing seeded random
unit directions (the same norm as w) in one batched pass.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from dashboard.engine.attribution import AttributionConfig, attribute
from dashboard.engine.inference import LesionMap, LesionMapConfig, compute_lesion_map, preprocess, target_class
from dashboard.engine.model_state import lock_for, model_device, model_state_guard
from dashboard.engine.probes import ProbeVersion, compute_concept_maps
from dashboard.engine.report import concept_shares

try:  # optional: OpenCV's Telea inpainting; scikit-image's biharmonic one otherwise
    import cv2  # optional
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None
from skimage.restoration import inpaint_biharmonic

__all__ = ["WhatIfConfig", "WhatIf", "DirectionControl", "concept_direction", "project_out", "projection_hook",
           "remove_concept", "inpaint_concept", "inpaint_region", "concept_region", "intervened_lesion_map",
           "direction_control", "INPAINT_METHOD"]

#: How image-space interventions fill a region here.
INPAINT_METHOD = "cv2.inpaint (Telea)" if cv2 is not None else "skimage inpaint_biharmonic"


@dataclass(frozen=True)
class WhatIfConfig:
    """One intervention.

    alpha        strength in [0, 1]: 0 changes nothing, 1 removes the component (or the region) fully
    region       activation space: "all" positions, or only where the concept map is on ("map")
    level        a pixel is in the concept's region where its probability is at least this
    dilate_px    the image-space region grows by this many pixels (inpainting needs a margin)
    target       class explained (default the card's positive class)
    device       where the model runs (default its own device)
    """

    alpha: float = 1.0
    region: str = "all"
    level: float = 0.5
    dilate_px: int = 3
    target: int | str | None = None
    device: str | torch.device | None = None


@dataclass
class WhatIf:
    """The prediction and the concept shares of a patch before and after one intervention.

    shares_* {concept: share of the positive attribution} in probe order, unexplained_* the rest;
    maps_* (K, S, S) float16 probe probabilities; image_after (S, S) the inpainted patch (image
    space); region (S, S) bool the inpainted pixels, or for activation space with region "map" the
    positions' pixels; removed: mean |a . w| over the positions before the intervention."""

    kind: str                      # "activation" | "image"
    method: str                    # "projection" or the inpainting method
    concept: str
    alpha: float
    target_name: str
    p_before: float
    p_after: float
    logit_before: float
    logit_after: float
    shares_before: dict[str, float]
    shares_after: dict[str, float]
    unexplained_before: float
    unexplained_after: float
    maps_before: np.ndarray
    maps_after: np.ndarray
    image_after: np.ndarray | None = None
    region: np.ndarray | None = None
    removed: float = 0.0
    notes: list[str] = field(default_factory=list)
    log_odds_before: float = 0.0   # logit_t - logsumexp(other logits): still moves where P saturates
    log_odds_after: float = 0.0

    @property
    def delta(self) -> float:
        """p_after - p_before."""
        return self.p_after - self.p_before

    def sentence(self) -> str:
        """'without <concept>: P(<target>) 0.91 → 0.38' (with the strength when partial)."""
        how = "without" if self.alpha >= 1 else f"with {self.alpha:.0%} less"
        return f"{how} {self.concept}: P({self.target_name}) {self.p_before:.2f} → {self.p_after:.2f}"

    def log_odds_sentence(self) -> str:
        """'log-odds +9.12 → +7.40': the change P hides when it is near 0 or 1."""
        return f"log-odds {self.log_odds_before:+.2f} → {self.log_odds_after:+.2f}"


def concept_direction(probe: ProbeVersion, concept: str) -> np.ndarray:
    """The probe's unit direction of ``concept`` vs background in raw activation space: (C,) float32."""
    if concept not in probe.concepts:
        raise KeyError(f"{concept!r} is not in probe version {probe.version} ({', '.join(probe.concepts)})")
    w = probe.directions()[probe.concepts.index(concept)].astype(np.float64)
    n = float(np.linalg.norm(w))
    if n == 0:
        raise ValueError(f"the probe's direction of {concept!r} is zero")
    return (w / n).astype(np.float32)


def project_out(a: torch.Tensor, direction, alpha: float, where=None) -> torch.Tensor:
    """a' = a - alpha (a . w) w at every position, all positions in one einsum.

    a (N, C, h, w); direction (C,) unit, or (N, C) one per input; where None (every position) or
    (h, w) / (N, h, w) weights in [0, 1] that scale alpha per position, or a pixel region (H, W) of
    another size: a cell is in it when it touches it. Returns (N, C, h, w)."""
    w = torch.as_tensor(direction, dtype=a.dtype, device=a.device)
    w = w.expand(a.shape[0], -1) if w.dim() == 1 else w  # (N, C)
    coef = torch.einsum("nchw,nc->nhw", a, w) * float(alpha)  # (N, h, w)
    if where is not None:
        m = torch.as_tensor(where, dtype=a.dtype, device=a.device)
        m = m[None] if m.dim() == 2 else m  # (N or 1, H, W)
        if tuple(m.shape[-2:]) != tuple(coef.shape[-2:]):  # a pixel region: a cell counts if it touches it
            m = (F.adaptive_avg_pool2d(m[:, None], coef.shape[-2:])[:, 0] > 0).to(a.dtype)
        coef = coef * m.expand_as(coef)
    return a - torch.einsum("nhw,nc->nchw", coef, w)


@contextmanager
def projection_hook(model, layer: str, direction, alpha: float, where=None) -> Iterator[dict]:
    """A forward hook at ``layer`` that projects ``direction`` out of its output (``project_out``) in
    every forward pass inside the block. Yields a dict where the hook keeps the last intervened
    activation ("a", (N, C, h, w), detached) and the mean |a . w| before it ("removed")."""
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        raise KeyError(f"unknown layer {layer!r}")
    seen: dict = {}

    def hook(_m, _inp, out):
        w = torch.as_tensor(direction, dtype=out.dtype, device=out.device)
        w = w.expand(out.shape[0], -1) if w.dim() == 1 else w
        seen["removed"] = float(torch.einsum("nchw,nc->nhw", out.detach(), w).abs().mean())
        new = project_out(out, direction, alpha, where)
        seen["a"] = new.detach()
        return new

    h = modules[layer].register_forward_hook(hook)
    try:
        yield seen
    finally:
        h.remove()


def _analyse(model, card, patch: np.ndarray, probe: ProbeVersion, t_idx: int, config: WhatIfConfig, *,
             direction=None, alpha: float = 0.0, where=None):
    """(logit, P(target), shares (K,), unexplained, maps (K+1, S, S), removed, log-odds) of a grey patch (S, S),
    with ``direction`` projected out at the probe's layer when given."""
    dev = model_device(model, config.device)
    x = preprocess(card, torch.as_tensor(patch, dtype=torch.float32, device=dev)[None])  # (1, 3, S, S)
    d = direction if direction is not None else np.zeros(probe.weight.shape[1], np.float32)
    with lock_for(model), model_state_guard(model), projection_hook(model, probe.layer, d, alpha, where) as seen:
        with torch.no_grad():
            logits = model(x)[0].double().cpu()  # (K,)
        act = seen["a"][0].float().cpu()  # (C, h, w) as intervened
        att = attribute(model, card, patch, AttributionConfig(method="gradcam", target=t_idx,
                                                              device=config.device)).map  # (S, S)
    maps = compute_concept_maps(probe, act, patch.shape, include_background=True)  # (K+1, S, S)
    shares, unexplained = concept_shares(maps, att)
    p = float(torch.softmax(logits, 0)[t_idx])
    lo = float(logits[t_idx] - torch.logsumexp(torch.cat([logits[:t_idx], logits[t_idx + 1:]]), 0))
    return float(logits[t_idx]), p, shares, float(unexplained), maps, seen.get("removed", 0.0), lo


def _result(kind, method, concept, config, t_name, probe, before, after, **kw) -> WhatIf:
    return WhatIf(kind=kind, method=method, concept=concept, alpha=float(config.alpha), target_name=t_name,
                  p_before=before[1], p_after=after[1], logit_before=before[0], logit_after=after[0],
                  shares_before={c: float(s) for c, s in zip(probe.concepts, before[2])},
                  shares_after={c: float(s) for c, s in zip(probe.concepts, after[2])},
                  unexplained_before=before[3], unexplained_after=after[3],
                  maps_before=before[4][1:].astype(np.float16), maps_after=after[4][1:].astype(np.float16),
                  log_odds_before=before[6], log_odds_after=after[6], **kw)


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def remove_concept(model, card, patch: np.ndarray, probe: ProbeVersion, concept: str,
                   config: WhatIfConfig = WhatIfConfig()) -> WhatIf:
    """Project ``concept``'s probe direction out of the probe's layer for a grey patch (S, S) in [0, 1]."""
    _check_alpha(config.alpha)
    patch = np.asarray(patch, dtype=np.float32)
    t_idx, t_name = target_class(card, config.target)
    w = concept_direction(probe, concept)
    before = _analyse(model, card, patch, probe, t_idx, config)
    region = None
    if config.region == "map":  # the pixels where the map is on; the hook takes them to its grid
        region = before[4][probe.concepts.index(concept) + 1] >= config.level  # (S, S)
    elif config.region != "all":
        raise ValueError(f"unknown region {config.region!r}; 'all' or 'map'")
    where = None if region is None else region.astype(np.float32)
    after = _analyse(model, card, patch, probe, t_idx, config, direction=w, alpha=config.alpha, where=where)
    return _result("activation", "projection", concept, config, t_name, probe, before, after, region=region,
                   removed=float(after[5]))


def concept_region(concept_map: np.ndarray, level: float = 0.5, dilate_px: int = 3) -> np.ndarray:
    """The pixels where a concept's map (H, W) is at least ``level``, grown by ``dilate_px``: (H, W) bool."""
    region = np.asarray(concept_map, dtype=np.float32) >= level
    if dilate_px > 0 and region.any():
        region = ndimage.binary_dilation(region, iterations=int(dilate_px))
    return region


def inpaint_region(image: np.ndarray, region: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, str]:
    """Fill ``region`` of a grey image (H, W) in [0, 1] from its surroundings, blended in by alpha.

    Pixels outside ``region`` are returned unchanged (bit for bit). Returns ((H, W) float32, method)."""
    _check_alpha(alpha)
    img = np.asarray(image, dtype=np.float32)
    region = np.asarray(region, dtype=bool)
    out = img.copy()
    if not region.any() or alpha == 0:
        return out, INPAINT_METHOD
    if cv2 is not None:
        # 16-bit keeps the grey levels (8-bit would quantise to 1/255)
        u16 = np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)
        try:
            filled = cv2.inpaint(u16, region.astype(np.uint8), 5, cv2.INPAINT_TELEA).astype(np.float32) / 65535
        except cv2.error:  # an OpenCV without 16-bit inpainting: 8-bit
            u8 = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
            filled = cv2.inpaint(u8, region.astype(np.uint8), 5, cv2.INPAINT_TELEA).astype(np.float32) / 255
    else:  # pragma: no cover - depends on the environment
        filled = inpaint_biharmonic(img, region).astype(np.float32)
    out[region] = img[region] + float(alpha) * (filled[region] - img[region])
    return out, INPAINT_METHOD


def inpaint_concept(model, card, patch: np.ndarray, probe: ProbeVersion, concept: str,
                    config: WhatIfConfig = WhatIfConfig()) -> WhatIf:
    """Inpaint the pixels where ``concept``'s map is on in a grey patch (S, S) in [0, 1] and rescore."""
    _check_alpha(config.alpha)
    patch = np.asarray(patch, dtype=np.float32)
    t_idx, t_name = target_class(card, config.target)
    before = _analyse(model, card, patch, probe, t_idx, config)
    k = probe.concepts.index(concept) + 1
    region = concept_region(before[4][k], config.level, config.dilate_px)
    filled, method = inpaint_region(patch, region, config.alpha)
    after = _analyse(model, card, filled, probe, t_idx, config)
    notes = [] if region.any() else [f"{concept} covers no pixel of this patch at p ≥ {config.level:g}: nothing to inpaint"]
    return _result("image", method, concept, config, t_name, probe, before, after, image_after=filled,
                   region=region, notes=notes)


def intervened_lesion_map(model, card, img: np.ndarray, mask: np.ndarray | None, probe: ProbeVersion,
                          concept: str, kind: str, alpha: float = 1.0, *, concept_map: np.ndarray | None = None,
                          config: LesionMapConfig = LesionMapConfig(), level: float = 0.5,
                          dilate_px: int = 3) -> LesionMap:
    """The lesion map of a whole model-space image (H, W) under one intervention.

    kind "activation": the direction is projected out at every position of every pass (the FCN pass
    and the exact passes that refine its best patches); "image": the concept's region of the whole
    image (``concept_map`` (H, W), the probe's map over the image) is inpainted first."""
    _check_alpha(alpha)
    img = np.asarray(img, dtype=np.float32)
    if kind == "image":
        if concept_map is None:
            raise ValueError("an image-space lesion map needs the concept's map over the image")
        filled, _ = inpaint_region(img, concept_region(concept_map, level, dilate_px) & (
            np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)), alpha)
        return compute_lesion_map(model, card, filled, mask, config)
    if kind != "activation":
        raise ValueError(f"unknown intervention {kind!r}; 'activation' or 'image'")
    with lock_for(model), projection_hook(model, probe.layer, concept_direction(probe, concept), alpha):
        return compute_lesion_map(model, card, img, mask, config)


@dataclass
class DirectionControl:
    """|change of P(target)| when a concept's direction is removed vs seeded random unit directions.

    dp_concept (N,) one per patch; dp_random (N, R); p_before (N,). The same as changes of the target's
    log-odds, logit_t - logsumexp(other logits) (dl_*, lo_before): where P saturates near 0 or 1 its
    changes vanish in float precision while the log-odds still move."""

    concepts: list[str]
    p_before: np.ndarray
    dp_concept: np.ndarray
    dp_random: np.ndarray
    alpha: float
    seed: int
    lo_before: np.ndarray | None = None
    dl_concept: np.ndarray | None = None
    dl_random: np.ndarray | None = None

    @property
    def median_random(self) -> np.ndarray:
        """(N,) the median |dP| over the random directions of each patch."""
        return np.median(np.abs(self.dp_random), axis=1)

    @property
    def median_random_log_odds(self) -> np.ndarray:
        """(N,) the median |d log-odds| over the random directions of each patch."""
        return np.median(np.abs(self.dl_random), axis=1)


def direction_control(model, card, patches: np.ndarray, probe: ProbeVersion, concepts: list[str], *,
                      n_random: int = 16, alpha: float = 1.0, seed: int = 0,
                      config: WhatIfConfig = WhatIfConfig()) -> DirectionControl:
    """Remove each patch's concept direction and ``n_random`` random unit directions (Gaussian, seeded,
    normalised: the same norm as the probe's unit direction, orthogonal to nothing in particular).

    patches (N, S, S) grey in [0, 1]; concepts[i] the concept removed from patch i. Each patch runs
    once with 1 + 1 + n_random copies (none, concept, random...) in one batch, a direction per copy."""
    _check_alpha(alpha)
    t_idx, _ = target_class(card, config.target)
    c = probe.weight.shape[1]
    g = torch.Generator().manual_seed(int(seed))
    rand = torch.randn(n_random, c, generator=g, dtype=torch.float64)
    rand = (rand / rand.norm(dim=1, keepdim=True)).float()  # (R, C)
    dev = model_device(model, config.device)
    p0, dpc, dpr, l0, dlc, dlr = [], [], [], [], [], []
    for patch, concept in zip(np.asarray(patches, dtype=np.float32), concepts):  # patches, not units
        dirs = torch.cat([torch.zeros(1, c), torch.from_numpy(concept_direction(probe, concept))[None], rand])
        x = preprocess(card, torch.as_tensor(patch, device=dev)[None]).expand(len(dirs), -1, -1, -1)  # (B, 3, S, S)
        with lock_for(model), model_state_guard(model), \
                projection_hook(model, probe.layer, dirs.to(dev), alpha), torch.no_grad():
            logits = model(x).double().cpu()  # (B, K)
        p = torch.softmax(logits, 1)[:, t_idx].numpy()  # (B,)
        others = torch.cat([logits[:, :t_idx], logits[:, t_idx + 1:]], 1)  # (B, K-1)
        lo = (logits[:, t_idx] - torch.logsumexp(others, 1)).numpy()  # (B,) log-odds of the target
        p0.append(p[0])
        dpc.append(p[1] - p[0])
        dpr.append(p[2:] - p[0])
        l0.append(lo[0])
        dlc.append(lo[1] - lo[0])
        dlr.append(lo[2:] - lo[0])
    return DirectionControl(concepts=list(concepts), p_before=np.asarray(p0), dp_concept=np.asarray(dpc),
                            dp_random=np.asarray(dpr).reshape(len(p0), n_random), alpha=float(alpha), seed=int(seed),
                            lo_before=np.asarray(l0), dl_concept=np.asarray(dlc),
                            dl_random=np.asarray(dlr).reshape(len(p0), n_random))

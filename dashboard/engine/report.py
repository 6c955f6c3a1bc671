"""The per-image concept report: what the classifier saw, in the readers' concepts.

For one patch (or a whole mammogram via tiles) and one probe version the report holds:

* the prediction (probability of the target class) and the attribution map it is compared with;
* per concept: the probe's probability map, its area in mm^2 (pixels with p >= 0.5, at the
  card's model-space pixel spacing), its peak probability, and its share of the attribution mass
  (positive attribution, each pixel split across concepts by the probe's probabilities, so the
  shares plus "unexplained" (the probe's background) sum to 1);
* the unit view: the units labeled with the concept at the head's layer, their mean activation
  on this image and the IoU that earned each label;
* for pool-linear heads, the exact part of the class logit each concept's labeled units carry:
  logit_t = b_t + sum_u W[t, u] mean_hw a_u, grouped by label; bias and unlabeled units form
  the remainder, and the parts sum to the model's logit;
* the TCAV score, p-value and significance of the concept for the target class (if a TCAV run
  is given) and the probe's validation (AUROC by image, drawings and images behind it).

``report_to_json`` / ``report_from_json`` round-trip losslessly (arrays as base64 with dtype and
shape), ``report_figures`` builds the plotly figures and ``export_html`` writes one offline HTML
file (plotly.js inlined, images as data URIs).
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import time
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from captum.attr import LayerIntegratedGradients
from PIL import Image
from plotly.offline import get_plotlyjs
from safetensors import safe_open
from safetensors.torch import save_file

from dashboard.data.store import BUILTIN_CONCEPTS
from dashboard.engine.activations import compute_activations, model_fingerprint, patch_key
from dashboard.engine.attribution import AttributionConfig, attribute, attribute_image
from dashboard.engine.inference import target_class
from dashboard.engine.model_state import lock_for, model_device, model_state_guard
from dashboard.engine.probes import ProbeVersion, compute_concept_maps
from dashboard.imaging import crop_patch, tile

__all__ = ["ConceptEntry", "ConceptReport", "ImageEvidence", "ReportConfig", "ReportInputs", "build_report",
           "build_image_report", "compute_image_evidence", "report_to_json", "report_from_json", "report_figures",
           "export_html", "logit_decomposition", "layer_logit_decomposition", "LayerDecomposition",
           "DECOMPOSITION_STEPS", "decomposition_scale", "compute_decomposition", "needs_decomposition"]

_DEFAULT_COLOURS = {name: colour for name, colour, _g, _d in BUILTIN_CONCEPTS}
_FALLBACK = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


@dataclass
class ConceptEntry:
    concept: str
    colour: str
    probe_map: np.ndarray | None          # (H, W) float16 probability, None if the probe lacks it
    area_mm2: float | None
    expected_area_mm2: float | None       # sum of probabilities x pixel area
    peak_probability: float | None
    attribution_share: float | None
    units: list[int] = field(default_factory=list)
    unit_activations: list[float] = field(default_factory=list)  # mean over positions, this image
    unit_ious: list[float] = field(default_factory=list)         # IoU that earned each label
    mean_unit_activation: float | None = None
    logit_part: float | None = None
    tcav_score: float | None = None
    tcav_p_value: float | None = None
    tcav_significant: bool | None = None
    probe_auroc: float | None = None
    n_drawings: int = 0
    n_images: int = 0
    confidence_note: str | None = None


@dataclass
class ConceptReport:
    kind: str                              # "patch" | "image"
    model_card: str
    weights_sha: str
    probe_version: int | None
    probe_layer: str
    unit_layer: str
    image_id: str | None
    patch: tuple[int, int, int] | None     # (x0, y0, size) in model pixels; the top tile for images
    pixel_spacing_mm: float
    target: int
    target_name: str
    classes: list[str]
    probabilities: list[float]
    probability: float
    logit: float
    image: np.ndarray                      # (H, W) float16 grey in [0, 1]
    attribution_method: str
    attribution_map: np.ndarray            # (H, W) float32 as given
    concepts: list[ConceptEntry]
    unexplained_share: float
    logit_bias: float | None
    logit_unlabeled: float | None
    logit_exact: bool                      # True when the parts reproduce the model's logit
    logit_method: str = ""                 # "linear" (pool-linear head) | "integrated-gradients" (inner layer)
    logit_delta: float | None = None       # parts + bias + remainder - logit (IG's convergence delta)
    tcav_n_inputs: int | None = None
    created_at: str = ""
    notes: list[str] = field(default_factory=list)
    domain_warning: str = ""               # the image is from another domain than the model's training data

    def concept(self, name: str) -> ConceptEntry:
        for c in self.concepts:
            if c.concept == name:
                return c
        raise KeyError(name)


# ---------------------------------------------------------------- computation
def _unit_layer(card) -> str:
    """The layer whose unit labels the report reads: the card's concept layer (where drawings label units)."""
    return card.default_layer


def _linear_head_at(card, layer: str) -> bool:
    """True when ``layer`` feeds the global pool and a single linear classifier (an exact linear read-out)."""
    # a card without head_layer: its concept layer is taken to feed the pool (the old single-layer cards)
    head_layer = getattr(card, "head_layer", None) or card.default_layer
    return getattr(card, "head", "pool-linear") == "pool-linear" and head_layer == layer


def logit_decomposition(model, activation, target: int, groups: dict[str, np.ndarray]):
    """Exact parts of a pool-linear head's logit: bias, each group's units, the remaining units.

    activation (C, h, w) of the layer feeding the global average pool; groups {name: units}.
    Returns ({name: part}, bias, remainder, total) in float64; total = bias + sum(parts) + remainder.
    """
    clf = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(clf, torch.nn.Linear):
        raise ValueError("the model's head is not a single Linear layer")
    a = torch.as_tensor(activation).double().mean(dim=(1, 2))  # (C,)
    w = clf.weight[target].detach().double().cpu()  # (C,)
    contrib = w * a  # (C,)
    names = list(groups)
    member = torch.zeros(len(names), a.shape[0], dtype=torch.float64)  # (G, C) one-hot membership
    for i, n in enumerate(names):
        if len(groups[n]):
            member[i, torch.as_tensor(np.asarray(groups[n], dtype=np.int64))] = 1.0
    parts = member @ contrib  # (G,): every group in one matmul
    rest = contrib.sum() - parts.sum() if len(names) else contrib.sum()
    bias = float(clf.bias[target].detach()) if clf.bias is not None else 0.0
    total = bias + float(contrib.sum())
    return {n: float(p) for n, p in zip(names, parts)}, bias, float(rest), total


@dataclass
class LayerDecomposition:
    """The class logit of one input split over the units and positions of an inner layer.

    attribution (C, h, w) float64: each unit-position's part of ``logit - baseline_logit``;
    activation (C, h, w) of the layer for the input; delta = sum(attribution) - (logit -
    baseline_logit), the integral's convergence error (0 for an exact method).
    """

    attribution: torch.Tensor
    activation: torch.Tensor
    logit: float
    baseline_logit: float
    delta: float
    method: str
    n_steps: int


#: Integration steps of the layer decomposition (captum's Gauss-Legendre rule). The report starts here
#: and doubles (up to ``MAX_DECOMPOSITION_STEPS``) while the convergence delta exceeds
#: ``ReportConfig.decomposition_tol`` of what is explained, max(1, |logit - baseline logit|). Measured on
#: demo patches at blocks.4 (224 px): |delta| 0.12-0.44 at 16 steps, 0.07-0.21 at 32, 0.002-0.06 at 64,
#: 0.01-0.02 at 128, for logit - baseline 3.5-9.3 (docs/evaluation.md); on the most suspicious patches of
#: three images (``python -m bench.decomposition_steps``) the relative delta was 1.2-4.8 % at 32 steps,
#: 0.3-3.6 % at 64: 32 steps never reached the 1 % tolerance, so starting there only added a run.
DECOMPOSITION_STEPS = 64
MAX_DECOMPOSITION_STEPS = 128
#: Interpolation steps of one forward and backward pass of the decomposition (captum's internal_batch_size).
IG_BATCH = 16


def decomposition_scale(logit: float, baseline_logit: float) -> float:
    """What a decomposition explains, the scale its delta is judged against: max(1, |logit - baseline|)."""
    return max(1.0, abs(float(logit) - float(baseline_logit)))


def layer_logit_decomposition(model, x: torch.Tensor, layer: str, target: int, *, n_steps: int = DECOMPOSITION_STEPS,
                              baseline: torch.Tensor | None = None, device=None,
                              internal_batch_size: int | None = None) -> LayerDecomposition:
    """Integrated gradients of the target logit at ``layer`` (captum ``LayerIntegratedGradients``).

    Why integrated gradients: between an inner layer and the logit sit non-linear blocks, so no
    linear read-out exists; IG is the one cheap method here with completeness (the parts sum to
    logit(x) - logit(baseline), up to the reported ``delta``) that captum, already a dependency,
    ships. (Concept relevance propagation, zennit-crp, would be the alternative; it is not
    installed.) The path runs from the layer's activation on ``baseline`` (default: a black patch,
    zeros in grey before the card's preprocessing is the caller's; here the preprocessed tensor
    ``x * 0 + x.amin()``, i.e. the darkest value everywhere) to its activation on ``x``.

    x: (1, 3, H, W) preprocessed input. ``internal_batch_size``: interpolation steps per forward and
    backward pass (default ``IG_BATCH``; the sum is the same, only memory and speed change).
    Returns a ``LayerDecomposition`` on the CPU.
    """
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        raise KeyError(f"unknown layer {layer!r}")
    dev = model_device(model, device)
    x = x.to(dev).float()
    base = (torch.full_like(x, float(x.amin())) if baseline is None else baseline.to(dev).float())

    def logit_of(inp):
        return model(inp)[:, target]

    with lock_for(model), model_state_guard(model, freeze=True):
        captured: dict = {}
        h = modules[layer].register_forward_hook(lambda _m, _i, out: captured.__setitem__("a", out.detach().clone()))
        try:
            with torch.no_grad():
                logit = float(logit_of(x)[0])
                act = captured["a"][0]
                base_logit = float(logit_of(base)[0])
        finally:
            h.remove()
        lig = LayerIntegratedGradients(logit_of, modules[layer])
        attr, delta = lig.attribute(x, baselines=base, n_steps=int(n_steps), return_convergence_delta=True,
                                    internal_batch_size=min(int(n_steps), int(internal_batch_size or IG_BATCH)))
    a = attr[0].detach().double().cpu()  # (C, h, w)
    return LayerDecomposition(attribution=a, activation=act.cpu(), logit=logit, baseline_logit=base_logit,
                              delta=float(a.sum()) - (logit - base_logit), method="integrated-gradients",
                              n_steps=int(n_steps))


def _labels_by_concept(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["concept"], []).append((int(r["unit"]), float(r["iou"])))
    return {k: (np.array([u for u, _ in v], np.int64), np.array([i for _, i in v])) for k, v in out.items()}


def _shares(prob_all: np.ndarray, attribution: np.ndarray) -> tuple[np.ndarray, float]:
    """prob_all (K+1, H, W) background first; attribution (H, W). -> shares (K,), unexplained."""
    p = prob_all.astype(np.float64)
    p = p / np.clip(p.sum(0, keepdims=True), 1e-12, None)  # exact partition of each pixel
    a = np.clip(np.asarray(attribution, dtype=np.float64), 0, None)
    total = a.sum()
    if total <= 0:
        return np.zeros(p.shape[0] - 1), 1.0
    mass = np.einsum("khw,hw->k", p, a) / total  # (K+1,)
    return mass[1:], float(mass[0])


#: The report's concept shares of an attribution map, for other modules (``engine.intervention``).
concept_shares = _shares


@dataclass(frozen=True)
class ReportConfig:
    """How a report is computed.

    attribution_method  attribution the concept shares are taken of (when none is given)
    target              class index or name explained (default: the card's positive class)
    device              where the model is (default its own device)
    stride, batch_size  image reports: tile stride in model px (default S/2) and tiles per forward pass
    colours             concept -> colour overrides (else the store's palette, then the built-in one)
    decomposition_steps, decomposition_tol  the layer decomposition's first step count and the relative
                        convergence delta it must reach (steps double up to ``MAX_DECOMPOSITION_STEPS``)
    cache_dir           where layer decompositions are kept on disk (``compute_decomposition``); None: not kept
    """

    attribution_method: str = "gradcam"
    target: int | str | None = None
    device: str | torch.device | None = None
    stride: int | None = None
    batch_size: int = 8
    colours: dict[str, str] | None = None
    decomposition_steps: int = DECOMPOSITION_STEPS
    decomposition_tol: float = 0.01
    cache_dir: str | Path | None = None


@dataclass(frozen=True)
class ReportInputs:
    """What the caller already has; every field left None is computed (or read from ``store``).

    store            unit labels and concept colours are read from here
    unit_labels      rows as ``Store.list_unit_labels`` gives them
    tcav             a ``tcav.TCAVResult`` for this probe
    image_id         the image the report is about (shown in the report)
    attribution_map  (S, S) or (H, W): any attribution (e.g. ``attribution.attribute(...).map``)
    patch_xy         patch reports: the patch's (x0, y0) in its image's model pixels
    activations, logits  patch reports: {layer: (C, h, w)} and (K,) of a cached forward pass
    mask             image reports: (H, W) bool breast mask the tiles are laid over
    tiles, tile_source  image reports: candidate patches (x0, y0) (default: a grid over ``mask``) and
                     their name in the report's note
    evidence         image reports: the probe-independent part (``compute_image_evidence``)
    probs_all        image reports: the probe's maps over the image, (K+1, H, W), background first
    decomposition    the layer decomposition of the report's patch (``compute_decomposition``; it does
                     not depend on the probe or the labels, so callers cache it)
    """

    store: Any = None
    unit_labels: list[dict] | None = None
    tcav: Any = None
    image_id: str | None = None
    attribution_map: np.ndarray | None = None
    patch_xy: tuple[int, int] | None = None
    activations: dict[str, torch.Tensor] | None = None
    logits: Any = None
    mask: np.ndarray | None = None
    tiles: list[tuple[int, int]] | None = None
    tile_source: str = "tiles"
    evidence: ImageEvidence | None = None
    probs_all: np.ndarray | None = None
    decomposition: LayerDecomposition | None = None


@dataclass
class _Parts:
    """Everything ``_assemble`` turns into a report: the network's outputs and the context."""

    kind: str                       # "patch" | "image"
    image: np.ndarray               # (H, W) grey in [0, 1]
    attribution: np.ndarray         # (H, W)
    attribution_method: str
    probs_all: np.ndarray           # (K+1, H, W) probe probabilities, background first
    logits: torch.Tensor            # (K,)
    target: tuple[int, str]         # (index, name)
    unit_act: torch.Tensor | None   # (C, h, w) at the unit layer
    label_rows: list[dict]
    tcav: Any
    colours: dict[str, str]
    image_id: str | None
    patch: tuple[int, int, int] | None
    notes: list[str]
    decomposition: LayerDecomposition | None = None   # inner unit layers: IG at the unit layer


def _assemble(model, card, probe: ProbeVersion, parts: _Parts) -> ConceptReport:
    spacing = float(getattr(card, "pixel_spacing_mm", 0.0) or 0.0)
    px_area = spacing * spacing
    t_idx, t_name = parts.target
    logits, unit_act, notes = parts.logits, parts.unit_act, parts.notes
    labels = _labels_by_concept(parts.label_rows)
    concept_names = list(probe.concepts) + sorted(c for c in labels if c not in probe.concepts)
    shares, unexplained = _shares(parts.probs_all, parts.attribution)
    parts_, bias, rest, exact, method, delta = _logit_parts(model, card, unit_act, logits, t_idx, labels, notes,
                                                            parts.decomposition)
    mean_act = unit_act.double().mean(dim=(1, 2)).numpy() if unit_act is not None else None  # (C,)
    tc = parts.tcav.concepts if parts.tcav is not None else {}
    entries = []
    for ci, name in enumerate(concept_names):
        in_probe = name in probe.concepts
        k = probe.concepts.index(name) if in_probe else None
        pmap = parts.probs_all[k + 1] if in_probe else None
        units, ious = labels.get(name, (np.zeros(0, np.int64), np.zeros(0)))
        acts = mean_act[units] if (mean_act is not None and len(units)) else np.zeros(0)
        m = probe.metrics.get(name, {}) if in_probe else {}
        t = tc.get(name)
        entries.append(ConceptEntry(
            concept=name, colour=parts.colours.get(name) or _FALLBACK[ci % len(_FALLBACK)],
            probe_map=pmap.astype(np.float16) if pmap is not None else None,
            area_mm2=float((pmap >= 0.5).sum() * px_area) if pmap is not None else None,
            expected_area_mm2=float(pmap.astype(np.float64).sum() * px_area) if pmap is not None else None,
            peak_probability=float(pmap.max()) if pmap is not None else None,
            attribution_share=float(shares[k]) if in_probe else None,
            units=[int(u) for u in units], unit_activations=[float(v) for v in acts],
            unit_ious=[float(v) for v in ious], mean_unit_activation=float(acts.mean()) if len(acts) else None,
            logit_part=parts_.get(name) if parts_ else None,
            tcav_score=t.score if t else None, tcav_p_value=t.p_value if t else None,
            tcav_significant=t.significant if t else None,
            probe_auroc=m.get("auroc"), n_drawings=int(m.get("n_drawings", 0)), n_images=int(m.get("n_images", 0)),
            confidence_note=m.get("reason") if m else ("not in this probe version" if not in_probe else None),
        ))
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), 0).numpy()
    return ConceptReport(
        kind=parts.kind, model_card=getattr(card, "name", ""), weights_sha=model_fingerprint(model),
        probe_version=probe.version, probe_layer=probe.layer, unit_layer=_unit_layer(card), image_id=parts.image_id,
        patch=tuple(int(v) for v in parts.patch) if parts.patch is not None else None, pixel_spacing_mm=spacing,
        target=t_idx, target_name=t_name, classes=[str(c) for c in card.classes],
        probabilities=[float(p) for p in probs], probability=float(probs[t_idx]), logit=float(logits[t_idx]),
        image=np.asarray(parts.image, dtype=np.float16), attribution_method=parts.attribution_method,
        attribution_map=np.asarray(parts.attribution, dtype=np.float32), concepts=entries,
        unexplained_share=float(unexplained), logit_bias=bias, logit_unlabeled=rest,
        logit_exact=bool(exact), logit_method=method, logit_delta=delta, tcav_n_inputs=getattr(parts.tcav, "n_inputs", None),
        created_at=time.strftime("%Y-%m-%d %H:%M:%S"), notes=notes)


def _logit_parts(model, card, unit_act, logits, t_idx: int, labels: dict, notes: list[str],
                 decomposition: LayerDecomposition | None = None):
    """({concept: logit part}, bias, unlabeled remainder, exact?, method, delta).

    At a unit layer that feeds a pool-linear head the parts are the head's own linear terms
    (``logit_decomposition``, exact). At an inner layer they are sums of ``decomposition``'s
    integrated-gradients parts over each concept's labeled units; "bias" is then the baseline's
    logit and the remainder holds the unlabeled units, so bias + parts + remainder = logit - delta.
    Without either: ({}, None, None, False, "", None), with a note saying why."""
    total_logit = float(logits[t_idx])
    if decomposition is not None:
        a = decomposition.attribution.sum(dim=(1, 2))  # (C,) each unit's part of logit - baseline
        groups = {c: torch.as_tensor(np.asarray(labels[c][0], np.int64)) for c in labels}
        parts = {c: float(a[u].sum()) if len(u) else 0.0 for c, u in groups.items()}
        rest = float(a.sum()) - sum(parts.values())
        bias = float(decomposition.baseline_logit)
        delta = bias + float(a.sum()) - total_logit
        exact = abs(delta) <= 0.01 * decomposition_scale(total_logit, bias)
        notes.append(f"logit parts by integrated gradients at {_unit_layer(card)!r} ({decomposition.n_steps} steps, "
                     f"baseline: a black patch, logit {bias:.3f}); they sum to the logit up to {delta:+.4f}")
        return parts, bias, rest, exact, "integrated-gradients", delta
    if getattr(card, "head", "pool-linear") != "pool-linear" or unit_act is None:
        return {}, None, None, False, "", None
    if not _linear_head_at(card, _unit_layer(card)):
        notes.append(f"no logit decomposition: {_unit_layer(card)!r} is an inner layer and none was computed")
        return {}, None, None, False, "", None
    try:
        parts, bias, rest, total = logit_decomposition(model, unit_act, t_idx, {c: labels[c][0] for c in labels})
    except ValueError as exc:
        notes.append(f"no logit decomposition: {exc}")
        return {}, None, None, False, "", None
    exact = abs(total - total_logit) <= 1e-4 * max(1.0, abs(total_logit))
    if not exact:
        notes.append(f"logit parts sum to {total:.6f}, model logit {total_logit:.6f}: "
                     f"{_unit_layer(card)!r} does not feed the pool directly")
    return parts, bias, rest, exact, "linear", total - total_logit


def needs_decomposition(card) -> bool:
    """True when the card's unit layer is an inner layer: its logit parts need ``compute_decomposition``."""
    return not _linear_head_at(card, _unit_layer(card))


def _decomposition_path(model, card, x: np.ndarray, layer: str, t_idx: int, config: ReportConfig) -> Path | None:
    """The disk cache file of one decomposition: keyed by the weights, the card's preprocessing, the
    layer, the target, the patch's content and the step rule, so nothing stale is ever read."""
    if config.cache_dir is None:
        return None
    prep = hashlib.sha256(repr((getattr(card, "name", ""), getattr(card, "mean", None), getattr(card, "std", None),
                                t_idx, int(config.decomposition_steps), float(config.decomposition_tol),
                                MAX_DECOMPOSITION_STEPS, IG_BATCH)).encode()).hexdigest()[:12]
    folder = Path(config.cache_dir) / "decompositions" / f"{model_fingerprint(model)[:16]}-{prep}" / layer
    return folder / f"{patch_key(x)}.safetensors"


def _save_decomposition(dec: LayerDecomposition, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{id(dec)}.tmp")
    meta = {"logit": repr(dec.logit), "baseline_logit": repr(dec.baseline_logit), "delta": repr(dec.delta),
            "method": dec.method, "n_steps": str(dec.n_steps)}
    save_file({"attribution": dec.attribution.contiguous(), "activation": dec.activation.contiguous()}, str(tmp),
              metadata=meta)
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _load_decomposition(path: Path) -> LayerDecomposition | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            return LayerDecomposition(attribution=f.get_tensor("attribution"), activation=f.get_tensor("activation"),
                                      logit=float(meta["logit"]), baseline_logit=float(meta["baseline_logit"]),
                                      delta=float(meta["delta"]), method=meta["method"], n_steps=int(meta["n_steps"]))
    except Exception:  # noqa: BLE001 - a torn or foreign file is recomputed
        return None


def compute_decomposition(model, card, patch: np.ndarray, target: int | str | None = None,
                          config: ReportConfig = ReportConfig()) -> LayerDecomposition | None:
    """IG decomposition of the target logit at the card's unit layer for a grey patch (S, S) in
    [0, 1], or None when that layer feeds a pool-linear head (the linear parts are exact there).

    Steps double from ``config.decomposition_steps`` while the relative convergence delta exceeds
    ``config.decomposition_tol``. It depends on the model, the patch and the target only, never on a
    probe or the unit labels (the labels only group its per-unit parts), so a new probe version or a
    new drawing reuses it: with ``config.cache_dir`` it is kept on disk (a restarted server reads it)."""
    layer = _unit_layer(card)
    if _linear_head_at(card, layer):
        return None
    t_idx, _ = target_class(card, config.target if target is None else target)
    x = np.asarray(card.preprocess(np.asarray(patch, np.float32)[None]), dtype=np.float32)  # (1, 3, S, S)
    path = _decomposition_path(model, card, x, layer, t_idx, config)
    if path is not None and path.is_file():
        dec = _load_decomposition(path)
        if dec is not None:
            return dec
    xt = torch.as_tensor(x)
    steps = int(config.decomposition_steps)
    while True:
        dec = layer_logit_decomposition(model, xt, layer, t_idx, n_steps=steps, device=config.device)
        if (abs(dec.delta) <= config.decomposition_tol * decomposition_scale(dec.logit, dec.baseline_logit)
                or steps >= MAX_DECOMPOSITION_STEPS):
            break
        steps *= 2
    if path is not None:
        _save_decomposition(dec, path)
    return dec


def _decompose(model, card, patch: np.ndarray, t_idx: int, config: ReportConfig, label_rows: list[dict],
               given: LayerDecomposition | None = None):
    """The decomposition a report uses: None without labeled units to give parts to (or at a linear
    head); else ``given`` (the caller's cached one) or ``compute_decomposition``'s."""
    if not label_rows or _linear_head_at(card, _unit_layer(card)):
        return None
    return given if given is not None else compute_decomposition(model, card, patch, t_idx, config)


def _colours(store, colours):
    out = dict(_DEFAULT_COLOURS)
    if store is not None:
        out.update({r["name"]: r["colour"] for r in store.list_concepts()})
    out.update(colours or {})
    return out


def _label_rows(card, inputs: ReportInputs) -> list[dict]:
    """The unit labels at the head's layer: given, else read from the store, else none."""
    if inputs.unit_labels is not None:
        return inputs.unit_labels
    if inputs.store is None:
        return []
    return inputs.store.list_unit_labels(getattr(card, "name", ""), _unit_layer(card))


def build_report(model, card, patch: np.ndarray, probe: ProbeVersion, config: ReportConfig = ReportConfig(),
                 inputs: ReportInputs = ReportInputs()) -> ConceptReport:
    """Concept report for one grey patch (S, S) in [0, 1] (model space).

    Without ``inputs.attribution_map`` the attribution is ``config.attribution_method``'s. Without
    ``inputs.activations`` and ``inputs.logits`` one forward pass gives both layers and the logits.
    """
    patch = np.asarray(patch, dtype=np.float32)
    size = patch.shape[0]
    t_idx, t_name = target_class(card, config.target)
    unit_layer = _unit_layer(card)
    need = [probe.layer] + ([unit_layer] if unit_layer != probe.layer else [])
    acts = dict(inputs.activations or {})
    logits = inputs.logits
    if any(name not in acts for name in need) or logits is None:
        x = torch.as_tensor(np.asarray(card.preprocess(patch[None])), dtype=torch.float32)  # (1, 3, S, S)
        with lock_for(model):
            got, out = compute_activations(model, need, x, device=config.device, with_output=True, out_device="cpu")
        acts = {k: v[0] for k, v in got.items()}
        logits = out[0]
    logits = torch.as_tensor(logits).detach().double().cpu().reshape(-1)
    attribution_map = inputs.attribution_map
    if attribution_map is None:
        attribution_map = attribute(model, card, patch, AttributionConfig(
            method=config.attribution_method, target=t_idx, device=config.device)).map
    probs_all = compute_concept_maps(probe, acts[probe.layer], size, include_background=True)  # (K+1, S, S)
    patch_xy = inputs.patch_xy
    label_rows = _label_rows(card, inputs)
    return _assemble(model, card, probe, _Parts(
        kind="patch", image=patch, attribution=attribution_map, attribution_method=config.attribution_method,
        probs_all=probs_all, logits=logits, target=(t_idx, t_name), unit_act=torch.as_tensor(acts[unit_layer]),
        label_rows=label_rows, tcav=inputs.tcav, colours=_colours(inputs.store, config.colours),
        image_id=inputs.image_id, patch=(patch_xy[0], patch_xy[1], size) if patch_xy is not None else None,
        notes=[], decomposition=_decompose(model, card, patch, t_idx, config, label_rows, inputs.decomposition)))


@dataclass
class ImageEvidence:
    """What a whole-image report needs from the network, independent of any probe version.

    best_tile (x0, y0) of the tile with the highest target probability among ``n_tiles``;
    unit_act (C, h, w) at the unit layer and logits (K,) of that tile; feats {layer: (C, H', W')}
    from one fully convolutional pass over the whole image; attribution_map (H, W) of
    ``attribution_method``. Keyed by model, image and method, it is computed once per image and
    reused by every probe version (only the probe's maps and the assembly depend on the probe).
    """

    best_tile: tuple[int, int]
    n_tiles: int
    unit_act: torch.Tensor
    logits: torch.Tensor
    feats: dict[str, torch.Tensor]
    attribution_map: np.ndarray
    attribution_method: str
    target: int
    tile_source: str = "tiles"
    timings_s: dict[str, float] = field(default_factory=dict)


def compute_image_evidence(model, card, image: np.ndarray, layers: list[str] | tuple[str, ...] = (),
                           config: ReportConfig = ReportConfig(),
                           inputs: ReportInputs = ReportInputs()) -> ImageEvidence:
    """The probe-independent part of ``build_image_report`` for a model-space image (H, W) in [0, 1].

    layers: the layers whose whole-image feature maps are kept (the probes' layers). Uses
    ``inputs.mask``, ``inputs.tiles`` / ``tile_source`` and ``inputs.attribution_map`` when given.
    """
    img = np.asarray(image, dtype=np.float32)
    size = card.patch_size
    t_idx, _ = target_class(card, config.target)
    tiles = inputs.tiles
    if tiles is None:
        m = np.ones(img.shape, bool) if inputs.mask is None else np.asarray(inputs.mask, bool)
        tiles = [tuple(int(v) for v in xy)
                 for xy in tile(m, size, config.stride or size // 2, 0.1 if inputs.mask is not None else 0.0)]
    if not len(tiles):
        raise ValueError("no tile of the image holds enough breast tissue")
    timings: dict[str, float] = {}
    with lock_for(model):
        t0 = time.perf_counter()
        xy, unit_act, logits = _best_tile(model, card, img, tiles, t_idx, config)
        timings["tiles"] = time.perf_counter() - t0
        feats: dict[str, torch.Tensor] = {}
        if layers:
            t0 = time.perf_counter()
            x_img = torch.as_tensor(np.asarray(card.preprocess(img[None])), dtype=torch.float32)  # (1, 3, H, W)
            got = compute_activations(model, list(dict.fromkeys(layers)), x_img, device=config.device,
                                      out_device="cpu")
            feats = {k: v[0] for k, v in got.items()}  # {layer: (C, H', W')}
            timings["feature_map"] = time.perf_counter() - t0
    attribution_map = inputs.attribution_map
    if attribution_map is None:
        t0 = time.perf_counter()
        attribution_map = attribute_image(model, card, img, inputs.mask, AttributionConfig(
            method=config.attribution_method, target=t_idx, device=config.device)).map
        timings["attribution"] = time.perf_counter() - t0
    return ImageEvidence(best_tile=(int(xy[0]), int(xy[1])), n_tiles=len(tiles), unit_act=unit_act, logits=logits,
                         feats=feats, attribution_map=np.asarray(attribution_map, dtype=np.float32),
                         attribution_method=config.attribution_method, target=t_idx,
                         tile_source=inputs.tile_source, timings_s=timings)


def _best_tile(model, card, img: np.ndarray, tiles: list, t_idx: int, config: ReportConfig):
    """((x0, y0), unit activation (C, h, w), logits (K,)) of the tile with the highest target probability."""
    size = card.patch_size
    unit_layer = _unit_layer(card)
    best = (-1.0, None, None, None)
    for s in range(0, len(tiles), config.batch_size):
        chunk = tiles[s:s + config.batch_size]
        g = np.stack([crop_patch(img, x0, y0, size) for x0, y0 in chunk])  # (B, S, S)
        x = torch.as_tensor(np.asarray(card.preprocess(g)), dtype=torch.float32)  # (B, 3, S, S)
        acts, out = compute_activations(model, [unit_layer], x, device=config.device, with_output=True,
                                        out_device="cpu")
        p = torch.softmax(out.double(), 1)[:, t_idx]  # (B,)
        j = int(p.argmax())
        if float(p[j]) > best[0]:
            best = (float(p[j]), chunk[j], acts[unit_layer][j], out[j])
    return best[1], best[2], best[3]


def build_image_report(model, card, image: np.ndarray, probe: ProbeVersion, config: ReportConfig = ReportConfig(),
                       inputs: ReportInputs = ReportInputs()) -> ConceptReport:
    """Concept report for a whole model-space mammogram (H, W) in [0, 1].

    The image's probability is the highest tile probability (tiles of the card's patch size, from
    ``imaging.tile`` over ``inputs.mask`` or a regular grid); the logit parts and unit activations are
    those of that tile. Concept maps come from one fully convolutional pass over the whole image,
    and the attribution shares from the whole-image attribution map (``config.attribution_method``
    when ``inputs`` has none). With ``inputs.evidence`` (cached by the caller) only the probe's maps
    and the assembly are computed here; with ``inputs.probs_all`` too, only the assembly.
    """
    img = np.asarray(image, dtype=np.float32)
    t_idx, t_name = target_class(card, config.target)
    evidence = inputs.evidence
    if evidence is None or evidence.target != t_idx:
        evidence = compute_image_evidence(model, card, img, [probe.layer],
                                          replace(config, target=t_idx), inputs)
    probs_all = inputs.probs_all
    if probs_all is None:
        feats = evidence.feats.get(probe.layer)
        if feats is None:  # a probe at another layer than the cached pass: one more FCN pass
            x_img = torch.as_tensor(np.asarray(card.preprocess(img[None])), dtype=torch.float32)  # (1, 3, H, W)
            with lock_for(model):
                feats = compute_activations(model, [probe.layer], x_img, device=config.device,
                                            out_device="cpu")[probe.layer][0]
        probs_all = compute_concept_maps(probe, feats, img.shape, include_background=True)  # (K+1, H, W)
    elif probs_all.shape != (len(probe.concepts) + 1, *img.shape):
        raise ValueError(f"probs_all {probs_all.shape} is not (K+1, H, W) for {len(probe.concepts)} concepts "
                         f"over {img.shape}")
    x0, y0 = evidence.best_tile
    label_rows = _label_rows(card, inputs)
    notes = [f"image probability = highest of {evidence.n_tiles} {evidence.tile_source}; logit parts and unit "
             f"activations of the patch at ({x0}, {y0})"]
    return _assemble(model, card, probe, _Parts(
        kind="image", image=img, attribution=evidence.attribution_map,
        attribution_method=evidence.attribution_method, probs_all=probs_all, logits=evidence.logits.double(),
        target=(t_idx, t_name), unit_act=evidence.unit_act, label_rows=label_rows,
        tcav=inputs.tcav, colours=_colours(inputs.store, config.colours), image_id=inputs.image_id,
        patch=(x0, y0, card.patch_size), notes=notes,
        decomposition=_decompose(model, card, crop_patch(img, x0, y0, card.patch_size), t_idx, config, label_rows,
                                 inputs.decomposition)))


# ---------------------------------------------------------------- JSON
def _enc(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        return {"__ndarray__": base64.b64encode(a.tobytes()).decode("ascii"), "dtype": str(a.dtype),
                "shape": list(a.shape)}
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, tuple):
        return {"__tuple__": [_enc(x) for x in v]}
    if isinstance(v, list):
        return [_enc(x) for x in v]
    if isinstance(v, dict):
        return {k: _enc(x) for k, x in v.items()}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        if "__ndarray__" in v:
            return np.frombuffer(base64.b64decode(v["__ndarray__"]), dtype=np.dtype(v["dtype"])).reshape(v["shape"]).copy()
        if "__tuple__" in v:
            return tuple(_dec(x) for x in v["__tuple__"])
        return {k: _dec(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_dec(x) for x in v]
    return v


def report_to_json(report: ConceptReport) -> str:
    """Lossless JSON (arrays as base64 with dtype and shape)."""
    d = {f.name: getattr(report, f.name) for f in fields(report)}
    d["concepts"] = [{f.name: getattr(c, f.name) for f in fields(c)} for c in report.concepts]
    return json.dumps({"conceptlens_report": 1, **_enc(d)})


def report_from_json(text: str) -> ConceptReport:
    d = json.loads(text)
    if d.pop("conceptlens_report", None) != 1:
        raise ValueError("not a ConceptLens report")
    d = _dec(d)
    d["concepts"] = [ConceptEntry(**c) for c in d["concepts"]]
    return ConceptReport(**d)


# ---------------------------------------------------------------- figures
def _thumb(a: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Area-average an (H, W) map so its long side is at most ``max_side`` (figure payloads)."""
    a = np.asarray(a, dtype=np.float32)
    scale = max(a.shape) / max_side
    if scale <= 1:
        return a
    out = (int(round(a.shape[0] / scale)), int(round(a.shape[1] / scale)))
    return F.interpolate(torch.from_numpy(a)[None, None], size=out, mode="area")[0, 0].numpy()


def report_figures(report: ConceptReport, *, max_side: int = 256,
                   only: Collection[str] | None = None) -> dict[str, Any]:
    """Plotly figures: shares, units, activation, tcav, maps, attribution, logit (pool-linear).

    Image-like figures are area-averaged to ``max_side`` pixels on the long side.
    only: the names of the figures wanted (default all of them)."""
    names = [c.concept for c in report.concepts]
    cols = [c.colour for c in report.concepts]
    figs: dict[str, Any] = {}
    in_probe = [c for c in report.concepts if c.attribution_share is not None]
    figs["shares"] = go.Figure(go.Bar(
        x=[c.concept for c in in_probe] + ["unexplained"],
        y=[c.attribution_share for c in in_probe] + [report.unexplained_share],
        marker_color=[c.colour for c in in_probe] + ["#bbbbbb"],
        hovertemplate="%{x}: %{y:.1%} of the attribution<extra></extra>"))
    figs["shares"].update_layout(title=f"Share of the {report.attribution_method} attribution per concept",
                                 yaxis_tickformat=".0%", yaxis_title="share")
    figs["units"] = go.Figure(go.Bar(x=names, y=[len(c.units) for c in report.concepts], marker_color=cols,
                                     hovertemplate="%{x}: %{y} labeled units<extra></extra>"))
    figs["units"].update_layout(title=f"Labeled units per concept ({report.unit_layer})", yaxis_title="units")
    act = go.Figure(go.Bar(x=names, y=[c.mean_unit_activation or 0.0 for c in report.concepts], marker_color=cols,
                           name="mean", hovertemplate="%{x}: mean %{y:.3f}<extra></extra>"))
    xs = [c.concept for c in report.concepts for _ in c.unit_activations]
    ys = [v for c in report.concepts for v in c.unit_activations]
    texts = [f"unit {u}, IoU {i:.2f}" for c in report.concepts for u, i in zip(c.units, c.unit_ious)]
    # one jittered, translucent point per unit: hundreds of units on one x would draw a solid line
    act.add_trace(go.Box(x=xs, y=ys, boxpoints="all", jitter=0.7, pointpos=0, name="units",
                         marker=dict(color="rgba(0,0,0,0.35)", size=4), line=dict(width=0),
                         fillcolor="rgba(0,0,0,0)", hoveron="points", text=texts,
                         hovertemplate="%{text}: %{y:.3f}<extra></extra>"))
    act.update_layout(title="Activation of the labeled units on this image", yaxis_title="mean activation")
    figs["activation"] = act
    tc = [c for c in report.concepts if c.tcav_score is not None]
    tfig = go.Figure(go.Bar(
        x=[c.concept for c in tc], y=[c.tcav_score for c in tc],
        marker_color=[c.colour if c.tcav_significant else "#dddddd" for c in tc],
        marker_line_color=[c.colour for c in tc], marker_line_width=2,
        text=[("significant" if c.tcav_significant else "n.s.") + f" p={c.tcav_p_value:.3g}" for c in tc],
        textposition="outside", hovertemplate="%{x}: TCAV %{y:.2f}, %{text}<extra></extra>"))
    tfig.add_hline(y=0.5, line_dash="dot", line_color="grey")
    if not tc:
        tfig.add_annotation(text="no TCAV run for this probe version", showarrow=False, x=0.5, y=0.5,
                            xref="paper", yref="paper")
    tfig.update_layout(title=f"TCAV score for '{report.target_name}' (Bonferroni-corrected t-test vs random)",
                       yaxis_range=[0, 1.1], yaxis_title="fraction of inputs")
    figs["tcav"] = tfig
    if only is None or {"maps", "attribution"} & set(only):  # the image-like ones cost the most
        img = _thumb(report.image, max_side)
        mfig = go.Figure(go.Heatmap(z=img, colorscale="gray", showscale=False, hoverinfo="skip"))
        for c in report.concepts:
            if c.probe_map is None:
                continue
            mfig.add_trace(go.Contour(z=_thumb(c.probe_map, max_side), name=c.concept, showscale=False,
                                      contours=dict(start=0.5, end=0.5, size=0.5, coloring="none"),
                                      line=dict(color=c.colour, width=2), showlegend=True,
                                      hovertemplate=c.concept + " p=%{z:.2f}<extra></extra>"))
        mfig.update_layout(title="Concept maps (probe probability 0.5 contours)", yaxis_autorange="reversed",
                           yaxis_scaleanchor="x", legend_orientation="h")
        figs["maps"] = mfig
        afig = go.Figure(go.Heatmap(z=img, colorscale="gray", showscale=False, hoverinfo="skip"))
        afig.add_trace(go.Heatmap(z=_thumb(report.attribution_map, max_side), colorscale="Inferno", opacity=0.5,
                                  zmin=0, colorbar_title="attr."))
        afig.update_layout(title=f"Attribution ({report.attribution_method})", yaxis_autorange="reversed",
                           yaxis_scaleanchor="x")
        figs["attribution"] = afig
    if report.logit_bias is not None:
        lab = [c for c in report.concepts if c.logit_part is not None and c.units]
        xs = ["bias"] + [c.concept for c in lab] + ["unlabeled units", "logit"]
        ys = [report.logit_bias] + [c.logit_part for c in lab] + [report.logit_unlabeled, 0.0]
        figs["logit"] = go.Figure(go.Waterfall(x=xs, y=ys, measure=["relative"] * (len(xs) - 1) + ["total"],
                                               hovertemplate="%{x}: %{y:.4f}<extra></extra>"))
        figs["logit"].update_layout(title=f"Where the '{report.target_name}' logit comes from "
                                          + ("(exact)" if report.logit_exact else "(approximate)"))
    return figs if only is None else {k: f for k, f in figs.items() if k in only}


# ---------------------------------------------------------------- HTML
def _png_data_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _overlay_rgb(report: ConceptReport) -> tuple[np.ndarray, np.ndarray]:
    g = (np.clip(report.image.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    grey = np.stack([g] * 3, -1)
    concept_rgb = grey.astype(np.float32)
    for c in report.concepts:
        if c.probe_map is None:
            continue
        col = np.array([int(c.colour[i:i + 2], 16) for i in (1, 3, 5)], np.float32)
        alpha = 0.5 * np.clip((c.probe_map.astype(np.float32) - 0.3) / 0.7, 0, 1)[..., None]
        concept_rgb = concept_rgb * (1 - alpha) + col * alpha
    a = np.clip(report.attribution_map, 0, None)
    a = a / a.max() if a.max() > 0 else a
    heat = np.stack([a, a ** 2, np.zeros_like(a)], -1) * 255
    attr_rgb = 0.55 * grey + 0.45 * heat
    return concept_rgb.clip(0, 255).astype(np.uint8), attr_rgb.clip(0, 255).astype(np.uint8)


def export_html(report: ConceptReport, path: Path | str) -> Path:
    """One self-contained, offline HTML file: plotly.js inlined, images as data URIs."""
    path = Path(path)
    figs = report_figures(report)
    divs = [fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}", config={"displaylogo": False})
            for name, fig in figs.items()]
    concept_img, attr_img = _overlay_rgb(report)
    esc = html.escape
    rows = []
    for c in report.concepts:
        fmt = lambda v, f="{:.3f}": "–" if v is None else f.format(v)  # noqa: E731
        rows.append(
            f"<tr><td><span class='sw' style='background:{esc(c.colour)}'></span>{esc(c.concept)}</td>"
            f"<td>{fmt(c.attribution_share, '{:.1%}')}</td><td>{fmt(c.area_mm2, '{:.1f}')}</td>"
            f"<td>{fmt(c.peak_probability, '{:.2f}')}</td><td>{len(c.units)}</td><td>{fmt(c.logit_part, '{:+.4f}')}</td>"
            f"<td>{fmt(c.tcav_score, '{:.2f}')}{' *' if c.tcav_significant else ''}</td>"
            f"<td>{fmt(c.tcav_p_value, '{:.3g}')}</td><td>{fmt(c.probe_auroc, '{:.2f}')}</td>"
            f"<td>{c.n_drawings} / {c.n_images}</td><td>{esc(c.confidence_note or '')}</td></tr>")
    where = f"image {esc(str(report.image_id))}" if report.image_id else "patch"
    if report.patch:
        where += f", patch ({report.patch[0]}, {report.patch[1]}) size {report.patch[2]}"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ConceptLens report</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:; font-src data:">
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}} .sw{{display:inline-block;width:10px;height:10px;margin-right:5px}}
.imgs img{{width:360px;margin-right:12px;image-rendering:pixelated}} .note{{color:#666;font-size:12px}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head><body>
<h1>ConceptLens concept report</h1>
{f'<p class="domain-warning" style="background:#fff3cd;border:1px solid #e0a800;padding:6px"><b>&#9888; {esc(report.domain_warning)}</b></p>' if report.domain_warning else ''}
<p>{esc(where)} &middot; model <b>{esc(report.model_card)}</b> &middot; probe version {report.probe_version}
 ({esc(report.probe_layer)}) &middot; {esc(report.created_at)}</p>
<p><b>P({esc(report.target_name)}) = {report.probability:.3f}</b> (logit {report.logit:+.4f}) &middot;
 unexplained attribution {report.unexplained_share:.1%}</p>
<div class="imgs"><img alt="concept maps" src="{_png_data_uri(concept_img)}"><img alt="attribution" src="{_png_data_uri(attr_img)}"></div>
<table><tr><th>concept</th><th>attribution share</th><th>area mm²</th><th>peak p</th><th>units</th><th>logit part</th>
<th>TCAV</th><th>p</th><th>probe AUROC</th><th>drawings / images</th><th>note</th></tr>{''.join(rows)}</table>
<p class="note">{'<br>'.join(esc(n) for n in report.notes)}</p>
{''.join(f'<div class="fig">{d}</div>' for d in divs)}
<p class="note">For research and teaching; not a medical device.</p></body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path

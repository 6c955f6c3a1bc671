"""Caches: every cached computation of the app in one object, carried on the ``AppContext``.

``resources.get_context`` hands every session the one process-wide instance, so sessions share
the work: each ``Memo`` is keyed by what its result depends on (model card, weights SHA-256,
layer, image SHA-256, parameters), never by session, and two sessions asking for one key at
once compute it once (``Memo``'s per-key locks). Tests build a fresh ``Caches()`` per context
and read the miss counters from ``ctx.caches``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dashboard.ui.memo import HeadStart, Memo


def _memo(maxsize: int):
    return field(default_factory=lambda: Memo(maxsize))


@dataclass(frozen=True)
class Caches:
    # ------------------------------------------------------------ images (work.images)
    mammograms: Memo = _memo(24)       # image sha -> Mammogram
    model_images: Memo = _memo(24)     # (image sha, spacing, default spacing) -> (img, mask, Frame)
    display: Memo = _memo(48)          # (image sha, spacing, window key) -> (h, w) uint8, model orientation
    tiles: Memo = _memo(32)            # the same + card, weights, overlay, patches -> (RGB, JPEG) of a hung image
    drawn_patches: Memo = _memo(256)   # (image sha, spacing, default spacing, x0, y0, size) -> (S, S) float32
    lesion_maps: Memo = _memo(48)      # (card, weights sha, image sha, spacing) -> LesionMap
    attributions: Memo = _memo(24)     # (card, weights sha, image sha, spacing, method) -> Attribution
    case_head_start: HeadStart = field(default_factory=lambda: HeadStart(once=True))  # cases the Worklist prepares
    # ------------------------------------------------------------ concept layer (work.concepts)
    stats: Memo = _memo(8)             # stats directory -> DissectionStats
    activations: Memo = _memo(128)     # (card, weights, layer, image sha, x0, y0, size) -> (C, h, w)
    unit_masks: Memo = _memo(8)        # the same + stats key -> unit_iou.UnitMasks (~7 MB for 1280 units)
    unit_masks_head_start: HeadStart = field(default_factory=HeadStart)  # patches being prepared
    matches: Memo = _memo(64)          # (card, weights, stats, image sha, patch, geometry, tau) -> MatchView
    exemplars: Memo = _memo(64)        # (card, weights, layer, stats key, stats dir, unit) -> [(RGB, caption)]
    exemplars_head_start: HeadStart = field(default_factory=HeadStart)  # units whose exemplars are being built
    # ------------------------------------------------------------ report (work.evidence, work.report_parts)
    evidence: Memo = _memo(16)         # (card, weights, layer, image sha, spacing, method) -> ImageEvidence
    evidence_head_start: HeadStart = field(default_factory=HeadStart)   # evidence keys being computed
    decompositions: Memo = _memo(32)   # evidence key + best tile -> report.LayerDecomposition (also on disk)
    # probe-versioned caches start with probe_key: (db file, card, weights, probe version, created at)
    probes: Memo = _memo(16)           # probe key -> ProbeVersion
    probabilities: Memo = _memo(16)    # probe key + image sha -> (K+1, H, W), background first (unmasked)
    panels: Memo = _memo(16)           # probe key + image sha, colours, mirrored -> overlay, legend, maps
    reports: Memo = _memo(8)           # probe key + image sha, unit labels, TCAV run -> ConceptReport
    figures: Memo = _memo(8)           # report key + mirrored -> (shown report, named figures, rows)
    exports: Memo = _memo(8)           # report key -> HTML bytes
    bar_panels: Memo = _memo(8)        # report key + mirrored -> the bar charts in one figure
    map_figures: Memo = _memo(4)       # report key + mirrored -> the image-like figures (on request)
    whatifs: Memo = _memo(32)          # probe key + image sha, patch, concept, alpha, kind -> WhatIf (work.whatif)
    whatif_maps: Memo = _memo(8)       # the same -> the lesion map under the intervention
    version_diffs: Memo = _memo(8)     # both probe keys + image sha, mirrored -> VersionDiff (work.whatif)
    report_head_start: HeadStart = field(default_factory=lambda: HeadStart(once=True))  # probe key + image sha
    # ------------------------------------------------------------ where to draw next (work.suggestions)
    image_features: Memo = _memo(16)   # (card, weights, layer, image sha, spacing) -> (C, h, w) whole-image features
    suggestions: Memo = _memo(8)       # probe key + image shas, drawings, unit labels, stats -> [Suggestion]

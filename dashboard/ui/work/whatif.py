"""What the Report's "What if" panel and its probe-version comparison compute (each part cached).

What if: one concept removed (or dialled down by a strength alpha) from the report's patch (the
lesion map's most suspicious patch, whose probability is the image's), in activation space (the
probe direction projected out of the concept layer) and in image space (the concept's region
inpainted), side by side (``dashboard.engine.intervention``); optionally the whole image's lesion
map under either. Cached by probe version, image, patch, concept, strength and kind.

Version comparison: two stored probe versions' concept shares of one image, their difference and
their concept maps (each version's report comes from ``report_parts``' caches).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go

from dashboard import imaging
from dashboard.engine import intervention
from dashboard.ui.context import AppContext
from dashboard.ui.types import WindowChoice
from dashboard.ui.work.images import display_gray, lesion_map_for, model_image
from dashboard.ui.work.overlays import blend, composite, jpeg
from dashboard.ui.work.probe_versions import ProbeInfo, load_probe_version, probe_key
from dashboard.ui.work.report_parts import MAP_LEVEL, concept_panels, engine_report, image_concept_maps
from dashboard.ui.work.unit_map import DEFAULT_COLOUR

#: The two interventions, in the order the panel shows them.
KINDS = ("activation", "image")
#: Height of the panel's shares chart, px.
SHARES_PX = 300


def ranked_concepts(rep) -> list[str]:
    """The probe's concepts of a report, the largest attribution share first (the report's ranking)."""
    entries = [c for c in rep.concepts if c.attribution_share is not None]
    return [c.concept for c in sorted(entries, key=lambda c: -float(c.attribution_share))]


def _report_patch(ctx: AppContext, info: ProbeInfo, row: dict):
    """(report, patch (S, S) grey, (x0, y0, S)) of the image's report under ``info``."""
    rep, _, _ = engine_report(ctx, info, row)
    x0, y0, size = rep.patch
    img, _, _ = model_image(ctx, row)
    return rep, imaging.crop_patch(img, x0, y0, size), (int(x0), int(y0), int(size))


def whatif(ctx: AppContext, info: ProbeInfo, row: dict, concept: str, alpha: float, kind: str):
    """One intervention on the report's patch (``engine.intervention``), cached per probe version,
    image, patch, concept, strength (to 1 %) and kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown intervention {kind!r}; one of {KINDS}")
    alpha = round(float(alpha), 2)
    rep, patch, xy = _report_patch(ctx, info, row)
    key = probe_key(ctx, info) + (row["sha256"], xy, concept, alpha, kind)

    def compute():
        probe = load_probe_version(ctx, info)
        fn = intervention.remove_concept if kind == "activation" else intervention.inpaint_concept
        return fn(ctx.model, ctx.card, patch, probe, concept,
                  intervention.WhatIfConfig(alpha=alpha, level=MAP_LEVEL, device=ctx.device))

    return ctx.caches.whatifs.get(key, compute)


@dataclass
class WhatIfPanel:
    """Both interventions for one concept and strength, ready to show (display orientation)."""

    concept: str
    alpha: float
    patch: tuple[int, int, int]                 # (x0, y0, S) in model px
    results: dict                               # kind -> engine WhatIf
    sentences: dict                             # kind -> "without <concept>: P(lesion) 0.91 → 0.38"
    how: dict                                   # kind -> what was done, in words
    images: dict                                # "before" / kind -> JPEG of the patch with its concept map
    shares: go.Figure | None = None             # concept shares before and after both
    notes: list[str] = field(default_factory=list)


def _patch_jpeg(gray01: np.ndarray, maps: np.ndarray, colours: list[str], mirrored: bool) -> bytes:
    g = (np.clip(np.asarray(gray01, np.float32), 0, 1) * 255).astype(np.uint8)
    rgb = composite(g, np.asarray(maps, np.float32), colours, MAP_LEVEL)
    return jpeg(np.ascontiguousarray(rgb[:, ::-1] if mirrored else rgb))


def shares_figure(results: dict, concepts: list[str], colours: dict[str, str]) -> go.Figure:
    """Grouped bars: each concept's share (and the unexplained rest) before and after each intervention."""
    first = next(iter(results.values()))
    xs = concepts + ["unexplained"]
    fig = go.Figure(go.Bar(x=xs, y=[first.shares_before[c] for c in concepts] + [first.unexplained_before],
                           name="as reported", marker_color="#888888",
                           hovertemplate="%{x}: %{y:.1%} before<extra></extra>"))
    for kind, colour in zip(KINDS, ("#1f77b4", "#ff7f0e")):
        r = results.get(kind)
        if r is None:
            continue
        label = "activation removed" if kind == "activation" else "region inpainted"
        fig.add_trace(go.Bar(x=xs, y=[r.shares_after[c] for c in concepts] + [r.unexplained_after], name=label,
                             marker_color=colour, hovertemplate="%{x}: %{y:.1%} " + label + "<extra></extra>"))
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_title="share of the attribution",
                      height=SHARES_PX, margin=dict(l=70, r=10, t=40, b=40), legend_orientation="h",
                      title="Concept shares before and after")
    return fig


def whatif_panel(ctx: AppContext, info: ProbeInfo, row: dict, concept: str, alpha: float) -> WhatIfPanel:
    """Both interventions on the report's patch, their sentences, patches and shares chart."""
    results = {kind: whatif(ctx, info, row, concept, alpha, kind) for kind in KINDS}
    rep, patch, xy = _report_patch(ctx, info, row)
    probe = load_probe_version(ctx, info)
    colours = {c["name"]: c["colour"] for c in ctx.store.list_concepts()}
    cols = [colours.get(c, DEFAULT_COLOUR) for c in probe.concepts]
    mirrored = imaging.display_flip(row["laterality"])
    act, img = results["activation"], results["image"]
    images = {"before": _patch_jpeg(patch, act.maps_before, cols, mirrored),
              "activation": _patch_jpeg(patch, act.maps_after, cols, mirrored),
              "image": _patch_jpeg(img.image_after, img.maps_after, cols, mirrored)}
    how = {"activation": f"its probe direction projected out of {probe.layer} at every position "
                         f"({alpha:.0%}), the rest of the network run on it",
           "image": f"its region (p ≥ {MAP_LEVEL:g}, {int(img.region.sum())} px) inpainted, {img.method}"}
    notes = [n for r in results.values() for n in r.notes]
    return WhatIfPanel(concept=concept, alpha=float(alpha), patch=xy, results=results,
                       sentences={k: r.sentence() for k, r in results.items()}, how=how, images=images,
                       shares=shares_figure(results, list(probe.concepts), colours), notes=notes)


def whatif_lesion_maps(ctx: AppContext, info: ProbeInfo, row: dict, concept: str, alpha: float) -> dict:
    """The whole image's lesion map before and under each intervention: {"before" / kind: (JPEG, score)}
    in display orientation (cached per probe version, image, concept and strength)."""
    alpha = round(float(alpha), 2)
    key = probe_key(ctx, info) + (row["sha256"], concept, alpha)

    def compute():
        img, mask, _ = model_image(ctx, row)
        probe = load_probe_version(ctx, info)
        concepts, maps = image_concept_maps(ctx, info, row["image_id"])  # (K, H, W)
        gray, _ = display_gray(ctx, row, WindowChoice())
        mirrored = imaging.display_flip(row["laterality"])
        maps_of = {"before": lesion_map_for(ctx, row["image_id"])}
        for kind in KINDS:
            maps_of[kind] = intervention.intervened_lesion_map(
                ctx.model, ctx.card, img, mask, probe, concept, kind, alpha,
                concept_map=maps[concepts.index(concept)], level=MAP_LEVEL)
        out = {}
        for name, lm in maps_of.items():
            rgb = blend(gray, lm.prob, 0.75)
            out[name] = (jpeg(np.ascontiguousarray(rgb[:, ::-1] if mirrored else rgb)), float(lm.score))
        return out

    return ctx.caches.whatif_maps.get(key, compute)


# ---------------------------------------------------------------- probe versions side by side
@dataclass
class VersionDiff:
    """Two probe versions' concept shares of one image and their concept maps (display orientation)."""

    version: int
    other: int
    rows: list[dict]            # concept, share v, share other, difference (v - other)
    figure: go.Figure
    overlays: dict              # version -> JPEG of its concept map composite
    probabilities: dict         # version -> P(target) of its report (the same model: equal)


def version_diff(ctx: AppContext, info: ProbeInfo, other: ProbeInfo, row: dict) -> VersionDiff:
    """Concept shares of ``info`` and ``other`` over one image, the difference per concept (a concept
    one version lacks counts as 0 there), and both versions' concept maps (cached)."""
    mirrored = imaging.display_flip(row["laterality"])
    key = probe_key(ctx, info) + probe_key(ctx, other) + (row["sha256"], mirrored)

    def compute():
        colours = {c["name"]: c["colour"] for c in ctx.store.list_concepts()}
        reps = {i.version: engine_report(ctx, i, row)[0] for i in (info, other)}
        shares = {v: {c.concept: float(c.attribution_share) for c in r.concepts if c.attribution_share is not None}
                  | {"unexplained": float(r.unexplained_share)} for v, r in reps.items()}
        names = list(dict.fromkeys([*shares[info.version], *shares[other.version]]))
        names = [n for n in names if n != "unexplained"] + ["unexplained"]
        a, b = shares[info.version], shares[other.version]
        rows = [{"concept": n, f"share v{info.version}": round(a.get(n, 0.0), 4),
                 f"share v{other.version}": round(b.get(n, 0.0), 4),
                 "difference": round(a.get(n, 0.0) - b.get(n, 0.0), 4)} for n in names]
        diff = [r["difference"] for r in rows]
        fig = go.Figure(go.Bar(x=names, y=diff, marker_color=["#2ca02c" if d >= 0 else "#d62728" for d in diff],
                               customdata=[[a.get(n, 0.0), b.get(n, 0.0)] for n in names],
                               hovertemplate=(f"%{{x}}: v{info.version} %{{customdata[0]:.1%}}, v{other.version} "
                                              "%{customdata[1]:.1%}, difference %{y:+.1%}<extra></extra>")))
        fig.add_hline(y=0, line_color="grey")
        fig.update_layout(title=f"Concept shares: v{info.version} minus v{other.version}", yaxis_tickformat="+.0%",
                          yaxis_title="difference of share", height=SHARES_PX, margin=dict(l=70, r=10, t=40, b=40))
        overlays = {i.version: concept_panels(ctx, i, row, colours, mirrored)[3]["overlay"] for i in (info, other)}
        return VersionDiff(info.version, other.version, rows, fig, overlays,
                           {v: float(r.probability) for v, r in reps.items()})

    return ctx.caches.version_diffs.get(key, compute)

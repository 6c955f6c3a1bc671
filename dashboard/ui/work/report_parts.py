"""The probe-dependent parts of an image's concept report, each cached in ``ctx.caches``: the
probe's concept maps over the whole image, the coloured panels the page shows, the engine's
report (``dashboard.engine.report``) and its figures in display orientation.

The Report page and ``prefetch_report`` (started by the Label page after a Save) go through the
same functions and caches, so a prefetched report is exactly the one the page asks for.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, replace

import numpy as np
from plotly.subplots import make_subplots

from dashboard import imaging
from dashboard.engine import probes, report
from dashboard.engine.tcav import TCAVResult
from dashboard.ui.context import AppContext
from dashboard.ui.types import WindowChoice
from dashboard.ui.work.concepts import layer_of
from dashboard.ui.work.evidence import image_decomposition, image_evidence, report_config
from dashboard.ui.work.images import display_gray, model_image
from dashboard.ui.work.overlays import blend, composite, jpeg
from dashboard.ui.work.probe_versions import ProbeInfo, load_probe_version, probe_info, probe_key
from dashboard.ui.work.unit_map import DEFAULT_COLOUR

#: A pixel is painted with a concept's colour where that concept's probability is at least this.
MAP_LEVEL = 0.5
#: The engine's image-like figures: shown on request (the page already shows the concept maps as
#: images; these two cost the browser as much as all the bar charts together).
MAP_FIGURES = ("maps", "attribution")
#: Order in which the engine's figures are shown.
FIGURE_ORDER = ("shares", "logit", "maps", "attribution", "activation", "units", "tcav")
#: Height of one row of charts in the combined bar-chart figure, px.
PANEL_ROW_PX = 340
#: Height of one of the engine's figures shown alone, px.
FIGURE_PX = 360


# ---------------------------------------------------------------- the probe over the image
def image_concept_maps(ctx: AppContext, probe_version, image_id: str) -> tuple[list[str], np.ndarray]:
    """(concepts, (K, H, W) probabilities) of the probe over a whole model-space image, zero
    outside the breast (cached).

    The feature map comes from the image's cached evidence, so a new probe version costs one
    matmul over the feature grid and an upsampling, not a pass through the network."""
    row = ctx.store.get_image(image_id)
    p = load_probe_version(ctx, probe_version)
    _, mask, _ = model_image(ctx, row)
    return list(p.concepts), probabilities(ctx, probe_version, row)[1:] * mask[None]


def probabilities(ctx: AppContext, probe_version, row: dict) -> np.ndarray:
    """(K+1, H, W) probe probabilities over the whole model-space image, background first, not
    masked: the concept maps and the engine's report share this one computation (cached)."""
    p = load_probe_version(ctx, probe_version)

    def compute():
        img, _, _ = model_image(ctx, row)
        feats = image_evidence(ctx, row).feats.get(p.layer)
        if feats is None:  # a probe of another layer than the card's concept layer
            return probes.compute_image_concept_maps(p, ctx.model, ctx.card, img, device=ctx.device,
                                                     include_background=True)
        return probes.compute_concept_maps(p, feats, img.shape, include_background=True)

    return ctx.caches.probabilities.get(probe_key(ctx, probe_version) + (row["sha256"],), compute)


def concept_panels(ctx: AppContext, info: ProbeInfo, row: dict, colours: dict[str, str], mirrored: bool):
    """The composite concept map, its legend and one heat map per concept, display orientation,
    with their JPEG display copies (cached by probe version, image and concept colours)."""
    key = probe_key(ctx, info) + (row["sha256"], tuple(sorted(colours.items())), mirrored)

    def compute():
        concepts, maps = image_concept_maps(ctx, info, row["image_id"])  # (K, H, W)
        gray, _ = display_gray(ctx, row, WindowChoice())
        cols = [colours.get(c, DEFAULT_COLOUR) for c in concepts]
        _, mask, _ = model_image(ctx, row)
        over = composite(gray, maps, cols, MAP_LEVEL)
        breast = max(int(mask.sum()), 1)
        legend = [{"concept": c, "colour": col,
                   "area_%": round(100.0 * float((maps[k] >= MAP_LEVEL).sum()) / breast, 2),
                   "max_p": round(float(maps[k].max()), 3)} for k, (c, col) in enumerate(zip(concepts, cols))]
        per = [(c, blend(gray, maps[k], 0.75)) for k, c in enumerate(concepts)]
        if mirrored:
            over = over[:, ::-1]
            per = [(c, m[:, ::-1]) for c, m in per]
        over = np.ascontiguousarray(over)
        per = [(c, np.ascontiguousarray(m)) for c, m in per]
        encoded = {"overlay": jpeg(over), **{c: jpeg(m) for c, m in per}}
        return over, legend, per, encoded

    return ctx.caches.panels.get(key, compute)


# ---------------------------------------------------------------- the engine's report
def engine_report(ctx: AppContext, info: ProbeInfo, row: dict):
    """The engine's whole-image concept report (cached by model, probe, image, labels and TCAV run):
    (ConceptReport, its cache key, the TCAV run id or None).

    The probe-independent evidence comes from ``image_evidence`` (cached per image), so a new probe
    version costs the probe's maps and the assembly only."""
    # the units of the card's concept layer, the layer the engine's report decomposes the logit at
    labels = ctx.store.list_unit_labels(ctx.card_name, getattr(ctx.card, "default_layer", None) or layer_of(ctx))
    lab_key = hashlib.sha256(repr(sorted((r["unit"], r["concept"], r["annotation_id"]) for r in labels))
                             .encode()).hexdigest()[:16]
    run = ctx.store.latest_tcav_run(info.version)
    key = probe_key(ctx, info) + (row["sha256"], lab_key, run["run_id"] if run else None)

    def compute():
        img, mask, _ = model_image(ctx, row)
        probe = load_probe_version(ctx, info)
        tcav = TCAVResult.from_dict(run["results"]) if run else None
        return report.build_image_report(
            ctx.model, ctx.card, img, probe, config=report_config(ctx),
            inputs=report.ReportInputs(mask=mask, store=ctx.store, unit_labels=labels, tcav=tcav,
                                       image_id=row["image_id"], evidence=image_evidence(ctx, row),
                                       probs_all=probabilities(ctx, info, row),
                                       # probe- and label-independent: computed once per image (memory, disk)
                                       decomposition=image_decomposition(ctx, row) if labels else None))

    return ctx.caches.reports.get(key, compute), key, (run["run_id"] if run else None)


def for_display(rep, mirrored: bool):
    """The report's images mirrored for a right breast (display orientation); numbers unchanged."""
    if not mirrored:
        return rep

    def flip(a):
        return None if a is None else np.ascontiguousarray(np.asarray(a)[:, ::-1])

    return replace(rep, image=flip(rep.image), attribution_map=flip(rep.attribution_map),
                   concepts=[replace(c, probe_map=flip(c.probe_map)) for c in rep.concepts],
                   notes=list(rep.notes) + ["images shown in display orientation (right breast mirrored)"])


def engine_figures(rep, names) -> dict:
    """The engine's figures ``names`` (None: all) of a report, sized for the page."""
    figs = report.report_figures(rep, only=names)
    for f in figs.values():
        f.update_layout(height=FIGURE_PX, margin=dict(l=10, r=10, t=50, b=10))
    return figs


def concept_rows(rep) -> list[dict]:
    """One table row per concept of the engine's report, rounded for display."""
    def r(v, n=3):
        return None if v is None else round(float(v), n)

    return [{"concept": c.concept, "attribution share": r(c.attribution_share), "area mm²": r(c.area_mm2, 1),
             "peak p": r(c.peak_probability, 2), "units": len(c.units), "logit part": r(c.logit_part, 4),
             "TCAV": r(c.tcav_score, 2), "TCAV p": r(c.tcav_p_value, 4), "significant": c.tcav_significant,
             "probe AUROC": r(c.probe_auroc), "drawings/images": f"{c.n_drawings}/{c.n_images}",
             "confidence": c.confidence_note or ""} for c in rep.concepts]


def shown_report(rep, mirrored: bool):
    """The report in display orientation, its bar charts (named, in ``FIGURE_ORDER``) and its
    concept rows; the image-like figures are built on request (``map_figures``)."""
    shown = for_display(rep, mirrored)
    figs = engine_figures(shown, set(FIGURE_ORDER) - set(MAP_FIGURES))  # FIGURE_ORDER names all the engine's
    ordered = [(k, figs[k]) for k in FIGURE_ORDER if k in figs] + [(k, f) for k, f in figs.items()
                                                                   if k not in FIGURE_ORDER]
    return shown, ordered, concept_rows(rep)


def map_figures(shown) -> list:
    """The engine's image-like figures (concept contours, attribution) of a report in display
    orientation, in ``MAP_FIGURES`` order: the page draws them when the reader asks."""
    figs = engine_figures(shown, MAP_FIGURES)
    return [figs[k] for k in MAP_FIGURES if k in figs]


def _axis_ref(v, axis: str, own: str) -> str:
    """A chart's own axis reference (or paper) -> the subplot cell's axis (or its domain)."""
    if v is None or v == "paper":
        return f"{own} domain"
    return v.replace(axis, own, 1)


def bar_panel(figs: list[tuple[str, object]], cols: int = 2):
    """The engine's bar charts as subplots of ONE plotly figure, two per row (the browser builds
    one plot instead of one per chart: each plotly chart costs a full ``newPlot``). Each chart keeps
    its traces and hover, its title (as the subplot title), its y-axis title, format and range, and
    its reference lines and notes. None when there is no chart."""
    if not figs:
        return None
    rows = -(-len(figs) // cols)
    titles = [f.layout.title.text or name for name, f in figs]
    out = make_subplots(rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=0.5 / rows / 2,
                        horizontal_spacing=0.12)
    out.update_annotations(font_size=13)  # the subplot titles (the charts' notes come after)
    for i, (_, f) in enumerate(figs):
        r, c = divmod(i, cols)
        sub = out.get_subplot(r + 1, c + 1)
        xref, yref = sub.xaxis.plotly_name.replace("axis", ""), sub.yaxis.plotly_name.replace("axis", "")
        for tr in f.data:  # (copied: the chart's own figure stays as it is)
            out.add_trace(tr, row=r + 1, col=c + 1)
        ya = f.layout.yaxis
        out.update_yaxes(title_text=ya.title.text, tickformat=ya.tickformat, range=ya.range, row=r + 1, col=c + 1)
        for sh in f.layout.shapes:
            out.add_shape(sh.to_plotly_json() | {"xref": _axis_ref(sh.xref, "x", xref),
                                                 "yref": _axis_ref(sh.yref, "y", yref)})
        for an in f.layout.annotations:
            out.add_annotation(an.to_plotly_json() | {"xref": _axis_ref(an.xref, "x", xref),
                                                      "yref": _axis_ref(an.yref, "y", yref)})
    # room for the inner column's tick labels and axis titles (automargin only moves the outer edges)
    out.update_layout(height=PANEL_ROW_PX * rows, margin=dict(l=70, r=10, t=50, b=10), showlegend=False,
                      bargap=0.3)
    return out


# ---------------------------------------------------------------- all of it, for one image
@dataclass
class ProbeParts:
    """What the Report of one image computes for one probe version (each part cached)."""

    panels: tuple        # overlay, legend, per-concept maps, JPEG bytes (``concept_panels``)
    report: object       # the engine's ConceptReport (``engine_report``)
    key: tuple           # its cache key
    tcav_run: int | None
    shown: tuple         # display-orientation report, named figures, concept rows (``shown_report``)
    panel: object        # the bar charts in one figure (``bar_panel``), or None
    mirrored: bool       # shown in display orientation of a right breast


def probe_parts(ctx: AppContext, info: ProbeInfo, row: dict) -> ProbeParts:
    """The probe-dependent parts of an image's report, through the same caches for the page and
    for ``prefetch_report``."""
    colours = {c["name"]: c["colour"] for c in ctx.store.list_concepts()}
    mirrored = imaging.display_flip(row["laterality"])
    panels = concept_panels(ctx, info, row, colours, mirrored)
    rep, key, tcav_run = engine_report(ctx, info, row)
    shown = ctx.caches.figures.get(key + (mirrored,), lambda: shown_report(rep, mirrored))
    panel = ctx.caches.bar_panels.get(key + (mirrored,), lambda: bar_panel(shown[1]))
    return ProbeParts(panels, rep, key, tcav_run, shown, panel, mirrored)


def prefetch_report(ctx: AppContext, image_id: str) -> threading.Thread | None:
    """Start computing the Report of ``image_id`` under the latest probe version in a background
    thread, once per probe version and image: after a Save retrained the probes, the reader's
    way to the Report page then finds the concept maps, the engine's report and its figures
    ready, and the page only sends them. Returns the thread, or None when there is nothing to
    prepare (no model or probe, or already started for this version) or when the image's report
    is being prepared for an older version: this one then runs after it (``HeadStart`` slot).

    The thread calls only cached ``dashboard`` functions (no streamlit); a Report that asks for
    the same parts meanwhile waits for them instead of computing them twice (``Memo``)."""
    if not ctx.model_ready:
        return None
    info = probe_info(ctx)
    row = ctx.store.get_image(image_id)
    if info is None or row is None:
        return None
    # one at a time per image: a burst of Saves (several readers retraining) prepares the newest version
    return ctx.caches.report_head_start.start(probe_key(ctx, info) + (row["sha256"],),
                                              lambda: probe_parts(ctx, info, row),
                                              name=f"report-{image_id}-v{info.version}", slot=row["sha256"])

"""Report: which concepts carry the evidence for an image's prediction, where they are, how sure.

The probe (a logistic regression over the concept layer, trained on the readers' drawings) gives
concept maps over the whole image; the engine's report (``dashboard.engine.report``) turns probe, TCAV
and unit labels into figures and exports (``dashboard.ui.work.report_parts``). "Retrain probes"
fits a new probe version.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import plotly.graph_objects as go

from dashboard import evaluation
from dashboard.data.demo import DEMO_READER
from dashboard.data.domain import domain_warning, image_row_domain
from dashboard.engine import report, tcav
from dashboard.export import export_dicom
from dashboard.progress import Progress
from dashboard.progress import report as report_progress
from dashboard.ui.context import AppContext
from dashboard.ui.types import PatchRef, ReportError, operating_threshold
from dashboard.ui.work.concepts import layer_of
from dashboard.ui.work.images import model_image, model_spacing, patch_gray
from dashboard.ui.work.probe_versions import (
    ProbeInfo,
    annotation_patch,
    load_probe_version,
    probe_info,
    probe_versions,
)
from dashboard.ui.work.probe_versions import retrain as retrain  # the page's Retrain probes button
from dashboard.ui.work.report_lead import Lead, lead_of
from dashboard.ui.work.report_parts import MAP_LEVEL as MAP_LEVEL  # the page's caption
from dashboard.ui.work.report_parts import map_figures, probe_parts
from dashboard.ui.work.whatif import (
    VersionDiff,
    WhatIfPanel,
    ranked_concepts,
    version_diff,
    whatif_lesion_maps,
    whatif_panel,
)

#: Most input patches TCAV scores (the model's most suspicious patches of the store's images).
TCAV_INPUTS = 48
#: An AUROC the learning curve marks as "learnt".
LEARNT_AUROC = 0.9


@dataclass
class ReportView:
    image_ids: list[str]
    image_id: str | None
    image_label: str
    probe: ProbeInfo | None
    overlay: np.ndarray | None         # (H, W, 3) concept map composite, display orientation
    legend: list[dict]                 # concept, colour, area (% of breast above MAP_LEVEL), max prob
    concept_maps: list[tuple[str, np.ndarray]]  # per concept heat over the image, display orientation
    figures: list = field(default_factory=list)  # the engine's bar charts as one plotly figure, when available
    report: dict | None = None                   # JSON-ready report
    score: float | None = None
    notes: list[str] = field(default_factory=list)
    image_names: dict = field(default_factory=dict)   # image id -> "R CC · case"
    concepts: list[dict] = field(default_factory=list)  # the engine's per-concept rows
    probability: float | None = None                  # P(target) of the engine's report
    target: str = ""
    export_json: Callable[[], bytes] | None = None     # deferred: run when the reader downloads
    export_html: Callable[[], bytes] | None = None
    export_dicom: Callable[[], bytes] | None = None    # deferred: ZIP of source, SEGs, parametric map and SR
    export_sr: Callable[[], bytes] | None = None       # deferred: the TID 1500 SR alone
    export_name: str = "report"
    tcav_run: int | None = None
    encoded: dict = field(default_factory=dict)      # "overlay" / concept -> JPEG bytes of the images above
    map_figures: Callable[[], list] | None = None   # deferred: the engine's image-like figures (maps,
                                                    # attribution), built when the reader asks for them
    figure_names: list = field(default_factory=list)  # the engine's figures drawn in ``figures``, in order
    domain_warning: str = ""                          # the image is from another domain than the model's
    lead: Lead | None = None                          # the plain sentences the page shows first
    versions: list[int] = field(default_factory=list)  # the stored probe versions, newest first
    whatif_concepts: list[str] = field(default_factory=list)  # the probe's concepts, largest share first


def report_images(ctx: AppContext, case_id: str | None) -> list[dict]:
    """The images the report may show: the case's, else (no case, or an empty one) the store's."""
    if case_id:
        imgs = ctx.store.list_images(case_id=case_id)
        if imgs:
            return imgs
    return ctx.store.list_images()


def report_json(rep) -> bytes:
    """The engine's lossless JSON (model space, arrays base64)."""
    return report.report_to_json(rep).encode("utf-8")


def report_html(ctx: AppContext, rep, stem: str) -> bytes:
    """One offline HTML file (the engine's export), also kept under settings.export_dir."""
    path = report.export_html(rep, ctx.settings.export_dir / f"{stem}.html")
    return path.read_bytes()


def _fill_from_probe(ctx: AppContext, view: ReportView, info: ProbeInfo, row: dict) -> None:
    """The probe-dependent part of the view (each part cached, see ``report_parts.probe_parts``)."""
    parts = probe_parts(ctx, info, row)
    view.overlay, view.legend, view.concept_maps, view.encoded = parts.panels
    rep, key = parts.report, parts.key
    shown, figs, rows = parts.shown
    view.figures = [parts.panel] if parts.panel is not None else []
    view.figure_names = [name for name, _ in figs]
    view.map_figures = lambda: ctx.caches.map_figures.get(key + (parts.mirrored,), lambda: map_figures(shown))
    view.concepts = rows
    view.whatif_concepts = ranked_concepts(rep)
    _, breast, _ = model_image(ctx, row)
    view.lead = lead_of(rep, row, breast, model_spacing(ctx), operating_threshold(ctx.card), readers=info.readers,
                        demo_reader=DEMO_READER)
    view.probability, view.target = float(rep.probability), rep.target_name
    view.notes += list(rep.notes)
    view.tcav_run = parts.tcav_run
    if parts.tcav_run is None:
        view.notes.append(f"TCAV is not computed for probe v{info.version} yet: press Run TCAV for its scores.")
    stem = f"conceptlens-{row['case_id']}-{row['laterality']}{row['view']}-probe{info.version}"
    view.export_name = stem
    warning = view.domain_warning
    view.export_json = lambda: report_json(replace(rep, domain_warning=warning))
    view.export_html = lambda: ctx.caches.exports.get(
        key + ("domain", warning), lambda: report_html(ctx, replace(shown, domain_warning=warning), stem))
    drawn = tuple(a.annotation_id for a in ctx.store.list_annotations(image_id=row["image_id"]))

    def dicom_export():
        return ctx.caches.exports.get(key + ("dicom", warning, drawn), lambda: export_dicom(
            ctx.store, row["image_id"], ctx.settings.export_dir / f"{stem}-dicom",
            report=replace(rep, domain_warning=warning), card=ctx.card, frame=model_image(ctx, row)[2]))

    view.export_dicom = lambda: dicom_export().zip_bytes()
    view.export_sr = lambda: dicom_export().sr.read_bytes()


def load_report(ctx: AppContext, case_id: str | None, image_id: str | None, version: int | None = None) -> ReportView:
    """The report of one image (default: the case's first image) under probe ``version`` (default,
    or when it is not stored: the latest).

    Only what depends on the probe version is computed for a new version: the image's evidence
    (tiles, feature map, attribution) is cached by model and image, and everything else by its
    inputs, so a rerun that changed nothing recomputes nothing."""
    imgs = report_images(ctx, case_id)
    ids = [i["image_id"] for i in imgs]
    names = {i["image_id"]: f"{i['laterality']} {i['view']} · {i['case_id']}" for i in imgs}
    if not ids:
        return ReportView([], None, "", None, None, [], [], notes=["The store has no images yet."])
    image_id = image_id if image_id in ids else ids[0]
    row = next(i for i in imgs if i["image_id"] == image_id)
    view = ReportView(ids, image_id, names[image_id], None, None, [], [], image_names=names)
    if not ctx.model_ready:
        view.notes.append(f"The report needs the model: {ctx.model_error}")
        return view
    view.domain_warning = domain_warning(ctx.card, image_row_domain(ctx.store, image_id))
    view.versions = probe_versions(ctx)
    info = (probe_info(ctx, version) if version in view.versions else None) or probe_info(ctx)
    pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, image_id)
    view.score = None if pred is None else float(pred["score"])
    if info is None:
        view.notes.append("No concept probe is trained yet: label some concepts, then press Retrain probes.")
        return view
    if info.n_drawings and not info.n_live:
        view.notes.append(f"Concept probe v{info.version} was trained only on drawings that were removed since: "
                          "label some concepts, then press Retrain probes.")
        return view
    view.probe = info
    if info.stale:
        view.notes.append("Drawings were added or undone since this probe was trained: retrain to include them.")
    _fill_from_probe(ctx, view, info, row)
    return view


# ---------------------------------------------------------------- what if, and another probe version
def _row(ctx: AppContext, view: ReportView) -> dict:
    if view.probe is None or view.image_id is None or not ctx.model_ready:
        raise ReportError("What if needs a report: a trained concept probe and the model.")
    return ctx.store.get_image(view.image_id)


def whatif(ctx: AppContext, view: ReportView, concept: str, strength_pct: float) -> WhatIfPanel:
    """The report's patch without ``concept`` (``strength_pct`` % of it removed), both interventions."""
    if concept not in view.whatif_concepts:
        raise ReportError(f"{concept!r} is not a concept of probe v{view.probe.version if view.probe else '?'}.")
    return whatif_panel(ctx, view.probe, _row(ctx, view), concept, float(strength_pct) / 100.0)


def whatif_maps(ctx: AppContext, view: ReportView, concept: str, strength_pct: float) -> dict:
    """The image's lesion map before and under both interventions: {"before" / kind: (JPEG, score)}."""
    return whatif_lesion_maps(ctx, view.probe, _row(ctx, view), concept, float(strength_pct) / 100.0)


def compare_versions(ctx: AppContext, view: ReportView, other: int) -> VersionDiff:
    """The shown probe version against stored version ``other`` on the shown image."""
    info = probe_info(ctx, other)
    if info is None:
        raise ReportError(f"Probe version {other} is not stored for this model.")
    return version_diff(ctx, view.probe, info, _row(ctx, view))


# ---------------------------------------------------------------- TCAV
def tcav_inputs(ctx: AppContext, limit: int = TCAV_INPUTS) -> np.ndarray:
    """The model's most suspicious patch of each scored image, best first: (N, S, S) in [0, 1]."""
    rows = []
    for img in ctx.store.list_images():
        pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, img["image_id"])
        if pred and pred["top_patches"]:
            x0, y0, size, prob = pred["top_patches"][0]
            rows.append((float(prob), PatchRef(img["image_id"], int(x0), int(y0), int(size))))
    rows.sort(key=lambda t: -t[0])
    if not rows:
        raise ReportError("TCAV needs scored images: score the cases on the Worklist first.")
    return np.stack([patch_gray(ctx, ref) for _, ref in rows[:limit]])


def run_tcav(ctx: AppContext, progress: Progress | None = None):
    """TCAV of the latest probe's concepts for the lesion class over the most suspicious patches.
    ``progress(done, total, message)`` in tenths of the job."""
    ctx.require_model()
    info = probe_info(ctx)
    if info is None:
        raise ReportError("Train the concept probes first: TCAV uses the drawings behind them.")
    report_progress(progress, 1, 10, "Collecting the most suspicious patches")
    inputs = tcav_inputs(ctx)
    report_progress(progress, 3, 10, f"Scoring {len(inputs)} patches against {len(info.concepts)} concept(s)")
    try:
        res = tcav.run_tcav(ctx.store, ctx.model, ctx.card, load_probe_version(ctx, info), inputs,
                            load_patch=annotation_patch(ctx),
                            config=tcav.TCAVConfig(cache_dir=ctx.settings.cache_dir, device=ctx.device))
    except ValueError as exc:  # the engine's "too few background positions: draw on more patches"
        raise ReportError(str(exc)) from exc
    report_progress(progress, 10, 10, "TCAV done")
    return res


# ---------------------------------------------------------------- learning curve
@dataclass
class LearningCurveView:
    """Validation AUROC (by image) of each concept against the number of its drawings so far."""

    rows: list[dict]
    figure: object | None
    note: str = ""


def _validated(r: dict) -> bool:
    return r["auroc"] is not None and r["auroc"] == r["auroc"]  # NaN: not validated


def learning_curve_figure(rows: list[dict]):
    """One line per concept: validation AUROC against its number of drawings."""
    fig = go.Figure()
    for concept in sorted({r["concept"] for r in rows}):
        pts = [r for r in rows if r["concept"] == concept and _validated(r)]
        if pts:
            fig.add_trace(go.Scatter(x=[r["n_drawings"] for r in pts], y=[r["auroc"] for r in pts],
                                     mode="lines+markers", name=concept))
    fig.add_hline(y=LEARNT_AUROC, line_dash="dot", annotation_text=f"{LEARNT_AUROC:.2f}")
    fig.update_layout(xaxis_title="drawings of the concept", yaxis_title="validation AUROC (by image)",
                      yaxis_range=[0, 1.02], height=360, margin=dict(l=40, r=10, t=30, b=40))
    return fig


def learning_curve(ctx: AppContext, progress: Progress | None = None) -> LearningCurveView:
    """Refit the probes on the first n drawings of every concept (time order) and validate each by
    held-out images (``dashboard.evaluation.compute_learning_curve``), so a reader sees when a
    concept is learnt. Uses the readers' real drawings (the simulated reader is left out)."""
    df = evaluation.compute_learning_curve(ctx.store, ctx.card, ctx.model, load_patch=annotation_patch(ctx),
                                           config=evaluation.LearningCurveConfig(layer=layer_of(ctx)),
                                           progress=progress)
    rows = df.to_dict("records") if len(df) else []
    if not rows:
        return LearningCurveView([], None, "No drawings yet: the curve appears once concepts are drawn.")
    if not any(_validated(r) for r in rows):
        return LearningCurveView(rows, None, "Not enough drawings on distinct images yet to validate any concept by image.")
    return LearningCurveView(rows, learning_curve_figure(rows))

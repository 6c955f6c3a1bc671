"""Report: which concepts carry the evidence for an image's prediction, where they are, how sure.

The probe (a logistic regression over the concept layer, trained on the readers' drawings) gives
concept maps over the whole image; the engine's report (``dashboard.engine.report``) turns probe, TCAV
and unit labels into figures and exports. "Retrain probes" fits a new probe version.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dashboard.ui.context import AppContext
from dashboard.ui.memo import HeadStart, Memo
from dashboard.ui.screens import concepts as cx
from dashboard.ui.screens.reading import PatchRef, WindowChoice, display_gray, model_image

_EVIDENCE = Memo(16)  # (card, weights, layer, image sha, spacing, method) -> report.ImageEvidence (no probe)
# probe-versioned caches start with _probe_key: (db file, card, weights, probe version, created at)
_PROBES = Memo(16)    # probe key -> ProbeVersion
_MAPS = Memo(16)      # probe key + image sha -> (K+1, H, W) probabilities, background first (unmasked)
_PANELS = Memo(16)    # probe key + image sha, colours, mirrored -> overlay, legend, per-concept maps
_REPORTS = Memo(8)    # probe key + image sha, unit labels, TCAV run -> ConceptReport
_FIGURES = Memo(8)    # same key + mirrored -> (shown report, plotly figures, concept rows)
_EXPORTS = Memo(8)    # same key -> HTML bytes
_PANELS_FIG = Memo(8)  # same key + mirrored -> the bar charts in one figure
_MAP_FIGURES = Memo(4)  # same key + mirrored -> the image-like figures (on request)
_PREFETCHING = HeadStart()   # evidence keys a background thread is computing
_REPORT_HEAD_START = HeadStart(once=True)  # probe key + image sha of the reports prefetch_report prepared
#: Attribution method of the report's evidence shares (fast on a whole image on 2 CPU cores).
REPORT_METHOD = "gradcam"
#: The engine's image-like figures: shown on request (the page already shows the concept maps as
#: images; these two cost the browser as much as all the bar charts together).
MAP_FIGURES = ("maps", "attribution")
#: Order in which the engine's figures are shown.
FIGURE_ORDER = ("shares", "logit", "maps", "attribution", "activation", "units", "tcav")
#: Most input patches TCAV scores (the model's most suspicious patches of the store's images).
TCAV_INPUTS = 48
#: A pixel is painted with a concept's colour where that concept's probability is at least this.
MAP_LEVEL = 0.5


@dataclass
class ProbeInfo:
    version: int
    layer: str
    created_at: object
    concepts: list[str]
    metrics: list[dict]           # concept, auroc, drawings, images, note
    readers: list[str]
    n_drawings: int
    stale: bool                   # drawings were added or undone since it was trained


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
    export_name: str = "report"
    tcav_run: int | None = None
    encoded: dict = field(default_factory=dict)      # "overlay" / concept -> JPEG bytes of the images above
    map_figures: Callable[[], list] | None = None   # deferred: the engine's image-like figures (maps,
                                                    # attribution), built when the reader asks for them
    figure_names: list = field(default_factory=list)  # the engine's figures drawn in ``figures``, in order


def annotation_patch(ctx: AppContext):
    """The ``load_patch`` the engine's probe trainer needs: annotation -> (S, S) grey patch."""
    return lambda a: cx.patch_gray(ctx, PatchRef(a.image_id, a.patch_x0, a.patch_y0, a.patch_size))


def probe_info(ctx: AppContext) -> ProbeInfo | None:
    """The latest probe version of the card's concept layer (without its weights), or None."""
    rows = ctx.store.list_probes(model_card=ctx.card_name, layer=cx.layer_of(ctx))
    if not rows:
        return None
    p = rows[0]
    live = {a.annotation_id for a in ctx.store.list_annotations(model_card=ctx.card_name)}
    metrics = p["metrics"] if isinstance(p["metrics"], dict) else {}
    rows_out = []
    for c in p["concepts"]:
        m = metrics.get(c, {}) or {}
        rows_out.append({"concept": c, "auroc": m.get("auroc"), "drawings": m.get("n_drawings"),
                         "images": m.get("n_images"), "note": m.get("reason") or m.get("note") or ""})
    return ProbeInfo(version=int(p["version"]), layer=p["layer"], created_at=p["created_at"],
                     concepts=list(p["concepts"]), metrics=rows_out, readers=list(p["readers"] or []),
                     n_drawings=len(p["annotation_ids"] or []), stale=set(p["annotation_ids"] or []) != live)


def _probe_key(ctx: AppContext, info_or_version) -> tuple:
    """Names one stored probe version across stores (tests and sessions may hold several)."""
    version = getattr(info_or_version, "version", info_or_version)
    created = getattr(info_or_version, "created_at", None)
    return (str(ctx.settings.db_path), ctx.card_name, ctx.weights_sha, int(version), str(created))


def retrain(ctx: AppContext, reader: str = "", progress: Callable[[float, str], None] | None = None) -> ProbeInfo:
    """Train a new probe version on every live drawing made under this model card."""
    ctx.require_model()
    from dashboard.engine import probes

    def cb(done: int, total: int, message: str) -> None:
        if progress:
            progress(done / max(total, 1), message)

    probes.train_probes(ctx.store, ctx.model, ctx.card, cx.layer_of(ctx), load_patch=annotation_patch(ctx),
                        progress=cb, config=probes.ProbeConfig(device=ctx.device, cache_dir=ctx.settings.cache_dir,
                                                               actor=reader or "system"))
    return probe_info(ctx)


def image_evidence(ctx: AppContext, row: dict):
    """The probe-independent part of an image's report (best patch, its unit activations and
    logits, the concept layer's whole-image feature map, the attribution map), computed once per
    model, image and method: a new probe version reuses it (``report.compute_image_evidence``).

    The candidate patches are the lesion map's most suspicious ones (already scored exactly when
    the case was read), and the attribution is the Read page's cached whole-image map, so nothing
    the Read page computed is computed again."""
    from dashboard.engine import report
    from dashboard.ui.screens.reading import attribution_for, lesion_map_for, model_spacing

    layer = cx.layer_of(ctx)
    key = (ctx.card_name, ctx.weights_sha, layer, row["sha256"], model_spacing(ctx), REPORT_METHOD)

    def compute():
        img, mask, _ = model_image(ctx, row)
        pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"])
        tops = pred["top_patches"] if pred and pred["top_patches"] else lesion_map_for(ctx, row["image_id"]).top_patches
        tiles = [(int(t[0]), int(t[1])) for t in tops]
        att = attribution_for(ctx, row["image_id"], REPORT_METHOD).map
        return report.compute_image_evidence(
            ctx.model, ctx.card, img, layers=[layer],
            config=report.ReportConfig(attribution_method=REPORT_METHOD, device=ctx.device),
            inputs=report.ReportInputs(mask=mask, tiles=tiles, tile_source="the lesion map's most suspicious patches",
                                       attribution_map=att))

    return _EVIDENCE.get(key, compute)


def prefetch_evidence(ctx: AppContext, image_id: str) -> bool:
    """Start computing an image's report evidence in a background thread (once), so the Report
    after a Save only does the probe's part. Returns True when a thread was started.

    The thread only calls ``image_evidence`` (no streamlit); a Report that asks for the same
    image meanwhile waits for it instead of computing it twice (``Memo``)."""
    from dashboard.ui.screens.reading import model_spacing

    if not ctx.model_ready:
        return False
    row = ctx.store.get_image(image_id)
    key = (ctx.card_name, ctx.weights_sha, cx.layer_of(ctx), row["sha256"], model_spacing(ctx), REPORT_METHOD)
    return _PREFETCHING.start(key, lambda: image_evidence(ctx, row), done=lambda: key in _EVIDENCE,
                              name=f"evidence-{image_id}") is not None


def load_probe_version(ctx: AppContext, version):
    """A stored probe version (cached: versions never change once written)."""
    from dashboard.engine import probes

    return _PROBES.get(_probe_key(ctx, version),
                       lambda: probes.load_probe(ctx.store, int(getattr(version, "version", version))))


def image_concept_maps(ctx: AppContext, probe_version, image_id: str) -> tuple[list[str], np.ndarray]:
    """(concepts, (K, H, W) probabilities) of the probe over a whole model-space image, zero
    outside the breast (cached).

    The feature map comes from the image's cached evidence, so a new probe version costs one
    matmul over the feature grid and an upsampling, not a pass through the network."""
    row = ctx.store.get_image(image_id)
    p = load_probe_version(ctx, probe_version)
    _, mask, _ = model_image(ctx, row)
    return list(p.concepts), _probabilities(ctx, probe_version, row)[1:] * mask[None]


def _probabilities(ctx: AppContext, probe_version, row: dict) -> np.ndarray:
    """(K+1, H, W) probe probabilities over the whole model-space image, background first, not
    masked: the concept maps and the engine's report share this one computation (cached)."""
    from dashboard.engine import probes

    p = load_probe_version(ctx, probe_version)

    def compute():
        img, _, _ = model_image(ctx, row)
        ev = image_evidence(ctx, row)
        feats = ev.feats.get(p.layer)
        if feats is None:  # a probe of another layer than the card's concept layer
            return probes.compute_image_concept_maps(p, ctx.model, ctx.card, img, device=ctx.device,
                                                     include_background=True)
        return probes.compute_concept_maps(p, feats, img.shape, include_background=True)

    return _MAPS.get(_probe_key(ctx, probe_version) + (row["sha256"],), compute)


def _hex_rgb(colour: str) -> np.ndarray:
    c = colour.lstrip("#")[:6]
    return np.array([int(c[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)


def composite(gray: np.ndarray, maps: np.ndarray, colours: list[str], level: float = MAP_LEVEL) -> np.ndarray:
    """Paint each pixel with its most probable concept's colour where that probability >= level."""
    rgb = np.repeat(gray[..., None].astype(np.float32), 3, axis=2)
    if len(maps):
        best = maps.argmax(0)
        p = maps.max(0)
        cols = np.stack([_hex_rgb(c) for c in colours])  # (K, 3)
        a = np.where(p >= level, 0.35 + 0.4 * (p - level) / max(1 - level, 1e-6), 0.0)[..., None]
        rgb = (1 - a) * rgb + a * cols[best]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def report_images(ctx: AppContext, case_id: str | None) -> list[dict]:
    if case_id:
        imgs = ctx.store.list_images(case_id=case_id)
        if imgs:
            return imgs
    return ctx.store.list_images()


def load_report(ctx: AppContext, case_id: str | None, image_id: str | None) -> ReportView:
    """The report of one image (default: the case's first image) under the latest probe.

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
    label = f"{row['laterality']} {row['view']} · {row['case_id']}"
    notes: list[str] = []
    if not ctx.model_ready:
        return ReportView(ids, image_id, label, None, None, [], [], image_names=names,
                          notes=[f"The report needs the model: {ctx.model_error}"])
    info = probe_info(ctx)
    pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, image_id)
    score = None if pred is None else float(pred["score"])
    if info is None:
        notes.append("No concept probe is trained yet: label some concepts, then press Retrain probes.")
        return ReportView(ids, image_id, label, None, None, [], [], score=score, notes=notes, image_names=names)
    if info.stale:
        notes.append("Drawings were added or undone since this probe was trained: retrain to include them.")
    parts = _probe_parts(ctx, info, row)
    over, legend, per, encoded = parts.panels
    view = ReportView(ids, image_id, label, info, over, legend, per, score=score, notes=notes, image_names=names,
                      encoded=encoded)
    rep, key, tcav_run = parts.report, parts.key, parts.tcav_run
    shown, figs, rows = parts.shown
    view.figures = [parts.panel] if parts.panel is not None else []
    view.figure_names = [name for name, _ in figs]
    view.map_figures = lambda: _MAP_FIGURES.get(key + (parts.mirrored,), lambda: map_figures(shown))
    view.concepts = rows
    view.probability, view.target = float(rep.probability), rep.target_name
    view.notes += list(rep.notes)
    view.tcav_run = tcav_run
    if tcav_run is None:
        view.notes.append(f"TCAV is not computed for probe v{info.version} yet: press Run TCAV for its scores.")
    stem = f"conceptlens-{row['case_id']}-{row['laterality']}{row['view']}-probe{info.version}"
    view.export_name = stem
    view.export_json = lambda: report_json(rep)
    view.export_html = lambda: _EXPORTS.get(key, lambda: report_html(ctx, shown, stem))
    return view


@dataclass
class _ProbeParts:
    """What the Report of one image computes for one probe version (each part cached)."""

    panels: tuple        # overlay, legend, per-concept maps, JPEG bytes (``concept_panels``)
    report: object       # the engine's ConceptReport (``engine_report``)
    key: tuple           # its cache key
    tcav_run: int | None
    shown: tuple         # display-orientation report, named figures, concept rows (``_shown``)
    panel: object        # the bar charts in one figure (``bar_panel``), or None
    mirrored: bool       # shown in display orientation of a right breast


def _probe_parts(ctx: AppContext, info: ProbeInfo, row: dict) -> _ProbeParts:
    """The probe-dependent parts of an image's report, through the same caches for the page and
    for ``prefetch_report`` (so a prefetched report is exactly the one the page asks for)."""
    from dashboard import imaging

    colours = {c["name"]: c["colour"] for c in ctx.store.list_concepts()}
    mirrored = imaging.display_flip(row["laterality"])
    panels = concept_panels(ctx, info, row, colours, mirrored)
    rep, key, tcav_run = engine_report(ctx, info, row)
    shown = _FIGURES.get(key + (mirrored,), lambda: _shown(rep, mirrored))
    panel = _PANELS_FIG.get(key + (mirrored,), lambda: bar_panel(shown[1]))
    return _ProbeParts(panels, rep, key, tcav_run, shown, panel, mirrored)


def prefetch_report(ctx: AppContext, image_id: str) -> threading.Thread | None:
    """Start computing the Report of ``image_id`` under the latest probe version in a background
    thread, once per probe version and image: after a Save retrained the probes, the reader's
    way to the Report page then finds the concept maps, the engine's report and its figures
    ready, and the page only sends them. Returns the thread, or None when there is nothing to
    prepare (no model or probe, or already started for this version).

    The thread calls only cached ``dashboard`` functions (no streamlit); a Report that asks for
    the same parts meanwhile waits for them instead of computing them twice (``Memo``)."""
    if not ctx.model_ready:
        return None
    info = probe_info(ctx)
    row = ctx.store.get_image(image_id)
    if info is None or row is None:
        return None
    return _REPORT_HEAD_START.start(_probe_key(ctx, info) + (row["sha256"],), lambda: _probe_parts(ctx, info, row),
                                    name=f"report-{image_id}-v{info.version}")


def concept_panels(ctx: AppContext, info: ProbeInfo, row: dict, colours: dict[str, str], mirrored: bool):
    """The composite concept map, its legend and one heat map per concept, display orientation
    (cached by probe version, image and concept colours)."""
    from dashboard.ui.screens.reading import blend

    key = _probe_key(ctx, info) + (row["sha256"], tuple(sorted(colours.items())), mirrored)

    def compute():
        concepts, maps = image_concept_maps(ctx, info, row["image_id"])  # (K, H, W)
        gray, _ = display_gray(ctx, row, WindowChoice())
        cols = [colours.get(c, "#00bcd4") for c in concepts]
        _, mask, _ = model_image(ctx, row)
        over = composite(gray, maps, cols)
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

    return _PANELS.get(key, compute)


def jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """Display copy of an RGB image, encoded once and cached with it (JPEG: a tenth of PNG's encode
    time on these overlays; the numbers behind them stay in the report and its exports)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _shown(rep, mirrored: bool):
    """The report in display orientation, its bar charts (named, in ``FIGURE_ORDER``) and its
    concept rows; the image-like figures are built on request (``map_figures``)."""
    shown = for_display(rep, mirrored)
    figs = _figures(shown, exclude=MAP_FIGURES)
    ordered = [(k, figs[k]) for k in FIGURE_ORDER if k in figs] + [(k, f) for k, f in figs.items()
                                                                   if k not in FIGURE_ORDER]
    return shown, ordered, concept_rows(rep)


# ---------------------------------------------------------------- the engine's report
def engine_report(ctx: AppContext, info: ProbeInfo, row: dict):
    """The engine's whole-image concept report (cached by model, probe, image, labels and TCAV run).

    The probe-independent evidence comes from ``image_evidence`` (cached per image), so a new probe
    version costs the probe's maps and the assembly only."""
    import hashlib

    from dashboard.engine import report
    from dashboard.engine.tcav import TCAVResult

    labels = ctx.store.list_unit_labels(ctx.card_name, getattr(ctx.card, "head_layer", None) or cx.layer_of(ctx))
    lab_key = hashlib.sha256(repr(sorted((r["unit"], r["concept"], r["annotation_id"]) for r in labels))
                             .encode()).hexdigest()[:16]
    run = ctx.store.latest_tcav_run(info.version)
    key = _probe_key(ctx, info) + (row["sha256"], lab_key, run["run_id"] if run else None)

    def compute():
        img, mask, _ = model_image(ctx, row)
        probe = load_probe_version(ctx, info)
        tcav = TCAVResult.from_dict(run["results"]) if run else None
        return report.build_image_report(
            ctx.model, ctx.card, img, probe, config=report.ReportConfig(device=ctx.device),
            inputs=report.ReportInputs(mask=mask, store=ctx.store, unit_labels=labels, tcav=tcav,
                                       image_id=row["image_id"], evidence=image_evidence(ctx, row),
                                       probs_all=_probabilities(ctx, info, row)))

    return _REPORTS.get(key, compute), key, (run["run_id"] if run else None)


def for_display(rep, mirrored: bool):
    """The report's images mirrored for a right breast (display orientation); numbers unchanged."""
    from dataclasses import replace

    if not mirrored:
        return rep
    flip = (lambda a: None if a is None else np.ascontiguousarray(np.asarray(a)[:, ::-1]))
    return replace(rep, image=flip(rep.image), attribution_map=flip(rep.attribution_map),
                   concepts=[replace(c, probe_map=flip(c.probe_map)) for c in rep.concepts],
                   notes=list(rep.notes) + ["images shown in display orientation (right breast mirrored)"])


def _figures(rep, exclude=()) -> dict:
    from dashboard.engine import report

    names = set(FIGURE_ORDER) - set(exclude) if exclude else None  # FIGURE_ORDER names all the engine's
    figs = report.report_figures(rep, only=names)
    for f in figs.values():
        f.update_layout(height=360, margin=dict(l=10, r=10, t=50, b=10))
    return figs


#: Height of one row of charts in the combined bar-chart figure, px.
PANEL_ROW_PX = 340


def bar_panel(figs: list[tuple[str, object]], cols: int = 2):
    """The engine's bar charts as subplots of ONE plotly figure, two per row (the browser builds
    one plot instead of one per chart: each plotly chart costs a full ``newPlot``). Each chart keeps
    its traces and hover, its title (as the subplot title), its y-axis title, format and range, and
    its reference lines and notes. None when there is no chart."""
    from plotly.subplots import make_subplots

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

        def ref(v, axis, own):  # the chart's own axes or paper -> this cell's axes or domain
            if v is None or v == "paper":
                return f"{own} domain"
            return v.replace(axis, own, 1)

        for sh in f.layout.shapes:
            out.add_shape(sh.to_plotly_json() | {"xref": ref(sh.xref, "x", xref), "yref": ref(sh.yref, "y", yref)})
        for an in f.layout.annotations:
            out.add_annotation(an.to_plotly_json() | {"xref": ref(an.xref, "x", xref), "yref": ref(an.yref, "y", yref)})
    # room for the inner column's tick labels and axis titles (automargin only moves the outer edges)
    out.update_layout(height=PANEL_ROW_PX * rows, margin=dict(l=70, r=10, t=50, b=10), showlegend=False,
                      bargap=0.3)
    return out


def map_figures(shown) -> list:
    """The engine's image-like figures (concept contours, attribution) of a report in display
    orientation, in ``FIGURE_ORDER``: the page draws them when the reader asks."""
    from dashboard.engine import report

    figs = report.report_figures(shown, only=MAP_FIGURES)
    for f in figs.values():
        f.update_layout(height=360, margin=dict(l=10, r=10, t=50, b=10))
    return [figs[k] for k in MAP_FIGURES if k in figs]


def concept_rows(rep) -> list[dict]:
    def r(v, n=3):
        return None if v is None else round(float(v), n)

    return [{"concept": c.concept, "attribution share": r(c.attribution_share), "area mm²": r(c.area_mm2, 1),
             "peak p": r(c.peak_probability, 2), "units": len(c.units), "logit part": r(c.logit_part, 4),
             "TCAV": r(c.tcav_score, 2), "TCAV p": r(c.tcav_p_value, 4), "significant": c.tcav_significant,
             "probe AUROC": r(c.probe_auroc), "drawings/images": f"{c.n_drawings}/{c.n_images}",
             "confidence": c.confidence_note or ""} for c in rep.concepts]


def report_json(rep) -> bytes:
    """The engine's lossless JSON (model space, arrays base64)."""
    from dashboard.engine import report

    return report.report_to_json(rep).encode("utf-8")


def report_html(ctx: AppContext, rep, stem: str) -> bytes:
    """One offline HTML file (the engine's export), also kept under settings.export_dir."""
    from dashboard.engine import report

    path = report.export_html(rep, ctx.settings.export_dir / f"{stem}.html")
    return path.read_bytes()


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
        from dashboard.data.store import ValidationError

        raise ValidationError("TCAV needs scored images: score the cases on the Worklist first.")
    return np.stack([cx.patch_gray(ctx, ref) for _, ref in rows[:limit]])


def run_tcav(ctx: AppContext, progress: Callable[[float, str], None] | None = None):
    """TCAV of the latest probe's concepts for the lesion class over the most suspicious patches."""
    ctx.require_model()
    from dashboard.engine import probes, tcav

    info = probe_info(ctx)
    if info is None:
        from dashboard.data.store import ValidationError

        raise ValidationError("Train the concept probes first: TCAV uses the drawings behind them.")
    if progress:
        progress(0.1, "Collecting the most suspicious patches")
    inputs = tcav_inputs(ctx)
    if progress:
        progress(0.3, f"Scoring {len(inputs)} patches against {len(info.concepts)} concept(s)")
    probe = probes.load_probe(ctx.store, info.version)
    res = tcav.run_tcav(ctx.store, ctx.model, ctx.card, probe, inputs, load_patch=annotation_patch(ctx),
                        config=tcav.TCAVConfig(cache_dir=ctx.settings.cache_dir, device=ctx.device))
    if progress:
        progress(1.0, "TCAV done")
    return res


@dataclass
class LearningCurveView:
    """Validation AUROC (by image) of each concept against the number of its drawings so far."""

    rows: list[dict]
    figure: object | None
    note: str = ""


def learning_curve(ctx: AppContext, progress: Callable[[float, str], None] | None = None) -> LearningCurveView:
    """Refit the probes on the first n drawings of every concept (time order) and validate each by
    held-out images (``dashboard.evaluation.compute_learning_curve``), so a reader sees when a
    concept is learnt. Uses the readers' real drawings (the simulated reader is left out)."""
    import plotly.graph_objects as go

    from dashboard import evaluation

    def cb(i, n, msg=""):
        if progress:
            progress(i / max(n, 1), msg)

    df = evaluation.compute_learning_curve(ctx.store, ctx.card, ctx.model, load_patch=annotation_patch(ctx),
                                           layer=cx.layer_of(ctx), progress=cb)
    rows = df.to_dict("records") if len(df) else []
    if not rows:
        return LearningCurveView([], None, "No drawings yet: the curve appears once concepts are drawn.")
    fig = go.Figure()
    for concept in sorted({r["concept"] for r in rows}):
        pts = [r for r in rows if r["concept"] == concept and r["auroc"] is not None and r["auroc"] == r["auroc"]]
        if pts:
            fig.add_trace(go.Scatter(x=[r["n_drawings"] for r in pts], y=[r["auroc"] for r in pts],
                                     mode="lines+markers", name=concept))
    fig.add_hline(y=0.9, line_dash="dot", annotation_text="0.90")
    fig.update_layout(xaxis_title="drawings of the concept", yaxis_title="validation AUROC (by image)",
                      yaxis_range=[0, 1.02], height=360, margin=dict(l=40, r=10, t=30, b=40))
    validated = sum(1 for r in rows if r["auroc"] is not None and r["auroc"] == r["auroc"])
    note = "" if validated else "Not enough drawings on distinct images yet to validate any concept by image."
    return LearningCurveView(rows, fig if validated else None, note)

"""Reading (a pilot-study reader's page): the next assigned case opens on its own, hung as on the
Read page, with only what the case's arm shows; the reader answers, optionally clicks the most
suspicious location and outlines findings, and submits. The server times everything
(``dashboard.study.reading``): first render, first drawing, submit.

Blinding is decided in one place, ``reading.visible_fields``; this module never reads a case's
truth, pathology or description, and shows the reader's own study drawings only. The concept
report is the arm's PINNED probe version (loaded by number, never "the latest"), with no unit
labels and no TCAV run, so nothing another reader saves changes what this reader sees.
Model outputs (score, attribution, concept report) are withheld when the card's weights are not
the ones the study pinned.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from dashboard import imaging
from dashboard.engine import report
from dashboard.engine.dissection import mask_to_png
from dashboard.errors import ConceptLensError
from dashboard.study import reading
from dashboard.study.errors import ReadingError as StudyReadingError
from dashboard.study.reading import NextStep, ReadAnswers, ReadForm, Visibility
from dashboard.ui.context import AppContext
from dashboard.ui.screens import label as lb
from dashboard.ui.screens.read import hang, patch_at
from dashboard.ui.types import PatchRef, ReportError, WindowChoice
from dashboard.ui.work.evidence import image_evidence
from dashboard.ui.work.images import VIEWER_METHODS as VIEWER_METHODS  # the page's method choices
from dashboard.ui.work.images import attribution_for, display_gray, lesion_map_for, load_mammogram, model_image
from dashboard.ui.work.overlays import blend
from dashboard.ui.work.probe_versions import ProbeInfo, load_probe_version, probe_key
from dashboard.ui.work.report_parts import concept_panels, concept_rows, probabilities

#: BI-RADS assessment categories (ACR BI-RADS 5th ed.), with their likelihood of cancer.
BIRADS = {
    0: "0 · incomplete: needs additional imaging",
    1: "1 · negative",
    2: "2 · a typical non-cancerous finding (0 % likelihood of cancer)",
    3: "3 · ≤ 2 % likelihood of cancer: short-interval follow-up",
    4: "4 · suspicious (> 2 % to < 95 %)",
    5: "5 · highly suggestive of cancer (≥ 95 %)",
    6: "6 · known biopsy-proven cancer",
}
LIKERT = {1: "1 · strongly disagree", 2: "2", 3: "3", 4: "4", 5: "5 · strongly agree"}
CONFIDENCE = {1: "1 · not at all", 2: "2", 3: "3", 4: "4", 5: "5 · fully"}
#: Overlays a study reader may get: the arm's attribution, or none (the lesion map is not an arm's).
STUDY_OVERLAYS = ("none", "attribution")
#: Columns of the engine's concept rows a study reader sees (unit labels and TCAV change as others
#: label and run, so they are left out of the pinned report).
REPORT_COLUMNS = ("concept", "attribution share", "area mm²", "peak p", "logit part", "probe AUROC",
                  "drawings/images", "confidence")
CLICK_RGB = (0, 230, 118)


# ---------------------------------------------------------------- the reader's step
@dataclass
class ReadingStep:
    """The reader's next step and, for a case to read, its open read and what the arm shows."""

    step: NextStep
    read_id: str | None = None
    vis: Visibility | None = None
    form: ReadForm | None = None
    arm_label: str = ""


def open_step(store, step: NextStep, reader: str) -> ReadingStep:
    """For a "read" step: open the case (the server records its first render; the same read is
    returned when the reader comes back), and what its arm shows and asks."""
    if step.state != "read" or step.assignment is None:
        return ReadingStep(step)
    a = step.assignment
    read_id = reading.open_read(store, a.assignment_id, reader)
    return ReadingStep(step, read_id, reading.visible_fields(store, a.assignment_id),
                       reading.read_form(store, a.assignment_id))


def record_view_event(store, read_id: str, reader: str, kind: str, payload: dict) -> bool:
    """Record a viewer event (window/level, overlay toggle, image switch) of an open read; False
    when the read no longer takes events (submitted meanwhile)."""
    try:
        reading.record_event(store, read_id, reader, kind, payload)
    except ConceptLensError:  # ReadLockedError (submitted), ReadingError: the event is simply not kept
        return False
    return True


# ---------------------------------------------------------------- the images
@dataclass
class StudyTile:
    """One hung image as a study reader sees it (display orientation)."""

    image_id: str
    label: str
    rgb: np.ndarray | None          # (h, w, 3) uint8
    mirrored: bool
    model_shape: tuple[int, int]    # (h, w) model pixels
    window: tuple[float, float, str]
    presets: list[str]
    score: float | None = None
    error: str | None = None


@dataclass
class StudyCase:
    rows: list[list[StudyTile | None]]
    extra: list[StudyTile]
    presets: list[str]
    score: float | None               # the case's AI score (highest image score), when the arm shows it
    model_ok: bool                    # the model is loaded with the weights the study pinned
    notes: list[str] = field(default_factory=list)

    @property
    def tiles(self) -> list[StudyTile]:
        return [t for row in self.rows for t in row if t is not None] + list(self.extra)


def model_matches(ctx: AppContext, vis: Visibility) -> bool:
    """The model in use is the card and weights the study pinned."""
    return ctx.model_ready and ctx.card_name == vis.model_card and (
        not vis.weights_sha256 or ctx.weights_sha == vis.weights_sha256)


def _image_score(ctx: AppContext, image_id: str) -> float:
    pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, image_id)
    return float(pred["score"]) if pred is not None else float(lesion_map_for(ctx, image_id).score)


def _click_marker(rgb: np.ndarray, xy: tuple[float, float]) -> np.ndarray:
    """A cross-hair ring at display pixel ``xy``."""
    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    r = max(6, min(im.size) // 30)
    lw = max(2, min(im.size) // 200)
    x, y = xy
    d.ellipse([x - r, y - r, x + r, y + r], outline=CLICK_RGB, width=lw)
    d.line([x - 2 * r, y, x - r, y], fill=CLICK_RGB, width=lw)
    d.line([x + r, y, x + 2 * r, y], fill=CLICK_RGB, width=lw)
    d.line([x, y - 2 * r, x, y - r], fill=CLICK_RGB, width=lw)
    d.line([x, y + r, x, y + 2 * r], fill=CLICK_RGB, width=lw)
    return np.asarray(im)


@dataclass(frozen=True)
class _TileOptions:
    """How ``load_case`` paints each of a case's tiles (its arguments, shared by the tiles)."""

    window: WindowChoice
    vis: Visibility
    model_ok: bool
    overlay: str
    method: str
    opacity: float
    click: tuple[str, float, float] | None


def _tile(ctx: AppContext, row: dict, opt: _TileOptions) -> StudyTile:
    vis, click = opt.vis, opt.click
    lat, view = row["laterality"] or "?", row["view"] or "?"
    mirrored = imaging.display_flip(lat)
    gray, win = display_gray(ctx, row, opt.window)                  # (h, w) uint8, model orientation
    m = load_mammogram(ctx, row)
    presets = [f"{i + 1}: {w.name or 'window'} (C {w.center:g} / W {w.width:g})" for i, w in enumerate(m.windows)]
    h, w = gray.shape
    score = _image_score(ctx, row["image_id"]) if opt.model_ok and vis.score else None
    heat = None
    if opt.model_ok and vis.attribution and opt.overlay == "attribution":
        heat = np.clip(attribution_for(ctx, row["image_id"], opt.method).map, 0, None)
    rgb = np.repeat(gray[..., None], 3, axis=2) if heat is None else blend(gray, heat, opt.opacity)
    if mirrored:
        rgb = rgb[:, ::-1]
    rgb = np.ascontiguousarray(rgb)
    if click is not None and click[0] == row["image_id"]:
        rgb = _click_marker(rgb, ((w - click[1]) if mirrored else click[1], click[2]))
    return StudyTile(row["image_id"], f"{lat} {view}", rgb, mirrored, (h, w),
                     (float(win.center), float(win.width), win.name or ""), presets, score)


def load_case(ctx: AppContext, case_id: str, vis: Visibility, window: WindowChoice = WindowChoice(),
              overlay: str = "none", method: str = "gradcam", opacity: float = 0.5,
              click: tuple[str, float, float] | None = None) -> StudyCase:
    """The case's images hung as on the Read page (``read.hang``), each windowed, with the arm's
    attribution overlay when asked and shown, the reader's location click marked, and the AI score
    when the arm shows it. The case row itself (truth, description) is never read."""
    if overlay not in STUDY_OVERLAYS:
        raise StudyReadingError(f"Unknown overlay {overlay!r}; choose one of {', '.join(STUDY_OVERLAYS)}.")
    images = ctx.store.list_images(case_id=case_id)
    model_ok = model_matches(ctx, vis)
    notes = []
    if (vis.score or vis.attribution or vis.concept_report) and not model_ok:
        notes.append("The AI outputs of this case are not available: the model in use is not the one this study "
                     "pinned. Please tell the study coordinator; you can still read and answer.")
    rows_raw, extra_raw = hang(images)
    opt = _TileOptions(window, vis, model_ok, overlay, method, opacity, click)

    def one(row):
        if row is None:
            return None
        try:
            return _tile(ctx, row, opt)
        except Exception as exc:  # noqa: BLE001 - one unreadable image must not hide the others
            lat, view = row["laterality"] or "?", row["view"] or "?"
            return StudyTile(row["image_id"], f"{lat} {view}", None, imaging.display_flip(lat), (0, 0),
                             (0.0, 0.0, ""), [], error=str(exc))

    out = StudyCase([[one(r) for r in row] for row in rows_raw], [one(r) for r in extra_raw], [], None, model_ok,
                    notes)
    for t in out.tiles:
        out.presets += t.presets[len(out.presets):]
    scores = [t.score for t in out.tiles if t.score is not None]
    out.score = max(scores) if scores else None
    if not images:
        out.notes.append("This case has no images.")
    return out


def clicked_location(tile: StudyTile, value: dict | None) -> tuple[str, float, float] | None:
    """A click on a shown tile (streamlit-image-coordinates: x, y and the shown width, height) as
    (image_id, x, y) in model-space pixels."""
    if not value or tile.rgb is None or not value.get("width") or not value.get("height"):
        return None
    h, w = tile.model_shape
    x = float(value["x"]) * w / float(value["width"])      # display px of the model grid
    y = float(value["y"]) * h / float(value["height"])
    mx = (w - x) if tile.mirrored else x
    return tile.image_id, round(min(max(mx, 0.0), w), 1), round(min(max(y, 0.0), h), 1)


def latest_click(tiles: list[StudyTile], values: list[dict | None], after: float = 0.0
                 ) -> tuple[float, tuple[str, float, float]] | None:
    """(click time, location) of the most recent click on any tile later than ``after``."""
    best = None
    for t, v in zip(tiles, values):
        loc = clicked_location(t, v)
        if loc is not None and float(v.get("unix_time") or 0) > after:
            if best is None or float(v["unix_time"]) > best[0]:
                best = (float(v["unix_time"]), loc)
    return best


# ---------------------------------------------------------------- the pinned concept report
@dataclass
class PinnedReport:
    version: int
    image_id: str
    overlay: np.ndarray | None       # (H, W, 3) concept composite, display orientation
    legend: list[dict]
    concept_maps: list[tuple[str, np.ndarray]]
    rows: list[dict]                 # the engine's concept rows (REPORT_COLUMNS)
    probability: float | None        # P(target) of the report, only when the arm shows the score
    target: str = ""


def pinned_probe_info(ctx: AppContext, version: int) -> ProbeInfo:
    """The stored probe ``version`` (not the latest), described as the Report page describes one."""
    rows = [r for r in ctx.store.list_probes(model_card=ctx.card_name) if int(r["version"]) == int(version)]
    if not rows:
        raise ReportError(f"The concept probe this study pinned (v{version}) is not in the store for model "
                          f"{ctx.card_name!r}. Please tell the study coordinator.")
    p = rows[0]
    metrics = p["metrics"] if isinstance(p["metrics"], dict) else {}
    return ProbeInfo(version=int(p["version"]), layer=p["layer"], created_at=p["created_at"],
                     concepts=list(p["concepts"]),
                     metrics=[{"concept": c, "auroc": (metrics.get(c) or {}).get("auroc")} for c in p["concepts"]],
                     readers=[], n_drawings=len(p["annotation_ids"] or []), stale=False)


def _pinned_engine_report(ctx: AppContext, info: ProbeInfo, row: dict):
    """The engine's report of an image under a pinned probe version, without unit labels or TCAV
    (cached by probe version and image only)."""
    def compute():
        img, mask, _ = model_image(ctx, row)
        return report.build_image_report(
            ctx.model, ctx.card, img, load_probe_version(ctx, info),
            config=report.ReportConfig(device=ctx.device,
                                       colours={c["name"]: c["colour"] for c in ctx.store.list_concepts()}),
            inputs=report.ReportInputs(mask=mask, store=None, unit_labels=[], tcav=None, image_id=row["image_id"],
                                       evidence=image_evidence(ctx, row), probs_all=probabilities(ctx, info, row)))

    return ctx.caches.reports.get(probe_key(ctx, info) + (row["sha256"], "study-pinned"), compute)


def pinned_report(ctx: AppContext, vis: Visibility, image_id: str) -> PinnedReport:
    """The concept report of ``image_id`` under the arm's pinned probe version."""
    if not vis.concept_report or vis.probe_version is None:
        raise ReportError("This arm shows no concept report.")
    if not model_matches(ctx, vis):
        raise ReportError("The concept report is not available: the model in use is not the one this study pinned.")
    info = pinned_probe_info(ctx, vis.probe_version)
    row = ctx.store.get_image(image_id)
    colours = {c["name"]: c["colour"] for c in ctx.store.list_concepts()}
    mirrored = imaging.display_flip(row["laterality"])
    overlay, legend, maps, _ = concept_panels(ctx, info, row, colours, mirrored)
    rep = _pinned_engine_report(ctx, info, row)
    rows = [{k: r[k] for k in REPORT_COLUMNS if k in r} for r in concept_rows(rep)]
    return PinnedReport(info.version, image_id, overlay, legend, maps, rows,
                        float(rep.probability) if vis.score else None, rep.target_name if vis.score else "")


# ---------------------------------------------------------------- drawing (optional)
@dataclass
class StudyPatch:
    """The patch around the reader's location click, ready for the drawing canvas."""

    view: lb.PatchView
    concepts: list[str]            # concept names only: groups and descriptions stay out of a study
    colours: dict[str, str]


def drawing_patch(ctx: AppContext, click: tuple[str, float, float], window: WindowChoice = WindowChoice()) -> StudyPatch:
    """The card-sized patch centred on the click (model pixels), as the Label page shows one."""
    ref = patch_at(ctx, click[0], click[1], click[2], display=False)
    view = lb.load_patch(ctx, ref, window)
    names = [c["name"] for group in view.palette.values() for c in group]
    colours = {c["name"]: c["colour"] for group in view.palette.values() for c in group}
    view.annotations = []  # the Label page's list holds every reader's drawings: a study shows only one's own
    return StudyPatch(view, names, colours)


def save_study_drawing(ctx: AppContext, read_id: str, reader: str, patch: StudyPatch, concept: str,
                       json_data: dict | None, fit: dict | None) -> str:
    """Store the drawing on the canvas as the reader's study drawing (study, arm and reader
    recorded; the first one times the read's first drawing). No unit is labeled and no probe is
    retrained: the study's arms are pinned. Returns the annotation id."""
    drawings = lb.drawings_from_canvas(patch.view, json_data, fit)
    mask, shape, geometry = lb.drawings_mask(drawings, patch.view.ref.size)
    r = patch.view.ref
    return reading.save_drawing(ctx.store, read_id, reader, image_id=r.image_id, concept=concept, patch_x0=r.x0,
                                patch_y0=r.y0, patch_size=r.size, shape=shape, geometry=geometry,
                                mask_png=mask_to_png(mask), model_card=ctx.card_name)


def own_drawings(store, study: str, reader: str, image_ids: list[str]) -> list[dict]:
    """The reader's own live study drawings on this case's images (never another reader's)."""
    return [{"concept": d["concept"], "image": d["image_id"], "patch": f"({d['patch_x0']}, {d['patch_y0']}) "
             f"size {d['patch_size']}", "shape": d["shape"], "saved": d["created_at"]}
            for d in store.list_study_annotations(study) if d["reader"] == reader and d["image_id"] in image_ids]


# ---------------------------------------------------------------- answers
def answers(form: ReadForm, given: ReadAnswers, click: tuple[str, float, float] | None = None) -> ReadAnswers:
    """The page's widget values (``given``, as typed: the library checks them and reports a missing
    answer by name) with the location ``click``; questions the arm does not ask are left out."""
    return replace(given, helpfulness=given.helpfulness if form.helpfulness else None,
                   click=tuple(click) if (click is not None and form.location) else None,
                   comment=(given.comment or "") if form.free_text else "")


def submit(store, read_id: str, reader: str, ans: ReadAnswers) -> dict:
    """Store the answers once (``AnswerError`` names every question at fault); returns the read."""
    return reading.submit_read(store, read_id, reader, ans)


def last_read(store, study: str, reader: str) -> dict | None:
    """The reader's most recently submitted read that counts now (not yet corrected), or None."""
    rows = [r for r in store.list_reads(study, reader)
            if r["submitted_at"] is not None and r["superseded_by"] is None]
    return max(rows, key=lambda r: r["submitted_at"]) if rows else None


def correction_form(store, read: dict) -> ReadForm:
    return reading.read_form(store, read["assignment_id"])


def correct(store, read: dict, reader: str, form: ReadForm, given: ReadAnswers, reason: str = "") -> str:
    """A correction of ``read`` with the widget values ``given``: a new read row that supersedes it
    (the original stays); the location click is kept as it was. Returns the new read id."""
    click = ((read["click_image_id"], read["click_x"], read["click_y"]) if read.get("click_image_id") else None)
    return reading.correct_read(store, read["read_id"], reader, answers(form, given, click), reason)


def case_label(step: NextStep) -> str:
    """"Case 3 of 12" (the case id is not shown: it may name where a case comes from)."""
    a = step.assignment
    return f"Case {a.position + 1} of {a.n_in_session}" if a is not None else ""


__all__ = ["BIRADS", "LIKERT", "CONFIDENCE", "STUDY_OVERLAYS", "VIEWER_METHODS", "ReadingStep", "StudyTile",
           "StudyCase", "PinnedReport", "StudyPatch", "PatchRef", "WindowChoice", "open_step", "record_view_event", "load_case",
           "clicked_location", "latest_click", "pinned_report", "pinned_probe_info", "drawing_patch",
           "save_study_drawing", "own_drawings", "ReadAnswers", "answers", "submit", "last_read", "correction_form", "correct",
           "case_label", "model_matches"]

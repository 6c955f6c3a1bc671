"""Worklist: the cases in the store with the model's cached image-level score and label status."""
from __future__ import annotations

from dataclasses import dataclass, field

from dashboard.data.domain import card_domain_text, domain_warning, row_domain
from dashboard.progress import Progress
from dashboard.progress import report as report_progress
from dashboard.ui.context import AppContext
from dashboard.ui.types import WindowChoice, operating_threshold
from dashboard.ui.work.images import display_gray, lesion_map_for

#: Stored ``cases.source`` values that are synthetic; every other source is a real image set.
SYNTHETIC_SOURCES = frozenset({"synthetic", "phantom", "demo"})
SORTS = {"score": "P(lesion)", "case": "Case", "drawings": "Drawings", "truth": "Truth"}
STATUSES = ("all", "unlabeled", "labeled")
SCORED = ("all", "scored", "unscored")


@dataclass(frozen=True)
class WorklistFilter:
    """What the reader asked to see. Empty tuples mean 'all'."""

    kinds: tuple[str, ...] = ()       # "synthetic" | "real"
    truths: tuple[str, ...] = ()      # normal | benign | malignant | unknown
    status: str = "all"               # all | unlabeled | labeled
    scored: str = "all"               # all | scored | unscored
    search: str = ""                  # substring of case id or description
    sort: str = "score"               # see SORTS
    descending: bool = True


@dataclass
class WorklistView:
    rows: list[dict]
    total: int
    n_unscored_cases: int
    truths: list[str]
    kinds: list[str]
    model_card: str
    weights_sha: str
    threshold: float
    model_error: str | None = None
    notes: list[str] = field(default_factory=list)


def source_kind(source: str) -> str:
    return "synthetic" if (source or "").lower() in SYNTHETIC_SOURCES else "real"


def load_worklist(ctx: AppContext, flt: WorklistFilter = WorklistFilter()) -> WorklistView:
    """Rows ready for a table: case, kind and source, truth, views, prediction and probability
    under the model in use (None until scored), drawings and concepts so far."""
    raw = ctx.store.list_worklist(ctx.card_name, ctx.weights_sha)
    threshold = operating_threshold(ctx.card)
    positive = getattr(ctx.card, "positive_class", None) or "lesion"
    negative = next((c for c in getattr(ctx.card, "classes", ()) if c != positive), "normal")
    domains = case_domain_marks(ctx)
    rows = []
    for r in raw:
        score = r["score"]
        status = "labeled" if r["n_annotations"] else "unlabeled"
        rows.append({
            "case_id": r["case_id"],
            "kind": source_kind(r["source"]),
            "source": r["source"],
            "split": r["split"],
            "truth": r["label"],
            "views": r["views"] or "",
            "n_images": r["n_images"],
            "prediction": "not scored" if score is None else (positive if score >= threshold else negative),
            "probability": None if score is None else float(score),
            "scored": f"{r['n_scored']}/{r['n_images']}",
            "n_annotations": r["n_annotations"],
            "concepts": r["concepts"],
            "status": status,
            "description": r["description"],
            **domains.get(r["case_id"], {"domain": "", "domain_warning": "", "domain_detail": ""}),
        })
    view_rows = [row for row in rows if _keep(row, flt)]
    view_rows = _sort(view_rows, flt)
    return WorklistView(
        rows=view_rows, total=len(rows),
        n_unscored_cases=sum(1 for r in raw if r["n_scored"] < r["n_images"]),
        truths=sorted({r["truth"] for r in rows}), kinds=sorted({r["kind"] for r in rows}),
        model_card=ctx.card_name, weights_sha=ctx.weights_sha, threshold=threshold,
        model_error=ctx.model_error,
    )


def case_domain_marks(ctx: AppContext) -> dict[str, dict]:
    """case id -> {"domain": the kinds of its images ("digitised film"), "domain_warning": a short mark
    "⚠ digitised film; model trained on synthetic phantoms" when the model in use was trained on another
    domain (its scores are not calibrated there), else "", "domain_detail": the full warning}."""
    sources = {c["case_id"]: c["source"] for c in ctx.store.list_cases()}
    kinds: dict[str, list[str]] = {}
    warnings: dict[str, str] = {}
    for img in ctx.store.list_images():
        d = row_domain(img, sources.get(img["case_id"], ""))
        seen = kinds.setdefault(img["case_id"], [])
        if d.modality not in seen:
            seen.append(d.modality)
        w = domain_warning(ctx.card, d) if ctx.card is not None else ""
        if w and img["case_id"] not in warnings:
            warnings[img["case_id"]] = w
    trained = card_domain_text(ctx.card) if ctx.card is not None else ""
    return {case: {"domain": ", ".join(k), "domain_warning": f"⚠ {', '.join(k)}; model trained on {trained}"
                   if case in warnings else "", "domain_detail": warnings.get(case, "")} for case, k in kinds.items()}


def _keep(row: dict, flt: WorklistFilter) -> bool:
    if flt.kinds and row["kind"] not in flt.kinds:
        return False
    if flt.truths and row["truth"] not in flt.truths:
        return False
    if flt.status != "all" and row["status"] != flt.status:
        return False
    if flt.scored == "scored" and row["probability"] is None:
        return False
    if flt.scored == "unscored" and row["probability"] is not None:
        return False
    needle = flt.search.strip().lower()
    if needle and needle not in row["case_id"].lower() and needle not in (row["description"] or "").lower():
        return False
    return True


def _sort(rows: list[dict], flt: WorklistFilter) -> list[dict]:
    if flt.sort == "score":
        # unscored cases last whichever the direction: a worklist is read from the top
        scored = sorted((r for r in rows if r["probability"] is not None), key=lambda r: r["probability"],
                        reverse=flt.descending)
        return scored + sorted((r for r in rows if r["probability"] is None), key=lambda r: r["case_id"])
    key = {"case": lambda r: r["case_id"], "drawings": lambda r: (r["n_annotations"], r["case_id"]),
           "truth": lambda r: (r["truth"], r["case_id"])}.get(flt.sort, lambda r: r["case_id"])
    return sorted(rows, key=key, reverse=flt.descending)


@dataclass
class ScoreReport:
    n_images: int
    n_scored: int
    failures: list[tuple[str, str]]  # (image_id, message)


def score_unscored(ctx: AppContext, progress: Progress | None = None,
                   case_ids: list[str] | None = None) -> ScoreReport:
    """Compute and cache the image-level score of every image not yet scored by this model.

    A bad image is reported in ``failures`` and the others still get scored.
    ``progress(done, total, message)`` counts images.
    """
    ctx.require_model()

    todo = []
    for img in ctx.store.list_images():
        if case_ids is not None and img["case_id"] not in case_ids:
            continue
        if ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, img["image_id"]) is None:
            todo.append(img)
    failures: list[tuple[str, str]] = []
    done = 0
    for i, img in enumerate(todo):
        report_progress(progress, i, len(todo),
                        f"Scoring {img['case_id']} {img['laterality']}{img['view']} ({i + 1}/{len(todo)})")
        try:
            lm = lesion_map_for(ctx, img["image_id"])
            ctx.store.save_prediction(ctx.card_name, ctx.weights_sha, img["image_id"], lm.score,
                                      [list(map(float, p)) for p in lm.top_patches])
            done += 1
        except Exception as exc:  # noqa: BLE001 - reported per image, never stops the batch
            failures.append((img["image_id"], str(exc)))
    report_progress(progress, len(todo), len(todo), f"Scored {done} image(s)")
    return ScoreReport(n_images=len(todo), n_scored=done, failures=failures)


def prefetch_case(ctx: AppContext, case_id: str | None) -> bool:
    """Start preparing a case's images in a background thread (once per case and model) while the
    reader is still on the Worklist: each image read, windowed as the Read page first shows it and
    scored, so opening the case finds them cached. True when a thread was started."""
    if not case_id or not ctx.model_ready:
        return False
    rows = ctx.store.list_images(case_id=case_id)

    def work():
        for row in rows:
            display_gray(ctx, row, WindowChoice())
            if ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"]) is None:
                lesion_map_for(ctx, row["image_id"])

    key = (ctx.card_name, ctx.weights_sha, case_id)
    return ctx.caches.case_head_start.start(key, work, name=f"case-{case_id}") is not None

"""Model and data: the model card in use and its metrics, other cards, the store's contents,
dataset statistics for the concept engine, uploads and folder ingest (from the import roots only),
pixel spacing for images without one, and the demo set."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import model_zoo
from dashboard.data import demo, import_log
from dashboard.data import ingest as ingest_mod
from dashboard.data import uploads as uploads_mod
from dashboard.data.demo import DEMO_READER as DEMO_READER  # the page names the seeded reader
from dashboard.progress import Progress
from dashboard.progress import report as report_progress
from dashboard.ui import warmup
from dashboard.ui.context import AppContext
from dashboard.ui.incidents import incidents
from dashboard.ui.work import concepts

#: What the Model and data page says when folder ingest is off.
NO_ROOTS = ("Folder ingest is off: no import roots are configured. Whoever runs the server can set "
            "CONCEPTLENS_IMPORT_ROOTS to the folders readers may ingest from (a list separated by ':'); "
            "until then, upload the files above.")


@dataclass
class ModelDataView:
    card_name: str
    card: dict | None                 # the card in use, flattened for display
    metrics: list[dict]               # [{"metric", "value"}]
    model_error: str | None
    cards: list[dict]                 # every readable card (name, arch, description, has weights)
    store: dict                       # counts: cases, images, annotations, by source
    device: str
    stats: dict | None = None         # the concept engine's dataset statistics for this card/layer
    notes: list[str] = field(default_factory=list)


def card_summary(card) -> dict:
    return {
        "name": card.name, "arch": card.arch, "description": card.description,
        "classes": ", ".join(card.classes) if len(card.classes) <= 8 else f"{len(card.classes)} classes",
        "positive_class": card.positive_class or "", "input_size": "x".join(map(str, card.input_size)),
        "pixel_spacing_mm": card.pixel_spacing_mm, "concept_layers": ", ".join(card.concept_layers),
        "default_layer": card.default_layer, "weights": card.weights_file or "(none)",
        "weights_sha256": card.weights_sha256 or "", "training": card.training or {},
    }


def list_card_summaries(ctx: AppContext) -> tuple[list[dict], list[str]]:
    """Every card the zoo can read (built-in, then the user folder), with unreadable ones noted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cards = model_zoo.list_cards(extra_dirs=[ctx.settings.user_cards_dir])
    out = []
    for c in cards:
        path = c.weights_path
        has = bool(path and path.is_file()) if path is not None else False
        out.append({"name": c.name, "arch": c.arch, "classes": len(c.classes),
                    "positive_class": c.positive_class or "", "weights": "yes" if has else "missing",
                    "auroc": (c.metrics or {}).get("auroc"), "description": c.description})
    return out, [str(w.message) for w in caught]


def store_summary(ctx: AppContext) -> dict:
    cases = ctx.store.list_cases()
    by_source: dict[str, dict] = {}
    for c in cases:
        s = by_source.setdefault(c["source"], {"source": c["source"], "cases": 0, "images": 0, "drawings": 0})
        s["cases"] += 1
        s["images"] += int(c["n_images"])
        s["drawings"] += int(c["n_annotations"])
    return {"cases": len(cases), "images": sum(s["images"] for s in by_source.values()),
            "drawings": sum(s["drawings"] for s in by_source.values()),
            "by_source": sorted(by_source.values(), key=lambda s: s["source"]),
            "db_name": ctx.store.db_path.name, "no_spacing": len(images_without_spacing(ctx))}


def load_model_data(ctx: AppContext) -> ModelDataView:
    cards, notes = list_card_summaries(ctx)
    card = card_summary(ctx.card) if ctx.card is not None else None
    metrics = [{"metric": k, "value": v} for k, v in sorted((ctx.card.metrics or {}).items())] \
        if ctx.card is not None else []
    return ModelDataView(card_name=ctx.card_name, card=card, metrics=metrics, model_error=ctx.model_error,
                         cards=cards, store=store_summary(ctx), device=ctx.device,
                         stats=dataset_stats_status(ctx), notes=notes)


# ---------------------------------------------------------------- adding images
def _file_progress(progress: Progress | None):
    def cb(done: int, total: int, name: str) -> None:
        report_progress(progress, done, total, f"{done}/{total} · {Path(name).name}" if name else f"{done}/{total}")
    return cb


def _spacing(default_spacing_mm) -> float | None:
    """A default pixel spacing from a number box: 0 or empty means none."""
    return float(default_spacing_mm) if default_spacing_mm else None


def folder_ingest_roots(ctx: AppContext) -> list[str]:
    """The import roots folder ingest may read (empty: folder ingest is off)."""
    return [str(r) for r in ctx.settings.import_roots]


def ingest(ctx: AppContext, folder: str, source: str = "ingest", progress: Progress | None = None,
           default_spacing_mm: float | None = None):
    """Ingest a folder inside an import root (DICOM/PNG/JPEG/TIFF; see ``data.ingest``); returns the
    IngestReport. ``progress(done, total, message)`` counts files. Raises IngestError when folder ingest
    is off or the folder is not inside a root (without saying what lies outside the roots)."""
    with incidents("ingesting a folder"):
        source = (source or "ingest").strip() or "ingest"
        report = ingest_mod.ingest_folder(ctx.store, folder, source=source,
                                          default_spacing_mm=_spacing(default_spacing_mm),
                                          roots=ctx.settings.import_roots, progress=_file_progress(progress))
        import_log.save_last_import(ctx.store, report, kind="folder ingest", source=source)
        return report


def upload(ctx: AppContext, files: list[tuple[str, bytes]], source: str = "upload",
           default_spacing_mm: float | None = None, progress: Progress | None = None):
    """Ingest uploaded files ((name, bytes): DICOM, PNG, JPEG, TIFF or a ZIP of a study folder) into the
    managed data directory; returns the IngestReport with one result per file."""
    with incidents("ingesting uploads"):
        source = (source or "upload").strip() or "upload"
        report = uploads_mod.ingest_uploads(
            ctx.store, [uploads_mod.Upload(n, d) for n, d in files], ctx.settings.uploads_dir,
            source=source, default_spacing_mm=_spacing(default_spacing_mm),
            max_pixels=ctx.settings.max_pixels, progress=_file_progress(progress))
        import_log.save_last_import(ctx.store, report, kind="upload", source=source)
        return report


def result_rows(report) -> list[dict]:
    """The per-file table of an ingest or upload: file, result, detail."""
    return [{"file": r["file"], "result": r["result"], "detail": r["detail"]} for r in report.results]


def result_summary(report) -> str:
    text = f"Added {report.added}, duplicates {report.duplicates}, failed {len(report.failed)}"
    if report.skipped:
        text += f", skipped {report.skipped}"
    if report.outside:
        text += f", {report.outside} outside the import roots (not read)"
    return text


@dataclass
class LastImportView:
    """The last import's report for the page: a one-line summary and three tables."""

    summary: str
    imported: list[dict]   # file, image id, result, detail
    failed: list[dict]     # file, reason
    inferred: list[dict]   # file, image id, field, value, source


def last_import(ctx: AppContext) -> LastImportView | None:
    """The last import's report (importer command, folder ingest or upload), None before the first."""
    rec = import_log.load_last_import(ctx.store)
    if rec is None:
        return None
    head = " · ".join(str(x) for x in (rec.get("kind", "import"), rec.get("source"), rec.get("finished_at")) if x)
    summary = (f"{head}: "
               f"added {rec.get('added', 0)}, duplicates {rec.get('duplicates', 0)}, "
               f"failed {len(rec.get('failed', []))}, inferred fields {len(rec.get('inferred', []))}")
    imported = [{"file": r["file"], "image id": r["image_id"], "result": r["result"], "detail": r["detail"]}
                for r in rec.get("results", []) if r.get("result") in ("added", "duplicate")]
    failed = [{"file": f["file"], "reason": f["reason"]} for f in rec.get("failed", [])]
    inferred = [{"file": r["file"], "image id": r["image_id"], "field": r["field"], "value": r["value"],
                 "source": r["source"]} for r in rec.get("inferred", [])]
    return LastImportView(summary, imported, failed, inferred)


def images_without_spacing(ctx: AppContext) -> list[str]:
    """Ids of stored images with no pixel spacing: the model cannot resample them to its scale."""
    return [r["image_id"] for r in ctx.store.list_images() if r["pixel_spacing_mm"] is None]


def set_default_spacing(ctx: AppContext, spacing_mm: float) -> int:
    """Give every image without a pixel spacing ``spacing_mm`` (recorded as "set on the Model and data
    page"). Returns how many images changed."""
    return ctx.store.set_pixel_spacing(images_without_spacing(ctx), float(spacing_mm), "set on the Model and data page")


def build_demo(ctx: AppContext, n_cases: int, progress: Progress | None = None):
    """Render the synthetic demo set (missing cases only) into the store.
    ``progress(done, total, message)`` counts cases."""
    def cb(done: int, total: int, message: str = "") -> None:
        report_progress(progress, done, total, f"{done}/{total} cases")

    return demo.ensure_demo(ctx.settings, ctx.store, n_cases=int(n_cases), progress=cb)


def dataset_stats_status(ctx: AppContext) -> dict | None:
    """A summary of the concept layer's dataset statistics for this model (None when not computed)."""
    stats = concepts.find_stats(ctx)
    if stats is None:
        return None
    return {"layer": stats.layer, "units": stats.n_units, "patches": stats.n_patches,
            "quantile": stats.quantile, "feature map": "x".join(map(str, stats.feature_shape)),
            "sample rate": round(float(stats.sample_rate), 4), "key": stats.key}


def compute_dataset_stats(ctx: AppContext, max_patches: int, progress: Progress | None = None):
    """Activation quantiles, exemplars and the unit map of the card's concept layer.
    ``progress(done, total, message)`` counts patches."""
    return concepts.compute_stats(ctx, int(max_patches), progress)


def demo_drawing_count(ctx: AppContext) -> int:
    """Live drawings of the demo's seeded reader (``DEMO_READER``)."""
    return warmup.count_demo_drawings(ctx)


def remove_demo_drawings(ctx: AppContext, actor: str) -> int:
    """Remove every seeded demo drawing in one step (``warmup.remove_demo_drawings``)."""
    return warmup.remove_demo_drawings(ctx, actor)

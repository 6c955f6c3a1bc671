"""Concept reports for a worklist or the whole data set, as one table (Parquet, read with DuckDB).

Every image gets the report the Report page shows (``report_parts.engine_report``: same model,
probe version, unit labels and TCAV run), turned into rows by ``engine.batch_report.report_rows``:
its prediction, each concept's attribution share, area, logit part and TCAV. The images are cut
into shards; each shard's rows are one Parquet part, written atomically, so a rerun skips what is
done and nothing is counted twice (``data.report_tables``). In-process by default; on Ray the
workers open the store read-only, load the model from its card and write their parts themselves.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from dashboard.data import report_tables
from dashboard.data.store import Store
from dashboard.engine.batch_report import ROW_COLUMNS, report_rows
from dashboard.progress import Progress
from dashboard.progress import report as report_progress
from dashboard.settings import Settings
from dashboard.ui.context import AppContext, build_context, load_model
from dashboard.ui.types import EngineNotReady
from dashboard.ui.work.probe_versions import ProbeInfo, probe_info, probe_key
from dashboard.ui.work.report_parts import engine_report

__all__ = ["BatchPlan", "IMAGES_PER_SHARD", "batch_root", "plan_batch", "image_rows", "run_batch", "report_shard",
           "finish_batch"]

#: Images per shard (one Parquet part each): a worker's unit of work and of resumption.
IMAGES_PER_SHARD = 8


@dataclass(frozen=True)
class BatchPlan:
    """A batch run: its key (what the rows depend on), folder, probe version and image shards."""

    key: str
    path: Path
    probe_version: int
    shards: tuple[tuple[str, ...], ...]
    todo: tuple[int, ...]            # shards without a finished part

    @property
    def n_images(self) -> int:
        return sum(len(s) for s in self.shards)


def batch_root(settings: Settings) -> Path:
    return settings.export_dir / "batch_reports"


def plan_batch(ctx: AppContext, image_ids: list[str] | None = None,
               images_per_shard: int = IMAGES_PER_SHARD) -> BatchPlan:
    """The run for ``image_ids`` (a worklist, in its order; None: every image) under the newest probe."""
    ctx.require_model()
    info = probe_info(ctx)
    if info is None:
        raise EngineNotReady("No concept probe yet: label a few drawings and train the probes on the Report page.")
    rows = {r["image_id"]: r for r in ctx.store.list_images()}
    ids = list(rows) if image_ids is None else list(image_ids)
    unknown = [i for i in ids if i not in rows]
    if unknown:
        raise EngineNotReady(f"Unknown image(s) in the worklist: {', '.join(unknown[:5])}")
    tcav = ctx.store.latest_tcav_run(info.version)
    labels = ctx.store.list_unit_labels(ctx.card_name, getattr(ctx.card, "default_layer", None) or info.layer)
    payload = {"probe": [str(v) for v in probe_key(ctx, info)], "tcav": tcav["run_id"] if tcav else None,
               "labels": sorted((r["unit"], r["concept"], r["annotation_id"]) for r in labels),
               "images": [(i, rows[i]["sha256"]) for i in ids], "per": int(images_per_shard)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = batch_root(ctx.settings) / key
    shards = tuple(tuple(ids[i:i + images_per_shard]) for i in range(0, len(ids), images_per_shard))
    todo = tuple(i for i in range(len(shards)) if not report_tables.part_done(path, i, key))
    if report_tables.read_manifest(path) is None:
        report_tables.write_manifest(path, {"key": key, "model_card": ctx.card_name, "weights_sha": ctx.weights_sha,
                                            "probe_version": info.version, "tcav_run": payload["tcav"],
                                            "n_images": len(ids), "n_parts": len(shards), "finished": ""})
    return BatchPlan(key, path, info.version, shards, todo)


def image_rows(ctx: AppContext, info: ProbeInfo, image_ids: tuple[str, ...] | list[str]) -> list[dict]:
    """The report rows of each image (``report_rows`` of the Report page's engine report)."""
    out = []
    for image_id in image_ids:
        row = ctx.store.get_image(image_id)
        case = ctx.store.get_case(row["case_id"])
        rep, _, _ = engine_report(ctx, info, row)
        out += report_rows(rep, case_id=row["case_id"], truth=case.get("label"))
    return out


def run_batch(ctx: AppContext, plan: BatchPlan, progress: Progress | None = None) -> int:
    """Compute the plan's missing parts here, in this process. Returns how many were computed."""
    info = _probe_of(ctx, plan)
    done = plan.n_images - sum(len(plan.shards[i]) for i in plan.todo)
    for i in plan.todo:
        report_progress(progress, done, plan.n_images, f"batch reports: {done}/{plan.n_images} images")
        report_tables.write_part(plan.path, i, image_rows(ctx, info, plan.shards[i]), ROW_COLUMNS, plan.key)
        done += len(plan.shards[i])
    report_progress(progress, plan.n_images, plan.n_images, "batch reports done")
    return len(plan.todo)


def _probe_of(ctx: AppContext, plan: BatchPlan) -> ProbeInfo:
    info = probe_info(ctx)
    if info is None or info.version != plan.probe_version:
        raise EngineNotReady(f"The newest probe is no longer v{plan.probe_version}: plan the batch again.")
    return info


@dataclass(frozen=True)
class ShardJob:
    """A worker's share of a batch: the settings (paths of the store and cards), the plan and one shard."""

    settings: Settings
    card_name: str
    plan: BatchPlan
    index: int
    device: str = "cpu"


def report_shard(job: ShardJob, tell) -> int:
    """Worker: open the store read-only, load the model from its card, write the shard's part."""
    store = Store(job.settings.db_path, job.settings.journal_dir, data_dir=job.settings.data_dir, read_only=True)
    try:
        loaded = load_model(job.card_name, job.settings.user_cards_dir, job.device)
        if loaded.error:
            raise EngineNotReady(loaded.error)
        ctx = build_context(job.settings, store, loaded)
        rows = []
        for n, image_id in enumerate(job.plan.shards[job.index], 1):
            rows += image_rows(ctx, _probe_of(ctx, job.plan), [image_id])
            tell(n)
        report_tables.write_part(job.plan.path, job.index, rows, ROW_COLUMNS, job.plan.key)
    finally:
        store.close()
    return job.index


def finish_batch(plan: BatchPlan) -> dict:
    """Mark the run finished once every part is there; returns its manifest."""
    missing = [i for i in range(len(plan.shards)) if not report_tables.part_done(plan.path, i, plan.key)]
    if missing:
        raise EngineNotReady(f"{len(missing)} part(s) of the batch report are missing; run it again to resume.")
    manifest = report_tables.read_manifest(plan.path) or {}
    manifest["finished"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    report_tables.write_manifest(plan.path, manifest)
    return manifest

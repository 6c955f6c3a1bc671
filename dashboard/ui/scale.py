"""`python -m dashboard.ui.scale`: the scale path, past one process (docs/scale.md).

    python -m dashboard.ui.scale stats  [--engine ray] [--workers 2] [--max-patches 600]
    python -m dashboard.ui.scale report [--engine ray] [--worklist FILE] [--workers 2]

``stats`` computes the card's dataset statistics (as the Model and data page does) in this process,
or on Ray with ``--engine ray`` or ``CONCEPTLENS_RAY_ADDRESS`` (without an address the command
starts a local Ray and stops it at the end). ``report`` writes every image's concept report (or
those of a worklist: one image id per line) as Parquet under ``exports/batch_reports/<key>/``; the
*Concepts across images* page reads it. Both resume where an interrupted run stopped. The app must
not be running: the store is one process's at a time.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dashboard.engine.distributed import RayEngine
from dashboard.progress import tqdm_progress
from dashboard.settings import Settings
from dashboard.ui.context import command_line_context
from dashboard.ui.screens.worklist import score_unscored
from dashboard.ui.work import batch_reports as br
from dashboard.ui.work import concepts as cx


def engine_for(args, settings: Settings) -> RayEngine | None:
    """None (in-process) unless ``--engine ray`` or ``CONCEPTLENS_RAY_ADDRESS``."""
    kind = args.engine or ("ray" if settings.ray_address else "inprocess")
    if kind == "inprocess":
        return None
    return RayEngine(address=args.address or settings.ray_address or None, workers=args.workers,
                     gpus_per_task=args.gpus_per_task, threads=args.threads)


def _stats(ctx, args, engine) -> int:
    with tqdm_progress("dataset statistics", unit="patch") as progress:
        stats = cx.compute_stats(ctx, args.max_patches, progress=progress, engine=engine)
    where = "in-process" if engine is None else f"on Ray ({engine.address or 'local'}, {engine.workers} workers)"
    print(f"scale: statistics of {stats.n_patches} patches {where}: {stats.path}")
    return 0


def _report(ctx, args, engine, settings: Settings) -> int:
    ids = None
    if args.worklist:
        ids = [ln.strip() for ln in Path(args.worklist).read_text().splitlines() if ln.strip()]
    plan = br.plan_batch(ctx, ids)
    print(f"scale: batch report of {plan.n_images} images, {len(plan.shards) - len(plan.todo)} of "
          f"{len(plan.shards)} parts already done: {plan.path}")
    if engine is None:
        with tqdm_progress("batch reports", unit="image") as progress:
            br.run_batch(ctx, plan, progress)
    elif plan.todo:
        score_unscored(ctx)  # the workers read the store and must find every image's score in it
        ctx.store.close()    # DuckDB: the workers open it read-only, which needs no writer
        jobs = [br.ShardJob(settings, ctx.card_name, plan, i, settings.device) for i in plan.todo]
        with tqdm_progress("batch reports", unit="image") as progress:
            engine.map(br.report_shard, jobs, progress=progress, total=plan.n_images, message="batch reports")
    manifest = br.finish_batch(plan)
    print(f"scale: {manifest['n_images']} images, {manifest['n_parts']} Parquet parts in {plan.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.ui.scale", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("stats", "report"))
    ap.add_argument("--engine", choices=("inprocess", "ray"), default=None,
                    help="where to compute (default: ray when CONCEPTLENS_RAY_ADDRESS is set, else in-process)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: CONCEPTLENS_RAY_ADDRESS, "
                    "else a local Ray started for this command)")
    ap.add_argument("--workers", type=int, default=2, help="Ray tasks in flight (local Ray: its CPUs)")
    ap.add_argument("--gpus-per-task", type=float, default=0.0, help="GPUs each Ray task asks for")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per Ray task (default: this process's; the same count gives "
                         "bit-identical numbers)")
    ap.add_argument("--max-patches", type=int, default=cx.MAX_PATCHES, help="stats: patches of the dissection set")
    ap.add_argument("--worklist", default=None, help="report: a file of image ids, one a line (default: all)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    with command_line_context("scale") as ctx:
        if ctx is None:
            return 2
        settings = ctx.settings
        engine = engine_for(args, settings)
        if args.command == "stats":
            return _stats(ctx, args, engine)
        return _report(ctx, args, engine, settings)


if __name__ == "__main__":
    raise SystemExit(main())

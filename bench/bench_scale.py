"""Scale-path benchmark (not a test): dataset statistics in-process against Ray with 1 and 2 workers.

    python -m bench.bench_scale [--sizes 1000,5000] [--engines inprocess,ray1,ray2] [--data-dir DIR]
                                [--gpus-per-task 0] [--threads N]

The patches are the store's breast tiles (``ui.work.concepts.dissection_patch_refs``, the app's
dissection set), repeated in order when the store has fewer than asked for, cut from the image
files by ``data.patch_source.StoredPatches`` in every engine (the worker's path), so the engines
differ only in where the model runs. Model: the settings' card (demo-lite0-synth by default) at its
concept layer. The store is copied to a temporary data directory (the images are linked), so a
running app is not disturbed. Ray: a local Ray started before the timing (its start-up is timed
apart), ``--threads`` torch threads per worker (default: the cores divided by the workers).

Prints the figures and writes ``bench/results/scale.json`` (``--append``: after its earlier sessions) with the load average before and after
each run (the machine may be shared) and the largest difference of the thresholds to in-process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from dashboard.data.store import Store
from dashboard.engine import dissection
from dashboard.engine.distributed import RayEngine
from dashboard.engine.shards import CardModel
from dashboard.settings import load_settings, pick_device
from dashboard.ui.context import build_context, load_model
from dashboard.ui.types import QUANTILE
from dashboard.ui.work import concepts as cx

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"


def _data_copy(src: Path, dst: Path) -> Path:
    """A data directory whose store is a copy and whose image folders are links to ``src``'s."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "conceptlens.duckdb", dst / "conceptlens.duckdb")
    for name in ("demo", "images"):
        if (src / name).exists():
            (dst / name).symlink_to((src / name).resolve())
    return dst


def _source(ctx, n: int):
    """The first ``n`` patches of the dissection set, repeated in order when it is smaller."""
    refs = cx.dissection_patch_refs(ctx, max_patches=10 ** 9)
    reps = -(-n // len(refs))
    refs = (refs * reps)[:n]
    return cx.stored_patches(ctx, refs), len(set(refs))


def _batches(source, batch: int):
    for s in range(0, source.n_patches, batch):
        yield source.load(s, min(s + batch, source.n_patches))


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run(ctx, n: int, engine_name: str, args, cache: Path) -> dict:
    source, distinct = _source(ctx, n)
    config = dissection.StatsConfig(cache_dir=cache / f"{engine_name}-{n}", quantile=QUANTILE,
                                     batch_size=cx.STATS_BATCH, n_patches=n, data_key=source.data_key,
                                     device=ctx.device)
    layer = cx.layer_of(ctx)
    out = {"n_patches": n, "distinct_patches": distinct, "engine": engine_name, "load_before": _load()}
    if engine_name == "inprocess":
        t, c = time.perf_counter(), time.process_time()
        stats = dissection.compute_dataset_stats(ctx.model, ctx.card, layer, _batches(source, cx.STATS_BATCH), config)
        out.update(wall_s=time.perf_counter() - t, cpu_s_driver=time.process_time() - c,
                   torch_threads=torch.get_num_threads())
    else:
        import ray  # optional: requirements-scale.txt

        workers = int(engine_name.removeprefix("ray"))
        threads = args.threads or max(1, (os.cpu_count() or 2) // workers)
        t0 = time.perf_counter()
        ray.init(num_cpus=workers, num_gpus=args.gpus_per_task * workers if args.gpus_per_task else None,
                 include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
        start_s = time.perf_counter() - t0
        engine = RayEngine(workers=workers, threads=threads, gpus_per_task=args.gpus_per_task)
        try:
            t = time.perf_counter()
            stats = dissection.compute_dataset_stats(
                ctx.model, ctx.card, layer, source, replace(config, n_patches=None, data_key=None), engine=engine,
                model_source=CardModel(ctx.card_name, (str(ctx.settings.user_cards_dir),), "auto"))
            out.update(wall_s=time.perf_counter() - t, ray_start_s=start_s, workers=workers, threads_per_worker=threads,
                       shards=engine.n_shards, gpus_per_task=args.gpus_per_task)
        finally:
            ray.shutdown()
    out["load_after"] = _load()
    out["per_patch_ms"] = 1000 * out["wall_s"] / n
    out["thresholds"] = stats.thresholds
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--engines", default="inprocess,ray1,ray2")
    ap.add_argument("--data-dir", default=None, help="data directory with the store (default: the settings')")
    ap.add_argument("--gpus-per-task", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per Ray worker")
    ap.add_argument("--append", action="store_true", help="keep the earlier sessions in the results file")
    args = ap.parse_args(argv)
    settings = load_settings()
    src = Path(args.data_dir) if args.data_dir else settings.data_dir
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    data = _data_copy(src, tmp / "data")
    settings = replace(settings, data_dir=data, db_path=data / "conceptlens.duckdb")
    loaded = load_model(settings.model_card, settings.user_cards_dir, pick_device(settings.device))
    if loaded.error:
        raise SystemExit(f"bench_scale: {loaded.error}")
    store = Store(settings.db_path, settings.journal_dir, data_dir=settings.data_dir)
    ctx = build_context(settings, store, loaded)
    runs = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            base = None
            for name in args.engines.split(","):
                r = run(ctx, n, name, args, tmp / "cache")
                th = r.pop("thresholds")
                base = th if name == "inprocess" else base
                if base is not None and name != "inprocess":
                    r["max_abs_threshold_diff_vs_inprocess"] = float(np.abs(th - base).max())
                    r["thresholds_identical"] = bool(np.array_equal(th, base))
                runs.append(r)
                print(f"{n:>6} patches  {name:<9} {r['wall_s']:8.1f} s  {r['per_patch_ms']:7.1f} ms/patch  "
                      f"load {r['load_before']} -> {r['load_after']}"
                      + (f"  (Ray start {r['ray_start_s']:.1f} s, {r['threads_per_worker']} thr/worker)"
                         if "ray_start_s" in r else ""), flush=True)
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    session = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "device": str(ctx.device), "card": ctx.card_name, "layer": cx.layer_of(ctx),
        "torch": torch.__version__, "command": "python -m bench.bench_scale " + " ".join(argv or []),
        "runs": runs}
    earlier = json.loads(RESULTS.read_text()).get("sessions", []) if args.append and RESULTS.is_file() else []
    RESULTS.write_text(json.dumps({"sessions": earlier + [session]}, indent=1))
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))

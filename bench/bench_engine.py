"""Concept-engine benchmarks (not a test): IoU of a drawing with every unit, probe retraining,
the per-patch report, dataset statistics.

    python -m bench.bench_engine [--threads 2] [--n-stats 1000] [--reps 5] [--skip-stats]
                                 [--work-dir DIR] [--parts stats,iou,probe,report]

Prints the figures and writes ``bench/results/engine.json`` (parts not run keep their previous
figures; each part records its own time and load average). With ``--work-dir`` the dataset
statistics of an earlier run are found in its cache (and reported as loaded, not recomputed). CPU, ``torch.set_num_threads``
threads (2 by default, the target laptop). Model: the settings' card with trained weights when
present, else its architecture with the offline ImageNet backbone (see bench.bench_model), run
at the card's concept layer (``default_layer``) on patches of its labeling side (``label_patch_size``),
as the app's Label page and dataset statistics use them (``--layer`` and ``--size`` override).
Patches: 512-px crops of the mini-MIAS images in ../shared/data when present, else synthetic.
Every figure is given as wall-clock and as this process's CPU time, with the load average,
because the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "engine.json"
SIZE = 512  # set from the card (its labeling patch) in main


def _timed(fn, reps: int):
    """Median and best wall / CPU seconds of ``reps`` runs after one warm-up; last result."""
    out = fn()
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"wall_median_s": statistics.median(wall), "wall_best_s": min(wall),
            "cpu_median_s": statistics.median(cpu), "reps": reps}, out


def _patch_source(n: int, seed: int = 0):
    """Yield n grey 512-px patches in [0, 1]: mini-MIAS crops (4 per image, then mirrored) or synthetic."""
    from dashboard.settings import load_settings

    shared = load_settings().shared_data
    files = sorted((shared / "mini-mias" / "images").glob("*.png")) if shared else []
    if files:
        from PIL import Image

        k = 0
        while True:
            for flip in (False, True):
                for f in files:
                    img = np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0  # (1024, 1024)
                    if flip:
                        img = img[:, ::-1]
                    for y in (0, 512):
                        for x in (0, 512):
                            yield np.ascontiguousarray(img[y:y + SIZE, x:x + SIZE])
                            k += 1
                            if k >= n:
                                return
    rng = np.random.default_rng(seed)
    from dashboard.testing.engine_helpers import synthetic_patches

    for _ in range(n):
        yield synthetic_patches(1, SIZE, seed=int(rng.integers(1 << 30)))[0]


def _batches(n: int, bs: int):
    buf = []
    for p in _patch_source(n):
        buf.append(p)
        if len(buf) == bs:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-stats", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip-stats", action="store_true", help="thresholds from 64 patches instead")
    ap.add_argument("--work-dir", default=None, help="reuse this folder (caches of an earlier run)")
    ap.add_argument("--parts", default="stats,iou,probe,report")
    ap.add_argument("--layer", default=None, help="concept layer (default: the card's default_layer)")
    ap.add_argument("--size", type=int, default=None, help="patch side (default: the card's label_patch_size)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)

    from bench.bench_model import load_model
    from dashboard.data.store import DrawingRecord, ImageRecord, Store
    from dashboard.engine import dissection as dis
    from dashboard.engine.activations import compute_activations
    from dashboard.engine.attribution import AttributionConfig, attribute
    from dashboard.engine.probes import ProbeConfig, train_probes
    from dashboard.engine.report import ReportInputs, build_report, report_figures, report_to_json
    from dashboard.engine.unit_iou import prepare_unit_masks, unit_ious

    card, model, what = load_model("cpu")
    global SIZE
    layer = args.layer or card.default_layer
    SIZE = int(args.size or card.label_patch_size)
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    res: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "threads": args.threads,
                 "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                 "model": what, "layer": layer, "patch_size": SIZE, "load_avg_start": os.getloadavg()}
    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    cal, _ = _timed(lambda: a @ b, 5)
    res["calibration_matmul_1024"] = {"gflops_wall": 2 * 1024**3 / cal["wall_median_s"] / 1e9,
                                      "gflops_cpu": 2 * 1024**3 / cal["cpu_median_s"] / 1e9}
    print(f"model: {what}\nthreads {args.threads}, load average {os.getloadavg()}; float32 1024^3 matmul "
          f"{res['calibration_matmul_1024']['gflops_wall']:.0f} GFLOP/s wall, "
          f"{res['calibration_matmul_1024']['gflops_cpu']:.0f} GFLOP/s per CPU second")
    tmp = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_engine_"))
    print(f"work dir {tmp}")

    # ---- dataset statistics
    n_stats = 64 if args.skip_stats else args.n_stats
    done = []
    t, c = time.perf_counter(), time.process_time()
    stats = dis.compute_dataset_stats(model, card, layer, _batches(n_stats, 16), dis.StatsConfig(
        n_patches=n_stats, data_key=f"bench-mias-{n_stats}", cache_dir=tmp / "stats", quantile=0.99, top_k=8),
        progress=lambda d, n, m: done.append(d))
    res["dataset_stats"] = {"n_patches": n_stats, "wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
                            "loaded_from_cache": not done or done[-1] == n_stats and len(done) == 1,
                            "load_avg": os.getloadavg(),
                            "units": stats.n_units, "feature_shape": list(stats.feature_shape),
                            "sample_rate": stats.sample_rate, "n_values_per_unit": stats.n_values}
    print(f"dataset statistics, {n_stats} patches of {SIZE} px ({stats.n_units} units at {stats.feature_shape}): "
          f"{res['dataset_stats']['wall_s']:.1f} s wall, {res['dataset_stats']['cpu_s']:.1f} s CPU "
          f"({1000 * res['dataset_stats']['wall_s'] / n_stats:.0f} ms/patch)")

    # ---- drawing -> IoU of every unit
    patches = list(_patch_source(8))
    if "stats" not in parts:
        res.pop("dataset_stats", None)
    x = card.preprocess(np.stack(patches[:4]))
    acts = compute_activations(model, [layer], torch.as_tensor(np.asarray(x)), batch_size=4)[layer]  # (4, C, h, w)
    k = SIZE / 512  # the drawings were laid out on a 512-px patch: scale them to the patch in use
    drawings = [("polygon", (np.array([[150, 120], [330, 140], [360, 300], [200, 360], [120, 250]]) * k).tolist()),
                ("freehand", {"points": (np.array([[60, 400], [200, 380], [330, 420], [460, 390]]) * k).tolist(),
                              "width": 14 * k}),
                ("rect", [v * k for v in (240, 60, 460, 250)]),
                ("polygon", (np.array([[20, 20], [500, 30], [480, 490], [40, 470]]) * k).tolist())]
    iou_rows = []
    for i, (shape, geom) in enumerate(drawings if "iou" in parts else []):
        mask = dis.drawing_to_mask(shape, geom, SIZE)
        # the app prepares a patch's unit masks once, when the patch's activation is computed;
        # every drawing on that patch then costs only `per_drawing`
        # each lambda runs inside _timed at once, so the loop variables are bound as wanted (B023)
        prep_t, prep = _timed(lambda: prepare_unit_masks(acts[i], stats.thresholds, SIZE), args.reps)  # noqa: B023
        draw_t, fast = _timed(lambda: unit_ious(prep, mask), args.reps)  # noqa: B023
        once_t, once = _timed(lambda: dis.compute_unit_ious(acts[i], stats.thresholds, mask), args.reps)  # noqa: B023
        ref_t, ref = _timed(lambda: dis.compute_unit_ious_reference(acts[i], stats.thresholds, mask), 1)  # noqa: B023
        iou_rows.append({"shape": shape, "mask_px": int(mask.sum()), "per_drawing": draw_t,
                         "per_patch_prepare": prep_t, "vectorised": once_t, "reference_loop": ref_t,
                         "max_abs_diff": float(np.abs(fast - ref).max()),
                         "identical": bool(np.array_equal(fast, ref) and np.array_equal(once, ref)),
                         "units_above_0.2": int((fast > 0.2).sum()), "best_iou": float(fast.max())})
        print(f"IoU, {stats.n_units} units, {shape} ({int(mask.sum())} px): per drawing "
              f"{1000 * draw_t['wall_median_s']:.1f} ms wall / {1000 * draw_t['cpu_median_s']:.1f} ms CPU (median), "
              f"per-patch prepare {1000 * prep_t['wall_median_s']:.1f} ms, both in one call "
              f"{1000 * once_t['wall_median_s']:.1f} ms, reference loop {ref_t['wall_median_s']:.2f} s; "
              f"identical: {iou_rows[-1]['identical']}, {int((fast > 0.2).sum())} units > 0.2")
    if "iou" in parts:
        res["iou"] = {"rows": iou_rows, "load_avg": os.getloadavg()}

    # ---- probe retraining with 200 drawings (activations cached)
    store = Store(tmp / f"bench-{int(time.time())}.duckdb", tmp / "journal")
    rng = np.random.default_rng(0)
    concepts = ["mass-round", "calc-grouped", "vessel", "fibroglandular"]
    src = list(_patch_source(100))
    for i in range(100):
        store.save_case(f"c{i // 4}", "bench")
        store.save_image(ImageRecord(f"im{i}", f"c{i // 4}", f"bench/{i}.png", f"sha{i}", rows=1024, cols=1024))
    for j in range(200):
        i = j % 100
        cy, cx = rng.uniform(80 * k, 430 * k, 2)
        r = rng.uniform(30 * k, 90 * k)
        pts = [[cx + r * np.cos(a), cy + r * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 24, endpoint=False)]
        store.save_annotation(DrawingRecord(image_id=f"im{i}", concept=concepts[j % 4], reader=f"reader{j % 3}",
                                            patch_x0=0, patch_y0=0, patch_size=SIZE, shape="polygon", geometry=pts,
                                            mask_png=dis.mask_to_png(dis.drawing_to_mask("polygon", pts, SIZE)),
                                            model_card=card.name))
    load = lambda a: src[int(a.image_id[2:])]  # noqa: E731
    t = time.perf_counter()
    train_probes(store, model, card, layer, load_patch=load, config=ProbeConfig(cache_dir=tmp / "cache", save=False))
    warm = time.perf_counter() - t
    probe_t, probe = _timed(lambda: train_probes(store, model, card, layer, load_patch=load,
                                                 config=ProbeConfig(cache_dir=tmp / "cache")),
                            max(1, args.reps // 2))
    res["probe_retrain"] = {"drawings": 200, "patches": 100, "first_run_with_activations_s": warm, **probe_t,
                            "concepts": probe.concepts, "auroc": {k: v["auroc"] for k, v in probe.metrics.items()},
                            "folds": 5, "load_avg": os.getloadavg()}
    print(f"probe retrain, 200 drawings on 100 patches (activations cached, 5 folds + final): "
          f"{probe_t['wall_median_s']:.2f} s wall / {probe_t['cpu_median_s']:.2f} s CPU "
          f"(first run incl. activations {warm:.1f} s)")

    # ---- per-patch report with cached activations
    for concept, (shape, geom) in zip(concepts, drawings):
        ious = dis.compute_unit_ious(acts[0], stats.thresholds, dis.drawing_to_mask(shape, geom, SIZE))
        dis.label_units_from_drawing(store, DrawingRecord(image_id="im0", concept=concept, reader="bench", patch_x0=0,
                                                          patch_y0=0, patch_size=SIZE, shape=shape, geometry=geom,
                                                          model_card=card.name), layer=layer, ious=ious)
    patch = patches[0]
    xa = torch.as_tensor(np.asarray(card.preprocess(patch[None])))
    cached, logits = compute_activations(model, [layer], xa, with_output=True)
    cached = {k: v[0] for k, v in cached.items()}
    att = attribute(model, card, patch, AttributionConfig(method="gradcam")).map
    cached_inputs = ReportInputs(attribution_map=att, store=store, activations=cached, logits=logits[0])
    rep_t, rep = _timed(lambda: build_report(model, card, patch, probe, inputs=cached_inputs), args.reps)
    full_t, _ = _timed(lambda: build_report(model, card, patch, probe, inputs=ReportInputs(store=store)),
                       max(1, args.reps // 2))
    fig_t, _ = _timed(lambda: (report_figures(rep), report_to_json(rep)), max(1, args.reps // 2))
    res["report"] = {"cached_activations": rep_t, "uncached_with_gradcam": full_t, "figures_and_json": fig_t,
                     "logit_exact": rep.logit_exact, "concepts": len(rep.concepts), "load_avg": os.getloadavg()}
    print(f"report, one patch, cached activations: {1000 * rep_t['wall_median_s']:.0f} ms wall / "
          f"{1000 * rep_t['cpu_median_s']:.0f} ms CPU; with forward + Grad-CAM {full_t['wall_median_s']:.2f} s; "
          f"figures + JSON {fig_t['wall_median_s']:.2f} s; logit parts exact: {rep.logit_exact}")
    store.close()
    res["load_avg_end"] = os.getloadavg()
    for key in ("dataset_stats", "iou", "probe_retrain", "report"):
        if key not in res and key in old:
            res[key] = old[key]  # a part not run this time keeps its earlier figures
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1, default=float))
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()

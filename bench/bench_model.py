"""Model benchmarks (not a test): patch forward, Grad-CAM, IG, whole-mammogram lesion map, memory.

    python -m bench.bench_model [--threads 2] [--device cpu|cuda|all] [--reps 3]

Prints the figures and writes ``bench/results/bench_model_<device>.json``. Uses the card
named by the settings (``CONCEPTLENS_MODEL_CARD``, default demo-lite0-synth) with its trained
weights when they exist; otherwise the same card's architecture with the offline ImageNet
backbone and a seeded random 2-class head (same compute), else timm random init. The output
says which. The whole-mammogram case is a synthetic 3000 x 2400 source image at 50 um,
resampled to the card's spacing by ``imaging.prepare_model_image`` (0.2 mm -> 750 x 600).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def load_model(device: str):
    """(card, model, description) for the benchmark, best available first."""
    import dataclasses

    from dashboard.settings import load_settings
    from model_zoo import create_model, load_card

    card = load_card(load_settings().model_card)
    try:
        model = create_model(card, weights=True, device=device)
        return card, model, f"{card.name}: trained weights {card.weights_path}"
    except Exception as exc:  # noqa: BLE001 - any reason means "no trained weights here"
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    try:
        from model_zoo.imagenet import load_efficientnet_lite0_imagenet

        if card.arch != "efficientnet_lite0":
            raise ValueError(f"ImageNet start only for efficientnet_lite0, card has {card.arch}")
        torch.manual_seed(0)
        model = load_efficientnet_lite0_imagenet(num_classes=len(card.classes), device=device)
        what = (f"{card.name} card, {card.arch} ImageNet backbone + seeded random {len(card.classes)}-class head "
                f"(trained weights unavailable: {reason})")
        return dataclasses.replace(card), model, what
    except Exception as exc2:  # noqa: BLE001
        torch.manual_seed(0)
        model = create_model(card, weights=False, device=device)
        return card, model, f"{card.name} card, {card.arch} timm random init ({reason}; {exc2})"


def synthetic_source(rows: int = 3000, cols: int = 2400, seed: int = 0) -> np.ndarray:
    """A mammogram-like source image (rows, cols) uint16-range float32 at 50 um: a breast
    half-ellipse against the left edge, smooth tissue texture and three bright masses."""
    from scipy.ndimage import gaussian_filter, zoom

    rng = np.random.default_rng(seed)
    small = gaussian_filter(rng.standard_normal((rows // 8, cols // 8)), 4)
    tex = zoom(small, 8, order=1)[:rows, :cols]
    yy, xx = np.mgrid[:rows, :cols].astype(np.float32)
    breast = ((yy - rows / 2) / (rows * 0.46)) ** 2 + (xx / (cols * 0.85)) ** 2 <= 1
    img = (0.35 + 0.25 * tex / np.abs(tex).max()) * breast
    for cy, cx, r in ((1200, 900, 60), (1900, 1400, 90), (800, 400, 45)):
        img += 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)) * breast
    return (np.clip(img, 0, 1) * 4095).astype(np.float32)


CPU_SECONDS: dict[str, float] = {}


def timed(fn, reps: int, sync, name: str = "") -> tuple[float, float, object]:
    """(best wall seconds, median wall seconds, last result) over ``reps`` runs after one warm-up.

    Also records the process CPU seconds of the fastest run under ``name`` in CPU_SECONDS: on a
    shared machine CPU time / threads approximates the wall time the run would take alone.
    """
    out = fn()
    sync()
    times, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if name:
        CPU_SECONDS[name] = cpu[int(np.argmin(times))]
    return min(times), statistics.median(times), out


def rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(device: str, threads: int, reps: int, ig_batch: int) -> dict:
    from dashboard.engine.attribution import AttributionConfig, attribute, attribute_image
    from dashboard.engine.inference import LesionMapConfig, compute_lesion_map, predict_patches
    from dashboard.imaging import Mammogram, prepare_model_image

    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    card, model, what = load_model(device)
    s = card.patch_size
    res: dict = {"device": device, "threads": threads, "model": what, "patch_size": s,
                 "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                 "when": datetime.now(UTC).isoformat(timespec="seconds")}
    print(f"[{device}] model: {what}")
    rng = np.random.default_rng(0)
    patches = rng.uniform(0.1, 0.6, size=(32, s, s)).astype(np.float32)  # (32, S, S)

    best, med, _ = timed(lambda: predict_patches(model, card, patches[:1], device=device), max(reps, 10), sync, "patch_forward_b1")
    res["patch_forward_b1_ms"] = 1000 * best
    best, med, _ = timed(lambda: predict_patches(model, card, patches, batch_size=32, device=device), reps, sync,
                         "patch_forward_b32")
    res["patch_forward_b32_ms_per_patch"] = 1000 * best / 32
    print(f"  patch forward {s}px: batch 1 {res['patch_forward_b1_ms']:.1f} ms/patch, "
          f"batch 32 {res['patch_forward_b32_ms_per_patch']:.1f} ms/patch")

    best, _, _ = timed(lambda: attribute(model, card, patches[0], AttributionConfig(method="gradcam", device=device)),
                       reps, sync, "gradcam")
    res["gradcam_ms_per_patch"] = 1000 * best
    res["peak_rss_mib_after_patches"] = rss_mib()
    best, _, att = timed(lambda: attribute(model, card, patches[0], AttributionConfig(
        method="ig", n_steps=32, internal_batch_size=ig_batch, device=device)), reps, sync, "ig32")
    res["ig32_ms_per_patch"] = 1000 * best
    res["ig_internal_batch_size"] = ig_batch
    res["peak_rss_mib_after_ig"] = rss_mib()
    print(f"  Grad-CAM ({card.default_layer}) {res['gradcam_ms_per_patch']:.0f} ms/patch, "
          f"IG 32 steps (internal batch {ig_batch}) {res['ig32_ms_per_patch']:.0f} ms/patch "
          f"(delta {att.stats['delta']:.3g}); peak RSS {res['peak_rss_mib_after_ig']:.0f} MiB")

    src = synthetic_source()
    mammo = Mammogram(pixels=src, photometric="MONOCHROME2", bits_stored=12, laterality="L", view="CC",
                      pixel_spacing_mm=0.05, windows=[], voi_lut_function="LINEAR", meta={},
                      path=Path("synthetic"), sha256="")
    t = time.perf_counter()
    img, mask, frame = prepare_model_image(mammo, card.pixel_spacing_mm)
    res["prepare_model_image_s"] = time.perf_counter() - t
    res["source_shape"], res["model_shape"] = list(src.shape), list(img.shape)
    print(f"  source {src.shape} at 0.05 mm -> model {img.shape} at {card.pixel_spacing_mm} mm "
          f"({res['prepare_model_image_s']:.2f} s to prepare)")
    wreps = max(1, reps - 1)
    best, _, fcn = timed(lambda: compute_lesion_map(model, card, img, mask,
                                                    LesionMapConfig(method="fcn", device=device)),
                         wreps, sync, "lesion_map_fcn")
    res["lesion_map_fcn_s"] = best
    res["peak_rss_mib_after_fcn"] = rss_mib()
    best, _, tiles = timed(lambda: compute_lesion_map(model, card, img, mask, LesionMapConfig(
        method="tiles", stride=s // 2, device=device)), wreps, sync, "lesion_map_tiles")
    res["lesion_map_tiles_s"] = best
    res["lesion_map_tiles_n"] = int((tiles.grid_prob > 0).sum())
    corr = float(np.corrcoef(fcn.prob[mask], tiles.prob[mask])[0, 1]) if mask.any() else float("nan")
    pf = np.unravel_index(fcn.prob.argmax(), fcn.prob.shape)
    pt = np.unravel_index(tiles.prob.argmax(), tiles.prob.shape)
    res["fcn_vs_tiles"] = {"corr_in_breast": corr, "peak_distance_px": float(np.hypot(pf[0] - pt[0], pf[1] - pt[1])),
                           "score_fcn": fcn.score, "score_tiles": tiles.score}
    print(f"  lesion map: FCN {res['lesion_map_fcn_s']:.2f} s, tiles (stride {s // 2}, "
          f"{res['lesion_map_tiles_n']} tiles) {res['lesion_map_tiles_s']:.2f} s (target <= 3 s on CPU); "
          f"FCN~tiles corr {corr:.2f}, peaks {res['fcn_vs_tiles']['peak_distance_px']:.0f} px apart")
    best, _, _ = timed(lambda: attribute_image(model, card, img, mask,
                                               AttributionConfig(method="gradcam", device=device)),
                       wreps, sync, "gradcam_image")
    res["gradcam_image_s"] = best
    print(f"  whole-image Grad-CAM {best:.2f} s")

    res["peak_rss_mib"] = rss_mib()
    if cuda:
        res["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        res["gpu"] = torch.cuda.get_device_name()
    print(f"  peak RSS {res['peak_rss_mib']:.0f} MiB"
          + (f", CUDA max allocated {res['cuda_max_allocated_mib']:.0f} MiB" if cuda else ""))
    res["positive_index"] = card.positive_index
    res["cpu_seconds_of_best_run"] = dict(CPU_SECONDS)
    res["load_average_1min"] = __import__("os").getloadavg()[0]
    print("  CPU seconds of the fastest run (/threads ~ wall time alone): "
          + ", ".join(f"{k} {v:.3f}" for k, v in CPU_SECONDS.items()))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="all", help="cpu, cuda or all (cpu, then cuda when available)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ig-batch", type=int, default=16, help="IG internal_batch_size (steps per forward)")
    args = ap.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for dev in devices:
        res = run(dev, args.threads, args.reps, args.ig_batch)
        out = RESULTS_DIR / f"bench_model_{dev.split(':')[0]}.json"
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

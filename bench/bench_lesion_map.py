"""Lesion-map quality (not a test): FCN pass vs overlapping tiles on unseen synthetic cases.

    python -m bench.bench_lesion_map [--cases 23] [--seed 999] [--threads 2]

Renders phantom cases with a seed the demo model was not trained on, prepares each image as
the app does (``imaging.prepare_model_image``), and for each lesion-map method reports time per
image (wall and CPU, median), top-1 / top-3 hits (a suspicious patch overlaps a finding's
ground-truth mask), whether the map's
peak lies on a finding (its mask dilated by 1/8 patch), image-level AUROC of the score (images
with vs without findings), the FCN~tiles correlation inside the breast, and paired differences
of every method against the baseline of non-overlapping tiles (stride = patch size) with 95%
bootstrap CIs over images.
Writes ``bench/results/bench_lesion_map.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_lesion_map.json"
LABELS = ("malignant", "normal", "benign")


def auroc(pos: list[float], neg: list[float]) -> float:
    """Mann-Whitney AUROC (ties count half); NaN without both classes."""
    if not pos or not neg:
        return float("nan")
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def paired_ci(a: np.ndarray, b: np.ndarray, pos: np.ndarray, *, metric: str, n_boot: int = 2000,
              seed: int = 0) -> tuple[float, float, float]:
    """Difference a - b of a per-image metric with a 95% bootstrap CI over images (resampled jointly).

    ``metric`` "mean": a, b are per-image values of images with findings (pos all True);
    "auroc": a, b are image scores and ``pos`` says which images have findings.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))  # (B, n)

    def stat(x, i):
        if metric == "mean":
            return x[i].mean(axis=-1)
        p, xs = pos[i], x[i]  # (B, n)
        gt = (xs[:, :, None] > xs[:, None, :]) + 0.5 * (xs[:, :, None] == xs[:, None, :])  # (B, n, n)
        w = p[:, :, None] & ~p[:, None, :]
        return (gt * w).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)), 1)

    full = np.arange(len(a))[None]
    d = float((stat(a, full) - stat(b, full))[0])
    boot = stat(a, idx) - stat(b, idx)
    return d, float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def main(argv: list[str] | None = None) -> int:
    from scipy.ndimage import binary_dilation

    from bench.bench_model import load_model
    from dashboard.data.phantom import generate_case
    from dashboard.engine.inference import LesionMapConfig, compute_lesion_map
    from dashboard.imaging import Mammogram, prepare_model_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=23)  # 2-4 images each; 2 of 3 cases have findings
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="", help="comma list among fcn, fcn-raw, tiles/<stride> (default all; "
                    "the baseline tiles/<patch size> always runs)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    card, model, what = load_model("cpu")
    s = card.patch_size
    base = f"tiles/{s}"
    methods = {base: dict(method="tiles", stride=s),
               "fcn": dict(method="fcn"), "fcn-raw": dict(method="fcn", refine=0),
               f"tiles/{s // 2}": dict(method="tiles", stride=s // 2)}
    if args.methods:
        methods[f"tiles/{s // 4}"] = dict(method="tiles", stride=s // 4)  # ~4x tiles/{s//2}: opt-in only
        methods = {k: v for k, v in methods.items() if k in args.methods.split(",") or k == base}
    stats = {m: {"seconds": [], "cpu": [], "score": [], "has": [], "hit1": [], "hit3": [], "peak_on_finding": [], "pos": [], "neg": []} for m in methods}
    corr = []
    print(f"model: {what}")
    for ci in range(args.cases):
        case = generate_case(args.seed, ci, label=LABELS[ci % len(LABELS)])
        for im in case.images:
            mammo = Mammogram(pixels=im.file_pixels().astype(np.float32), photometric="MONOCHROME2", bits_stored=12,
                              laterality=im.laterality, view=im.view, pixel_spacing_mm=im.pixel_spacing_mm,
                              windows=[], voi_lut_function="LINEAR", meta={}, path=Path("phantom"), sha256="")
            img, mask, frame = prepare_model_image(mammo, card.pixel_spacing_mm)
            if img.shape != im.pixels.shape:
                raise RuntimeError("phantom images are expected at the card's spacing")
            lesion = np.zeros(img.shape, bool)
            for f in im.findings:
                lesion |= f.mask
            near = binary_dilation(lesion, iterations=s // 8) if lesion.any() else lesion
            centres = [f.center_xy for f in im.findings]

            def hit(patches, lesion=lesion):
                return any(lesion[max(y0, 0):y0 + sz, max(x0, 0):x0 + sz].any() for x0, y0, sz, _ in patches)
            maps = {}
            for name, kw in methods.items():
                t, c = time.perf_counter(), time.process_time()
                lm = compute_lesion_map(model, card, img, mask, LesionMapConfig(top_k=3, **kw))
                stats[name]["seconds"].append(time.perf_counter() - t)
                stats[name]["cpu"].append(time.process_time() - c)
                stats[name]["score"].append(float(lm.score))
                stats[name]["has"].append(bool(centres))
                maps[name] = lm.prob
                (stats[name]["pos"] if centres else stats[name]["neg"]).append(lm.score)
                if centres:
                    stats[name]["hit1"].append(hit(lm.top_patches[:1]))
                    stats[name]["hit3"].append(hit(lm.top_patches[:3]))
                    py, px = np.unravel_index(lm.prob.argmax(), lm.prob.shape)
                    stats[name]["peak_on_finding"].append(bool(near[py, px]))
            if "fcn" in maps and f"tiles/{s // 2}" in maps:
                corr.append(float(np.corrcoef(maps["fcn"][mask], maps[f"tiles/{s // 2}"][mask])[0, 1]))
        print(f"  case {ci} ({case.label}): {len(case.images)} images", flush=True)
    out = {"model": what, "seed": args.seed, "cases": args.cases, "threads": args.threads,
           "load_average_1min": __import__("os").getloadavg()[0],
           "when": datetime.now(UTC).isoformat(timespec="seconds"),
           "fcn_vs_tiles_corr_mean": float(np.mean(corr)) if corr else float("nan"), "methods": {}}
    for name, st in stats.items():
        out["methods"][name] = {
            "seconds_per_image_median": float(np.median(st["seconds"])),
            "cpu_seconds_per_image_median": float(np.median(st["cpu"])),
            "images_with_findings": len(st["hit1"]), "images_without": len(st["neg"]),
            "hit_at_1": float(np.mean(st["hit1"])) if st["hit1"] else float("nan"),
            "hit_at_3": float(np.mean(st["hit3"])) if st["hit3"] else float("nan"),
            "peak_on_finding": float(np.mean(st["peak_on_finding"])) if st["peak_on_finding"] else float("nan"),
            "image_auroc": auroc(st["pos"], st["neg"]),
        }
        r = out["methods"][name]
        b = stats[base]
        has = np.asarray(st["has"])
        r["vs_baseline"] = {
            "hit_at_1": paired_ci(np.asarray(st["hit1"], float), np.asarray(b["hit1"], float), None, metric="mean"),
            "hit_at_3": paired_ci(np.asarray(st["hit3"], float), np.asarray(b["hit3"], float), None, metric="mean"),
            "image_auroc": paired_ci(np.asarray(st["score"]), np.asarray(b["score"]), has, metric="auroc"),
        } if st["hit1"] and name != base else {}
        print(f"{name:>10}: {r['seconds_per_image_median']:.2f} s/image (CPU {r['cpu_seconds_per_image_median']:.2f}), hit@1 {r['hit_at_1']:.2f}, "
              f"hit@3 {r['hit_at_3']:.2f}, peak on finding {r['peak_on_finding']:.2f}, "
              f"image AUROC {r['image_auroc']:.2f} ({r['images_with_findings']} with / {r['images_without']} without)")
    for name, r in out["methods"].items():
        for k, (d, lo, hi) in r["vs_baseline"].items():
            print(f"{name:>10} - {base}: {k} {d:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}]")
    print(f"FCN~tiles/{s // 2} correlation in the breast: mean {out['fcn_vs_tiles_corr_mean']:.2f}")
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"-> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

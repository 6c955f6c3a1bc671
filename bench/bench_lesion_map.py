"""Lesion-map quality (not a test): FCN pass vs overlapping tiles on unseen synthetic cases.

    python -m bench.bench_lesion_map [--cases 8] [--seed 999] [--threads 2]

Renders phantom cases with a seed the demo model was not trained on, prepares each image as
the app does (``imaging.prepare_model_image``), and for each lesion-map method reports time per
image, top-1 / top-3 hits (a suspicious patch contains a finding's centre), whether the map's
peak lies on a finding (its mask dilated by 1/8 patch), image-level AUROC of the score (images
with vs without findings) and the FCN~tiles correlation inside the breast.
Writes ``bench/results/bench_lesion_map.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
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


def main(argv: list[str] | None = None) -> int:
    from scipy.ndimage import binary_dilation

    from bench.bench_model import load_model
    from dashboard.imaging import Mammogram, prepare_model_image
    from dashboard.inference import compute_lesion_map, patch_size
    from dashboard.phantom import generate_case

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="", help="comma list among fcn, fcn-raw, tiles/<stride> (default all)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    card, model, what = load_model("cpu")
    s = patch_size(card)
    methods = {"fcn": dict(method="fcn"), "fcn-raw": dict(method="fcn", refine=0),
               f"tiles/{s // 2}": dict(method="tiles", stride=s // 2),
               f"tiles/{s // 4}": dict(method="tiles", stride=s // 4)}
    if args.methods:
        methods = {k: v for k, v in methods.items() if k in args.methods.split(",")}
    stats = {m: {"seconds": [], "hit1": [], "hit3": [], "peak_on_finding": [], "pos": [], "neg": []} for m in methods}
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
            maps = {}
            for name, kw in methods.items():
                t = time.perf_counter()
                lm = compute_lesion_map(model, card, img, mask, top_k=3, **kw)
                stats[name]["seconds"].append(time.perf_counter() - t)
                maps[name] = lm.prob
                (stats[name]["pos"] if centres else stats[name]["neg"]).append(lm.score)
                if centres:
                    def hit(patches):
                        return any(x0 <= cx < x0 + sz and y0 <= cy < y0 + sz
                                   for x0, y0, sz, _ in patches for cx, cy in centres)
                    stats[name]["hit1"].append(hit(lm.top_patches[:1]))
                    stats[name]["hit3"].append(hit(lm.top_patches[:3]))
                    py, px = np.unravel_index(lm.prob.argmax(), lm.prob.shape)
                    stats[name]["peak_on_finding"].append(bool(near[py, px]))
            if "fcn" in maps and f"tiles/{s // 2}" in maps:
                corr.append(float(np.corrcoef(maps["fcn"][mask], maps[f"tiles/{s // 2}"][mask])[0, 1]))
        print(f"  case {ci} ({case.label}): {len(case.images)} images", flush=True)
    out = {"model": what, "seed": args.seed, "cases": args.cases, "threads": args.threads,
           "load_average_1min": __import__("os").getloadavg()[0],
           "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "fcn_vs_tiles_corr_mean": float(np.mean(corr)) if corr else float("nan"), "methods": {}}
    for name, st in stats.items():
        out["methods"][name] = {
            "seconds_per_image_median": float(np.median(st["seconds"])),
            "images_with_findings": len(st["hit1"]), "images_without": len(st["neg"]),
            "hit_at_1": float(np.mean(st["hit1"])) if st["hit1"] else float("nan"),
            "hit_at_3": float(np.mean(st["hit3"])) if st["hit3"] else float("nan"),
            "peak_on_finding": float(np.mean(st["peak_on_finding"])) if st["peak_on_finding"] else float("nan"),
            "image_auroc": auroc(st["pos"], st["neg"]),
        }
        r = out["methods"][name]
        print(f"{name:>10}: {r['seconds_per_image_median']:.2f} s/image, hit@1 {r['hit_at_1']:.2f}, "
              f"hit@3 {r['hit_at_3']:.2f}, peak on finding {r['peak_on_finding']:.2f}, "
              f"image AUROC {r['image_auroc']:.2f} ({r['images_with_findings']} with / {r['images_without']} without)")
    print(f"FCN~tiles/{s // 2} correlation in the breast: mean {out['fcn_vs_tiles_corr_mean']:.2f}")
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"-> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

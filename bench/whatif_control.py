"""Does removing the concept the report ranks first move P(lesion) more than a random direction? (a
benchmark, not a test)

    python -m bench.whatif_control [--data-dir /tmp/cl_whatif] [--cases 8] [--random 32] [--alpha 1.0]

On the synthetic demo set (``--cases`` cases of seed 11, real DICOM), with the trained demo model
(demo-lite0-synth), dataset statistics of its concept layer and probe v1 trained on the phantom's
truth drawings (the warm-up's "demo drawings"), for every abnormal image (a benign or malignant
finding): the report's patch (the lesion map's most suspicious patch), the concept the image's report
ranks first (largest attribution share), and the change of P(lesion) when its probe direction is
projected out of the concept layer (alpha = 1, every position) against ``--random`` seeded random unit
directions (``engine.intervention.direction_control``). Prints the table and the summary, and writes
``bench/results/whatif_control.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dashboard.data import demo
from dashboard.data.store import Store
from dashboard.testing import e2e_data
from dashboard.testing.whatif_demo import control_figures, demo_context

OUT = Path(__file__).resolve().parent / "results" / "whatif_control.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/cl_whatif"))
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--random", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=1.0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    settings = e2e_data._settings(args.data_dir)
    with Store(settings.db_path, settings.journal_dir) as store:
        demo.build_demo(settings, store, n_cases=args.cases, seed=e2e_data.SEED, workers=1, contact_sheet=False,
                        only_missing=True)
        ctx = demo_context(args.data_dir, store)
        figs = control_figures(ctx, n_random=args.random, alpha=args.alpha)
    print(f"{'image':<18} {'top concept':<16} {'P before':>8} {'dP top':>9} {'med|dP| rnd':>11} "
          f"{'log-odds':>8} {'dLO top':>8} {'med|dLO| rnd':>12}")
    for r in figs.rows:
        print(f"{r['image']:<18} {r['top concept']:<16} {r['P before']:8.4f} {r['dP top']:+9.5f} "
              f"{r['median |dP| random']:11.5f} {r['log-odds before']:8.2f} {r['dlog-odds top']:+8.3f} "
              f"{r['median |dlog-odds| random']:12.3f}")
    beats = sum(abs(r["dP top"]) > r["median |dP| random"] for r in figs.rows)
    beats_lo = sum(abs(r["dlog-odds top"]) > r["median |dlog-odds| random"] for r in figs.rows)
    print(f"\n{len(figs.rows)} abnormal images, alpha {figs.alpha:g}, {figs.n_random} random unit directions each")
    print(f"mean |dP| removing the top concept: {figs.mean_abs_top:.4f}")
    print(f"mean |dP| removing a random direction: {figs.mean_abs_random:.4f}")
    print(f"top concept beats the median random direction on {beats}/{len(figs.rows)} images (P)")
    print(f"mean |d log-odds| removing the top concept: {figs.mean_abs_top_log_odds:.4f}")
    print(f"mean |d log-odds| removing a random direction: {figs.mean_abs_random_log_odds:.4f}")
    print(f"top concept beats the median random direction on {beats_lo}/{len(figs.rows)} images (log-odds)")
    print("mean |dP| and |d log-odds| per concept (removed from every abnormal image):")
    for c, v in sorted(figs.per_concept.items(), key=lambda kv: -kv[1]):
        print(f"  {c:<26} {v:.5f}  {figs.per_concept_log_odds[c]:.4f}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"cases": args.cases, "seed": e2e_data.SEED, "alpha": figs.alpha,
                               "n_random": figs.n_random, "rows": figs.rows, "per_concept": figs.per_concept,
                               "mean_abs_top": figs.mean_abs_top, "mean_abs_random": figs.mean_abs_random,
                               "per_concept_log_odds": figs.per_concept_log_odds,
                               "mean_abs_top_log_odds": figs.mean_abs_top_log_odds,
                               "mean_abs_random_log_odds": figs.mean_abs_random_log_odds,
                               "beats_median": int(beats), "beats_median_log_odds": int(beats_lo), "median_ratio": float(np.median(
                                   [abs(r["dP top"]) / max(r["median |dP| random"], 1e-12) for r in figs.rows]))},
                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

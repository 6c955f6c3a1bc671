"""Benchmark: phantom rendering per image, and the default demo build into a temporary folder.

    python -m bench.demo_build [--cases 120] [--seed 1234] [--images 20]

Prints the figures; not a test (nothing is asserted, machines differ).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--images", type=int, default=20, help="images for the per-image render timing")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from dashboard.data import phantom

    phantom.generate_image(np.random.default_rng(0), "L", "CC")  # warm caches
    t0 = time.perf_counter()
    for i in range(args.images):
        phantom.generate_image(np.random.default_rng(i), "LR"[i % 2], phantom.VIEWS[i % 2],
                               density=phantom.DENSITIES[i % 4])
    per_image = (time.perf_counter() - t0) / args.images
    print(f"generate_image: {per_image:.3f} s per image (one core, {args.images} images)")

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CONCEPTLENS_DATA_DIR"] = tmp
        os.environ.pop("CONCEPTLENS_DB_PATH", None)
        from dashboard.data import demo
        from dashboard.data.store import open_store
        from dashboard.settings import load_settings

        settings = load_settings()
        cpu0 = os.times()
        t0 = time.perf_counter()
        with open_store(settings) as store:
            summary = demo.build_demo(settings, store, n_cases=args.cases, seed=args.seed, workers=args.workers)
        wall = time.perf_counter() - t0
        cpu1 = os.times()
        cpu = (cpu1.user + cpu1.system + cpu1.children_user + cpu1.children_system
               - cpu0.user - cpu0.system - cpu0.children_user - cpu0.children_system)
        size = sum(f.stat().st_size for f in settings.demo_dir.rglob("*") if f.is_file())
        print(summary.message)
        print(f"build_demo: {wall:.1f} s wall, {cpu:.1f} s CPU (all processes), {summary.n_images} images, "
              f"{size / 2**20:.0f} MiB on disk, load average before/after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

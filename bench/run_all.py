"""Run every benchmark in turn; each prints its figures and writes bench/results/*.json."""
from __future__ import annotations

import subprocess
import sys

BENCHES = ["bench.bench_model", "bench.bench_engine", "bench.demo_build", "bench.bench_browser", "bench.bench_bombs",
           "bench.label_efficiency"]


def main() -> int:
    failed = []
    for mod in BENCHES:
        print(f"\n===== python -m {mod}", flush=True)
        rc = subprocess.call([sys.executable, "-m", mod])
        if rc:
            failed.append((mod, rc))
    for mod, rc in failed:
        print(f"FAILED {mod} (exit {rc})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

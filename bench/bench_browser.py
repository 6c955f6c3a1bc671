"""Browser benchmark (not a test): how long a reader waits in the real app.

    python -m bench.bench_browser [--reps 10] [--data-dir DIR]

Starts ``streamlit run app.py`` on the e2e data dir (demo DICOM cases, the trained demo model,
its dataset statistics), drives Debian's chromium with Playwright, and times, per repetition:

* draw -> IoU: from the click that closes the polygon (the drawing is released to the app) to
  the IoU panel of that drawing shown with its best-unit image loaded;
* save: from the click on Save to the "Saved ... labeled N unit(s)" message;
* save -> report: from the click on Save to the Report page showing the probe retrained on the
  drawing (Save, go to Report, press Retrain probes, concept maps rendered): what a reader waits
  between saving a drawing and seeing it in the report.

Each repetition draws a slightly different polygon (a new geometry, so nothing is answered from
the match cache; the patch's activation is cached after the first drawing, as in real use).
Prints p50/p90 and writes bench/results/browser.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.e2e import flows
from tests.e2e.data import E2E_CARD, case_with_lesion, plan_drawing, prepare_data_dir
from tests.e2e.harness import ARTIFACTS, ROOT, chromium_available, launch_chromium, streamlit_server

RESULTS = Path(__file__).resolve().parent / "results"


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (numpy's default), in the values' unit."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def jitter(poly: list[tuple[float, float]], rep: int) -> list[tuple[float, float]]:
    """The planned outline grown or shrunk by a few percent about its centre (a new geometry)."""
    cx = sum(x for x, _ in poly) / len(poly)
    cy = sum(y for _, y in poly) / len(poly)
    f = 1.0 + 0.03 * ((rep % 5) - 2)
    return [(min(max(cx + (x - cx) * f, 0.02), 0.98), min(max(cy + (y - cy) * f, 0.02), 0.98)) for x, y in poly]


def run(reps: int, data_dir: Path) -> dict:
    from playwright.sync_api import sync_playwright

    t_prep = time.perf_counter()
    env = prepare_data_dir(data_dir)
    case_id = case_with_lesion(data_dir)
    plan = plan_drawing(data_dir, case_id)
    prep_s = time.perf_counter() - t_prep
    draw_iou, save_only, save_report = [], [], []
    with streamlit_server(ROOT / "app.py", env, log_path=ARTIFACTS / "bench_browser_streamlit.log") as url, \
            sync_playwright() as pw, launch_chromium(pw) as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(flows.LONG)
        page.goto(url)
        flows.heading(page, "Worklist")
        flows.select_option(page, "Case", case_id)
        flows.click_button(page, "Open case")
        flows.heading(page, f"Read · {case_id}")
        flows.open_patch_at_point(page, plan["image_label"], plan["x"], plan["y"])
        flows.sign_in(page, "Bench")
        flows.select_option(page, "Lexicon group", "mass")
        for rep in range(reps):
            flows.settle(page)
            t0 = flows.draw_polygon_timed(page, jitter(plan["polygon"], rep))
            flows.wait_text(page, "Best matching unit")
            flows.settle(page)
            draw_iou.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            page.get_by_role("button", name="Save as mass", exact=True).first.click()
            flows.wait_text(page, re.compile(r"Saved 'mass': labeled \d+ unit"))
            save_only.append(time.perf_counter() - t0)
            flows.nav(page, "Report")
            flows.heading(page, "Report")
            flows.click_button(page, "Retrain probes")
            flows.wait_text(page, f"Concept probe v{rep + 1} trained on {rep + 1} drawing(s).")
            flows.settle(page)
            save_report.append(time.perf_counter() - t0)
            print(f"rep {rep + 1}/{reps}: draw->IoU {draw_iou[-1]:.2f} s, save {save_only[-1]:.2f} s, "
                  f"save->report {save_report[-1]:.2f} s", flush=True)
            flows.nav(page, "Label concepts")
            flows.heading(page, "Label concepts")
        page.close()

    def summary(values):
        return {"p50_s": round(pct(values, 0.5), 3), "p90_s": round(pct(values, 0.9), 3),
                "min_s": round(min(values), 3), "max_s": round(max(values), 3),
                "mean_s": round(statistics.fmean(values), 3), "n": len(values),
                "samples_s": [round(v, 3) for v in values]}

    return {
        "benchmark": "browser",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "browser": "Debian chromium (headless=new) via Playwright",
                    "device": "cpu"},
        "setup": {"model_card": E2E_CARD, "arch": "efficientnet_lite0 (trained demo model)", "patch_px": plan["patch"][3],
                  "layer": plan["layer"], "cases": "4 synthetic demo cases", "prep_s": round(prep_s, 1),
                  "reps": reps},
        "draw_to_iou_panel": summary(draw_iou),
        "save_message": summary(save_only),
        "save_to_retrained_report": summary(save_report),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse a prepared data dir (default: a temp dir)")
    args = ap.parse_args(argv)
    if not chromium_available():
        print("chromium is not installed (/usr/bin/chromium): nothing to measure", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="conceptlens-bench-") as tmp:
        res = run(args.reps, args.data_dir or Path(tmp) / "data")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "browser.json"
    out.write_text(json.dumps(res, indent=1))
    for name in ("draw_to_iou_panel", "save_message", "save_to_retrained_report"):
        r = res[name]
        print(f"{name:26s} p50 {r['p50_s']:6.2f} s   p90 {r['p90_s']:6.2f} s   (n={r['n']})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

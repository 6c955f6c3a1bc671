"""Cold-path browser benchmark (not a test): a new user's first five minutes.

    python -m bench.bench_cold [--cases 8] [--runs 3] [--shots DIR] [--out FILE]

1. **Fresh data dir**: what ``make run`` does after the virtual environment exists: the demo build
   (``python -m dashboard.data.demo ensure``, in a subprocess) and ``streamlit run app.py`` with the
   app's background warm-up on; timed to the first Worklist render in headless chromium (the page's
   heading and table drawn, its script run finished). Then until the warm-up is done (the Worklist's
   "Getting ready" notice gone: statistics, demo drawings and probe v1, scores, TCAV).
2. **Warm data dir**: the same again on the prepared dir (the demo build finds it complete).
3. **Cold server, warm data**: ``--runs`` times a fresh server on a copy of the prepared dir, timed:
   Worklist -> *Open case* -> Read rendered (tiles, scores); click on the image -> Label; the first
   drawing -> its IoU panel; Save -> Report rendered (the probe retrained with that drawing).

Screenshots of the first five minutes go to ``--shots`` (default /tmp/first5-shots). Every timed
step ends when the expected text is shown, the app is idle and every image and chart has rendered,
checked in the page on every animation frame (``flows.wait_js``). Writes bench/results/cold.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.bench_browser import jitter, pct
from dashboard.testing import flows
from dashboard.testing.browser import ARTIFACTS, ROOT, app_page, chromium_available
from dashboard.testing.e2e_data import E2E_CARD, case_with_lesion, plan_drawing

RESULTS = Path(__file__).resolve().parent / "results"
NOTICE = "Getting ready in the background"


def env_for(data_dir: Path) -> dict[str, str]:
    return {"CONCEPTLENS_DATA_DIR": str(data_dir), "CONCEPTLENS_DB_PATH": str(data_dir / "conceptlens.duckdb"),
            "CONCEPTLENS_MODEL_CARD": E2E_CARD, "CONCEPTLENS_DEVICE": "cpu", "CONCEPTLENS_WARMUP": "1"}


def demo_build(data_dir: Path, cases: int) -> float:
    """``python -m dashboard.data.demo ensure`` as ``make run`` runs it (no real cases); seconds."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dashboard.data.demo", "ensure", "--cases", str(cases), "--no-real-cases"],
                   cwd=ROOT, env={**os.environ, **env_for(data_dir)}, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def worklist_rendered(page) -> None:
    flows.heading(page, "Worklist")
    page.locator("[data-testid='stDataFrame']").first.wait_for(state="visible")
    flows.wait_app_idle(page)


def start_to_worklist(data_dir: Path, cases: int, shots: Path | None, tag: str, *, wait_warmup: bool) -> dict:
    """``make run`` (demo build + server) to the first Worklist render; optionally until warmed up."""
    t0 = time.perf_counter()
    out = {"demo_build_s": round(demo_build(data_dir, cases), 2)}
    t_server = time.perf_counter()
    with app_page(ROOT / "app.py", env_for(data_dir), log_path=ARTIFACTS / f"bench_cold_{tag}.log",
                  timeout_ms=1_800_000) as page:
        worklist_rendered(page)
        t = time.perf_counter()
        out["server_to_worklist_s"] = round(t - t_server, 2)
        out["make_run_to_worklist_s"] = round(t - t0, 2)
        out["notice_shown"] = page.get_by_text(NOTICE).count() > 0
        if shots is not None and out["notice_shown"]:
            flows.screenshot(page, shots / "01_worklist_warming_up.png")
        if wait_warmup:
            page.wait_for_function(f"() => !document.querySelector(\"[data-testid='stMain']\").textContent"
                                   f".includes({NOTICE!r})", timeout=3_600_000, polling=1000)
            flows.wait_app_idle(page)
            out["make_run_to_warmed_up_s"] = round(time.perf_counter() - t0, 1)
            if shots is not None:
                flows.screenshot(page, shots / "02_worklist_scored.png")
    return out


def pick_case(page, case_id: str) -> None:
    """Pick ``case_id`` in the Worklist's case box, typed in first: a long list shows only the
    options scrolled into view (a data dir with many real cases)."""
    box = page.get_by_role("combobox", name="Case", exact=True).first
    for _ in range(3):  # the box may not open on a click that arrives while the page is still busy
        box.click()
        try:
            page.get_by_role("listbox").first.wait_for(state="visible", timeout=15_000)
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: click again
            continue
        box.type(case_id)
        page.get_by_role("option", name=case_id, exact=True).first.click()
        break
    flows.wait_idle(page)


def cold_path(data_dir: Path, case_id: str, plan: dict, shots: Path | None, run: int) -> dict:
    """A fresh server on the warmed data: Open case -> Read, click -> Label, draw -> IoU, Save -> Report."""
    out = {}
    with app_page(ROOT / "app.py", env_for(data_dir), log_path=ARTIFACTS / f"bench_cold_run{run}.log",
                  timeout_ms=flows.LONG) as page:
        t = time.perf_counter()
        worklist_rendered(page)
        out["worklist_s"] = round(time.perf_counter() - t, 2)
        pick_case(page, case_id)
        flows.settle(page)
        t = time.perf_counter()
        page.get_by_role("button", name="Open case", exact=True).first.click()
        flows.wait_text_shown(page, f"Read · {case_id}")
        page.frame_locator(flows.READ_TILES).last.locator("img").wait_for(state="visible")
        flows.wait_app_idle(page)
        flows.wait_js(page, flows.MEDIA_READY)
        out["open_case_to_read_s"] = round(time.perf_counter() - t, 2)
        if shots is not None:
            flows.screenshot(page, shots / "03_read.png")
        t = time.perf_counter()
        flows.open_patch_at_point(page, plan["image_label"], plan["x"], plan["y"])
        out["click_to_label_s"] = round(time.perf_counter() - t, 2)
        flows.sign_in(page, "Bench")
        if shots is not None:
            flows.screenshot(page, shots / "04_label_after_click.png")
        flows.settle(page)
        flows.select_option(page, "Lexicon group", "mass")  # set-up, not timed
        flows.settle(page)
        page.wait_for_timeout(1000)  # a reader looks at the patch before drawing (not timed)
        t = flows.draw_polygon_timed(page, jitter(plan["polygon"], run))
        flows.wait_text_shown(page, "Best matching unit")
        flows.wait_app_idle(page)
        flows.wait_js(page, flows.MEDIA_READY)
        out["first_drawing_to_iou_panel_s"] = round(time.perf_counter() - t, 2)
        flows.settle(page)
        t = time.perf_counter()
        page.get_by_role("button", name="Save as mass", exact=True).first.click()
        flows.wait_text_shown(page, re.compile(r"Saved 'mass'.*probe v\d+ retrained"))
        page.locator("[data-testid='stSidebarNavLink']", has_text="Report").first.click()
        flows.wait_text_shown(page, re.compile(r"Concept probe v\d+ · layer .* on \d+ drawing"))
        flows.wait_text_shown(page, "The model gives this")
        flows.wait_app_idle(page)
        flows.wait_js(page, flows.MEDIA_READY)
        out["first_save_to_report_s"] = round(time.perf_counter() - t, 2)
        if shots is not None:
            flows.screenshot(page, shots / "05_report_lead.png")
    return out


def summary(values: list[float]) -> dict:
    return {"p50_s": round(pct(values, 0.5), 2), "max_s": round(max(values), 2), "n": len(values),
            "samples_s": values}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=8, help="synthetic demo cases (make run builds 120)")
    ap.add_argument("--runs", type=int, default=3, help="cold servers timed on the warmed data")
    ap.add_argument("--shots", type=Path, default=Path("/tmp/first5-shots"))
    ap.add_argument("--out", type=Path, default=RESULTS / "cold.json")
    ap.add_argument("--data", type=Path, default=None,
                    help="a warmed data dir (copied): time only the cold server on it (step 3)")
    ap.add_argument("--case", default=None, help="the case the cold path opens (default: the first with a lesion)")
    args = ap.parse_args(argv)
    if not chromium_available():
        print("chromium is not installed (/usr/bin/chromium): nothing to measure", file=sys.stderr)
        return 2
    args.shots.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()]
    res = {"benchmark": "cold", "command": "python -m bench.bench_cold" + (f" --cases {args.cases}" if args.cases != 8
                                                                           else ""),
           "when": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
           "setup": {"model_card": E2E_CARD, "cases": args.cases, "real_cases": False, "runs": args.runs},
           "targets": {"make_run_to_worklist_s": 30, "open_case_to_read_p50_s": 3,
                       "first_drawing_to_iou_panel_p50_s": 1.5, "first_save_to_report_p50_s": 2}}
    with tempfile.TemporaryDirectory(prefix="conceptlens-cold-") as tmp:
        data = Path(tmp) / "data"
        if args.data is not None:
            shutil.copytree(args.data, data)
            res["command"] += f" --data {args.data}"
            res["setup"]["data"] = "a warmed data dir given with --data (steps 1 and 2 not run)"
        else:
            res["fresh"] = start_to_worklist(data, args.cases, args.shots, "fresh", wait_warmup=True)
            print("fresh:", res["fresh"], flush=True)
            load.append(os.getloadavg())
            res["warm"] = start_to_worklist(data, args.cases, None, "warm", wait_warmup=False)
            print("warm:", res["warm"], flush=True)
        case_id = args.case or case_with_lesion(data)
        plan = plan_drawing(data, case_id)
        runs = []
        for r in range(args.runs):
            work = Path(tmp) / f"run{r}"
            shutil.copytree(data, work)
            runs.append(cold_path(work, case_id, plan, args.shots if r == 0 else None, r))
            print(f"cold run {r + 1}:", runs[-1], flush=True)
            shutil.rmtree(work, ignore_errors=True)
        load.append(os.getloadavg())
    res["cold_server"] = {k: summary([r[k] for r in runs]) for k in runs[0]}
    res["load_average"] = [[round(v, 2) for v in la] for la in load]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    for k, v in res["cold_server"].items():
        print(f"{k:32s} p50 {v['p50_s']:6.2f} s  max {v['max_s']:6.2f} s  (n={v['n']})")
    print(f"load average {res['load_average']}; wrote {args.out}; screenshots in {args.shots}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

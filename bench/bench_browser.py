"""Browser benchmark (not a test): how long a reader waits in the real app.

    python -m bench.bench_browser [--reps 10] [--data-dir DIR] [--vertices 8] [--out FILE]

Starts ``streamlit run app.py`` on the e2e data dir (4 synthetic demo DICOM cases, the trained demo
model, its dataset statistics), drives Debian's chromium with Playwright, and times, per repetition:

* choose concept: from picking the lexicon group "mass" (after another one) to the app idle again;
* draw -> IoU: from the click that closes the polygon (the drawing is released to the app) to
  the IoU panel of that drawing shown with its best-unit image loaded;
* save: from the click on Save to the "Saved ... labeled N unit(s) ... probe vN" message (Save
  stores the drawing, labels the units and retrains the concept probes in the same request);
* save -> report: from the click on Save to the Report page showing the probe version trained
  with that drawing, every image and chart rendered: what a reader waits between saving a
  drawing and seeing it in the report. Also reported: to the Report's own probe line, and to its
  script run finished (the rest up to "rendered" is the browser drawing the images and charts).

Every timed wait checks its condition in the page on every animation frame (``flows.wait_js``):
Playwright's own selector/text waits back off to one check per 0.5 s, which added up to half a
second to a step.

Each repetition draws a slightly different polygon (a new geometry, so nothing is answered from
the match cache; the patch's activation is cached after the first drawing, as in real use).

Before the browser, the same Save -> report path runs in-process and every step is timed
(wall and CPU seconds): match, store + unit labels, probe data collection, fit and validation,
the image's model evidence (once per image), concept maps, report assembly, figures, PNG
encoding, TCAV (on demand). In the app, the Label page starts the probe-dependent report steps
in a background thread once its run after Save is sent (``labeling.prepare_report``); here they
are timed computing, one by one.

Drawings per minute (issue #6) = 60 / (measured system latencies per drawing + a human-time
model). The human part is a MODEL, not a measurement: the Keystroke-Level Model (Card, Moran &
Newell 1980, "The keystroke-level model for user performance time with interactive systems",
CACM 23(7):396-410): P = 1.1 s to point with the mouse, K = 0.2 s for a mouse-button press
(a keystroke), M = 1.35 s of mental preparation. A drawing = M (find the finding) + (n + 1)
point-and-click vertices (n vertices and the closing click) + M (read the IoU panel) + one
point-and-click for the concept + one for Save.

Prints p50/p90 and writes bench/results/browser.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import plotly.io as pio

from bench.stats import pct
from dashboard.data.store import Store
from dashboard.engine import probes
from dashboard.testing import flows
from dashboard.testing.browser import ARTIFACTS, ROOT, app_page, chromium_available
from dashboard.testing.e2e_data import E2E_CARD, _settings, case_with_lesion, plan_drawing, prepare_data_dir
from dashboard.ui import ConceptLensError, canvas
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import report as rp
from dashboard.ui.screens import worklist as wl
from dashboard.ui.types import PatchRef
from dashboard.ui.work import report_parts as parts
from dashboard.ui.work.evidence import image_evidence
from dashboard.ui.work.probe_versions import annotation_patch, probe_info

RESULTS = Path(__file__).resolve().parent / "results"


def jitter(poly: list[tuple[float, float]], rep: int) -> list[tuple[float, float]]:
    """The planned outline grown or shrunk by a few percent about its centre (a new geometry)."""
    cx = sum(x for x, _ in poly) / len(poly)
    cy = sum(y for _, y in poly) / len(poly)
    f = 1.0 + 0.03 * ((rep % 5) - 2)
    return [(min(max(cx + (x - cx) * f, 0.02), 0.98), min(max(cy + (y - cy) * f, 0.02), 0.98)) for x, y in poly]


#: Keystroke-Level Model operator times (Card, Moran & Newell 1980), seconds.
KLM = {"P_point_s": 1.1, "K_button_s": 0.2, "M_mental_s": 1.35}


def human_seconds(vertices: int) -> dict:
    """KLM time of the reader's own actions for one drawing (a model, not a measurement)."""
    click = KLM["P_point_s"] + KLM["K_button_s"]
    parts = {"M_find_finding": KLM["M_mental_s"], f"{vertices + 1}_vertex_clicks": (vertices + 1) * click,
             "M_read_iou_panel": KLM["M_mental_s"], "click_concept": click, "click_save": click}
    return {"parts_s": {k: round(v, 3) for k, v in parts.items()}, "total_s": round(sum(parts.values()), 3)}


def drawings_per_minute(system: dict, vertices: int) -> dict:
    """60 / (system latencies per drawing at p50 (and p90) + the KLM human time)."""
    human = human_seconds(vertices)
    out = {"model": "Keystroke-Level Model, Card, Moran & Newell (1980), CACM 23(7):396-410",
           "operators": KLM, "polygon_vertices": vertices, "human_s": human,
           "note": "human time is a KLM model, not measured; system latencies are measured in the browser "
                   "(choose concept + draw -> IoU panel + Save -> Saved), added without overlap"}
    for q in ("p50_s", "p90_s"):
        sys_s = sum(system[k][q] for k in ("choose_concept", "draw_to_iou_panel", "save_message"))
        out[f"system_{q}"] = round(sys_s, 3)
        out[f"drawings_per_minute_{q[:3]}"] = round(60.0 / (sys_s + human["total_s"]), 2)
    return out


def _timed(log: dict, name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, its wall and CPU seconds appended to ``log[name]``."""
    t, c = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    log.setdefault(name, []).append((time.perf_counter() - t, time.process_time() - c))
    return value


def _profile_drawing(log: dict, ctx, view, row: dict, case_id: str, poly) -> None:
    """One drawing's Save -> report path in process, each step timed into ``log``."""
    ref = view.ref
    pts = tuple(((1 - x if view.mirrored else x) * ref.size, y * ref.size) for x, y in poly)
    m = _timed(log, "match", lb.match, ctx, view, [canvas.Drawing("polygon", pts)])
    res = _timed(log, "save_total", lb.save, ctx, view, m, "mass", "Bench", retrain=True)
    log.setdefault("save.store_and_label", []).append((res.timings_s["store_and_label"], float("nan")))
    log.setdefault("save.retrain", []).append((res.timings_s["retrain"], float("nan")))
    anns = ctx.store.list_annotations(model_card=ctx.card_name)
    _timed(log, "retrain.collect_probe_data (again, cached activations)", probes.collect_probe_data,
           ctx.model, ctx.card, ctx.card.default_layer, anns, annotation_patch(ctx), probes.ProbeConfig(cache_dir=ctx.settings.cache_dir))
    info = _timed(log, "report.probe_info", probe_info, ctx)
    colours = {c["name"]: c["colour"] for c in ctx.store.list_concepts()}
    _timed(log, "report.concept_maps", parts.image_concept_maps, ctx, info, ref.image_id)
    _timed(log, "report.concept_panels (+ JPEG encoding)", parts.concept_panels, ctx, info, row, colours, view.mirrored)
    rep_obj, _, _ = _timed(log, "report.assemble (engine report)", parts.engine_report, ctx, info, row)
    shown = _timed(log, "report.figures", parts.shown_report, rep_obj, view.mirrored)
    _timed(log, "report.bar_panel (the bar charts as one figure)", parts.bar_panel,
           [(n, f) for n, f in shown[1] if n not in parts.MAP_FIGURES])
    v = _timed(log, "report.load_report (all cached now)", rp.load_report, ctx, case_id, ref.image_id)
    _timed(log, "render.plotly_to_json (figures shown by default)", lambda figs: [pio.to_json(f) for f in figs],
           v.figures)


def profile_in_process(data_dir: Path, reps: int) -> dict:
    """The Save -> report path without the browser, each step timed (wall, CPU s), on a copy of the
    prepared data dir. Same calls as the pages: label.match/save, report.load_report."""
    plan = plan_drawing(data_dir, case_with_lesion(data_dir))
    log: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="conceptlens-prof-") as tmp:
        work = Path(tmp) / "data"
        shutil.copytree(data_dir, work)
        settings = _settings(work)
        with Store(settings.db_path, settings.journal_dir) as store:
            ctx = build_context(settings, store, load_model(E2E_CARD, settings.user_cards_dir, "cpu"))
            ref = PatchRef.from_tuple(plan["patch"])
            case_id = store.get_image(ref.image_id)["case_id"]
            wl.score_unscored(ctx, case_ids=[case_id])  # the Read page scores the case it shows
            row = store.get_image(ref.image_id)
            ev = _timed(log, "evidence_once_per_image", image_evidence, ctx, row)
            view = lb.load_patch(ctx, ref)
            for rep in range(reps):
                _profile_drawing(log, ctx, view, row, case_id, jitter(plan["polygon"], rep))
            try:
                _timed(log, "tcav (on demand, per probe version)", rp.run_tcav, ctx)
                tcav_note = ""
            except ConceptLensError as exc:  # e.g. too few background positions
                tcav_note = str(exc)
    out = {}
    for name, vals in log.items():
        walls = [w for w, _ in vals]
        cpus = [c for _, c in vals if c == c]
        out[name] = {"p50_wall_s": round(pct(walls, 0.5), 3), "max_wall_s": round(max(walls), 3),
                     "p50_cpu_s": round(pct(cpus, 0.5), 3) if cpus else None, "n": len(vals)}
    out["evidence_parts_s"] = {k: round(v, 3) for k, v in ev.timings_s.items()}
    out["evidence_parts_note"] = ("candidate patches = the lesion map's top patches; the attribution is the "
                                  "Read page's cached whole-image Grad-CAM (computed here once, not itemised)")
    if tcav_note:
        out["tcav_error"] = tcav_note
    return out


def ready(page) -> float:
    """Until the current script run has finished and every image and chart is rendered. Called
    only after a text that the new run itself writes is visible, so no settling sleep is needed.
    Both are checked in the page on every animation frame (``flows.wait_js``). Returns the
    ``time.perf_counter()`` at which the run was seen finished (before the media had rendered)."""
    flows.wait_app_idle(page)
    t_idle = time.perf_counter()
    flows.wait_js(page, flows.MEDIA_READY)
    return t_idle


class Timings:
    """The browser figures of every repetition, s."""

    def __init__(self):
        self.choose, self.draw_iou, self.save_only, self.save_report = [], [], [], []
        self.report_text, self.report_run = [], []


def time_one_drawing(page, plan: dict, rep: int, t: Timings) -> None:
    """One repetition on the open Label page: choose the concept, draw, Save, go to the Report."""
    flows.select_option(page, "Lexicon group", "calcification")  # set-up, not timed
    flows.settle(page)
    t0 = time.perf_counter()
    page.get_by_role("combobox", name="Lexicon group", exact=True).first.click()
    page.get_by_role("option", name="mass", exact=True).first.click()
    flows.wait_text_shown(page, "Mass (any shape or margin)")
    ready(page)
    t.choose.append(time.perf_counter() - t0)
    flows.settle(page)
    t0 = flows.draw_polygon_timed(page, jitter(plan["polygon"], rep))
    flows.wait_text_shown(page, "Best matching unit")
    ready(page)
    t.draw_iou.append(time.perf_counter() - t0)
    flows.settle(page)

    t0 = time.perf_counter()
    page.get_by_role("button", name="Save as mass", exact=True).first.click()
    flows.wait_text_shown(page, re.compile(rf"Saved 'mass': labeled \d+ unit.*probe v{rep + 1} retrained"))
    t.save_only.append(time.perf_counter() - t0)
    page.locator("[data-testid='stSidebarNavLink']", has_text="Report").first.click()
    # the Report's own probe line ("... probe v1 retrained on 1 drawing" of the Saved message
    # matches a looser pattern while the Label page is still shown)
    flows.wait_text_shown(page, re.compile(rf"Concept probe v{rep + 1} · layer .*on {rep + 1} drawing"))
    t.report_text.append(time.perf_counter() - t0)
    t.report_run.append(ready(page) - t0)
    t.save_report.append(time.perf_counter() - t0)


def time_in_browser(env: dict, case_id: str, plan: dict, reps: int) -> Timings:
    """Worklist -> Read -> Label once, then ``reps`` timed drawings (``time_one_drawing``)."""
    t = Timings()
    with app_page(ROOT / "app.py", env, log_path=ARTIFACTS / "bench_browser_streamlit.log",
                  timeout_ms=flows.LONG) as page:
        flows.heading(page, "Worklist")
        flows.select_option(page, "Case", case_id)
        flows.click_button(page, "Open case")
        flows.heading(page, f"Read · {case_id}")
        flows.open_patch_at_point(page, plan["image_label"], plan["x"], plan["y"])
        flows.sign_in(page, "Bench")
        for rep in range(reps):
            time_one_drawing(page, plan, rep, t)
            print(f"rep {rep + 1}/{reps}: concept {t.choose[-1]:.2f} s, draw->IoU {t.draw_iou[-1]:.2f} s, "
                  f"save {t.save_only[-1]:.2f} s, save->report {t.save_report[-1]:.2f} s "
                  f"(probe line {t.report_text[-1]:.2f} s, run done {t.report_run[-1]:.2f} s)", flush=True)
            flows.settle(page)
            flows.nav(page, "Label concepts")
            flows.heading(page, "Label concepts")
    return t


def summary(values: list[float]) -> dict:
    return {"p50_s": round(pct(values, 0.5), 3), "p90_s": round(pct(values, 0.9), 3),
            "min_s": round(min(values), 3), "max_s": round(max(values), 3),
            "mean_s": round(statistics.fmean(values), 3), "n": len(values),
            "samples_s": [round(v, 3) for v in values]}


def run(reps: int, data_dir: Path, vertices: int) -> dict:
    t_prep = time.perf_counter()
    env = prepare_data_dir(data_dir)
    case_id = case_with_lesion(data_dir)
    plan = plan_drawing(data_dir, case_id)
    prep_s = time.perf_counter() - t_prep
    load_before = os.getloadavg()
    t_prof = time.perf_counter()
    in_process = profile_in_process(data_dir, min(reps, 5))
    prof_s = time.perf_counter() - t_prof
    t_browser = time.perf_counter()
    t = time_in_browser(env, case_id, plan, reps)
    browser_wall = time.perf_counter() - t_browser
    res = {
        "benchmark": "browser",
        "command": "python -m bench.bench_browser" + (f" --reps {reps}" if reps != 10 else ""),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "browser": "Debian chromium (headless=new) via Playwright",
                    "device": "cpu"},
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
        "setup": {"model_card": E2E_CARD, "arch": "efficientnet_lite0 (trained demo model)",
                  "patch_px": plan["patch"][3], "layer": plan["layer"],
                  "cases": "4 synthetic demo cases (seed 11)", "prep_s": round(prep_s, 1), "reps": reps,
                  "in_process_s": round(prof_s, 1), "browser_wall_s": round(browser_wall, 1),
                  "save": "Save stores the drawing, labels its units and retrains the probes in the same request",
                  "report": "the Report page opens on the labeled image; its model evidence was prefetched while "
                            "the reader drew (the first Report of an image computes it otherwise)"},
        "targets": {"draw_to_iou_panel_p50_s": 1.5, "save_to_report_p50_s": 1.5},
        "choose_concept": summary(t.choose),
        "draw_to_iou_panel": summary(t.draw_iou),
        "save_message": summary(t.save_only),
        "save_to_report": summary(t.save_report),
        "save_to_report_probe_line": summary(t.report_text),
        "save_to_report_run_done": summary(t.report_run),
        "timing_rule": ("each figure ends when the expected text is shown, the app reports its script run "
                        "finished and every image and plotly chart on the page has rendered, each checked in "
                        "the page on every animation frame (no fixed sleeps inside a timed step, no "
                        "Playwright back-off polling); save_to_report_run_done ends when the Report's "
                        "script run has finished, before its images and charts have rendered"),
        "in_process": in_process,
    }
    res["drawings_per_minute"] = drawings_per_minute(res, vertices)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--data-dir", type=Path, default=None, help="reuse a prepared data dir (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS / "browser.json",
                    help="where to write the results (default bench/results/browser.json)")
    ap.add_argument("--vertices", type=int, default=8,
                    help="polygon vertices a reader clicks per outline in the human-time model (default 8)")
    args = ap.parse_args(argv)
    if not chromium_available():
        print("chromium is not installed (/usr/bin/chromium): nothing to measure", file=sys.stderr)
        return 2
    t, c = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="conceptlens-bench-") as tmp:
        res = run(args.reps, args.data_dir or Path(tmp) / "data", args.vertices)
    res["setup"]["total_wall_s"] = round(time.perf_counter() - t, 1)
    res["setup"]["bench_process_cpu_s"] = round(time.process_time() - c, 1)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print("in-process Save -> report steps (p50 wall / CPU s):")
    for name, r in res["in_process"].items():
        if isinstance(r, dict) and "p50_wall_s" in r:
            print(f"  {name:58s} {r['p50_wall_s']:7.3f} / {r['p50_cpu_s'] if r['p50_cpu_s'] is not None else '-'}")
    for name in ("choose_concept", "draw_to_iou_panel", "save_message", "save_to_report", "save_to_report_probe_line",
                 "save_to_report_run_done"):
        r = res[name]
        print(f"{name:26s} p50 {r['p50_s']:6.2f} s   p90 {r['p90_s']:6.2f} s   (n={r['n']})")
    d = res["drawings_per_minute"]
    print(f"drawings per minute (KLM human model, {d['polygon_vertices']} vertices, human {d['human_s']['total_s']} s): "
          f"{d['drawings_per_minute_p50']} at p50 system latency, {d['drawings_per_minute_p90']} at p90")
    print(f"load average before {res['load_average']['before']}, after {res['load_average']['after']}; "
          f"total {res['setup']['total_wall_s']} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

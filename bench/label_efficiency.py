"""Label efficiency and faithfulness of ConceptLens explanations (a benchmark, not a test).

    python -m bench.label_efficiency [--cases 60] [--demo-seed 2024] [--seed 0] [--data-dir DIR]

Builds its own synthetic demo set (``dashboard.data.demo``) in ``--data-dir`` (default: a folder under
the system temp dir; reused when complete), copies its DuckDB file to a fresh run store, and runs
``dashboard.evaluation.run_label_efficiency``: the simulated reader draws 1, 2, 3, 5, 10, 20
regions per concept on the TRAIN split (probes retrained after each batch, as in the app), concept
maps and unit labels are scored against the ground truth of the held-out (val + test) images, the
final probe's reports are checked on the abnormal held-out images (top concept, attribution on the
finding, deletion, model randomisation), and the app's learning curve runs on the same drawings.

Writes into ``--out`` (default ``bench/results/label_efficiency/``): ``label_efficiency.csv`` (one row
per batch and concept), ``label_efficiency.json`` (everything, with the headline in ``summary``),
``learning_curve.csv``, ``reports.csv`` and the plots ``label_efficiency.png`` (AUROC and IoU against
drawings per concept, 95 % bootstrap bands over held-out images) and ``faithfulness.png``. Prints
the headline figures. The demo seed defaults to 2024, not the demo model's training seed (1234),
so no held-out image was ever seen by the classifier.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OUT_DIR = RESULTS_DIR / "label_efficiency"


def _parse(argv):
    ap = argparse.ArgumentParser(prog="python -m bench.label_efficiency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=60, help="demo cases to build (default 60)")
    ap.add_argument("--demo-seed", type=int, default=2024, help="seed of the demo set (default 2024)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the reader, folds, bootstrap (default 0)")
    ap.add_argument("--data-dir", type=Path, default=None, help="where the demo set lives (default: temp dir)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--card", default="demo-lite0-synth")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budgets", default="1,2,3,5,10,20")
    ap.add_argument("--concepts", default=None, help="comma-separated (default: dashboard.evaluation.DEFAULT_CONCEPTS)")
    ap.add_argument("--max-heldout", type=int, default=None, help="cap on held-out images (default: all)")
    ap.add_argument("--stats-patches", type=int, default=256)
    ap.add_argument("--report-images", type=int, default=None, help="cap on abnormal images for the report checks")
    ap.add_argument("--random-images", type=int, default=8)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--jitter-px", type=float, default=None)
    ap.add_argument("--coverage", type=float, default=None)
    ap.add_argument("--partial-rate", type=float, default=None)
    ap.add_argument("--overdraw", type=float, default=None)
    ap.add_argument("--overdraw-rate", type=float, default=None)
    ap.add_argument("--wrong-label-rate", type=float, default=None)
    ap.add_argument("--browser-json", type=Path, default=RESULTS_DIR / "browser.json",
                    help="drawing times measured by branch app's browser bench")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--layer", default=None, help="concept layer (default: the card's default_layer, as the app)")
    ap.add_argument("--order", choices=("random", "suggested"), default="random",
                    help="the reader's drawing order per concept: the plan's seeded order, or the app's "
                         "'where to draw next' suggestions under the last probe (default random)")
    ap.add_argument("--pool", type=int, default=30, help="findings per concept the suggested order picks from")
    ap.add_argument("--suggest-weights", default="1,1,1",
                    help="the suggested order's weights of uncertainty, fold disagreement, novelty (default 1,1,1)")
    ap.add_argument("--no-learning-curve", action="store_true", help="skip the in-app learning curve")
    ap.add_argument("--replot", type=Path, default=None,
                    help="only recompute the summary, tables and plots of a saved label_efficiency.json into --out")
    return ap.parse_args(argv)


# ---------------------------------------------------------------- output
CSV_COLUMNS = ["budget", "concept", "n_drawings", "n_available", "auroc", "auroc_lo", "auroc_hi", "iou", "iou_lo",
               "iou_hi", "n_units", "unit_iou", "unit_iou_lo", "unit_iou_hi", "unit_iou_mean", "unit_iou_best",
               "n_pos_images", "probe_version",
               "probe_validation_auroc", "inapp_auroc"]


def table_rows(result: dict) -> list[dict]:
    """One row per (batch, concept) from ``EvaluationResult.to_dict()``."""
    inapp = {(r["n_step"], r["concept"]): r["auroc"] for r in result.get("learning_curve") or []}
    rows = []
    for rnd in result["rounds"]:
        for concept, m in rnd["metrics"].items():
            n = rnd["n_drawings"][concept]
            rows.append({"budget": rnd["budget"], "concept": concept, "n_drawings": n,
                         "n_available": result["available"].get(concept), **{k: m.get(k) for k in CSV_COLUMNS if k in m},
                         "probe_version": rnd["probe_version"],
                         "probe_validation_auroc": rnd["probe_validation"].get(concept),
                         "inapp_auroc": inapp.get((rnd["budget"], concept))})
    return rows


def _write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    cols = columns or sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})


def plot_results(result: dict, out: Path) -> list[Path]:
    """label_efficiency.png (AUROC, map IoU, unit-label IoU vs drawings per concept, bootstrap bands)
    and faithfulness.png (deletion: share vs drop; randomisation similarity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = table_rows(result)
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    for ax, key, title in ((axes[0], "auroc", "Concept-map pixel AUROC (held-out)"),
                           (axes[1], "iou", "Concept-map IoU at p >= 0.5 (held-out)"),
                           (axes[2], "unit_iou", "Labeled units vs truth: IoU of their union (solid), "
                                                 "mean per-unit IoU (dashed)")):
        for i, c in enumerate(concepts):
            rs = [r for r in rows if r["concept"] == c and r.get(key) is not None]
            if not rs:
                continue
            x = np.array([r["n_drawings"] for r in rs], float)
            y = np.array([r[key] for r in rs], float)
            lo = np.array([np.nan if r.get(key + "_lo") is None else r[key + "_lo"] for r in rs], float)
            hi = np.array([np.nan if r.get(key + "_hi") is None else r[key + "_hi"] for r in rs], float)
            ax.plot(x, y, "o-", color=cmap(i % 10), label=c, lw=1.6, ms=4)
            ax.fill_between(x, lo, hi, color=cmap(i % 10), alpha=0.15, lw=0)
            if key == "unit_iou":  # each labeled unit's own IoU, averaged (Network Dissection's view)
                ym = [np.nan if r.get("unit_iou_mean") is None else r["unit_iou_mean"] for r in rs]
                ax.plot(x, ym, "--", color=cmap(i % 10), lw=1.0)
        if key == "auroc":
            ax.axhline(0.9, color="k", ls=":", lw=1)
            ax.axvline(5, color="k", ls=":", lw=1)
            ax.set_ylim(0.3, 1.01)
        else:
            ax.set_ylim(0, 1)
        ax.set_xscale("log")
        ticks = sorted({r["budget"] for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("drawings of the concept (simulated reader)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    cfg = result["config"]
    fig.suptitle(f"ConceptLens label efficiency: {result['heldout']['images']} held-out images, 95 % bootstrap "
                 f"bands over images (seed {cfg['seed']})", fontsize=11)
    fig.tight_layout()
    p1 = out / "label_efficiency.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    summ = result["summary"]
    for ax, variant, what in ((axes[0], "deletion_truth", "true regions"), (axes[1], "deletion_report", "report's regions")):
        for i, r in enumerate(result["reports"]):
            sh, d = r.get(f"{variant}.shares") or [], r.get(f"{variant}.drops") or []
            if sh:
                order = np.argsort(sh)
                ax.plot(np.asarray(sh)[order], np.asarray(d)[order], "-o", ms=4, lw=0.6, alpha=0.7, color=cmap(i % 10))
        ax.axhline(0, color="k", lw=0.8)
        dv = (summ.get("deletion") or {}).get(variant) or {}
        sp = dv.get("spearman_mean")
        ax.set_title(f"Deletion of the {what} (texture inpainting):\nmean per-patch Spearman "
                     f"{'n/a' if sp is None else f'{sp:.2f}'} over {dv.get('n_patches')} patches (lines join one patch)",
                     fontsize=10)
        ax.set_xlabel("report's attribution share of the concept")
        ax.set_ylabel("drop of the lesion log-odds when inpainted")
        ax.grid(alpha=0.3)
    ax = axes[2]
    rnd = summ.get("randomisation") or {}
    scopes = list(rnd)
    keys = ["share_spearman", "attr_pearson", "attr_ssim"]
    w = 0.8 / max(len(scopes), 1)
    for j, sc in enumerate(scopes):
        vals = [rnd[sc][k] if rnd[sc][k] is not None else np.nan for k in keys]
        bars = ax.bar(np.arange(len(keys)) + j * w, vals, w, label=f"{sc} re-initialised (n={rnd[sc]['n']}, "
                      f"attribution all zero on {rnd[sc].get('attr_all_zero', 0)})")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=8)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set_xticks(np.arange(len(keys)) + w * (len(scopes) - 1) / 2, ["shares Spearman", "attribution Pearson",
                                                                      "attribution SSIM"])
    ax.set_ylim(-0.5, 1.05)
    ax.set_title("Model randomisation: report vs original (median; 1 = unchanged)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    p2 = out / "faithfulness.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def write_results(result: dict, out: Path) -> list[Path]:
    """Write the CSV/JSON tables and the plots into ``out``. Returns the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    p = out / "label_efficiency.csv"
    _write_csv(p, table_rows(result), CSV_COLUMNS)
    files.append(p)
    p = out / "label_efficiency.json"
    p.write_text(json.dumps(result, indent=1, default=str))
    files.append(p)
    p = out / "learning_curve.csv"
    _write_csv(p, result.get("learning_curve") or [], ["n_step", "concept", "n_drawings", "n_available", "n_images",
                                                       "auroc", "n_eval_positions", "reason"])
    files.append(p)
    p = out / "reports.csv"
    _write_csv(p, result.get("reports") or [])
    files.append(p)
    files.extend(plot_results(result, out))
    return files


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def headline(result: dict) -> str:
    """The figures worth printing, in a few lines."""
    s = result["summary"]
    lines = []
    fa = s.get("final_auroc") or {}
    lines.append(f"concept-map AUROC after {s.get('final_budget')} drawings/concept (held-out, pooled pixels): "
                 + ", ".join(f"{c} {v:.3f}" for c, v in fa.items()) + f"; mean {s.get('final_auroc_mean') or float('nan'):.3f}")
    need = s.get("drawings_to_auroc_target") or {}
    lines.append(f"drawing order: {result['config'].get('order', 'random')}")
    lines.append(f"drawings to reach AUROC >= {s['auroc_target']}: "
                 + ", ".join(f"{c} {'never' if n is None else n}" for c, n in need.items())
                 + f"  -> target (<= {s['max_drawings_target']}) met by {s['targets']['auroc_within_5_drawings']} "
                 f"({s['targets'].get('auroc_within_5_drawings_stable')} staying >= {s['auroc_target']} at every "
                 f"later batch: " + ", ".join(f"{c} {'never' if n is None else n}"
                                              for c, n in (s.get('drawings_to_auroc_target_stable') or {}).items())
                 + ")")
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.0f} %"

    lines.append(f"report top concept = true finding (top tile of {s.get('top1_n_images')} abnormal images): "
                 f"{pct(s.get('top1_match_rate'))}; on the {s.get('top1_n_flagged')} the model flags (p >= "
                 f"{s.get('flag_threshold')}) {pct(s.get('top1_match_rate_flagged'))}; any lesion concept "
                 f"{pct(s.get('top1_lesion_rate'))}; patch centred on the finding "
                 f"{pct(s.get('top1_match_rate_finding_patch'))}; by the largest logit part "
                 f"{pct(s.get('top1_logit_part_match_rate'))} of {s.get('top1_logit_part_n_images')}")
    lines.append(f"attribution on the true finding (top tile): {pct(s.get('attr_on_finding_mean'))} of the positive "
                 f"Grad-CAM mass on {pct(s.get('finding_area_mean'))} of the patch area; report shares of the "
                 f"finding's concepts {pct(s.get('share_finding_concepts_mean'))}")
    for variant, what in (("deletion_truth", "true regions"), ("deletion_report", "report's regions"),
                          ("deletion_truth_blur", "true regions, plain blur")):
        dv = (s.get("deletion") or {}).get(variant) or {}
        sp, ci = dv.get("spearman_mean"), dv.get("spearman_ci") or [None, None]
        fd = dv.get("finding_drop_mean")
        lines.append(f"deletion of the {what}: Spearman(share, drop) mean {'n/a' if sp is None else f'{sp:.2f}'}"
                     + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None else "")
                     + f" over {dv.get('n_patches')} patches, pooled {_fmt(dv.get('spearman_pooled'))}; vs logit parts "
                     f"{_fmt(dv.get('spearman_logit_parts_mean'))}; removing the finding drops the log-odds by "
                     f"{_fmt(fd)}")
    for variant, what in (("curves_truth", "true regions"), ("curves_report", "report's regions")):
        cv = (s.get("curves") or {}).get(variant) or {}
        if cv.get("n_patches"):
            dci, ici = cv.get("deletion_gap_ci") or [None, None], cv.get("insertion_gap_ci") or [None, None]
            lines.append(f"deletion/insertion curves over the {what} ({cv['n_patches']} patches, "
                         f"{_fmt(cv.get('regions_mean'))} regions each): deletion AUC {_fmt(cv.get('deletion_auc_mean'))} "
                         f"vs random {_fmt(cv.get('deletion_random_auc_mean'))}, gap {_fmt(cv.get('deletion_gap_mean'))} "
                         f"[{_fmt(dci[0])}, {_fmt(dci[1])}], better than random on "
                         f"{pct(cv.get('deletion_better_than_random'))}; insertion AUC {_fmt(cv.get('insertion_auc_mean'))} "
                         f"vs random {_fmt(cv.get('insertion_random_auc_mean'))}, gap {_fmt(cv.get('insertion_gap_mean'))} "
                         f"[{_fmt(ici[0])}, {_fmt(ici[1])}], better on {pct(cv.get('insertion_better_than_random'))}; "
                         f"gaps / span {_fmt(cv.get('deletion_gap_over_span_mean'))}, "
                         f"{_fmt(cv.get('insertion_gap_over_span_mean'))}")
    for scope, r in (s.get("randomisation") or {}).items():
        lines.append(f"randomisation ({scope} re-initialised): median shares Spearman {_fmt(r['share_spearman'])}, "
                     f"attribution Pearson {_fmt(r['attr_pearson'])}, SSIM {_fmt(r['attr_ssim'])} (n={r['n']}; "
                     f"attribution all zero on {r.get('attr_all_zero', 0)}; top concept unchanged on "
                     f"{'n/a' if r.get('top_same_rate') is None else round(100 * r['top_same_rate'])} %)")
    ds = s.get("drawing_speed")
    lines.append("drawing time: " + (ds if isinstance(ds, str) else
                                     f"{ds['drawings_per_minute']:.1f} drawings/min -> {s.get('reader_minutes_to_target')} "
                                     f"min to the AUROC target, {s.get('reader_minutes_total')} min for all drawings"))
    upd = s.get("units_per_drawing_by_concept") or {}
    lines.append("units per drawing (IoU > tau / labels won): " + ", ".join(
        f"{c} {v['above_tau']:.0f}/{v['won']:.0f}" for c, v in upd.items()))
    lines.append(f"timings (s): {result['timings']}")
    return "\n".join(lines)


def replot(path: Path, out: Path, browser_json: Path) -> int:
    """Recompute the summary (``evaluation.summarise``) of a saved run and write its tables and plots."""
    from dashboard import evaluation as ev

    result = json.loads(Path(path).read_text())
    res = ev.EvaluationResult.from_dict(result)
    result["summary"] = ev.jsonable(ev.summarise(res, drawing_speed=ev.load_drawing_speed(browser_json)))
    files = write_results(result, out)
    print(headline(result))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    # small torch ops on 2 shared cores crawl when OpenMP threads spin-wait: set before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = _parse(argv)
    if args.replot:
        return replot(args.replot, args.out, args.browser_json)
    import dataclasses

    import torch

    import model_zoo
    from dashboard import evaluation as ev
    from dashboard.data.demo import ensure_demo
    from dashboard.data.store import Store
    from dashboard.progress import tqdm_progress
    from dashboard.settings import load_settings, pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = (args.data_dir or Path(tempfile.gettempdir()) / f"conceptlens-label-efficiency-{args.demo_seed}-{args.cases}").resolve()
    settings = load_settings().with_overrides(data_dir=data_dir, db_path=data_dir / "conceptlens.duckdb")
    t_start = time.perf_counter()
    with Store(settings.db_path, settings.journal_dir) as demo_store, tqdm_progress("demo set", unit="case") as bar:
        summary = ensure_demo(settings, demo_store, n_cases=args.cases, seed=args.demo_seed, progress=bar)
    print(summary.message)
    run_dir = data_dir / "runs" / f"seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    shutil.copy(settings.db_path, run_dir / "run.duckdb")  # a fresh store: the demo rows, no drawings

    reader = ev.ReaderConfig()
    over = {k: getattr(args, k) for k in ("jitter_px", "coverage", "partial_rate", "overdraw", "overdraw_rate",
                                          "wrong_label_rate") if getattr(args, k) is not None}
    reader = dataclasses.replace(reader, **over)
    cfg = ev.EvaluationConfig(
        concepts=tuple(args.concepts.split(",")) if args.concepts else ev.DEFAULT_CONCEPTS,
        budgets=tuple(int(b) for b in args.budgets.split(",")), reader=reader, seed=args.seed,
        max_heldout_images=args.max_heldout, stats_patches=args.stats_patches, n_boot=args.n_boot,
        report_images=args.report_images, random_images=args.random_images, layer=args.layer, order=args.order,
        pool=args.pool, learning_curve=not args.no_learning_curve,
        suggest_weights=tuple(float(w) for w in args.suggest_weights.split(",")))
    device = pick_device(args.device)
    card = model_zoo.load_card(args.card, extra_dirs=(settings.user_cards_dir,))
    model = model_zoo.create_model(card, device=device)
    speed = ev.load_drawing_speed(args.browser_json)

    # one bar for the whole run (in thousandths); its text names the stage
    # the copy's image paths are relative to the demo's data dir, where the files are
    with Store(run_dir / "run.duckdb", run_dir / "journal", data_dir=settings.data_dir) as store, \
            tqdm_progress("label efficiency", unit="‰") as progress:
        res = ev.run_label_efficiency(store, model, card, cfg, cache_dir=settings.cache_dir, device=device,
                                      drawing_speed=speed, progress=progress)
    result = res.to_dict()
    result["environment"] = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                             "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpu_count": os.cpu_count(),
                             "demo_cases": args.cases, "demo_seed": args.demo_seed, "card": card.name,
                             "seconds_total": round(time.perf_counter() - t_start, 1),
                             "command": "python -m bench.label_efficiency " + " ".join(argv if argv is not None else sys.argv[1:])}
    files = write_results(result, args.out)
    print(headline(result))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

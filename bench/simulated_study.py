"""Benchmark: a simulated pilot reader study, end to end, through the calls the study pages will make.

    python -m bench.simulated_study --out DIR [--readers 3] [--cases 40] [--seed 0] [--n-boot 2000]

1. A demo set of ``--cases`` synthetic cases is built once into ``DIR/demo`` (kept: later runs reuse
   it); each run copies its database to a fresh study store ``DIR/run/study.duckdb``.
2. A coordinator account and ``--readers`` reader accounts are created; the study (arms "score":
   AI score only, and "concepts": score + concept report; a 14-day washout) is built in code, as the
   coordinator page will, and created.
3. Scripted readers sign in at the start of each session and, case by case: ``next_assignment``,
   ``visible_fields``, ``open_read``, viewer events, a drawing of the lesion on lesion cases,
   ``submit_read``; the end-of-session questionnaire; the washout is waited out on a simulated clock
   (every time stamp is the simulated server time passed as ``now``).
   Reader model: a latent suspicion ``d' * malignant + case effect + reader noise``, with d' higher
   in the concepts arm (``--dprime-score``, ``--dprime-concepts``); the probability of malignancy
   is its normal CDF, BI-RADS its binned value; confidence grows with the latent's distance from
   the decision point; reading time is log-normal (median 50 s, x1.25 with the concept report).
   Drawings are the finding's box in model-space pixels with a few pixels of per-reader jitter.
4. The study is exported to ``DIR/export/`` and the results written to ``DIR/results.json``
   (``reader_auroc_by_arm``, ``auroc_difference``, ``auroc_difference_ci95``, ``fleiss_kappa``,
   ``krippendorff_alpha`` and the rest of ``StudyResults.to_dict()``). Prints the figures and the runtime.

Not a test: no figure is asserted (it stops only if blinding breaks). No probe is trained in a fresh demo store, so the concepts arm is
created with ``probe_optional`` and its pinned probe is None (what the study records and warns about).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from scipy.stats import norm

from dashboard.data.demo import ensure_demo
from dashboard.data.store import Store
from dashboard.engine.dissection import mask_to_png
from dashboard.imaging.geometry import Frame
from dashboard.settings import load_settings
from dashboard.study import (
    Arm,
    CaseSelection,
    ReadAnswers,
    StudyDefinition,
    check_session,
    compute_results,
    create_study,
    create_user,
    export_study,
    next_assignment,
    open_read,
    read_form,
    record_event,
    save_drawing,
    sign_in,
    submit_questionnaire,
    submit_read,
    visible_fields,
)
from model_zoo.cards import load_card

START = datetime(2025, 1, 6, 8, 30)
WASHOUT_DAYS = 14
BIRADS_CUTS = np.array([-0.9, -0.2, 0.5, 1.1, 1.8])  # latent -> BI-RADS 1..6


def _prepare_store(out: Path, n_cases: int, demo_seed: int) -> tuple[Path, object]:
    """A fresh study store holding the demo set (built once into out/demo, then copied)."""
    demo_settings = load_settings().with_overrides(data_dir=out / "demo", db_path=out / "demo" / "demo.duckdb")
    t0 = time.perf_counter()
    with Store(demo_settings.db_path, demo_settings.journal_dir) as demo_store:
        summary = ensure_demo(demo_settings, demo_store, n_cases=n_cases, seed=demo_seed)
    print(f"demo set: {summary.n_cases} cases, {summary.n_images} images "
          f"({'reused' if summary.skipped else 'built'} in {time.perf_counter() - t0:.1f} s)")
    run = out / "run"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    shutil.copy2(demo_settings.db_path, run / "study.duckdb")
    return run / "study.duckdb", demo_settings.with_overrides(data_dir=run, db_path=run / "study.duckdb")


def _lesion_boxes(store, card) -> dict[str, list[tuple]]:
    """case_id -> [(image_id, concept, (x0, y0, x1, y1) in model pixels)] of its lesion findings."""
    out: dict[str, list[tuple]] = {}
    images = {r["image_id"]: r for r in store.list_images()}
    seen = set()
    for f in store.list_findings():
        if f["pathology"] not in ("benign", "malignant") or f["x0"] is None:
            continue
        if f["concept"] not in ("mass", "calcification"):
            continue
        img = images[f["image_id"]]
        if (img["image_id"], f["concept"]) in seen:
            continue
        seen.add((img["image_id"], f["concept"]))
        # the synthetic set stores a right breast mirrored (chest wall right), which model space undoes
        frame = Frame(img["rows"], img["cols"], card.pixel_spacing_mm / img["pixel_spacing_mm"],
                      flip=img["laterality"] == "R")
        pts = frame.to_model([[f["x0"], f["y0"]], [f["x1"], f["y1"]]])
        x0, x1 = sorted(pts[:, 0])
        y0, y1 = sorted(pts[:, 1])
        out.setdefault(img["case_id"], []).append((img["image_id"], f["concept"], (x0, y0, x1, y1)))
    return out


def _drawing(box, rng: np.random.Generator) -> dict:
    """A reader's rectangle around a box (model pixels), jittered, on a patch that holds it."""
    x0, y0, x1, y1 = (v + rng.normal(0, 4) for v in box)
    size = int(min(224, max(x1 - x0, y1 - y0) + 32))
    px, py = int(max(0, (x0 + x1) / 2 - size / 2)), int(max(0, (y0 + y1) / 2 - size / 2))
    mask = np.zeros((size, size), bool)  # (S, S) patch pixels
    c0, c1 = int(np.clip(round(x0 - px), 0, size - 1)), int(np.clip(round(x1 - px), 1, size))
    r0, r1 = int(np.clip(round(y0 - py), 0, size - 1)), int(np.clip(round(y1 - py), 1, size))
    mask[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)] = True
    return {"patch_x0": px, "patch_y0": py, "patch_size": size, "shape": "rect",
            "geometry": [[c0, r0], [c1, r0], [c1, r1], [c0, r1]], "mask_png": mask_to_png(mask)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo-seed", type=int, default=1234)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--dprime-score", type=float, default=1.3)
    ap.add_argument("--dprime-concepts", type=float, default=1.8)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    db_path, settings = _prepare_store(out, args.cases, args.demo_seed)
    rng = np.random.default_rng(args.seed)
    t_study = time.perf_counter()
    store = Store(db_path, settings.journal_dir, data_dir=out / "demo")  # the copy's images stay in demo/
    try:
        card = load_card(settings.model_card, [settings.user_cards_dir])
        create_user(store, "coordinator", "coordinator", actor="bench", password="coordinator-password")
        coord = sign_in(store, "coordinator", "coordinator-password", settings=settings, client="bench", now=START)
        readers = [f"sim-reader-{i + 1}" for i in range(args.readers)]
        passwords = {r: create_user(store, r, "reader", actor=coord.username, now=START) for r in readers}
        defn = StudyDefinition(
            name="simulated-study", title="Simulated pilot: score vs score + concept report",
            readers=tuple(readers), cases=CaseSelection(source="synthetic", limit=args.cases, seed=args.seed),
            arms=(Arm("score", "AI score only", ("score",)),
                  Arm("concepts", "AI score + concept report", ("score", "concept_report"), probe="latest",
                      probe_optional=True)),
            seed=args.seed, washout_days=WASHOUT_DAYS)
        check_session(store, coord.token, now=START, role="coordinator")
        study = create_study(store, defn, actor=coord.username, settings=settings, now=START)
        for w in study.warnings:
            print("note: " + w)
        truth = {c["case_id"]: c["label"] for c in store.list_case_truth(list(study.case_ids))}
        boxes = _lesion_boxes(store, card)
        case_effect = {c: rng.normal(0, 0.5) for c in study.case_ids}
        dprime = {"score": args.dprime_score, "concepts": args.dprime_concepts}
        n_reads = n_events = n_drawings = 0
        for ri, reader in enumerate(readers):
            clock = START + timedelta(hours=1 + ri)
            skill = rng.normal(0, 0.15)
            while True:
                session = sign_in(store, reader, passwords[reader], settings=settings, client=f"ws-{ri}", now=clock)
                step = next_assignment(store, study.name, reader, now=clock)
                if step.state == "washout":
                    clock = step.available_at + timedelta(hours=2)
                    continue
                if step.state == "complete":
                    break
                while step.state == "read":
                    a = step.assignment
                    check_session(store, session.token, now=clock)
                    view = visible_fields(store, a.assignment_id)  # what the page would show: truth hidden
                    if view.truth:
                        raise SystemExit("blinding broken: the truth would be shown during a study read")
                    read_id = open_read(store, a.assignment_id, reader, now=clock)
                    d = dprime[a.arm] + skill
                    malignant = truth[a.case_id] == "malignant"
                    latent = d * malignant + case_effect[a.case_id] + rng.normal(0, 0.8)
                    seconds = float(rng.lognormal(np.log(50), 0.4)) * (1.25 if a.arm == "concepts" else 1.0)
                    for k in range(int(rng.integers(1, 4))):
                        record_event(store, read_id, reader, "window_level",
                                     {"center": float(rng.uniform(0.3, 0.6)), "width": float(rng.uniform(0.5, 1))},
                                     now=clock + timedelta(seconds=seconds * (k + 1) / 8))
                        n_events += 1
                    if a.arm == "concepts":
                        record_event(store, read_id, reader, "overlay_toggle", {"overlay": "concepts", "on": True},
                                     now=clock + timedelta(seconds=seconds / 3))
                        n_events += 1
                    for image_id, concept, box in boxes.get(a.case_id, [])[:1]:
                        save_drawing(store, read_id, reader, now=clock + timedelta(seconds=seconds / 2),
                                     image_id=image_id, concept=concept, model_card=card.name, **_drawing(box, rng))
                        n_drawings += 1
                    form = read_form(store, a.assignment_id)
                    birads = int(1 + np.searchsorted(BIRADS_CUTS, latent - d / 2))
                    answers = ReadAnswers(
                        birads=birads, malignancy=round(float(100 * norm.cdf(latent - d / 2)), 1),
                        confidence=int(np.clip(1 + round(abs(latent - d / 2) * 2), 1, 5)),
                        helpfulness=int(rng.integers(2, 6)) if form.helpfulness else None)
                    clock += timedelta(seconds=seconds)
                    submit_read(store, read_id, reader, answers, now=clock)
                    n_reads += 1
                    clock += timedelta(seconds=float(rng.uniform(3, 10)))
                    step = next_assignment(store, study.name, reader, now=clock)
                if step.state == "questionnaire":
                    base = 4 if step.arm == "concepts" else 3
                    sus = [int(np.clip(base + rng.integers(-1, 2), 1, 5)) if i % 2 == 0 else
                           int(np.clip(6 - base + rng.integers(-1, 2), 1, 5)) for i in range(10)]
                    trust = {t: int(np.clip(base + rng.integers(-1, 2), 1, 5))
                             for t in study.definition.questionnaire.trust}
                    submit_questionnaire(store, study.name, reader, step.session_index, sus=sus, trust=trust, now=clock)
                    clock += timedelta(minutes=5)
        t_reads = time.perf_counter() - t_study
        t0 = time.perf_counter()
        summary = export_study(store, study.name, out / "export", actor=coord.username)
        t_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = compute_results(store, study.name, n_boot=args.n_boot, seed=args.seed).to_dict()
        t_results = time.perf_counter() - t0
    finally:
        store.close()
    res["bench"] = {"readers": args.readers, "cases": args.cases, "reads": n_reads, "events": n_events,
                    "drawings": n_drawings, "dprime": dprime, "seed": args.seed, "n_boot": args.n_boot,
                    "seconds": {"study": round(t_reads, 2), "export": round(t_export, 2),
                                "results": round(t_results, 2), "total": round(time.perf_counter() - t_start, 2)}}
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(f"simulated study: {args.readers} readers x {len(study.case_ids)} cases x 2 arms = {n_reads} reads, "
          f"{n_events} events, {n_drawings} drawings in {t_reads:.1f} s ({1000 * t_reads / max(n_reads, 1):.0f} ms "
          "per read, all library calls)")
    for arm, v in res["mean_auroc_by_arm"].items():
        per = ", ".join(f"{r} {a:.3f}" for r, a in res["reader_auroc_by_arm"][arm].items())
        print(f"  AUROC {arm:<9} mean {v['auroc']:.3f} (95 % CI {v['ci95'][0]:.3f}-{v['ci95'][1]:.3f}); {per}")
    lo, hi = res["auroc_difference_ci95"]
    print(f"  AUROC difference {res['auroc_difference_arms'][0]} - {res['auroc_difference_arms'][1]}: "
          f"{res['auroc_difference']:+.3f} (95 % CI {lo:+.3f} to {hi:+.3f}; two-way bootstrap, {args.n_boot} replicates)")
    for arm in res["fleiss_kappa"]:
        ss = res["sensitivity_specificity_birads4"][arm]["pooled"]
        print(f"  {arm:<9} Fleiss kappa {res['fleiss_kappa'][arm]:.3f}, Krippendorff alpha "
              f"{res['krippendorff_alpha'][arm]:.3f}; BI-RADS>=4 sensitivity {ss['sensitivity']:.3f} "
              f"specificity {ss['specificity']:.3f}; SUS {res['ratings']['sus'][arm]['mean']:.1f}")
    if res["dice"]["mean"] is not None:
        print(f"  Dice between readers' drawings: mean {res['dice']['mean']:.3f} over {len(res['dice']['pairs'])} pairs")
    print(f"  export: {summary.out_dir} ({', '.join(f'{k} {v}' for k, v in summary.rows.items())}) in {t_export:.1f} s; "
          f"results in {t_results:.1f} s")
    print(f"runtime: {time.perf_counter() - t_start:.1f} s (study store, readers, export and results; "
          f"demo set included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

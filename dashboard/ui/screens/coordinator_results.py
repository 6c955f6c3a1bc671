"""Results (a coordinator's page): progress per reader and arm with the median time per case; the
study's statistics (``dashboard.study.results``: reader AUROC per arm with two-way bootstrap CIs,
the arm difference, sensitivity/specificity at BI-RADS >= 4, Fleiss' kappa and Krippendorff's
alpha, Dice between readers' drawings, ratings) as tables and the library's plotly figures; and
the library's export as one ZIP download (readers pseudonymised unless asked otherwise)."""
from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from dashboard.settings import Settings
from dashboard.study import compute_progress, compute_results, export_study, list_studies, load_study, results_figures
from dashboard.study.errors import utcnow
from dashboard.study.results import StudyResults

__all__ = ["ResultsView", "study_names", "progress_rows", "results_view", "export_zip"]


def study_names(store) -> list[str]:
    return [r["name"] for r in list_studies(store)]


def _r(v, n: int = 3):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), n)


def progress_rows(store, study: str) -> list[dict]:
    """Per reader and arm: session, assigned, opened, submitted, median seconds per case, questionnaire."""
    return [{"reader": p["reader"], "session": p["session_index"] + 1, "arm": p["arm"], "assigned": p["assigned"],
             "opened": p["opened"], "submitted": p["submitted"],
             "median s / case": _r(p["median_seconds_per_case"], 1),
             "questionnaire": "done" if p["questionnaire_done"] else "—"} for p in compute_progress(store, study)]


def _ci(ci) -> str:
    return "—" if not ci else f"{ci[0]:.3f} to {ci[1]:.3f}"


@dataclass
class ResultsView:
    """The statistics of one study as display tables, plus the library's figures."""

    study: str
    n_reads: int
    n_cases_crossed: int
    method: str
    auroc: list[dict]                  # arm, mean AUROC, 95 % CI, then one column per reader
    differences: list[dict]            # arm, reference, difference, 95 % CI
    sens_spec: list[dict]              # arm, reader (or pooled), sensitivity, specificity, n
    agreement: list[dict]              # arm, Fleiss kappa, Krippendorff alpha, cases, readers
    dice: list[dict]                   # arm, image, concept, reader pair, Dice
    ratings: list[dict]                # arm, what, n, mean, median
    figures: dict = field(default_factory=dict)
    reads: object = None               # the current reads (a DataFrame)


def results_view(store, study: str, *, n_boot: int = 2000, seed: int = 0) -> ResultsView:
    res: StudyResults = compute_results(store, study, n_boot=n_boot, seed=seed)
    auroc = []
    for arm in res.arms:
        m = res.mrmc["by_arm"].get(arm, {})
        row = {"arm": arm, "mean AUROC": _r(m.get("auroc")), "95 % CI": _ci(m.get("ci95"))}
        row.update({r: _r(v) for r, v in res.reader_auroc_by_arm.get(arm, {}).items()})
        auroc.append(row)
    diffs = [{"arm": d["arm"], "reference": d["reference"], "difference": _r(d["difference"]),
              "95 % CI": _ci(d["ci95"])} for d in res.mrmc["differences"]]
    ss = []
    for arm, v in res.sens_spec.items():
        for who, s in [("pooled", v["pooled"])] + sorted(v["readers"].items()):
            ss.append({"arm": arm, "reader": who, "sensitivity": _r((s or {}).get("sensitivity")),
                       "specificity": _r((s or {}).get("specificity")), "n": (s or {}).get("n")})
    agreement = [{"arm": arm, "Fleiss kappa": _r(v["fleiss_kappa"]), "Krippendorff alpha": _r(v["krippendorff_alpha"]),
                  "cases": v["n_cases"], "readers": v["n_readers"]} for arm, v in res.agreement.items()]
    dice = [{"arm": p["arm"], "image": p["image_id"], "concept": p["concept"],
             "readers": f"{p['reader_a']} / {p['reader_b']}", "Dice": _r(p["dice"])} for p in res.dice_pairs]
    ratings = []
    for what in ("confidence", "helpfulness", "seconds_per_case", "sus"):
        for arm, s in res.ratings[what].items():
            ratings.append({"arm": arm, "rating": what.replace("_", " "), "n": s["n"], "mean": _r(s["mean"], 2),
                            "median": _r(s["median"], 2)})
    return ResultsView(res.study, int(len(res.reads)), int(res.mrmc["n_cases"]), res.mrmc.get("method", ""), auroc,
                       diffs, ss, agreement, dice, ratings, results_figures(res), res.reads)


def export_zip(store, settings: Settings, study: str, *, actor: str, real_ids: bool = False) -> tuple[str, bytes]:
    """Export the study with the library (Parquet + CSV + data dictionary + manifest) into a new
    folder under the data directory's exports, and return (ZIP file name, ZIP bytes) of it."""
    st = load_study(store, study)
    stamp = f"{utcnow():%Y%m%dT%H%M%S}"
    stem = f"{st.name}-{stamp}" + ("-real-ids" if real_ids else "")
    out = Path(settings.export_dir) / "studies" / stem
    summary = export_study(store, st, out, actor=actor, real_ids=real_ids)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(summary.files):
            zf.write(f, arcname=f"{stem}/{Path(f).name}")
    return f"{stem}.zip", buf.getvalue()

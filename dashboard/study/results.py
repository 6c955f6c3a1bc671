"""A study's results as plain data (``StudyResults.to_dict()`` is JSON) plus plotly figures.

What is computed, from the current reads (a corrected read counts with its correction's answers,
its time with the original's):

* progress per reader and arm, and the median time per case (first render to submit, seconds);
* reader AUROC per arm: probability of malignancy against truth (case label "malignant" = positive,
  "normal"/"benign" = negative, "unknown" left out), with ``model_zoo.metrics.compute_auroc``;
* the reader-averaged AUROC per arm and the difference of each arm from the first arm, with 95 %
  CIs from a **two-way (reader x case) bootstrap**: each replicate resamples readers with
  replacement and, independently, cases with replacement within truth strata (positives and
  negatives separately, so every replicate has both), recomputes each resampled reader's AUROC on
  the resampled cases in every arm, and averages over the resampled readers; CIs are the 2.5 and
  97.5 percentiles. Resampling both readers and cases makes the CI generalise to both
  populations, as the Obuchowski-Rockette analysis does; no maintained Python package implements
  OR (iMRMC and MRMCaov/RJafroc are R/Java), hence the bootstrap. Only cases read by every
  reader in every arm (the paired, fully crossed part) enter it;
* sensitivity and specificity with BI-RADS >= 4 called positive (BI-RADS 0, "needs additional
  imaging", counts as negative), per reader and pooled, per arm (``model_zoo.metrics.apply_threshold``);
* agreement on BI-RADS between readers per arm: Fleiss' kappa (``statsmodels``) and Krippendorff's
  alpha, ordinal (``krippendorff``), on the cases every reader rated;
* Dice between readers' drawings of the same concept on the same image within an arm (each
  reader's drawings of it united, in model-space pixels; ``scipy.spatial.distance.dice``);
* ratings summaries: confidence, helpfulness, SUS score, trust items per arm.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import krippendorff
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy.spatial.distance import dice as dice_dissimilarity
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from dashboard.engine.dissection import mask_from_png
from dashboard.study.protocol import Study, load_study
from model_zoo.metrics import apply_threshold, compute_auroc

N_BOOT = 2000
BIRADS_POSITIVE = 4
METHOD = ("two-way (reader x case) bootstrap, cases resampled within truth strata, percentile 95 % CI; "
          "reader-averaged empirical AUROC of the probability of malignancy")


# ----------------------------------------------------------------------------- tables
def load_read_table(store, study: str | Study) -> pd.DataFrame:
    """One row per assignment with a current submitted read: reader, arm, session_index, position,
    case_id, label, positive (1 malignant, 0 normal/benign, NaN unknown), the answers, seconds
    (first render to submit of the original read), seconds_to_first_drawing, corrected (bool)."""
    st = study if isinstance(study, Study) else load_study(store, study)
    rows = store.list_reads(st.name)
    truth = {r["case_id"]: r["label"] for r in store.list_case_truth(list(st.case_ids))}
    originals = {r["assignment_id"]: r for r in rows if r["supersedes"] is None}
    out = []
    for r in rows:
        if r["submitted_at"] is None or r["superseded_by"] is not None:
            continue
        o = originals.get(r["assignment_id"], r)
        label = truth.get(r["case_id"], "unknown")
        out.append({
            "reader": r["reader"], "arm": r["arm"], "session_index": int(r["session_index"]),
            "position": int(r["position"]), "case_id": r["case_id"], "label": label,
            "positive": 1.0 if label == "malignant" else 0.0 if label in ("normal", "benign") else math.nan,
            "birads": r["birads"], "malignancy": r["malignancy"], "confidence": r["confidence"],
            "helpfulness": r["helpfulness"], "click_image_id": r["click_image_id"],
            "seconds": (o["submitted_at"] - o["opened_at"]).total_seconds() if o["submitted_at"] else math.nan,
            "seconds_to_first_drawing": ((o["first_drawing_at"] - o["opened_at"]).total_seconds()
                                         if o["first_drawing_at"] else math.nan),
            "corrected": r["supersedes"] is not None,
        })
    cols = ["reader", "arm", "session_index", "position", "case_id", "label", "positive", "birads", "malignancy",
            "confidence", "helpfulness", "click_image_id", "seconds", "seconds_to_first_drawing", "corrected"]
    return pd.DataFrame(out, columns=cols)


def compute_progress(store, study: str | Study) -> list[dict]:
    """Per reader and arm: session, cases assigned, opened, submitted, median seconds per case,
    questionnaire done."""
    st = study if isinstance(study, Study) else load_study(store, study)
    assigned = store.list_assignments(st.name)
    reads = [r for r in store.list_reads(st.name) if r["supersedes"] is None]
    qs = {(q["reader"], q["session_index"]) for q in store.list_questionnaires(st.name)}
    out = []
    keys = sorted({(a["reader"], a["session_index"], a["arm"]) for a in assigned},
                  key=lambda k: (st.readers.index(k[0]) if k[0] in st.readers else 0, k[1]))
    for reader, si, arm in keys:
        mine = [r for r in reads if r["reader"] == reader and r["arm"] == arm]
        secs = [(r["submitted_at"] - r["opened_at"]).total_seconds() for r in mine if r["submitted_at"]]
        out.append({"reader": reader, "arm": arm, "session_index": si,
                    "assigned": sum(1 for a in assigned if a["reader"] == reader and a["arm"] == arm),
                    "opened": len(mine), "submitted": len(secs),
                    "median_seconds_per_case": float(np.median(secs)) if secs else None,
                    "questionnaire_done": (reader, si) in qs})
    return out


# ----------------------------------------------------------------------------- statistics
def _auroc_or_nan(labels, scores) -> float:
    y = np.asarray(labels)
    if y.size == 0 or y.all() or not y.any():
        return math.nan
    return compute_auroc(y, scores)


def reader_auroc(reads: pd.DataFrame) -> dict[str, dict[str, float]]:
    """arm -> reader -> AUROC of the probability of malignancy (cases with known truth)."""
    df = reads.dropna(subset=["positive", "malignancy"])
    out: dict[str, dict[str, float]] = {}
    for (arm, reader), g in df.groupby(["arm", "reader"], sort=False):
        out.setdefault(arm, {})[reader] = _auroc_or_nan(g["positive"].to_numpy(), g["malignancy"].to_numpy())
    return out


def _crossed(reads: pd.DataFrame, arms: list[str], readers: list[str]):
    """(scores (A, R, C), positive (C,), case ids) over the cases every reader read in every arm."""
    df = reads.dropna(subset=["positive", "malignancy"])
    df = df[df["arm"].isin(arms) & df["reader"].isin(readers)]
    counts = df.groupby("case_id").size()
    cases = sorted(counts[counts == len(arms) * len(readers)].index)
    if not cases:
        return np.zeros((len(arms), len(readers), 0)), np.zeros(0), []
    df = df[df["case_id"].isin(cases)]
    piv = df.pivot_table(index=["arm", "reader"], columns="case_id", values="malignancy", aggfunc="first")
    scores = np.stack([np.stack([piv.loc[(a, r), cases].to_numpy(dtype=float) for r in readers]) for a in arms])
    pos = df.drop_duplicates("case_id").set_index("case_id").loc[cases, "positive"].to_numpy(dtype=float)
    return scores, pos, cases


def mrmc_auroc(reads: pd.DataFrame, arms: list[str], readers: list[str], *, n_boot: int = N_BOOT,
               seed: int = 0) -> dict:
    """Reader-averaged AUROC per arm and each arm's difference from ``arms[0]``, with two-way
    bootstrap 95 % CIs (see the module docstring). Returns {"by_arm": {arm: {"auroc", "ci95"}},
    "differences": [{"arm", "reference", "difference", "ci95"}], "n_cases", "n_readers", "n_boot"}."""
    scores, pos, cases = _crossed(reads, arms, readers)  # (A, R, C), (C,)
    n_a, n_r, n_c = scores.shape
    empty = {"by_arm": {a: {"auroc": None, "ci95": None} for a in arms}, "differences": [], "n_cases": n_c,
             "n_readers": n_r, "n_boot": 0, "method": METHOD}
    if n_c == 0 or pos.all() or not pos.any():
        return empty
    point = np.array([[compute_auroc(pos, scores[a, r]) for r in range(n_r)] for a in range(n_a)])  # (A, R)
    rng = np.random.default_rng(seed)
    pos_idx, neg_idx = np.flatnonzero(pos == 1), np.flatnonzero(pos == 0)
    boot = np.empty((n_boot, n_a))  # reader-averaged AUROC per arm, per replicate
    for b in range(n_boot):
        rs = rng.integers(0, n_r, n_r)
        cs = np.concatenate([rng.choice(pos_idx, pos_idx.size), rng.choice(neg_idx, neg_idx.size)])
        y = pos[cs]
        uniq, counts = np.unique(rs, return_counts=True)  # each distinct reader once, weighted
        for a in range(n_a):
            aucs = np.array([compute_auroc(y, scores[a, r, cs]) for r in uniq])
            boot[b, a] = float((aucs * counts).sum() / n_r)
    by_arm = {}
    for i, a in enumerate(arms):
        lo, hi = np.percentile(boot[:, i], [2.5, 97.5])
        by_arm[a] = {"auroc": float(point[i].mean()), "ci95": [float(lo), float(hi)]}
    diffs = []
    for i in range(1, n_a):
        d = boot[:, i] - boot[:, 0]
        lo, hi = np.percentile(d, [2.5, 97.5])
        diffs.append({"arm": arms[i], "reference": arms[0], "difference": float(point[i].mean() - point[0].mean()),
                      "ci95": [float(lo), float(hi)]})
    return {"by_arm": by_arm, "differences": diffs, "n_cases": n_c, "n_readers": n_r, "n_boot": n_boot,
            "method": METHOD}


def sensitivity_specificity(reads: pd.DataFrame, threshold: int = BIRADS_POSITIVE) -> dict:
    """arm -> {"pooled": {...}, "readers": {reader: {...}}} with sensitivity and specificity when
    BI-RADS >= ``threshold`` is called positive (None where a class is missing)."""
    df = reads.dropna(subset=["positive", "birads"])
    out: dict = {}

    def one(g):
        y = g["positive"].to_numpy()
        if y.all() or not y.any():
            return None
        r = apply_threshold(y, g["birads"].to_numpy(dtype=float), float(threshold))
        return {"sensitivity": r["sensitivity"], "specificity": r["specificity"], "n": int(len(g))}

    for arm, g in df.groupby("arm", sort=False):
        out[arm] = {"pooled": one(g), "readers": {r: one(gr) for r, gr in g.groupby("reader", sort=False)}}
    return out


def birads_agreement(reads: pd.DataFrame) -> dict[str, dict]:
    """arm -> {"fleiss_kappa", "krippendorff_alpha", "n_cases", "n_readers"} on BI-RADS (0-6).

    Fleiss' kappa uses the cases every reader rated; Krippendorff's alpha (ordinal) uses every
    rating (missing ones allowed). NaN when undefined (e.g. one category only)."""
    out = {}
    df = reads.dropna(subset=["birads"])
    for arm, g in df.groupby("arm", sort=False):
        wide = g.pivot_table(index="reader", columns="case_id", values="birads", aggfunc="first")  # (R, C)
        full = wide.dropna(axis=1)
        kappa = math.nan
        if full.shape[0] >= 2 and full.shape[1] >= 1:
            table, _ = aggregate_raters(full.to_numpy(dtype=int).T, n_cat=7)  # (C, 7) counts
            with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                kappa = float(fleiss_kappa(table, method="fleiss"))
        alpha = math.nan
        if wide.shape[0] >= 2:
            try:
                alpha = float(krippendorff.alpha(reliability_data=wide.to_numpy(dtype=float),
                                                 level_of_measurement="ordinal", value_domain=list(range(7))))
            except (ValueError, ZeroDivisionError):
                alpha = math.nan
        out[arm] = {"fleiss_kappa": kappa, "krippendorff_alpha": alpha, "n_cases": int(full.shape[1]),
                    "n_readers": int(wide.shape[0])}
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two bool masks of one shape (NaN when both are empty)."""
    a, b = np.asarray(a, bool).ravel(), np.asarray(b, bool).ravel()
    if not a.any() and not b.any():
        return math.nan
    return float(1.0 - dice_dissimilarity(a, b))


def drawing_dice(drawings: list[dict]) -> list[dict]:
    """Pairwise Dice between readers' drawings of one concept on one image in one arm.

    ``drawings``: rows of ``store.list_study_annotations`` (patch_x0, patch_y0, patch_size, mask_png,
    reader, arm, image_id, concept). Each reader's drawings of a concept on an image are united on a
    canvas in model-space pixels. Returns one row per reader pair: arm, image_id, concept, reader_a,
    reader_b, dice."""
    groups: dict[tuple, list[dict]] = {}
    for d in drawings:
        groups.setdefault((d["arm"], d["image_id"], d["concept"]), []).append(d)
    out = []
    for (arm, image_id, concept), ds in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        readers = sorted({d["reader"] for d in ds})
        if len(readers) < 2:
            continue
        x0 = min(d["patch_x0"] for d in ds)
        y0 = min(d["patch_y0"] for d in ds)
        x1 = max(d["patch_x0"] + d["patch_size"] for d in ds)
        y1 = max(d["patch_y0"] + d["patch_size"] for d in ds)
        masks = {r: np.zeros((y1 - y0, x1 - x0), bool) for r in readers}  # (H, W) model pixels
        for d in ds:
            m = mask_from_png(d["mask_png"])
            s = d["patch_size"]
            oy, ox = d["patch_y0"] - y0, d["patch_x0"] - x0
            masks[d["reader"]][oy:oy + s, ox:ox + s] |= m[:s, :s]
        for ra, rb in combinations(readers, 2):
            out.append({"arm": arm, "image_id": image_id, "concept": concept, "reader_a": ra, "reader_b": rb,
                        "dice": dice(masks[ra], masks[rb])})
    return out


def _summary(values) -> dict:
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return {"n": 0, "mean": None, "median": None, "sd": None}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(v.median()),
            "sd": float(v.std(ddof=1)) if v.size > 1 else None}


# ----------------------------------------------------------------------------- all together
@dataclass
class StudyResults:
    """Everything ``compute_results`` found; ``to_dict()`` is JSON, the frames feed the figures."""

    study: str
    arms: list[str]
    readers: list[str]
    progress: list[dict]
    reader_auroc_by_arm: dict
    mrmc: dict
    sens_spec: dict
    agreement: dict
    dice_pairs: list[dict]
    ratings: dict
    reads: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    questionnaires: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    def to_dict(self) -> dict:
        first = self.mrmc["differences"][0] if self.mrmc["differences"] else None
        finite = [p["dice"] for p in self.dice_pairs if not math.isnan(p["dice"])]
        return _jsonable({
            "study": self.study, "arms": self.arms, "readers": self.readers, "progress": self.progress,
            "n_reads": int(len(self.reads)),
            "reader_auroc_by_arm": self.reader_auroc_by_arm,
            "mean_auroc_by_arm": self.mrmc["by_arm"],
            "auroc_difference": first["difference"] if first else None,
            "auroc_difference_arms": [first["arm"], first["reference"]] if first else None,
            "auroc_difference_ci95": first["ci95"] if first else None,
            "differences": self.mrmc["differences"],
            "auroc_method": self.mrmc.get("method", METHOD),
            "n_cases_crossed": self.mrmc["n_cases"], "n_boot": self.mrmc["n_boot"],
            "sensitivity_specificity_birads4": self.sens_spec,
            "fleiss_kappa": {a: v["fleiss_kappa"] for a, v in self.agreement.items()},
            "krippendorff_alpha": {a: v["krippendorff_alpha"] for a, v in self.agreement.items()},
            "agreement": self.agreement,
            "dice": {"pairs": self.dice_pairs, "mean": float(np.mean(finite)) if finite else None},
            "ratings": self.ratings,
        })


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def compute_results(store, study: str | Study, *, n_boot: int = N_BOOT, seed: int = 0) -> StudyResults:
    """Every statistic of a study (see the module docstring) from the store."""
    st = study if isinstance(study, Study) else load_study(store, study)
    reads = load_read_table(store, st)
    arms, readers = list(st.arm_names), list(st.readers)
    qs = pd.DataFrame(store.list_questionnaires(st.name),
                      columns=["study", "reader", "session_index", "arm", "sus_items", "sus_score", "trust_items",
                               "comment", "submitted_at"])
    ratings = {
        "confidence": {a: _summary(reads.loc[reads["arm"] == a, "confidence"]) for a in arms},
        "helpfulness": {a: _summary(reads.loc[reads["arm"] == a, "helpfulness"]) for a in arms},
        "seconds_per_case": {a: _summary(reads.loc[reads["arm"] == a, "seconds"]) for a in arms},
        "sus": {a: _summary(qs.loc[qs["arm"] == a, "sus_score"]) for a in arms},
        "trust": {a: {t: _summary([q.get(t) for q in qs.loc[qs["arm"] == a, "trust_items"]])
                      for t in st.definition.questionnaire.trust} for a in arms},
    }
    return StudyResults(
        study=st.name, arms=arms, readers=readers, progress=compute_progress(store, st),
        reader_auroc_by_arm=reader_auroc(reads), mrmc=mrmc_auroc(reads, arms, readers, n_boot=n_boot, seed=seed),
        sens_spec=sensitivity_specificity(reads), agreement=birads_agreement(reads),
        dice_pairs=drawing_dice(store.list_study_annotations(st.name)), ratings=ratings, reads=reads,
        questionnaires=qs)


# ----------------------------------------------------------------------------- figures
def results_figures(res: StudyResults) -> dict[str, go.Figure]:
    """Plotly figures: "auroc" (readers and the mean with its CI per arm), "progress",
    "confidence", "helpfulness", "seconds" (time per case), "sus"."""
    figs: dict[str, go.Figure] = {}
    f = go.Figure()
    for reader in res.readers:
        xs = [a for a in res.arms if reader in res.reader_auroc_by_arm.get(a, {})]
        f.add_trace(go.Scatter(x=xs, y=[res.reader_auroc_by_arm[a][reader] for a in xs], mode="lines+markers",
                               name=reader, opacity=0.6))
    means = [(a, v) for a, v in res.mrmc["by_arm"].items() if v["auroc"] is not None]
    if means:
        f.add_trace(go.Scatter(
            x=[a for a, _ in means], y=[v["auroc"] for _, v in means], mode="markers", name="mean (95 % CI)",
            marker=dict(size=14, symbol="diamond", color="black"),
            error_y=dict(type="data", symmetric=False, array=[v["ci95"][1] - v["auroc"] for _, v in means],
                         arrayminus=[v["auroc"] - v["ci95"][0] for _, v in means])))
    f.update_layout(title="Reader AUROC by arm (probability of malignancy)", yaxis=dict(range=[0, 1.02]),
                    xaxis_title="arm", yaxis_title="AUROC")
    figs["auroc"] = f
    prog = pd.DataFrame(res.progress)
    f = go.Figure()
    if not prog.empty:
        for arm, g in prog.groupby("arm", sort=False):
            f.add_trace(go.Bar(x=g["reader"], y=g["submitted"], name=arm))
    f.update_layout(title="Cases submitted per reader and arm", barmode="group", yaxis_title="cases")
    figs["progress"] = f
    for key, title, frame, col in (("confidence", "Confidence (1-5)", res.reads, "confidence"),
                                   ("helpfulness", "'The explanation helped me' (1-5)", res.reads, "helpfulness"),
                                   ("seconds", "Time per case (s)", res.reads, "seconds"),
                                   ("sus", "System Usability Scale (0-100)", res.questionnaires, "sus_score")):
        f = go.Figure()
        for arm in res.arms:
            vals = frame.loc[frame["arm"] == arm, col].dropna() if not frame.empty else []
            if len(vals):
                f.add_trace(go.Box(y=list(vals), name=arm, boxpoints="all", jitter=0.4))
        f.update_layout(title=title, showlegend=False)
        figs[key] = f
    return figs

"""Table rows of a concept report: one row per (image, concept), what a batch over a data set keeps.

A row holds the image's prediction and, for the concept, its share of the attribution mass, its
area, peak probability, the exact logit part and the TCAV score where a run exists; the
probe's background is the row ``concept = "unexplained"`` (share only). ``report_rows`` is the one
conversion: a batch of reports and a single image's report give the same rows.
"""
from __future__ import annotations

from dashboard.engine.report import ConceptReport

__all__ = ["ROW_COLUMNS", "UNEXPLAINED", "report_rows"]

UNEXPLAINED = "unexplained"
ROW_COLUMNS = ("image_id", "case_id", "truth", "model_card", "weights_sha", "probe_version", "target_name",
               "probability", "logit", "concept", "attribution_share", "area_mm2", "expected_area_mm2",
               "peak_probability", "logit_part", "tcav_score", "tcav_p_value", "tcav_significant", "probe_auroc")


def _f(v) -> float | None:
    return None if v is None else float(v)


def report_rows(rep: ConceptReport, *, case_id: str | None = None, truth: str | None = None) -> list[dict]:
    """One dict per concept of the report (``ROW_COLUMNS``), then the unexplained share."""
    head = {"image_id": rep.image_id, "case_id": case_id, "truth": truth, "model_card": rep.model_card,
            "weights_sha": rep.weights_sha, "probe_version": rep.probe_version, "target_name": rep.target_name,
            "probability": float(rep.probability), "logit": float(rep.logit)}
    rows = [{**head, "concept": c.concept, "attribution_share": _f(c.attribution_share), "area_mm2": _f(c.area_mm2),
             "expected_area_mm2": _f(c.expected_area_mm2), "peak_probability": _f(c.peak_probability),
             "logit_part": _f(c.logit_part), "tcav_score": _f(c.tcav_score), "tcav_p_value": _f(c.tcav_p_value),
             "tcav_significant": None if c.tcav_significant is None else bool(c.tcav_significant),
             "probe_auroc": _f(c.probe_auroc)} for c in rep.concepts]
    rows.append({**head, **{k: None for k in ROW_COLUMNS if k not in head}, "concept": UNEXPLAINED,
                 "attribution_share": float(rep.unexplained_share)})
    return [{k: r[k] for k in ROW_COLUMNS} for r in rows]

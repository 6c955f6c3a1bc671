"""The Report's lead: a few plain sentences a radiologist reads before any table.

What the model says about the image, which concepts carry its evidence, where they are on the
image (from the breast's own geometry: the half above or below the nipple line, the depth third
from the nipple to the chest wall, the distance from the nipple), and how sure we are (the probe's
validation on held-out images, TCAV significance, whether enough drawings exist).

Geometry, in model space (chest wall on the left, ``imaging.Frame``): the nipple is taken as the
breast's point farthest from the chest wall (the phantom's recorded nipple agrees with it to a few
pixels). One view gives one axis only: on an MLO the half above the nipple line is *upper*; on a CC
the half above is *outer* (lateral) when the CC is hung with the lateral side up, the usual
convention; a clock-face position needs both views and is not given.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dashboard.ui.text import escape_markdown

#: Concepts named in the lead (by attribution share).
LEAD_CONCEPTS = 3
#: Probe validation AUROC (held-out images) called good / fair.
GOOD_AUROC, FAIR_AUROC = 0.85, 0.7
#: Fewer drawings of a concept than this: "draw more".
ENOUGH_DRAWINGS = 5
#: A concept is "present" where its probability is at least this (the Report's concept map level).
LEVEL = 0.5
#: Within this fraction of the breast's height of the nipple line: "at the nipple line".
CENTRAL_BAND = 0.08


@dataclass
class Location:
    """Where a concept's region lies on one view. ``x``, ``y`` model pixels of its weighted centre."""

    x: float
    y: float
    half: str            # "upper" | "lower" | "outer" | "inner" | "central"
    depth: str           # "anterior" | "middle" | "posterior" third
    nipple_cm: float     # distance from the nipple, cm

    def phrase(self) -> str:
        half = "at the nipple line" if self.half == "central" else f"in the {self.half} half"
        return f"{half}, {self.depth} third, about {self.nipple_cm:.1f} cm from the nipple"


@dataclass
class Lead:
    """The Report's first lines: a headline and sentences (markdown, concept names in bold)."""

    headline: str
    sentences: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)


def find_nipple(breast: np.ndarray) -> tuple[float, float] | None:
    """(x, y) model pixels of the breast's point farthest from the chest wall (x = 0), or None."""
    cols = np.nonzero(breast.any(axis=0))[0]
    if not len(cols):
        return None
    x = int(cols.max())
    ys = np.nonzero(breast[:, max(0, x - 2):x + 1].any(axis=1))[0]
    return float(x), float(np.mean(ys))


def locate(prob: np.ndarray, breast: np.ndarray, view: str, spacing_mm: float,
           level: float = LEVEL) -> Location | None:
    """Where a (H, W) probability map's region (>= level inside the breast; else its peak) lies."""
    prob = np.asarray(prob, dtype=np.float32)
    nipple = find_nipple(breast)
    if nipple is None or not prob.size:
        return None
    region = (prob >= level) & breast
    if region.any():
        ys, xs = np.nonzero(region)
        w = prob[ys, xs]
        cx, cy = float(np.average(xs, weights=w)), float(np.average(ys, weights=w))
    else:
        cy, cx = (float(v) for v in np.unravel_index(int(np.argmax(np.where(breast, prob, -1))), prob.shape))
    nx, ny = nipple
    rows = np.nonzero(breast.any(axis=1))[0]
    height = float(rows.max() - rows.min() + 1) if len(rows) else float(prob.shape[0])
    if abs(cy - ny) <= CENTRAL_BAND * height:
        half = "central"
    elif (view or "").upper() == "CC":
        half = "outer" if cy < ny else "inner"
    else:
        half = "upper" if cy < ny else "lower"
    depth_frac = (nx - cx) / max(nx, 1.0)  # 0 at the nipple, 1 at the chest wall
    depth = "anterior" if depth_frac < 1 / 3 else "middle" if depth_frac < 2 / 3 else "posterior"
    cm = float(np.hypot(cx - nx, cy - ny)) * spacing_mm / 10.0
    return Location(cx, cy, half, depth, cm)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * float(v):.0f} %"


def sureness(c) -> str:
    """How far one concept's evidence can be trusted, in words."""
    parts = []
    if c.probe_auroc is None or c.probe_auroc != c.probe_auroc:
        parts.append("its probe is not validated yet (too few drawings on distinct images)")
    else:
        grade = "well" if c.probe_auroc >= GOOD_AUROC else "fairly" if c.probe_auroc >= FAIR_AUROC else "poorly"
        parts.append(f"its probe finds it {grade} on held-out images (AUROC {c.probe_auroc:.2f})")
    if c.tcav_significant is None:
        parts.append("TCAV not run")
    elif c.tcav_significant:
        parts.append("TCAV says the model uses it" + (f" (p = {c.tcav_p_value:.3f})" if c.tcav_p_value is not None else ""))
    else:
        parts.append("TCAV finds no significant use of it")
    few = c.n_drawings < ENOUGH_DRAWINGS
    parts.append(f"{c.n_drawings} drawing{'s' if c.n_drawings != 1 else ''} on {c.n_images} image"
                 f"{'s' if c.n_images != 1 else ''}" + (": draw more to be sure" if few else ""))
    return "; ".join(parts)


def lead_of(rep, row: dict, breast: np.ndarray, spacing_mm: float, threshold: float, *,
            readers: list[str] | None = None, demo_reader: str = "") -> Lead:
    """The lead of an image report (``engine.report.ConceptReport``, model space) of store image ``row``.

    breast (H, W) bool in model space; threshold: the model's operating point on P(target)."""
    side = {"L": "left", "R": "right"}.get((row.get("laterality") or "").upper(), "")
    view = (row.get("view") or "").upper()
    p = float(rep.probability)
    call = "above" if p >= threshold else "below"
    headline = (f"The model gives this {side} {view} image P({rep.target_name}) = {p:.2f}, {call} its operating "
                f"point of {threshold:.2f}.").replace("  ", " ")
    lead = Lead(headline)
    ranked = sorted((c for c in rep.concepts if (c.attribution_share or 0) > 0),
                    key=lambda c: -(c.attribution_share or 0))[:LEAD_CONCEPTS]
    if not ranked:
        lead.sentences.append("No labelled concept carries a share of the evidence on this image.")
    else:
        names = [f"**{escape_markdown(c.concept)}** ({_pct(c.attribution_share)})" for c in ranked]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        lead.sentences.append(f"Most of the evidence comes from {joined}; {_pct(rep.unexplained_share)} is not "
                              "explained by any labelled concept.")
    for c in ranked:
        where = locate(c.probe_map, breast, view, spacing_mm) if c.probe_map is not None else None
        if where is None:
            place = "not located (no map)"
        elif c.area_mm2:
            place = f"{where.phrase()} ({c.area_mm2:.0f} mm² with P ≥ {LEVEL:g})"
        else:
            place = (f"nowhere above P {LEVEL:g}; its strongest spot (P {c.peak_probability or 0:.2f}) is "
                     f"{where.phrase()}")
        lead.sentences.append(f"**{escape_markdown(c.concept)}**: {place}. How sure: {sureness(c)}.")
    if demo_reader and readers and set(readers) == {demo_reader}:
        lead.cautions.append(f"The probe was trained on the demo's seeded drawings ('{demo_reader}', the phantom's "
                             "truth), not on a reader's: remove them on Model and data to start your own.")
    return lead

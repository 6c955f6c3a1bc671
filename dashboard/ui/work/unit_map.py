"""The plotly map of the concept layer's units (PCA of their activation profiles), coloured by the
concept each unit is labeled with; the Label and Units pages draw it."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from dashboard.ui.context import AppContext
from dashboard.ui.types import TAU

#: How many of the matched units the unit map writes the number of.
LABELLED_UNITS = 12
#: Colour of a concept the store does not know any more.
DEFAULT_COLOUR = "#00bcd4"


def unit_colours(ctx: AppContext, labels: dict[int, str]) -> dict[str, str]:
    """{concept: colour} of the concepts in ``labels`` ({unit: concept})."""
    colours = {c["name"]: c["colour"] for c in ctx.store.list_concepts()}
    return {c: colours.get(c, DEFAULT_COLOUR) for c in set(labels.values())}


def _highlight_trace(xy: np.ndarray, highlight: dict[int, float]):
    """The matched units drawn large, sized by IoU, the best few numbered."""
    hu = np.array(sorted(highlight, key=lambda u: -highlight[u]), dtype=int)
    return go.Scatter(
        x=xy[hu, 0], y=xy[hu, 1], mode="markers+text", name=f"IoU > {TAU:g}", customdata=hu,
        # numbers on the best few only: hundreds of labels would hide the map
        text=[f"{u}" if i < LABELLED_UNITS else "" for i, u in enumerate(hu)], textposition="top center",
        textfont=dict(size=10),
        marker=dict(size=[10 + 30 * highlight[int(u)] for u in hu], color="rgba(255,213,79,0.25)",
                    line=dict(width=2, color="#ffd54f")),
        hovertext=[f"IoU {highlight[int(u)]:.2f}" for u in hu],
        hovertemplate="unit %{customdata}<br>%{hovertext}<extra>matched</extra>")


def unit_scatter(ctx: AppContext, stats, labels: dict[int, str], *, highlight: dict[int, float] | None = None,
                 selected: int | None = None, title: str = ""):
    """Plotly map of the layer's units (PCA of their activation profiles), coloured by concept.

    labels {unit: concept}; highlight {unit: IoU} draws those units large with their IoU;
    selected gets a ring. Unlabeled units are small grey dots.
    """
    xy = np.asarray(stats.unit_xy, dtype=float)  # (C, 2)
    n = len(xy)
    units = np.arange(n)
    colours = unit_colours(ctx, labels)
    fig = go.Figure()
    unl = np.array([u not in labels for u in units])
    fig.add_trace(go.Scattergl(
        x=xy[unl, 0], y=xy[unl, 1], mode="markers", name="unlabeled", customdata=units[unl],
        marker=dict(size=5, color="rgba(160,160,160,0.45)"),
        hovertemplate="unit %{customdata}<extra>unlabeled</extra>"))
    for concept in sorted(set(labels.values())):
        sel = np.array([labels.get(int(u)) == concept for u in units])
        fig.add_trace(go.Scattergl(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=concept, customdata=units[sel],
            marker=dict(size=8, color=colours[concept], line=dict(width=0.5, color="#111")),
            hovertemplate="unit %{customdata}<extra>" + concept + "</extra>"))
    if highlight:
        fig.add_trace(_highlight_trace(xy, highlight))
    if selected is not None and 0 <= selected < n:
        fig.add_trace(go.Scatter(
            x=[xy[selected, 0]], y=[xy[selected, 1]], mode="markers", name=f"unit {selected}",
            marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(width=3, color="#4fc3f7")),
            hoverinfo="skip"))
    var = getattr(stats, "unit_xy_var", [0, 0])
    fig.update_layout(
        title=title or f"Units of {stats.layer} ({n})", height=460, margin=dict(l=10, r=10, t=40, b=10),
        xaxis_title=f"PC 1 ({100 * float(var[0]):.0f} %)", yaxis_title=f"PC 2 ({100 * float(var[1]):.0f} %)",
        legend=dict(orientation="h", y=-0.18), template="plotly_dark")
    return fig

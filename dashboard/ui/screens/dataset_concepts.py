"""Concepts across images: which concepts carry the evidence over a whole data set, per truth label.

Reads a finished batch report (``python -m dashboard.ui.scale report``: every image's concept report
as Parquet, ``ui.work.batch_reports``) through DuckDB (``data.report_tables``): per truth label and
concept, the mean share of the attribution mass, the mean area and in how many images the concept
carries the largest share.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import plotly.graph_objects as go

from dashboard.data import report_tables
from dashboard.engine.batch_report import UNEXPLAINED
from dashboard.ui.context import AppContext
from dashboard.ui.work.batch_reports import batch_root

COMMAND = "python -m dashboard.ui.scale report"


@dataclass
class DatasetConceptsView:
    runs: list[dict]                      # finished batch runs, newest first (manifest + path)
    run: dict | None                      # the one shown
    summary: list[dict] = field(default_factory=list)   # per truth label and concept
    share_figure: go.Figure | None = None
    area_figure: go.Figure | None = None
    n_images: int = 0
    command: str = COMMAND


def run_label(run: dict) -> str:
    return (f"{run.get('model_card', '?')} · probe v{run.get('probe_version', '?')} · "
            f"{run.get('n_images', '?')} images · {run.get('finished', '')} · {run['key'][:8]}")


def load_dataset_concepts(ctx: AppContext, run_key: str | None = None) -> DatasetConceptsView:
    """The chosen batch run (default: the newest of the card in use, else the newest) and its summary."""
    runs = report_tables.list_runs(batch_root(ctx.settings))
    if not runs:
        return DatasetConceptsView(runs=[], run=None)
    pick = next((r for r in runs if r["key"] == run_key), None) or next(
        (r for r in runs if r.get("model_card") == ctx.card_name), runs[0])
    summary = report_tables.concept_summary(pick["path"])
    return DatasetConceptsView(runs=runs, run=pick, summary=summary, n_images=report_tables.image_count(pick["path"]),
                               share_figure=_bars(summary, "mean_share", "Mean share of the attribution", True),
                               area_figure=_bars(summary, "mean_area_mm2", "Mean area (mm²)", False))


def _bars(summary: list[dict], column: str, title: str, with_unexplained: bool) -> go.Figure:
    """Grouped bars: one group per concept, one bar per truth label."""
    rows = [r for r in summary if with_unexplained or r["concept"] != UNEXPLAINED]
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    fig = go.Figure()
    for label in sorted({r["truth"] for r in rows}):
        by = {r["concept"]: r for r in rows if r["truth"] == label}
        fig.add_bar(name=str(label), x=concepts, y=[(by[c][column] if c in by else None) for c in concepts],
                    customdata=[(by[c]["images"] if c in by else 0) for c in concepts],
                    hovertemplate="%{x}: %{y:.3f} (%{customdata} images)<extra>" + str(label) + "</extra>")
    fig.update_layout(barmode="group", title=title, legend_title_text="truth", height=360,
                      margin=dict(l=40, r=10, t=40, b=40))
    return fig

"""The scale path on a real store: dataset statistics of the store's breast tiles on 2 local Ray
workers equal the in-process ones; batch concept reports (Parquet, read with DuckDB) hold exactly the
rows of each image's single report, resume, and feed the dataset-level concept summary."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.data import report_tables
from dashboard.data.store import Store
from dashboard.engine.batch_report import ROW_COLUMNS, report_rows
from dashboard.engine.distributed import RayEngine
from dashboard.settings import PROJECT_ROOT
from dashboard.testing import app_data
from dashboard.ui import scale
from dashboard.ui.caches import Caches
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import label as lb
from dashboard.ui.screens import report as rp
from dashboard.ui.types import PatchRef
from dashboard.ui.work import batch_reports as br
from dashboard.ui.work import concepts as cx
from dashboard.ui.work.report_parts import engine_report

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "fabric"
FIELDS = ("thresholds", "mean", "top_values", "top_indices", "top_maps", "unit_xy", "unit_xy_var")


def _with_probe(ctx):
    """Statistics, two 'mass' drawings and probe v1, as the Report page tests make them."""
    cx.compute_stats(ctx, 120)
    rec = json.loads((FIX / "polygon_448.json").read_text())
    for image_id in ("SYN-0001-LCC", "SYN-0001-RCC"):
        view = lb.load_patch(ctx, PatchRef(image_id, 20, 70, 64))
        m = lb.match(ctx, view, lb.drawings_from_canvas(view, rec["json"], rec["fit"]))
        lb.save(ctx, view, m, "mass", "Dr Test")
    assert rp.retrain(ctx, "Dr Test").version == 1
    return ctx


def test_store_stats_on_two_ray_workers_equal_in_process(ctx, local_ray):
    here = cx.compute_stats(ctx, 120)
    kept = Path(here.path).with_name("in-process")
    shutil.move(here.path, kept)  # the Ray run must compute, not find the cached numbers
    seen = []
    there = cx.compute_stats(ctx, 120, progress=lambda d, n, msg: seen.append((d, n)), engine=RayEngine(workers=2))
    assert there.key == here.key and there.n_patches == here.n_patches > 16
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(there, f), getattr(here, f), err_msg=f)
    assert seen[-1] == (here.n_patches, here.n_patches)
    assert not (Path(there.path) / "shards").exists() or not any((Path(there.path) / "shards").iterdir())


def test_batch_report_rows_equal_each_single_report_and_resume(ctx):
    ctx = _with_probe(ctx)
    ids = ["SYN-0001-RCC", "SYN-0001-LCC", "SYN-0002-LCC"]
    plan = br.plan_batch(ctx, ids, images_per_shard=2)
    assert len(plan.shards) == 2 and plan.todo == (0, 1)
    assert br.run_batch(ctx, plan) == 2
    br.finish_batch(plan)
    assert report_tables.image_count(plan.path) == 3
    # a fresh context (no cached reports): the single-image report of each image gives the same rows
    fresh = build_context(ctx.settings, ctx.store, load_model(app_data.TINY_CARD, ctx.settings.user_cards_dir, "cpu"),
                          Caches())
    info = rp.probe_info(fresh)
    for image_id in ids:
        row = fresh.store.get_image(image_id)
        single = report_rows(engine_report(fresh, info, row)[0], case_id=row["case_id"],
                             truth=fresh.store.get_case(row["case_id"])["label"])
        assert report_tables.read_rows(plan.path, image_id) == single
    assert {r["concept"] for r in single} == {"mass", "unexplained"}
    # a rerun finds every part done; a part lost is the only one computed again
    again = br.plan_batch(ctx, ids, images_per_shard=2)
    assert again.key == plan.key and again.todo == ()
    (plan.path / "part-00001.parquet").unlink()
    again = br.plan_batch(ctx, ids, images_per_shard=2)
    assert again.todo == (1,) and br.run_batch(ctx, again) == 1
    assert report_tables.image_count(plan.path) == 3
    summary = report_tables.concept_summary(plan.path)
    by = {(r["truth"], r["concept"]): r for r in summary}
    assert by[("malignant", "mass")]["images"] == 2 and by[("normal", "mass")]["images"] == 1
    shares = [r["attribution_share"] for r in report_tables.read_rows(plan.path) if r["image_id"] == ids[0]]
    assert sum(shares) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_batch_report_command_on_ray_equals_in_process(ctx, monkeypatch, capsys, ray_lib):
    ctx = _with_probe(ctx)
    plan = br.plan_batch(ctx, None)
    br.run_batch(ctx, plan)
    here = report_tables.read_rows(plan.path)
    shutil.rmtree(plan.path)
    ctx.store.close()
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", app_data.TINY_CARD)
    monkeypatch.setenv("CONCEPTLENS_DEVICE", "cpu")
    assert scale.main(["report", "--engine", "ray", "--workers", "2"]) == 0
    assert "Parquet parts" in capsys.readouterr().out
    assert report_tables.read_rows(plan.path) == here
    assert report_tables.list_runs(br.batch_root(ctx.settings))[0]["key"] == plan.key


def _fake_run(settings, key: str, rows: list[dict]) -> Path:
    """A finished batch run written straight from rows (no model): what the page reads."""
    path = br.batch_root(settings) / key
    report_tables.write_part(path, 0, rows, ROW_COLUMNS, key)
    report_tables.write_manifest(path, {"key": key, "model_card": app_data.TINY_CARD, "probe_version": 3,
                                        "n_images": 3, "n_parts": 1, "finished": "2026-12-03T20:00:00+00:00"})
    return path


def _row(image_id, truth, concept, share, area=None):
    return {"image_id": image_id, "case_id": "c", "truth": truth, "concept": concept, "attribution_share": share,
            "area_mm2": area, "probability": 0.5}


def test_dataset_concepts_page_summarises_a_batch_run_per_truth_label(settings, monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", "no-such-card")  # the page needs no model
    Store(settings.db_path, settings.journal_dir).close()
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/dataset_concepts.py")
    at.run()
    assert not at.exception
    assert any("dashboard.ui.scale report" in i.value for i in at.info)
    _fake_run(settings, "run1", [
        _row("a", "malignant", "mass", 0.7, 12.0), _row("a", "malignant", "unexplained", 0.3),
        _row("b", "malignant", "mass", 0.1, 2.0), _row("b", "malignant", "calcification", 0.5, 1.0),
        _row("b", "malignant", "unexplained", 0.4),
        _row("c", "normal", "mass", 0.2, 0.0), _row("c", "normal", "unexplained", 0.8)])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    got = {(r["truth"], r["concept"]): r for r in table.to_dict("records")}
    assert got[("malignant", "mass")]["images"] == 2 and got[("malignant", "mass")]["mean share"] == pytest.approx(0.4)
    assert got[("malignant", "mass")]["images top"] == 1 and got[("malignant", "calcification")]["images top"] == 1
    assert got[("normal", "mass")]["images"] == 1 and got[("normal", "unexplained")]["mean share"] == pytest.approx(0.8)
    assert "3 images" in " ".join(c.value for c in at.caption)
    charts = at.get("plotly_chart")
    assert len(charts) == 2 and "malignant" in charts[0].proto.spec and "normal" in charts[0].proto.spec

"""The scale path on Ray: dataset statistics over shards on 2 local workers merge to exactly the
in-process numbers; a worker killed mid-run is retried; a rerun resumes from the finished shards."""
from __future__ import annotations

import numpy as np
import pytest

from dashboard.engine.dissection import StatsConfig, compute_dataset_stats
from dashboard.engine.distributed import RayEngine
from dashboard.engine.shards import ArrayPatches, plan_shards
from dashboard.testing.engine_helpers import TinyCard, synthetic_patches, tiny_model
from dashboard.testing.scale_helpers import DyingPatches, TinyModelSource, loads

FIELDS = ("thresholds", "mean", "top_values", "top_indices", "top_maps", "unit_xy", "unit_xy_var")


@pytest.fixture(scope="module")
def model():
    return tiny_model("efficientnet_lite0", seed=0)


@pytest.fixture(scope="module")
def patches():
    return synthetic_patches(22, 96, seed=5)


def _same(a, b):
    """Every number equal, bit for bit (the key too when both name their data the same way)."""
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert (a.n_values, a.sample_rate, a.n_tied_at_max) == (b.n_values, b.sample_rate, b.n_tied_at_max)


def test_plan_shards_cut_at_batch_boundaries_and_cover_every_patch():
    plan = plan_shards([5, 7, 3, 9], batch_size=4, n_shards=3)
    assert [s.patch0 for s in plan] == [0, 8, 16] and sum(s.n_patches for s in plan) == 24
    assert all(s.patch0 % 4 == 0 for s in plan)
    assert plan[0].groups == (0, 1) and plan[1].groups == (1, 2, 3) and plan[2].groups == (3,)
    assert len(plan_shards([3], batch_size=4, n_shards=8)) == 1


@pytest.mark.parametrize("layer,max_buffer", [("blocks.5", 16_000_000), ("blocks.3", 300)])
def test_ray_stats_equal_in_process(local_ray, model, patches, tmp_path, layer, max_buffer):
    config = StatsConfig(cache_dir=tmp_path / "a", batch_size=4, top_k=5, quantile=0.99, max_buffer=max_buffer)
    here = compute_dataset_stats(model, TinyCard(), layer, patches, config)
    seen = []
    there = compute_dataset_stats(model, TinyCard(), layer, patches, StatsConfig(
        cache_dir=tmp_path / "b", batch_size=4, top_k=5, quantile=0.99, max_buffer=max_buffer),
        engine=RayEngine(workers=2, shards_per_worker=2), model_source=TinyModelSource(),
        progress=lambda d, n, msg: seen.append((d, n)))
    _same(here, there)
    assert here.key == there.key  # one cache entry, whichever engine computed it
    assert (max_buffer < 16_000_000) == (there.sample_rate < 1.0)
    assert seen[-1] == (22, 22) and all(d <= n for d, n in seen)


def test_killed_worker_is_retried_and_a_rerun_resumes(local_ray, model, patches, tmp_path):
    card, src = TinyCard(), ArrayPatches(patches, "set-22")
    ref = compute_dataset_stats(model, card, "blocks.5", patches, StatsConfig(cache_dir=tmp_path / "ref", batch_size=4))
    engine = RayEngine(workers=2, shards_per_worker=2, max_retries=2)
    marks = tmp_path / "marks"
    marks.mkdir()
    # shards: patches 0-7, 8-11, 12-15, 16-21. The 3rd fails for good (its error is raised once the
    # others have finished); the 2nd one's worker dies once (os._exit at patch 8) and Ray retries it
    with pytest.raises(Exception, match="fails on purpose"):
        compute_dataset_stats(model, card, "blocks.5", DyingPatches(src, str(marks), die_at=8, fail_at=13),
                              StatsConfig(cache_dir=tmp_path / "run", batch_size=4),
                              engine=engine, model_source=TinyModelSource())
    assert (marks / "died-8").exists() and loads(marks).count(8) == 2  # killed, then retried
    for p in marks.iterdir():
        p.unlink()
    resumed = compute_dataset_stats(model, card, "blocks.5", DyingPatches(src, str(marks)),
                                    StatsConfig(cache_dir=tmp_path / "run", batch_size=4),
                                    engine=engine, model_source=TinyModelSource())
    assert loads(marks) == [12]  # only the shard that had failed (patches 12-15) ran again
    _same(ref, resumed)

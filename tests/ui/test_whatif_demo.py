"""The random-direction control on the demo set: with the trained demo model and probe v1 from the
phantom's truth drawings, removing the concept the report ranks first moves P(lesion) on the report's
patch more than removing a random unit direction of the concept layer (the median of 16 seeded ones),
over the demo's abnormal images. ``bench/whatif_control.py`` prints the same figures on more cases."""
from __future__ import annotations

import numpy as np
import pytest

from dashboard.data import demo
from dashboard.data.store import Store
from dashboard.testing import e2e_data
from dashboard.testing.whatif_demo import control_figures, demo_context

pytestmark = pytest.mark.slow


# On these 4 demo cases the target holds (CI, 3 Dec 2026). On a larger sample it does not
# (bench/whatif_control.py, 8 cases of seed 11, 32 random directions, alpha 1): the concept the report ranks
# first (fibroglandular or vessel there) moves P(lesion) by 0.0002 on average against 0.0006 for a random
# unit direction, and its log-odds by 0.22 against 0.22; removing mass moves the log-odds by 1.01 and
# calcification by 0.72 (docs/evaluation.md, What if). This test keeps the small sample from regressing.
def test_removing_the_top_concept_moves_the_score_more_than_a_random_direction(tmp_path):
    data_dir = tmp_path / "data"
    settings = e2e_data._settings(data_dir)
    with Store(settings.db_path, settings.journal_dir) as store:
        demo.build_demo(settings, store, n_cases=e2e_data.N_CASES, seed=e2e_data.SEED, workers=1,
                        contact_sheet=False)
        ctx = demo_context(data_dir, store, stats_patches=96)
        figs = control_figures(ctx, n_random=16, seed=0)
    assert len(figs.rows) >= 2, "the demo cases should hold abnormal images"
    top = np.array([abs(r["dP top"]) for r in figs.rows])
    random_median = np.array([r["median |dP| random"] for r in figs.rows])
    assert top.mean() > random_median.mean(), figs.rows
    assert np.median(top - random_median) > 0, figs.rows
    assert figs.mean_abs_top > figs.mean_abs_random

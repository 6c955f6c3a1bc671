"""The demo's seeded drawings ('demo truth', dashboard.ui.warmup) never reach a reader study: a
probe trained on them is never the study's "latest", and pinning one is refused."""
from __future__ import annotations

import pytest

from dashboard.data.demo import DEMO_READER
from dashboard.study import Arm, create_study
from dashboard.study.errors import StudyDefinitionError
from tests.study.conftest import definition, make_cases, make_readers


def save_probe(store, readers) -> int:
    return store.save_probe(model_card="demo-lite0-synth", layer="blocks.5", concepts=["mass"], weights=b"w",
                            metrics={}, annotation_ids=[], readers=list(readers))


def test_latest_passes_over_a_probe_trained_on_demo_truth(store, settings):
    cases = make_cases(store, 3)
    readers = make_readers(store, 1)
    own = save_probe(store, ["Dr A"])
    save_probe(store, [DEMO_READER, "Dr A"])  # newer, but it saw the seeded drawings
    st = create_study(store, definition(readers, cases), actor="coord", settings=settings)
    assert st.probes["concepts"] == own


def test_latest_with_only_demo_truth_probes_is_no_probe(store, settings):
    cases = make_cases(store, 3)
    readers = make_readers(store, 1)
    save_probe(store, [DEMO_READER])
    with pytest.raises(StudyDefinitionError, match="no probe is trained"):
        create_study(store, definition(readers, cases), actor="coord", settings=settings)


def test_pinning_a_demo_truth_probe_is_refused(store, settings):
    cases = make_cases(store, 3)
    readers = make_readers(store, 1)
    v = save_probe(store, [DEMO_READER])
    arms = (Arm("concepts", shows=("concept_report",), probe=v),)
    with pytest.raises(StudyDefinitionError, match="demo's seeded drawings"):
        create_study(store, definition(readers, cases, arms=arms), actor="coord", settings=settings)

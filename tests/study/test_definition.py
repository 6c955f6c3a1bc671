"""Study definitions: the TOML file and the code path are checked alike, each error names its field."""
from __future__ import annotations

import dataclasses

import pytest

from dashboard.settings import PROJECT_ROOT
from dashboard.study import (
    Arm,
    Blinding,
    CaseSelection,
    StudyDefinition,
    StudyDefinitionError,
    create_study,
    definition_to_toml,
    load_definition,
    parse_definition,
    validate_study,
)
from tests.study.conftest import definition, make_cases, make_readers, save_probe

GOOD = """
name = "pilot"
title = "A pilot"
readers = ["reader1", "reader2"]

[cases]
ids = ["case000", "case001", "case002"]

[design]
seed = 5
washout_days = 14

[[arms]]
name = "score"
shows = ["score"]

[[arms]]
name = "concepts"
shows = ["score", "concept_report"]
probe = "latest"
"""


def test_a_good_file_parses_and_round_trips_through_toml():
    d = parse_definition(GOOD)
    assert d.name == "pilot" and d.readers == ("reader1", "reader2") and d.washout_days == 14
    assert d.arm("concepts").asks_helpfulness and not d.arm("score").asks_helpfulness
    assert d.blinding.truth and d.blinding.other_drawings  # blinded by default
    assert parse_definition(definition_to_toml(d)) == d


def test_the_demo_study_file_is_valid():
    d, text = load_definition(PROJECT_ROOT / "studies" / "demo-study.toml")
    assert len(d.readers) == 3 and len(d.arms) == 2 and d.cases.limit == 12 and d.cases.split == "test"
    assert "concept_report" in d.arms[1].shows and "concept_report" not in d.arms[0].shows


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace('readers = ["reader1", "reader2"]', 'readers = ["reader1", "reader1"]'), "readers"),
    (lambda t: t.replace('name = "concepts"', 'name = "score"'), "arms"),
    (lambda t: t.replace('probe = "latest"', 'probe = "newest"'), "arms[1].probe"),
    (lambda t: t.replace('probe = "latest"', ''), "arms[1]"),
    (lambda t: t.replace('shows = ["score"]\n', 'shows = ["score"]\nask_helpfulness = true\n'),
     "ask_helpfulness"),
    (lambda t: t.replace('shows = ["score"]\n', 'shows = ["score", "heatmap"]\n'), "arms[0]"),
    (lambda t: t.replace('washout_days = 14', 'washout_days = -1'), "design.washout_days"),
    (lambda t: t.replace('title = "A pilot"', 'titel = "A pilot"'), "titel"),
    (lambda t: t.replace('name = "pilot"', 'name = "Pilot Study"'), "name"),
    (lambda t: t.replace('ids = ["case000", "case001", "case002"]', 'ids = ["a"]\nsplit = "test"'), "cases"),
    (lambda t: t.replace('ids = ["case000", "case001", "case002"]', 'labels = ["cancer"]'), "cases.labels"),
    (lambda t: t.replace('[cases]\nids = ["case000", "case001", "case002"]', ''), "cases"),
    (lambda t: t.replace('seed = 5', 'seed = "five"'), "design.seed"),
    (lambda t: t + "\n[blinding]\ntruth = 1\n", "blinding.truth"),
    (lambda t: "arms = 3\n" + t.split("[[arms]]")[0], "arms: expected a list"),
    (lambda t: t.split("[[arms]]")[0], "arms: missing"),
])
def test_each_malformed_field_is_named(edit, field):
    with pytest.raises(StudyDefinitionError) as exc:
        parse_definition(edit(GOOD), source="pilot.toml")
    assert field in str(exc.value) and "pilot.toml" in str(exc.value)


def test_not_toml_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("name = \n[[arms")
    with pytest.raises(StudyDefinitionError, match="not valid TOML"):
        load_definition(p)
    with pytest.raises(StudyDefinitionError, match="Cannot read"):
        load_definition(tmp_path / "missing.toml")


def test_a_code_built_definition_is_checked_the_same_way(store, settings):
    cases = make_cases(store, 3)
    readers = make_readers(store, 2)
    bad = definition(readers, cases, arms=(Arm("score", shows=("score",), ask_helpfulness=True),))
    with pytest.raises(StudyDefinitionError, match="ask_helpfulness"):
        create_study(store, bad, actor="coord", settings=settings)
    assert store.list_study_rows() == []


def _messages(store, settings, defn) -> str:
    before = store.list_study_rows()
    with pytest.raises(StudyDefinitionError) as exc:
        create_study(store, defn, actor="coord", settings=settings)
    assert store.list_study_rows() == before  # nothing written
    return str(exc.value)


def test_store_checks_unknown_case_reader_without_account_and_probe(store, settings):
    cases = make_cases(store, 3)
    readers = make_readers(store, 1)
    msg = _messages(store, settings, definition(readers + ["ghost"], cases + ["nope"]))
    assert "cases.ids: unknown case id nope" in msg
    assert "readers: 'ghost' has no account" in msg
    assert "no probe is trained" in msg  # "latest" with no probe at all
    v = save_probe(store)
    arms = (Arm("concepts", shows=("concept_report",), probe=v + 5),)
    msg = _messages(store, settings, definition(readers, cases, arms=arms))
    assert f"no probe version {v + 5}" in msg and f"known: {v}" in msg
    msg = _messages(store, settings, dataclasses.replace(definition(readers, cases), model_card="no-such-card"))
    assert "model_card" in msg


def test_latest_is_resolved_and_recorded_and_optional_probe_warns(store, settings):
    cases = make_cases(store, 3)
    readers = make_readers(store, 1)
    arms = (Arm("concepts", shows=("score", "concept_report"), probe="latest", probe_optional=True),)
    st = create_study(store, definition(readers, cases, arms=arms, name="early"), actor="coord", settings=settings)
    assert st.probes == {"concepts": None} and "no probe is trained" in st.warnings[0]
    v1 = save_probe(store)
    st = create_study(store, definition(readers, cases, name="later"), actor="coord", settings=settings)
    save_probe(store)  # a newer probe after creation does not change the study
    assert st.probes == {"score": None, "concepts": v1}
    assert st.weights_sha256 and st.model_card == settings.model_card


def test_a_worklist_filter_selects_a_stratified_recorded_sample(store, settings):
    make_cases(store, 12, split="test")
    make_cases(store, 6, split="train", prefix="tr")
    readers = make_readers(store, 1)
    save_probe(store)
    d = dataclasses.replace(definition(readers, []), cases=dataclasses.replace(
        definition(readers, []).cases, ids=(), source="synthetic", split="test", limit=6, seed=3))
    st = create_study(store, d, actor="coord", settings=settings)
    labels = {store.get_case(c)["label"] for c in st.case_ids}
    assert len(st.case_ids) == 6 and labels == {"normal", "benign", "malignant"}
    assert all(c.startswith("case") for c in st.case_ids)
    too_many = dataclasses.replace(d, name="big", cases=dataclasses.replace(d.cases, limit=50))
    assert "cases.limit: 50 cases asked, but only 12 match" in _messages(store, settings, too_many)
    assert validate_study(store, dataclasses.replace(d, name="other"), settings=settings) == []


def test_a_code_built_definition_round_trips_through_its_stored_toml():
    d = StudyDefinition(name="x", readers=("a", "b"),
                        cases=CaseSelection(source="synthetic", split="test", labels=("malignant",), limit=3, seed=2),
                        arms=(Arm("score", "S", ("score",)),
                              Arm("c", "C", ("score", "concept_report"), probe=3, ask_helpfulness=False),
                              Arm("u", "unaided", ())),
                        seed=4, washout_days=1.5, blinding=Blinding(truth=False))
    assert parse_definition(definition_to_toml(d)) == d

"""The reading workflow: order, resume, washout, submit once, corrections, blinding, events, audit."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta

import numpy as np
import pytest

from dashboard.engine.dissection import mask_to_png
from dashboard.study import (
    AnswerError,
    AuditQuery,
    NoAssignmentError,
    ReadAnswers,
    ReadingError,
    ReadLockedError,
    StudyConflictError,
    close_study,
    create_study,
    create_user,
    edit_study,
    list_audit,
    load_study,
    visible_fields,
)
from dashboard.study import reading as rd
from tests.study.conftest import (
    answers_for,
    definition,
    make_cases,
    make_readers,
    read_whole_session,
    save_probe,
)

T0 = datetime(2025, 3, 1, 9, 0, 0)


def _open_next(env, reader, now=None):
    step = rd.next_assignment(env["store"], env["study"].name, reader, now=now)
    assert step.state == "read", step.message
    return step.assignment, rd.open_read(env["store"], step.assignment.assignment_id, reader, now=now)


def test_next_case_opens_resumes_and_is_the_only_one_that_opens(study_env):
    store, reader = study_env["store"], study_env["readers"][0]
    step = rd.next_assignment(store, "pilot", reader, now=T0)
    assert step.state == "read" and step.assignment.position == 0 and step.total == 12 and step.done == 0
    read_id = rd.open_read(store, step.assignment.assignment_id, reader, now=T0)
    again = rd.next_assignment(store, "pilot", reader, now=T0 + timedelta(minutes=5))
    assert again.assignment.assignment_id == step.assignment.assignment_id and again.assignment.read_id == read_id
    # reopening keeps the first render time
    assert rd.open_read(store, step.assignment.assignment_id, reader, now=T0 + timedelta(minutes=5)) == read_id
    assert store.get_read(read_id)["opened_at"] == T0
    later = [a for a in store.list_assignments("pilot", reader) if a["assignment_id"] != step.assignment.assignment_id]
    with pytest.raises(ReadingError, match="not your next case"):
        rd.open_read(store, later[0]["assignment_id"], reader, now=T0)
    other = study_env["readers"][1]
    with pytest.raises(ReadingError, match="another reader"):
        rd.open_read(store, step.assignment.assignment_id, other, now=T0)


def test_a_reader_without_assignment_gets_a_clear_message(study_env):
    make_readers(study_env["store"], 1, prefix="outsider")
    with pytest.raises(NoAssignmentError, match="'outsider1' has no cases to read in study 'pilot'"):
        rd.next_assignment(study_env["store"], "pilot", "outsider1")


def test_submit_validates_each_answer_and_refuses_a_second_submit(study_env):
    store, reader = study_env["store"], study_env["readers"][0]
    a, read_id = _open_next(study_env, reader, T0)
    asks = rd.read_form(store, a.assignment_id).helpfulness
    with pytest.raises(AnswerError) as exc:
        rd.submit_read(store, read_id, reader, ReadAnswers(birads=7, malignancy=120, confidence=0,
                                                           helpfulness=None if asks else 3,
                                                           click=("elsewhere", -1, 2)))
    msg = str(exc.value)
    for words in ("BI-RADS", "probability of malignancy", "confidence", "explanation helped me", "location"):
        assert words in msg
    assert store.get_read(read_id)["submitted_at"] is None  # nothing stored
    good = ReadAnswers(birads=4, malignancy=65, confidence=4, helpfulness=5 if asks else None,
                       click=(f"{a.case_id}-img", 12.5, 30.0), comment=" spiculated ")
    row = rd.submit_read(store, read_id, reader, good, now=T0 + timedelta(seconds=42))
    assert row["birads"] == 4 and row["malignancy"] == 65 and row["click_x"] == 12.5 and row["comment"] == "spiculated"
    with pytest.raises(ReadLockedError, match="submitted already"):
        rd.submit_read(store, read_id, reader, ReadAnswers(birads=1, malignancy=1, confidence=1,
                                                           helpfulness=1 if asks else None))
    after = store.get_read(read_id)
    assert after["birads"] == 4 and after["submitted_at"] == T0 + timedelta(seconds=42)
    with pytest.raises(ReadLockedError):
        rd.record_event(store, read_id, reader, "zoom", {"factor": 2})


def test_a_correction_is_a_new_row_and_both_are_kept(study_env):
    store, reader = study_env["store"], study_env["readers"][0]
    a, read_id = _open_next(study_env, reader, T0)
    asks = rd.read_form(store, a.assignment_id).helpfulness
    rd.submit_read(store, read_id, reader, answers_for(asks, birads=2, malignancy=10), now=T0)
    with pytest.raises(AnswerError, match="reason"):
        rd.correct_read(store, read_id, reader, answers_for(asks, birads=5, malignancy=90), "")
    new_id = rd.correct_read(store, read_id, reader, answers_for(asks, birads=5, malignancy=90), "clicked wrong box",
                             now=T0 + timedelta(minutes=1))
    rows = {r["read_id"]: r for r in store.list_reads("pilot", reader)}
    assert rows[read_id]["birads"] == 2 and rows[read_id]["superseded_by"] == new_id  # old row unchanged
    assert rows[new_id]["birads"] == 5 and rows[new_id]["supersedes"] == read_id
    assert rows[new_id]["opened_at"] == rows[read_id]["opened_at"]
    with pytest.raises(StudyConflictError, match="corrected already"):
        rd.correct_read(store, read_id, reader, answers_for(asks), "again")
    with pytest.raises(ReadingError, match="Only the reader"):
        rd.correct_read(store, new_id, study_env["readers"][1], answers_for(asks), "not mine")
    # a coordinator may correct
    create_user(store, "boss", "coordinator", actor="test", password="coordinator-pw")
    third = rd.correct_read(store, new_id, "boss", answers_for(asks, birads=4), "adjudicated")
    assert store.get_read(third)["corrected_by"] == "boss" and len(store.list_reads("pilot", reader)) == 3


def test_sessions_need_the_questionnaire_and_the_washout(store, settings):
    cases = make_cases(store, 3)
    readers = make_readers(store, 1)
    save_probe(store)
    st = create_study(store, definition(readers, cases, washout_days=14), actor="coord", settings=settings)
    r = readers[0]
    si = read_whole_session(store, st.name, r, now=T0)
    step = rd.next_assignment(store, st.name, r, now=T0)
    assert step.state == "questionnaire" and step.session_index == si
    with pytest.raises(AnswerError, match="10 answers"):
        rd.submit_questionnaire(store, st.name, r, si, sus=[3] * 9, trust=dict.fromkeys(st.definition.questionnaire.trust, 3))
    q = rd.submit_questionnaire(store, st.name, r, si, sus=[5, 1] * 5,
                                trust=dict.fromkeys(st.definition.questionnaire.trust, 4), now=T0)
    assert q["sus_score"] == 100.0
    with pytest.raises(ReadLockedError):
        rd.submit_questionnaire(store, st.name, r, si, sus=[3] * 10, trust=dict.fromkeys(st.definition.questionnaire.trust, 3))
    step = rd.next_assignment(store, st.name, r, now=T0 + timedelta(days=3))
    assert step.state == "washout" and step.available_at == T0 + timedelta(days=14)
    assert "opens on 2025-03-15 09:00 UTC" in step.message
    nxt = [a for a in store.list_assignments(st.name, r) if a["session_index"] == 1][0]
    with pytest.raises(ReadingError, match="washout"):
        rd.open_read(store, nxt["assignment_id"], r, now=T0 + timedelta(days=3))
    step = rd.next_assignment(store, st.name, r, now=T0 + timedelta(days=14))
    assert step.state == "read" and step.session_index == 1
    read_whole_session(store, st.name, r, now=T0 + timedelta(days=14))
    rd.submit_questionnaire(store, st.name, r, 1, sus=[3] * 10, trust=dict.fromkeys(st.definition.questionnaire.trust, 3))
    assert rd.next_assignment(store, st.name, r, now=T0 + timedelta(days=15)).state == "complete"


def test_the_questionnaire_waits_for_the_end_of_the_session(study_env):
    store, reader = study_env["store"], study_env["readers"][0]
    with pytest.raises(ReadingError, match="not finished"):
        rd.submit_questionnaire(store, "pilot", reader, 0, sus=[3] * 10, trust={})


def test_sus_standard_scoring():
    assert rd.sus_score([5, 1] * 5) == 100.0
    assert rd.sus_score([1, 5] * 5) == 0.0
    assert rd.sus_score([3] * 10) == 50.0
    assert rd.sus_score([4, 2, 4, 1, 5, 2, 4, 2, 4, 3]) == 77.5


def test_visible_fields_follow_blinding_and_arm(study_env):
    store = study_env["store"]
    free = visible_fields(store, None)
    assert not free.in_study and free.truth and free.concept_report
    by_arm = {}
    for a in store.list_assignments("pilot", study_env["readers"][0]):
        by_arm[a["arm"]] = visible_fields(store, a["assignment_id"])
    s, c = by_arm["score"], by_arm["concepts"]
    for v in (s, c):
        assert v.in_study and v.score and not (v.truth or v.pathology or v.description or v.other_drawings)
        assert not v.attribution
    assert not s.concept_report and s.probe_version is None
    assert c.concept_report and c.probe_version == study_env["probe"] and c.weights_sha256


def test_events_and_drawings_are_timed_and_tagged(study_env):
    store, reader = study_env["store"], study_env["readers"][0]
    a, read_id = _open_next(study_env, reader, T0)
    rd.record_event(store, read_id, reader, "window_level", {"center": 0.4, "width": 0.8}, now=T0 + timedelta(seconds=3))
    rd.record_event(store, read_id, reader, "overlay_toggle", {"overlay": "score", "on": True},
                    now=T0 + timedelta(seconds=4))
    with pytest.raises(ReadingError, match="Unknown viewer event"):
        rd.record_event(store, read_id, reader, "dance")
    mask = np.zeros((16, 16), bool)
    mask[4:10, 4:10] = True
    ann = rd.save_drawing(store, read_id, reader, now=T0 + timedelta(seconds=9), image_id=f"{a.case_id}-img",
                          concept="mass", patch_x0=0, patch_y0=0, patch_size=16, shape="rect",
                          geometry=[[4, 4], [10, 10]], mask_png=mask_to_png(mask))
    rd.save_drawing(store, read_id, reader, now=T0 + timedelta(seconds=20), image_id=f"{a.case_id}-img",
                    concept="mass", patch_x0=0, patch_y0=0, patch_size=16, shape="rect",
                    geometry=[[4, 4], [10, 10]], mask_png=mask_to_png(mask))
    assert store.get_read(read_id)["first_drawing_at"] == T0 + timedelta(seconds=9)
    drawn = store.list_study_annotations("pilot")
    assert drawn[0]["annotation_id"] == ann and drawn[0]["study"] == "pilot" and drawn[0]["arm"] == a.arm
    assert [ann_.study for ann_ in store.list_annotations()] == ["pilot", "pilot"]
    events = store.list_read_events("pilot")
    assert [e["kind"] for e in events] == ["window_level", "overlay_toggle"]
    assert events[0]["recorded_at"] == T0 + timedelta(seconds=3) and events[0]["payload"]["width"] == 0.8


def test_every_action_writes_an_audit_row(study_env):
    store, reader = study_env["store"], study_env["readers"][0]
    a, read_id = _open_next(study_env, reader)
    asks = rd.read_form(store, a.assignment_id).helpfulness
    rd.record_first_drawing(store, read_id, reader)
    rd.submit_read(store, read_id, reader, answers_for(asks))
    rd.correct_read(store, read_id, reader, answers_for(asks, birads=5), "typo")
    log = store.query_audit(study="pilot")
    actions = [r["action"] for r in reversed(log)]
    assert actions == ["create", "open", "first_drawing", "submit", "correct"]
    assert {r["actor"] for r in log if r["action"] != "create"} == {reader}
    assert store.query_audit(study="pilot", action="submit")[0]["entity_id"] == read_id
    assert store.query_audit(actor="coord", study="pilot")[0]["action"] == "create"
    assert store.query_audit(study="pilot", since=datetime(2100, 1, 1)) == []
    assert len(store.query_audit(study="pilot", until=datetime(2100, 1, 1))) == 5
    assert store.query_audit(entity="read", entity_id=read_id)[0]["action"] == "submit"
    assert [r["action"] for r in list_audit(store, AuditQuery(study="pilot", actor=reader, action="open"))] == ["open"]


def test_two_coordinators_creating_the_same_study_one_wins(store, settings):
    cases = make_cases(store, 3)
    readers = make_readers(store, 2)
    save_probe(store)
    results, barrier = [], threading.Barrier(2)

    def create(who):
        barrier.wait()
        try:
            create_study(store, definition(readers, cases, name="race"), actor=who, settings=settings)
            results.append(("ok", who))
        except StudyConflictError as exc:
            results.append(("conflict", str(exc)))

    threads = [threading.Thread(target=create, args=(w,)) for w in ("coord-a", "coord-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r[0] for r in results) == ["conflict", "ok"]
    winner = next(r[1] for r in results if r[0] == "ok")
    assert f"exists already (created by {winner}" in next(r[1] for r in results if r[0] == "conflict")
    assert len(store.list_assignments("race")) == 2 * 2 * 3  # one set of assignments, not two


def test_two_coordinators_editing_the_same_revision_one_wins(study_env):
    store, settings = study_env["store"], study_env["settings"]
    st = study_env["study"]
    edited = edit_study(store, definition(study_env["readers"], study_env["cases"][:4], seed=99),
                        expected_revision=st.revision, actor="coord-a", settings=settings)
    assert edited.revision == 2 and len(edited.case_ids) == 4 and len(store.list_assignments("pilot")) == 16
    with pytest.raises(StudyConflictError, match="changed by someone else"):
        edit_study(store, definition(study_env["readers"], study_env["cases"], seed=5),
                   expected_revision=st.revision, actor="coord-b", settings=settings)
    assert load_study(store, "pilot").seed == 99  # the loser changed nothing
    _open_next(study_env, study_env["readers"][0])
    with pytest.raises(StudyConflictError, match="started reading"):
        edit_study(store, definition(study_env["readers"], study_env["cases"]), expected_revision=2, actor="coord-a",
                   settings=settings)
    closed = close_study(store, "pilot", expected_revision=2, actor="coord-a")
    assert closed.status == "closed"
    assert rd.next_assignment(store, "pilot", study_env["readers"][1]).state == "closed"

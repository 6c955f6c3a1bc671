"""Study fixtures: a real DuckDB store in tmp_path with hand-made cases, reader accounts and studies."""
from __future__ import annotations

import hashlib

import pytest
from argon2 import PasswordHasher

from dashboard.data.store import ImageRecord
from dashboard.study import Arm, CaseSelection, ReadAnswers, StudyDefinition, accounts, create_study, create_user
from dashboard.study import reading as rd

LABELS = ("normal", "benign", "malignant")
PASSWORD = "correct horse battery"


def make_cases(store, n: int, *, source: str = "synthetic", split: str = "test", prefix: str = "case") -> list[str]:
    """n cases with labels cycling normal, benign, malignant, each with one (fake-path) image."""
    ids = []
    for i in range(n):
        cid = f"{prefix}{i:03d}"
        store.save_case(cid, source, split=split, label=LABELS[i % 3], description=f"case {i}")
        store.save_image(ImageRecord(f"{cid}-img", cid, f"nowhere/{cid}.dcm", hashlib.sha256(cid.encode()).hexdigest(),
                                     rows=64, cols=48, laterality="L", view="CC"))
        ids.append(cid)
    return ids


def make_readers(store, n: int, prefix: str = "reader") -> list[str]:
    names = [f"{prefix}{i + 1}" for i in range(n)]
    for r in names:
        if store.get_user(r) is None:
            create_user(store, r, "reader", actor="test", password=PASSWORD)
    return names


def save_probe(store, model_card: str = "demo-lite0-synth") -> int:
    return store.save_probe(model_card=model_card, layer="blocks.5", concepts=["mass"], weights=b"not-weights",
                            metrics={}, annotation_ids=[], readers=[])


def definition(readers, case_ids, *, name="pilot", arms=None, washout_days=0.0, seed=11, **kw) -> StudyDefinition:
    arms = arms or (Arm("score", "AI score only", ("score",)),
                    Arm("concepts", "score + concept report", ("score", "concept_report"), probe="latest"))
    return StudyDefinition(name=name, readers=tuple(readers), cases=CaseSelection(ids=tuple(case_ids)),
                           arms=tuple(arms), seed=seed, washout_days=washout_days, **kw)


@pytest.fixture
def study_env(store, settings):
    """A created two-arm study: 2 readers x 6 cases, washout 0, one probe trained."""
    cases = make_cases(store, 6)
    readers = make_readers(store, 2)
    version = save_probe(store)
    st = create_study(store, definition(readers, cases), actor="coord", settings=settings)
    return {"store": store, "settings": settings, "study": st, "readers": readers, "cases": cases, "probe": version}


def answers_for(arm_asks_help: bool, birads: int = 3, malignancy: float = 40.0) -> ReadAnswers:
    return ReadAnswers(birads=birads, malignancy=malignancy, confidence=3,
                       helpfulness=4 if arm_asks_help else None)


def read_whole_session(store, study, reader, *, now=None, answer=None) -> int:
    """Read every case of the reader's current session; returns the session index."""
    step = rd.next_assignment(store, study, reader, now=now)
    assert step.state == "read", step.message
    si = step.session_index
    while step.state == "read" and step.session_index == si:
        a = step.assignment
        read_id = rd.open_read(store, a.assignment_id, reader, now=now)
        asks = rd.read_form(store, a.assignment_id).helpfulness
        ans = answer(a) if answer else answers_for(asks)
        rd.submit_read(store, read_id, reader, ans, now=now)
        step = rd.next_assignment(store, study, reader, now=now)
    return si


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """argon2id with small costs: the same code path, a fraction of the time per hash."""
    monkeypatch.setattr(accounts, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))

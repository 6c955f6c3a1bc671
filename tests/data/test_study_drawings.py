"""A drawing made in a reader study carries its study and arm through every save path: the store's
``save_annotation`` (journaled with it, so a replay after a crash keeps them) and the engine's
labeling call."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dashboard.data.store import DrawingRecord
from dashboard.engine.dissection import label_units_from_drawing, mask_to_png
from dashboard.testing.engine_helpers import add_image, blob_mask


def _drawing(**kw) -> DrawingRecord:
    return DrawingRecord(image_id="img1", concept="mass", reader="reader1", patch_x0=0, patch_y0=0, patch_size=32,
                shape="rect", geometry=[1, 1, 9, 9], mask_png=mask_to_png(blob_mask(32, 5, 5, 3)), model_card="c", **kw)


def test_save_annotation_stores_study_and_arm(store):
    add_image(store)
    aid = store.save_annotation(_drawing(study="pilot", arm="concepts"))
    plain = store.save_annotation(_drawing())
    by_id = {a.annotation_id: a for a in store.list_annotations()}
    assert (by_id[aid].study, by_id[aid].arm) == ("pilot", "concepts")
    assert (by_id[plain].study, by_id[plain].arm) == (None, None)
    assert [r["annotation_id"] for r in store.list_study_annotations("pilot")] == [aid]


def test_a_crash_after_the_journal_keeps_study_and_arm_on_replay(store, monkeypatch):
    add_image(store)

    def crash(record, extra_writes=None):
        raise RuntimeError("power cut")

    # a crash: the process dies inside the write, so nothing after it runs (the journal's discard
    # included); a Save that merely failed is discarded instead (tests/data/test_journal.py)
    monkeypatch.setattr(store, "_store_annotation", crash)
    monkeypatch.setattr(store.journal, "discard", lambda path: None)
    with pytest.raises(RuntimeError):
        store.save_annotation(_drawing(study="pilot", arm="score", annotation_id="crashed"))
    (journal,) = list(store.journal_dir.glob("*.json"))
    assert json.loads(journal.read_text())["study"] == "pilot"
    monkeypatch.undo()
    assert store.replay_journal() == ["crashed"]
    (a,) = store.list_annotations()
    assert (a.annotation_id, a.study, a.arm) == ("crashed", "pilot", "score")


def test_the_labeling_call_passes_study_and_arm(store):
    add_image(store)
    res = label_units_from_drawing(store, _drawing(study="pilot", arm="concepts"), layer="bn2",
                                   ious=np.array([0.1, 0.5, 0.3]))
    (a,) = store.list_annotations()
    assert (a.annotation_id, a.study, a.arm) == (res.annotation_id, "pilot", "concepts")
    assert list(res.labeled_units) == [1, 2]

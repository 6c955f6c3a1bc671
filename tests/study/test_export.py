"""Export: every table as Parquet and CSV, a dictionary of every column, pseudonyms, the round trip."""
from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from dashboard.engine.dissection import mask_from_png, mask_to_png
from dashboard.study import COLUMNS, export_study, read_export, study_tables
from dashboard.study import reading as rd
from tests.study.conftest import answers_for, read_whole_session


@pytest.fixture
def finished(study_env):
    store = study_env["store"]
    r1, r2 = study_env["readers"]
    # reader1: a drawing, an event, a correction, and a whole session with its questionnaire
    step = rd.next_assignment(store, "pilot", r1)
    read_id = rd.open_read(store, step.assignment.assignment_id, r1)
    rd.record_event(store, read_id, r1, "zoom", {"factor": 2.0})
    mask = np.zeros((16, 16), bool)
    mask[3:9, 5:12] = True
    rd.save_drawing(store, read_id, r1, image_id=f"{step.assignment.case_id}-img", concept="mass", patch_x0=8,
                    patch_y0=4, patch_size=16, shape="polygon", geometry=[[5, 3], [12, 3], [12, 9]],
                    mask_png=mask_to_png(mask))
    asks = rd.read_form(store, step.assignment.assignment_id).helpfulness
    rd.submit_read(store, read_id, r1, answers_for(asks))
    rd.correct_read(store, read_id, r1, answers_for(asks, birads=5), "wrong category")
    si = read_whole_session(store, "pilot", r1)
    rd.submit_questionnaire(store, "pilot", r1, si, sus=[4, 2] * 5,
                            trust=dict.fromkeys(study_env["study"].definition.questionnaire.trust, 3))
    read_whole_session(store, "pilot", r2)
    return study_env


def test_round_trip_parquet_and_csv(finished, tmp_path):
    store = finished["store"]
    summary = export_study(store, "pilot", tmp_path / "out", actor="coord")
    back = read_export(tmp_path / "out")
    # what the export wrote is what study_tables gives (audit and export time aside, which the export itself moves)
    now = pd.Timestamp(back["definition"]["exported_at"].iloc[0]).to_pydatetime()
    fresh = study_tables(store, "pilot", now=now)
    for table in COLUMNS:
        a, b = back[table], fresh[table]
        if table == "audit":
            b = b[b["action"] != "export"].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=True, obj=table)
    csv = read_export(tmp_path / "out", fmt="csv")
    for table in COLUMNS:
        a, b = back[table].astype(object).where(back[table].notna(), None), csv[table]
        b = b.astype(object).where(b.notna(), None)
        for col in a.columns:  # CSV cannot tell an empty string from a missing one
            assert [x if x not in ("", None) else None for x in a[col]] == \
                   [x if x not in ("", None) else None for x in b[col]], (table, col)
    assert summary.rows["reads"] == 6 + 6 + 1  # one session of each reader, plus reader1's correction
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["rows"] == summary.rows


def test_every_written_column_is_in_the_dictionary(finished, tmp_path):
    export_study(finished["store"], "pilot", tmp_path, actor="coord")
    dictionary = pd.read_csv(tmp_path / "data_dictionary.csv")
    for table in COLUMNS:
        cols = list(pd.read_parquet(tmp_path / f"{table}.parquet").columns)
        described = dictionary.loc[dictionary["table"] == table]
        assert cols == list(described["column"]), table
        assert described["meaning"].str.len().min() > 3 and described["type"].notna().all()


def test_readers_are_pseudonymised_unless_asked(finished, tmp_path):
    store = finished["store"]
    export_study(store, "pilot", tmp_path / "p", actor="coord")
    everything = " ".join((tmp_path / "p" / f"{t}.csv").read_text() for t in COLUMNS)
    for r in finished["readers"]:
        assert r not in everything
    reads = pd.read_parquet(tmp_path / "p" / "reads.parquet")
    assert set(reads["reader"]) == {"R01", "R02"} and reads["assignment_id"].str.contains("/R0").all()
    export_study(store, "pilot", tmp_path / "real", actor="coord", real_ids=True)
    reads = pd.read_parquet(tmp_path / "real" / "reads.parquet")
    assert set(reads["reader"]) == set(finished["readers"])


def test_export_content_and_audit(finished, tmp_path):
    store = finished["store"]
    export_study(store, "pilot", tmp_path, actor="coord")
    t = read_export(tmp_path)
    reads = t["reads"]
    old = reads[reads["superseded_by"].notna()].iloc[0]
    new = reads[reads["read_id"] == old["superseded_by"]].iloc[0]
    assert not old["is_current"] and new["is_current"] and new["birads"] == 5 and new["supersedes"] == old["read_id"]
    d = t["drawings"].iloc[0]
    assert d["patch_x0"] == 8 and json.loads(d["geometry"])[1] == [12, 3]
    assert mask_from_png(base64.b64decode(d["mask_png_base64"]))[3:9, 5:12].all()
    assert list(t["events"]["kind"]) == ["zoom"]
    items = t["questionnaire_items"]
    assert (items["instrument"] == "sus").sum() == 10 and t["questionnaires"]["sus_score"].iloc[0] == 75.0
    assert set(t["cases"]["label"]) == {"normal", "benign", "malignant"}
    assert store.query_audit(action="export", study="pilot")[0]["actor"] == "coord"
    assert {"create", "open", "submit", "correct", "questionnaire", "first_drawing"} <= set(t["audit"]["action"])

"""The command line through main([...]): create, status, results, export, users; bad input exits 2."""
from __future__ import annotations

import json
import stat

import pandas as pd
import pytest

from dashboard.data.store import Store
from dashboard.settings import PROJECT_ROOT
from dashboard.study import load_study, sign_in
from dashboard.study.cli import main
from tests.study.conftest import make_cases, read_whole_session

DEMO = PROJECT_ROOT / "studies" / "demo-study.toml"


@pytest.fixture
def demo_store(store):
    """A store shaped like the demo set: synthetic test-split cases, no probe."""
    make_cases(store, 15, split="test")
    make_cases(store, 5, split="train", prefix="tr")
    return store


def test_create_status_results_export(demo_store, settings, tmp_path, capsys):
    demo_store.close()  # the CLI opens the store itself
    pw_file = tmp_path / "pw.tsv"
    assert main(["--actor", "coord", "create", str(DEMO), "--passwords-out", str(pw_file)]) == 0
    out = capsys.readouterr()
    assert "Created study 'demo-study': 3 readers x 12 cases x 2 arms" in out.out
    assert "no probe is trained" in out.err
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    passwords = dict(line.split("\t") for line in pw_file.read_text().splitlines())
    assert set(passwords) == {"reader-a", "reader-b", "reader-c"}

    with Store(settings.db_path, settings.journal_dir) as store:
        assert sign_in(store, "reader-a", passwords["reader-a"], settings=settings).role == "reader"
        read_whole_session(store, "demo-study", "reader-a")
        read_whole_session(store, "demo-study", "reader-b")
        assert len(load_study(store, "demo-study").case_ids) == 12

    assert main(["status", "demo-study"]) == 0
    out = capsys.readouterr().out
    assert "reader-a" in out and "12 / 12" in out and "0 / 12" in out

    assert main(["results", "demo-study", "--json", "--n-boot", "50"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["study"] == "demo-study" and res["n_reads"] == 24 and "fleiss_kappa" in res

    assert main(["results", "demo-study", "--n-boot", "50"]) == 0
    assert "AUROC" in capsys.readouterr().out

    assert main(["--actor", "coord", "export", "demo-study", "--out", str(tmp_path / "exp")]) == 0
    assert "pseudonymised" in capsys.readouterr().out
    reads = pd.read_parquet(tmp_path / "exp" / "reads.parquet")
    assert len(reads) == 24 and set(reads["reader"]) <= {"R01", "R02", "R03"}

    assert main(["list"]) == 0
    assert "demo-study" in capsys.readouterr().out
    # creating it again: a clear conflict, exit 2
    assert main(["create", str(DEMO)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_bad_input_is_a_clear_message_and_exit_2(demo_store, tmp_path, capsys):
    demo_store.close()
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    assert main(["create", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    unknown_case = tmp_path / "u.toml"
    unknown_case.write_text('name = "u"\nreaders = ["x1"]\n[cases]\nids = ["case000", "nope"]\n'
                            '[[arms]]\nname = "score"\nshows = ["score"]\n')
    assert main(["create", str(unknown_case)]) == 2
    err = capsys.readouterr().err
    assert "unknown case id nope" in err
    assert main(["user", "list"]) == 0
    assert "x1" not in capsys.readouterr().out  # nothing created for a study that failed
    assert main(["status", "no-such-study"]) == 2
    assert "No study named 'no-such-study'" in capsys.readouterr().err
    assert main(["export", "no-such-study", "--out", str(tmp_path / "x")]) == 2


def test_user_add_and_list(store, capsys):
    store.close()
    assert main(["user", "add", "Coord1", "--role", "coordinator"]) == 0
    out = capsys.readouterr().out
    assert "Created coordinator account 'coord1'" in out and "coord1\t" in out
    assert main(["user", "add", "coord1"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["user", "list"]) == 0
    assert "coord1" in capsys.readouterr().out

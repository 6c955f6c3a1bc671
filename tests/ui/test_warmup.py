"""`python -m dashboard.ui.warmup`: dataset statistics computed once for the selected card."""
from __future__ import annotations

from dashboard.data.store import Store
from dashboard.testing import app_data
from dashboard.ui import warmup


def test_warmup_computes_statistics_once(settings, monkeypatch, capsys):
    store = Store(settings.db_path, settings.journal_dir)
    app_data.populate(settings, store)
    store.close()
    app_data.make_tiny_card(settings)
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", app_data.TINY_CARD)
    monkeypatch.setenv("CONCEPTLENS_DEVICE", "cpu")
    assert warmup.main() == 0
    assert "dataset statistics written to" in capsys.readouterr().out
    with Store(settings.db_path, settings.journal_dir) as s:
        runs = s.list_dissection_runs(model_card=app_data.TINY_CARD)
    assert len(runs) == 1
    assert warmup.main() == 0
    assert "nothing to do" in capsys.readouterr().out


def test_warmup_skips_an_unusable_card(settings, monkeypatch, capsys):
    monkeypatch.setenv("CONCEPTLENS_MODEL_CARD", "no-such-card")
    assert warmup.main() == 0
    assert "not usable" in capsys.readouterr().err

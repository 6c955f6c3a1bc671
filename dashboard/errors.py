"""The error root: every error ConceptLens raises on purpose derives from ``ConceptLensError``, so a page
catches that one type and shows its message; anything else is a bug and goes to the log.

The typed errors stay beside the code that raises them (``data.store.StoreError``,
``imaging.ImagingError``, ``model_zoo.CardError``, ...)."""
from model_zoo.errors import ConceptLensError

__all__ = ["ConceptLensError"]

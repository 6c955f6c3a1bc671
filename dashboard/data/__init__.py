"""What the product reads and writes: the DuckDB label store (``store``, schema in ``sql/``), importers
of public data sets and folder ingest, the synthetic phantom and demo set, training patch sets, and the
hanging sheets of store images (``hanging``, a command line). Embedded data files live in ``assets/``."""
from dashboard.data.store import (
    BUILTIN_CONCEPTS,
    Annotation,
    ConflictError,
    DissectionRun,
    DrawingRecord,
    FindingRecord,
    ImageRecord,
    NotFoundError,
    Store,
    StoreError,
    StoreLockedError,
    UnknownConceptError,
    ValidationError,
    open_store,
)

__all__ = [
    "BUILTIN_CONCEPTS", "Annotation", "ConflictError", "DissectionRun", "DrawingRecord", "FindingRecord",
    "ImageRecord", "NotFoundError", "Store", "StoreError", "StoreLockedError", "UnknownConceptError",
    "ValidationError", "open_store",
]

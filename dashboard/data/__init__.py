"""What the product reads and writes: the DuckDB label store (``store``, schema in ``sql/``), importers
of public data sets and folder ingest, the synthetic phantom and demo set, and training patch sets.
Embedded data files live in ``assets/``."""
from dashboard.data.store import (
    BUILTIN_CONCEPTS, Annotation, ConflictError, NotFoundError, Store, StoreError, StoreLockedError,
    UnknownConceptError, ValidationError, open_store,
)

__all__ = [
    "BUILTIN_CONCEPTS", "Annotation", "ConflictError", "NotFoundError", "Store", "StoreError", "StoreLockedError",
    "UnknownConceptError", "ValidationError", "open_store",
]

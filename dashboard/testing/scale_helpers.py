"""Helpers for the scale-path tests (Ray workers): a tiny model a worker can rebuild by itself, and
a patch source whose worker dies on its first attempt at a shard, or fails until told otherwise."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dashboard.engine.shards import ArrayPatches
from dashboard.testing.engine_helpers import TinyCard, tiny_model


@dataclass(frozen=True)
class TinyModelSource:
    """``shards.CardModel``'s stand-in for a seeded tiny timm model and ``TinyCard``."""

    arch: str = "efficientnet_lite0"
    seed: int = 0

    def load(self):
        return tiny_model(self.arch, self.seed), TinyCard()


@dataclass(frozen=True)
class DyingPatches:
    """An ``ArrayPatches`` whose worker kills itself (``os._exit``, as a crash or OOM kill would) the
    first time it loads patch ``die_at``, leaving a marker file so the retry goes through; with
    ``fail_at`` it raises instead on every attempt (a shard that cannot finish in this run).
    Every load of a shard's first batch is counted by a file in ``marker_dir`` (``loads``)."""

    inner: ArrayPatches
    marker_dir: str
    die_at: int = -1
    fail_at: int = -1

    @property
    def n_patches(self) -> int:
        return self.inner.n_patches

    @property
    def data_key(self) -> str:
        return self.inner.data_key

    def group_sizes(self) -> list[int]:
        return self.inner.group_sizes()

    def part(self, start: int, stop: int) -> DyingPatches:
        return DyingPatches(self.inner.part(start, stop), self.marker_dir, self.die_at, self.fail_at)

    def load(self, start: int, stop: int) -> np.ndarray:
        marks = Path(self.marker_dir)
        (marks / f"load-{start}-{os.getpid()}-{len(list(marks.iterdir()))}").touch()
        if start <= self.fail_at < stop:
            raise RuntimeError(f"shard holding patch {self.fail_at} fails on purpose")
        if start <= self.die_at < stop and not (marks / f"died-{self.die_at}").exists():
            (marks / f"died-{self.die_at}").touch()
            os._exit(1)
        return self.inner.load(start, stop)


def loads(marker_dir: str | Path) -> list[int]:
    """The first patch index of every batch load the workers made (sorted)."""
    return sorted(int(p.name.split("-")[1]) for p in Path(marker_dir).iterdir() if p.name.startswith("load-"))

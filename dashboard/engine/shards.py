"""Work split into shards that separate processes (Ray workers) compute and a driver merges.

A shard is a run of consecutive patches (the patches of a set of images, in the patch set's
order), cut at a batch boundary, so a worker folds exactly the batches one in-process run would
fold: the merge (``dissection.merge_runs``) is then exact. What travels to a worker is small:
a ``ShardSpec``, the part of the patch source its patches come from (file paths and patch
corners, or a small array in tests) and a ``CardModel`` the worker loads the model from.

Each finished shard is written atomically (``save_shard_file``: a temporary file, then a rename)
in the run folder, so a rerun skips it and a retried shard replaces its own file only.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import model_zoo
from dashboard.settings import pick_device

__all__ = ["ShardSpec", "PatchSource", "ArrayPatches", "CardModel", "plan_shards", "save_shard_file",
           "load_shard_file", "shard_file"]


@dataclass(frozen=True)
class ShardSpec:
    """Patches [patch0, patch0 + n_patches) of a patch set; ``groups``: the indices of the images
    (groups of patches) it holds patches of."""

    index: int
    patch0: int
    n_patches: int
    groups: tuple[int, ...] = ()

    @property
    def stop(self) -> int:
        return self.patch0 + self.n_patches


class PatchSource(Protocol):
    """Patches a worker can load by itself: ``load(start, stop)`` -> (n, S, S) float32 in [0, 1]
    for global patch indices; ``part(start, stop)`` a smaller source that still loads that range."""

    n_patches: int
    data_key: str

    def group_sizes(self) -> list[int]: ...

    def load(self, start: int, stop: int) -> np.ndarray: ...

    def part(self, start: int, stop: int) -> PatchSource: ...


@dataclass(frozen=True)
class ArrayPatches:
    """A patch source over an in-memory (N, S, S) array (tests, benchmarks); ``offset``: the
    global index of its first patch; ``sizes``: patches per image (one group when not given)."""

    patches: np.ndarray
    data_key: str
    offset: int = 0
    sizes: tuple[int, ...] = ()

    @property
    def n_patches(self) -> int:
        return int(self.patches.shape[0])

    def group_sizes(self) -> list[int]:
        return list(self.sizes) if self.sizes else [self.n_patches]

    def load(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.patches[start - self.offset:stop - self.offset], dtype=np.float32)

    def part(self, start: int, stop: int) -> ArrayPatches:
        return ArrayPatches(self.patches[start - self.offset:stop - self.offset], self.data_key, start)


@dataclass(frozen=True)
class CardModel:
    """How a worker gets the model: the card by name (built-in or in ``cards_dirs``) and its checked
    offline weights (``model_zoo.create_model``), on ``device`` ("auto": a GPU when the worker has one)."""

    card_name: str
    cards_dirs: tuple[str, ...] = ()
    device: str = "auto"

    def load(self):
        """(model in eval mode, card)."""
        card = model_zoo.load_card(self.card_name, extra_dirs=list(self.cards_dirs))
        return model_zoo.create_model(card, device=pick_device(self.device)), card


def plan_shards(group_sizes: Sequence[int], batch_size: int, n_shards: int) -> list[ShardSpec]:
    """Split a patch set whose images hold ``group_sizes`` patches each (in order) into at most
    ``n_shards`` consecutive shards of about equal size, each starting on a batch boundary (a
    multiple of ``batch_size``) and never empty."""
    sizes = [int(s) for s in group_sizes]
    n = sum(sizes)
    if n < 1:
        raise ValueError("no patches to shard")
    n_batches = math.ceil(n / batch_size)
    k = max(1, min(int(n_shards), n_batches))
    cuts = sorted({round(i * n_batches / k) * batch_size for i in range(k)} | {n})
    cuts = [c for c in cuts if c <= n]
    starts = np.cumsum([0] + sizes)  # (G+1,) first patch of each image
    out = []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        first = int(np.searchsorted(starts, a, side="right") - 1)
        last = int(np.searchsorted(starts, b, side="left") - 1)
        out.append(ShardSpec(i, int(a), int(b - a), tuple(range(first, last + 1))))
    return out


def shard_file(directory: Path, index: int) -> Path:
    return Path(directory) / f"shard-{index:05d}.safetensors"


def save_shard_file(directory: Path, index: int, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write one shard's result atomically (a rerun sees the whole file or none)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = shard_file(directory, index)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"meta": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def load_shard_file(directory: Path, index: int, meta: dict) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, its meta) of a finished shard whose meta holds every item of ``meta``, else None
    (missing, torn or another run's: it is recomputed)."""
    path = shard_file(directory, index)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            got = json.loads(fh.metadata()["meta"])
        if any(got.get(k) != v for k, v in meta.items()):
            return None
        return load_file(str(path)), got
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply recomputed
        return None

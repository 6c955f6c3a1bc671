"""Patches of stored images that a worker process cuts by itself, without the store.

The dataset statistics on Ray (``engine.shards``) send each worker the part of this source that
holds its shard: per image its file, SHA-256, spacing and patch corners, a few hundred bytes. The
worker reads each file (checked against its SHA-256), resamples it to the card's spacing
(``imaging.prepare_model_image``) and crops the patches, exactly as the app's
``ui.work.images.patch_gray`` does, so the numbers equal those of an in-process run.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dashboard import imaging

__all__ = ["StoredImagePatches", "StoredPatches"]


@dataclass(frozen=True)
class StoredImagePatches:
    """One image's patches: its file (absolute path), SHA-256, spacing when the file has none, and
    the patches (x0, y0, size) in model pixels, in the patch set's order."""

    image_id: str
    path: str
    sha256: str
    default_spacing_mm: float | None
    patches: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class StoredPatches:
    """A patch source (``shards.PatchSource``) over stored images; ``offset``: the global index of
    the first patch of ``images[0]``."""

    images: tuple[StoredImagePatches, ...]
    spacing_mm: float
    data_key: str
    max_pixels: int | None = None
    offset: int = 0

    @property
    def n_patches(self) -> int:
        return sum(len(im.patches) for im in self.images)

    def group_sizes(self) -> list[int]:
        return [len(im.patches) for im in self.images]

    def _starts(self) -> np.ndarray:
        return self.offset + np.cumsum([0] + self.group_sizes())  # (G+1,)

    def part(self, start: int, stop: int) -> StoredPatches:
        """The images that hold patches [start, stop) (global indices), nothing else."""
        starts = self._starts()
        first = int(np.searchsorted(starts, start, side="right") - 1)
        last = int(np.searchsorted(starts, stop, side="left") - 1)
        return StoredPatches(self.images[first:last + 1], self.spacing_mm, self.data_key, self.max_pixels,
                             int(starts[first]))

    def load(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, S, S) float32 in [0, 1]: the patches with global indices [start, stop)."""
        starts = self._starts()
        out = []
        for g, im in enumerate(self.images):
            lo, hi = max(start, int(starts[g])), min(stop, int(starts[g + 1]))
            if lo >= hi:
                continue
            img = _model_image(im.path, im.sha256, self.spacing_mm, im.default_spacing_mm, self.max_pixels)
            out += [imaging.crop_patch(img, x0, y0, size) for x0, y0, size in im.patches[lo - starts[g]:hi - starts[g]]]
        if len(out) != stop - start:
            raise IndexError(f"patches {start}..{stop} are not all in this source")
        return np.stack(out).astype(np.float32, copy=False)


@lru_cache(maxsize=2)  # a batch that spans two images, and the next batch from the same image
def _model_image(path: str, sha256: str, spacing_mm: float, default_spacing_mm: float | None,
                 max_pixels: int | None) -> np.ndarray:
    """(h, w) float32 model-space image of a file, checked against its SHA-256."""
    m = imaging.load_image(path, max_pixels=max_pixels, expected_sha256=sha256)
    return imaging.prepare_model_image(m, spacing_mm, default_spacing_mm=default_spacing_mm)[0]

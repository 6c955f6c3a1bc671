"""Network dissection for concepts that readers draw.

Three parts:

* **Dataset statistics** (``compute_dataset_stats``): per unit of a layer, the activation
  threshold at a quantile of all activations over every patch and spatial position (0.99 as
  the seed does, 0.995 in Network Dissection), the mean activation, the top-k exemplar patches
  with their activation maps, and a 2-D map of units (PCA of the units' activation profiles over
  patches). Streaming, resumable and keyed by model, weights, layer and data.
* **Drawing -> units** (``match_drawing``, from ``dashboard.engine.unit_iou``): the IoU of every unit's
  thresholded activation with a drawing; ``drawing_to_mask`` rasterises drawings.
* **Labeling rule** (``label_units_from_drawing``, ``undo_annotation``, ``unit_labels``): every
  unit with IoU > tau gets the drawing's concept when this IoU beats the best it had. The store
  keeps every drawing's IoUs above tau (``annotation_units``) and recomputes ``unit_labels`` from
  the live drawings, so undoing a drawing undoes exactly its labels.

Quantile exactness: per unit we keep the largest ``T = n - floor((n - 1) q)`` activations seen
so far (a running ``topk``), which is exactly what the linear-interpolation quantile of all ``n``
values needs, so the threshold is exact (float64 interpolation, stored as float32). Memory is
``C * T`` floats; when that would exceed ``max_buffer`` values, a fixed number of positions per
batch is drawn at random (same positions for all units, seeded) so that the kept sample fits, and
the threshold is the exact quantile of that uniform sample: its rank error is binomial, standard
deviation ``sqrt(q (1 - q) / n_sampled)`` in quantile units (``DissectionStats.quantile_se``).

Shards: a run may cover consecutive patches of the set (a shard, starting on a batch boundary);
``merge_runs`` merges such runs exactly (upper tails, per-batch sums in order, exemplars with ties
to the lower patch index). In-process is one run through the same merge; ``engine=`` maps shards
to Ray workers (``engine.distributed``, docs/scale.md) with the same numbers and the same key.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from skimage.draw import line, polygon

from dashboard.data.store import DissectionRun, DrawingRecord, StatsIdentity, ValidationError
from dashboard.engine.activations import compute_activations, model_fingerprint
from dashboard.engine.model_state import model_device
from dashboard.engine.shards import (
    ArrayPatches,
    ShardSpec,
    load_shard_file,
    plan_shards,
    save_shard_file,
    shard_file,
)
from dashboard.engine.unit_iou import (
    UnitMasks,
    compute_unit_ious,
    compute_unit_ious_reference,
    prepare_unit_masks,
    unit_ious,
)
from dashboard.errors import ConceptLensError
from dashboard.progress import Progress, report

__all__ = [
    "DissectionStats", "StatsConfig", "StaleCacheError", "UnitMatch", "LabelResult", "compute_dataset_stats",
    "load_dataset_stats",
    "dataset_stats_key", "model_fingerprint", "compute_unit_ious", "compute_unit_ious_reference",
    "UnitMasks", "prepare_unit_masks", "unit_ious",
    "match_drawing", "drawing_to_mask", "mask_to_png", "mask_from_png", "label_units_from_drawing",
    "undo_annotation", "unit_labels", "units_by_concept",
]

class StaleCacheError(ConceptLensError, ValueError):
    """A resumed computation met data that differ from its checkpoint (the checkpoint is dropped)."""

STATS_VERSION = "dissect-v3"  # v2: thresholds tied at a unit's maximum step just below it; v3: the stats record it


# ====================================================================== dataset statistics
@dataclass(frozen=True)
class StatsConfig:
    """How ``compute_dataset_stats`` runs, and where it keeps its numbers.

    cache_dir     statistics live under ``cache_dir/<key>/``; a finished key is loaded, an
                  interrupted one continues from its last batch
    quantile      the threshold's quantile of all activations, in [0.5, 1) (0.99 as the seed does,
                  0.995 in Network Dissection)
    top_k         exemplar patches kept per unit
    batch_size    patches per forward pass (when ``patches`` is an array or tensor)
    n_patches, data_key  for a generic iterable of batches: how many patches it yields and a name
                  for the data (e.g. a hash of image SHA-256s and patch coordinates); derived from
                  the content for arrays, tensors and sequences
    max_buffer    most activations kept for the exact quantile before positions are sampled (module doc)
    max_profiles  most patches whose mean activations feed the unit map (PCA)
    seed          of the position sample
    device        where the forward passes run (default: the model's device)
    """

    cache_dir: Path | str
    quantile: float = 0.99
    top_k: int = 8
    batch_size: int = 16
    n_patches: int | None = None
    data_key: str | None = None
    max_buffer: int = 16_000_000
    max_profiles: int = 4096
    seed: int = 0
    device: str | torch.device | None = None


@dataclass
class DissectionStats(StatsIdentity):
    """Per-unit statistics of one layer over one patch set (what they are of: ``StatsIdentity``).

    thresholds (C,) float32   activation above which a unit counts as "on" (quantile over all
                              patches and positions)
    mean (C,) float32         mean activation over all patches and positions
    top_values (C, k)         the k highest per-patch max activations, descending
    top_indices (C, k) int64  their patch indices in the data set (-1 where fewer than k patches)
    top_maps (C, k, h, w)     the activation maps of those patches
    unit_xy (C, 2)            2-D PCA coordinates of units (profiles of per-patch mean activation)
    unit_xy_var (2,)          fraction of profile variance carried by each coordinate
    """

    patch_size: int
    feature_shape: tuple[int, int]
    n_values: int          # activations per unit that the quantile was taken over
    sample_rate: float     # 1.0: every position; < 1: a uniform sample (see quantile_se)
    thresholds: np.ndarray
    mean: np.ndarray
    top_values: np.ndarray
    top_indices: np.ndarray
    top_maps: np.ndarray
    unit_xy: np.ndarray
    unit_xy_var: np.ndarray
    path: str = ""
    n_tied_at_max: int = 0  # units whose quantile equalled their maximum (see ``_untie_at_max``)
    version: str = "dissect-v1"  # STATS_VERSION of the code that computed them (files before v2 lack it)

    @property
    def n_units(self) -> int:
        return int(self.thresholds.shape[0])

    @property
    def quantile_se(self) -> float:
        """Standard error of the thresholds' quantile level (0 when exact)."""
        if self.sample_rate >= 1.0:
            return 0.0
        return math.sqrt(self.quantile * (1 - self.quantile) / max(self.n_values, 1))

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: torch.from_numpy(np.ascontiguousarray(getattr(self, name))) for name in
                   ("thresholds", "mean", "top_values", "top_indices", "top_maps", "unit_xy", "unit_xy_var")}
        meta = {k: v for k, v in asdict(self).items() if k not in tensors}
        meta["feature_shape"] = list(self.feature_shape)
        meta["path"] = str(directory)
        tmp = directory / "stats.safetensors.tmp"
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
        os.replace(tmp, directory / "stats.safetensors")
        self.path = str(directory)
        return directory / "stats.safetensors"


def load_dataset_stats(directory: Path) -> DissectionStats:
    """Load statistics saved by ``compute_dataset_stats`` (``<cache>/<key>/stats.safetensors``)."""
    path = Path(directory) / "stats.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["meta"])
        arrays = {k: fh.get_tensor(k).numpy() for k in fh.keys()}
    meta["feature_shape"] = tuple(meta["feature_shape"])
    meta["path"] = str(Path(directory))
    return DissectionStats(**meta, **arrays)


def dataset_stats_key(card, weights_sha: str, layer: str, data_key: str, config: StatsConfig) -> str:
    """Cache key: everything the numbers depend on. A change anywhere gives a new key."""
    payload = {
        "v": STATS_VERSION, "card": getattr(card, "name", str(card)), "weights": weights_sha,
        "card_sha": str(getattr(card, "weights_sha256", getattr(card, "sha256", ""))),
        "input_size": _jsonable(getattr(card, "input_size", None)),
        "mean": _jsonable(getattr(card, "mean", None)), "std": _jsonable(getattr(card, "std", None)),
        "layer": layer, "data": data_key, "q": float(config.quantile), "k": int(config.top_k),
        "buf": int(config.max_buffer), "prof": int(config.max_profiles), "seed": int(config.seed),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _jsonable(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return float(x) if isinstance(x, (float, np.floating)) else x


def _hash_batch(batch: np.ndarray) -> str:
    b = np.ascontiguousarray(batch, dtype=np.float32)
    return hashlib.sha256(str(b.shape).encode() + b.tobytes()).hexdigest()[:24]


def _to_numpy_batch(b) -> np.ndarray:
    if torch.is_tensor(b):
        b = b.detach().cpu().numpy()
    b = np.asarray(b, dtype=np.float32)
    if b.ndim == 2:
        b = b[None]
    if b.ndim != 3:
        raise ValueError(f"patches must be (N, S, S) grey images, got {b.shape}")
    return b


def _quantile_from_top(top_desc: torch.Tensor, n: int, q: float) -> torch.Tensor:
    """Linear-interpolation quantile (numpy's default) from each row's largest values, descending.

    top_desc (C, T) with T >= n - floor((n-1) q); returns (C,) float64.
    """
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    v_lo = top_desc[:, n - 1 - lo].double()
    v_hi = top_desc[:, n - 1 - hi].double()
    # numpy's _lerp: a + (b - a) t, computed from the nearer end for t >= 0.5
    diff = v_hi - v_lo
    return torch.where(torch.tensor(frac >= 0.5), v_hi - diff * (1 - frac), v_lo + diff * frac)


def _untie_at_max(thresholds: torch.Tensor, top_max: torch.Tensor, mean: torch.Tensor,
                  max_share: float = 0.5) -> tuple[torch.Tensor, int]:
    """Thresholds (C,) float32 that a saturated unit can exceed.

    A unit that sits at its maximum on more than 1 - q of all positions (a ReLU6 unit at 6.0,
    or any unit with a plateau at its top) has its q-quantile equal to that maximum, and the
    strict ``>`` rule would then never switch it on: it could never be labeled. For those units
    the threshold steps to the next float32 below the maximum, so the unit's mask is its plateau:
    the top-quantile positions with their ties. Only when the plateau is a minority: the maximum
    is positive and the mean activation is at most ``max_share`` of it (for non-negative
    activations, as after ReLU/ReLU6, that bounds the plateau's share of positions by
    ``max_share``). A dead unit (maximum 0) or a unit saturated nearly everywhere stays off.
    Returns the thresholds and how many units were adjusted.
    """
    top_max = top_max.to(thresholds.device)
    mean = mean.to(thresholds.device, torch.float32)
    tied = (thresholds >= top_max) & (top_max > 0) & (mean <= max_share * top_max)  # (C,)
    below = torch.nextafter(thresholds, torch.full_like(thresholds, -math.inf))
    return torch.where(tied, below, thresholds), int(tied.sum())


def _pca_units(profiles: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """2-D map of units from their activation profiles over patches.

    profiles (P, C) per-patch mean activations. Each unit's profile is z-scored over patches
    (constant units map to the origin), units are centred, and the top two principal axes come
    from the eigendecomposition of the smaller Gram matrix. Signs are fixed so the unit with the
    largest |coordinate| is positive. Returns (C, 2) coordinates and (2,) explained fractions.
    """
    x = profiles.double().T  # (C, P)
    c, p = x.shape
    if p < 2 or c < 3:
        return np.zeros((c, 2), np.float32), np.zeros(2, np.float32)
    x = x - x.mean(1, keepdim=True)
    sd = x.std(1, keepdim=True)
    x = torch.where(sd > 1e-12, x / sd.clamp_min(1e-12), torch.zeros_like(x))
    x = x - x.mean(0, keepdim=True)
    if p <= c:
        evals, evecs = torch.linalg.eigh(x.T @ x)  # (P, P)
        order = evals.argsort(descending=True)[:2]
        coords = x @ evecs[:, order]  # (C, 2)
    else:
        evals, evecs = torch.linalg.eigh(x @ x.T)  # (C, C)
        order = evals.argsort(descending=True)[:2]
        coords = evecs[:, order] * evals[order].clamp_min(0).sqrt()
    total = evals.clamp_min(0).sum()
    var = (evals[order].clamp_min(0) / total) if total > 0 else torch.zeros(2, dtype=torch.float64)
    flip = torch.sign(coords.gather(0, coords.abs().argmax(0, keepdim=True)))[0]
    coords = coords * torch.where(flip == 0, torch.ones_like(flip), flip)
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(c, 2 - coords.shape[1], dtype=coords.dtype)], 1)
        var = torch.cat([var, torch.zeros(2 - var.shape[0], dtype=var.dtype)])
    return coords.float().numpy(), var.float().numpy()


class _Run:
    """Running state of one statistics computation; checkpointed to disk after every batch."""

    def __init__(self, n_units: int, fshape: tuple[int, int], n_patches: int, config: StatsConfig,
                 device: torch.device, patch0: int = 0):
        h, w = fshape
        top_k, quantile = config.top_k, config.quantile
        max_buffer, max_profiles = config.max_buffer, config.max_profiles
        self.n_units, self.fshape, self.n_patches = n_units, fshape, n_patches
        self.k, self.q = top_k, quantile
        n_total = n_patches * h * w
        need = n_total - math.floor((n_total - 1) * quantile)
        if n_units * need <= max_buffer:
            self.rate = 1.0
            self.n_target = n_total
        else:
            # sample positions so the buffer fits; the count is fixed in advance (floor(rate * n))
            keep_vals = max(max_buffer // n_units, 2)
            self.rate = min(1.0, keep_vals / max(need, 1))
            self.n_target = max(int(math.floor(self.rate * n_total)), 2)
        self.t_keep = self.n_target - math.floor((self.n_target - 1) * quantile)
        self.device = device
        # where this run starts in the whole patch set (a shard; 0 for the whole set in one run)
        self.patch0 = patch0
        self.batch0 = patch0 // max(config.batch_size, 1)
        self.pos0 = patch0 * h * w
        self.done = 0              # patches consumed
        self.seen_pos = 0          # positions consumed
        self.kept = 0              # positions kept in the quantile sample
        self.top = torch.empty(n_units, 0, device=device)                      # (C, <=T) descending
        # per-batch sums, added in batch order at the end, so shards merged in order sum exactly
        # as one run over all batches does
        self.sums: list[torch.Tensor] = []                                      # [(C,) float64]
        self.ex_val = torch.empty(n_units, 0, device=device)                    # (C, <=k)
        self.ex_idx = torch.empty(n_units, 0, dtype=torch.int64, device=device)
        self.ex_map = torch.empty(n_units, 0, h, w, device=device)              # (C, <=k, h, w)
        stride = max(1, math.ceil(n_patches / max_profiles))
        self.profile_stride = stride
        self.profiles: list[torch.Tensor] = []                                  # [(b, C)]
        self.chunk_hashes: list[str] = []

    def update(self, acts: torch.Tensor, seed: int) -> None:
        """Fold one batch of activations (B, C, h, w) into the running statistics."""
        b, c, h, w = acts.shape
        flat = acts.permute(1, 0, 2, 3).reshape(c, b * h * w)  # (C, B*h*w)
        if self.rate < 1.0:
            start = self.pos0 + self.seen_pos
            n_keep = math.floor(self.rate * (start + b * h * w)) - math.floor(self.rate * start)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + self.batch0 + len(self.chunk_hashes))
            pick = torch.randperm(b * h * w, generator=gen)[:n_keep].to(flat.device)
            flat_q = flat.index_select(1, pick)
        else:
            flat_q = flat
        self.seen_pos += b * h * w
        self.kept += flat_q.shape[1]
        both = torch.cat([self.top, flat_q], 1)
        self.top = both.topk(min(self.t_keep, both.shape[1]), dim=1, sorted=True).values
        self.sums.append(flat.double().sum(1))
        # exemplars: ranked by the patch's max activation (Network Dissection's choice)
        pmax = acts.amax(dim=(2, 3)).T  # (C, B)
        first = self.patch0 + self.done
        idx = torch.arange(first, first + b, device=acts.device).expand(c, b)
        self.ex_val, self.ex_idx, self.ex_map = _top_exemplars(
            torch.cat([self.ex_val, pmax], 1), torch.cat([self.ex_idx, idx], 1),
            torch.cat([self.ex_map, acts.permute(1, 0, 2, 3)], 1), self.k)  # (C, k+B, h, w) in
        sel = [i for i in range(b) if (first + i) % self.profile_stride == 0]
        if sel:
            self.profiles.append(acts[sel].mean(dim=(2, 3)).float().cpu())  # (b', C)
        self.done += b

    # ---- checkpoint
    @property
    def sum(self) -> torch.Tensor:
        """(C,) float64 sum of every activation, added batch by batch in order."""
        total = torch.zeros(self.n_units, dtype=torch.float64, device=self.device)
        for s in self.sums:
            total += s.to(self.device)
        return total

    def state_dict(self) -> dict[str, torch.Tensor]:
        prof = torch.cat(self.profiles) if self.profiles else torch.zeros(0, self.n_units)
        sums = torch.stack(self.sums).cpu() if self.sums else torch.zeros(0, self.n_units, dtype=torch.float64)
        return {"top": self.top.cpu().contiguous(), "sums": sums, "ex_val": self.ex_val.cpu(),
                "ex_idx": self.ex_idx.cpu(), "ex_map": self.ex_map.cpu().contiguous(), "profiles": prof,
                "counters": torch.tensor([self.done, self.seen_pos, self.kept, self.patch0], dtype=torch.int64)}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        dev = self.device
        self.top = sd["top"].to(dev)
        self.sums = list(sd["sums"].to(dev)) if "sums" in sd else [sd["sum"].to(dev)]  # "sum": dissect-v3 checkpoints
        self.ex_val, self.ex_idx, self.ex_map = sd["ex_val"].to(dev), sd["ex_idx"].to(dev), sd["ex_map"].to(dev)
        self.profiles = [sd["profiles"]] if sd["profiles"].shape[0] else []
        self.done, self.seen_pos, self.kept = (int(v) for v in sd["counters"].tolist()[:3])


def _top_exemplars(vals: torch.Tensor, ids: torch.Tensor, maps: torch.Tensor, k: int):
    """The k best exemplars per unit: vals (C, M) patch max activations, ids (C, M) patch indices,
    maps (C, M, h, w). Highest value first, ties to the lower patch index (the candidates arrive in
    patch order, and the sort is stable), so shards merge to exactly the exemplars of one run."""
    h, w = maps.shape[2:]
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :k]  # (C, <=k)
    return vals.gather(1, order), ids.gather(1, order), maps.gather(1, order[:, :, None, None].expand(-1, -1, h, w))


def merge_runs(runs: Sequence[_Run]) -> _Run:
    """One run over all patches from runs over consecutive shards (in patch order; batch-aligned).

    Exact: the quantile keeps the top T of the union of each shard's top T (T is the whole run's),
    the sums add batch by batch in order, exemplars re-rank with the same tie rule, the unit-map
    profiles and the counters concatenate and add. A single run comes back unchanged."""
    if len(runs) == 1:
        return runs[0]
    runs = sorted(runs, key=lambda r: r.patch0)
    out = runs[0]
    for r in runs[1:]:
        if r.patch0 != out.patch0 + out.done:
            raise ValueError(f"shards do not meet: one ends at patch {out.patch0 + out.done}, the next starts at {r.patch0}")
        both = torch.cat([out.top, r.top.to(out.device)], 1)
        out.top = both.topk(min(out.t_keep, both.shape[1]), dim=1, sorted=True).values
        out.sums = out.sums + [s.to(out.device) for s in r.sums]
        out.ex_val, out.ex_idx, out.ex_map = _top_exemplars(
            torch.cat([out.ex_val, r.ex_val.to(out.device)], 1), torch.cat([out.ex_idx, r.ex_idx.to(out.device)], 1),
            torch.cat([out.ex_map, r.ex_map.to(out.device)], 1), out.k)
        out.profiles = out.profiles + r.profiles
        out.done += r.done
        out.seen_pos += r.seen_pos
        out.kept += r.kept
        out.chunk_hashes = out.chunk_hashes + r.chunk_hashes
    return out


def _save_checkpoint(directory: Path, run: _Run, meta: dict) -> None:
    tmp = directory / "state.safetensors.tmp"
    save_file(run.state_dict(), str(tmp),
              metadata={"meta": json.dumps(meta), "chunks": json.dumps(run.chunk_hashes)})
    os.replace(tmp, directory / "state.safetensors")


def _load_checkpoint(directory: Path, meta: dict):
    path = directory / "state.safetensors"
    if not path.is_file():
        return None, []
    try:
        with safe_open(str(path), framework="pt") as fh:
            md = fh.metadata()
        if json.loads(md["meta"]) != meta:
            return None, []
        return load_file(str(path)), json.loads(md["chunks"])
    except Exception:  # a torn or foreign checkpoint is simply recomputed
        return None, []


def _iter_batches(patches, batch_size: int):
    """Yield (N_b, S, S) float32 batches from an array/tensor or an iterable of batches."""
    if isinstance(patches, (np.ndarray, torch.Tensor)):
        arr = patches
        for i in range(0, arr.shape[0], batch_size):
            yield _to_numpy_batch(arr[i:i + batch_size])
    else:
        for b in patches:
            yield _to_numpy_batch(b)


def compute_dataset_stats(model: torch.nn.Module, card, layer: str, patches, config: StatsConfig, *,
                          progress: Progress | None = None, store=None, engine=None,
                          model_source=None) -> DissectionStats:
    """Per-unit dataset statistics of ``layer`` over a patch set (see module doc and ``StatsConfig``).

    patches: (N, S, S) grey patches in [0, 1] (array or tensor), or an iterable of such batches
        (then ``config`` needs ``n_patches`` and ``data_key`` unless it is a sequence). Batches are
        re-checked against the hashes of a checkpoint, so a wrong key can never resume onto other data.
        With an engine: an array or a ``shards.PatchSource`` (patches the workers load themselves).
    progress: called as ``progress(done_patches, n_patches, message)``.
    store: if given, the finished run is recorded (``Store.save_dissection_run``).
    engine: None runs here, in this process; a ``distributed.RayEngine`` maps shards of the patch set
        to workers that each load the model from ``model_source`` (a ``shards.CardModel``), writes
        each finished shard in ``cache_dir/<key>/shards/`` (a rerun skips those) and merges them
        exactly: the same numbers, and the same key, as in-process.
    """
    if not 0.5 <= config.quantile < 1.0:
        raise ValueError("quantile must be in [0.5, 1)")
    if engine is not None:
        return _compute_sharded(model, card, layer, patches, config, engine, model_source, progress, store)
    patches, n_patches, data_key = _patch_source(patches, config)
    config = replace(config, n_patches=n_patches, data_key=data_key)
    weights_sha = model_fingerprint(model)
    key = dataset_stats_key(card, weights_sha, layer, data_key, config)
    directory = Path(config.cache_dir) / key
    if (directory / "stats.safetensors").is_file():
        stats = load_dataset_stats(directory)
        report(progress, n_patches, n_patches, "dataset statistics loaded from cache")
        return stats
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "model_card": getattr(card, "name", ""), "layer": layer, "data_key": data_key,
            "n_patches": n_patches, "quantile": config.quantile, "top_k": config.top_k}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        run, patch_size = _fold_batches(model, card, layer, patches, config, directory, meta, progress)
    except _StaleData:
        if isinstance(patches, (np.ndarray, torch.Tensor, Sequence)):
            return compute_dataset_stats(model, card, layer, patches, config, progress=progress, store=store)
        raise
    stats = _finish_stats(merge_runs([run]), card, layer, config, key, weights_sha, patch_size)
    return _save_finished(stats, directory, config, store, progress)


def _save_finished(stats: DissectionStats, directory: Path, config: StatsConfig, store,
                   progress: Progress | None) -> DissectionStats:
    stats.save(directory)
    (directory / "state.safetensors").unlink(missing_ok=True)
    if store is not None:
        store.save_dissection_run(DissectionRun(
            key=stats.key, model_card=stats.model_card, weights_sha=stats.weights_sha, layer=stats.layer,
            data_key=stats.data_key, quantile=config.quantile, top_k=config.top_k, n_patches=stats.n_patches,
            n_units=stats.n_units, sample_rate=stats.sample_rate, path=str(directory)))
    report(progress, stats.n_patches, stats.n_patches, "dataset statistics done")
    return stats


# ---------------------------------------------------------------------- sharded (Ray)
@dataclass(frozen=True)
class _ShardJob:
    """What one worker needs for one shard (small: no model, no arrays beyond a test's patches)."""

    model_source: Any      # shards.CardModel: .load() -> (model, card)
    layer: str
    config: StatsConfig
    shard: ShardSpec
    source: Any            # the part of the patch source that holds the shard's patches
    out_dir: str
    meta: dict
    weights_sha: str
    n_patches: int         # of the whole patch set


def _stats_shard(job: _ShardJob, tell) -> int:
    """Worker: fold the shard's batches into a ``_Run`` and write it atomically. Returns the shard index."""
    model, card = job.model_source.load()
    if model_fingerprint(model) != job.weights_sha:
        raise StaleCacheError(f"the worker's {getattr(card, 'name', '')} weights differ from the driver's")
    dev = model_device(model, None)
    run, patch_size, bs = None, 0, job.config.batch_size
    for start in range(job.shard.patch0, job.shard.stop, bs):
        batch = _to_numpy_batch(job.source.load(start, min(start + bs, job.shard.stop)))  # (B, S, S)
        patch_size = batch.shape[-1]
        x = torch.as_tensor(np.asarray(card.preprocess(batch)), dtype=torch.float32)  # (B, 3, S, S)
        acts = compute_activations(model, [job.layer], x, device=dev)[job.layer]  # (B, C, h, w)
        if run is None:
            run = _Run(acts.shape[1], tuple(acts.shape[2:]), job.n_patches, job.config, dev, patch0=job.shard.patch0)
        run.update(acts, job.config.seed)
        run.chunk_hashes.append(_hash_batch(batch))
        tell(run.done)
    save_shard_file(Path(job.out_dir), job.shard.index, run.state_dict(), {
        **job.meta, "fshape": list(run.fshape), "patch_size": int(patch_size), "chunks": run.chunk_hashes})
    return job.shard.index


def _compute_sharded(model, card, layer: str, patches, config: StatsConfig, engine, model_source,
                     progress: Progress | None, store) -> DissectionStats:
    if model_source is None:
        raise ValueError("a distributed engine needs model_source= (how a worker loads the model)")
    if isinstance(patches, (np.ndarray, torch.Tensor)):
        arr, n_patches, data_key = _patch_source(patches, config)
        source = ArrayPatches(np.asarray(arr, dtype=np.float32), data_key)
    elif hasattr(patches, "part") and hasattr(patches, "load"):
        source, n_patches, data_key = patches, int(patches.n_patches), str(patches.data_key)
    else:
        raise ValueError("a distributed engine needs an array or a PatchSource, not an iterable of batches")
    config = replace(config, n_patches=n_patches, data_key=data_key)
    weights_sha = model_fingerprint(model)
    key = dataset_stats_key(card, weights_sha, layer, data_key, config)
    directory = Path(config.cache_dir) / key
    if (directory / "stats.safetensors").is_file():
        report(progress, n_patches, n_patches, "dataset statistics loaded from cache")
        return load_dataset_stats(directory)
    shard_dir = directory / "shards"
    plan = plan_shards(source.group_sizes(), config.batch_size, engine.n_shards)
    base = {"key": key, "layer": layer, "data_key": data_key, "n_patches": n_patches, "batch_size": config.batch_size}

    def meta_of(sp: ShardSpec) -> dict:
        return {**base, "shard": sp.index, "patch0": sp.patch0, "n": sp.n_patches}

    todo = [sp for sp in plan if load_shard_file(shard_dir, sp.index, meta_of(sp)) is None]
    before = n_patches - sum(sp.n_patches for sp in todo)
    worker_config = replace(config, device=None, cache_dir=str(config.cache_dir))
    jobs = [_ShardJob(model_source, layer, worker_config, sp, source.part(sp.patch0, sp.stop), str(shard_dir),
                      meta_of(sp), weights_sha, n_patches) for sp in todo]
    report(progress, before, n_patches, f"dataset statistics: {len(plan) - len(todo)} of {len(plan)} shards done")
    if jobs:
        engine.map(_stats_shard, jobs, total=n_patches - before, message="dataset statistics",
                   progress=None if progress is None else (
                       lambda d, n, msg: progress(before + d, n_patches, f"{msg}: {before + d}/{n_patches} patches")))
    runs, patch_size = [], 0
    for sp in plan:
        got = load_shard_file(shard_dir, sp.index, meta_of(sp))
        if got is None:
            raise ConceptLensError(f"shard {sp.index} of the dataset statistics has no result; run again to resume")
        tensors, meta = got
        run = _Run(tensors["top"].shape[0], tuple(meta["fshape"]), n_patches, config, torch.device("cpu"),
                   patch0=sp.patch0)
        run.load_state_dict(tensors)
        run.chunk_hashes = list(meta["chunks"])
        runs.append(run)
        patch_size = meta["patch_size"]
    run = merge_runs(runs)
    if run.done != n_patches:
        raise ValueError(f"expected {n_patches} patches, the shards hold {run.done}")
    directory.mkdir(parents=True, exist_ok=True)
    stats = _finish_stats(run, card, layer, config, key, weights_sha, patch_size)
    stats = _save_finished(stats, directory, config, store, progress)
    for sp in plan:
        shard_file(shard_dir, sp.index).unlink(missing_ok=True)
    return stats


class _StaleData(StaleCacheError):
    """The data differ from an interrupted run's checkpoint (which is then dropped)."""


def _patch_source(patches, config: StatsConfig) -> tuple[Any, int, str]:
    """(patches as an array/tensor or the iterable as given, number of patches, data key)."""
    n_patches, data_key = config.n_patches, config.data_key
    if isinstance(patches, (np.ndarray, torch.Tensor)):
        arr = patches if isinstance(patches, torch.Tensor) else np.asarray(patches, dtype=np.float32)
        if arr.ndim != 3:
            raise ValueError(f"patches must be (N, S, S), got {tuple(arr.shape)}")
        if data_key is None:
            h = hashlib.sha256()
            for b in _iter_batches(arr, 256):
                h.update(_hash_batch(b).encode())
            data_key = h.hexdigest()[:24]
        patches, n_patches = arr, int(arr.shape[0])
    elif isinstance(patches, Sequence) and n_patches is None:
        n_patches = sum(int(np.shape(b)[0]) if np.ndim(b) == 3 else 1 for b in patches)
    if isinstance(patches, Sequence) and data_key is None:
        data_key = hashlib.sha256("".join(_hash_batch(_to_numpy_batch(b)) for b in patches).encode()).hexdigest()[:24]
    if n_patches is None or data_key is None:
        raise ValueError("an iterable of batches needs n_patches= and data_key=")
    if n_patches < 1:
        raise ValueError("no patches")
    return patches, int(n_patches), data_key


def _fold_batches(model, card, layer: str, patches, config: StatsConfig, directory: Path, meta: dict,
                  progress: Progress | None) -> tuple[_Run, int | None]:
    """Fold every batch's activations into a running ``_Run``, checkpointing after each batch and
    skipping the batches an interrupted run already folded in. Returns (run, patch side S)."""
    dev = model_device(model, config.device)
    n_patches = config.n_patches
    run: _Run | None = None
    saved, saved_chunks = _load_checkpoint(directory, meta)
    patch_size = None
    for bi, batch in enumerate(_iter_batches(patches, config.batch_size)):
        patch_size = batch.shape[-1]
        bhash = _hash_batch(batch)
        if saved is not None and bi < len(saved_chunks):
            if bhash == saved_chunks[bi]:
                continue  # already folded in before the interruption
            # the data differ from the checkpoint: never fold new data into stale numbers
            (directory / "state.safetensors").unlink(missing_ok=True)
            raise _StaleData(
                f"batch {bi} differs from the checkpoint of data key {config.data_key!r}; the checkpoint was "
                "discarded. Give each data set its own data_key and run again.")
        x = torch.as_tensor(np.asarray(card.preprocess(batch)), dtype=torch.float32)  # (B, 3, S, S)
        acts = compute_activations(model, [layer], x, device=dev)[layer]  # (B, C, h, w)
        if acts.dim() != 4:
            raise ValueError(f"layer {layer!r} gives {tuple(acts.shape)}, not a (N, C, h, w) feature map")
        if run is None:
            run = _Run(acts.shape[1], tuple(acts.shape[2:]), n_patches, config, dev)
            if saved is not None:
                run.load_state_dict(saved)
                run.chunk_hashes = list(saved_chunks)
                saved = None
        run.update(acts, config.seed)
        run.chunk_hashes.append(bhash)
        _save_checkpoint(directory, run, meta)
        report(progress, run.done, n_patches, f"dataset statistics: {run.done}/{n_patches} patches")
    if run is None and saved is not None:
        # every batch was already in the checkpoint: rebuild the run from it
        run = _Run(saved["top"].shape[0], tuple(saved["ex_map"].shape[2:]), n_patches, config, dev)
        run.load_state_dict(saved)
        run.chunk_hashes = list(saved_chunks)
    if run is None or run.done != n_patches:
        got = 0 if run is None else run.done
        raise ValueError(f"expected {n_patches} patches, the data gave {got}")
    return run, patch_size


def _finish_stats(run: _Run, card, layer: str, config: StatsConfig, key: str, weights_sha: str,
                  patch_size: int | None) -> DissectionStats:
    """Thresholds, means, exemplars (padded to top_k) and the unit map of a finished run."""
    quantile, top_k = config.quantile, config.top_k
    total = run.sum  # (C,) float64
    thresholds = _quantile_from_top(run.top, run.kept, quantile).float()
    thresholds, n_tied = _untie_at_max(thresholds, run.top[:, 0].float(), total / max(run.seen_pos, 1))
    prof = torch.cat(run.profiles) if run.profiles else torch.zeros(0, run.n_units)
    unit_xy, unit_var = _pca_units(prof)
    n_have = run.ex_val.shape[1]
    h, w = run.fshape
    pad = top_k - n_have
    ex_val, ex_idx, ex_map = run.ex_val.cpu(), run.ex_idx.cpu(), run.ex_map.cpu()
    if pad > 0:  # fewer patches than k
        ex_val = torch.cat([ex_val, torch.full((run.n_units, pad), float("nan"))], 1)
        ex_idx = torch.cat([ex_idx, torch.full((run.n_units, pad), -1, dtype=torch.int64)], 1)
        ex_map = torch.cat([ex_map, torch.zeros(run.n_units, pad, h, w)], 1)
    return DissectionStats(
        key=key, model_card=getattr(card, "name", ""), weights_sha=weights_sha, layer=layer,
        data_key=config.data_key, quantile=float(quantile), top_k=int(top_k), n_patches=int(config.n_patches),
        patch_size=int(patch_size or 0), feature_shape=(int(h), int(w)), n_values=int(run.kept),
        sample_rate=float(run.kept / max(run.seen_pos, 1)),
        thresholds=thresholds.cpu().numpy(), mean=(total / max(run.seen_pos, 1)).float().cpu().numpy(),
        top_values=ex_val.numpy(), top_indices=ex_idx.numpy(), top_maps=ex_map.numpy(),
        unit_xy=unit_xy, unit_xy_var=unit_var, n_tied_at_max=n_tied, version=STATS_VERSION,
    )


# ====================================================================== drawings
def drawing_to_mask(shape: str, geometry: Any, size: int | tuple[int, int]) -> np.ndarray:
    """Rasterise a drawing in patch pixels (x = column, y = row) to a (size, size) bool mask.

    shape "polygon": geometry = [[x, y], ...] (>= 3 points) or {"points": [...]}
    shape "freehand": {"points": [[x, y], ...], "width": stroke width in px} (or a point list,
        width 3); the stroke is drawn with round caps; a closed stroke (``"closed": true``) is
        also filled.
    shape "rect": [x0, y0, x1, y1], {"x0","y0","x1","y1"} or {"left","top","width","height"}.
    Raises ValidationError for an unknown shape, malformed geometry or an empty result.
    """
    hh, ww = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    mask = np.zeros((hh, ww), dtype=bool)

    def points_of(g):
        pts = g.get("points") if isinstance(g, dict) else g
        try:
            arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"The {shape} drawing's points are not [x, y] pairs.") from exc
        if not np.all(np.isfinite(arr)):
            raise ValidationError(f"The {shape} drawing has non-finite points.")
        return arr

    if shape == "polygon":
        pts = points_of(geometry)
        if len(pts) < 3:
            raise ValidationError("A polygon needs at least three points.")
        rr, cc = polygon(pts[:, 1], pts[:, 0], shape=(hh, ww))
        mask[rr, cc] = True
    elif shape == "freehand":
        pts = points_of(geometry)
        width = float(geometry.get("width", 3.0)) if isinstance(geometry, dict) else 3.0
        if len(pts) == 0 or width <= 0:
            raise ValidationError("The freehand stroke has no points.")
        radius = max(width / 2.0, 0.5)
        # densify the polyline, then stamp a disk at every pixel of it (round caps and joins)
        pix = [np.round(pts[0]).astype(int)]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            rr, cc = line(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
            pix.append(np.stack([cc, rr], 1))
        pix = np.unique(np.vstack([p.reshape(-1, 2) for p in pix]), axis=0)
        r = int(math.ceil(radius))
        dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
        keep = dy ** 2 + dx ** 2 <= radius ** 2
        ys = (pix[:, 1:2] + dy[keep][None, :]).ravel()
        xs = (pix[:, 0:1] + dx[keep][None, :]).ravel()
        ok = (ys >= 0) & (ys < hh) & (xs >= 0) & (xs < ww)
        mask[ys[ok], xs[ok]] = True
        if isinstance(geometry, dict) and geometry.get("closed") and len(pts) >= 3:
            rr, cc = polygon(pts[:, 1], pts[:, 0], shape=(hh, ww))
            mask[rr, cc] = True
    elif shape == "rect":
        g = geometry
        try:
            if isinstance(g, dict) and "left" in g:
                x0, y0 = float(g["left"]), float(g["top"])
                x1, y1 = x0 + float(g["width"]), y0 + float(g["height"])
            elif isinstance(g, dict):
                x0, y0, x1, y1 = (float(g[k]) for k in ("x0", "y0", "x1", "y1"))
            else:
                x0, y0, x1, y1 = (float(v) for v in g)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError("A rectangle needs x0, y0, x1, y1 (or left, top, width, height).") from exc
        xa, xb = sorted((x0, x1))
        ya, yb = sorted((y0, y1))
        # pixel (r, c) covers [c, c+1) x [r, r+1); a rectangle takes the pixels whose centres it holds
        c0, c1 = max(int(math.ceil(xa - 0.5)), 0), min(int(math.ceil(xb - 0.5)), ww)
        r0, r1 = max(int(math.ceil(ya - 0.5)), 0), min(int(math.ceil(yb - 0.5)), hh)
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    else:
        raise ValidationError(f"Unknown drawing shape {shape!r}: use polygon, freehand or rect.")
    if not mask.any():
        raise ValidationError("The drawing is empty (no pixel of the patch inside it): draw a region first.")
    return mask


def mask_to_png(mask: np.ndarray) -> bytes:
    """A bool mask as a 1-bit PNG (what ``annotations.mask_png`` stores)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool)).convert("1").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def mask_from_png(data: bytes) -> np.ndarray:
    """The bool mask (S, S) of a drawing's 1-bit PNG (``mask_to_png``'s inverse)."""
    return np.array(Image.open(io.BytesIO(data)).convert("1"), dtype=bool)


@dataclass
class UnitMatch:
    """IoU of every unit with one drawing. ious (C,); units_above (K,) sorted by IoU, descending."""

    ious: np.ndarray
    best_unit: int
    best_iou: float
    units_above: np.ndarray
    tau: float


def match_drawing(activation, thresholds, drawing_mask, *, tau: float = 0.2, prepared=None) -> UnitMatch:
    """Which units does a drawing pick out? activation (C, h, w), thresholds (C,), mask (S, S).

    prepared: the patch's ``unit_iou.UnitMasks`` for these activation and thresholds, when the
    caller keeps them per patch (then only the drawing's part is computed; same IoUs)."""
    mask = np.asarray(drawing_mask, dtype=bool)
    if not mask.any():
        raise ValidationError("The drawing is empty: draw a region before matching units.")
    if prepared is not None:
        ious = unit_ious(prepared, mask)
    else:
        ious = compute_unit_ious(activation, thresholds, mask)
    above = np.nonzero(ious > tau)[0]
    above = above[np.argsort(-ious[above], kind="stable")]
    best = int(np.argmax(ious))
    return UnitMatch(ious=ious, best_unit=best, best_iou=float(ious[best]), units_above=above, tau=float(tau))


# ====================================================================== labeling rule
@dataclass
class LabelResult:
    """Outcome of saving a drawing: its id, the units above tau, and the labels it won."""

    annotation_id: str
    units_above: np.ndarray                      # (K,) units with IoU > tau
    ious_above: np.ndarray                       # (K,)
    labeled_units: np.ndarray                    # units whose label is now this drawing's
    replaced: dict[int, str] = field(default_factory=dict)  # unit -> concept it had before


def label_units_from_drawing(store, drawing: DrawingRecord, *, layer: str, ious, tau: float = 0.2,
                             mask: np.ndarray | None = None) -> LabelResult:
    """Save a drawing and apply the labeling rule to every unit with IoU > tau.

    drawing: the reader's drawing under ``drawing.model_card``; its ``mask_png`` is rasterised here
    (from ``mask`` (S, S) bool when given, else from its shape and geometry) when it is empty.
    ious (C,) from ``match_drawing``/``compute_unit_ious`` at ``layer``. The drawing, its IoUs above
    tau (annotation_units) and the recomputed unit labels are written in one transaction.
    """
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    if not drawing.mask_png:
        if mask is None:
            mask = drawing_to_mask(drawing.shape, drawing.geometry, drawing.patch_size)
        if not np.asarray(mask).any():
            raise ValidationError("The drawing is empty: draw a region before saving.")
        drawing = replace(drawing, mask_png=mask_to_png(mask))
    model_card = drawing.model_card
    above = np.nonzero(ious > tau)[0]
    before = {r["unit"]: r for r in store.list_unit_labels(model_card, layer)}
    aid = store.save_annotation(drawing, unit_ious={"model_card": model_card, "layer": layer,
                                                    "units": above.tolist(), "ious": ious[above].tolist()})
    after = store.list_unit_labels(model_card, layer)
    won = np.array(sorted(r["unit"] for r in after if r["annotation_id"] == aid), dtype=np.int64)
    replaced = {int(u): before[int(u)]["concept"] for u in won
                if int(u) in before and before[int(u)]["annotation_id"] != aid}
    return LabelResult(annotation_id=aid, units_above=above, ious_above=ious[above], labeled_units=won,
                       replaced=replaced)


def undo_annotation(store, annotation_id: str, actor: str) -> dict[int, str | None]:
    """Soft-delete a drawing; its labels go and every unit falls back to its next-best live drawing.

    Returns {unit: concept now (None if unlabeled)} for each unit the drawing had labeled.
    """
    rows = store.list_annotation_units(annotation_id=annotation_id, include_deleted=True)
    pairs = {(r["model_card"], r["layer"]) for r in rows}
    before = {}
    for card_name, layer in pairs:
        for r in store.list_unit_labels(card_name, layer):
            if r["annotation_id"] == annotation_id:
                before[(card_name, layer, r["unit"])] = r
    store.delete_annotation(annotation_id, actor)
    out: dict[int, str | None] = {}
    for card_name, layer in pairs:
        now = {r["unit"]: r["concept"] for r in store.list_unit_labels(card_name, layer)}
        for (c, l, u) in before:
            if (c, l) == (card_name, layer):
                out[int(u)] = now.get(u)
    return out


def unit_labels(store, model_card: str, layer: str):
    """The current unit labels of a layer as a table (pandas DataFrame, one row per labeled unit):
    unit, concept, iou, annotation_id, image_id, reader, labeled_at."""
    cols = ["unit", "concept", "iou", "annotation_id", "image_id", "reader", "labeled_at"]
    return pd.DataFrame(store.list_unit_labels(model_card, layer), columns=cols)


def units_by_concept(store, model_card: str, layer: str) -> dict[str, np.ndarray]:
    """{concept: labeled units (sorted int64 array)} for one layer."""
    out: dict[str, list[int]] = {}
    for r in store.list_unit_labels(model_card, layer):
        out.setdefault(r["concept"], []).append(int(r["unit"]))
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in out.items()}

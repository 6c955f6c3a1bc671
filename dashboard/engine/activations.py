"""Feature maps of named layers, captured with forward hooks that are always removed.

``compute_activations`` is the one way the concept engine (and inference) reads a layer:
hooks are registered, one no-grad forward pass runs in eval mode, and the hooks are removed
and the model's train/eval flags restored (``model_state_guard``) whatever happens. Hooks return
``None``, so the model's outputs are exactly those of a hook-free pass.
"""
from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dashboard.engine.model_state import lock_for, model_device, model_state_guard


class _StopForward(Exception):
    """Raised by the last hook when the rest of the network is not needed."""


def list_layers(model: nn.Module, *, leaves_only: bool = False) -> list[str]:
    """Names of the model's sub-modules in registration order (the root '' excluded).

    ``leaves_only`` keeps modules without children (convs, norms, activations); otherwise
    blocks such as ``blocks.6`` or ``layer4`` are listed too, which are the usual concept layers.
    """
    names = []
    for name, mod in model.named_modules():
        if not name:
            continue
        if leaves_only and any(True for _ in mod.children()):
            continue
        names.append(name)
    return names


def layer_shapes(model: nn.Module, layers: list[str], input_size: int | tuple[int, int],
                 *, device: str | torch.device | None = None) -> dict[str, tuple[int, ...]]:
    """Output shape ``(C, h, w)`` of each layer for one ``(1, 3, H, W)`` zero input."""
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    dev = model_device(model, device)
    x = torch.zeros(1, 3, *hw, device=dev)  # (1, 3, H, W)
    acts = compute_activations(model, layers, x, device=dev)
    return {k: tuple(v.shape[1:]) for k, v in acts.items()}


def compute_activations(model: nn.Module, layers: list[str], x: torch.Tensor, *,
                        device: str | torch.device | None = None, batch_size: int | None = None,
                        with_output: bool = False, out_device: str | torch.device | None = None):
    """Feature maps of ``layers`` for a batch of preprocessed inputs.

    x: ``(N, 3, H, W)`` float, already normalised (``card.preprocess``).
    device: where the forward pass runs; default the model's own device (the model is not moved).
    batch_size: forward ``x`` in chunks of this many images (memory bound); default all at once.
    with_output: also return the model output ``(N, K)``; otherwise the forward pass stops right
        after the last requested layer (cheaper for early layers).
    out_device: where the returned tensors live; default the compute device.

    Returns ``{layer: (N, C, h, w)}`` (or the layer's own output shape), plus the output if asked:
    ``(acts, logits)``. Values are copies (safe against later in-place ops such as ReLU(inplace)).
    """
    if not layers:
        raise ValueError("compute_activations needs at least one layer name")
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules or name == ""]
    if missing:
        raise KeyError(f"unknown layer(s) {missing}; see list_layers(model)")
    dev = model_device(model, device)
    odev = dev if out_device is None else torch.device(out_device)
    layers = list(dict.fromkeys(layers))  # unique, ordered
    n = x.shape[0]
    step = n if not batch_size else int(batch_size)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    outputs: list[torch.Tensor] = []
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_mod, _inp, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            # clone: a following inplace activation would otherwise rewrite what we captured
            captured[name] = t.detach().to(odev, copy=True)
            if not with_output and len(captured) == len(layers):
                raise _StopForward
            return None

        return hook

    handles = []
    # the model's lock: hooks of two sessions on one shared model would capture (and stop) each
    # other's forward passes
    with lock_for(model):
        try:
            for name in layers:
                handles.append(modules[name].register_forward_hook(make_hook(name)))
            with torch.no_grad(), model_state_guard(model, freeze=False):
                for start in range(0, n, step):
                    xb = x[start:start + step].to(dev)  # (B, 3, H, W)
                    captured.clear()
                    try:
                        out = model(xb)
                        if with_output:
                            outputs.append(out.detach().to(odev))
                    except _StopForward:
                        pass
                    not_run = [name for name in layers if name not in captured]
                    if not_run:
                        raise RuntimeError(f"layer(s) {not_run} did not run in the forward pass")
                    for name in layers:
                        chunks[name].append(captured[name])
        finally:
            for h in handles:
                h.remove()
            captured.clear()
    acts = {name: (c[0] if len(c) == 1 else torch.cat(c)) for name, c in chunks.items()}
    if with_output:
        return acts, (outputs[0] if len(outputs) == 1 else torch.cat(outputs))
    return acts


# ---------------------------------------------------------------- fingerprints and a disk cache
_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes, bytes); changes with any weight.

    Memoised per model object and invalidated by any in-place change of a tensor (``_version``),
    which is how ``load_state_dict`` and optimisers write weights.
    """
    sd = model.state_dict()
    stamp = tuple((k, t.data_ptr(), t._version) for k, t in sd.items())
    hit = _FINGERPRINTS.get(model)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    h = hashlib.sha256()
    for name, t in sd.items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()
    _FINGERPRINTS[model] = (stamp, digest)
    return digest


def patch_key(patch: np.ndarray) -> str:
    """Content hash of a grey patch (float32 bytes and shape)."""
    p = np.ascontiguousarray(np.asarray(patch, dtype=np.float32))
    return hashlib.sha256(str(p.shape).encode() + p.tobytes()).hexdigest()[:32]


def compute_patch_activations(model: nn.Module, card, layer: str, patches: list[np.ndarray], *,
                              cache_dir: Path | str | None = None, device=None,
                              batch_size: int = 8) -> list[torch.Tensor]:
    """Activations ``(C, h, w)`` of ``layer`` for grey patches ``(S, S)`` in [0, 1], disk-cached.

    The cache file is keyed by the model's weights, the card's preprocessing, the layer and the
    patch content, so a changed model or patch never reads stale numbers. Missing patches are
    computed in batches (patches of one size per batch). Returned tensors are float32 on the CPU.
    """
    fp = model_fingerprint(model)
    prep = hashlib.sha256(repr((getattr(card, "name", ""), getattr(card, "mean", None),
                                getattr(card, "std", None))).encode()).hexdigest()[:8]
    folder = Path(cache_dir) / "activations" / f"{fp[:16]}-{prep}" / layer if cache_dir else None
    keys = [patch_key(p) for p in patches]
    out: list[torch.Tensor | None] = [None] * len(patches)
    if folder is not None:
        for i, k in enumerate(keys):
            f = folder / f"{k}.safetensors"
            if f.is_file():
                try:
                    out[i] = load_file(str(f))["a"]
                except Exception:  # a torn file is recomputed
                    out[i] = None
    todo: dict[tuple, list[int]] = {}
    for i, a in enumerate(out):
        if a is None:
            todo.setdefault(np.shape(patches[i]), []).append(i)
    for _shape, idx in todo.items():
        for s in range(0, len(idx), batch_size):
            sel = idx[s:s + batch_size]
            g = np.stack([np.asarray(patches[i], dtype=np.float32) for i in sel])  # (B, S, S)
            x = torch.as_tensor(np.asarray(card.preprocess(g)), dtype=torch.float32)  # (B, 3, S, S)
            acts = compute_activations(model, [layer], x, device=device, out_device="cpu")[layer]
            for j, i in enumerate(sel):
                out[i] = acts[j].contiguous()
                if folder is not None:
                    folder.mkdir(parents=True, exist_ok=True)
                    tmp = folder / f"{keys[i]}.{os.getpid()}.tmp"
                    save_file({"a": out[i]}, str(tmp))
                    os.replace(tmp, folder / f"{keys[i]}.safetensors")
    return out  # type: ignore[return-value]

"""Keep a shared (cached) model safe while one session runs it: a lock per model and a
context manager that restores the model's state and removes any hook left behind.

Lesson from torch-cam: a Streamlit app caches ONE model object for all sessions, and
attribution libraries register hooks, flip ``requires_grad`` and may leave the model in
another mode when they fail halfway. Everything that runs the model from ``dashboard``
(prediction, lesion maps, activations, attribution) takes ``lock_for(model)`` and runs
inside ``model_state_guard(model)``. The lock is the model's ``ModelQueue``: a re-entrant lock
whose waiting line puts readers' work before head starts and takes sessions in turn.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dashboard.engine.model_queue import ModelQueue

# Every per-module hook registry torch keeps (those that exist in the running torch).
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)

_LOCKS: weakref.WeakKeyDictionary[nn.Module, ModelQueue] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def lock_for(model: nn.Module) -> ModelQueue:
    """The one re-entrant lock of ``model``, its ``ModelQueue`` (created on first use, dropped
    with the model).

    Hold it while running the model: a hook registered by one session's attribution
    would otherwise fire inside another session's forward pass. Waiters are served
    foreground first, then in turn by session (see ``model_queue``).
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = ModelQueue()
            _LOCKS[model] = lock
        return lock


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """Where a run's inputs go: ``device`` when given, else the device of the model's parameters
    (CPU for a parameter-free module). The model itself is never moved (it belongs to the cache)."""
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Number of registered hooks of each kind over all modules of ``model`` (for checks)."""
    counts = dict.fromkeys(HOOK_DICTS, 0)
    for module in model.modules():
        for name in HOOK_DICTS:
            counts[name] += len(getattr(module, name, ()) or ())
    return counts


@contextmanager
def model_state_guard(
    model: nn.Module, *, eval_mode: bool = True, freeze: bool = True, no_inplace: bool = False
) -> Iterator[nn.Module]:
    """Record the model's state, optionally prepare it for inference, and restore it all after.

    Recorded and restored (even when the body raises): the ``training`` flag of every
    module, ``requires_grad`` and ``.grad`` of every parameter, every per-module hook
    dict (hooks added inside are removed, hooks removed inside come back) and the
    ``inplace`` flag of modules that have one.

    eval_mode   put the model in eval mode inside (BatchNorm/Dropout deterministic)
    freeze      ``requires_grad_(False)`` on parameters inside (gradients flow to inputs only)
    no_inplace  set ``inplace=False`` on activations inside (module backward hooks, as
                captum's guided backprop uses, fail on in-place outputs)
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    # only non-empty hook dicts are copied; on exit every dict not recorded must be empty
    hooks = [
        {name: OrderedDict(d) for name in HOOK_DICTS if (d := getattr(m, name, None))}
        for m in modules
    ]
    inplace = [(m, m.inplace) for m in modules if isinstance(getattr(m, "inplace", None), bool)]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        if eval_mode:
            model.eval()
        if freeze:
            for p in params:
                p.requires_grad_(False)
        if no_inplace:
            for m, _ in inplace:
                m.inplace = False
        yield model
    finally:
        for m, flag in zip(modules, training):
            m.training = flag
        for m, saved in zip(modules, hooks):
            for name in HOOK_DICTS:
                current = getattr(m, name, None)
                if current is None or (not current and name not in saved):
                    continue
                current.clear()
                current.update(saved.get(name, ()))
        for m, flag in inplace:
            m.inplace = flag
        with torch.no_grad():
            for p, flag, grad in zip(params, requires_grad, grads):
                p.requires_grad_(flag)
                p.grad = grad

"""TCAV (Kim et al. 2018) with concept activation vectors learned from readers' drawings.

What a CAV is here. A drawing gives feature vectors (C,) at the feature-map positions it covers
(``probes.collect_probe_data``; the same positions the probes train on); background positions of
the same patches are the random pool. For each concept k and run r we fit a class-balanced L2
logistic regression "concept k vs random set A_r" (A_r: positions drawn from the pool with seed
r); the CAV is its normal in raw activation space, w / std, unit length. The null runs are
"A_r vs B_r" (B_r disjoint from A_r). All K*R + R classifiers are fitted together
(``probes.fit_probes``). The probe's own direction (W_k - W_background) / std is scored as well.

What the score is. For input x and the target class logit f_t, the layer's gradient g(x) (C, h, w)
is summed over positions, G(x) = sum_p g(x)[:, p] (C,), and the directional derivative along a
CAV v is S(x) = G(x) . v. This is exactly captum's TCAV score when the flattened CAV is v
repeated over the h*w positions (captum flattens the (C, h, w) gradient and takes its dot product
with the flattened CAV). Per CAV: ``score`` = fraction of inputs with S > 0 (captum's
"sign_count"), ``magnitude`` = mean S over inputs (captum 0.9's "magnitude").

Engines. ``engine="batched"`` (default) computes G for all inputs with one backward pass and
every score for all inputs, concepts and runs with ONE matmul G @ V^T. ``engine="captum"`` runs
``captum.concept.TCAV`` itself: captum computes the layer gradients
(``LayerGradientXActivation(multiply_by_inputs=False)``), flattens them, and computes sign_count and
magnitude for each experimental set [concept_k, random_r] and [random_r, random_r'] with its
own matmuls; our ``Classifier`` subclass hands captum the CAVs above (captum's activation-
generation step needs example inputs per concept; since our CAVs come from drawn positions, not
whole images, each captum Concept gets one blank 32-px input whose activations our classifier
ignores). Both engines give the same numbers (tested).

Significance (ours, as in Kim et al. and captum's tutorial): a two-sided Welch t-test
(``scipy.stats.ttest_ind``) of the concept's R run scores against the R random-vs-random
scores; significant when p < alpha / K (Bonferroni over the K concepts tested).
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from captum.concept import TCAV, Concept
from captum.concept._utils.classifier import Classifier
from captum.concept._utils.common import concepts_to_str
from scipy.stats import ttest_ind
from torch.utils.data import DataLoader, TensorDataset

from dashboard.engine.inference import target_class
from dashboard.engine.model_state import model_device, model_state_guard
from dashboard.engine.probes import ProbeConfig, ProbeData, ProbeVersion, collect_probe_data, fit_probes

__all__ = ["TCAVConcept", "TCAVResult", "TCAVConfig", "compute_cavs", "compute_layer_gradients", "compute_tcav",
           "run_tcav", "CAVSet"]


@dataclass(frozen=True)
class TCAVConfig:
    """How TCAV runs (module doc).

    target       class index or name (default: the card's positive class)
    n_runs       random sets A_r (concept-vs-random CAVs per concept, and random-vs-random nulls)
    alpha        significance level before the Bonferroni correction over concepts
    engine       "batched" (one matmul) or "captum" (``captum.concept.TCAV``); the same numbers
    random_size  positions per random set
    seed         of the random sets (and of the background positions ``run_tcav`` collects)
    device       where the gradients are computed (default: the model's device)
    cache_dir    ``run_tcav``: the activation cache of the drawn patches
    save         ``run_tcav``: store the result in ``tcav_runs``
    """

    target: int | str | None = None
    n_runs: int = 10
    alpha: float = 0.05
    engine: str = "batched"
    random_size: int = 500
    seed: int = 0
    device: str | torch.device | None = None
    cache_dir: Path | str | None = None
    save: bool = True


@dataclass
class CAVSet:
    """CAVs of one layer. vectors (M, C) unit length in raw activation space; concept_idx (K, R)
    and random_idx (R,) index rows of vectors; accuracy (M,) training accuracy of each classifier."""

    layer: str
    concepts: list[str]
    vectors: np.ndarray
    concept_idx: np.ndarray
    random_idx: np.ndarray
    accuracy: np.ndarray
    n_runs: int


@dataclass
class TCAVConcept:
    concept: str
    score: float                  # mean over runs of the fraction of inputs with S > 0
    magnitude: float              # mean over runs of the mean directional derivative
    p_value: float
    significant: bool
    run_scores: list[float]
    random_scores: list[float]
    probe_score: float | None     # the score of the probe's own direction, if a probe was given
    cav_accuracy: float           # mean training accuracy of the concept's CAV classifiers


@dataclass
class TCAVResult:
    model_card: str
    layer: str
    target: int
    target_name: str
    n_inputs: int
    n_runs: int
    alpha: float
    alpha_corrected: float
    engine: str
    concepts: dict[str, TCAVConcept] = field(default_factory=dict)
    probe_version: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TCAVResult:
        d = dict(d)
        d["concepts"] = {k: TCAVConcept(**v) for k, v in d["concepts"].items()}
        return cls(**d)


def compute_cavs(data: ProbeData, *, concepts: list[str] | None = None, n_runs: int = 10,
                 random_size: int = 500, l2: float = 0.1, seed: int = 0, max_iter: int = 50) -> CAVSet:
    """Concept-vs-random and random-vs-random CAVs from drawn positions at ``data.layer`` (module doc)."""
    concepts = [c for c in (concepts or data.classes[1:]) if c in data.classes[1:]]
    y = data.y
    pool = torch.nonzero(y == 0).flatten()
    if len(pool) < 4:
        raise ValueError("TCAV needs background positions for its random concepts; draw on more patches")
    m = int(min(random_size, len(pool) // 2))
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    k = len(concepts)
    trains, labels = [], []
    a_sets = []
    for _r in range(n_runs):
        perm = pool[torch.randperm(len(pool), generator=gen)]
        a_r, b_r = perm[:m], perm[m:2 * m]
        a_sets.append(a_r)
        for c in concepts:  # concept k vs A_r
            ci = data.classes.index(c)
            tr = (y == ci).clone()
            tr[a_r] = True
            trains.append(tr)
            labels.append((y == ci).long())
        tr = torch.zeros(n, dtype=torch.bool)
        tr[a_r] = True
        tr[b_r] = True
        lab = torch.zeros(n, dtype=torch.int64)
        lab[a_r] = 1
        trains.append(tr)
        labels.append(lab)
    train = torch.stack(trains)  # (M, N)
    lab = torch.stack(labels)  # (M, N)
    W, b, mu, sd = fit_probes(data.X, lab, 2, train, l2=l2, max_iter=max_iter)
    v = (W[:, 1] - W[:, 0]) / sd  # (M, C) normal of each decision boundary in raw space
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    with torch.no_grad():
        logits = torch.einsum("nc,mkc->mnk", data.X, W / sd[:, None, :]) + (b - torch.einsum(
            "mkc,mc->mk", W, mu / sd))[:, None, :]  # (M, N, 2)
        acc = ((logits.argmax(2) == lab).float() * train).sum(1) / train.sum(1)
    per_run = k + 1
    concept_idx = np.array([[r * per_run + j for r in range(n_runs)] for j in range(k)], dtype=np.int64)
    random_idx = np.array([r * per_run + k for r in range(n_runs)], dtype=np.int64)
    return CAVSet(layer=data.layer, concepts=concepts, vectors=v.numpy().astype(np.float32), concept_idx=concept_idx,
                  random_idx=random_idx, accuracy=acc.numpy(), n_runs=n_runs)


def compute_layer_gradients(model, layer: str, x: torch.Tensor, target: int, *, device=None,
                            batch_size: int = 16) -> torch.Tensor:
    """d logit_target / d activation of ``layer`` for each input: (N, 3, H, W) -> (N, C, h, w).

    The hook swaps the layer output for a leaf copy (so later in-place ops cannot disturb it) and is
    removed in a finally; eval mode is used and the model's flags restored.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        raise KeyError(f"unknown layer {layer!r}")
    dev = model_device(model, device)
    out = []
    holder: dict[str, torch.Tensor] = {}

    def hook(_m, _i, o):
        leaf = o.detach().requires_grad_(True)
        holder["a"] = leaf
        return leaf.clone()

    handle = modules[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad(), model_state_guard(model, freeze=False):
            for s in range(0, x.shape[0], batch_size):
                xb = x[s:s + batch_size].to(dev)  # (B, 3, H, W)
                logits = model(xb)  # (B, K)
                (grad,) = torch.autograd.grad(logits[:, target].sum(), holder["a"])
                out.append(grad.detach().cpu())  # (B, C, h, w)
    finally:
        handle.remove()
        holder.clear()
    return torch.cat(out)


def _ttest(a: np.ndarray, b: np.ndarray) -> float:
    if np.allclose(a, a[0]) and np.allclose(b, b[0]):
        # no spread in either group: the difference is either nothing or certain
        return 1.0 if np.isclose(a[0], b[0]) else 0.0
    with warnings.catch_warnings():  # one constant group is fine for Welch's test; scipy still warns
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return 1.0 if not np.isfinite(p) else p


class _PrecomputedCAVs(Classifier):
    """captum Classifier that returns CAVs we computed, for whichever concept ids it is given."""

    def __init__(self, table: dict[tuple[int, int], np.ndarray], hw: int):
        self.table = table  # (first id, second id) -> flattened CAV of the first concept
        self.hw = hw
        self._ids: list[int] = []

    def train_and_eval(self, dataloader, **kwargs):
        ids: list[int] = []
        for _x, y in dataloader:  # only the labels: which concepts are in this set
            for v in y.tolist():
                if v not in ids:
                    ids.append(v)
        self._ids = ids
        return {"accs": torch.tensor(1.0)}

    def weights(self):
        a, b = self._ids
        v = torch.as_tensor(self.table[(a, b)] if (a, b) in self.table else -self.table[(b, a)])
        flat = v.repeat_interleave(self.hw)  # (C*h*w,), captum's flattening of (C, h, w)
        return torch.stack([flat, -flat])

    def classes(self):
        return list(self._ids)


def _captum_scores(model, layer: str, x: torch.Tensor, target: int, cavs: CAVSet, hw: int, device):
    """sign_count and magnitude for every CAV, computed by captum.concept.TCAV."""
    k, r = cavs.concept_idx.shape
    blank = TensorDataset(torch.zeros(1, 3, 32, 32))
    loader = lambda: DataLoader(blank, batch_size=1, collate_fn=lambda b: torch.stack([t[0] for t in b]))  # noqa: E731
    concept_objs = [Concept(i, f"c{i}", loader()) for i in range(k)]
    rand_a = [Concept(k + j, f"randA{j}", loader()) for j in range(r)]
    rand_b = [Concept(k + r + j, f"randB{j}", loader()) for j in range(r)]
    table: dict[tuple[int, int], np.ndarray] = {}
    sets = []
    for j in range(r):
        for i in range(k):
            table[(i, k + j)] = cavs.vectors[cavs.concept_idx[i, j]]
            sets.append([concept_objs[i], rand_a[j]])
        table[(k + j, k + r + j)] = cavs.vectors[cavs.random_idx[j]]
        sets.append([rand_a[j], rand_b[j]])
    clf = _PrecomputedCAVs(table, hw)
    dev = model_device(model, device)
    with tempfile.TemporaryDirectory() as tmp, model_state_guard(model, freeze=False):
        tcav = TCAV(model, [layer], model_id="conceptlens", classifier=clf, save_path=tmp)
        out = tcav.interpret(x.to(dev), sets, target=target)
    n_in = x.shape[0]
    sign = np.zeros(cavs.vectors.shape[0])
    mag = np.zeros(cavs.vectors.shape[0])
    for j in range(r):
        for i in range(k):
            res = out[concepts_to_str([concept_objs[i], rand_a[j]])][layer]
            # captum averages in float32; the count of positive inputs is what it measured
            sign[cavs.concept_idx[i, j]] = round(float(res["sign_count"][0]) * n_in) / n_in
            mag[cavs.concept_idx[i, j]] = float(res["magnitude"][0])
        res = out[concepts_to_str([rand_a[j], rand_b[j]])][layer]
        sign[cavs.random_idx[j]] = round(float(res["sign_count"][0]) * n_in) / n_in
        mag[cavs.random_idx[j]] = float(res["magnitude"][0])
    return sign, mag


def compute_tcav(model, card, cavs: CAVSet, inputs, config: TCAVConfig = TCAVConfig(), *,
                 probe: ProbeVersion | None = None) -> TCAVResult:
    """TCAV of every concept of ``cavs`` (at ``cavs.layer``) for the target class over a set of inputs.

    cavs: ``compute_cavs`` of the drawn positions. inputs: (N, 3, H, W) preprocessed tensor or
    (N, S, S) grey patches in [0, 1]. probe: its own directions are scored too. Returns per concept
    score, magnitude, p-value and significance (module doc).
    """
    if not cavs.layer:
        raise ValueError("the CAVs do not say their layer; collect the drawn positions with collect_probe_data")
    layer = cavs.layer
    t_idx, t_name = target_class(card, config.target)
    x = inputs
    if not torch.is_tensor(x) or x.dim() == 3:
        x = torch.as_tensor(np.asarray(card.preprocess(np.asarray(inputs, dtype=np.float32))), dtype=torch.float32)
    grads = compute_layer_gradients(model, layer, x, t_idx, device=config.device)  # (N, C, h, w)
    n, c, h, w = grads.shape
    g_sum = grads.sum(dim=(2, 3)).double()  # (N, C)
    if config.engine == "batched":
        V = torch.as_tensor(cavs.vectors, dtype=torch.float64)  # (M, C)
        S = g_sum @ V.T  # (N, M): every input against every CAV in one matmul
        sign = (S > 0).sum(0).numpy() / n
        mag = S.mean(0).numpy()
    elif config.engine == "captum":
        sign, mag = _captum_scores(model, layer, x, t_idx, cavs, h * w, config.device)
    else:
        raise ValueError("engine must be 'batched' or 'captum'")
    probe_scores = _probe_scores(probe, cavs.concepts, g_sum)
    k = len(cavs.concepts)
    alpha_c = config.alpha / max(k, 1)
    rand_scores = sign[cavs.random_idx]
    result = TCAVResult(model_card=getattr(card, "name", ""), layer=layer, target=t_idx, target_name=t_name,
                        n_inputs=int(n), n_runs=cavs.n_runs, alpha=config.alpha, alpha_corrected=alpha_c,
                        engine=config.engine, probe_version=getattr(probe, "version", None))
    for i, cn in enumerate(cavs.concepts):
        runs = sign[cavs.concept_idx[i]]
        p = _ttest(runs, rand_scores)
        result.concepts[cn] = TCAVConcept(
            concept=cn, score=float(runs.mean()), magnitude=float(mag[cavs.concept_idx[i]].mean()), p_value=p,
            significant=bool(p < alpha_c), run_scores=[float(v) for v in runs],
            random_scores=[float(v) for v in rand_scores], probe_score=probe_scores.get(cn),
            cav_accuracy=float(cavs.accuracy[cavs.concept_idx[i]].mean()))
    return result


def _probe_scores(probe: ProbeVersion | None, concepts: list[str], g_sum: torch.Tensor) -> dict[str, float]:
    """{concept: fraction of inputs whose summed gradient g_sum (N, C) points along the probe's direction}."""
    if probe is None:
        return {}
    pv = probe.directions()  # (K_probe, C)
    probe_vecs = {cn: pv[i] for i, cn in enumerate(probe.concepts)}
    names = [cn for cn in concepts if cn in probe_vecs]
    if not names:
        return {}
    P = torch.as_tensor(np.stack([probe_vecs[cn] for cn in names]), dtype=torch.float64)  # (K', C)
    ps = ((g_sum @ P.T) > 0).double().mean(0).numpy()
    return dict(zip(names, ps.tolist()))


def run_tcav(store, model, card, probe: ProbeVersion, inputs, *, load_patch,
             config: TCAVConfig = TCAVConfig()) -> TCAVResult:
    """TCAV with the drawings behind a probe version, at its layer; stored in ``tcav_runs`` (``config.save``)."""
    wanted = set(probe.annotation_ids)
    ann = [a for a in store.list_annotations(include_deleted=True) if a.annotation_id in wanted]
    data = collect_probe_data(model, card, probe.layer, ann, load_patch,
                              ProbeConfig(cache_dir=config.cache_dir, device=config.device, seed=config.seed))
    cavs = compute_cavs(data, n_runs=config.n_runs, random_size=config.random_size, seed=config.seed)
    res = compute_tcav(model, card, cavs, inputs, config, probe=probe)
    if config.save and probe.version is not None:
        store.save_tcav_run(probe_version=probe.version, model_card=res.model_card, layer=res.layer,
                            target=res.target, results=res.to_dict())
    return res

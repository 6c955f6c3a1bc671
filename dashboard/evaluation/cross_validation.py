"""Cross-validation by woman of lesion recipes on real films: per-fold and pooled out-of-fold image AUROC.

Every woman (``patient_ref``: mini-MIAS pairs mdb001+mdb002 are one woman) lands in exactly one of
``k`` folds, stratified by her worst label. Each fold's model is trained on the other folds only and
scores the fold's whole images (max of the lesion map, as ``dashboard.evaluation.scoring``). The
pooled AUROC ranks all out-of-fold scores together; its 95 % CI resamples women.

Recipes
    finetune  the ``mias-lite0`` recipe: patches (12 lesion / 8 normal per image, 28 px jitter),
              EfficientNet-Lite0 from ImageNet, 4 epochs, batch 32, lr 4e-4, ``--augment mammo``
    probe     frozen ImageNet EfficientNet-Lite0: window-pooled features of one layer (the FCN grid of
              ``compute_lesion_map``: 224 px windows every 32 px) and a logistic regression over lesion
              windows (centre within 40 px of a truth centre) and normal windows (clear of every
              circle by 28 px, >= 50 % breast); training and test images are also seen up-down
              flipped and the image score is the mean of the two maxima (test-time augmentation);
              each row is also reported without TTA and minus the other breast's score
              (``subtract_contralateral``)

    python -m dashboard.evaluation.cross_validation --recipe probe --layer bn2 --source mini-mias \
        --out data/train-mias/cv-probe-bn2.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import model_zoo
from dashboard import imaging
from dashboard.data import patchset
from dashboard.data.files import load_stored_image
from dashboard.data.store import Store, StoreError
from dashboard.engine.inference import LesionMapConfig, compute_lesion_map, preprocess
from dashboard.errors import ConceptLensError
from dashboard.evaluation.scoring import bootstrap_auroc, compute_image_scores, image_is_abnormal
from dashboard.progress import Progress, report, tqdm_progress
from dashboard.settings import load_settings
from model_zoo.metrics import compute_auroc
from model_zoo.train import TrainConfig, train

FOLDS = 5
RECIPES = ("finetune", "probe")
PROBE_LAYERS = ("bn2", "blocks.5", "blocks.4")
LESION_RADIUS_PX = 40     # a window is a lesion window when its centre is this close to a truth centre
NORMAL_MARGIN_PX = 28     # normal windows keep this far from every truth circle (as the patch set)
NORMAL_PER_IMAGE = 40     # normal windows drawn per image view for the probe's training set
PROBE_C = 0.05            # inverse L2 strength of the logistic probe (standardised features)


class CrossValidationError(ConceptLensError):
    """The cross-validation cannot run as asked (unknown recipe, too few women...)."""


def assign_patient_folds(rows, k: int = FOLDS, seed: int = 0) -> dict[str, int]:
    """case_id -> fold in 0..k-1, grouped by patient (``patient_ref``, else the case) and stratified
    by the patient's worst label (normal < benign < malignant): within each label the patients are
    shuffled and dealt round-robin, continuing where the previous label stopped so fold sizes stay
    within one patient. Deterministic for a seed and independent of row order."""
    if k < 2:
        raise CrossValidationError(f"need at least 2 folds, got {k}")
    patient_cases: dict[str, set[str]] = {}
    patient_label: dict[str, str] = {}
    for r in rows:
        patient = str(r.get("patient_ref") or r["case_id"])
        label = str(r.get("case_label") or r.get("label") or "unknown")
        label = label if label in patchset.LABEL_ORDER else "unknown"
        patient_cases.setdefault(patient, set()).add(str(r["case_id"]))
        patient_label[patient] = max(patient_label.get(patient, "unknown"), label,
                                     key=patchset.LABEL_ORDER.index)
    if len(patient_cases) < k:
        raise CrossValidationError(f"{len(patient_cases)} patients cannot fill {k} folds")
    out: dict[str, int] = {}
    dealt = 0
    for label in patchset.LABEL_ORDER:
        group = sorted(p for p, lab in patient_label.items() if lab == label)
        order = np.random.default_rng([seed, zlib.crc32(label.encode())]).permutation(len(group))
        for k_idx in order:
            for case in patient_cases[group[k_idx]]:
                out[case] = dealt % k
            dealt += 1
    return out


@dataclass
class OutOfFold:
    """Out-of-fold image scores of one recipe, all arrays (N,) in the store's image order."""

    image_id: np.ndarray
    patient: np.ndarray
    abnormal: np.ndarray
    fold: np.ndarray
    score: np.ndarray
    score_no_tta: np.ndarray | None = None   # probe: the same fits scored on the image as stored only


def summarise(oof: OutOfFold, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Per-fold AUROC, their mean and SD, and the pooled out-of-fold AUROC with a patient-bootstrap CI."""
    per_fold = []
    for f in np.unique(oof.fold):
        sel = oof.fold == f
        y = oof.abnormal[sel]
        per_fold.append(round(compute_auroc(y, oof.score[sel]), 4) if 0 < y.sum() < len(y) else None)
    valid = [a for a in per_fold if a is not None]
    lo, hi = bootstrap_auroc(oof.abnormal, oof.score, oof.patient, n=n_boot, seed=seed)
    return {
        "fold_auroc": per_fold,
        "mean_fold_auroc": round(float(np.mean(valid)), 4),
        "sd_fold_auroc": round(float(np.std(valid, ddof=1)), 4) if len(valid) > 1 else 0.0,
        "pooled_auroc": round(compute_auroc(oof.abnormal, oof.score), 4),
        "pooled_auroc_ci95": [round(lo, 4), round(hi, 4)],
        "n_images_abnormal": int(oof.abnormal.sum()), "n_images_normal": int((~oof.abnormal).sum()),
        "n_patients": int(len(np.unique(oof.patient))),
        "bootstrap": f"{n_boot} patient resamples, percentile 95 % interval, seed {seed}",
    }


def subtract_contralateral(oof: OutOfFold, laterality: dict[str, str]) -> OutOfFold:
    """Scores minus the score of the same woman's other breast (same patient, other laterality; the
    mean when there are several), 0 subtracted when she has none. A lesion is usually one-sided, so
    the difference removes what is the woman's own (density, film, digitiser) rather than a finding.
    Both breasts of a woman are always in one fold, so this adds no leak."""
    out = oof.score.copy()
    for i, (pat, img) in enumerate(zip(oof.patient, oof.image_id)):
        other = [j for j in np.flatnonzero(oof.patient == pat)
                 if laterality.get(oof.image_id[j]) and laterality.get(oof.image_id[j]) != laterality.get(img)]
        if other:
            out[i] = oof.score[i] - float(np.mean(oof.score[other]))
    return dataclasses.replace(oof, score=out)


# ---------------------------------------------------------------- recipe: fine-tuning (the baseline)
FINETUNE = dict(per_image_lesion=12, per_image_normal=8, seed=0, jitter=28, exclusion_margin=28,
                epochs=4, batch=32, lr=4e-4, augment="mammo")


def run_finetune(store, card, rows: list[dict], fold_of: dict[str, int], workdir: Path, *,
                 folds: list[int] | None = None, progress: Progress | None = None) -> OutOfFold:
    """Train the ``mias-lite0`` recipe once per fold (on the other folds) and score the fold's images."""
    k = max(fold_of.values()) + 1
    parts = []
    for f in (folds if folds is not None else range(k)):
        split_of = {case: ("test" if fo == f else "train") for case, fo in fold_of.items()}
        ps = patchset.build_patchset(store, card, patchset.PatchSetConfig(
            source=rows[0]["source"], splits=("train", "test"), per_image_lesion=FINETUNE["per_image_lesion"],
            per_image_normal=FINETUNE["per_image_normal"], seed=FINETUNE["seed"], jitter=FINETUNE["jitter"],
            exclusion_margin=FINETUNE["exclusion_margin"], split_of=split_of))
        path = patchset.save_patchset(ps, workdir / f"patches-fold{f}.npz")
        t0 = time.perf_counter()
        trained = train(card, path, TrainConfig(
            epochs=FINETUNE["epochs"], batch=FINETUNE["batch"], lr=FINETUNE["lr"], seed=0, device="cpu",
            augment=FINETUNE["augment"], eval_split="test", out_card=f"cv-finetune-fold{f}", cards_dir=workdir))
        model = model_zoo.create_model(trained, weights=True).to(memory_format=torch.channels_last)
        test_rows = [r for r in rows if fold_of[r["case_id"]] == f]
        im = compute_image_scores(model, trained, store, test_rows)
        print(f"fold {f}: trained in {time.perf_counter() - t0:.0f} s, image AUROC "
              f"{compute_auroc(im.abnormal, im.score):.4f}", flush=True)
        parts.append((im, f))
        report(progress, len(parts), k, f"fold {f}")
    return OutOfFold(np.concatenate([p.image_id for p, _ in parts]), np.concatenate([p.patient for p, _ in parts]),
                     np.concatenate([p.abnormal for p, _ in parts]),
                     np.concatenate([np.full(len(p.image_id), f) for p, f in parts]),
                     np.concatenate([p.score for p, _ in parts]))


# ---------------------------------------------------------------- recipe: frozen ImageNet probe
@dataclass
class WindowFeatures:
    """One image view's FCN window grid (224 px windows every ``stride`` px, as ``compute_lesion_map``).

    feats   {layer: (rows, cols, C) float16}: features averaged over each window
    inside  (rows, cols) bool: window centre inside the image and the breast (the scored windows)
    label   (rows, cols) int8: 1 lesion window, 0 normal window, -1 neither (not used for training)
    """

    feats: dict[str, np.ndarray]
    inside: np.ndarray
    label: np.ndarray


def _backbone_maps(model, card, padded: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Feature maps (1, C, h, w) of ``layers`` (blocks.N or bn2) for a padded (Hp, Wp) image."""
    x = preprocess(card, padded[None]).contiguous(memory_format=torch.channels_last)  # (1, 3, Hp, Wp)
    out = {}
    x = model.bn1(model.conv_stem(x))
    for i, block in enumerate(model.blocks):
        x = block(x)
        if f"blocks.{i}" in layers:
            out[f"blocks.{i}"] = x
    if "bn2" in layers:
        out["bn2"] = model.bn2(model.conv_head(x))
    return out


def compute_window_features(model, card, img: np.ndarray, breast: np.ndarray, lesion: np.ndarray,
                            zone: np.ndarray, layers: tuple[str, ...] = PROBE_LAYERS,
                            centres: np.ndarray | None = None) -> WindowFeatures:
    """Window-pooled features of one model-space image (H, W) float in [0, 1] and its window labels.

    breast (H, W) bool; lesion (H, W) bool: pixels within ``LESION_RADIUS_PX`` of a truth centre;
    zone (H, W) bool: truth circles grown by ``NORMAL_MARGIN_PX`` (normal windows avoid it).
    The padding and grid are those of ``dashboard.engine.inference._fcn_grid`` (stride 32 for
    EfficientNet-Lite0), so a probe on bn2 scores exactly the windows the app's lesion map scores.
    """
    size = card.patch_size
    st = 32
    win = size // st
    h, w = img.shape
    off = size // 2
    hp = st * (int(np.ceil((h - 1) / st)) + win)
    wp = st * (int(np.ceil((w - 1) / st)) + win)
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32))
    padded = F.pad(t, (off, wp - w - off, off, hp - h - off))  # (Hp, Wp)
    with torch.inference_mode():
        maps = _backbone_maps(model, card, padded, layers)
        feats = {}
        for name, m in maps.items():
            cell = hp // m.shape[-2]  # 16 or 32 px per feature cell
            k = size // cell
            pooled = F.avg_pool2d(m.float(), kernel_size=k, stride=st // cell)  # (1, C, rows, cols)
            feats[name] = pooled[0].permute(1, 2, 0).numpy().astype(np.float16)
    rows, cols = next(iter(feats.values())).shape[:2]
    cy = np.arange(rows) * st  # window centres (model px): corner i*st - off, centre i*st
    cx = np.arange(cols) * st
    yy, xx = np.meshgrid(np.clip(cy, 0, h - 1), np.clip(cx, 0, w - 1), indexing="ij")
    inside = (cy[:, None] < h) & (cx[None, :] < w) & breast[yy, xx]
    box = torch.ones(1, 1, size, size) / size ** 2

    def window_mean(mask: np.ndarray) -> np.ndarray:
        m = F.pad(torch.from_numpy(mask.astype(np.float32)), (off, wp - w - off, off, hp - h - off))
        return F.conv2d(m[None, None], box, stride=st)[0, 0, :rows, :cols].numpy()

    label = np.full((rows, cols), -1, np.int8)
    normal = inside & (window_mean(breast) >= patchset.MIN_BREAST_FRACTION) & (window_mean(zone) == 0)
    label[normal] = 0
    label[inside & lesion[yy, xx]] = 1
    return WindowFeatures({k: v[:rows, :cols] for k, v in feats.items()}, inside, label)


def _lesion_masks(regions, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(near-centre mask, exclusion zone) of an image's truth regions, both (H, W) bool."""
    near = np.zeros(shape, bool)
    zone = np.zeros(shape, bool)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    for reg in regions:
        near |= (xx - reg.cx) ** 2 + (yy - reg.cy) ** 2 <= LESION_RADIUS_PX ** 2
        zone |= reg.mask
    if zone.any():
        zone = ndimage.binary_dilation(zone, iterations=NORMAL_MARGIN_PX)
    return near, zone


@dataclass
class ImageFeatures:
    """Both views (as stored, up-down flipped) of one image, plus its truth."""

    image_id: str
    case_id: str
    patient: str
    abnormal: bool
    located: bool          # False when a finding has no location (no training windows)
    views: list[WindowFeatures]


def extract_features(store, card, rows: list[dict], cache_dir: Path, *, layers: tuple[str, ...] = PROBE_LAYERS,
                     progress: Progress | None = None) -> list[ImageFeatures]:
    """Window features of every image and its up-down mirror, cached per image in ``cache_dir``
    (key: image id and content hash, card spacing and patch size; recomputed when a layer is missing)."""
    # channels-last: about twice as fast on CPU (oneDNN), the same numbers
    model = model_zoo.create_model(model_zoo.load_card("imagenet-lite0"), weights=True).eval().to(
        memory_format=torch.channels_last)
    lesion_names = patchset.lesion_concept_names(store)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, row in enumerate(rows):
        findings = [f for f in store.list_findings(row["image_id"])
                    if f["concept"] in lesion_names and f.get("pathology") != "normal"]
        key = f"{row['image_id']}-{row['sha256']}-{card.pixel_spacing_mm}-{card.patch_size}"
        path = cache_dir / f"{zlib.crc32(key.encode()):08x}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                if not all(f"{v}:{lay}" in z.files for v in range(2) for lay in layers):
                    path.unlink()  # cached with fewer layers: compute again
        m = load_stored_image(store, row)
        img, breast, frame = imaging.prepare_model_image(m, card.pixel_spacing_mm,
                                                         default_spacing_mm=row.get("pixel_spacing_mm"))
        regions, unlocated = patchset.finding_regions(findings, frame)
        views = []
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                for v in range(2):
                    views.append(WindowFeatures({lay: z[f"{v}:{lay}"] for lay in layers}, z[f"{v}:inside"],
                                                z[f"{v}:label"]))
        else:
            near, zone = _lesion_masks(regions, img.shape)
            arrays = {}
            for v, flip in enumerate((False, True)):
                sl = (slice(None, None, -1), slice(None)) if flip else (slice(None), slice(None))
                wf = compute_window_features(model, card, img[sl], breast[sl], near[sl], zone[sl], layers)
                views.append(wf)
                arrays.update({f"{v}:{lay}": a for lay, a in wf.feats.items()})
                arrays.update({f"{v}:inside": wf.inside, f"{v}:label": wf.label})
            np.savez(path, **arrays)
        out.append(ImageFeatures(row["image_id"], row["case_id"], str(row.get("patient_ref") or row["case_id"]),
                                 image_is_abnormal(store, row["image_id"], lesion_names), not unlocated, views))
        report(progress, i + 1, len(rows), "window features")
    return out


def _feature_matrix(wf: WindowFeatures, layers: tuple[str, ...]) -> np.ndarray:
    """(rows, cols, C) float32: the chosen layers' window features side by side."""
    return np.concatenate([wf.feats[lay].astype(np.float32) for lay in layers], axis=-1)


def fit_probe(train: list[ImageFeatures], layers: tuple[str, ...], *, c: float = PROBE_C, seed: int = 0
              ) -> tuple[StandardScaler, LogisticRegression]:
    """Logistic probe over lesion windows and up to ``NORMAL_PER_IMAGE`` normal windows per view."""
    xs, ys = [], []
    for im in train:
        if not im.located:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(im.image_id.encode())])
        for wf in im.views:
            fm = _feature_matrix(wf, layers)
            pos = np.argwhere(wf.label == 1)
            neg = np.argwhere(wf.label == 0)
            if len(neg) > NORMAL_PER_IMAGE:
                neg = neg[rng.choice(len(neg), NORMAL_PER_IMAGE, replace=False)]
            for idx, y in ((pos, 1), (neg, 0)):
                if len(idx):
                    xs.append(fm[idx[:, 0], idx[:, 1]])
                    ys.append(np.full(len(idx), y))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(scaler.transform(x), y)
    return scaler, clf


def score_probe(im: ImageFeatures, scaler, clf, layers: tuple[str, ...], *, tta: bool = True) -> float:
    """Image score: the maximum window probability inside the breast (the lesion map's maximum);
    with ``tta`` the mean of that maximum over the image and its up-down mirror."""
    scores = []
    for wf in im.views[:2 if tta else 1]:
        fm = _feature_matrix(wf, layers)[wf.inside]  # (n, C)
        top = float(clf.decision_function(scaler.transform(fm)).max()) if len(fm) else -50.0
        scores.append(1.0 / (1.0 + np.exp(-top)))
    return float(np.mean(scores))


# ---------------------------------------------------------------- the committed model and its TTA score
TTA = "updown-mean"
TTA_NOTE = ("image score = mean of the whole-image lesion-map maximum (compute_lesion_map, method fcn) over the "
            "image as stored and its up-down mirror (the chest wall stays left)")


def compute_tta_score(model, card, img: np.ndarray, mask: np.ndarray) -> float:
    """The card's recorded test-time augmentation: mean of the lesion-map maxima of the model-space
    image (H, W) in [0, 1] and its up-down mirror (mask (H, W) bool, mirrored with it)."""
    cfg = LesionMapConfig(method="fcn", refine=0)  # the FCN grid's maximum, as the cross-validation scored it
    scores = [compute_lesion_map(model, card, np.ascontiguousarray(im), np.ascontiguousarray(mk), cfg).score
              for im, mk in ((img, mask), (img[::-1], mask[::-1]))]
    return float(np.mean(scores))


def probe_state_dict(scaler: StandardScaler, clf: LogisticRegression, card) -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 weights with the bn2 probe folded into a 2-class ``classifier``:
    lesion logit = w . (f - mean) / scale + b, normal logit 0, so softmax gives the probe's probability."""
    base = model_zoo.create_model(model_zoo.load_card("imagenet-lite0"), weights=True)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("classifier.")}
    w = clf.coef_[0] / scaler.scale_  # (C,)
    b = float(clf.intercept_[0] - np.sum(clf.coef_[0] * scaler.mean_ / scaler.scale_))
    weight = torch.zeros(card.num_classes, len(w))
    bias = torch.zeros(card.num_classes)
    weight[card.positive_index] = torch.from_numpy(w.astype(np.float32))
    bias[card.positive_index] = b
    state.update({"classifier.weight": weight, "classifier.bias": bias})
    return state


def run_probe(features: list[ImageFeatures], fold_of: dict[str, int], layers: tuple[str, ...], *,
              c: float = PROBE_C, tta: bool = True) -> OutOfFold:
    """Fit the probe on the other folds, score each fold's images."""
    fold = np.array([fold_of[f.case_id] for f in features])
    score = np.zeros(len(features))
    single = np.zeros(len(features))
    for f in np.unique(fold):
        scaler, clf = fit_probe([im for im, fo in zip(features, fold) if fo != f], layers, c=c)
        for i in np.flatnonzero(fold == f):
            score[i] = score_probe(features[i], scaler, clf, layers, tta=tta)
            single[i] = score_probe(features[i], scaler, clf, layers, tta=False)
    return OutOfFold(np.array([f.image_id for f in features]), np.array([f.patient for f in features]),
                     np.array([f.abnormal for f in features]), fold, score, single)


CHECK_IMAGES = ("mias-mdb005", "mias-mdb006")  # one woman: a breast with two circumscribed masses, a normal one


def write_probe_card(store, features: list[ImageFeatures], rows: list[dict], *, name: str, c: float,
                     cv: dict | None, command: str, base: str = "mias-lite0") -> model_zoo.ModelCard:
    """Fit the bn2 probe on every image, fold it into an EfficientNet-Lite0 and write fp16 weights
    and the card (``base``'s layout and [domain]; [training] the recipe, [metrics] the CV table
    when given, else the existing card's). Records the TTA scores of a few real images for tests."""
    t0 = time.perf_counter()
    base_card = model_zoo.load_card(base)
    scaler, clf = fit_probe(features, ("bn2",), c=c)
    weights_path = model_zoo.WEIGHTS_DIR / f"{name}.safetensors"
    sha = model_zoo.save_weights(probe_state_dict(scaler, clf, base_card), weights_path, dtype=torch.float16,
                                 metadata={"card": name, "arch": base_card.arch, "init": "imagenet-lite0",
                                           "recipe": "frozen ImageNet backbone + logistic probe on bn2"})
    card_path = model_zoo.CARDS_DIR / f"{name}.toml"
    old = model_zoo.read_card(card_path) if card_path.exists() else None
    n_pos = sum(int((wf.label == 1).sum()) for im in features if im.located for wf in im.views)
    training = {
        "data": (f"mini-MIAS subset in ../shared/data/mini-mias: {len(rows)} digitised screen-film MLO mammograms "
                 f"(200 um) of {len({im.patient for im in features})} women, all used for the final fit. Windows "
                 "of 224 px at 0.2 mm every 32 px (the app's FCN lesion-map grid) on each image and its "
                 f"up-down mirror: lesion windows have their centre within {LESION_RADIUS_PX} px of a truth "
                 f"centre ({n_pos} windows), normal windows are >= 50 % breast and clear of every circle by "
                 f"{NORMAL_MARGIN_PX} px ({NORMAL_PER_IMAGE} drawn per image view). Images whose finding has no "
                 "coordinates give no windows. No other data (no CBIS-DDSM images, nothing from outside)."),
        "licence": base_card.training.get("licence", ""),
        "recipe": ("frozen ImageNet EfficientNet-Lite0 (card imagenet-lite0): every layer keeps its ImageNet "
                   "weights; the classifier is an L2 logistic regression (sklearn, C = "
                   f"{c}, balanced class weights) on standardised window-averaged bn2 features, folded into "
                   "the 2-class Linear head (normal logit 0)"),
        "command": command,
        "init": "imagenet-lite0",
        "frozen": ["all but classifier"],
        "probe_layer": "bn2", "probe_c": c, "seed": 0,
        "lesion_radius_px": LESION_RADIUS_PX, "normal_margin_px": NORMAL_MARGIN_PX,
        "normal_per_image": NORMAL_PER_IMAGE,
        "augment": "up-down mirror of every training image (windows of both views)",
        "tta": TTA, "tta_note": TTA_NOTE,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
    }
    card = dataclasses.replace(
        base_card, name=name, weights_file=f"../weights/{name}.safetensors", weights_sha256=sha,
        weights_dtype="float16", path=card_path.resolve(), training=training,
        description=("Lesion-vs-normal classifier on real screen-film mammograms: EfficientNet-Lite0 with its "
                     "ImageNet weights frozen and a logistic lesion probe on bn2 features, fitted on mini-MIAS "
                     "(MLO, 224 px at 0.2 mm, 107 women). Image AUROC by 5-fold cross-validation by woman is in "
                     "[metrics.cv]. Small data set, wide confidence intervals; research use only, not a "
                     "medical device."),
        metrics=dict(old.metrics) if (old is not None and cv is None) else {})
    model = model_zoo.create_model(card, weights=True).eval()
    check = {}
    for row in rows:
        if row["image_id"] in CHECK_IMAGES:
            img, mask, _ = imaging.prepare_model_image(load_stored_image(store, row), card.pixel_spacing_mm,
                                                       default_spacing_mm=row.get("pixel_spacing_mm"))
            check[row["image_id"]] = round(compute_tta_score(model, card, img, mask), 4)
    metrics = dict(card.metrics)
    if cv is not None:
        metrics = {"image_score": TTA_NOTE, "cv": cv}
    metrics["check_tta_scores"] = check
    metrics["check_note"] = ("TTA scores of these training images by the fp16 weights as written (a "
                             "reproducibility check for tests, not a held-out figure)")
    return model_zoo.save_card(dataclasses.replace(card, metrics=metrics), card_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.evaluation.cross_validation",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", choices=RECIPES, required=True)
    ap.add_argument("--card", default="mias-lite0", help="card giving size, spacing and preprocessing")
    ap.add_argument("--source", default="mini-mias")
    ap.add_argument("--folds", type=int, default=FOLDS)
    ap.add_argument("--fold-seed", type=int, default=0)
    ap.add_argument("--only-folds", default=None, help="comma-separated folds to run (finetune)")
    ap.add_argument("--layers", default="bn2", help="probe: comma-separated layers; several: one probe per "
                                                   "entry, '+' joins layers into one feature vector")
    ap.add_argument("--c", default=str(PROBE_C), help="probe: comma-separated C values")
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--write-card", default=None, metavar="NAME",
                    help="probe: fit the first --layers entry (bn2) and first --c on every image and write the card "
                         "NAME with fp16 weights; with the CV results as its [metrics.cv] unless --skip-cv")
    ap.add_argument("--skip-cv", action="store_true", help="probe with --write-card: no cross-validation "
                    "(the card keeps the [metrics] it has)")
    args = ap.parse_args(argv)
    settings = load_settings()
    t0 = time.perf_counter()
    results: dict = {"recipe": args.recipe, "folds": args.folds, "fold_seed": args.fold_seed,
                     "command": "python -m dashboard.evaluation.cross_validation " + " ".join(sys.argv[1:])}
    try:
        card = model_zoo.load_card(args.card, extra_dirs=(settings.user_cards_dir,))
        with Store(settings.db_path, settings.journal_dir, data_dir=settings.data_dir, read_only=True) as store:
            rows = store.list_images(source=args.source)
            fold_of = assign_patient_folds(rows, args.folds, args.fold_seed)
            work = Path(args.out).resolve().parent
            if args.recipe == "finetune":
                only = [int(x) for x in args.only_folds.split(",")] if args.only_folds else None
                with tqdm_progress("cv finetune", unit="fold") as progress:
                    oof = run_finetune(store, card, rows, fold_of, work / "cv-finetune", folds=only,
                                       progress=progress)
                results["finetune"] = summarise(oof)
                results["scores"] = {i: float(s) for i, s in zip(oof.image_id, oof.score)}
            else:
                entries = [tuple(e.split("+")) for e in args.layers.split(",")]
                needed = tuple(sorted({lay for e in entries for lay in e}))
                with tqdm_progress("window features", unit="image") as progress:
                    feats = extract_features(store, card, rows, work / "cv-cache", layers=needed, progress=progress)
                results["feature_seconds"] = round(time.perf_counter() - t0, 1)
                cs = [float(x) for x in args.c.split(",")]
                first = None
                for entry in ([] if args.skip_cv else entries):
                    for c in cs:
                        oof = run_probe(feats, fold_of, entry, c=c, tta=not args.no_tta)
                        res = summarise(oof)
                        single = summarise(dataclasses.replace(oof, score=oof.score_no_tta))
                        keys = ("fold_auroc", "mean_fold_auroc", "pooled_auroc", "pooled_auroc_ci95")
                        res["without_tta"] = {k: single[k] for k in keys}
                        lat = {r["image_id"]: r.get("laterality") or "" for r in rows}
                        pair = summarise(subtract_contralateral(oof, lat))
                        res["minus_contralateral"] = {k: pair[k] for k in keys}
                        results[f"{'+'.join(entry)} C={c}"] = res
                        results.setdefault("scores", {})[f"{'+'.join(entry)} C={c}"] = {
                            i: round(float(v), 5) for i, v in zip(oof.image_id, oof.score)}
                        first = first or dict(res, layer="+".join(entry), c=c, tta=TTA if not args.no_tta else "none",
                                              folds=args.folds, fold_seed=args.fold_seed,
                                              protocol=("5-fold cross-validation by woman (patient_ref), folds "
                                                        "stratified by her worst label; probe fitted on 4 folds, "
                                                        "whole images of the 5th scored"),
                                              command=results["command"])
                        print(f"{'+'.join(entry)} C={c}: {res}", flush=True)
                if args.write_card:
                    if entries[0] != ("bn2",):
                        raise CrossValidationError("--write-card folds a bn2 probe into the card's head: "
                                                   "give --layers bn2 first")
                    written = write_probe_card(store, feats, rows, name=args.write_card, c=cs[0], cv=first,
                                               command=results["command"])
                    print(f"wrote {written.path}")
    except (model_zoo.ModelZooError, StoreError, patchset.PatchSetError, CrossValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "scores"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

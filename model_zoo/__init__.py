"""Model zoo: model cards (TOML), the model factory, the offline ImageNet start and training.

Public API::

    list_cards(extra_dirs=()) -> list[ModelCard]
    load_card(name, extra_dirs=()) -> ModelCard          # card.preprocess(gray (N,H,W)) -> (N,3,H,W)
    create_model(card, *, weights=True, device="cpu") -> nn.Module   (eval mode, SHA-256 checked)
    save_weights(model_or_state, path, dtype=float16) -> sha256
    save_card(card, path) -> ModelCard
    imagenet.load_efficientnet_lite0_imagenet() -> nn.Module

This package never imports ``dashboard`` (imports point pages -> dashboard -> model_zoo).
"""
from .cards import (
                    CARDS_DIR,
                    WEIGHTS_DIR,
                    ModelCard,
                    card_from_dict,
                    list_cards,
                    load_card,
                    read_card,
                    save_card,
                    timm_data_config,
)
from .errors import (
                    CardError,
                    ConceptLensError,
                    ModelZooError,
                    WeightsIntegrityError,
                    WeightsMappingError,
                    WeightsMissingError,
)
from .factory import create_model, load_state_dict, save_weights, sha256_file, verify_weights

__all__ = [
    "CARDS_DIR", "WEIGHTS_DIR", "ModelCard", "card_from_dict", "list_cards", "load_card", "read_card",
    "save_card", "timm_data_config", "CardError", "ConceptLensError", "ModelZooError", "WeightsIntegrityError",
    "WeightsMappingError", "WeightsMissingError", "create_model", "load_state_dict", "save_weights",
    "sha256_file", "verify_weights",
]

"""The concept engine: activations, attribution, inference, Network-Dissection statistics and unit
IoU, concept probes, TCAV and the concept report. Plain functions over a model, a card and a store;
no streamlit. Functions with many options take one config dataclass (``*Config``)."""
from dashboard.engine.activations import compute_activations, compute_patch_activations, list_layers, model_fingerprint
from dashboard.engine.attribution import Attribution, AttributionConfig, attribute, attribute_image
from dashboard.engine.dissection import (
    DissectionStats,
    LabelResult,
    StatsConfig,
    UnitMatch,
    compute_dataset_stats,
    drawing_to_mask,
    label_units_from_drawing,
    load_dataset_stats,
    match_drawing,
    undo_annotation,
    unit_labels,
    units_by_concept,
)
from dashboard.engine.inference import LesionMap, LesionMapConfig, compute_lesion_map, predict_patches, target_class
from dashboard.engine.model_state import lock_for, model_device, model_state_guard
from dashboard.engine.probes import (
    ProbeConfig,
    ProbeVersion,
    compute_concept_maps,
    image_folds,
    load_probe,
    train_probes,
)
from dashboard.engine.report import (
    ConceptReport,
    ImageEvidence,
    ReportConfig,
    ReportInputs,
    build_image_report,
    build_report,
    compute_image_evidence,
    export_html,
    report_figures,
    report_from_json,
    report_to_json,
)
from dashboard.engine.suggestions import (
    Candidate,
    ImageFeatures,
    SuggestConfig,
    Suggestion,
    grid_candidates,
    score_patches,
    suggest_patches,
)
from dashboard.engine.tcav import TCAVConfig, TCAVResult, compute_tcav, run_tcav
from dashboard.engine.unit_iou import UnitMasks, prepare_unit_masks, unit_ious

__all__ = [
    "compute_activations", "compute_patch_activations", "list_layers", "model_fingerprint",
    "Attribution", "AttributionConfig", "attribute", "attribute_image",
    "DissectionStats", "LabelResult", "StatsConfig", "UnitMatch", "compute_dataset_stats", "drawing_to_mask",
    "label_units_from_drawing", "load_dataset_stats", "match_drawing", "undo_annotation", "unit_labels",
    "units_by_concept",
    "LesionMap", "LesionMapConfig", "compute_lesion_map", "predict_patches", "target_class",
    "lock_for", "model_device", "model_state_guard",
    "ProbeConfig", "ProbeVersion", "compute_concept_maps", "image_folds", "load_probe", "train_probes",
    "ConceptReport", "ImageEvidence", "ReportConfig", "ReportInputs", "build_image_report", "build_report",
    "compute_image_evidence", "export_html", "report_figures", "report_from_json", "report_to_json",
    "Candidate", "ImageFeatures", "SuggestConfig", "Suggestion", "grid_candidates", "score_patches", "suggest_patches",
    "TCAVConfig", "TCAVResult", "compute_tcav", "run_tcav",
    "UnitMasks", "prepare_unit_masks", "unit_ious",
]

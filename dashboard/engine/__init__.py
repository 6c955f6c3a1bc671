"""The concept engine: activations, attribution, inference, Network-Dissection statistics and unit
IoU, concept probes, TCAV and the concept report. Plain functions over a model, a card and a store;
no streamlit."""
from dashboard.engine.activations import compute_activations, compute_patch_activations, list_layers, model_fingerprint
from dashboard.engine.attribution import Attribution, attribute, attribute_image
from dashboard.engine.dissection import (
    DissectionStats,
    LabelResult,
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
from dashboard.engine.inference import LesionMap, compute_lesion_map, predict_patches
from dashboard.engine.model_state import lock_for, model_state_guard
from dashboard.engine.probes import ProbeVersion, compute_concept_maps, load_probe, train_probes
from dashboard.engine.report import (
    ConceptReport,
    ImageEvidence,
    build_image_report,
    build_report,
    compute_image_evidence,
    export_html,
    report_figures,
    report_from_json,
    report_to_json,
)
from dashboard.engine.tcav import TCAVResult, compute_tcav, run_tcav
from dashboard.engine.unit_iou import UnitMasks, prepare_unit_masks, unit_ious

__all__ = [
    "compute_activations", "compute_patch_activations", "list_layers", "model_fingerprint",
    "Attribution", "attribute", "attribute_image",
    "DissectionStats", "LabelResult", "UnitMatch", "compute_dataset_stats", "drawing_to_mask",
    "label_units_from_drawing", "load_dataset_stats", "match_drawing", "undo_annotation", "unit_labels",
    "units_by_concept",
    "LesionMap", "compute_lesion_map", "predict_patches",
    "lock_for", "model_state_guard",
    "ProbeVersion", "compute_concept_maps", "load_probe", "train_probes",
    "ConceptReport", "ImageEvidence", "build_image_report", "build_report", "compute_image_evidence", "export_html",
    "report_figures", "report_from_json", "report_to_json",
    "TCAVResult", "compute_tcav", "run_tcav",
    "UnitMasks", "prepare_unit_masks", "unit_ious",
]

"""Are the explanations true, and is labeling cheap? The simulated reader, the metrics, the faithfulness
checks, the app's learning curve, label efficiency end to end and the model card's scoring.

* ``reader``: a scripted reader draws ground-truth regions through the canvas path's calls;
* ``metrics``: binned pixel AUROC, IoU, bootstrap intervals, Spearman, top-concept match, map similarity
  (the exact rank AUROC is ``model_zoo.metrics.compute_aurocs``);
* ``faithfulness``: deletion by inpainting, deletion/insertion curves over concept regions, model randomisation;
* ``learning_curve``: validation AUROC of each concept against its number of drawings;
* ``label_efficiency``: everything end to end on a demo store (``bench/label_efficiency.py``);
* ``scoring``: a card's patch and image AUROC with patient-bootstrap CIs."""
from dashboard.evaluation.faithfulness import (
    deletion_drops,
    inpaint_regions,
    randomize_model,
    region_curves,
)
from dashboard.evaluation.label_efficiency import (
    DEFAULT_BUDGETS,
    DELETION_VARIANTS,
    EvaluationConfig,
    EvaluationResult,
    compute_train_stats,
    jsonable,
    run_label_efficiency,
    split_by_woman,
    summarise,
)
from dashboard.evaluation.learning_curve import (
    LearningCurveConfig,
    compute_learning_curve,
    load_drawing_speed,
)
from dashboard.evaluation.metrics import (
    LOGIT_RANGE,
    N_BINS,
    attribution_in_region,
    auroc_from_counts,
    bootstrap_auroc_iou,
    bootstrap_mean,
    map_similarity,
    mask_iou,
    percentile_interval,
    sample_grid,
    score_histograms,
    spearman,
    top_concept_match,
)
from dashboard.evaluation.reader import (
    DEFAULT_CONCEPTS,
    READER,
    DrawingTask,
    ImageTruth,
    ReaderConfig,
    RunContext,
    SimDrawing,
    SimulatedReader,
    TruthRegion,
    choose_label,
    load_image_truth,
    plan_drawings,
    simulate_drawing,
)

__all__ = [
    "READER",
    "DEFAULT_CONCEPTS",
    "DEFAULT_BUDGETS",
    "DELETION_VARIANTS",
    "ReaderConfig",
    "SimDrawing",
    "simulate_drawing",
    "choose_label",
    "TruthRegion",
    "ImageTruth",
    "load_image_truth",
    "DrawingTask",
    "plan_drawings",
    "RunContext",
    "SimulatedReader",
    "N_BINS",
    "LOGIT_RANGE",
    "score_histograms",
    "auroc_from_counts",
    "mask_iou",
    "bootstrap_auroc_iou",
    "percentile_interval",
    "bootstrap_mean",
    "spearman",
    "top_concept_match",
    "attribution_in_region",
    "map_similarity",
    "sample_grid",
    "inpaint_regions",
    "deletion_drops",
    "randomize_model",
    "region_curves",
    "load_drawing_speed",
    "LearningCurveConfig",
    "compute_learning_curve",
    "EvaluationConfig",
    "compute_train_stats",
    "EvaluationResult",
    "run_label_efficiency",
    "split_by_woman",
    "summarise",
    "jsonable",
]

"""The mini-MIAS card `mias-lite0`: its record, its held-out patch metric recomputed, and the concept
workflow (activations, unit-IoU match, drawings, probe maps) run with it on real mini-MIAS patches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import model_zoo
from dashboard import imaging
from dashboard.data import importers, patchset
from dashboard.evaluation import scoring
from dashboard.testing.real_helpers import copy_mias_subset

CARD = "mias-lite0"
# the card's patch AUROC on its check subset is recomputed to within this (fp16 weights, CPU threads)
AUROC_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def card():
    return model_zoo.load_card(CARD)


@pytest.fixture(scope="module")
def model(card):
    import torch

    # SHA-256 of the weights checked here; channels-last halves the CPU time of the convolutions
    return model_zoo.create_model(card, weights=True).to(memory_format=torch.channels_last)


def test_card_records_data_licence_command_and_metrics(card):
    assert card.arch == "efficientnet_lite0" and card.pixel_spacing_mm == 0.2 and card.patch_size == 224
    assert card.weights_dtype == "float16" and card.weights_path.is_file()
    assert model_zoo.sha256_file(card.weights_path) == card.weights_sha256
    t = card.training
    assert "Suckling" in t["licence"] and "research" in t["licence"].lower()
    assert t["command"].startswith("python -m model_zoo.train --card mias-lite0") and "--augment mammo" in t["command"]
    assert t["init"] == "imagenet-lite0" and t["augment"] == "mammo"
    assert any("--split-by-patient" in c for c in t["data_commands"])
    p = t["patchset"]
    assert p["sources"] == ["mini-mias"] and len(p["split_by_patient"]) == 3
    m = card.metrics
    for key in ("auroc", "image_auroc"):
        lo, hi = m[f"{'patch_' if key == 'auroc' else ''}{key}_ci95"]
        assert 0 <= lo <= m[key] <= hi <= 1
    assert m["n_eval_images_abnormal"] > 0 and m["n_eval_images_normal"] > 0
    assert m["n_eval_lesion"] + m["n_eval_normal"] == m["n_test"]
    assert sorted(m["check_patients"]) == m["check_patients"] and m["check_n_patches"] > 0


def _check_store(tmp_path_factory, shared_data, card):
    """The card's patient split made from the truth file alone, and a store with the check patients only."""
    from dashboard.data.store import Store

    folder = shared_data / "mini-mias"
    refs = sorted(p.stem for p in (folder / "images").glob("*.png"))
    labels = importers.mias_case_labels(importers.parse_mias_truth(folder / "labels.txt"), refs)
    p = card.training["patchset"]
    split_of = patchset.assign_patient_splits([{"case_id": c, "label": lab} for c, lab in labels.items()],
                                              tuple(p["split_by_patient"]), int(p["split_seed"]))
    check = card.metrics["check_patients"]
    assert all(split_of[c] == card.metrics["eval_split"] for c in check)
    keep = [r for r in refs if importers.mias_patient(r) in set(check)]
    root = tmp_path_factory.mktemp("mias-check")
    store = Store(root / "check.duckdb")
    report = importers.import_mini_mias(store, copy_mias_subset(shared_data, root / "mias", keep))
    assert report.failed == []
    return store, split_of


@pytest.mark.slow  # ~30-50 s on 2 busy cores: 16 images cut again, 188 patches through the network
def test_held_out_patch_auroc_recomputes(tmp_path_factory, shared_data, card, model):
    """Cut the check patients' held-out patches again from the files and score them with the weights."""
    from model_zoo.metrics import compute_auroc

    store, split_of = _check_store(tmp_path_factory, shared_data, card)
    try:
        ps = scoring.rebuild_patches(store, card, source="mini-mias", split=card.metrics["eval_split"],
                                     split_of=split_of)
    finally:
        store.close()
    assert len(ps) == card.metrics["check_n_patches"]
    from dashboard.engine.inference import predict_patches

    prob = predict_patches(model, card, ps.patches.astype(np.float32) / 255.0)[:, card.positive_index]
    auroc = compute_auroc(ps.labels == card.positive_index, prob)
    assert abs(auroc - card.metrics["check_auroc"]) <= AUROC_TOLERANCE


def test_concept_workflow_runs_with_the_mias_card(tmp_path, shared_data, card, model, store):
    """Activations, dataset thresholds, a unit-IoU match saved as unit labels, a probe and its maps,
    on real mini-MIAS patches cut at the card's spacing around truth circles."""
    from dashboard.data.patchset import PatchSetConfig
    from dashboard.data.store import DrawingRecord
    from dashboard.engine.activations import compute_patch_activations
    from dashboard.engine.dissection import (
        StatsConfig,
        compute_dataset_stats,
        label_units_from_drawing,
        match_drawing,
    )
    from dashboard.engine.probes import ProbeConfig, compute_concept_maps, compute_image_concept_maps, train_probes

    refs = ["mdb005", "mdb006", "mdb010", "mdb009", "mdb023", "mdb024", "mdb012", "mdb011"]
    importers.import_mini_mias(store, copy_mias_subset(shared_data, tmp_path / "mias", refs))
    ps = patchset.build_patchset(store, card,
                                 PatchSetConfig(source="mini-mias", per_image_lesion=1, per_image_normal=2,
                                                split_of={r["case_id"]: "train" for r in store.list_images()},
                                                splits=("train",), jitter=0, seed=0))
    gray = ps.patches.astype(np.float32) / 255.0  # (N, 224, 224)
    layer = card.default_layer
    n_units = {"bn2": 1280, "blocks.5": 192, "blocks.4": 112}[layer]  # efficientnet_lite0's channels there
    stride = {"bn2": 32, "blocks.5": 32, "blocks.4": 16}[layer]
    acts = torch.stack(compute_patch_activations(model, card, layer, list(gray)))  # (N, C, h, w)
    assert acts.shape[:2] == (len(ps), n_units) and acts.shape[-1] == 224 // stride
    stats = compute_dataset_stats(model, card, layer, gray, StatsConfig(cache_dir=tmp_path / "cache", quantile=0.95))
    assert stats.thresholds.shape == (n_units,)

    frames, drawn = {}, []
    for i in np.flatnonzero(ps.labels == card.positive_index):
        image_id = str(ps.image_id[i])
        row = store.get_image(image_id)
        if image_id not in frames:
            m = imaging.load_image(row["path"])
            frames[image_id] = imaging.prepare_model_image(m, card.pixel_spacing_mm, row["pixel_spacing_mm"])
        img, _, frame = frames[image_id]
        regions, _ = patchset.finding_regions(
            [f for f in store.list_findings(image_id) if f["radius"] is not None], frame)
        x0, y0 = int(ps.x0[i]), int(ps.y0[i])
        drawing = imaging.crop_patch(np.any([r.mask for r in regions], axis=0), x0, y0, card.patch_size)
        np.testing.assert_array_equal(ps.patches[i], np.round(imaging.crop_patch(img, x0, y0, 224) * 255))
        match = match_drawing(acts[i], stats.thresholds, drawing, tau=0.05)
        assert match.ious.shape == (n_units,) and match.best_iou > 0
        res = label_units_from_drawing(store,
                                       DrawingRecord(image_id=image_id, concept="mass", reader="tester", patch_x0=x0,
                                                     patch_y0=y0, patch_size=224, shape="freehand", geometry=[[0, 0]],
                                                     model_card=card.name), layer=layer, ious=match.ious, tau=0.05,
                                       mask=drawing)
        drawn.append((i, drawing))
        assert set(res.labeled_units) <= set(res.units_above.tolist())
    assert len(drawn) >= 4
    assert {r["concept"] for r in store.list_unit_labels(card.name, layer)} == {"mass"}

    by_index = {int(i): g for i, g in enumerate(gray)}
    keyed = {(str(ps.image_id[i]), int(ps.x0[i]), int(ps.y0[i])): by_index[int(i)] for i in range(len(ps))}
    probe = train_probes(store, model, card, layer, load_patch=lambda a: keyed[(a.image_id, a.patch_x0, a.patch_y0)],
                         config=ProbeConfig(folds=2, min_drawings=2, min_images=2, cache_dir=tmp_path / "cache"))
    assert probe.concepts == ["mass"] and probe.version is not None
    inside, outside = [], []
    for i, drawing in drawn:
        cmap = compute_concept_maps(probe, acts[i], 224)[0]  # (224, 224)
        inside.append(cmap[drawing].mean())
        outside.append(cmap[~drawing].mean())
    assert np.mean(inside) > np.mean(outside)  # the probe finds the drawn lesions where they were drawn
    img = next(iter(frames.values()))[0][:448, :448]  # a corner of the model image: the whole-image path
    full = compute_image_concept_maps(probe, model, card, img)
    assert full.shape == (1, *img.shape) and np.isfinite(full).all() and (full >= 0).all() and (full <= 1).all()

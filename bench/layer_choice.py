"""Which concept layer and labeling patch make a unit label mean something? (a benchmark, not a test)

    python -m bench.layer_choice --source demo [--data-dir DIR] [--out bench/results/layer_choice]
    python -m bench.layer_choice --source mini-mias [--mias ../shared/data/mini-mias]

For every configuration (model card, concept layer, labeling patch side S in model pixels) the
simulated reader (``evaluation.reader.simulate_drawing``: jittered, partly partial or over-drawn
outlines) draws up to 10 findings per concept on the TRAIN split, on an S x S patch centred on the
finding (up to 28 px off), as the Label page does. Measured on held-out images (demo: val + test
cases of a demo seed the model never saw; mini-MIAS: val + test women of the card's own split by
woman, ``patchset.assign_patient_splits`` 0.6/0.2/0.2 seed 0, so no held-out woman was trained on):

* units above tau per drawing (``dissection.match_drawing`` on the patch's activations, unit
  thresholds from ``dissection.compute_dataset_stats`` over breast tiles of S of the train split),
  as a count and as a share of the layer;
* the IoU with the truth of the union of the concept's labeled units' on-maps on the held-out
  images (a unit is labeled with the concept whose drawings give it the highest mean IoU, if that
  mean exceeds tau);
* concept-map pixel AUROC (truth vs the rest of the breast, pooled over held-out images) of a
  class-balanced multinomial logistic probe (``probes.fit_probe``, the app's probe) on the drawn
  feature cells against background cells of the same patches, after 1, 2, 3, 5, 10 drawings;
* the top concept: on the held-out abnormal images, a patch of S centred on the largest finding;
  the class log-odds is decomposed at the concept layer by integrated gradients
  (``report.layer_logit_decomposition``), each position's part split across concepts by the
  probe's probabilities; the concept with the largest part is the report's top concept. A match
  is a concept the image truly holds.

The frozen ImageNet baseline (card ``imagenet-lite0``) runs in the same process on the same
split and drawings. Writes ``layer_choice_<source>.csv`` and ``.json`` into ``--out`` and prints the table.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OUT_DIR = RESULTS_DIR / "layer_choice"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEMO_CONCEPTS = None  # dashboard.evaluation.DEFAULT_CONCEPTS (imported in main)
MIAS_CONCEPTS = ("mass", "calcification", "architectural-distortion", "asymmetry")
BUDGETS = (1, 2, 3, 5, 10)


def _parse(argv):
    ap = argparse.ArgumentParser(prog="python -m bench.layer_choice", description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", choices=("demo", "mini-mias"), default="demo")
    ap.add_argument("--data-dir", type=Path, default=None, help="demo data dir / mini-MIAS store dir")
    ap.add_argument("--mias", type=Path, default=SHARED / "mini-mias", help="mini-MIAS folder")
    ap.add_argument("--demo-cases", type=int, default=40)
    ap.add_argument("--demo-seed", type=int, default=2024)
    ap.add_argument("--card", default=None, help="the product card (default demo-lite0-synth / mias-lite0)")
    ap.add_argument("--configs", default="bn2:224,bn2:448,blocks.5:448,blocks.4:224,blocks.4:448",
                    help="layer:S pairs of the product card")
    ap.add_argument("--baseline", default="imagenet-lite0:blocks.4:512",
                    help="card:layer:S of the frozen baseline ('' for none)")
    ap.add_argument("--stats-patches", type=int, default=96)
    ap.add_argument("--max-heldout", type=int, default=30)
    ap.add_argument("--ig-steps", type=int, default=8, help="integration steps of the top-concept decomposition")
    ap.add_argument("--top-images", type=int, default=10, help="abnormal held-out images for the top concept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(argv)


# ---------------------------------------------------------------- data
def _mias_truths(store, card, rows, concepts):
    """ImageTruth of mini-MIAS rows: the truth circles (``patchset.finding_regions``) in model space."""
    import numpy as np

    from dashboard import imaging
    from dashboard.data.files import load_stored_image
    from dashboard.data.patchset import finding_regions
    from dashboard.evaluation.reader import ImageTruth, TruthRegion

    out = []
    for row in rows:
        m = load_stored_image(store, row)
        img, breast, frame = imaging.prepare_model_image(m, card.pixel_spacing_mm,
                                                         default_spacing_mm=row.get("pixel_spacing_mm"))
        fs = [f for f in store.list_findings(row["image_id"]) if f["concept"] in concepts]
        by_circle: dict = {}
        for f in fs:
            if f.get("cx") is not None:
                by_circle.setdefault((f["cx"], f["cy"], f["radius"]), []).append(f)
        regions = []
        for key, group in by_circle.items():
            found, _ = finding_regions(group, frame)
            for reg in found:
                regions.append(TruthRegion(tuple(sorted({g["concept"] for g in group})),
                                           str(group[0].get("pathology") or "unknown"), reg.mask & breast,
                                           (reg.cx, reg.cy), str(key)))
        out.append(ImageTruth(row["image_id"], row["case_id"], str(row.get("split")), str(row.get("case_label")),
                              np.asarray(img, np.float32), breast, regions))
    return out


def load_source(args, card):
    """(train truths, held-out truths, concepts, info) of the source, in model space at ``card``'s spacing."""
    import numpy as np

    from dashboard import evaluation as ev
    from dashboard.data.store import Store
    from dashboard.settings import load_settings

    if args.source == "demo":
        from dashboard.data.demo import ensure_demo

        data_dir = (args.data_dir or Path("/tmp") / f"cl-layer-demo-{args.demo_seed}-{args.demo_cases}").resolve()
        settings = load_settings().with_overrides(data_dir=data_dir, db_path=data_dir / "conceptlens.duckdb")
        store = Store(settings.db_path, settings.journal_dir, data_dir=data_dir)
        ensure_demo(settings, store, n_cases=args.demo_cases, seed=args.demo_seed)
        concepts = tuple(ev.DEFAULT_CONCEPTS)
        train_rows = store.list_images(split="train")
        held_rows = [r for s in ("val", "test") for r in store.list_images(split=s)]
        load = lambda rows: [ev.load_image_truth(store, card, r, concepts) for r in rows]  # noqa: E731
        info = {"demo_seed": args.demo_seed, "demo_cases": args.demo_cases}
    else:
        from dashboard.data.importers import import_mini_mias

        data_dir = (args.data_dir or Path("/tmp") / "cl-layer-mias").resolve()
        settings = load_settings().with_overrides(data_dir=data_dir, db_path=data_dir / "conceptlens.duckdb")
        store = Store(settings.db_path, settings.journal_dir, data_dir=data_dir)
        if not store.list_images():
            import_mini_mias(store, args.mias)
        concepts = MIAS_CONCEPTS
        rows = store.list_images()
        cut = ev.split_by_woman(rows, (0.6, 0.2, 0.2), seed=0)  # the card's own split (card [training])
        train_rows, held_rows = cut["train"], cut["heldout"]
        load = lambda rs: _mias_truths(store, card, rs, concepts)  # noqa: E731
        women = {k: len({r.get("patient_ref") or r["case_id"] for r in v}) for k, v in cut.items()}
        info = {"split": "evaluation.split_by_woman(0.6, 0.2, 0.2, seed 0)", "train_women": women["train"],
                "heldout_women": women["heldout"]}
    if len(held_rows) > args.max_heldout:  # keep every abnormal-case image first, then a seeded sample
        perm = np.random.default_rng([args.seed, 7]).permutation(len(held_rows)).tolist()
        perm.sort(key=lambda i: str(held_rows[i].get("case_label")) == "normal")
        held_rows = [held_rows[i] for i in sorted(perm[:args.max_heldout])]
    train, held = load(train_rows), load(held_rows)
    info.update(train_images=len(train), heldout_images=len(held), data_dir=str(data_dir))
    return store, train, held, concepts, info


def drawing_tasks(train, concepts, n_max: int, seed: int, groups: dict):
    """Per concept up to n_max (image index, region) in a seeded order (lesions: every region;
    normal structures: one per image)."""
    import numpy as np

    out = {}
    for ci, c in enumerate(concepts):
        items = []
        for ii, t in enumerate(train):
            regs = [r for r in t.regions if c in r.concepts and r.mask.any()]
            if groups.get(c) == "normal":
                regs = regs[:1]
            items += [(ii, r) for r in regs]
        perm = np.random.default_rng([seed, ci, 0x1E51]).permutation(len(items))
        out[c] = [items[i] for i in perm[:n_max]]
    return out


# ---------------------------------------------------------------- one configuration
def evaluate_config(model, card, layer: str, size: int, train, held, concepts, tasks, args, cache_dir: Path,
                    held_feats: dict):
    """All the figures of one (card, layer, S). held_feats: image_id -> (C, h, w) FCN features at layer."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from dashboard import imaging
    from dashboard.engine.activations import compute_patch_activations
    from dashboard.engine.dissection import StatsConfig, compute_dataset_stats, match_drawing
    from dashboard.engine.probes import _cell_coverage, fit_probe
    from dashboard.engine.report import layer_logit_decomposition
    from dashboard.evaluation.metrics import sample_grid
    from dashboard.evaluation.reader import ReaderConfig, simulate_drawing

    t0 = time.perf_counter()
    rcfg = ReaderConfig()
    # dataset statistics: breast tiles of S from the train split
    rng = np.random.default_rng([args.seed, size])
    tiles, h = [], hashlib.sha256()
    per = max(1, int(np.ceil(args.stats_patches / max(len(train), 1))))
    for t in train:
        xy = imaging.tile(t.breast, size, size // 2, min_fraction=0.5)
        for k in rng.permutation(len(xy))[:per]:
            x0, y0 = (int(v) for v in np.asarray(xy)[k])
            tiles.append(imaging.crop_patch(t.img, x0, y0, size))
            h.update(f"{t.image_id}:{x0}:{y0}:{size};".encode())
    arr = np.stack(tiles[:args.stats_patches])
    stats = compute_dataset_stats(model, card, layer, arr, StatsConfig(
        cache_dir=cache_dir / "dissection", data_key=h.hexdigest()[:24], batch_size=8))
    thr = np.asarray(stats.thresholds, np.float32)
    t_stats = time.perf_counter() - t0

    # drawings on train patches
    t0 = time.perf_counter()
    draws = []  # (concept, patch, mask)
    for c in concepts:
        for k, (ii, reg) in enumerate(tasks[c]):
            t = train[ii]
            r2 = np.random.default_rng([args.seed, ii, k, abs(hash(c)) % (2 ** 31)])
            if reg.is_lesion:
                cx, cy = reg.centre
            else:
                ys, xs = np.nonzero(reg.mask)
                j = int(r2.integers(len(ys)))
                cx, cy = float(xs[j]), float(ys[j])
            jit = r2.integers(-rcfg.patch_jitter_px, rcfg.patch_jitter_px + 1, size=2)
            x0, y0 = int(round(cx - size / 2)) + int(jit[0]), int(round(cy - size / 2)) + int(jit[1])
            truth = imaging.crop_patch(reg.mask.astype(np.float32), x0, y0, size) > 0.5
            if not truth.any():
                continue
            d = simulate_drawing(truth, rcfg, r2)
            draws.append((c, k, imaging.crop_patch(t.img, x0, y0, size), d.mask))
    acts = compute_patch_activations(model, card, layer, [d[2] for d in draws], cache_dir=cache_dir)
    n_units = int(acts[0].shape[0]) if acts else 0
    t_ms = []
    ious = []
    for (_c, _k, _p, m), a in zip(draws, acts):
        s = time.perf_counter()
        ious.append(match_drawing(a, thr, m, tau=rcfg.tau).ious)
        t_ms.append(1000 * (time.perf_counter() - s))
    ious = np.stack(ious) if ious else np.zeros((0, n_units))
    above = (ious > rcfg.tau).sum(1)
    t_draw = time.perf_counter() - t0

    # held-out truth on a grid (stride 8) and the units' FCN maps
    st, off = 8, 4
    cidx = {c: i for i, c in enumerate(concepts)}
    grids = {t.image_id: (t.breast[off::st, off::st], np.stack([t.concept_mask(c)[off::st, off::st] for c in concepts]))
             for t in held}  # breast (h_g, w_g), truth (K, h_g, w_g)
    rows = []
    for b in BUDGETS:
        sel = [i for i, d in enumerate(draws) if d[1] < b]
        # unit labels: the concept with the highest mean IoU over its drawings so far, if above tau
        mean_iou = np.zeros((len(concepts), n_units))
        for c in concepts:
            idx = [i for i in sel if draws[i][0] == c]
            if idx:
                mean_iou[cidx[c]] = ious[idx].mean(0)
        label = np.where(mean_iou.max(0) > rcfg.tau, mean_iou.argmax(0), -1)
        # probe on the drawn cells and background cells of the same patches
        X, y = [], []
        for i in sel:
            c, _k, _p, m = draws[i]
            a = acts[i]
            cov = _cell_coverage(torch.from_numpy(m[None]), a.shape[1], a.shape[2])[0].reshape(-1).numpy()
            pos = cov >= 0.5
            if not pos.any():
                pos[cov.argmax()] = True
            bg = cov == 0
            f = a.reshape(a.shape[0], -1).T
            X += [f[torch.from_numpy(pos)], f[torch.from_numpy(bg)]]
            y += [np.full(pos.sum(), cidx[c] + 1), np.zeros(bg.sum(), np.int64)]
        Xt = torch.cat(X).float()
        yt = torch.from_numpy(np.concatenate(y).astype(np.int64))
        W, bias, mu, sd = fit_probe(Xt, yt, len(concepts) + 1)
        scores = {c: ([], []) for c in concepts}
        u_int, u_uni = np.zeros(len(concepts)), np.zeros(len(concepts))
        for t in held:
            fe = held_feats[t.image_id].float()  # (C, h, w)
            cc, hh, ww = fe.shape
            z = ((fe.reshape(cc, -1).T - mu) / sd) @ W.T + bias  # (h*w, K+1)
            p = torch.softmax(z, 1).T.reshape(-1, hh, ww)
            up = sample_grid(p.numpy(), t.img.shape, st, off)  # (K+1, h_g, w_g)
            br, truth = grids[t.image_id]
            for c in concepts:
                scores[c][0].append(up[cidx[c] + 1][br])
                scores[c][1].append(truth[cidx[c]][br])
            lab_units = np.nonzero(label >= 0)[0]
            if len(lab_units):
                on = sample_grid(fe[lab_units].numpy(), t.img.shape, st, off) > thr[lab_units][:, None, None]
                on &= br[None]
                for c in concepts:
                    us = label[lab_units] == cidx[c]
                    if not us.any():
                        continue
                    u = on[us].any(0)
                    tr = truth[cidx[c]] & br
                    u_int[cidx[c]] += (u & tr).sum()
                    u_uni[cidx[c]] += (u | tr).sum()
        for c in concepts:
            s_, y_ = np.concatenate(scores[c][0]), np.concatenate(scores[c][1])
            n_d = sum(1 for i in sel if draws[i][0] == c)
            rows.append({"budget": b, "concept": c, "n_drawings": n_d,
                         "auroc": float(roc_auc_score(y_, s_)) if 0 < y_.sum() < len(y_) and n_d else None,
                         "n_units": int((label == cidx[c]).sum()),
                         "union_iou": float(u_int[cidx[c]] / u_uni[cidx[c]]) if u_uni[cidx[c]] > 0 and (label == cidx[c]).any() else None})
    # the top concept at the last budget's probe: a patch of S centred on the largest finding
    t0 = time.perf_counter()
    target = card.classes.index(card.positive_class) if getattr(card, "positive_class", None) else None
    top_rows = []
    if target is not None:
        abnormal = [t for t in held if any(r.is_lesion and r.mask.any() for r in t.regions)][:args.top_images]
        for t in abnormal:
            les = [r for r in t.regions if r.is_lesion and r.mask.any()]
            big = max(les, key=lambda r: int(r.mask.sum()))
            x0, y0 = int(round(big.centre[0] - size / 2)), int(round(big.centre[1] - size / 2))
            patch = imaging.crop_patch(t.img, x0, y0, size)
            x = torch.as_tensor(np.asarray(card.preprocess(patch[None])), dtype=torch.float32)
            dec = layer_logit_decomposition(model, x, layer, target, n_steps=args.ig_steps)
            a = dec.attribution  # (C, h, w)
            pos_part = a.sum(0)  # (h*w) position parts of the logit
            cc, hh, ww = a.shape
            fe = dec.activation
            z = ((fe.reshape(cc, -1).T.float() - mu) / sd) @ W.T + bias
            p = torch.softmax(z, 1).T.reshape(-1, hh, ww).double()  # (K+1, h, w)
            parts = (p[1:] * pos_part[None]).sum((1, 2)).numpy()  # concept parts of the logit
            top = concepts[int(np.argmax(parts))]
            truth_c = t.lesion_concepts()
            top_rows.append({"image_id": t.image_id, "top": top, "match": top in truth_c,
                             "truth": sorted(truth_c), "delta": dec.delta, "logit": dec.logit})
    t_top = time.perf_counter() - t0
    return {"n_units": n_units, "units_above_mean": float(above.mean()) if len(above) else None,
            "units_above_by_concept": {c: float(np.mean([above[i] for i, d in enumerate(draws) if d[0] == c]))
                                       for c in concepts if any(d[0] == c for d in draws)},
            "drawing_iou_ms_median": float(np.median(t_ms)) if t_ms else None,
            "feature_grid": list(acts[0].shape[1:]) if acts else None,
            "rows": rows, "top": top_rows,
            "top_match_rate": float(np.mean([r["match"] for r in top_rows])) if top_rows else None,
            "ig_delta_max_rel": float(max(abs(r["delta"]) / max(1.0, abs(r["logit"])) for r in top_rows)) if top_rows else None,
            "seconds": {"stats": round(t_stats, 1), "drawings": round(t_draw, 1), "top": round(t_top, 1)}}


def summary_row(card_name, layer, size, res, concepts):
    at5 = {r["concept"]: r for r in res["rows"] if r["budget"] == 5}
    need = {}
    for c in concepts:
        ok = [r["budget"] for r in res["rows"] if r["concept"] == c and r["auroc"] is not None and r["auroc"] >= 0.9]
        need[c] = min(ok) if ok else None
    mass = [r["auroc"] for r in sorted(res["rows"], key=lambda r: r["budget"]) if r["concept"] == "mass"]
    ui = [r["union_iou"] for r in at5.values() if r["union_iou"] is not None]
    au5 = [r["auroc"] for r in at5.values() if r["auroc"] is not None]
    return {"card": card_name, "layer": layer, "patch": size, "grid": "x".join(map(str, res["feature_grid"] or [])),
            "units": res["n_units"], "units_above_per_drawing": round(res["units_above_mean"] or 0, 1),
            "units_above_pct": round(100 * (res["units_above_mean"] or 0) / max(res["n_units"], 1), 2),
            "mass_units_above": round(res["units_above_by_concept"].get("mass", float("nan")), 1),
            "union_iou_at5_mean": round(float(sum(ui) / len(ui)), 3) if ui else None,
            "mass_union_iou_at5": at5.get("mass", {}).get("union_iou"),
            "auroc_at5_mean": round(float(sum(au5) / len(au5)), 3) if au5 else None,
            "mass_auroc_by_budget": [None if v is None else round(v, 3) for v in mass],
            "concepts_auroc90_within5": sum(1 for c in concepts if need[c] is not None and need[c] <= 5),
            "drawings_to_auroc90": need,
            "top_match": res["top_match_rate"], "top_n": len(res["top"]),
            "ig_delta_max_rel": res["ig_delta_max_rel"], "iou_ms": res["drawing_iou_ms_median"],
            "seconds": res["seconds"]}


def choose(rows: list[dict]) -> dict:
    """The configuration the cards get: most concepts at concept-map AUROC >= 0.90 within 5 drawings,
    then the highest mean AUROC at 5 drawings, then the fewest units above tau per drawing."""
    best = max(rows, key=lambda r: (r["concepts_auroc90_within5"], r["auroc_at5_mean"] or 0.0,
                                    -r["units_above_pct"]))
    return {"layer": best["layer"], "patch": best["patch"],
            "rule": "max concepts at AUROC >= 0.90 within 5 drawings, then mean AUROC at 5, then fewest units above tau"}


def main(argv=None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = _parse(argv)
    import torch
    from safetensors.torch import load_file, save_file

    import model_zoo
    from dashboard.engine.activations import compute_activations, patch_key

    torch.set_num_threads(args.threads)
    card_name = args.card or ("demo-lite0-synth" if args.source == "demo" else "mias-lite0")
    configs = [(card_name, *c.split(":")) for c in args.configs.split(",") if c]
    if args.baseline:
        configs.append(tuple(args.baseline.split(":")))
    cards = {n: model_zoo.load_card(n) for n in dict.fromkeys(c[0] for c in configs)}
    models = {n: model_zoo.create_model(c, device="cpu") for n, c in cards.items()}
    t_all = time.perf_counter()
    store, train, held, concepts, info = load_source(args, cards[card_name])
    groups = {c["name"]: ("normal" if c["lexicon_group"] == "normal structure" else "lesion")
              for c in store.list_concepts()}
    tasks = drawing_tasks(train, concepts, max(BUDGETS), args.seed, groups)
    info["drawable"] = {c: len(v) for c, v in tasks.items()}
    print(f"{info}", flush=True)
    cache_dir = Path(info["data_dir"]) / "cache"
    feats: dict = {}
    out = {"source": args.source, "info": info, "concepts": list(concepts), "configs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, layer, size in configs:
        card, model = cards[name], models[name]
        if (name, layer) not in feats:  # whole held-out images, every layer of this card in one pass, disk-cached
            layers = list(dict.fromkeys(lay for (n, lay, _s) in configs if n == name))
            got: dict = {lay: {} for lay in layers}
            for t in held:
                f = cache_dir / "heldout" / f"{name}-{'+'.join(layers)}-{patch_key(t.img)[:16]}.safetensors"
                if f.is_file():
                    a = load_file(str(f))
                else:
                    x = torch.as_tensor(card.preprocess(t.img[None]), dtype=torch.float32)
                    a = {k: v[0].half().contiguous()
                         for k, v in compute_activations(model, layers, x, out_device="cpu").items()}
                    f.parent.mkdir(parents=True, exist_ok=True)
                    save_file(a, str(f))
                for lay in layers:
                    got[lay][t.image_id] = a[lay]
            for lay, d in got.items():
                feats[(name, lay)] = d
        t0 = time.perf_counter()
        res = evaluate_config(model, card, layer, int(size), train, held, concepts, tasks, args, cache_dir,
                              feats[(name, layer)])
        row = summary_row(name, layer, int(size), res, concepts)
        row["seconds_total"] = round(time.perf_counter() - t0, 1)
        out["configs"].append({"summary": row, **res})
        print(json.dumps(row), flush=True)
        (args.out / f"layer_choice_{args.source}.json").write_text(json.dumps(out, indent=1, default=str))
    out["chosen"] = choose([c["summary"] for c in out["configs"] if c["summary"]["card"] == card_name])
    print(f"chosen: {out['chosen']}")
    out["seconds_total"] = round(time.perf_counter() - t_all, 1)
    (args.out / f"layer_choice_{args.source}.json").write_text(json.dumps(out, indent=1, default=str))
    cols = list(out["configs"][0]["summary"])
    with open(args.out / f"layer_choice_{args.source}.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=cols)
        wr.writeheader()
        for c in out["configs"]:
            wr.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in c["summary"].items()})
    print(f"wrote {args.out}/layer_choice_{args.source}.csv/.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

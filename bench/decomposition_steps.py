"""Integration steps of the report's layer decomposition: completeness error and time per step count.

    python -m bench.decomposition_steps --data DIR [--images 8] [--steps 16,32,48,64,96,128]

For the most suspicious patch of each of ``--images`` scored images of a data dir, the relative
convergence delta |delta| / max(1, |logit - baseline logit|) of ``report.layer_logit_decomposition``
at the card's concept layer, and its wall time, per step count and captum ``internal_batch_size``.
The report accepts a decomposition whose relative delta is at most ``ReportConfig.decomposition_tol``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from dashboard import imaging
from dashboard.data.store import Store
from dashboard.engine import report
from dashboard.engine.inference import target_class
from dashboard.settings import load_settings
from dashboard.testing.e2e_data import E2E_CARD
from dashboard.ui.context import build_context, load_model
from dashboard.ui.work.images import model_image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", default="16,32,48,64,96,128")
    ap.add_argument("--batches", default="16,64", help="internal_batch_size values timed (capped at the steps)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ["CONCEPTLENS_DATA_DIR"] = str(args.data)
    os.environ.pop("CONCEPTLENS_DB_PATH", None)
    settings = load_settings().with_overrides(model_card=E2E_CARD, warmup=False)
    rows = []
    load = [os.getloadavg()]
    with Store(settings.db_path, settings.journal_dir, read_only=True) as store:
        ctx = build_context(settings, store, load_model(E2E_CARD, settings.user_cards_dir, "cpu"))
        t_idx, _ = target_class(ctx.card, None)
        layer = ctx.card.default_layer
        done = 0
        for row in store.list_images():
            pred = store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"])
            if not pred or not pred["top_patches"]:
                continue
            x0, y0, size, _ = pred["top_patches"][0]
            img, _, _ = model_image(ctx, row)
            patch = imaging.crop_patch(img, int(x0), int(y0), int(size))
            x = torch.as_tensor(np.asarray(ctx.card.preprocess(patch[None])), dtype=torch.float32)
            for steps in [int(s) for s in args.steps.split(",")]:
                for b in sorted({min(int(b), steps) for b in args.batches.split(",")}):
                    t = time.perf_counter()
                    dec = report.layer_logit_decomposition(ctx.model, x, layer, t_idx, n_steps=steps,
                                                           internal_batch_size=b)
                    wall = time.perf_counter() - t
                    rel = abs(dec.delta) / report.decomposition_scale(dec.logit, dec.baseline_logit)
                    rows.append({"image": row["image_id"], "steps": steps, "batch": b, "rel_delta": rel,
                                 "explained": dec.logit - dec.baseline_logit, "wall_s": wall})
                    print(f"{row['image_id'][:12]} steps {steps:4d} batch {b:3d} rel delta {rel:.4f} "
                          f"(explained {dec.logit - dec.baseline_logit:+.2f}) {wall:.2f} s", flush=True)
            done += 1
            if done >= args.images:
                break
    load.append(os.getloadavg())
    print("\nsteps  batch  rel delta p50 / max   share <= 0.01   wall p50 s")
    for steps in sorted({r["steps"] for r in rows}):
        for b in sorted({r["batch"] for r in rows if r["steps"] == steps}):
            sel = [r for r in rows if r["steps"] == steps and r["batch"] == b]
            d = np.array([r["rel_delta"] for r in sel])
            w = np.array([r["wall_s"] for r in sel])
            print(f"{steps:5d} {b:6d}   {np.median(d):.4f} / {d.max():.4f}   {np.mean(d <= 0.01):.2f}"
                  f"            {np.median(w):.2f}")
    print("load average", [[round(v, 2) for v in la] for la in load])
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "load_average": load}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

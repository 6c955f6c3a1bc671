"""Where the seconds of the cold "first Save -> Report" go, in-process (not a test, not a browser).

    python -m bench.profile_report --data DIR [--case ID] [--prefetch] [--profile FILE]

A fresh ``AppContext`` (fresh caches: a new server) on a copy of a warmed data dir: open a patch
of the case's most suspicious image, match one box drawing, Save with retrain, then build the
Report of that image, each step timed with ``time.perf_counter``. ``--prefetch`` starts the Label
page's background head start (``read.prepare_labeling``) when the patch opens, like the app.
``--profile FILE`` writes the Report step's cProfile stats.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import tempfile
import time
from pathlib import Path

from dashboard.data.store import Store
from dashboard.settings import load_settings
from dashboard.testing.e2e_data import E2E_CARD
from dashboard.ui import canvas
from dashboard.ui.context import build_context, load_model
from dashboard.ui.screens import label, read, report
from dashboard.ui.types import PatchRef


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--case", default="syn1234-0000")
    ap.add_argument("--prefetch", action="store_true")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between opening the patch and drawing")
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="Saves (and Reports) in a row")
    args = ap.parse_args(argv)
    print("load", os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="conceptlens-prof-") as tmp:
        data = Path(tmp) / "data"
        shutil.copytree(args.data, data)
        os.environ["CONCEPTLENS_DATA_DIR"] = str(data)
        os.environ.pop("CONCEPTLENS_DB_PATH", None)
        settings = load_settings().with_overrides(model_card=E2E_CARD, warmup=False)
        t = {}
        t0 = time.perf_counter()
        store = Store(settings.db_path, settings.journal_dir)
        loaded = load_model(E2E_CARD, settings.user_cards_dir, "cpu")
        ctx = build_context(settings, store, loaded)
        t["context"] = time.perf_counter() - t0
        row = store.list_images(case_id=args.case)[0]
        pred = store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"])
        x0, y0, size, _ = pred["top_patches"][0]
        ref = PatchRef(row["image_id"], int(x0), int(y0), int(size))
        t0 = time.perf_counter()
        if args.prefetch:
            read.prepare_labeling(ctx, ref)
        view = label.load_patch(ctx, ref)
        t["open_patch"] = time.perf_counter() - t0
        time.sleep(args.pause)
        for i in range(args.repeat):
            s = size / 4 + i
            d = canvas.Drawing("rect", ((s, s), (3 * s, s), (3 * s, 3 * s), (s, 3 * s)))
            t0 = time.perf_counter()
            m = label.match(ctx, view, [d])
            t[f"match{i}"] = time.perf_counter() - t0
            prof = cProfile.Profile() if args.profile else None
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            res = label.save(ctx, view, m, "mass", "bench", retrain=True)
            if prof:
                prof.disable()
                prof.dump_stats(f"{args.profile}.save{i}")
            t[f"save{i}"] = time.perf_counter() - t0
            t[f"save{i}_parts"] = {k: round(v, 3) for k, v in res.timings_s.items()}
            prof = cProfile.Profile() if args.profile else None
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            v = report.load_report(ctx, args.case, row["image_id"])
            if prof:
                prof.disable()
                prof.dump_stats(f"{args.profile}.report{i}")
            t[f"report{i}"] = time.perf_counter() - t0
            assert v.lead is not None, v.notes
        store.close()
    for k, v in t.items():
        print(f"{k:14s} {v if isinstance(v, dict) else round(v, 3)}")
    print("load", os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

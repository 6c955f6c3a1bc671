"""README screenshots of the demo (not a test): the app on a copy of a `make run` data dir.

    python -m tests.e2e.demo_screenshots --data-dir COPY_OF_DATA [--out docs/screenshots]

Starts ``streamlit run app.py`` on DATA (which must already hold the demo set and the default
card's dataset statistics, as ``make run`` leaves them), drives headless chromium through one
reader's loop on the first demo case with a finding (worklist, read with the lesion map, label a
box around the lesion where a unit fires, save, report, units, model page) and writes demo_*.png.
DATA is written to (the drawing is saved): pass a copy.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from dashboard.testing import flows
from dashboard.testing.browser import ARTIFACTS, ROOT, app_page
from dashboard.testing.e2e_data import E2E_CARD, case_with_lesion, plan_drawing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--case", default="syn1234-0000", help="a demo case with a mass (default: the first of `make run`)")
    args = ap.parse_args(argv)
    data = args.data_dir.resolve()
    case_id = args.case or case_with_lesion(data)
    plan = plan_drawing(data, case_id)
    env = {"CONCEPTLENS_DATA_DIR": str(data), "CONCEPTLENS_DB_PATH": str(data / "conceptlens.duckdb"),
           "CONCEPTLENS_MODEL_CARD": E2E_CARD, "CONCEPTLENS_DEVICE": "cpu"}
    args.out.mkdir(parents=True, exist_ok=True)
    with app_page(ROOT / "app.py", env, log_path=ARTIFACTS / "demo_screenshots.log", timeout_ms=flows.LONG) as page:
        flows.heading(page, "Worklist")
        flows.screenshot(page, args.out / "demo_worklist.png")
        flows.select_option(page, "Case", case_id)
        flows.click_button(page, "Open case")
        flows.heading(page, f"Read · {case_id}")
        page.get_by_text("Lesion map", exact=True).click()
        flows.wait_idle(page)
        flows.screenshot(page, args.out / "demo_read.png")
        flows.open_patch_at_point(page, plan["image_label"], plan["x"], plan["y"])
        flows.sign_in(page, "Dr Demo")
        flows.select_option(page, "Lexicon group", "mass")
        flows.draw_polygon(page, plan["polygon"])
        flows.wait_text(page, "Best matching unit")
        flows.screenshot(page, args.out / "demo_label.png")
        flows.click_button(page, "Save as mass")
        flows.wait_text(page, re.compile(r"Saved 'mass': labeled \d+ unit"))
        flows.nav(page, "Report")
        flows.heading(page, "Report")
        flows.wait_text(page, re.compile(r"Concept probe v\d+"))
        flows.screenshot(page, args.out / "demo_report.png")
        flows.nav(page, "Units")
        flows.heading(page, "Units")
        flows.wait_idle(page)
        flows.screenshot(page, args.out / "demo_units.png")
        flows.nav(page, "Model and data")
        flows.heading(page, "Model and data")
        flows.screenshot(page, args.out / "demo_model_data.png")
    print(f"case {case_id}, patch {plan['patch']}, expected IoU {plan['expected_iou']:.2f}; wrote {args.out}/demo_*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Load benchmark (not a test): several readers on one server at once.

    python -m bench.bench_load --readers N [--data-dir DIR] [--cases same|spread] [--seed S]
                               [--server-env KEY=VALUE ...] [--out FILE]

Starts ``streamlit run app.py`` (127.0.0.1 only) on a fresh copy of the e2e demo data (4 synthetic
DICOM cases, the trained demo model, its dataset statistics; ``--data-dir`` keeps the prepared
original between runs), opens the Worklist once (the store and the model load: not timed), then
drives N browser contexts of one headless chromium through the reader's loop at once, each with its
own reader name and seeded, human-like pauses between actions:

    Worklist: pick a case, Open case  -> Read settled      (heading, script run done, images drawn)
    Label this patch                  -> Label page        (its heading)
    sign in once                      -> the canvas
    3 x (draw a polygon: its closing click -> IoU panel of that drawing, its unit map drawn
         Save                         -> "Saved ..." message)
    Report                            -> its probe line, script run done, images and charts drawn

Each step is timed from the input reaching the page (Playwright's click returns) to the state it
should produce; p50 and p90 per step are printed. How long the page took to accept the input is
printed beside it ("page busy"): Playwright waits until the page can take a click, and with N
browsers on the server's cores a page is sometimes still busy (e.g. loading and drawing its first
plotly chart in software WebGL) when the reader clicks. An interaction that produces no response within ``--step-timeout`` seconds is a *lost
interaction* (counted per kind); the reader then goes on (a lost "Label this patch" click is
clicked again, once). After the server has stopped, the store is checked: every acknowledged Save
(its "Saved" message was shown) is stored exactly once, under its reader's name; a drawing stored
without an acknowledgement, or twice, is reported.

``--cases same``: every reader opens the same case (a pilot study's readers read the same cases);
``spread``: reader i opens the i-th case (the caches cannot help). Writes bench/results/load.json
(``--out``). Bounded: every wait has a timeout and the whole run a deadline (``--deadline``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.stats import pct
from dashboard.data.store import Store
from dashboard.testing import flows
from dashboard.testing.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, chromium_available, streamlit_server
from dashboard.testing.e2e_data import E2E_CARD, _settings, prepare_data_dir

RESULTS = Path(__file__).resolve().parent / "results"
#: "Label this patch" has a keyboard shortcut: its accessible name is "Label this patch Shortcut L".
LABEL_PATCH = re.compile(r"^Label this patch( Shortcut \S+)?$")
STEPS = ("open_case", "label_patch", "draw_to_iou", "save_to_saved", "open_report")
#: Polygons the readers outline on the patch, in fractions of the canvas (each jittered per reader).
POLYGONS = (
    [(0.30, 0.30), (0.62, 0.28), (0.70, 0.55), (0.52, 0.72), (0.28, 0.60)],
    [(0.20, 0.45), (0.45, 0.22), (0.78, 0.40), (0.66, 0.78), (0.30, 0.74)],
    [(0.40, 0.18), (0.80, 0.30), (0.74, 0.70), (0.36, 0.82), (0.18, 0.50)],
)
POLL_MS = 50  # how often a timed wait checks its state in the page
T0 = time.perf_counter()  # the events' clock


@dataclass
class ReaderLog:
    """What one reader did and waited for."""

    name: str
    case_id: str
    times: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STEPS})
    lost: Counter = field(default_factory=Counter)
    acked_saves: int = 0
    errors: list[str] = field(default_factory=list)
    done: bool = False
    events: list[tuple] = field(default_factory=list)  # step, start (s since T0), seconds, of which the action


class Lost(Exception):
    """An interaction produced no response within the step timeout."""


class Reader:
    """One browser context walking the reader's loop (Playwright async API)."""

    def __init__(self, page, url: str, log: ReaderLog, rng: random.Random, step_timeout_ms: int, pause: tuple):
        self.page, self.url, self.log, self.rng = page, url, log, rng
        self.timeout = step_timeout_ms
        self.pause_s = pause

    # ------------------------------------------------------------ waits (checked in the page)
    async def js(self, predicate: str, arg=None, timeout: int | None = None) -> None:
        await self.page.wait_for_function(predicate, arg=arg, polling=POLL_MS, timeout=timeout or self.timeout)

    async def text(self, pattern: str, timeout: int | None = None) -> None:
        await self.js(flows.TEXT_SHOWN, [pattern, "s"], timeout)

    async def idle(self, timeout: int | None = None) -> None:
        await self.js(f"() => !!document.querySelector({flows.APP_IDLE!r})", timeout=timeout)

    async def settled(self) -> None:
        await self.idle()
        await self.js(flows.MEDIA_READY)

    async def think(self) -> None:
        """A reader's pause between two actions (seeded)."""
        await asyncio.sleep(self.rng.uniform(*self.pause_s))

    async def heading(self, text: str, timeout: int | None = None) -> None:
        await self.page.locator("h1", has_text=text).first.wait_for(state="visible", timeout=timeout or self.timeout)

    async def timed(self, step: str, action, until) -> bool:
        """``action()`` then ``until()``: the seconds from the input reaching the page (Playwright's
        click returns) to the state go to ``step``; how long the page took to accept the input (it
        waits while the browser is still busy, e.g. loading and drawing its first plotly chart on
        the shared cores) goes to ``step`` + "_page_busy". A timeout is a lost interaction."""
        t_call = time.perf_counter()
        await action()
        t0 = time.perf_counter()
        acted = t0 - t_call
        self.log.times.setdefault(step + "_page_busy", []).append(acted)
        try:
            await until()
        except Exception as exc:  # noqa: BLE001 - Playwright's TimeoutError: no response
            self.log.lost[step] += 1
            self.log.errors.append(f"{step}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            shot = ARTIFACTS / "bench_load" / f"{self.log.name.replace(' ', '_')}-{step}-{sum(self.log.lost.values())}.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            try:
                await self.page.screenshot(path=str(shot), full_page=True)
            except Exception:  # noqa: BLE001 - a screenshot is only a diagnostic
                pass
            return False
        self.log.times[step].append(time.perf_counter() - t0)
        self.log.events.append((step, round(t0 - T0, 2), round(time.perf_counter() - t0, 2), round(acted, 2)))
        return True

    # ------------------------------------------------------------ the loop
    async def open_case(self) -> None:
        page = self.page
        await page.goto(self.url)
        await self.heading("Worklist")
        await self.idle()
        await page.get_by_role("combobox", name="Case", exact=True).first.click()
        await page.get_by_role("option", name=self.log.case_id, exact=True).first.click()
        await self.idle()
        await self.think()

        async def until():
            await self.heading(f"Read · {self.log.case_id}")
            await page.get_by_role("button", name=LABEL_PATCH).first.wait_for(
                state="visible", timeout=self.timeout)
            await self.settled()

        if not await self.timed("open_case", page.get_by_role("button", name="Open case", exact=True).first.click,
                                until):
            raise Lost("open_case")

    async def label_patch(self) -> None:
        button = self.page.get_by_role("button", name=LABEL_PATCH).first

        async def until():
            await self.heading("Label concepts")

        await self.think()
        for _ in range(2):  # a lost click is clicked again, once
            if await self.timed("label_patch", button.click, until):
                return
        raise Lost("label_patch")

    async def sign_in(self) -> None:
        page = self.page
        box = page.get_by_label("Reader name")
        await box.wait_for(state="visible", timeout=self.timeout)
        await box.fill(self.log.name)
        await page.get_by_role("button", name="Start labeling", exact=True).first.click()
        await page.locator("canvas.dc-canvas").last.wait_for(state="visible", timeout=self.timeout)
        await self.idle()

    async def draw(self, poly: list[tuple[float, float]]) -> tuple[float, float]:
        """Click the vertices (not timed); returns where the closing click goes (the first vertex)."""
        page = self.page
        canvas = page.locator("canvas.dc-canvas").last
        box = await canvas.bounding_box()
        pts = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in poly]
        for x, y in pts:
            await page.mouse.click(x, y)
            await asyncio.sleep(0.12)  # a reader's clicks are apart; Fabric handles each one
        return pts[0]

    async def draw_and_save(self, k: int) -> None:
        page = self.page
        poly = [(min(max(x + self.rng.uniform(-0.04, 0.04), 0.05), 0.95),
                 min(max(y + self.rng.uniform(-0.04, 0.04), 0.05), 0.95)) for x, y in POLYGONS[k % len(POLYGONS)]]
        await self.think()

        async def iou_shown():  # the panel: best unit, IoU, Save, and the unit map drawn
            await self.text("Best matching unit")
            await page.get_by_role("button", name=re.compile(r"^Save as ")).first.wait_for(
                state="visible", timeout=self.timeout)
            await self.settled()

        first = await self.draw(poly)
        # timed from the click that closes the polygon (it releases the drawing to the app)
        if not await self.timed("draw_to_iou", lambda: page.mouse.click(*first), iou_shown):
            return  # the drawing was lost: nothing to save
        await self.think()
        save = page.get_by_role("button", name=re.compile(r"^Save as ")).first
        if await self.timed("save_to_saved", save.click, lambda: self.text(r"Saved '[^']+': labeled \d+ unit")):
            self.log.acked_saves += 1

    async def open_report(self) -> None:
        page = self.page
        await self.think()

        async def until():
            await self.heading("Report")
            await self.text(r"Concept probe v\d+ · layer")
            await self.settled()

        await self.timed("open_report",
                         page.locator("[data-testid='stSidebarNavLink']", has_text="Report").first.click, until)

    async def run(self) -> None:
        try:
            await self.open_case()
            await self.label_patch()
            await self.sign_in()
            for k in range(len(POLYGONS)):
                await self.draw_and_save(k)
            await self.open_report()
            self.log.done = True
        except Lost as exc:
            self.log.errors.append(f"stopped after a lost {exc}")
        except Exception as exc:  # noqa: BLE001 - one reader's failure is reported, the others go on
            self.log.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


async def drive(url: str, logs: list[ReaderLog], args) -> None:
    from playwright.async_api import async_playwright  # optional: the browser extra (bench, tests/e2e)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            contexts = [await browser.new_context(viewport={"width": 1440, "height": 1000}) for _ in logs]
            pages = [await c.new_page() for c in contexts]
            for p in pages:  # talk to the app only
                p.set_default_timeout(args.step_timeout * 1000)
                await p.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), lambda route: route.abort())
            # the server has started: a first visit loads the store and the model (not timed)
            warm = pages[0]
            await warm.goto(url)
            await warm.locator("h1", has_text="Worklist").first.wait_for(state="visible", timeout=240_000)
            await warm.wait_for_function(f"() => !!document.querySelector({flows.APP_IDLE!r})", polling=POLL_MS,
                                         timeout=240_000)
            readers = [Reader(p, url, log, random.Random(args.seed * 1000 + i), args.step_timeout * 1000,
                              (args.pause_min, args.pause_max)) for i, (p, log) in enumerate(zip(pages, logs))]

            async def start(i: int, r: Reader):
                await asyncio.sleep(random.Random(args.seed + i).uniform(0, args.stagger))
                await r.run()

            await asyncio.wait_for(asyncio.gather(*(start(i, r) for i, r in enumerate(readers))),
                                   timeout=args.deadline)
        finally:
            await browser.close()


def check_store(data_dir: Path, logs: list[ReaderLog]) -> dict:
    """Every acknowledged Save stored exactly once under its reader (the server has stopped)."""
    settings = _settings(data_dir)
    with Store(settings.db_path, settings.journal_dir, read_only=True) as store:
        anns = store.list_annotations()
    per_reader = Counter(a.reader for a in anns)
    geometry = Counter((a.reader, a.image_id, json.dumps(a.geometry, sort_keys=True)) for a in anns)
    rows = []
    for log in logs:
        rows.append({"reader": log.name, "acknowledged": log.acked_saves, "stored": per_reader.get(log.name, 0)})
    lost = sum(max(r["acknowledged"] - r["stored"], 0) for r in rows)
    unacked = sum(max(r["stored"] - r["acknowledged"], 0) for r in rows)
    dup = sum(n - 1 for n in geometry.values() if n > 1)
    strangers = sum(n for name, n in per_reader.items() if name not in {log.name for log in logs})
    return {"per_reader": rows, "lost_drawings": lost, "stored_without_ack": unacked,
            "duplicated_drawings": dup, "drawings_of_unknown_readers": strangers, "n_stored": len(anns),
            "ok": lost == 0 and unacked == 0 and dup == 0 and strangers == 0}


def summarise(logs: list[ReaderLog]) -> dict:
    out = {}
    for step in STEPS + tuple(s + "_page_busy" for s in STEPS):
        vals = [v for log in logs for v in log.times.get(step, [])]
        out[step] = {"p50_s": round(pct(vals, 0.5), 2), "p90_s": round(pct(vals, 0.9), 2),
                     "max_s": round(max(vals), 2) if vals else None, "n": len(vals),
                     "samples_s": [round(v, 2) for v in vals]}
    return out


def prepared(data_dir: Path | None, tmp: Path) -> Path:
    """The prepared demo data dir (built once, kept when ``data_dir`` is given)."""
    src = data_dir or tmp / "prepared"
    prepare_data_dir(src)
    return src


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="conceptlens-load-") as tmp:
        t0 = time.perf_counter()
        src = prepared(args.data_dir, Path(tmp))
        work = Path(tmp) / "data"
        shutil.copytree(src, work)  # a fresh copy: no drawings, probes or cached predictions of earlier runs
        prep_s = time.perf_counter() - t0
        settings = _settings(work)
        with Store(settings.db_path, settings.journal_dir, read_only=True) as store:
            cases = [c["case_id"] for c in store.list_cases()]
            assert not store.list_annotations(), "the prepared data dir holds drawings: pass a clean --data-dir"
        picks = [cases[0] if args.cases == "same" else cases[i % len(cases)] for i in range(args.readers)]
        logs = [ReaderLog(f"Load reader {i + 1}", picks[i]) for i in range(args.readers)]
        env = {"CONCEPTLENS_DATA_DIR": str(work), "CONCEPTLENS_DB_PATH": str(settings.db_path),
               "CONCEPTLENS_MODEL_CARD": E2E_CARD, "CONCEPTLENS_DEVICE": "cpu",
               **dict(kv.split("=", 1) for kv in args.server_env)}
        load_before = os.getloadavg()
        t1 = time.perf_counter()
        log_path = ARTIFACTS / f"bench_load_{args.readers}_streamlit.log"
        with streamlit_server(ROOT / "app.py", env, log_path=log_path) as url:
            assert url.startswith("http://127.0.0.1:")
            try:
                asyncio.run(drive(url, logs, args))
            except TimeoutError:
                for log in logs:
                    if not log.done:
                        log.errors.append(f"the run's deadline ({args.deadline} s) passed")
        wall = time.perf_counter() - t1
        load_after = os.getloadavg()
        store_check = check_store(work, logs)
    lost = Counter()
    for log in logs:
        lost.update(log.lost)
    return {
        "benchmark": "load",
        "command": "python -m bench.bench_load " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                    "browser": "one Debian chromium (headless=new), a browser context per reader, via Playwright"},
        "load_average": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in load_after]},
        "setup": {"readers": args.readers, "cases": args.cases, "server_env": args.server_env, "case_per_reader": picks, "seed": args.seed,
                  "pause_s": [args.pause_min, args.pause_max], "stagger_s": args.stagger,
                  "step_timeout_s": args.step_timeout, "model_card": E2E_CARD, "prep_s": round(prep_s, 1),
                  "browser_wall_s": round(wall, 1)},
        "targets": {"draw_to_iou_p90_s": 2.0, "save_to_saved_p90_s": 2.0, "open_case_p90_s": 8.0,
                    "lost_interactions": 0, "lost_or_duplicated_drawings": 0},
        "steps": summarise(logs),
        "lost_interactions": dict(lost), "n_lost_interactions": sum(lost.values()),
        "store": store_check,
        "readers": [{"name": log.name, "case": log.case_id, "finished": log.done, "acked_saves": log.acked_saves,
                     "lost": dict(log.lost), "errors": log.errors, "events": log.events} for log in logs],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="where the prepared demo data is kept between runs (copied fresh for each run)")
    ap.add_argument("--cases", choices=("same", "spread"), default="same")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pause-min", type=float, default=0.5, help="shortest pause between two actions, s")
    ap.add_argument("--pause-max", type=float, default=2.5, help="longest pause between two actions, s")
    ap.add_argument("--stagger", type=float, default=3.0, help="readers start within this many seconds")
    ap.add_argument("--step-timeout", type=float, default=60.0, help="no response within this: a lost interaction")
    ap.add_argument("--deadline", type=float, default=900.0, help="the whole browser run stops after this, s")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for the app server (e.g. OMP_WAIT_POLICY=PASSIVE); repeatable")
    ap.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = ap.parse_args(argv)
    args.argv = argv
    if not chromium_available():
        print("chromium is not installed (/usr/bin/chromium): nothing to measure", file=sys.stderr)
        return 2
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"{args.readers} reader(s), cases {args.cases}, load average before {res['load_average']['before']} "
          f"after {res['load_average']['after']}")
    for step in STEPS:
        r, busy = res["steps"][step], res["steps"][step + "_page_busy"]
        print(f"  {step:14s} p50 {r['p50_s']:6.2f} s   p90 {r['p90_s']:6.2f} s   max {r['max_s']} s   (n={r['n']})"
              f"   [page busy before the input: p90 {busy['p90_s']:.2f} s, max {busy['max_s']} s]")
    print(f"  lost interactions: {res['n_lost_interactions']} {res['lost_interactions'] or ''}")
    st = res["store"]
    print(f"  store: {st['n_stored']} drawing(s); lost {st['lost_drawings']}, duplicated {st['duplicated_drawings']}, "
          f"stored without acknowledgement {st['stored_without_ack']} -> {'ok' if st['ok'] else 'NOT OK'}")
    for r in res["readers"]:
        if r["errors"] or not r["finished"]:
            print(f"  {r['name']}: finished={r['finished']} {r['errors'][:3]}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

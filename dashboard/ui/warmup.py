"""Warm-up: what a new user's first five minutes need, prepared while the app already serves.

Steps, in order (each resumable and cached on disk, so a second run skips what is done):

* ``statistics``: the dataset statistics of the card's concept layer (each unit's threshold,
  exemplars, unit map): labeling needs them.
* ``demo drawings``: drawings of the demo phantom's true findings under the reader ``demo truth``
  (``dashboard.data.demo.DEMO_READER``, the simulated reader drawing exactly), and concept probe v1
  trained on them, so the Report and Units pages show a real concept report on first open. Only
  when ``settings.demo_drawings`` is on and the store has never held a drawing of this card (a
  removed seed is not seeded again). ``remove_demo_drawings`` takes them out in one step.
* ``scores``: every image's P(lesion) for the worklist (the lesion map, its score stored).
* ``tcav``: TCAV of the probe's concepts, so the Report says how significant each concept is.
* ``decompositions`` (command line only: ``--steps decompositions``): the Report's logit decomposition at the concept layer (integrated gradients, its
  slowest part, probe-independent) of the most suspicious patch of the highest-scored images, kept on
  disk (``evidence.image_decomposition``): a reader's first Report of those images, even on a restarted
  server, then does not wait for it.

The app runs them in one background thread per process (``resources.get_warmup``), as BACKGROUND
model work: a reader's own requests go first. Pages read ``WarmUp.snapshot()`` to say what they wait
for. ``python -m dashboard.ui.warmup`` runs the same steps in the foreground with a progress bar;
``python -m dashboard.ui.warmup remove-demo-drawings`` removes the seeded drawings.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from dashboard.data.demo import DEMO_READER, SOURCE
from dashboard.engine import report
from dashboard.engine.dissection import undo_annotation
from dashboard.engine.model_queue import background_thread, job
from dashboard.evaluation.reader import ReaderConfig, RunContext, SimulatedReader, plan_drawings
from dashboard.imaging import crop_patch
from dashboard.progress import Progress, tqdm_progress
from dashboard.progress import report as report_progress
from dashboard.ui.context import AppContext, command_line_context
from dashboard.ui.screens.report import run_tcav
from dashboard.ui.screens.worklist import score_unscored
from dashboard.ui.work import concepts as cx
from dashboard.ui.work.evidence import report_config
from dashboard.ui.work.images import model_image
from dashboard.ui.work.probe_versions import probe_info

STEPS = ("statistics", "demo drawings", "scores", "tcav")
#: Steps the command line runs when asked (``--steps``), never the app's background warm-up: one
#: decomposition holds the model for its whole integral (tens of seconds on a loaded 2-core machine),
#: so in a serving app it delayed readers' first drawings (measured, docs/benchmarks.md).
OPTIONAL_STEPS = ("decompositions",)
#: What each step prepares, in the words a waiting page uses.
TITLES = {
    "statistics": "dataset statistics (each unit's threshold, needed to label concepts)",
    "demo drawings": "demo drawings from the phantom's truth and concept probe v1",
    "scores": "P(lesion) of every image for the worklist",
    "tcav": "TCAV significance of the probe's concepts",
    "decompositions": "Report's logit decomposition of the most suspicious images",
}
#: The ``decompositions`` step prepares at most this many images, highest score first.
DECOMPOSITION_IMAGES = 24
#: The warm-up waits at most this long, s, for the first page to be sent before it starts (``WarmUp.start``).
FIRST_PAGE_S = 20.0
#: Concepts the demo truth draws, and how many drawings of each (lesion concepts and two normal structures).
DEMO_CONCEPTS = ("mass", "calcification", "architectural-distortion", "fibroglandular", "vessel")
DEMO_PER_CONCEPT = 8
#: The seeded drawings follow the truth: no partial, over-drawn or mislabelled drawings.
TRUTH_READER = ReaderConfig(jitter_px=0.5, coverage=1.0, partial_rate=0.0, overdraw_rate=0.0,
                            wrong_label_rate=0.0, patch_jitter_px=24)
FINISHED = frozenset({"done", "skipped", "failed"})


@dataclass(frozen=True)
class StepState:
    """One step's state: waiting | running | done | skipped | failed; ``done``/``total`` its units."""

    name: str
    state: str = "waiting"
    done: int = 0
    total: int = 0
    message: str = ""
    seconds: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


class WarmUp:
    """The warm-up's shared state (thread-safe); one per process in the app."""

    def __init__(self, steps: tuple[str, ...] = STEPS):
        self._lock = threading.Lock()
        self._steps = {n: StepState(n) for n in steps}
        self.thread: threading.Thread | None = None
        self.started = time.time()
        self.page_shown = threading.Event()  # set once the process has sent its first page (``resources``)

    def set(self, name: str, **kw) -> None:
        with self._lock:
            self._steps[name] = replace(self._steps[name], **kw)

    def snapshot(self) -> dict[str, StepState]:
        with self._lock:
            return dict(self._steps)

    def ready(self, name: str) -> bool:
        """True once ``name`` finished (done, skipped or failed: nothing more is coming)."""
        return self.snapshot().get(name, StepState(name, "done")).finished

    def progress(self, name: str) -> Progress:
        return lambda done, total, message="": self.set(name, done=int(done), total=int(total),
                                                          message=message or "")

    def disable(self, reason: str) -> None:
        """No warm-up in this process: every step is skipped (pages then wait for nothing)."""
        with self._lock:
            self._steps = {n: replace(s, state="skipped", message=reason) for n, s in self._steps.items()}
            self.thread = self.thread or threading.current_thread()

    def start(self, make_ctx: Callable[[], AppContext], *, first_page_s: float = 0.0) -> threading.Thread:
        """Run every step in a background thread (once per instance).

        first_page_s: wait up to this long for the process's first page to be sent (``page_shown``)
        before the steps start: on 2 cores the statistics' passes would otherwise halve the speed of
        the first Worklist a new user waits for."""
        with self._lock:
            if self.thread is not None:
                return self.thread
            self.thread = threading.current_thread()  # placeholder while starting: no second start

        def work():
            if first_page_s > 0:
                self.page_shown.wait(first_page_s)
            run_warmup(make_ctx(), self)

        with job(("warmup",)):
            self.thread = background_thread(work, name="conceptlens-warmup")
        return self.thread


# ---------------------------------------------------------------- the steps
def step_statistics(ctx: AppContext, progress: Progress | None = None) -> str | None:
    """Compute the dataset statistics unless present. Returns what was done, None when skipped."""
    if cx.find_stats(ctx) is not None:
        return None
    stats = cx.compute_stats(ctx, progress=progress)
    return f"dataset statistics written to {stats.path}"


def demo_drawings_wanted(ctx: AppContext) -> str | None:
    """Why the demo drawings are not seeded (None: they are): off, no demo cases, or drawings exist."""
    if not ctx.settings.demo_drawings:
        return "off (CONCEPTLENS_DEMO_DRAWINGS=0)"
    if not ctx.store.list_images(source=SOURCE):
        return "no demo cases in the store"
    if ctx.store.list_annotations(model_card=ctx.card_name, include_deleted=True):
        return "the store already has drawings (or the demo drawings were removed)"
    return None


def seed_demo_drawings(ctx: AppContext, progress: Progress | None = None, *,
                       per_concept: int = DEMO_PER_CONCEPT) -> tuple[int, int | None]:
    """Draw the demo phantom's true findings of the training split as ``DEMO_READER`` and train
    concept probe v1 on them. Returns (drawings saved, probe version)."""
    ctx.require_model()
    stats = cx.require_stats(ctx)
    known = {c["name"] for c in ctx.store.list_concepts()}
    concepts = [c for c in DEMO_CONCEPTS if c in known]
    plan = plan_drawings(ctx.store, concepts, per_concept, split="train", seed=0)
    tasks = [t for c in concepts for t in plan.get(c, [])]
    if not tasks:
        return 0, None
    reader = SimulatedReader(RunContext(ctx.store, ctx.model, ctx.card, cx.layer_of(ctx), ctx.settings.cache_dir,
                                        ctx.device), stats, concepts=concepts, config=TRUTH_READER, reader=DEMO_READER)
    rows = reader.draw(tasks, progress=progress)
    probe = reader.retrain()
    ctx.caches.matches.clear()
    return len(rows), int(probe.version) if probe is not None and hasattr(probe, "version") else None


def step_decompositions(ctx: AppContext, progress: Progress | None = None, *,
                        limit: int = DECOMPOSITION_IMAGES) -> int | None:
    """The logit decomposition of the stored most suspicious patch of the ``limit`` highest-scored
    images, onto the disk cache (one already there is only read). None when the card needs none (a
    linear head at its concept layer); else how many images were prepared."""
    if not report.needs_decomposition(ctx.card):
        return None
    preds = []
    for row in ctx.store.list_images():
        pred = ctx.store.get_prediction(ctx.card_name, ctx.weights_sha, row["image_id"])
        if pred and pred["top_patches"]:
            preds.append((float(pred["score"]), row, pred["top_patches"][0]))
    preds.sort(key=lambda t: -t[0])
    todo = preds[:limit]
    config = report_config(ctx)
    for i, (_, row, (x0, y0, size, _p)) in enumerate(todo):
        report_progress(progress, i, len(todo), f"{row['case_id']} {row['laterality']}{row['view']}")
        img, _, _ = model_image(ctx, row)
        # the patch the Report explains: the evidence's best tile, the lesion map's top patch
        report.compute_decomposition(ctx.model, ctx.card, crop_patch(img, int(x0), int(y0), int(size)), None, config)
    report_progress(progress, len(todo), len(todo), "done")
    return len(todo)


def remove_demo_drawings(ctx: AppContext, actor: str = "system") -> int:
    """Remove (undo) every live drawing of ``DEMO_READER``; their unit labels fall back to the
    readers' own drawings. Returns how many were removed. Probe versions trained on them stay in
    the store, marked stale; the Report shows none until a reader's drawings train a new one."""
    n = 0
    for a in ctx.store.list_annotations():
        if a.reader == DEMO_READER:
            undo_annotation(ctx.store, a.annotation_id, actor)
            n += 1
    ctx.caches.matches.clear()
    return n


def count_demo_drawings(ctx: AppContext) -> int:
    return sum(1 for a in ctx.store.list_annotations() if a.reader == DEMO_READER)


def run_warmup(ctx: AppContext, warm: WarmUp, steps: tuple[str, ...] | None = None) -> WarmUp:
    """Run the warm-up steps in order, recording each one's state in ``warm``. A failed step is
    recorded with its message and the next steps still run."""
    for name in steps or tuple(warm.snapshot()):
        t0 = time.perf_counter()
        warm.set(name, state="running", message="")
        try:
            state, message = _run_step(ctx, warm, name)
        except Exception as exc:  # noqa: BLE001 - shown on the pages that wait for it; the others go on
            state, message = "failed", str(exc)
        warm.set(name, state=state, message=message, seconds=round(time.perf_counter() - t0, 1))
    return warm


def _run_step(ctx: AppContext, warm: WarmUp, name: str) -> tuple[str, str]:
    if not ctx.model_ready:
        return "skipped", f"the model is not available ({ctx.model_error})"
    progress = warm.progress(name)
    if name == "statistics":
        done = step_statistics(ctx, progress)
        return ("done", done) if done else ("skipped", "already computed")
    if name == "demo drawings":
        why = demo_drawings_wanted(ctx)
        if why:
            return "skipped", why
        n, version = seed_demo_drawings(ctx, progress)
        if not n:
            return "skipped", "the demo cases have no truth masks to draw"
        return "done", f"{n} drawings by '{DEMO_READER}', concept probe v{version}"
    if name == "scores":
        rep = score_unscored(ctx, progress)
        if not rep.n_images:
            return "skipped", "every image is scored"
        return "done", f"{rep.n_scored} of {rep.n_images} image(s) scored" + (
            f", {len(rep.failures)} failed" if rep.failures else "")
    if name == "tcav":
        info = probe_info(ctx)
        if info is None:
            return "skipped", "no concept probe yet"
        if ctx.store.latest_tcav_run(info.version) is not None:
            return "skipped", f"already computed for probe v{info.version}"
        run_tcav(ctx, progress)
        return "done", f"probe v{info.version}"
    if name == "decompositions":
        n = step_decompositions(ctx, progress)
        if n is None:
            return "skipped", "the card's concept layer feeds its linear head: no decomposition needed"
        return ("done", f"{n} image(s)") if n else ("skipped", "no scored images")
    raise ValueError(f"unknown warm-up step {name!r}")


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.ui.warmup", description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", default="run", choices=("run", "remove-demo-drawings"),
                    help="run the warm-up steps (default), or remove the seeded demo drawings")
    ap.add_argument("--steps", default=",".join(STEPS),
                    help=f"comma-separated subset of {', '.join(STEPS + OPTIONAL_STEPS)}")
    args = ap.parse_args([] if argv is None else argv)
    with command_line_context("warmup") as ctx:
        if ctx is None:
            return 0  # nothing to warm up without a model: the app says why
        settings = ctx.settings
        if args.command == "remove-demo-drawings":
            print(f"warmup: removed {remove_demo_drawings(ctx, 'command line')} demo drawing(s) by '{DEMO_READER}'")
            return 0
        steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
        unknown = [s for s in steps if s not in STEPS + OPTIONAL_STEPS]
        if unknown:
            print(f"warmup: unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS + OPTIONAL_STEPS)}",
                  file=sys.stderr)
            return 2
        warm = WarmUp(steps)
        print(f"warmup: {settings.model_card} / {cx.layer_of(ctx)}: {', '.join(steps)}")
        for name in steps:
            with tqdm_progress(f"warm-up: {name}", unit="item") as progress:
                warm.progress = lambda _n, p=progress: p  # the bar instead of the shared state
                run_warmup(ctx, warm, (name,))
            s = warm.snapshot()[name]
            print(f"warmup: {name}: {s.state} in {s.seconds:.1f} s" + (f" ({s.message})" if s.message else ""))
        if all(s.state == "skipped" for s in warm.snapshot().values()):
            print("warmup: nothing to do")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

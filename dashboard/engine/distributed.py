"""Shards on Ray: map a function over shard jobs as Ray tasks, with progress from the workers.

Ray is an optional dependency (``requirements-scale.txt``); it is imported only when a
``RayEngine`` runs. ``address`` None starts a local Ray (``workers`` CPUs, no dashboard, a small
object store) for the duration of the call and stops it afterwards; an address (or ``"auto"``)
joins a running cluster, left running. A task whose worker dies (killed, out of memory) is retried
by Ray up to ``max_retries`` times; its shard file is written only when it finishes, so a retried
shard is never counted twice.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dashboard.errors import ConceptLensError
from dashboard.progress import Progress, report
from dashboard.settings import PROJECT_ROOT

__all__ = ["RayEngine", "RayUnavailable", "ray_available"]


class RayUnavailable(ConceptLensError):
    """Ray is not installed (``pip install -r requirements-scale.txt``) or the cluster cannot be reached."""


def ray_available() -> bool:
    try:
        import ray  # noqa: F401  # optional
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class RayEngine:
    """Where and how shards run on Ray.

    address          a running cluster ("auto", "ray://host:10001", "host:6379"); None: a local Ray
                     started for the call (``CONCEPTLENS_RAY_ADDRESS`` sets it on the command line)
    workers          tasks in flight at once (the CPUs of a local Ray)
    shards_per_worker  shards per worker: more shards balance uneven workers and resume finer, each
                     costs one model load
    gpus_per_task    GPUs a task asks for (0: CPU workers); a task with a GPU runs its model there
    max_retries      how often Ray reruns a task whose worker died
    object_store_mb  object store of a local Ray
    threads          torch threads per task; None: as many as this process uses. CPU kernels reduce in
                     an order that depends on the thread count (a 1-thread and a 2-thread pass differ in
                     the last bits), so only the same count gives bit-identical numbers to in-process;
                     1 per worker is the fastest on a machine with as many cores as workers
    """

    address: str | None = None
    workers: int = 2
    shards_per_worker: int = 2
    gpus_per_task: float = 0.0
    max_retries: int = 3
    object_store_mb: int = 200
    threads: int | None = None
    poll_s: float = 0.5

    @property
    def n_shards(self) -> int:
        return max(1, self.workers * self.shards_per_worker)

    def map(self, fn: Callable[[Any, Callable[[int], None]], Any], jobs: Sequence[Any], *,
            progress: Progress | None = None, total: int = 0, message: str = "") -> list:
        """``fn(job, tell)`` for every job as a Ray task, results in job order. ``tell(done)``
        reports how many items the job has done; ``progress(done, total, message)`` gets the
        sum over jobs (a retried job starts again from 0, so nothing is counted twice)."""
        ray = _import_ray()
        started = self._connect(ray)
        try:
            tally = _tally_actor(ray).remote()
            remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_task, max_retries=self.max_retries)(_call)
            threads = self.threads or torch.get_num_threads()
            pending = [remote.remote(fn, job, i, tally, threads) for i, job in enumerate(jobs)]
            order = {ref: i for i, ref in enumerate(pending)}
            results: list = [None] * len(pending)
            errors = []
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=self.poll_s)
                for ref in ready:
                    try:
                        results[order[ref]] = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - retries spent; the other jobs still finish
                        errors.append(exc)
                report(progress, min(int(ray.get(tally.total.remote())), total), total, message)
            if errors:  # every other job's result is saved, so a rerun resumes from there
                raise errors[0]
            return results
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Join or start Ray; True when this call started it (and so stops it)."""
        if ray.is_initialized():
            return False
        env = {"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}}  # workers import dashboard and model_zoo
        try:
            if self.address:
                ray.init(address=self.address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, runtime_env=env, log_to_driver=False,
                         object_store_memory=self.object_store_mb * 1024 * 1024)
        except ConnectionError as exc:
            raise RayUnavailable(f"cannot reach the Ray cluster at {self.address!r}: {exc}") from exc
        return True


def _call(fn, job, index: int, tally, threads: int):
    """The task body: run ``fn`` on ``threads`` torch threads with a progress callback that tells the
    driver's tally actor."""
    torch.set_num_threads(threads)
    return fn(job, lambda done: tally.set.remote(index, done))


def _import_ray():
    try:
        import ray  # optional
    except ImportError as exc:
        raise RayUnavailable("Ray is not installed: pip install -r requirements-scale.txt") from exc
    return ray


def _tally_actor(ray):
    """A tiny actor holding each job's done count (the latest report of its current attempt)."""

    class Tally:
        def __init__(self):
            self.done: dict[int, int] = {}

        def set(self, index: int, done: int) -> None:
            self.done[index] = done

        def total(self) -> int:
            return sum(self.done.values())

    return ray.remote(num_cpus=0)(Tally)

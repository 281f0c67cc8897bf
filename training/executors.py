"""Where folds run. A fold is a pure function `fold_fn(job: FoldJob) -> dict` of the training
config, the test subject and paths to shared inputs (prepared flow cache, feature cache); it
writes its own fold directory atomically and returns the fold's done.json content. That makes an
executor trivial to swap: LocalExecutor runs folds one after another in this process; a Ray
executor (slstt.training.ray_executor) can ship the same FoldJob to remote workers unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class FoldJob:
    """Everything a fold needs, all plain data (picklable, JSON-able)."""

    config: dict[str, Any]  # TrainConfig.to_dict()
    fold: str  # test subject, or "all"
    run_dir: str
    shared: dict[str, str] = field(default_factory=dict)  # e.g. {"samples": ..., "features": ...}


FoldFn = Callable[[FoldJob], dict[str, Any]]
# on_progress(fold, epoch, epochs, info) lets the caller draw progress; remote executors may skip it.
ProgressFn = Callable[[str, int, int, dict[str, Any]], None]


class Executor(Protocol):
    def run_folds(self, fold_fn: FoldFn, jobs: Sequence[FoldJob],
                  on_done: Callable[[FoldJob, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run every job, return their results in the order of `jobs`."""
        ...


class LocalExecutor:
    """Runs folds sequentially in this process (deterministic, shows live progress)."""

    def run_folds(self, fold_fn: FoldFn, jobs: Sequence[FoldJob],
                  on_done: Callable[[FoldJob, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        results = []
        for job in jobs:
            result = fold_fn(job)
            if on_done is not None:
                on_done(job, result)
            results.append(result)
        return results


def get_executor(name: str = "local", **ray_options: Any) -> Executor:
    """`local` runs folds one after another here; `ray` runs each fold as a Ray task
    (ray_options: address, gpus_per_fold, cpus_per_fold, max_retries, shared_dir)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from slstt.training.ray_executor import RayExecutor

        return RayExecutor(**ray_options)
    from slstt.errors import SlsttError

    raise SlsttError(f"unknown executor {name!r}; choose local or ray")

"""`slstt sweep CONFIG.yaml`: a grid of training runs (seeds x backbones x aggregators x lr ...),
each a normal run directory (resumable, reportable, exportable), folds run as Ray tasks, then ONE
summary table: mean +- std of pooled UF1 / UAR over seeds per grid point.

CONFIG.yaml:
    base:                # TrainConfig fields (like a run's config.yaml), or a path to such a file
      dataset: casme2
      data_root: data/CASME2        # relative paths are relative to this YAML file
      model: {backbone: vit_base_patch16_384, input_size: 384}
    grid:                # every combination is one run; seed is what the summary averages over
      seed: [0, 1, 2]
      backbone: [vit_base_patch16_384]
      aggregator: [lstm, mean]
      lr: [0.01]
    out: runs/sweep      # optional (--out wins)

Runs share one Ray connection; each run's driver-side steps (data, frozen-feature cache, report)
take turns under a lock while the folds of all runs are in flight on the cluster together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

MODEL_KEYS = ("backbone", "aggregator")  # grid keys that live in TrainConfig.model
PATH_FIELDS = ("data_root", "annotations", "weights", "face_model", "cache_dir")
SUMMARY_METRICS = ("uf1", "uar", "accuracy")


def sweep_command(
    config: Path = typer.Argument(..., help="Sweep YAML: base train config + grid (seed, backbone, aggregator, lr)."),
    executor: str = typer.Option("ray", "--executor", help="ray (folds as Ray tasks) | local (one fold at a time)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="unset: a private local Ray instance | auto | ray://host:10001"),
    out: Path | None = typer.Option(None, "--out", help="Sweep folder (default: `out` in the YAML, else runs/sweep)."),
    gpus_per_fold: float = typer.Option(0.0, "--gpus-per-fold", help="GPUs per fold task (fractional packs folds on a GPU)."),
    cpus_per_fold: float = typer.Option(1.0, "--cpus-per-fold", help="CPUs per fold task."),
    max_retries: int = typer.Option(2, "--max-retries", help="Retries of a fold whose worker died."),
    shared_dir: Path | None = typer.Option(None, "--shared-dir", help="A folder every Ray node sees (stage shared inputs there)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace runs made with a different config."),
) -> None:
    """Run a grid of training runs (seeds, backbones, aggregators, lr) on Ray."""
    from rich.console import Console

    spec = load_sweep(config)
    ex = make_executor(executor, ray_address, gpus_per_fold, cpus_per_fold, max_retries, shared_dir)
    try:
        summary = run_sweep(spec, ex, out or Path(spec.get("out") or "runs/sweep"), overwrite=overwrite)
    finally:
        getattr(ex, "close", lambda: None)()
    print_summary(summary, Console())


def make_executor(name: str, address: str | None = None, gpus_per_fold: float = 0.0, cpus_per_fold: float = 1.0,
                  max_retries: int = 2, shared_dir: Path | None = None):
    from slstt.errors import SlsttError
    from slstt.training.executors import LocalExecutor

    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from slstt.training.ray_executor import RayExecutor

        return RayExecutor(address=address, gpus_per_fold=gpus_per_fold, cpus_per_fold=cpus_per_fold,
                           max_retries=max_retries, shared_dir=shared_dir)
    raise SlsttError(f"--executor {name!r}: choose ray or local")


# ---- the sweep file -------------------------------------------------------------------------
def _read_yaml(path: Path, what: str):
    """yaml.safe_load of a UTF-8 file; SlsttError (one line) for unreadable, non-UTF-8 or invalid YAML."""
    import yaml

    from slstt.errors import SlsttError, first_line

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SlsttError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                         f"save it as UTF-8") from None
    except OSError as exc:
        raise SlsttError(f"cannot read {what} {path}: {first_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise SlsttError(f"{path}: not valid YAML ({first_line(exc)})") from None


def load_sweep(path: Path) -> dict:
    """{'base': TrainConfig dict (paths absolute), 'grid': {key: [values]}, 'out': str | None}."""

    from slstt.errors import SlsttError
    from slstt.training.config import TrainConfig

    path = Path(path)
    if not path.is_file():
        raise SlsttError(f"sweep file {path} does not exist")
    data = _read_yaml(path, "sweep file")
    if not isinstance(data, dict) or "base" not in data or "grid" not in data:
        raise SlsttError(f"{path}: needs a `base:` train config and a `grid:` of lists (format: docs/ray.md, Sweeps)")
    base = data["base"]
    if isinstance(base, str):  # a path to a train config (e.g. a run's config.yaml)
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise SlsttError(f"{path}: base config {base_path} does not exist")
        base = _read_yaml(base_path, f"{path}: base config")
    if not isinstance(base, dict):
        raise SlsttError(f"{path}: `base:` must be a mapping of train config fields or a path")
    base = dict(base)
    for name in PATH_FIELDS:  # relative to the sweep file, so the sweep runs from any cwd
        if base.get(name):
            base[name] = str((path.parent / base[name]).resolve())
    grid = data["grid"]
    known = set(TrainConfig.__dataclass_fields__) | set(MODEL_KEYS)
    if not isinstance(grid, dict) or not grid:
        raise SlsttError(f"{path}: `grid:` must map keys (seed, backbone, aggregator, lr, ...) to lists")
    for key, values in grid.items():
        if key not in known or key in ("model", "preprocess", "out_dir"):
            raise SlsttError(f"{path}: grid key {key!r} unknown; use seed, backbone, aggregator, lr or a train field")
        if not isinstance(values, list) or not values:
            raise SlsttError(f"{path}: grid.{key} must be a non-empty list, got {values!r}")
    base.setdefault("model", {})
    TrainConfig.from_dict({**base, "out_dir": "x"})  # fail now, not after the first run
    return {"base": base, "grid": {k: list(v) for k, v in grid.items()}, "out": data.get("out")}


def grid_points(grid: dict[str, list]) -> list[dict]:
    import itertools

    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def run_name(point: dict) -> str:
    """Folder name of a grid point: its values in grid order, seed last (e.g. vit_tiny-mean-lr0.01-seed1)."""
    parts = [f"{'' if k in MODEL_KEYS else k}{v}" for k, v in point.items() if k != "seed"]
    if "seed" in point:
        parts.append(f"seed{point['seed']}")
    return "-".join(str(p).replace("/", "_") for p in parts) or "run"


def point_config(base: dict, point: dict, out_dir: Path):
    from slstt.training.config import TrainConfig

    data = {**base, "model": dict(base.get("model", {})), "out_dir": str(out_dir / "runs" / run_name(point))}
    for key, value in point.items():
        if key in MODEL_KEYS:
            data["model"][key] = value
        else:
            data[key] = value
    return TrainConfig.from_dict(data)


# ---- running it -----------------------------------------------------------------------------
class _TakeTurns:
    """Executor wrapper for runs in threads: the run's driver-side work (seeded model builds for
    the feature cache, report plots) holds `lock`; only the wait for the folds releases it."""

    def __init__(self, inner, lock) -> None:
        self.inner, self.lock = inner, lock

    def run_folds(self, fold_fn, jobs, on_done=None):
        self.lock.release()
        try:
            return self.inner.run_folds(fold_fn, jobs, on_done)
        finally:
            self.lock.acquire()


def run_sweep(spec: dict, executor, out_dir: Path, overwrite: bool = False) -> dict:
    """Train every grid point (own run dir), then write summary.{csv,json,png}; returns the summary."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from slstt.errors import SlsttError
    from slstt.training.cli import load_training_samples
    from slstt.training.executors import LocalExecutor
    from slstt.training.loso import plan_folds, train_run

    console = Console(stderr=True)
    out_dir = Path(out_dir)
    points = grid_points(spec["grid"])
    configs = [point_config(spec["base"], p, out_dir) for p in points]
    if hasattr(executor, "connect"):
        executor.connect()  # once, before runs start in threads
    samples_cache: dict[str, tuple] = {}
    prepared = []
    for cfg in configs:  # data + prepare once per data/preprocess setting (later runs reuse the cache)
        key = repr((cfg.dataset, cfg.data_root, cfg.annotations, cfg.scheme, cfg.preprocess, cfg.cache_dir))
        if key not in samples_cache:
            samples_cache[key] = load_training_samples(cfg, console)
        samples, labelled = samples_cache[key]
        prepared.append((samples, cfg.replace(model={**cfg.model, **{k: labelled.model[k] for k in
                                                                     ("num_classes", "labels", "class_scheme")}},
                                              scheme=labelled.scheme)))
    total = sum(len(plan_folds(cfg, sorted({s.subject for s in samples}))) for samples, cfg in prepared)
    lock = threading.Lock()
    parallel = 1 if isinstance(executor, LocalExecutor) else len(prepared)  # torch RNG is per process
    results: list[dict | None] = [None] * len(prepared)
    errors: list[str] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"sweep: {len(prepared)} runs", total=total)

        def one(i: int) -> None:
            samples, cfg = prepared[i]
            with lock:
                try:
                    results[i] = train_run(cfg, samples, overwrite=overwrite, executor=_TakeTurns(executor, lock),
                                           on_fold=lambda fold, status: bar.advance(task))
                except SlsttError as exc:
                    errors.append(f"{Path(cfg.out_dir).name}: {exc}")

        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(one, range(len(prepared))))
    summary = summarize(points, [cfg for _, cfg in prepared], results)
    write_summary(out_dir, summary)
    if errors:
        raise SlsttError(f"{len(errors)} run(s) failed, first: {errors[0]} (summary has the others; re-run to resume)")
    return summary


def summarize(points: list[dict], configs: list, results: list[dict | None]) -> dict:
    """Group runs by every grid key except seed; mean and sample std (ddof=1) over the seeds."""
    import numpy as np

    runs: list[dict[str, Any]] = []
    groups: dict[tuple[tuple[str, Any], ...], list[dict[str, Any]]] = {}
    for point, cfg, res in zip(points, configs, results, strict=True):
        pooled = (res or {}).get("pooled") or {}
        row = {"run": Path(cfg.out_dir).name, "run_dir": cfg.out_dir, "backbone": cfg.model["backbone"],
               "aggregator": cfg.model["aggregator"], "lr": cfg.lr, "seed": cfg.seed,
               **{k: v for k, v in point.items() if k not in (*MODEL_KEYS, "lr", "seed")},
               **{m: pooled.get(m) for m in SUMMARY_METRICS}, "status": "done" if pooled else "failed"}
        runs.append(row)
        key = tuple((k, row[k]) for k in row if k not in ("run", "run_dir", "seed", "status", *SUMMARY_METRICS))
        groups.setdefault(key, []).append(row)
    table = []
    for key, rows in groups.items():
        done = [r for r in rows if r["status"] == "done"]
        entry = dict(key)
        entry["seeds"] = len(done)
        for m in SUMMARY_METRICS:
            values = np.array([r[m] for r in done], dtype=float)
            entry[f"{m}_mean"] = float(values.mean()) if len(values) else float("nan")
            entry[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        table.append(entry)
    optimistic = any(getattr(cfg, "optimistic", False) for cfg in configs)
    return {"optimistic": optimistic, "metric": "pooled LOSO predictions (spec section 5); mean +- sample std over seeds",
            "table": table, "runs": runs}


def write_summary(out_dir: Path, summary: dict) -> None:
    import csv
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from slstt.io import atomic_savefig, atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary["table"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]) if table else ["seeds"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    atomic_write_json(out_dir / "summary.json", summary)

    labels = [group_label(row) for row in table]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(table) + 2), 3.5))
    for j, m in enumerate(("uf1", "uar")):
        ax.bar(x + (j - 0.5) * 0.38, [r[f"{m}_mean"] for r in table], 0.38, yerr=[r[f"{m}_std"] for r in table],
               capsize=3, label=m.upper())
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pooled score (mean ± std over seeds)")
    ax.set_title(("OPTIMISTIC (test-subject selection) " if summary["optimistic"] else "") + "sweep summary")
    ax.legend()
    fig.tight_layout()
    atomic_savefig(out_dir / "summary.png", fig, dpi=100)
    plt.close(fig)


def group_label(row: dict) -> str:
    skip = {"seeds"} | {f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std")}
    return " ".join(f"{v}" if k in MODEL_KEYS else f"{k}={v}" for k, v in row.items() if k not in skip)


def print_summary(summary: dict, console) -> None:
    from rich.table import Table

    title = ("OPTIMISTIC " if summary["optimistic"] else "") + "sweep: pooled UF1 / UAR, mean ± std over seeds"
    table = Table(title=title)
    for column in ("group", "seeds", "UF1", "UAR", "accuracy"):
        table.add_column(column, justify="right")
    for row in summary["table"]:
        table.add_row(group_label(row), str(row["seeds"]),
                      *(f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in SUMMARY_METRICS))
    console.print(table)

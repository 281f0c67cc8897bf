"""`slstt data check`: what a sample table holds and what is wrong with it, before training."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from slstt.config import PreprocessConfig
from slstt.data.samples import DatasetTable, Problem


@dataclass
class CheckReport:
    samples: int
    class_counts: dict[str, int]
    subject_counts: dict[str, int]
    dataset_counts: dict[str, int]
    problems_by_kind: dict[str, int]
    first_problem: dict[str, Problem]  # one example per kind, for the error lines
    errata: list[dict[str, str]]
    missing_frames: int  # samples skipped because frames are missing on disk
    faces_not_found: dict[str, list[str]] = field(default_factory=dict)  # cache key -> sample keys
    prepared: dict[str, int] = field(default_factory=dict)  # cache key -> samples with a cache file

    @property
    def ok(self) -> bool:
        """Usable for training: samples and no skipped rows (missing faces are warnings)."""
        return self.samples > 0 and not self.problems_by_kind

    def error_lines(self) -> list[str]:
        lines = [] if self.samples else ["no usable samples; check --dataset, --data-root and --annotations"]
        for kind, count in self.problems_by_kind.items():
            p = self.first_problem[kind]
            lines.append(f"{kind}: {count} sample(s) skipped, e.g. {p.where}: {p.message}")
        return lines


def _cache_failures(cache_dir: Path, cfg: PreprocessConfig | None, keys: set[str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Faces not found (failures.json) and prepared files per cache key, for this table's samples."""
    folders = [cache_dir / cfg.cache_key()] if cfg else sorted(p for p in cache_dir.glob("*") if p.is_dir())
    failures: dict[str, list[str]] = {}
    prepared: dict[str, int] = {}
    for folder in folders:
        path = folder / "failures.json"
        failed = json.loads(path.read_text()) if path.is_file() else {}
        failures[folder.name] = sorted(k for k in failed if k in keys)
        prepared[folder.name] = sum((folder / f"{k}.npz").is_file() for k in keys)
    return failures, prepared


def check_dataset(table: DatasetTable, cache_dir: str | Path | None = None,
                  cfg: PreprocessConfig | None = None) -> CheckReport:
    first: dict[str, Problem] = {}
    for p in table.problems:
        first.setdefault(p.kind, p)
    failures: dict[str, list[str]] = {}
    prepared: dict[str, int] = {}
    if cache_dir is not None and Path(cache_dir).is_dir():
        failures, prepared = _cache_failures(Path(cache_dir), cfg, {s.key for s in table.samples})
    return CheckReport(
        samples=len(table), class_counts=table.class_counts(), subject_counts=table.subject_counts(),
        dataset_counts=table.dataset_counts(), problems_by_kind=table.problem_counts(), first_problem=first,
        errata=list(table.errata), missing_frames=Counter(p.kind for p in table.problems)["missing_frames"],
        faces_not_found=failures, prepared=prepared)


def print_report(report: CheckReport, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    summary = Table(title=f"{report.samples} samples, {len(report.subject_counts)} subjects")
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for name, count in report.class_counts.items():
        summary.add_row(f"class {name}", str(count))
    for name, count in report.dataset_counts.items():
        summary.add_row(f"data set {name}", str(count))
    for kind, count in report.problems_by_kind.items():
        summary.add_row(f"[red]skipped: {kind}[/red]", str(count))
    for key, keys in report.faces_not_found.items():
        summary.add_row(f"cache {key}: prepared / face not found", f"{report.prepared.get(key, 0)} / {len(keys)}")
    summary.add_row("annotation errata fixed", str(len(report.errata)))
    console.print(summary)
    subjects = ", ".join(f"{s}:{n}" for s, n in report.subject_counts.items())
    console.print(f"samples per subject: {subjects}", soft_wrap=True)
    for e in report.errata[:20]:
        console.print(f"erratum {e['dataset']} {e['clip']}: {e['issue']} -> {e['fix']}", soft_wrap=True)
    for key, keys in report.faces_not_found.items():
        if keys:
            console.print(f"[yellow]warning: no face found in {len(keys)} sample(s) in cache {key}, "
                          f"e.g. {keys[0]}; they are left out of training[/yellow]")


# ---------------------------------------------------------------- MEGC long videos (casme_sq, samm_lv)

# Problems after which an annotated interval is not used (the others are repaired and kept).
LONG_SKIPPING = ("bad_annotation", "missing_video", "unknown_video", "missing_frames")


@dataclass
class LongVideoCheck:
    dataset: str
    counts: dict[str, int]  # videos, subjects, micro, macro, frames, missing_frames, problems
    problems_by_kind: dict[str, int]
    first_problem: dict[str, Problem]

    @property
    def ok(self) -> bool:
        return self.counts["videos"] > 0 and not any(k in LONG_SKIPPING for k in self.problems_by_kind)

    def error_lines(self) -> list[str]:
        lines = [] if self.counts["videos"] else ["no long videos found; check --dataset and --data-root"]
        for kind, count in self.problems_by_kind.items():
            if kind in LONG_SKIPPING:
                p = self.first_problem[kind]
                lines.append(f"{kind}: {count} annotation row(s) or video(s) skipped, e.g. {p.where}: {p.message}")
        return lines


def check_long_videos(table) -> LongVideoCheck:  # table: slstt.data.longvideo.LongVideoTable
    first: dict[str, Problem] = {}
    for p in table.problems:
        first.setdefault(p.kind, p)
    return LongVideoCheck(table.dataset, table.counts(), table.problem_counts(), first)


def print_long_report(report: LongVideoCheck, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    summary = Table(title=f"{report.dataset}: {report.counts['videos']} long videos, {report.counts['subjects']} subjects")
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for name in ("videos", "subjects", "micro", "macro", "frames", "missing_frames", "problems"):
        summary.add_row(name.replace("_", " "), str(report.counts[name]))
    for kind, count in report.problems_by_kind.items():
        colour = "red" if kind in LONG_SKIPPING else "yellow"
        summary.add_row(f"[{colour}]{'skipped' if kind in LONG_SKIPPING else 'noted'}: {kind}[/{colour}]", str(count))
    console.print(summary)
    for kind, p in report.first_problem.items():
        if kind not in LONG_SKIPPING:
            console.print(f"note: {kind}: {report.problems_by_kind[kind]}x, e.g. {p.where}: {p.message}", soft_wrap=True)

"""`slstt analyze FOLDER|LIST.csv`: every video through `analyze_video` (into videos/<stem>/), then
pooled micro scores (MEGC rule: IoU >= 0.5, one-to-one per video), false spots per minute on the
videos without events, recall per amplitude / region / context, an operating curve over threshold_k
(LiveConfig.sweep_k), tables and plots. A stopped run resumes (videos/<stem>/done.json); --jobs
analyses several videos at once in worker processes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slstt.errors import SlsttError
from slstt.io import atomic_savefig, atomic_write_json
from slstt.realtime.analyze import (
    AnalyzeResult,
    GroundTruth,
    analyze_video,
    context_line,
    make_out_dir,
    precision_recall_f1,
    read_ground_truth,
    score_spotting,
)
from slstt.realtime.events import SpotEvent

# --- many videos: pooled evaluation ------------------------------------------------------------
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v")


@dataclass
class VideoItem:
    video: Path
    truth: Path


def collect_videos(spec: str | Path) -> list[VideoItem]:
    """A folder (every video with its `<stem>.gt.csv` beside it) or a CSV list with columns
    video,ground_truth (paths relative to the CSV)."""
    spec = Path(spec)
    items: list[VideoItem] = []
    if spec.is_dir():
        for video in sorted(p for p in spec.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")):
            truth = video.with_suffix(".gt.csv")
            if not truth.is_file():
                raise SlsttError(f"{video}: no ground truth {truth.name} beside it; every video of a folder needs "
                                 "one (an empty one, with the header only, for a video without events)")
            items.append(VideoItem(video, truth))
        if not items:
            raise SlsttError(f"{spec}: no videos ({', '.join(VIDEO_SUFFIXES)}) in this folder")
        return items
    if spec.suffix.lower() == ".csv" and spec.is_file():
        try:
            rows = list(csv.DictReader(io.StringIO(spec.read_bytes().decode("utf-8-sig"), newline="")))
        except UnicodeDecodeError:
            raise SlsttError(f"{spec}: not UTF-8 text; save the video list as UTF-8 CSV") from None
        if not rows or not {"video", "ground_truth"} <= set(rows[0]):
            raise SlsttError(f"{spec}: a video list needs the columns video,ground_truth and at least one row")
        for n, r in enumerate(rows, start=2):
            video, truth = spec.parent / r["video"].strip(), spec.parent / r["ground_truth"].strip()
            for what, path in (("video", video), ("ground_truth", truth)):
                if not path.is_file():
                    raise SlsttError(f"{spec} line {n}: {what} {path} not found; paths are relative to the list")
            items.append(VideoItem(video, truth))
        return items
    raise SlsttError(f"{spec}: pass a video file, a folder of videos with .gt.csv files, or a CSV list "
                     "(video,ground_truth)")


# --- resume: a video whose done record matches its inputs and settings is not analysed again ------
DONE = "done.json"  # in videos/<stem>/, written last (atomically): that video's analysis finished
DONE_KIND = "slstt.analyze.video"


def config_dict(config: Any) -> Any:
    """A LiveConfig (any dataclass) as plain data for a signature; anything else as its repr."""
    import dataclasses

    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)  # type: ignore[arg-type]
    return repr(config)


def run_signature(config: Any, model: str | Path | None) -> dict[str, Any]:
    """What every video's result depends on besides the video and its ground truth: the settings,
    the model file, and the code (package version and git revision)."""
    import slstt
    from slstt.provenance import file_sha256, git_revision

    return {"config": config_dict(config), "model": file_sha256(model) if model else None,
            "version": slstt.__version__, "git": git_revision()}


def video_signature(item: VideoItem, run: dict[str, Any]) -> str:
    from slstt.config import config_hash
    from slstt.provenance import file_sha256

    return config_hash({"video": file_sha256(item.video), "truth": file_sha256(item.truth), **run}, length=32)


def video_signatures(items: list[VideoItem], config: Any, model: str | Path | None) -> list[str]:
    """Each video's signature under this run's settings, model and code (what its done record holds)."""
    from slstt.realtime.pipeline import LiveConfig

    run = run_signature(config or LiveConfig(), model)
    return [video_signature(item, run) for item in items]


def _write_done(path: Path, signature: str, result: AnalyzeResult) -> None:
    from dataclasses import asdict

    atomic_write_json(path, {
        "kind": DONE_KIND, "signature": signature, "frames": result.frames, "fps": result.fps,
        "video_fps": result.video_fps, "face_frames": result.face_frames, "spot_frames": result.spot_frames,
        "context": result.context, "curve": result.curve, "warnings": result.warnings,
        "events": [asdict(e) for e in result.events]})


def _done_record(path: Path) -> dict[str, Any] | None:
    """A done record's content (None: missing, unreadable, or not a done record)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == DONE_KIND else None


def read_done(path: Path, signature: str, truth: list[GroundTruth]) -> AnalyzeResult | None:
    """The finished analysis recorded in `path` if it is this video's with these settings; None
    (analyse again) for anything else, a damaged or foreign file included."""
    data = _done_record(path)
    if data is None or data.get("signature") != signature:
        return None
    try:
        events = [SpotEvent(**e) for e in data["events"]]
        return AnalyzeResult(events, int(data["frames"]), float(data["fps"]), float(data["video_fps"]),
                             score_spotting(events, truth), [str(w) for w in data["warnings"]], path.parent,
                             int(data["face_frames"]), int(data["spot_frames"]), dict(data["context"]),
                             list(data["curve"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def done_signature(path: Path) -> str | None:
    """The signature a done record holds (None: no readable record)."""
    data = _done_record(path)
    return None if data is None or "signature" not in data else str(data["signature"])


def same_run(out: Path, items: list[VideoItem], signatures: list[str]) -> bool:
    """--out holds a pooled run of these videos with these settings (finished or killed): every video
    folder there is one of ours, and every finished one (done.json) has its signature (video_signatures);
    if the run finished (pooled.json), every video did (what is rewritten is then the same)."""
    videos = out / "videos"
    if not videos.is_dir():
        return False
    names = video_dirs(items)
    if any(p.name not in names for p in videos.iterdir()):
        return False
    finished = (out / "pooled.json").exists()
    for name, signature in zip(names, signatures, strict=True):
        done = done_signature(videos / name / DONE)
        if (done is None and finished) or (done is not None and done != signature):
            return False
    return True


@dataclass
class PooledResult:
    videos: list[dict[str, Any]]  # one row per video
    groups: list[dict[str, Any]]  # recall per amplitude / region / context of the ground truth
    fired: dict[str, dict[str, int]]  # region that fired -> {"tp": n, "fp": n}
    pooled: dict[str, Any]
    out_dir: Path
    explained: list[Any] | None = None  # explain=True: an EventExplanation per micro event (slstt.realtime.explain)
    curve: list[dict[str, Any]] = field(default_factory=list)  # LiveConfig.sweep_k: pooled numbers per threshold_k
    resumed: int = 0  # videos whose earlier finished analysis (same inputs and settings) was reused


def _pooled_numbers(rows: list[dict[str, Any]]) -> dict[str, Any]:
    tp, spotted, truth = (sum(r[k] for r in rows) for k in ("tp", "spotted", "truth"))
    minutes = sum(r["seconds"] for r in rows) / 60.0
    quiet = [r for r in rows if r["truth"] == 0]
    quiet_minutes = sum(r["seconds"] for r in quiet) / 60.0
    p, r, f = precision_recall_f1(tp, spotted, truth)
    return {
        "videos": len(rows), "minutes": round(minutes, 3), "tp": tp, "spotted": spotted, "truth": truth,
        "fp": spotted - tp, "fn": truth - tp, "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4),
        "false_spots_per_minute": round((spotted - tp) / minutes, 3) if minutes else None,
        "no_event_minutes": round(quiet_minutes, 3),
        "false_spots_per_minute_without_events": (round(sum(r["spotted"] for r in quiet) / quiet_minutes, 3)
                                                   if quiet_minutes else None),
        "face_frames": round(sum(r["face_frames"] for r in rows) / max(sum(r["frames"] for r in rows), 1), 4),
    }


CURVE_OUTPUTS = ("operating_curve.csv", "operating_curve.png")  # written with a sweep (LiveConfig.sweep_k)
POOLED_OUTPUTS = ("pooled.json", "per_video.csv", "per_group.csv", "pooled.png", "explain.csv", "explain.png",
                  *CURVE_OUTPUTS, "videos")  # in --out


def crop_band(amplitude: float | None) -> str:
    """A 1 px band of an event's amplitude on the spotter's 112 px crop ("0-1" ... "4-"): the same video
    pixels are a smaller movement on a larger face."""
    if amplitude is None:
        return ""
    low = min(int(amplitude), 4)
    return f"{low}-" if low == 4 else f"{low}-{low + 1}"


class _Pool:
    """Accumulates the per-video results of analyze_many."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.per_group: dict[tuple[str, str], list[int]] = {}
        self.fired: dict[str, dict[str, int]] = {}
        self.curve: dict[tuple[float, bool], list[dict[str, Any]]] = {}  # (threshold_k, this run) -> per-video rows

    def add(self, video: Path, result: AnalyzeResult, truth: list[GroundTruth]) -> None:
        s = result.scores
        assert s is not None  # analyze_many always passes ground truth
        self.rows.append({"video": str(video), "frames": result.frames,
                          "seconds": round(result.frames / (result.video_fps or 30.0), 3),
                          "face_frames": result.face_frames, "spot_frames": result.spot_frames,
                          "truth": s.truth, "spotted": s.spotted, "tp": s.tp, "precision": round(s.precision, 4),
                          "recall": round(s.recall, 4), "f1": round(s.f1, 4),
                          "processing_fps": round(result.fps, 1), **result.context})
        for point in result.curve:  # the same per-video numbers as the rows above, per threshold_k
            row = {k: self.rows[-1][k] for k in ("seconds", "frames", "face_frames")}
            self.curve.setdefault((point["threshold_k"], point["this_run"]), []).append(
                {**row, **{k: point[k] for k in ("tp", "spotted", "truth")}})
        found = {(m["truth_onset"], m["truth_offset"]) for m in s.matches}
        for g in truth:
            if g.kind == "micro":
                self._count(g, int((g.onset, g.offset) in found))
        hit_events = {m["event"] for m in s.matches}
        for e in result.events:
            if e.kind == "micro":
                tally = self.fired.setdefault(e.region or next(iter(e.regions), "?"), {"tp": 0, "fp": 0})
                tally["tp" if e.event in hit_events else "fp"] += 1

    def _count(self, g: GroundTruth, hit: int) -> None:
        for group, value in (("amplitude_px", f"{g.amplitude_px:g}" if g.amplitude_px is not None else ""),
                             ("amplitude_crop112", crop_band(g.amplitude_crop112)),
                             ("region", g.region), ("context", g.context)):
            if value:
                counts = self.per_group.setdefault((group, value), [0, 0])
                counts[0] += hit
                counts[1] += 1

    def operating_curve(self) -> list[dict[str, Any]]:
        """Pooled numbers per threshold_k (_pooled_numbers, as pooled.json's), when the run swept k."""
        if len(self.curve) < 2:
            return []
        keep = ("tp", "spotted", "truth", "precision", "recall", "f1", "false_spots_per_minute",
                "false_spots_per_minute_without_events")
        return [{"threshold_k": k, "this_run": this_run, **{name: numbers[name] for name in keep}}
                for (k, this_run), rows in sorted(self.curve.items()) if (numbers := _pooled_numbers(rows))]

    def groups(self) -> list[dict[str, Any]]:
        return [{"group": g, "value": v, "found": c[0], "truth": c[1], "recall": round(c[0] / c[1], 4)}
                for (g, v), c in sorted(self.per_group.items())]


def video_dirs(items: list[VideoItem]) -> list[str]:
    """One folder name per video (two videos of the same name in a CSV list get name, name_)."""
    names: list[str] = []
    for item in items:
        stem = item.video.stem
        while stem in names:
            stem += "_"
        names.append(stem)
    return names


@dataclass
class _Task:
    """One video of analyze_many, as a worker process gets it."""

    index: int
    video: Path
    truth: Path
    out: Path  # videos/<stem>
    signature: str
    traced: bool


def _analyze_task(task: _Task, model: str | Path | None, config: Any, progress: bool = False,
                  on_warning: Callable[[str], None] | None = None) -> tuple[int, AnalyzeResult, dict[int, Any] | None]:
    """Analyse one video and record it as done (the record goes first: a killed re-analysis leaves none)."""
    done = task.out / DONE
    done.unlink(missing_ok=True)
    trace: dict[int, Any] | None = {} if task.traced else None
    result = analyze_video(task.video, task.out, model=model, ground_truth=task.truth, config=config,
                           progress=progress, on_warning=on_warning, trace=trace)
    _write_done(done, task.signature, result)
    return task.index, result, trace


def _init_analyze_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the workers share the cores; no nested threading


def _run_analyze_pool(tasks: list[_Task], jobs: int, model: str | Path | None, config: Any,
                      on_done: Callable[[int, AnalyzeResult, dict[int, Any] | None], None], progress: bool) -> None:
    """Videos in `jobs` worker processes (slstt.workers: spawned, dying with this process, stopped at
    once on Ctrl-C, SIGTERM or an error; a dead worker is one line). Every finished video keeps its
    done record, so the same command resumes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from slstt.workers import run_in_workers

    with Progress(TextColumn("analyze"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not progress) as bar:
        job = bar.add_task("videos", total=len(tasks))

        def finished(result: tuple[int, AnalyzeResult, dict[int, Any] | None]) -> None:
            on_done(*result)
            bar.advance(job)

        run_in_workers(_analyze_task, [(task, model, config) for task in tasks], jobs, finished,
                       what="analyze --jobs", initializer=_init_analyze_worker)


def analyze_many(items: list[VideoItem], out_dir: str | Path, *, model: str | Path | None = None,
                 config: Any = None, progress: bool = False,
                 on_warning: Callable[[str], None] | None = None, explain: bool = False,
                 resume: bool = True, jobs: int = 1, signatures: list[str] | None = None) -> PooledResult:
    """analyze_video on each video (into out_dir/videos/<stem>/), then pooled micro scores (MEGC rule:
    IoU >= 0.5, one-to-one per video), false spots per minute on videos without events, recall per
    amplitude / region / context of the ground truth, the regions that fired, a table and a plot.
    explain: also say why each missed micro event was missed (explain.csv; slstt.realtime.explain),
    with its lift over the control when the control of an injected copy is among the videos.
    resume: a video whose videos/<stem>/done.json says it was analysed from the same video, ground
    truth, settings, model and code is not analysed again (not with explain, which needs its trace).
    jobs > 1: that many videos at once, in worker processes (the same results).
    signatures: video_signatures(items, config, model), when the caller computed them already."""
    from slstt.realtime import explain as why

    out = Path(out_dir)
    make_out_dir(out)
    pool = _Pool()
    controls = {why.control_for(item.video) for item in items} if explain else set()
    runs: dict[Path, tuple[AnalyzeResult, list[GroundTruth], dict[int, Any]]] = {}
    if signatures is None:
        signatures = video_signatures(items, config, model)
    truths = [read_ground_truth(item.truth) for item in items]  # every file checked before any work
    finished: dict[int, tuple[AnalyzeResult, dict[int, Any] | None]] = {}
    tasks = []
    for i, (item, name, truth, signature) in enumerate(zip(items, video_dirs(items), truths, signatures, strict=True)):
        task = _Task(i, item.video, item.truth, out / "videos" / name, signature,
                     explain and (item.video in controls or any(g.kind == "micro" for g in truth)))
        earlier = read_done(task.out / DONE, task.signature, truth) if resume and not explain else None
        if earlier is not None:
            finished[i] = (earlier, None)
        else:
            tasks.append(task)
    resumed, in_workers = len(finished), jobs > 1 and len(tasks) > 1

    def on_done(index: int, result: AnalyzeResult, trace: dict[int, Any] | None) -> None:
        finished[index] = (result, trace)
        if in_workers and on_warning is not None:  # a worker's warnings, once it is done
            for message in result.warnings:
                on_warning(f"{items[index].video.name}: {message}")

    if in_workers:
        _run_analyze_pool(tasks, jobs, model, config, on_done, progress)
    else:
        for task in tasks:
            on_done(*_analyze_task(task, model, config, progress, on_warning))
    for i, (item, truth) in enumerate(zip(items, truths, strict=True)):
        result, trace = finished[i]
        pool.add(item.video, result, truth)
        if trace is not None:
            runs[item.video] = (result, truth, trace)
    explained = why.explain_runs(runs, config) if explain else None
    if explained is not None:
        why.write_csv(out / "explain.csv", explained)
        why.plot(out / "explain.png", explained)
    groups, pooled, curve = pool.groups(), _pooled_numbers(pool.rows), pool.operating_curve()
    _write_table(out / "per_video.csv", pool.rows)
    _write_table(out / "per_group.csv", groups)
    atomic_write_json(out / "pooled.json", {"pooled": pooled, "groups": groups, "fired": pool.fired,
                                            "videos": pool.rows, **({"operating_curve": curve} if curve else {})})
    _plot_pooled(out / "pooled.png", pool.rows, groups, pooled)
    if curve:
        _write_table(out / CURVE_OUTPUTS[0], curve)
        _plot_curve(out / CURVE_OUTPUTS[1], curve, pooled)
    else:  # an earlier run's curve (allowed by --overwrite) would not describe this one
        for name in CURVE_OUTPUTS:
            (out / name).unlink(missing_ok=True)
    return PooledResult(pool.rows, groups, pool.fired, pooled, out, explained, curve, resumed)


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    from slstt.io import atomic_write_text

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _plot_pooled(path: Path, rows: list[dict[str, Any]], groups: list[dict[str, Any]], pooled: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [max(len(groups), 1), max(len(rows), 1)]})
    ax = axes[0]
    if groups:
        names = [f"{g['group'].split('_')[0]}={g['value']}" for g in groups]
        ax.bar(range(len(groups)), [g["recall"] for g in groups], color="tab:green")
        ax.set_xticks(range(len(groups)), names, rotation=60, ha="right", fontsize=7)
        for i, g in enumerate(groups):
            ax.text(i, g["recall"] + 0.02, f"{g['found']}/{g['truth']}", ha="center", fontsize=6)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("micro recall (IoU >= 0.5)")
    ax.set_title(f"pooled: recall {pooled['recall']:.2f}  precision {pooled['precision']:.2f}  F1 {pooled['f1']:.2f}",
                 fontsize=9)
    ax = axes[1]
    fp_min = [(r["spotted"] - r["tp"]) / (r["seconds"] / 60.0) if r["seconds"] else 0.0 for r in rows]
    ax.bar(range(len(rows)), fp_min, color=["tab:gray" if r["truth"] == 0 else "tab:red" for r in rows])
    ax.set_xticks(range(len(rows)), [Path(r["video"]).stem for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("false spots per minute")
    ax.set_title(f"false spots/min {pooled['false_spots_per_minute']} (gray: videos without events)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


def _plot_curve(path: Path, curve: list[dict[str, Any]], pooled: dict[str, Any]) -> None:
    """Recall against false spots per minute, one point per threshold_k (this run's in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, style, name in (("false_spots_per_minute", "o-", "all video"),
                             ("false_spots_per_minute_without_events", "s--", "videos without events")):
        pts = [(p[key], p["recall"], p) for p in curve if p[key] is not None]
        if not pts:
            continue
        line, = ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], style, ms=4, lw=1, label=name)
        for x, y, p in pts:
            ax.annotate(f"k {p['threshold_k']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color="tab:red" if p["this_run"] else line.get_color())
    ax.axvline(5.0, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("false spots per minute")
    ax.set_ylabel("micro recall (IoU >= 0.5)")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0)
    ax.set_title(f"operating curve over threshold_k ({pooled['truth']} events, {pooled['minutes']:.1f} min; "
                 "red: this run's k)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


def curve_lines(curve: list[dict[str, Any]]) -> list[str]:
    lines = ["operating curve (recall at false spots per minute per threshold_k; choose k on tuning videos: a k "
             "picked from this curve is tuned on these):"]
    for p in curve:
        free = p["false_spots_per_minute_without_events"]
        lines.append(f"  k {p['threshold_k']:<5g} recall {p['recall']:.3f} ({p['tp']}/{p['truth']}) at "
                     f"{p['false_spots_per_minute']} false spots/min" + (f" ({free} without events)" if free is not None else "")
                     + ("   <- this run" if p["this_run"] else ""))
    return lines


def pooled_lines(result: PooledResult) -> list[str]:
    p = result.pooled
    lines = [f"{result.resumed} of {p['videos']} videos resumed: analysed earlier with the same inputs, settings "
             "and code (their videos/<stem>/done.json)"] if result.resumed else []
    lines += [f"{p['videos']} videos, {p['minutes']:.1f} min: micro precision {p['precision']:.3f}  recall "
             f"{p['recall']:.3f}  F1 {p['f1']:.3f}  ({p['tp']} of {p['truth']} found, {p['spotted']} spotted); "
             f"{p['false_spots_per_minute']} false spots/min"
             + (f", {p['false_spots_per_minute_without_events']} on videos without events"
                if p["false_spots_per_minute_without_events"] is not None else "")]
    for g in result.groups:
        lines.append(f"  {g['group']:>12} {g['value']:<16} recall {g['recall']:.3f} ({g['found']}/{g['truth']})")
    lines.append(f"tables: {result.out_dir / 'per_video.csv'}, {result.out_dir / 'per_group.csv'}; "
                 f"plot: {result.out_dir / 'pooled.png'}")
    if result.curve:
        lines += curve_lines(result.curve)
        lines.append(f"curve: {result.out_dir / CURVE_OUTPUTS[0]}; plot: {result.out_dir / CURVE_OUTPUTS[1]}")
    if result.explained is not None:
        from slstt.realtime.explain import summary_lines as why_lines

        lines.append("per video:")
        lines += [f"  {Path(r['video']).stem}: {context_line(r)}" for r in result.videos if "rules_open" in r]
        lines.append(f"why events were missed (per event: {result.out_dir / 'explain.csv'}; plot: "
                     f"{result.out_dir / 'explain.png'}):")
        lines += ["  " + line for line in why_lines(result.explained)]
    return lines

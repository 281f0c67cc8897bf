"""`slstt spot-long`: the MEGC long-video spotting benchmarks (CAS(ME)^2, SAMM Long Videos).

Every long video is streamed frame by frame through the live pipeline's causal spotter at the data
set's frame rate (30 or 200 fps), and its spotted intervals are scored with the MEGC 2020/2021 rule
(slstt.data.longvideo.score_megc) beside the published MEGC 2020 baseline (MDMD).

Out folder: run.json (what was run), videos/<subject>__<video>.json (one record per finished video,
written atomically: a re-run resumes at the first unfinished video), predictions.csv, per_video.csv
and results.json (written atomically at the end). With --sweep-k the same flows are also decided at
other threshold_k values (Spotter.follower): operating_curve.csv/.png, and a leave-one-subject-out
choice of threshold_k (each subject scored at the k that did best on the other subjects: a tuned
score that never looked at the subject it scores). Only typer/stdlib at import time."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from slstt.data.cli import FACE_MODEL_OPTION
from slstt.realtime.cli import (
    DURING_SPEECH_OPTION,
    LANDMARK_EVERY_OPTION,
    MAX_MICRO_OPTION,
    MIN_MICRO_OPTION,
    THRESHOLD_K_OPTION,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from slstt.data.longvideo import LongVideo, LongVideoTable, MegcScore
    from slstt.realtime.capture import Frame
    from slstt.realtime.events import GapRecord

RECORD_VERSION = 1
PREDICTION_COLUMNS = ["video", "subject", "kind", "onset", "apex", "offset", "onset_s", "offset_s", "score"]
CURVE_COLUMNS = ["threshold_k", "this_run"] + [f"{kind}_{m}" for kind in ("micro", "macro", "overall")
                                               for m in ("tp", "fp", "fn", "precision", "recall", "f1")]
SELECT_BY = ("overall", "micro")  # the F1 a leave-one-subject-out choice of threshold_k maximises
PER_VIDEO_COLUMNS = ["video", "subject", "frames", "streamed_frames", "face_frames", "unreadable_frames", "truth_micro", "truth_macro",
                     "spotted_micro", "spotted_macro", "tp_micro", "tp_macro", "fp", "fn", "seconds"]


@dataclass
class VideoRecord:
    """What one long video gave: spotted intervals in the data set's frame numbers."""

    key: str
    signature: str  # frames on disk + fps + spotter config: a changed input is recomputed
    spotted: list[dict[str, Any]]  # {"kind", "onset", "apex", "offset", "onset_s", "offset_s", "score"}
    frames: int
    face_frames: int
    unreadable_frames: int
    seconds: float
    version: int = RECORD_VERSION
    swept: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # f"{threshold_k:g}" -> spotted (--sweep-k)
    streamed_frames: int = 0  # frames read (--frame-step: every n-th); 0 in records older than the option: all

    @classmethod
    def read(cls, path: Path) -> VideoRecord | None:
        """The record, or None when missing or damaged (then the video is streamed again)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            record = cls(**data)
            if (record.version != RECORD_VERSION or not isinstance(record.swept, dict)
                    or not isinstance(record.streamed_frames, int) or record.streamed_frames < 0):
                return None
            for spotted in (record.spotted, *record.swept.values()):
                if not isinstance(spotted, list):
                    return None
                for s in spotted:
                    if s["kind"] not in ("micro", "macro") or int(s["onset"]) > int(s["offset"]):
                        return None
            return record
        except (OSError, ValueError, TypeError, KeyError):
            return None


def k_key(k: float) -> str:
    """A threshold_k as VideoRecord.swept names it."""
    return f"{k:g}"


@dataclass
class MegcRun:
    dataset: str
    videos: list[tuple[LongVideo, VideoRecord]] = field(default_factory=list)
    resumed: int = 0
    threshold_k: float = 0.0  # the spotter's own k (its spotted intervals)
    sweep_k: tuple[float, ...] = ()  # the followers' (each record's swept)

    def predicted(self, k: float | None = None, subjects: set[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Spotted intervals per video at threshold_k k (None: the spotter's own), of `subjects` only if given."""
        key = None if k is None or k == self.threshold_k else k_key(k)
        return {video.key: record.spotted if key is None else record.swept[key]
                for video, record in self.videos if subjects is None or video.subject in subjects}

    def truth(self, subjects: set[str] | None = None) -> dict[str, list[Any]]:
        return {video.key: list(video.intervals) for video, _ in self.videos
                if subjects is None or video.subject in subjects}

    def score(self, k: float | None = None, subjects: set[str] | None = None) -> MegcScore:
        from slstt.data.longvideo import score_megc

        return score_megc(self.predicted(k, subjects), self.truth(subjects))

    @property
    def all_k(self) -> list[float]:
        return sorted({self.threshold_k, *self.sweep_k})

    def operating_curve(self) -> list[dict[str, Any]]:
        """MEGC counts and F1 per threshold_k (the spotter's own and --sweep-k's), sorted by k."""
        rows = []
        for k in self.all_k:
            row: dict[str, Any] = {"threshold_k": k, "this_run": k == self.threshold_k}
            for kind, s in self.score(k).to_dict().items():
                row.update({f"{kind}_{m}": v for m, v in s.items()})
            rows.append(row)
        return rows

    def subject_choice(self, select_by: str = "overall") -> dict[str, Any] | None:
        """Leave-one-subject-out threshold_k: each subject's videos are scored at the k whose `select_by`
        F1 was best on all the other subjects (ties: the spotter's own k, then the higher k). None with
        fewer than two subjects or no sweep."""
        subjects = sorted({video.subject for video, _ in self.videos})
        if len(subjects) < 2 or not self.sweep_k:
            return None
        chosen: dict[str, float] = {}
        predicted: dict[str, list[dict[str, Any]]] = {}
        for subject in subjects:
            others = set(subjects) - {subject}
            chosen[subject] = max(self.all_k, key=lambda k: (getattr(self.score(k, others), select_by).f1,
                                                             k == self.threshold_k, k))
            predicted.update(self.predicted(chosen[subject], {subject}))
        from slstt.data.longvideo import score_megc

        return {"select_by": f"{select_by} F1", "chosen_k": chosen,
                "score": score_megc(predicted, self.truth()).to_dict()}


def _signature(video: LongVideo, config_hash: str) -> str:
    first, last = video.frame_numbers[0], video.frame_numbers[-1]
    return f"{len(video.frames)}:{first}:{last}:{video.fps:g}:{config_hash}"


def _record_path(out_dir: Path, video: LongVideo) -> Path:
    return out_dir / "videos" / f"{video.subject}__{video.video}.json"


def _event_frames(event: Any) -> tuple[int, int, int]:
    """(onset, apex, offset) stream indices of a SpotEvent (onset_frame..., or onset... in a rewrite)."""
    def get(name: str) -> int:
        value = getattr(event, f"{name}_frame", None)
        return int(getattr(event, name) if value is None else value)

    return get("onset"), get("apex"), get("offset")


def _resized(image: Any, max_side: int) -> Any:
    import cv2

    scale = max_side / max(image.shape[:2]) if max_side else 1.0
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class FrameFolderSource:
    """A long video's frame files as a stream runner source (the VideoSource interface): frame
    number n is index n - first, t = index / fps (a missing frame number leaves a gap in time, as
    it was filmed); an unreadable frame is counted and skipped like a dropped one. step > 1: only
    the frame numbers first, first + step, ... are read, as a video at fps / step (index (n - first) / step)."""

    is_live = False
    dropped = 0
    backlog = 0
    failure: str | None = None

    def __init__(self, video: LongVideo, max_side: int = 0, step: int = 1) -> None:
        self.video, self.max_side, self.step = video, max_side, step
        self.source = video.key
        self.fps = float(video.fps) / step
        self.width = self.height = 0
        self.gaps: list[GapRecord] = []
        self.unreadable = 0
        self.on_gap: Any = None
        self._stop = False
        first = video.frame_numbers[0]
        self.selected: list[tuple[int, Path]] = [  # (frame number, file) of the frames this source reads
            (n, f) for n, f in zip(video.frame_numbers, video.frames, strict=True) if (n - first) % step == 0]

    def frames(self) -> Iterator[Frame]:
        import cv2

        from slstt.realtime.capture import Frame

        for number, path in self.selected:
            if self._stop:
                return
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # SAMM's grayscale frames come back as BGR
            if image is None:
                self.unreadable += 1
                continue
            index = (number - self.video.frame_numbers[0]) // self.step
            yield Frame(index, index / self.fps, _resized(image, self.max_side))

    def unfinished_gap(self) -> None:
        return None

    def stop(self) -> None:
        self._stop = True


def _spotted(events: list[Any], video: LongVideo, step: int = 1) -> list[dict[str, Any]]:
    """Micro and macro events (MEGC scores these two kinds only) in the data set's frame numbers
    (stream index i of a --frame-step run is frame number first + i * step)."""
    first = video.frame_numbers[0]
    spotted = []
    for ev in events:
        if ev.kind not in ("micro", "macro"):
            continue
        onset, apex, offset = (i * step for i in _event_frames(ev))
        spotted.append({"kind": str(ev.kind), "onset": onset + first, "apex": apex + first, "offset": offset + first,
                        "onset_s": round(onset / video.fps, 4), "offset_s": round(offset / video.fps, 4),
                        "score": round(float(getattr(ev, "score", 0.0)), 4)})
    return sorted(spotted, key=lambda s: (s["onset"], s["offset"]))


def stream_video(source: FrameFolderSource, config: Any, signature: str, on_frame: Any = None) -> VideoRecord:
    """Every frame of one long video that `source` reads through the causal spotter (the stream
    runner). The source scales frames larger than its `max_side` down first (SAMM's 2040x1088
    frames at 200 fps would fill gigabytes of frame buffer; the spotter works on a small face crop).
    config.sweep_k: followers decide the same flows at those threshold_k values (VideoRecord.swept).
    source.step > 1: every step-th frame only, the spotter running at fps / step."""
    import time

    from slstt.realtime.events import SpotEvent
    from slstt.realtime.pipeline import LivePipeline
    from slstt.realtime.runner import StreamRunner
    from slstt.realtime.sinks import CallbackSink

    started = time.perf_counter()
    video, step = source.video, source.step
    pipe = LivePipeline(config, model=None)
    try:
        sinks = [CallbackSink(on_frame=lambda frame, events: on_frame())] if on_frame is not None else []
        events = list(StreamRunner(source, pipe, sinks).events())
        face_frames = pipe.stats.face_frames
        followers = pipe.spotter.followers if pipe.spotter is not None else []
        swept = {k_key(f.cfg.threshold_k): _spotted([SpotEvent.from_interval(n, iv) for n, iv in
                                                     enumerate(f.intervals, 1)], video, step) for f in followers}
    finally:
        pipe.close()
    for k in config.sweep_k:  # no face ever tracked: no spotter, no followers, nothing spotted at any k
        swept.setdefault(k_key(k), [])
    unreadable = source.unreadable
    for _ in range(unreadable if on_frame is not None else 0):  # progress counts every frame file
        on_frame()
    return VideoRecord(video.key, signature, _spotted(events, video, step), len(video.frames), face_frames, unreadable,
                       round(time.perf_counter() - started, 3), swept=swept, streamed_frames=len(source.selected))


def _check_run(out_dir: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """An out folder of another run (other data set, annotations or spotter) is never mixed in."""
    from slstt.errors import SlsttError
    from slstt.io import atomic_write_json

    run_path = out_dir / "run.json"
    if run_path.is_file() and not overwrite:
        try:
            earlier = json.loads(run_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = None
        if earlier != identity:
            raise SlsttError(f"--out {out_dir} holds results of another spot-long run (other data, annotations or "
                             "spotter settings); pass a new --out, or --overwrite to replace them")
    if overwrite:
        for old in (out_dir / "videos").glob("*.json"):
            old.unlink()
    atomic_write_json(run_path, identity)


def run_megc(table: LongVideoTable, out_dir: Path, config: Any, identity: dict[str, Any], *, overwrite: bool = False,
             max_side: int = 0, progress: bool = True, frame_step: int = 1) -> MegcRun:
    """Stream every video not already recorded in out_dir; write each record as it finishes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from slstt.config import config_hash
    from slstt.io import atomic_write_json
    from slstt.realtime.pooled import config_dict

    _check_run(out_dir, identity, overwrite)
    chash = config_hash({"live": config_dict(config), "max_side": max_side}
                        | ({"frame_step": frame_step} if frame_step != 1 else {}))  # earlier records stay valid
    run = MegcRun(table.dataset, threshold_k=config.spotter.threshold_k, sweep_k=tuple(config.sweep_k))
    todo = []
    for video in table.videos:
        signature = _signature(video, chash)
        record = VideoRecord.read(_record_path(out_dir, video))
        if (record is not None and record.signature == signature and record.key == video.key
                and set(record.swept) == {k_key(k) for k in run.sweep_k}):
            run.videos.append((video, record))
            run.resumed += 1
        else:
            todo.append((video, signature))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress or not todo) as bar:
        videos_task = bar.add_task("videos", total=len(todo))
        for video, signature in todo:
            source = FrameFolderSource(video, max_side, frame_step)
            frames_task = bar.add_task(f"  {video.key}", total=len(source.selected))
            record = stream_video(source, config, signature, on_frame=lambda t=frames_task: bar.advance(t))
            atomic_write_json(_record_path(out_dir, video), record.__dict__)
            run.videos.append((video, record))
            bar.remove_task(frames_task)
            bar.advance(videos_task)
    order = {v.key: i for i, v in enumerate(table.videos)}
    run.videos.sort(key=lambda pair: order[pair[0].key])
    return run


def _csv(columns: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def plot_curve(path: Path, run: MegcRun, curve: list[dict[str, Any]], choice: dict[str, Any] | None) -> None:
    """F1 (micro, macro, overall) per threshold_k beside the MEGC 2020 baseline's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slstt.data.longvideo import MEGC2020_BASELINE
    from slstt.io import atomic_savefig

    base = MEGC2020_BASELINE[run.dataset]
    ks = [row["threshold_k"] for row in curve]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, colour in (("micro", "tab:blue"), ("macro", "tab:orange"), ("overall", "tab:green")):
        ax.plot(ks, [row[f"{kind}_f1"] for row in curve], "o-", color=colour, ms=4, lw=1, label=f"{kind} F1")
        if kind in base:
            ax.axhline(base[kind], color=colour, lw=0.8, ls=":", label=f"{kind} F1 {base['method']}")
    ax.axvline(run.threshold_k, color="tab:red", lw=0.8, ls="--", label="this run's k")
    if choice is not None:
        ax.set_title(f"{run.dataset}: leave-one-subject-out k ({choice['select_by']}): micro F1 "
                     f"{choice['score']['micro']['f1']:.4f}, overall {choice['score']['overall']['f1']:.4f}", fontsize=9)
    ax.set_xlabel("threshold_k")
    ax.set_ylabel("F1 (MEGC rule)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


def write_results(run: MegcRun, out_dir: Path, identity: dict[str, Any], select_by: str = "overall") -> dict[str, Any]:
    """predictions.csv, per_video.csv and results.json (atomic), from the per-video records; with a
    sweep also operating_curve.csv/.png and the leave-one-subject-out choice of threshold_k."""
    from slstt.data.longvideo import MEGC2020_BASELINE, score_megc
    from slstt.io import atomic_write_json, atomic_write_text
    from slstt.provenance import git_revision, package_versions

    predictions, per_video = [], []
    for video, record in run.videos:
        for s in record.spotted:
            predictions.append([video.key, video.subject, s["kind"], s["onset"], s["apex"], s["offset"],
                                s["onset_s"], s["offset_s"], s["score"]])
        one = score_megc({video.key: record.spotted}, {video.key: video.intervals})
        truth = [iv.kind for iv in video.intervals]
        spotted = [s["kind"] for s in record.spotted]
        per_video.append([video.key, video.subject, record.frames, record.streamed_frames or record.frames,
                          record.face_frames, record.unreadable_frames, truth.count("micro"), truth.count("macro"),
                          spotted.count("micro"), spotted.count("macro"), one.micro.tp, one.macro.tp, one.overall.fp,
                          one.overall.fn, record.seconds])
    score = run.score()
    results = {
        "dataset": run.dataset, **identity, "videos": len(run.videos),
        "frames": sum(r.frames for _, r in run.videos), "face_frames": sum(r.face_frames for _, r in run.videos),
        "rule": "MEGC 2020/2021: TP when IoU >= 0.5 with a same-kind ground-truth interval of the same video, "
                "one-to-one; overall pools micro and macro",
        "score": score.to_dict(), "baseline": MEGC2020_BASELINE[run.dataset],
        "versions": package_versions(), "git": git_revision(),
    }
    if run.sweep_k:
        curve = run.operating_curve()
        choice = run.subject_choice(select_by)
        results["operating_curve"] = curve
        results["subject_choice"] = choice  # None: one subject only
        atomic_write_text(out_dir / "operating_curve.csv", _csv(CURVE_COLUMNS, [[r[c] for c in CURVE_COLUMNS]
                                                                               for r in curve]))
        plot_curve(out_dir / "operating_curve.png", run, curve, choice)
    atomic_write_text(out_dir / "predictions.csv", _csv(PREDICTION_COLUMNS, predictions))
    atomic_write_text(out_dir / "per_video.csv", _csv(PER_VIDEO_COLUMNS, per_video))
    atomic_write_json(out_dir / "results.json", results)
    return results


def print_per_video(path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    table = Table(title="per video (truth / spotted / TP per kind)")
    for name in ("video", "frames", "face %", "micro", "macro", "FP", "FN"):
        table.add_column(name, justify="left" if name == "video" else "right")
    for r in rows:
        face = 100.0 * int(r["face_frames"]) / max(1, int(r.get("streamed_frames") or r["frames"]))
        table.add_row(r["video"], r["frames"], f"{face:.0f}",
                      f"{r['truth_micro']} / {r['spotted_micro']} / {r['tp_micro']}",
                      f"{r['truth_macro']} / {r['spotted_macro']} / {r['tp_macro']}", r["fp"], r["fn"])
    Console().print(table)


def print_results(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    base = results["baseline"]
    table = Table(title=f"MEGC spotting on {results['dataset']}: {results['videos']} videos, {results['frames']} frames")
    for name in ("kind", "TP", "FP", "FN", "precision", "recall", "F1", f"F1 {base['method']}"):
        table.add_column(name, justify="left" if name == "kind" else "right")
    for kind in ("micro", "macro", "overall"):
        s = results["score"][kind]
        table.add_row(kind, str(s["tp"]), str(s["fp"]), str(s["fn"]), f"{s['precision']:.4f}", f"{s['recall']:.4f}",
                      f"{s['f1']:.4f}", f"{base[kind]:.4f}")
    Console().print(table)
    if "operating_curve" not in results:
        return
    curve = Table(title="per threshold_k, on the same flows (a k picked here is tuned on these subjects)")
    for name in ("threshold_k", "micro TP/FP/FN", "micro F1", "macro F1", "overall F1"):
        curve.add_column(name, justify="right")
    for r in results["operating_curve"]:
        curve.add_row(f"{r['threshold_k']:g}" + (" (this run)" if r["this_run"] else ""),
                      f"{r['micro_tp']}/{r['micro_fp']}/{r['micro_fn']}", f"{r['micro_f1']:.4f}",
                      f"{r['macro_f1']:.4f}", f"{r['overall_f1']:.4f}")
    Console().print(curve)
    choice = results["subject_choice"]
    if choice is None:
        Console().print("leave-one-subject-out choice of threshold_k: needs two subjects or more")
        return
    ks = ", ".join(f"{s} {k:g}" for s, k in choice["chosen_k"].items())
    score = choice["score"]
    Console().print(f"leave-one-subject-out threshold_k (each subject at the k with the best {choice['select_by']} on "
                    f"the others): micro F1 {score['micro']['f1']:.4f}, overall F1 {score['overall']['f1']:.4f} "
                    f"(chosen: {ks})")


def spot_long(dataset: str, data_root: Path, config: Any, out: Path, *, annotations: Path | None = None,
              videos: str | None = None, max_side: int = 640, frame_step: int = 1, select_by: str = "overall",
              overwrite: bool = False, progress: bool = True, on_warning: Any = None) -> tuple[MegcRun, dict[str, Any]]:
    """`slstt spot-long` and slstt.Detector.spot_long: check the inputs, stream every video not yet
    recorded in `out` through the spotter of `config` (a LiveConfig made by live_config, which checked
    it; its sweep_k gives the operating curve), write the results files; returns the run and
    results.json's content."""
    from slstt.data.cli import check_output_dir
    from slstt.data.longvideo import LONG_DATASETS, load_long_videos
    from slstt.errors import SlsttError, check_int
    from slstt.realtime.pooled import config_dict

    out, data_root = Path(out), Path(data_root)
    if dataset.lower() not in LONG_DATASETS:
        raise SlsttError(f"--dataset {dataset!r}: choose one of {', '.join(LONG_DATASETS)}")
    if max_side != 0 and not 64 <= max_side <= 8192:
        raise SlsttError(f"--max-side must be 0 (no scaling) or 64..8192 px, got {max_side}")
    if select_by not in SELECT_BY:
        raise SlsttError(f"--select-by {select_by!r}: choose {' or '.join(SELECT_BY)}")
    check_int("--frame-step", frame_step, 1, 100)
    check_output_dir(out, "--out")  # (config's face model: checked by live_config, which made it)
    table = load_long_videos(dataset, data_root, annotations)
    if videos:
        wanted = [w.strip() for w in videos.split(",") if w.strip()]
        table.videos = [v for v in table.videos if any(w in v.key for w in wanted)]
    if not table.videos:
        raise SlsttError(f"{dataset}: no long video to stream under {data_root}" + (f" matching --videos {videos}" if videos else ""))
    inputs = {data_root.resolve(), *(Path(f).resolve().parent for v in table.videos[:1] for f in v.frames[:1])}
    if out.resolve() in inputs:
        raise SlsttError(f"--out {out} is the data folder; pass a separate results folder")
    for kind, count in table.problem_counts().items():
        if on_warning is not None:
            on_warning(f"{count} annotation problem(s): {kind} (see `slstt data check --dataset {dataset}`)")
    identity = {"dataset": table.dataset, "data_root": str(data_root.resolve()),
                "annotations": str(table.annotations.resolve()) if table.annotations else None,
                "videos_selected": sorted(v.key for v in table.videos), "max_side": max_side,
                "live_config": config_dict(config)} | ({"frame_step": frame_step} if frame_step != 1 else {})
    identity = json.loads(json.dumps(identity, default=str))  # the form run.json holds
    run = run_megc(table, out, config, identity, overwrite=overwrite, max_side=max_side, progress=progress,
                   frame_step=frame_step)
    return run, write_results(run, out, identity, select_by)


def spot_long_command(
    dataset: str = typer.Option(..., "--dataset", "-d", help="casme_sq (CAS(ME)^2, 30 fps) | samm_lv (SAMM Long Videos, 200 fps)"),
    data_root: Path = typer.Option(..., "--data-root", help="Folder holding the release (rawpic/ or SAMM_longvideos/ and the xlsx)."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="CAS(ME)^2code_final.xlsx or SAMM_LongVideos_V3_Release.xlsx (found in --data-root when omitted)."),  # noqa: UP045
    out: Path = typer.Option(Path("spot_long"), "--out", help="Results folder (resumes an unfinished run of the same settings)."),
    face_model: Optional[Path] = FACE_MODEL_OPTION,  # noqa: UP045
    videos: Optional[str] = typer.Option(None, "--videos", help="Only videos whose subject/video key contains one of these comma-separated texts."),  # noqa: UP045
    max_side: int = typer.Option(640, "--max-side", help="Scale frames down to this longest side first (0: as "
                                 "released; SAMM's frames are 2040x1088)."),
    frame_step: int = typer.Option(1, "--frame-step", help="Stream every N-th frame only, as a video at fps / N "
                                   "(SAMM-LV's 200 fps: 7 gives 28.6 fps, about the rate the spotter was tuned at, "
                                   "for a seventh of the work); intervals are given in the data set's frame numbers."),
    threshold_k: Optional[float] = THRESHOLD_K_OPTION,  # noqa: UP045
    min_micro_ms: Optional[float] = MIN_MICRO_OPTION,  # noqa: UP045
    max_micro_ms: Optional[float] = MAX_MICRO_OPTION,  # noqa: UP045
    landmark_every: int = LANDMARK_EVERY_OPTION,
    during_speech: str = DURING_SPEECH_OPTION,
    sweep_k: Optional[str] = typer.Option(None, "--sweep-k", metavar="K1,K2,...", help="Also decide the same flows at these threshold_k values (one pass) -> operating_curve.csv/.png, and a leave-one-subject-out choice of k: each subject scored at the k that did best on the others."),  # noqa: UP045
    select_by: str = typer.Option("overall", "--select-by", help="With --sweep-k: the F1 the leave-one-subject-out choice maximises: overall | micro."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results of another run in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Stream every MEGC long video through the causal spotter and report the MEGC spotting scores
    (micro, macro, overall: TP/FP/FN, precision, recall, F1) beside the MEGC 2020 baseline."""
    from slstt.data.cli import signals_to_exit_codes
    from slstt.realtime.pipeline import live_config

    config = live_config(threshold_k=threshold_k, min_micro_ms=min_micro_ms, max_micro_ms=max_micro_ms,
                         landmark_every=landmark_every, face_model=face_model, during_speech=during_speech,
                         sweep_k=sweep_k or ())
    with signals_to_exit_codes(f"finished videos are kept in {out / 'videos'}"):
        run, results = spot_long(dataset, data_root, config, out, annotations=annotations, videos=videos,
                                 max_side=max_side, frame_step=frame_step, select_by=select_by, overwrite=overwrite,
                                 progress=progress, on_warning=lambda m: typer.echo(f"warning: {m}", err=True))
    if run.resumed:
        typer.echo(f"resumed: {run.resumed} video(s) taken from {out / 'videos'}", err=True)
    print_per_video(out / "per_video.csv")
    print_results(results)
    curve = f", {out / 'operating_curve.csv'}, {out / 'operating_curve.png'}" if run.sweep_k else ""
    typer.echo(f"results: {out / 'results.json'}, {out / 'per_video.csv'}, {out / 'predictions.csv'}{curve}")

"""`slstt analyze VIDEO`: the live pipeline over a file as fast as possible (every frame), events to
JSONL/CSV, a timeline PNG, and with ground truth the MEGC spotting scores:

- spotting: a ground-truth micro interval is found when a spotted MICRO interval overlaps it with
  IoU >= 0.5; each ground-truth interval matches at most one spotted interval and vice versa.
  precision = TP / spotted, recall = TP / ground truth, F1.
- spot-then-recognise: accuracy = correctly spotted events with the right label / correctly spotted
  events; combined = F1 where a TP also needs the right label."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slstt.errors import SlsttError
from slstt.io import atomic_savefig, atomic_write_json, check_distinct_outputs, check_output
from slstt.realtime.events import SpotEvent, write_events_csv
from slstt.realtime.sinks import EventsFileSink, Sink


@dataclass
class GroundTruth:
    kind: str
    label: str
    onset: int
    apex: int
    offset: int
    region: str = ""  # optional columns of `slstt synth --style webcam` ground truth
    amplitude_px: float | None = None
    context: str = ""


def read_ground_truth(path: str | Path) -> list[GroundTruth]:
    """The synth ground-truth CSV: kind,label,onset_frame,apex_frame,offset_frame[,onset_s,...]."""
    path = Path(path)
    if not path.is_file():
        raise SlsttError(f"ground truth not found: {path}; pass the .gt.csv written with the video")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SlsttError(f"{path}: not UTF-8 text (byte {exc.start}); save the ground truth as UTF-8 CSV") from None
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    need = {"kind", "label", "onset_frame", "offset_frame"}
    if rows and not need <= set(rows[0]):
        raise SlsttError(f"{path}: needs columns {', '.join(sorted(need))}; got {', '.join(rows[0])}")
    out = []
    for n, r in enumerate(rows, start=2):
        try:
            onset, offset = int(r["onset_frame"]), int(r["offset_frame"])
            apex = int(r["apex_frame"]) if r.get("apex_frame") not in (None, "") else (onset + offset) // 2
        except ValueError:
            raise SlsttError(f"{path} line {n}: frame numbers must be integers") from None
        if onset < 0 or offset < onset or not onset <= apex <= offset:
            raise SlsttError(f"{path} line {n}: needs 0 <= onset_frame <= apex_frame <= offset_frame; got "
                             f"{onset}, {apex}, {offset}")
        amplitude = None
        if r.get("amplitude_px") not in (None, ""):
            try:
                amplitude = float(r["amplitude_px"])
            except ValueError:
                raise SlsttError(f"{path} line {n}: amplitude_px must be a number") from None
        out.append(GroundTruth(r["kind"].strip().lower(), (r.get("label") or "").strip(), onset, apex, offset,
                               (r.get("region") or "").strip(), amplitude, (r.get("context") or "").strip()))
    return out


def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Interval IoU on inclusive frame ranges."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    union = max(a[1], b[1]) - min(a[0], b[0]) + 1
    return max(inter, 0) / union if union > 0 else 0.0


@dataclass
class SpotScores:
    tp: int
    spotted: int
    truth: int
    precision: float
    recall: float
    f1: float
    correct_label: int = 0
    label_accuracy: float | None = None  # among correct spots that have a label
    combined_f1: float | None = None
    matches: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _f1(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score_spotting(events: list[SpotEvent], truth: list[GroundTruth], min_iou: float = 0.5) -> SpotScores:
    """MEGC-style micro spotting scores (greedy one-to-one matching, best IoU first)."""
    gt = [g for g in truth if g.kind == "micro"]
    pred = [e for e in events if e.kind == "micro"]
    pairs = sorted(((iou((e.onset_frame, e.offset_frame), (g.onset, g.offset)), i, j)
                    for i, e in enumerate(pred) for j, g in enumerate(gt)), reverse=True)
    used_p, used_g, matches = set(), set(), []
    for value, i, j in pairs:
        if value < min_iou:
            break
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        matches.append({"event": pred[i].event, "truth_onset": gt[j].onset, "truth_offset": gt[j].offset,
                        "iou": round(value, 3), "truth_label": gt[j].label, "label": pred[i].label})
    p, r, f = _f1(len(matches), len(pred), len(gt))
    scores = SpotScores(len(matches), len(pred), len(gt), p, r, f, matches=matches)
    labelled = [m for m in matches if m["label"] is not None]
    if labelled:
        scores.correct_label = sum(str(m["label"]).lower() == str(m["truth_label"]).lower() for m in labelled)
        scores.label_accuracy = scores.correct_label / len(labelled)
        scores.combined_f1 = _f1(scores.correct_label, len(pred), len(gt))[2]
    return scores


def plot_timeline(path: Path, history: list[tuple[int, float, float, float]], events: list[SpotEvent],
                  truth: list[GroundTruth] | None, fps: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = np.array([(t, s, thr) for _, t, s, thr in history], dtype=np.float64) if history else np.zeros((0, 3))
    fig, ax = plt.subplots(figsize=(14, 4))
    if len(arr):
        ax.plot(arr[:, 0], arr[:, 1], lw=0.8, color="tab:blue", label="score / threshold")
        ax.plot(arr[:, 0], arr[:, 2], lw=0.8, color="tab:orange", label="threshold (1.0)")
    top = float(np.nanmax(arr[:, 1])) if len(arr) and np.isfinite(arr[:, 1]).any() else 1.0
    for e in events:
        color = "tab:red" if e.kind == "micro" else "tab:purple"
        ax.axvspan(e.onset_s, e.offset_s, color=color, alpha=0.3)
        ax.text(e.apex_s, top * 1.02, e.label or e.kind, fontsize=7, ha="center", color=color)
    colors = {"micro": "green", "macro": "gray", "blink": "cyan", "head_motion": "olive"}
    for g in truth or []:
        ax.plot([g.onset / fps, g.offset / fps], [-0.05 * top] * 2, lw=5, color=colors.get(g.kind, "k"),
                solid_capstyle="butt")
        if g.kind == "micro":
            ax.text(g.apex / fps, -0.13 * top, g.label, fontsize=6, ha="center", color="green")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score / threshold")
    ax.set_title(title + "   (spans: red = spotted micro, purple = macro; bars below: ground truth, "
                 "green = micro)", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


@dataclass
class AnalyzeResult:
    events: list[SpotEvent]
    frames: int
    fps: float  # processing speed (frames per second of wall time)
    video_fps: float
    scores: SpotScores | None
    warnings: list[str]
    out_dir: Path | None  # None: nothing written (the Python API without out=)
    face_frames: int = 0
    spot_frames: int = 0  # face frames on which the spotter produced a finite score
    context: dict[str, float] = field(default_factory=dict)  # explain.ContextTally.fractions(): rules_open, ...
    # with ground truth: micro counts per threshold_k (this run's and LiveConfig.sweep_k's), operating_points()
    curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def spot_ratio(self) -> float:
        """Fraction of face frames on which the spotter could have opened an interval."""
        return self.spot_frames / self.face_frames if self.face_frames else 0.0


def _make_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SlsttError(f"--out {out} is a file; pass a folder (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlsttError(f"cannot create the output folder {out}: {exc.strerror or exc}; "
                         "pass a folder path you can write to") from None


# --- output protections: what analyze writes in --out, and what it must never overwrite ------------
RECORD_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # = overlay.RECORD_FORMATS (checked here before any work)


def check_record_name(record: Path | None) -> None:
    if record is not None and record.suffix.lower() not in RECORD_SUFFIXES:
        raise SlsttError(f"--record {record}: name it .mp4 or .mkv (fragmented mp4 / Matroska stay playable "
                         "after a crash)")


def file_inputs(*paths: Path | str | None) -> list[Path]:
    """The given paths that are local files (not URLs or camera indices): outputs must not hit them."""
    out = []
    for p in paths:
        if p is None or isinstance(p, int) or "://" in str(p):
            continue
        out.append(Path(p))
    return out


@dataclass(frozen=True)
class AnalyzeLayout:
    """The files analyze writes in its --out folder (one owner of the names)."""

    out: Path
    EVENTS = "events.jsonl"
    EVENTS_CSV = "events.csv"
    TIMELINE = "timeline.png"
    SUMMARY = "summary.json"
    NAMES = (EVENTS, EVENTS_CSV, TIMELINE, SUMMARY)

    @property
    def events(self) -> Path:
        return self.out / self.EVENTS

    @property
    def events_csv(self) -> Path:
        return self.out / self.EVENTS_CSV

    @property
    def timeline(self) -> Path:
        return self.out / self.TIMELINE

    @property
    def summary(self) -> Path:
        return self.out / self.SUMMARY


ANALYZE_OUTPUTS = AnalyzeLayout.NAMES  # what analyze writes in --out


def check_analyze_outputs(out: Path, *, record: Path | None, inputs: list[Path], overwrite: bool,
                          names: tuple[str, ...] = ANALYZE_OUTPUTS, folders: tuple[str, ...] = ()) -> None:
    """--out may hold earlier results (`names`, the files written there, and `folders`, written into)
    only with --overwrite; no output may be an input, nor a folder written into hold one, ever."""
    if out.exists() and not out.is_dir():
        raise SlsttError(f"--out {out} is a file; pass a folder (it is created when missing)")
    earlier = [name for name in (*names, *folders) if (out / name).exists() or (out / name).is_symlink()]
    for name in names:  # an input inside --out under an output's name: refused even with --overwrite
        check_output(out / name, inputs=inputs, overwrite=True, what=f"--out {out}: output")
    for name in folders:
        _check_no_input_inside(out / name, inputs)
    if earlier and not overwrite:
        raise SlsttError(f"--out {out} holds results of an earlier run ({', '.join(earlier)}); pass --overwrite "
                         "to replace them or choose another --out folder")
    if record is not None:
        check_output(record, inputs=inputs, overwrite=overwrite, what="--record file")
        check_record_name(record)
        check_distinct_outputs({"--record": record, **{f"--out {name}": out / name for name in names}})


def _check_no_input_inside(folder: Path, inputs: list[Path]) -> None:
    root = folder.resolve()
    for given in inputs:
        if root in Path(given).resolve().parents:
            raise SlsttError(f"--out {folder.parent}: results are written into {folder}, which holds the input "
                             f"{given}; choose another --out folder")


def _analyze_sinks(out: Path | None, record: str | Path | None, progress: bool, source: Any, label: str,
                   warn: Callable[[str], None]) -> tuple[EventsFileSink, list[Sink]]:
    from slstt.realtime.sinks import ProgressSink, RecorderSink

    events = EventsFileSink(AnalyzeLayout(out).events if out is not None else None)
    sinks: list[Sink] = [events]
    if record:  # analyze waits for the encoder: every frame recorded
        sinks.append(RecorderSink(Path(record), on_warning=warn, fps=source.fps, size=(source.width, source.height)))
    if progress:
        sinks.append(ProgressSink(f"analyze {label}", source.frame_count))
    return events, sinks


def analyze_video(video: str | Path, out_dir: str | Path | None, *, model: str | Path | None = None,
                  ground_truth: str | Path | None = None, config: Any = None,
                  record: str | Path | None = None, progress: bool = False,
                  on_warning: Callable[[str], None] | None = None,
                  trace: dict[int, Any] | None = None) -> AnalyzeResult:
    """Run the pipeline over every frame of `video` (the stream runner, file read synchronously);
    write events.jsonl, events.csv, timeline.png and summary.json into out_dir (None: no files);
    score against the ground truth when given. trace: a dict the spotter fills with every candidate
    frame's CandidateTrace (slstt.realtime.explain)."""
    from slstt.realtime.capture import VideoSource
    from slstt.realtime.explain import ContextTally
    from slstt.realtime.pipeline import LiveConfig, LivePipeline
    from slstt.realtime.runner import StreamRunner

    truth = read_ground_truth(ground_truth) if ground_truth else None
    source = VideoSource(str(video), threaded=False)  # a bad video fails before any folder is made
    out = Path(out_dir) if out_dir is not None else None
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if on_warning is not None:
            on_warning(message)

    pipe = None
    try:
        if out is not None:
            _make_out_dir(out)
        pipe = LivePipeline(config or LiveConfig(), model=model, on_warning=warn)
        # how often the spotter was open and each context rule on (summary); every frame's trace when asked
        tally = pipe.spot_trace = ContextTally(pipe.config.spotter, trace)
        events_sink, sinks = _analyze_sinks(out, record, progress, source, Path(str(video)).name, warn)
        outcome = StreamRunner(source, pipe, sinks).run()
    finally:
        source.close()
        if pipe is not None:
            pipe.close()
    if pipe.stats.frames and not pipe.stats.face_frames:
        warn(f"no face found in any of the {pipe.stats.frames} frames of {video}; spotting needs a "
             "visible, frontal face")
    events = sorted(events_sink.log.events, key=lambda e: e.onset_frame)
    stats = pipe.stats
    result = AnalyzeResult(events, stats.frames, stats.frames / outcome.wall_s if outcome.wall_s > 0 else 0.0,
                           source.fps, score_spotting(events, truth) if truth is not None else None, warnings, out,
                           stats.face_frames, stats.spot_frames, tally.fractions(),
                           operating_points(pipe, events, truth) if truth is not None else [])
    if out is not None:
        _write_analysis(out, result, pipe.history, truth, video, model)
    return result


def operating_points(pipe: Any, events: list[SpotEvent], truth: list[GroundTruth]) -> list[dict[str, Any]]:
    """Micro counts (MEGC rule) at this run's threshold_k and at each follower's (LiveConfig.sweep_k),
    sorted by k. this_run marks the run's own events (the ones written and recognised)."""
    spotter = pipe.spotter
    if spotter is None:
        return []
    points = [(pipe.config.spotter.threshold_k, True, events)]
    points += [(f.cfg.threshold_k, False, [SpotEvent.from_interval(n, iv) for n, iv in enumerate(f.intervals, 1)])
               for f in spotter.followers]
    rows = []
    for k, this_run, spotted in sorted(points, key=lambda p: p[0]):
        s = score_spotting(spotted, truth)
        rows.append({"threshold_k": k, "this_run": this_run, "tp": s.tp, "spotted": s.spotted, "truth": s.truth})
    return rows


def _write_analysis(out: Path, result: AnalyzeResult, history: list[tuple[int, float, float, float]],
                    truth: list[GroundTruth] | None, video: str | Path, model: str | Path | None) -> None:
    events, scores = result.events, result.scores
    files = AnalyzeLayout(out)
    write_events_csv(files.events_csv, events)
    plot_timeline(files.timeline, history, events, truth, result.video_fps, Path(str(video)).name)
    atomic_write_json(files.summary, {
        "video": str(video), "frames": result.frames, "video_fps": result.video_fps,
        "processing_fps": round(result.fps, 1), "face_frames": result.face_frames,
        "spot_frames": result.spot_frames, "spot_ratio": round(result.spot_ratio, 4), **result.context,
        "events": len(events),
        "micro": sum(e.kind == "micro" for e in events), "macro": sum(e.kind == "macro" for e in events),
        "model": str(model) if model else None, "warnings": result.warnings,
        "scores": scores.to_dict() if scores else None,
        **({"operating_curve": result.curve} if len(result.curve) > 1 else {}),
    })


def context_line(c: dict[str, float]) -> str:
    return (f"spotter open on {c['rules_open']:.0%} of frames after the warm-up (talking {c['speech_frames']:.0%}, "
            f"blink {c['blink_frames']:.0%}, a longer expression {c['macro_frames']:.0%}, fast head "
            f"{c['fast_head_frames']:.0%})")


def summary_lines(result: AnalyzeResult) -> list[str]:
    lines = [f"{result.frames} frames at {result.fps:.0f} fps: {len(result.events)} events "
             f"({sum(e.kind == 'micro' for e in result.events)} micro, "
             f"{sum(e.kind == 'macro' for e in result.events)} macro) -> {result.out_dir}"]
    if result.context:
        lines.append(context_line(result.context) + "; why: README, \"Why an event was missed\"")
    s = result.scores
    if s is not None:
        lines.append(f"spotting (IoU >= 0.5, micro): precision {s.precision:.3f}  recall {s.recall:.3f}  "
                     f"F1 {s.f1:.3f}  ({s.tp} of {s.truth} found, {s.spotted} spotted)")
        if s.label_accuracy is not None:
            lines.append(f"spot-then-recognise: {s.correct_label}/{s.tp} correctly spotted events have the right "
                         f"label (accuracy {s.label_accuracy:.3f}); combined F1 {s.combined_f1:.3f}")
    if len(result.curve) > 1:
        lines.append("operating curve (micro): " + "; ".join(
            f"k {p['threshold_k']:g}{' (this run)' if p['this_run'] else ''}: {p['tp']} of {p['truth']} found, "
            f"{p['spotted']} spotted" for p in result.curve))
    return lines


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


def _write_done(path: Path, signature: str, result: AnalyzeResult) -> None:
    from dataclasses import asdict

    atomic_write_json(path, {
        "kind": DONE_KIND, "signature": signature, "frames": result.frames, "fps": result.fps,
        "video_fps": result.video_fps, "face_frames": result.face_frames, "spot_frames": result.spot_frames,
        "context": result.context, "curve": result.curve, "warnings": result.warnings,
        "events": [asdict(e) for e in result.events]})


def read_done(path: Path, signature: str, truth: list[GroundTruth]) -> AnalyzeResult | None:
    """The finished analysis recorded in `path` if it is this video's with these settings; None
    (analyse again) for anything else, a damaged or foreign file included."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("kind") != DONE_KIND or data.get("signature") != signature:
            return None
        events = [SpotEvent(**e) for e in data["events"]]
        return AnalyzeResult(events, int(data["frames"]), float(data["fps"]), float(data["video_fps"]),
                             score_spotting(events, truth), [str(w) for w in data["warnings"]], path.parent,
                             int(data["face_frames"]), int(data["spot_frames"]), dict(data["context"]),
                             list(data["curve"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def done_signature(path: Path) -> str | None:
    """The signature a done record holds (None: no readable record)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data["signature"]) if data.get("kind") == DONE_KIND else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


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
    p, r, f = _f1(tp, spotted, truth)
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


def _init_analyze_worker(parent_pid: int) -> None:
    import cv2

    from slstt.data.prepare import die_with_parent

    die_with_parent(parent_pid)
    cv2.setNumThreads(1)  # the workers share the cores; no nested threading


def _run_analyze_pool(tasks: list[_Task], jobs: int, model: str | Path | None, config: Any,
                      on_done: Callable[[int, AnalyzeResult, dict[int, Any] | None], None], progress: bool) -> None:
    """Videos in `jobs` worker processes (spawned: mediapipe and fork do not mix). On Ctrl-C, SIGTERM or
    an error the workers are terminated at once; every finished video keeps its done record, so the
    same command resumes. Workers die with this process (PR_SET_PDEATHSIG and a parent watch)."""
    import functools
    import multiprocessing
    import os
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    context = multiprocessing.get_context("spawn")
    blocked = hasattr(signal, "pthread_sigmask")  # a signal while a worker starts would half-start it
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if blocked else None
    try:
        pool = context.Pool(min(jobs, len(tasks)), initializer=_init_analyze_worker, initargs=(os.getpid(),))
    finally:
        if old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    work = functools.partial(_analyze_task, model=model, config=config)
    try:
        with Progress(TextColumn("analyze"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      disable=not progress) as bar:
            job = bar.add_task("videos", total=len(tasks))
            for index, result, trace in pool.imap_unordered(work, tasks):
                on_done(index, result, trace)
                bar.advance(job)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def analyze_many(items: list[VideoItem], out_dir: str | Path, *, model: str | Path | None = None,
                 config: Any = None, progress: bool = False,
                 on_warning: Callable[[str], None] | None = None, explain: bool = False,
                 resume: bool = True, jobs: int = 1) -> PooledResult:
    """analyze_video on each video (into out_dir/videos/<stem>/), then pooled micro scores (MEGC rule:
    IoU >= 0.5, one-to-one per video), false spots per minute on videos without events, recall per
    amplitude / region / context of the ground truth, the regions that fired, a table and a plot.
    explain: also say why each missed micro event was missed (explain.csv; slstt.realtime.explain),
    with its lift over the control when the control of an injected copy is among the videos.
    resume: a video whose videos/<stem>/done.json says it was analysed from the same video, ground
    truth, settings, model and code is not analysed again (not with explain, which needs its trace).
    jobs > 1: that many videos at once, in worker processes (the same results)."""
    from slstt.realtime import explain as why
    from slstt.realtime.pipeline import LiveConfig

    out = Path(out_dir)
    _make_out_dir(out)
    pool = _Pool()
    controls = {why.control_for(item.video) for item in items} if explain else set()
    runs: dict[Path, tuple[AnalyzeResult, list[GroundTruth], dict[int, Any]]] = {}
    run = run_signature(config or LiveConfig(), model)
    truths = [read_ground_truth(item.truth) for item in items]  # every file checked before any work
    finished: dict[int, tuple[AnalyzeResult, dict[int, Any] | None]] = {}
    tasks = []
    for i, (item, name, truth) in enumerate(zip(items, video_dirs(items), truths, strict=True)):
        task = _Task(i, item.video, item.truth, out / "videos" / name, video_signature(item, run),
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

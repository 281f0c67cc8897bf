"""`slstt analyze VIDEO`: the live pipeline over a file as fast as possible (every frame), events to
JSONL/CSV, a timeline PNG, and with ground truth the MEGC spotting scores (many videos, pooled:
slstt.realtime.pooled):

- spotting: a ground-truth micro interval is found when a spotted MICRO interval overlaps it with
  IoU >= 0.5; each ground-truth interval matches at most one spotted interval and vice versa.
  precision = TP / spotted, recall = TP / ground truth, F1.
- spot-then-recognise: accuracy = correctly spotted events with the right label / correctly spotted
  events; combined = F1 where a TP also needs the right label."""

from __future__ import annotations

import csv
import io
import math
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
    amplitude_crop112: float | None = None  # the same amplitude on the spotter's 112 px face crop


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
        amplitude = _optional_number(path, n, r, "amplitude_px")  # signed for some kinds (a head turn's degrees)
        crop = _optional_number(path, n, r, "amplitude_crop112", nonnegative=True)
        out.append(GroundTruth(r["kind"].strip().lower(), (r.get("label") or "").strip(), onset, apex, offset,
                               (r.get("region") or "").strip(), amplitude, (r.get("context") or "").strip(), crop))
    return out


def _optional_number(path: Path, line: int, row: dict[str, str], column: str, nonnegative: bool = False) -> float | None:
    if row.get(column) in (None, ""):
        return None
    try:
        value = float(row[column])
    except ValueError:
        raise SlsttError(f"{path} line {line}: {column} must be a number") from None
    if nonnegative and not (math.isfinite(value) and value >= 0):
        raise SlsttError(f"{path} line {line}: {column} must be a finite number >= 0, got {row[column]}")
    return value


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


def precision_recall_f1(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
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
    p, r, f = precision_recall_f1(len(matches), len(pred), len(gt))
    scores = SpotScores(len(matches), len(pred), len(gt), p, r, f, matches=matches)
    labelled = [m for m in matches if m["label"] is not None]
    if labelled:
        scores.correct_label = sum(str(m["label"]).lower() == str(m["truth_label"]).lower() for m in labelled)
        scores.label_accuracy = scores.correct_label / len(labelled)
        scores.combined_f1 = precision_recall_f1(scores.correct_label, len(pred), len(gt))[2]
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


def make_out_dir(out: Path) -> None:
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
            make_out_dir(out)
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

"""`slstt analyze VIDEO`: the live pipeline over a file as fast as possible (every frame), events to
JSONL/CSV, a timeline PNG, and with ground truth the MEGC spotting scores:

- spotting: a ground-truth micro interval is found when a spotted MICRO interval overlaps it with
  IoU >= 0.5; each ground-truth interval matches at most one spotted interval and vice versa.
  precision = TP / spotted, recall = TP / ground truth, F1.
- spot-then-recognise: accuracy = correctly spotted events with the right label / correctly spotted
  events; combined = F1 where a TP also needs the right label."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slstt.errors import SlsttError
from slstt.io import atomic_savefig, atomic_write_json
from slstt.realtime.events import EventLog, SpotEvent, write_events_csv


@dataclass
class GroundTruth:
    kind: str
    label: str
    onset: int
    apex: int
    offset: int


def read_ground_truth(path: str | Path) -> list[GroundTruth]:
    """The synth ground-truth CSV: kind,label,onset_frame,apex_frame,offset_frame[,onset_s,...]."""
    path = Path(path)
    if not path.is_file():
        raise SlsttError(f"ground truth not found: {path}; pass the .gt.csv written with the video")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
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
        out.append(GroundTruth(r["kind"].strip().lower(), r["label"].strip(), onset, apex, offset))
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
        scores.correct_label = sum(m["label"].lower() == m["truth_label"].lower() for m in labelled)
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
        ax.plot(arr[:, 0], arr[:, 1], lw=0.8, color="tab:blue", label="motion score")
        ax.plot(arr[:, 0], arr[:, 2], lw=0.8, color="tab:orange", label="threshold")
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
    ax.set_ylabel("px (face crop)")
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
    out_dir: Path


def _make_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SlsttError(f"--out {out} is a file; pass a folder (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlsttError(f"cannot create the output folder {out}: {exc.strerror or exc}; "
                         "pass a folder path you can write to") from None


def analyze_video(video: str | Path, out_dir: str | Path, *, model: str | Path | None = None,
                  ground_truth: str | Path | None = None, config: Any = None,
                  record: str | Path | None = None, progress: bool = False,
                  on_warning: Any = None) -> AnalyzeResult:
    """Run the pipeline over every frame of `video`; write events.jsonl, events.csv, timeline.png
    (and summary.json) into out_dir; score against the ground truth when given."""
    from slstt.realtime.capture import VideoSource
    from slstt.realtime.pipeline import LiveConfig, LivePipeline

    truth = read_ground_truth(ground_truth) if ground_truth else None
    source = VideoSource(str(video), threaded=False)  # a bad video fails before any folder is made
    out = Path(out_dir)
    pipe = log = writer = bar = None
    try:
        _make_out_dir(out)
        pipe = LivePipeline(config or LiveConfig(), model=model, on_warning=on_warning)
        log = EventLog(out / "events.jsonl")
        if record:
            from slstt.realtime.overlay import open_writer

            writer = open_writer(Path(record), source.fps, (source.width, source.height))
        if progress:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task(f"analyze {Path(video).name}", total=source.frame_count)
        t0 = time.perf_counter()
        for frame in source.frames():
            for event in pipe.process(frame.image, frame.t, frame.index):
                log.write(event)
            if writer is not None:
                from slstt.realtime.overlay import render

                writer.write(render(frame.image, pipe))
            if bar is not None:
                bar.advance(task)
        for event in pipe.finish():
            log.write(event)
        wall = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.stop()
        if log is not None:
            log.close()
        if writer is not None:
            writer.release()
        source.close()
        if pipe is not None:
            pipe.close()
    if pipe.stats.frames and not pipe.stats.face_frames:
        message = (f"no face found in any of the {pipe.stats.frames} frames of {video}; spotting needs a "
                   "visible, frontal face")
        pipe.warnings.append(message)
        if on_warning is not None:
            on_warning(message)
    events = sorted(log.events, key=lambda e: e.onset_frame)
    write_events_csv(out / "events.csv", events)
    scores = score_spotting(events, truth) if truth is not None else None
    plot_timeline(out / "timeline.png", pipe.history, events, truth, source.fps, Path(video).name)
    frames = pipe.stats.frames
    result = AnalyzeResult(events, frames, frames / wall if wall > 0 else 0.0, source.fps, scores,
                           list(pipe.warnings), out)
    atomic_write_json(out / "summary.json", {
        "video": str(video), "frames": frames, "video_fps": source.fps, "processing_fps": round(result.fps, 1),
        "face_frames": pipe.stats.face_frames, "events": len(events),
        "micro": sum(e.kind == "micro" for e in events), "macro": sum(e.kind == "macro" for e in events),
        "model": str(model) if model else None, "warnings": result.warnings,
        "scores": scores.to_dict() if scores else None,
    })
    return result


def summary_lines(result: AnalyzeResult) -> list[str]:
    lines = [f"{result.frames} frames at {result.fps:.0f} fps: {len(result.events)} events "
             f"({sum(e.kind == 'micro' for e in result.events)} micro, "
             f"{sum(e.kind == 'macro' for e in result.events)} macro) -> {result.out_dir}"]
    s = result.scores
    if s is not None:
        lines.append(f"spotting (IoU >= 0.5, micro): precision {s.precision:.3f}  recall {s.recall:.3f}  "
                     f"F1 {s.f1:.3f}  ({s.tp} of {s.truth} found, {s.spotted} spotted)")
        if s.label_accuracy is not None:
            lines.append(f"spot-then-recognise: {s.correct_label}/{s.tp} correctly spotted events have the right "
                         f"label (accuracy {s.label_accuracy:.3f}); combined F1 {s.combined_f1:.3f}")
    return lines

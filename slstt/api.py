"""The Python API: the detector, training and export from your own code. The CLI commands are
thin wrappers over the same functions, so both behave identically (checks, files, messages).

    import slstt

    detector = slstt.Detector("model.onnx")            # model=None: spotting only
    for event in detector.stream(0):                   # camera index, video file or stream URL
        print(event.kind, event.onset_s, event.offset_s, event.region, event.label)
    result = detector.analyze("clip.mp4", out="analysis", ground_truth="clip.gt.csv")
    results = slstt.Detector(sweep_k=(2, 3, 5)).spot_long("casme_sq", "CASME_sq/", out="spot_long")

    run = slstt.train("data/manifest.csv", dataset="manifest", out="runs/x", epochs=40)
    print(run.pooled, run.checkpoints)
    slstt.export(run.checkpoints[0], "model.onnx", dtype="fp32")

Imported lazily by `import slstt` (`slstt.Detector` ...): nothing heavy loads until used."""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slstt.errors import SlsttError

if TYPE_CHECKING:
    from slstt.card import ModelCard
    from slstt.export.onnx import ExportReport
    from slstt.realtime.analyze import AnalyzeResult
    from slstt.realtime.events import SpotEvent
    from slstt.realtime.pipeline import LiveConfig
    from slstt.realtime.pooled import PooledResult
    from slstt.realtime.sinks import Sink

PathLike = str | Path


# --- detector ------------------------------------------------------------------------------------
class Detector:
    """Spot micro-expressions (and recognise them with an exported model) in streams and files.

    model: an .onnx file from `slstt export onnx` (or `slstt.export`); None = spotting only.
    device: auto | tensorrt | cuda | cpu (recognition). Spotter options: calibrate (s),
    threshold_k, min_micro_ms, max_micro_ms, landmark_every, face_model, and any other
    `slstt.realtime.spotting.SpotterConfig` field; sweep_k=(2, 3, 5): analyze with ground truth also
    scores those threshold_k values in the same pass (AnalyzeResult.curve / PooledResult.curve,
    operating_curve.csv; spot_long: the MEGC curve and a leave-one-subject-out k). Checked at once,
    one line for a bad value."""

    def __init__(self, model: PathLike | None = None, device: str = "auto", *, calibrate: float = 0.0,
                 threshold_k: float | None = None, min_micro_ms: float | None = None,
                 max_micro_ms: float | None = None, landmark_every: int = 3, face_model: PathLike | None = None,
                 **spotter: Any) -> None:
        from slstt.realtime.pipeline import live_config

        self.model = Path(model) if model is not None else None
        if self.model is not None and not self.model.is_file():
            raise SlsttError(f"model not found: {self.model}; export one with `slstt export onnx` or slstt.export()")
        self.face_model = Path(face_model) if face_model is not None else None
        self.config: LiveConfig = live_config(
            threshold_k=threshold_k, min_micro_ms=min_micro_ms, max_micro_ms=max_micro_ms, calibrate=calibrate,
            landmark_every=landmark_every, face_model=self.face_model, device=device, **spotter)

    def stream(self, source: int | PathLike, *, realtime: bool = False, max_seconds: float | None = None,
               sinks: Sequence[Sink] = (), on_warning: Callable[[str], None] | None = None) -> Iterator[SpotEvent]:
        """Events (slstt.realtime.events.SpotEvent: kind, onset_s, apex_s, offset_s, region, regions,
        label, probabilities, ...) as they finish. `source`: camera index, video file or stream URL.
        Files are read frame by frame as fast as possible (realtime=True: at their own frame rate,
        like a camera). `sinks`: extra outputs (slstt.realtime.sinks: EventsFileSink, RecorderSink,
        WindowSink, CallbackSink, or your own Sink). Stop early by leaving the loop."""
        from slstt.realtime.capture import VideoSource, resolve_source
        from slstt.realtime.pipeline import LivePipeline
        from slstt.realtime.runner import StreamRunner

        spec = resolve_source(camera=source) if isinstance(source, int) else resolve_source(source=str(source))
        is_file = isinstance(spec, str) and "://" not in spec
        video = VideoSource(spec, threaded=None if realtime or not is_file else False, pace=realtime,
                            buffer_s=self.config.buffer_s, on_message=on_warning)
        pipe = None
        try:
            # a stream has no ground truth to score a sweep against: no followers
            pipe = LivePipeline(dataclasses.replace(self.config, sweep_k=()), model=self.model, on_warning=on_warning)
            yield from StreamRunner(video, pipe, sinks, max_seconds=max_seconds).events()
        finally:
            video.close()
            if pipe is not None:
                pipe.close()

    def analyze(self, video: PathLike, out: PathLike | None = None, ground_truth: PathLike | None = None, *,
                record: PathLike | None = None, overwrite: bool = False, progress: bool = False,
                on_warning: Callable[[str], None] | None = None, explain: bool = False,
                jobs: int = 1) -> AnalyzeResult | PooledResult:
        """`slstt analyze`: every frame of a video; with `out` the files (events.jsonl/csv,
        timeline.png, summary.json), with `ground_truth` the MEGC spotting scores. A folder (videos with
        <stem>.gt.csv) or a CSV list (video,ground_truth) gives pooled scores (needs `out`); with
        explain=True also why each missed micro event was missed (PooledResult.explained, explain.csv);
        jobs=N analyses N videos at once in worker processes. The same call again resumes a pooled run."""
        video = Path(video)
        if video.is_dir() or video.suffix.lower() == ".csv":
            if out is None:
                raise SlsttError(f"{video}: many videos write per-video results; pass out=FOLDER")
            return analyze_many(video, Path(out), model=self.model, config=self.config, overwrite=overwrite,
                                face_model=self.face_model, progress=progress, on_warning=on_warning,
                                explain=explain, jobs=jobs)
        if explain:
            raise SlsttError(f"{video}: explain=True needs a folder or CSV list of videos with ground truth "
                             "(slstt.realtime.explain.explain_video explains one video)")
        return analyze_one(video, Path(out) if out is not None else None, model=self.model,
                           ground_truth=Path(ground_truth) if ground_truth else None, config=self.config,
                           record=Path(record) if record else None, overwrite=overwrite,
                           face_model=self.face_model, progress=progress, on_warning=on_warning)

    def spot_long(self, dataset: str, data_root: PathLike, out: PathLike = "spot_long", *,
                  annotations: PathLike | None = None, videos: str | None = None, max_side: int = 640,
                  frame_step: int = 1, select_by: str = "overall", overwrite: bool = False, progress: bool = False,
                  on_warning: Callable[[str], None] | None = None) -> dict[str, Any]:
        """`slstt spot-long`: every long video of a MEGC data set (casme_sq | samm_lv) through this
        detector's spotter, scored by the MEGC rule beside the MEGC 2020 baseline; returns
        results.json's content (score, baseline; with sweep_k also operating_curve and
        subject_choice: the leave-one-subject-out threshold_k). Spotting only: the model is not used.
        The same call again resumes (finished videos are kept in out/videos)."""
        from slstt.realtime.megc import spot_long

        _, results = spot_long(dataset, Path(data_root), self.config, Path(out),
                               annotations=Path(annotations) if annotations else None, videos=videos,
                               max_side=max_side, frame_step=frame_step, select_by=select_by, overwrite=overwrite,
                               progress=progress, on_warning=on_warning)
        return results


def analyze_one(video: Path, out: Path | None, *, model: Path | None, ground_truth: Path | None, config: Any,
                record: Path | None, overwrite: bool, face_model: Path | None, progress: bool = False,
                on_warning: Callable[[str], None] | None = None) -> AnalyzeResult:
    """One video (`slstt analyze VIDEO` and Detector.analyze): outputs checked, then analyze_video."""
    from slstt.realtime.analyze import analyze_video, check_analyze_outputs, check_record_name, file_inputs
    from slstt.realtime.capture import resolve_source

    resolve_source(video=str(video))
    inputs = file_inputs(video, model, ground_truth, face_model)
    if out is not None:
        check_analyze_outputs(out, record=record, inputs=inputs, overwrite=overwrite)
    elif record is not None:
        from slstt.io import check_output

        check_output(record, inputs=inputs, overwrite=overwrite, what="record file")
        check_record_name(record)
    return analyze_video(video, out, model=model, ground_truth=ground_truth, config=config, record=record,
                         progress=progress, on_warning=on_warning)


def analyze_many(spec: Path, out: Path, *, model: Path | None, config: Any, overwrite: bool,
                 face_model: Path | None, progress: bool = False,
                 on_warning: Callable[[str], None] | None = None, explain: bool = False, jobs: int = 1) -> PooledResult:
    """Many videos (`slstt analyze DIR|LIST.csv`): outputs checked, then pooled scores."""
    from slstt.errors import check_int
    from slstt.realtime import analyze, pooled

    check_int("--jobs", jobs, 1, MAX_JOBS)

    items = pooled.collect_videos(spec)
    inputs = analyze.file_inputs(model, face_model, spec if spec.is_file() else None,
                                 *[p for item in items for p in (item.video, item.truth)])
    # the same command again continues (or repeats for free) the run in --out: allowed without --overwrite
    signatures = pooled.video_signatures(items, config, model)  # once: they hash every video
    resuming = not overwrite and not explain and pooled.same_run(out, items, signatures)
    analyze.check_analyze_outputs(out, record=None, inputs=inputs, overwrite=overwrite or resuming,
                                  names=tuple(n for n in pooled.POOLED_OUTPUTS if n != "videos"),
                                  folders=("videos",))
    return pooled.analyze_many(items, out, model=model, config=config, progress=progress, on_warning=on_warning,
                               explain=explain, resume=not overwrite, jobs=jobs, signatures=signatures)


MAX_JOBS = 64  # worker processes of a pooled analysis (each holds a face tracker, ~200 MB)


# --- training ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """A finished `slstt train` run: its folder, pooled metrics (LOSO) and checkpoints."""

    run_dir: Path
    pooled: dict[str, Any] | None  # accuracy, uf1, uar, n (None for protocol "all")
    results: dict[str, Any] = field(default_factory=dict)  # results.json
    checkpoints: list[Path] = field(default_factory=list)  # fold_*/checkpoint.pt

    def card(self, fold: str | None = None) -> ModelCard:
        """The model card (slstt.card.ModelCard: labels, recipe, serving frame rate, provenance) of the
        checkpoint of `fold` (a test subject, or "all" for --protocol all; default: the run's first),
        read from the file without building the model: what `slstt export onnx` puts into the .onnx."""
        from slstt.models.checkpoint import checkpoint_card
        from slstt.training.loso import fold_dir_name, subject_from_fold_dir

        if fold is None:
            if not self.checkpoints:
                raise SlsttError(f"{self.run_dir}: no finished fold (fold_*/checkpoint.pt); train the run first")
            return checkpoint_card(self.checkpoints[0])
        path = self.run_dir / fold_dir_name(fold) / "checkpoint.pt"
        if not path.is_file():
            folds = ", ".join(subject_from_fold_dir(p.parent.name) for p in self.checkpoints) or "none"
            raise SlsttError(f"{self.run_dir}: no checkpoint for fold {fold!r} (finished folds: {folds})")
        return checkpoint_card(path)


def _train_options() -> dict[str, tuple[Any, Any]]:
    """train_command's parameters: name -> (type, the CLI's default)."""
    from slstt.training.cli import train_command

    hints = typing.get_type_hints(train_command)
    out = {}
    for name, param in inspect.signature(train_command).parameters.items():
        default = param.default
        out[name] = (hints.get(name), getattr(default, "default", default))
    return out


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Paths as the CLI would parse them (typer gives the command Path objects)."""
    if value is None:
        return None
    if kind is Path or (typing.get_origin(kind) in (typing.Union, types.UnionType) and Path in typing.get_args(kind)):
        return Path(value)
    if name == "fold" and isinstance(value, str):
        return [value]
    return value


def train(data_root: PathLike, *, dataset: str = "manifest", out: PathLike = "runs/train", **options: Any
          ) -> TrainResult:
    """`slstt train` from Python: the same command function with the same defaults and checks; every
    CLI option is a keyword (--lstm-hidden -> lstm_hidden, --no-pretrained -> pretrained=False,
    --fold S -> fold=["S"]). Returns the run folder, pooled metrics and checkpoints."""
    from slstt.training.cli import train_command

    known = _train_options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SlsttError(f"slstt.train: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    given = {"data_root": data_root, "dataset": dataset, "out": out, **options}
    kwargs = {name: _coerce(name, kind, given.get(name, default)) for name, (kind, default) in known.items()}
    if ... in kwargs.values():  # a required CLI option without a default
        missing = [n for n, v in kwargs.items() if v is ...]
        raise SlsttError(f"slstt.train: missing {', '.join(missing)}")
    train_command(**kwargs)
    return read_run(Path(out))


def read_run(run_dir: PathLike) -> TrainResult:
    """The TrainResult of a finished run folder."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    return TrainResult(run_dir, results.get("pooled"), results, sorted(run_dir.glob("fold_*/checkpoint.pt")))


# --- export --------------------------------------------------------------------------------------
def export(checkpoint: PathLike, output: PathLike | None = None, *, dtype: str = "fp32", split: bool = False,
           opset: int = 17, dynamic_time: bool = True, parity: bool = True, aggregator: str = "auto",
           console: Any = None) -> ExportReport:
    """`slstt export onnx` from Python (the same function): checkpoint -> one .onnx with its model
    card in the metadata; output defaults to the checkpoint's stem + .onnx. Returns the report
    (outputs, parity checks, metadata)."""
    from slstt.export.onnx import export_checkpoint

    return export_checkpoint(checkpoint, output, dtype=dtype, split=split, opset=opset, dynamic_time=dynamic_time,
                             parity=parity, aggregator=aggregator, console=console)


def load_card(model: PathLike) -> ModelCard:
    """The validated model card (slstt.card.ModelCard) of an exported .onnx file."""
    from slstt.export.metadata import read_card

    return read_card(model)

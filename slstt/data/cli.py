"""`slstt prepare` and `slstt data check`. Only typer/stdlib at import time; the option constants
and the two builders below are shared with `slstt train` so both take the same data options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from slstt.config import PreprocessConfig
    from slstt.data.samples import DatasetTable

# Data options.
DATASET_OPTION = typer.Option(..., "--dataset", "-d", help="casme2 | samm | smic | megc2019 | manifest")
DATA_ROOT_OPTION = typer.Option(..., "--data-root", help="Folder holding the data set as released (or the manifest CSV).")
ANNOTATIONS_OPTION = typer.Option(None, "--annotations", help="Annotation file (found in --data-root when omitted).")
SCHEME_OPTION = typer.Option(None, "--scheme", help="Class scheme: casme2-5 | samm-5 | smic-3 | megc-3 (data set default).")
FACE_MODEL_OPTION = typer.Option(None, "--face-model", help="MediaPipe face_landmarker.task (packaged one by default).")
CACHE_DIR_OPTION = typer.Option(Path("slstt_cache"), "--cache-dir", help="Prepared flow images cache.")
# Preprocessing options (defaults = the paper's recipe, see PreprocessConfig).
CROP_OPTION = typer.Option("slstt", "--crop", help="slstt (paper) | aligned")
FLOW_OPTION = typer.Option("farneback", "--flow", help="farneback (paper) | dis | tvl1")
ENCODING_OPTION = typer.Option("hsv", "--encoding", help="hsv (paper) | uvm")
FRAMES_OPTION = typer.Option(11, "--frames", "-T", help="Frames per sample (T).")
INPUT_SIZE_OPTION = typer.Option(384, "--input-size", help="Network input side in pixels.")
FPS_OPTION = typer.Option(None, "--fps", help="Resample every clip to this frame rate first (e.g. 30 for webcams).")
APEX_POLICY_OPTION = typer.Option("middle", "--apex-policy", help="Clips without an apex: middle | flow")
FLOW_SIZE_OPTION = typer.Option(None, "--flow-size", help="Resize face crops to this side before the flow "
                                "(comparable flow for any face size; default: native crop, as the paper).")


def build_preprocess_config(crop: str = "slstt", flow: str = "farneback", encoding: str = "hsv", frames: int = 11,
                            input_size: int = 384, fps: float | None = None,
                            apex_policy: str = "middle", flow_size: int | None = None) -> PreprocessConfig:
    from slstt.config import PreprocessConfig

    return PreprocessConfig(crop=crop, flow=flow, encoding=encoding, num_frames=frames, input_size=input_size,
                            fps=fps, apex_policy=apex_policy, flow_size=flow_size)


def check_output_dir(path: Path, option: str) -> None:
    """SlsttError (one line) unless `path` is a writable folder or can be created as one; checked
    before any data work, so a typo fails at once instead of after a long prepare step."""
    import os

    from slstt.errors import SlsttError

    if path.exists() and not path.is_dir():
        raise SlsttError(f"{option} {path} is a file, not a folder; pass a folder path")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SlsttError(f"{option} {path}: {existing} is a file, so the folder cannot be created; pass another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SlsttError(f"{option} {path}: {existing} is not writable; pass a folder you can write to")


def check_input_file(path: Path | None, option: str, what: str) -> None:
    from slstt.errors import SlsttError

    if path is not None and not path.is_file():
        raise SlsttError(f"{option} {path}: no such file; pass an existing {what}")


def load_table(dataset: str, data_root: Path, annotations: Path | None = None,
               scheme: str | None = None) -> DatasetTable:
    """The sample table; SlsttError (one line) when the layout gives no usable sample."""
    from slstt.data.adapters import load_dataset
    from slstt.errors import SlsttError

    table = load_dataset(dataset, data_root, annotations, scheme)
    if not table.samples:
        kinds = ", ".join(f"{k} {n}" for k, n in table.problem_counts().items()) or "no annotation rows"
        raise SlsttError(f"{dataset}: zero usable samples under {data_root} ({kinds}); run `slstt data check` "
                         f"with the same options to see why")
    return table


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` flushes before the exit."""


@contextmanager
def signals_to_exit_codes(kept: str) -> Iterator[None]:
    """Ctrl-C -> exit 130, SIGTERM -> exit 143 (what a shell or a supervisor expects), each after
    every `finally` inside ran (workers stopped, files flushed); `kept` says what a re-run resumes from."""
    import signal
    import threading

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break the flush
        raise Terminated()

    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except Terminated:
        typer.echo(f"terminated: {kept}; re-run to resume", err=True)
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {kept}; re-run to resume", err=True)
        raise typer.Exit(130) from None
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def prepare_command(
    dataset: str = DATASET_OPTION,
    data_root: Path = DATA_ROOT_OPTION,
    annotations: Optional[Path] = ANNOTATIONS_OPTION,  # noqa: UP045 (typer needs Optional on py3.10)
    scheme: Optional[str] = SCHEME_OPTION,  # noqa: UP045
    cache_dir: Path = CACHE_DIR_OPTION,
    workers: int = typer.Option(2, "--workers", help="Worker processes (0: in this process)."),
    face_model: Optional[Path] = FACE_MODEL_OPTION,  # noqa: UP045
    crop: str = CROP_OPTION,
    flow: str = FLOW_OPTION,
    encoding: str = ENCODING_OPTION,
    frames: int = FRAMES_OPTION,
    input_size: int = INPUT_SIZE_OPTION,
    fps: Optional[float] = FPS_OPTION,  # noqa: UP045
    apex_policy: str = APEX_POLICY_OPTION,
    flow_size: Optional[int] = FLOW_SIZE_OPTION,  # noqa: UP045
) -> None:
    """Crop faces, compute long-term optical flow and cache the encoded flow images."""
    from slstt.data.prepare import face_model_sha, prepare_samples
    from slstt.errors import SlsttError

    check_output_dir(cache_dir, "--cache-dir")  # before reading any data
    check_input_file(face_model, "--face-model", "MediaPipe face_landmarker.task (or leave it out)")
    face_model_sha(face_model)
    cfg = build_preprocess_config(crop, flow, encoding, frames, input_size, fps, apex_policy, flow_size)
    table = load_table(dataset, data_root, annotations, scheme)
    for kind, count in table.problem_counts().items():
        typer.echo(f"warning: {count} sample(s) skipped: {kind} (see `slstt data check`)", err=True)
    with signals_to_exit_codes(f"workers stopped, finished samples are kept in {cache_dir}"):
        report = prepare_samples(table.samples, cfg, cache_dir, workers=workers, face_model=face_model)
    typer.echo(f"prepared {report.done}, reused {report.reused}, failed {len(report.failed)} -> {report.cache_dir}")
    for key, message in report.failed[:5]:
        typer.echo(f"failed: {key}: {message}", err=True)
    if report.done + report.reused == 0:
        raise SlsttError(f"no sample could be prepared; see {report.cache_dir / 'failures.json'}")


data_app = typer.Typer(help="Inspect data sets (slstt data check).", no_args_is_help=True)


@data_app.command("check")
def check_command(
    dataset: str = typer.Option(..., "--dataset", "-d", help="casme2 | samm | smic | megc2019 | manifest, or the MEGC "
                                "long videos casme_sq (CAS(ME)^2) | samm_lv (SAMM Long Videos)"),
    data_root: Path = DATA_ROOT_OPTION,
    annotations: Optional[Path] = ANNOTATIONS_OPTION,  # noqa: UP045
    scheme: Optional[str] = SCHEME_OPTION,  # noqa: UP045
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Also report the prepare cache (faces not found)."),  # noqa: UP045
) -> None:
    """Counts per class, subject and data set; skipped samples by kind; faces not found. Exit 1 on problems.
    Long videos (casme_sq, samm_lv): videos, subjects, micro/macro intervals, frames, missing frames, problems."""
    from slstt.data.adapters import load_dataset
    from slstt.data.check import check_dataset, check_long_videos, print_long_report, print_report
    from slstt.data.longvideo import LONG_DATASETS, load_long_videos

    if dataset.lower() in LONG_DATASETS:  # MEGC long videos: intervals, not clips
        long_report = check_long_videos(load_long_videos(dataset, data_root, annotations))
        print_long_report(long_report)
        lines = long_report.error_lines()
    else:
        report = check_dataset(load_dataset(dataset, data_root, annotations, scheme), cache_dir)
        print_report(report)
        lines = report.error_lines()
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    if lines:
        raise typer.Exit(1)

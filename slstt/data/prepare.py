"""`slstt prepare`: every sample's T flow images, computed once and cached.

Layout: cache_dir/<key>/<dataset>/<subject>/<clip>.npz (images uint8 (T,S,S,3), box, positions,
apex, signature) + config.json + failures.json. key = cfg.cache_key(), plus "-<sha256[:8]>" of the
face model file when it is not the packaged one (other landmarks -> other crops -> other images;
the packaged model keeps the plain key, so existing caches stay valid). Files are written
atomically, so an interrupted run resumes; another preprocessing config or face model has another
key, so stale files are never read; the signature (annotated frame numbers) catches a clip
re-annotated under the same key; a damaged file (truncated, empty) is recomputed.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slstt.config import PreprocessConfig
from slstt.data.samples import Sample
from slstt.errors import SlsttError, first_line
from slstt.io import atomic_write, atomic_write_json


@dataclass
class PrepareReport:
    done: int  # computed in this run
    reused: int  # complete files found in the cache
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sample key, message)
    cache_dir: Path = Path()  # cache_dir/<key>


def face_model_sha(face_model: str | Path | None) -> str | None:
    """SHA-256 of a non-packaged face model file; None for the packaged one (or None)."""
    if face_model is None or str(face_model) == "":
        return None
    from slstt.preprocess.face import FACE_MODEL_SHA256
    from slstt.provenance import file_sha256

    path = Path(face_model)
    if not path.is_file():
        raise SlsttError(f"--face-model {path}: no such file; pass a MediaPipe face_landmarker.task or leave it out")
    digest = file_sha256(path)
    return None if digest == FACE_MODEL_SHA256 else digest


def cache_key(cfg: PreprocessConfig, face_sha: str | None = None) -> str:
    """Folder name of a prepared set: the preprocessing config, plus the face model when not packaged."""
    return cfg.cache_key() + (f"-{face_sha[:8]}" if face_sha else "")


def prepared_path(cache_dir: str | Path, cfg: PreprocessConfig, sample: Sample, face_sha: str | None = None) -> Path:
    return Path(cache_dir) / cache_key(cfg, face_sha) / f"{sample.key}.npz"


def sample_signature(sample: Sample) -> str:
    """What the annotations say about the clip; a changed annotation invalidates its file."""
    apex = "" if sample.apex is None else sample.frame_numbers[sample.apex]
    return f"{sample.frame_numbers[sample.onset]}:{apex}:{sample.frame_numbers[sample.offset]}:{sample.fps:g}"


def _read(path: Path, sample: Sample) -> np.ndarray | None:
    """The cached images when the file is complete and made for these annotations, else None."""
    try:
        with np.load(path) as data:
            if str(data["signature"]) != sample_signature(sample):
                return None
            return data["images"]
    # A damaged file (killed copy, full disk): truncated -> BadZipFile, empty -> EOFError, a bad
    # member -> zlib.error. It is treated as missing and recomputed.
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None


def load_prepared(cache_dir: str | Path, cfg: PreprocessConfig, sample: Sample,
                  face_sha: str | None = None) -> np.ndarray:
    """(T, S, S, 3) uint8 flow images of a prepared sample."""
    path = prepared_path(cache_dir, cfg, sample, face_sha)
    images = _read(path, sample) if path.is_file() else None
    if images is not None:
        return images
    failure = read_failures(cache_dir, cfg, face_sha).get(sample.key)
    if failure:
        raise SlsttError(f"{sample.key} could not be prepared ({failure}); leave it out or fix its frames")
    what = "missing" if not path.is_file() else "damaged or made for other annotations"
    raise SlsttError(f"prepared flow images of {sample.key} {what} in {path.parent.parent}; run `slstt prepare` "
                     f"with the same data, preprocessing options and face model (cache key {cache_key(cfg, face_sha)})")


def read_failures(cache_dir: str | Path, cfg: PreprocessConfig, face_sha: str | None = None) -> dict[str, str]:
    path = Path(cache_dir) / cache_key(cfg, face_sha) / "failures.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# ---------------------------------------------------------------- one sample (in a worker or in-process)

_landmarker = None  # one FaceLandmarker per worker process
_init_error: str | None = None  # why this worker has no landmarker (each of its samples fails with it)


def _init_worker(face_model: str | None, threads: int | None, in_worker: bool = False) -> None:
    global _landmarker, _init_error
    import cv2

    from slstt.preprocess.face import FaceLandmarker

    if threads is not None:
        cv2.setNumThreads(threads)  # worker processes share the cores; no nested threading
    if not in_worker:
        _landmarker = FaceLandmarker(face_model)
        return
    try:  # a worker whose initializer raises breaks the pool with no reason given: each sample says it
        _landmarker = FaceLandmarker(face_model)
    except Exception as exc:  # noqa: BLE001
        _init_error = f"face model could not be loaded in a worker: {first_line(exc, 300)}"


def _close_worker() -> None:
    global _landmarker
    if _landmarker is not None:
        _landmarker.close()
        _landmarker = None


def _prepare_one(sample: Sample, cfg_dict: dict, path: str) -> tuple[str, str | None]:
    """(key, None) when written, (key, message) when the sample failed."""
    import cv2

    from slstt.preprocess.pipeline import clip_to_flow_images

    if _init_error is not None:
        return sample.key, _init_error
    cfg = PreprocessConfig.from_dict(cfg_dict)
    try:
        clip = clip_to_flow_images(sample.load_frame, len(sample.frames), sample.onset, sample.apex, sample.offset,
                                   cfg, _landmarker, fps=sample.fps, where=sample.key)
    except (SlsttError, cv2.error) as exc:  # NoFaceError, unreadable frame, too-short clip
        return sample.key, first_line(exc, 400)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=clip.images, box=json.dumps(clip.box.to_dict()),
                                positions=np.asarray(clip.positions, np.float32), apex=clip.apex,
                                signature=sample_signature(sample))

    atomic_write(path, write)
    return sample.key, None


# ---------------------------------------------------------------- the run

def prepare_samples(samples: list[Sample], cfg: PreprocessConfig, cache_dir: str | Path, workers: int = 2,
                    face_model: str | Path | None = None, progress: bool = True) -> PrepareReport:
    """Compute and cache the flow images of every sample not already cached (workers=0/1: in-process)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    face_sha = face_model_sha(face_model)
    folder = Path(cache_dir) / cache_key(cfg, face_sha)
    if not (folder / "config.json").is_file():
        cfg.save(folder / "config.json")
    todo, reused = [], 0
    for sample in samples:
        path = prepared_path(cache_dir, cfg, sample, face_sha)
        if path.is_file() and _read(path, sample) is not None:
            reused += 1
        else:
            todo.append((sample, str(path)))
    failures = read_failures(cache_dir, cfg, face_sha)
    report = PrepareReport(done=0, reused=reused, cache_dir=folder)
    model = str(face_model) if face_model else None
    columns = (TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())

    def record(key: str, message: str | None) -> None:
        if message is None:
            report.done += 1
            failures.pop(key, None)
        else:
            report.failed.append((key, message))
            failures[key] = message

    try:
        with Progress(*columns, disable=not progress or not todo) as bar:
            task = bar.add_task("prepare", total=len(todo))
            if workers <= 1:
                _init_worker(model, None)
                try:
                    for sample, out_path in todo:
                        record(*_prepare_one(sample, cfg.to_dict(), out_path))
                        bar.advance(task)
                finally:
                    _close_worker()
            elif todo:
                _run_pool(todo, cfg, model, workers, record, lambda: bar.advance(task))
    finally:  # also after Ctrl-C / SIGTERM: what was written stays valid, failures are kept
        atomic_write_json(folder / "failures.json", dict(sorted(failures.items())))
    return report


def _run_pool(todo: list[tuple[Sample, str]], cfg: PreprocessConfig, model: str | None, workers: int,
              record: Callable[[str, str | None], None], advance: Callable[[], None]) -> None:
    """Samples in worker processes (slstt.workers: spawned, dying with this process, stopped at once
    on Ctrl-C, SIGTERM or an error, queued samples dropped; a dead worker is one line). Every
    finished file is already in the cache, so a re-run resumes."""
    from slstt.workers import run_in_workers

    def finished(result: tuple[str, str | None]) -> None:
        record(*result)
        advance()

    run_in_workers(_prepare_one, [(sample, cfg.to_dict(), path) for sample, path in todo], workers, finished,
                   what="prepare --workers", initializer=_init_worker, initargs=(model, 1, True))

"""Run LOSO folds as Ray tasks (one task per fold), on one machine or a cluster.

A fold is `fold_fn(job: FoldJob) -> done` (slstt.training.executors): a pure function of the
config, the test subject and the paths of shared inputs, which writes `run_dir/fold_<s>/`
atomically with `done.json` last. This executor ships that job to a Ray worker unchanged, so
resume, reports and export read the same run directory whatever ran the folds.

Two ways of moving files, chosen once per run (`shared_fs=None` probes every node):
- shared filesystem (one machine, or NFS at the same path): workers read the inputs and write
  their fold directory in place, exactly as LocalExecutor does;
- no shared filesystem: the driver packs the shared inputs (sample table, frozen-feature cache,
  or the prepared flow images when there is no feature cache) into ONE deterministic tar, puts
  it in the object store ONCE (or stages it under `shared_dir`, a path every node sees), and
  each node unpacks it once. The worker trains into a private temp dir and returns the fold's
  files as bytes; the driver writes them into run_dir atomically, done.json last.

A worker that dies mid-fold (OOM, pre-emption, a lost node) is retried `max_retries` times by
Ray; a half-written fold never looks finished because done.json is written last.
Ray is imported only when a RayExecutor is built (`pip install "slstt[ray]"`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slstt.errors import SlsttError, first_line
from slstt.io import atomic_write_bytes
from slstt.training.executors import FoldFn, FoldJob

if TYPE_CHECKING:  # ray is optional and imported only when used
    from ray import ObjectRef

INSTALL_HINT = 'Ray is not installed: pip install "slstt[ray]"'
CACHE_KEY = "cache"  # bundle folder holding prepared flow images (used when there is no feature cache)
# Exceptions worth a retry besides a dead worker (which Ray always retries): flaky disks, NFS, network.
TRANSIENT = (OSError,)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SlsttError(INSTALL_HINT) from None
    if ray is None:  # sys.modules['ray'] = None also means "not installed"
        raise SlsttError(INSTALL_HINT)
    return ray


@dataclass(frozen=True)
class InputBundle:
    """The shared inputs as one tar, addressed by its sha-256 (same inputs -> same digest)."""

    digest: str
    ref: list[ObjectRef[bytes]] | None = None  # [ObjectRef] boxed so Ray does not fetch it before we know we need it
    staged_dir: str | None = None  # already unpacked where every node can read it (shared_dir)


class RayExecutor:
    """Folds as Ray tasks. address: None starts a private local Ray instance (or uses the one
    this process already started); 'auto' joins the cluster of `ray start`; 'ray://host:10001'
    connects a Ray client. Fractional gpus_per_fold packs several folds on one GPU."""

    def __init__(self, address: str | None = None, gpus_per_fold: float = 0.0, cpus_per_fold: float = 1,
                 max_retries: int = 2, shared_dir: str | os.PathLike | None = None,
                 shared_fs: bool | None = None, num_cpus: int | None = None) -> None:
        self.ray = import_ray()
        if gpus_per_fold < 0 or cpus_per_fold <= 0:
            raise SlsttError(f"--gpus-per-fold must be >= 0 and cpus per fold > 0, got {gpus_per_fold}, {cpus_per_fold}")
        if max_retries < 0:
            raise SlsttError(f"max_retries must be >= 0, got {max_retries}")
        self.address, self.gpus_per_fold, self.cpus_per_fold = address, float(gpus_per_fold), cpus_per_fold
        self.max_retries = max_retries
        self.shared_dir = str(shared_dir) if shared_dir else None
        self.shared_fs = shared_fs  # None: probe every node once per run
        self.num_cpus = num_cpus  # only for a local instance started here
        self.started_here = False
        self.last_mode: str | None = None  # "shared-fs" | "object-store" | "shared-dir", for logs and tests

    # ---- cluster ------------------------------------------------------------------------------
    def connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        try:
            if self.address is None:
                # "local": always a fresh private instance, never a stale `ray start` cluster found on disk
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                         logging_level=logging.WARNING)
                self.started_here = True
            else:
                ray.init(address=self.address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = first_line(exc)
            raise SlsttError(f"cannot connect to Ray at {self.address or 'a new local instance'} ({first}); "
                             f"start one with `ray start --head` or fix --ray-address") from None

    def close(self) -> None:
        """Shut down the local Ray instance if this executor started it."""
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
        self.started_here = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_resources(self) -> None:
        """A request no node can meet would wait forever: fail fast instead."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= self.cpus_per_fold
                and n["Resources"].get("GPU", 0) >= self.gpus_per_fold]
        if not fits:
            most = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
            cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
            raise SlsttError(f"no Ray node has {self.cpus_per_fold} CPU(s) and {self.gpus_per_fold} GPU(s) for a fold "
                             f"(largest node: {cpus:g} CPUs, {most:g} GPUs); lower --gpus-per-fold or add nodes")

    def probe_shared_fs(self, run_dir: str) -> bool:
        """True when every alive node sees run_dir (same path, same files) as the driver does."""
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = secrets.token_hex(8)
        probe = Path(run_dir) / f".ray-probe-{token}"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token, encoding="utf-8")
        try:
            check = ray.remote(num_cpus=0)(_sees_file)
            refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe), token) for n in ray.nodes() if n.get("Alive")]
            return all(ray.get(refs))
        finally:
            probe.unlink(missing_ok=True)

    # ---- the executor interface -------------------------------------------------------------
    def run_folds(self, fold_fn: FoldFn, jobs: Sequence[FoldJob],
                  on_done: Callable[[FoldJob, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run every job as a Ray task; results in the order of `jobs`, on_done as each finishes."""
        if not jobs:
            return []
        given, jobs = list(jobs), [absolute_job(job) for job in jobs]  # a worker's cwd is not the driver's
        ray = self.ray
        self.connect()
        self.check_resources()
        shared_fs = self.shared_fs if self.shared_fs is not None else self.probe_shared_fs(jobs[0].run_dir)
        bundle = None
        if shared_fs:
            self.last_mode = "shared-fs"
        else:
            data, digest = pack_inputs(jobs[0])  # every job of a run shares the same inputs
            if self.shared_dir:
                bundle = InputBundle(digest, staged_dir=str(unpack_once(data, digest, Path(self.shared_dir))))
                self.last_mode = "shared-dir"
            else:
                bundle = InputBundle(digest, ref=[ray.put(data)])  # into the object store once
                self.last_mode = "object-store"
            del data
        task = ray.remote(_fold_task).options(
            num_cpus=self.cpus_per_fold, num_gpus=self.gpus_per_fold, max_retries=self.max_retries,
            retry_exceptions=list(TRANSIENT), name="slstt-fold")
        refs = {task.remote(fold_fn, job, bundle): i for i, job in enumerate(jobs)}
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        errors: list[str] = []
        pending = list(refs)
        try:
            while pending:  # completion order: a slow fold does not hold back the others' writes
                ready, pending = ray.wait(pending, num_returns=1)
                i = refs[ready[0]]
                try:
                    out = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:  # the fold raised
                    cause = getattr(exc, "cause", None) or exc
                    errors.append(str(cause) if isinstance(cause, SlsttError)
                                  else f"fold {jobs[i].fold}: {type(cause).__name__}: {_last_line(cause)}")
                    continue
                except ray.exceptions.RayError as exc:  # retries used up (worker kept dying), node lost...
                    errors.append(f"fold {jobs[i].fold}: {type(exc).__name__} after {self.max_retries} retries")
                    continue
                if "files" in out:
                    write_fold_files(Path(jobs[i].run_dir), out["files"])
                results[i] = out["done"]
                if on_done is not None:
                    on_done(given[i], out["done"])
        except KeyboardInterrupt:  # stop the cluster's work too, not only the driver
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        if errors:  # finished folds are on disk: re-running the same command resumes from them
            more = f" (+{len(errors) - 1} more fold error(s))" if len(errors) > 1 else ""
            raise SlsttError(f"{errors[0]}{more}; finished folds are kept, re-run the command to resume")
        return [r for r in results if r is not None]


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else ""


# ---- moving files without a shared filesystem ---------------------------------------------
def _bundle_name(key: str, path: Path) -> str:
    """Where a shared input sits in the bundle: key/<parent>/<name>, keeping the last two path
    components (the feature cache is checked by its parent folder = backbone id)."""
    return f"{key}/{path.parent.name or '_'}/{path.name}"


def pack_inputs(job: FoldJob) -> tuple[bytes, str]:
    """Deterministic tar of the job's shared inputs (+ prepared images when there is no feature
    cache), and its sha-256. Same inputs -> same digest, so nodes reuse what they unpacked."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(path: Path, name: str) -> None:
            info = tar.gettarinfo(str(path), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)

        for key, value in sorted(job.shared.items()):
            if not value:
                continue
            path = Path(value)
            if path.is_dir():
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    add(file, f"{_bundle_name(key, path)}/{file.relative_to(path).as_posix()}")
            elif path.is_file():
                add(path, _bundle_name(key, path))
            else:
                raise SlsttError(f"shared input {key}={value} does not exist on the driver")
        if not job.shared.get("features") and job.shared.get("samples"):
            # No frozen-feature cache: folds read prepared flow images from cache_dir.
            from slstt.data.prepare import prepared_path
            from slstt.training.config import TrainConfig
            from slstt.training.loso import samples_from_json

            cfg = TrainConfig.from_dict(job.config)
            prep = cfg.preprocess_config()
            for sample in samples_from_json(job.shared["samples"]):
                path = prepared_path(cfg.cache_dir, prep, sample, cfg.face_model_sha)
                add(path, f"{CACHE_KEY}/{path.relative_to(cfg.cache_dir).as_posix()}")
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()[:16]


def unpack_once(data: bytes, digest: str, root: Path) -> Path:
    """Unpack the bundle to root/slstt-inputs/<digest>/ unless it is there already (atomic rename,
    so concurrent folds on one node never read a half-unpacked tree)."""
    final = root / "slstt-inputs" / digest
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=final.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # lost the race (or failed): drop our copy
    return final


def absolute_job(job: FoldJob) -> FoldJob:
    """Relative paths (run dir, shared inputs, cache_dir) made absolute on the driver."""
    shared = {k: str(Path(v).resolve()) if v else v for k, v in job.shared.items()}
    config = {**job.config, "cache_dir": str(Path(job.config.get("cache_dir", "cache")).resolve())}
    return replace(job, config=config, run_dir=str(Path(job.run_dir).resolve()), shared=shared)


def localize_job(job: FoldJob, inputs: Path, run_dir: str) -> FoldJob:
    """The same job with its shared paths pointing at the unpacked bundle and a private run_dir."""
    shared = {k: str(inputs / _bundle_name(k, Path(v))) if v else v for k, v in job.shared.items()}
    config = dict(job.config)
    if (inputs / CACHE_KEY).is_dir():
        config["cache_dir"] = str(inputs / CACHE_KEY)  # cache_dir is not hashed: resume still matches
    return replace(job, config=config, run_dir=run_dir, shared=shared)


def write_fold_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a remote fold's directories like run_fold does: into a .partial dir, done.json last,
    then one rename, so a crash here leaves no fold that looks finished."""
    tops = sorted({name.split("/", 1)[0] for name in files})
    for top in tops:
        final = run_dir / top
        tmp = run_dir / f".{top}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        names = sorted((n for n in files if n.split("/", 1)[0] == top), key=lambda n: n.endswith("done.json"))
        for name in names:  # done.json sorts last
            atomic_write_bytes(tmp / name.split("/", 1)[1], files[name])
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)


# ---- what runs on the workers -------------------------------------------------------------
def _sees_file(path: str, token: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except OSError:
        return False


def _node_inputs(bundle: InputBundle) -> Path:
    if bundle.staged_dir:
        return Path(bundle.staged_dir)
    local = Path(tempfile.gettempdir()) / "slstt-ray"
    if (local / "slstt-inputs" / bundle.digest).is_dir():  # another fold on this node unpacked it
        return local / "slstt-inputs" / bundle.digest
    import ray

    assert bundle.ref is not None  # RayExecutor sets staged_dir or ref
    return unpack_once(ray.get(bundle.ref[0]), bundle.digest, local)


def _fold_task(fold_fn: FoldFn, job: FoldJob, bundle: InputBundle | None) -> dict[str, Any]:
    """One fold on a worker. Shared filesystem: run in place. Otherwise run in a private temp
    run_dir and return every file it wrote as bytes, for the driver to write."""
    if bundle is None:
        return {"done": fold_fn(job)}
    inputs = _node_inputs(bundle)
    scratch = Path(tempfile.gettempdir()) / "slstt-ray" / "folds"
    _remove_orphans(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-", dir=scratch) as tmp:
        done = fold_fn(localize_job(job, inputs, tmp))
        root = Path(tmp)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                 if p.is_file() and not p.relative_to(root).parts[0].startswith(".")}
    return {"done": done, "files": files}


def _remove_orphans(scratch: Path) -> None:
    """Temp run dirs of workers that died mid-fold (named <pid>-...): their process is gone."""
    for path in scratch.glob("*-*") if scratch.is_dir() else []:
        pid = path.name.split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass

"""Atomic file writes: a reader never sees a half-written file, even after a crash."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from slstt.errors import SlsttError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask is process-wide, flipping it later would race threads


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` (same directory, same filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def nan_to_none(obj: Any) -> Any:
    """obj with every non-finite float (NaN, inf; numpy's too) as None: strict JSON has no NaN, and
    jq, JavaScript or a spreadsheet reject a file that holds one."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (non-finite numbers as null), written atomically."""
    return atomic_write_text(path, json.dumps(nan_to_none(obj), indent=2, sort_keys=False, default=str,
                                              allow_nan=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def atomic_savefig(path: str | os.PathLike, fig: Any, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (format taken from the final suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda p: fig.savefig(p, format=fmt, **kwargs))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name one file: the same path, a symlink to it or a hard link (same inode)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would resolve
        return Path(a).resolve() == Path(b).resolve()


def check_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                 overwrite: bool = False, what: str = "output", option: str = "--overwrite") -> Path:
    """Refuse (one line) to write `path` when it is one of `inputs` (never, even with --overwrite),
    a folder, or an existing file from an earlier run without `overwrite`. Returns the path."""
    path = Path(path)
    for given in inputs:
        if given is not None and Path(given).exists() and same_file(path, given):
            raise SlsttError(f"{what} {path} is the input {given}; writing it would destroy the input, "
                             "so choose another name")
    if path.is_dir():
        raise SlsttError(f"{what} {path} is a folder; pass a file path")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise SlsttError(f"{what} {path} already exists (an earlier result?); pass {option} to replace it "
                         "or choose another name")
    return path


def check_distinct_outputs(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Two outputs of one run must not be the same file (the second would destroy the first)."""
    named = [(what, Path(p)) for what, p in outputs.items() if p is not None]
    for i, (what_a, a) in enumerate(named):
        for what_b, b in named[i + 1:]:
            if same_file(a, b):
                raise SlsttError(f"{what_a} and {what_b} are the same file {b}; give them different names")

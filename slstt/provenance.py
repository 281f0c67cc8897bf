"""Where a result came from: package versions and the source revision. One implementation, used by
training (checkpoint meta, results.json) and export (ONNX metadata)."""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path

_DISTRIBUTIONS = {  # name in the record -> pip distribution(s) (onnxruntime ships as -gpu here)
    "slstt": ("slstt",),
    "torch": ("torch",),
    "timm": ("timm",),
    "numpy": ("numpy",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
}


def package_versions() -> dict[str, str | None]:
    """Installed versions (None when absent); plain str, so weights_only checkpoint loading accepts them."""
    versions: dict[str, str | None] = {}
    for name, dists in _DISTRIBUTIONS.items():
        versions[name] = None
        for dist in dists:
            try:
                versions[name] = str(importlib_metadata.version(dist))
                break
            except importlib_metadata.PackageNotFoundError:
                continue
    return versions


def git_revision() -> str | None:
    """Full revision of the slstt source tree ('+dirty' when tracked files changed), None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "") if rev else None


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoised per path, size and mtime: cheap to ask again)."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)

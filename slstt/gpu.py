"""GPU readiness without importing torch: make onnxruntime's GPU providers loadable after a plain
pip install, and say exactly why one cannot run (`slstt doctor`, `--device cuda|tensorrt` errors,
the live overlay).

onnxruntime-gpu's provider libraries link the CUDA runtime, cuBLAS, cuDNN and TensorRT by soname,
with no RPATH to the pip wheels that hold them (site-packages/nvidia/*/lib, tensorrt_libs/). A
process that imported torch happens to have them loaded; `slstt live`, `analyze` and `export check`
do not import torch. So before its first GPU session every process loads them itself
(`preload_gpu_libraries`: `onnxruntime.preload_dlls`, then each soname a provider library still
lacks, from the wheel folders), and a provider's problem is found by dlopen-ing its library and
reading the first missing soname from the loader's error.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from slstt.errors import first_line

PROVIDER_LIBRARIES = {
    "cuda": "libonnxruntime_providers_cuda.so",
    "tensorrt": "libonnxruntime_providers_tensorrt.so",
}
TENSORRT_INSTALL = "pip install 'slstt[tensorrt]'"
DRIVER_SONAME = "libcuda.so.1"
_MISSING = re.compile(r"([\w.+-]+\.so[\w.]*): cannot open shared object file")
_VERSION = re.compile(r"version `[^']+' not found|undefined symbol")
_lock = threading.RLock()  # dlopen sequences from the recogniser worker and the main thread


def _ort():
    import onnxruntime

    return onnxruntime


def ort_cuda_version() -> str:
    """CUDA version onnxruntime-gpu was built with ('' for a CPU build)."""
    return str(getattr(_ort(), "cuda_version", "") or "")


def _major(version: str) -> str:
    return version.split(".")[0] if version else "?"


def provider_library(name: str) -> Path | None:
    """The onnxruntime provider shared library for 'cuda' | 'tensorrt', if this build ships it."""
    if name not in PROVIDER_LIBRARIES:
        return None
    path = Path(_ort().__file__).parent / "capi" / PROVIDER_LIBRARIES[name]
    return path if path.is_file() else None


def library_dirs() -> list[Path]:
    """Folders where pip wheels put NVIDIA libraries, in every site directory of this interpreter."""
    dirs: list[Path] = []
    for entry in dict.fromkeys(sys.path):
        root = Path(entry or ".")
        if not root.is_dir():
            continue
        for pattern in ("nvidia/*/lib", "nvidia/*/bin", "tensorrt_libs", "tensorrt_cu*_libs"):
            dirs.extend(p for p in sorted(root.glob(pattern)) if p.is_dir())
    return list(dict.fromkeys(dirs))


def find_library(soname: str) -> Path | None:
    for folder in library_dirs():
        if (folder / soname).is_file():
            return folder / soname
    return None


def _dlopen(path: str | Path) -> str | None:
    """None when it loaded (ctypes never unloads it), else the loader's error message."""
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        return str(exc)
    return None


def _load(path: str | Path, depth: int = 0) -> str | None:
    """dlopen `path`, first loading from the wheel folders each soname the loader says it lacks."""
    tried: set[str] = set()
    while True:
        error = _dlopen(path)
        match = _MISSING.search(error or "")
        if error is None or match is None or depth > 8:
            return error
        soname = match.group(1)
        found = find_library(soname)
        if soname in tried or found is None:
            return error
        tried.add(soname)
        inner = _load(found, depth + 1)
        if inner is not None:
            return inner  # the dependency's own missing library is the real reason


@functools.cache
def preload_gpu_libraries() -> tuple[str, ...]:
    """Load the pip-installed CUDA/cuDNN (and TensorRT) libraries into this process, once, without
    importing torch; works as well when they come from the system loader path. Returns notes on
    what could not be loaded (the provider diagnosis says what that means)."""
    ort = _ort()
    if not sys.platform.startswith(("linux", "win")) or "CUDAExecutionProvider" not in ort.get_available_providers():
        return ()
    notes: list[str] = []
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is not None:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):  # it prints "Failed to load ..." lines
                preload(cuda=True, cudnn=True, msvc=False)
        except Exception as exc:  # a broken install must not stop the CPU path
            notes.append(f"onnxruntime.preload_dlls failed: {first_line(exc)}")
        notes += [line.strip() for line in printed.getvalue().splitlines() if line.startswith("Failed")]
    if sys.platform.startswith("linux"):
        with _lock:
            for name in PROVIDER_LIBRARIES:  # also TensorRT's libs and anything preload_dlls missed
                if provider_library(name) is not None:
                    _load(provider_library(name))  # type: ignore[arg-type]
    return tuple(notes)


def explain_load_error(error: str) -> str:
    """The loader's message as a reason a user can act on."""
    match = _MISSING.search(error)
    if match:
        return describe_missing(match.group(1))
    if _VERSION.search(error):
        return f"library version mismatch ({first_line(Exception(error), 140)})"
    return f"its library cannot be loaded ({first_line(Exception(error), 140)})"


def describe_missing(soname: str) -> str:
    cuda = _major(ort_cuda_version())
    if soname.startswith("libcuda.so"):
        return f"NVIDIA driver ({soname}) absent"
    if soname.startswith(("libnvinfer", "libnvonnxparser")):
        wanted = soname.rsplit(".so.", 1)[-1]
        stem = soname.split(".so")[0]
        others = sorted({p.name.rsplit(".so.", 1)[-1] for d in library_dirs() for p in d.glob(f"{stem}.so.*")})
        if others:
            return (f"TensorRT {wanted} ({soname}) not found, only TensorRT {', '.join(others)} is installed; "
                    f"onnxruntime-gpu links TensorRT {wanted}: {TENSORRT_INSTALL}")
        return f"TensorRT {wanted} ({soname}) not installed: {TENSORRT_INSTALL}"
    if soname.startswith("libcudnn"):
        return f"cuDNN library {soname} not found: pip install nvidia-cudnn-cu{cuda}"
    return (f"CUDA {cuda} library {soname} not found: pip install torch (its CUDA {cuda} wheels bring it) "
            f"or put a CUDA {cuda} toolkit on the loader path")


@functools.cache
def library_problem(name: str) -> str | None:
    """Why the 'cuda' | 'tensorrt' provider library cannot load here (after the preload), or None."""
    library = provider_library(name)
    if library is None:
        return f"this onnxruntime has no {PROVIDER_LIBRARIES.get(name, name)}"
    if not sys.platform.startswith("linux"):
        return None  # the session probe is the check there
    preload_gpu_libraries()
    with _lock:
        error = _load(library)
    return None if error is None else explain_load_error(error)


def gpu_devices() -> list[str]:
    """NVIDIA device nodes (Linux); a container without a GPU has none."""
    return sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))


def driver_version() -> str | None:
    """The NVIDIA driver's CUDA version (e.g. '13.0') via libcuda, or None when the driver is absent."""
    try:
        cuda = ctypes.CDLL(DRIVER_SONAME)
    except OSError:
        return None
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return "unknown"
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def loaded_from(soname_prefix: str) -> str | None:
    """Path this process loaded a library from (Linux /proc/self/maps), to show which copy is used."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if Path(path).name.startswith(soname_prefix):
            return path
    return None


# ---- slstt doctor -----------------------------------------------------------------------------

@dataclass
class DoctorRow:
    component: str
    usable: bool | None  # None: informational
    detail: str


def _shorten(path: str | None) -> str:
    if not path:
        return "?"
    marker = "site-packages/"
    return path.split(marker, 1)[1] if marker in path else path


def onnxruntime_rows() -> list[DoctorRow]:
    from slstt.export.runtime import PROVIDER_NAMES, provider_status

    ort = _ort()
    cuda = ort_cuda_version()
    rows = [DoctorRow("onnxruntime", None, f"{ort.__version__}" + (f", built for CUDA {cuda}" if cuda else ", CPU build"))]
    for name in PROVIDER_NAMES:
        usable, reason = provider_status(name)
        rows.append(DoctorRow(f"onnxruntime {name}", usable, reason))
    notes = preload_gpu_libraries()
    if cuda:
        libs = [(lib, loaded_from(lib)) for lib in ("libcudart.so", "libcublas.so", "libcudnn.so", "libnvinfer.so")]
        found = ", ".join(f"{lib.split('.')[0]} from {_shorten(path)}" for lib, path in libs if path)
        rows.append(DoctorRow("GPU libraries", None, (found or "none loaded") + (f"; {'; '.join(notes)}" if notes else "")))
    return rows


def system_rows() -> list[DoctorRow]:
    devices = gpu_devices()
    driver = driver_version()
    return [
        DoctorRow("GPU device", bool(devices), ", ".join(devices) if devices else "no /dev/nvidia* device"),
        DoctorRow("NVIDIA driver", driver is not None,
                  f"{DRIVER_SONAME} loads, CUDA {driver}" if driver else f"{DRIVER_SONAME} absent"),
    ]


def torch_rows() -> list[DoctorRow]:
    try:
        import torch
    except Exception as exc:  # torch is a dependency, but say so rather than crash
        return [DoctorRow("torch", False, f"cannot import torch ({first_line(exc)})")]
    build = torch.version.cuda
    rows = [DoctorRow("torch", True, f"{torch.__version__}, " + (f"built for CUDA {build}" if build else "CPU-only build"))]
    if build is None:
        rows.append(DoctorRow("torch cuda", False, "CPU-only torch build"))
    elif torch.cuda.is_available():
        names = [f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
                 for i in range(torch.cuda.device_count())]
        rows.append(DoctorRow("torch cuda", True, "; ".join(names)))
    else:
        try:
            torch.cuda.init()
            reason = "no CUDA device"
        except Exception as exc:
            reason = first_line(exc, 200).split(". ")[0]  # torch adds a paragraph of advice
        rows.append(DoctorRow("torch cuda", False, reason))
    ort_cuda = ort_cuda_version()
    if build and ort_cuda and _major(build) != _major(ort_cuda):
        rows.append(DoctorRow("CUDA versions", False, f"torch uses CUDA {build} but onnxruntime-gpu CUDA {ort_cuda}: "
                              f"install CUDA {_major(ort_cuda)} libraries (e.g. torch built for CUDA {_major(ort_cuda)})"))
    return rows


def doctor_rows() -> list[DoctorRow]:
    # onnxruntime first: it must work in a process that has not imported torch (as `slstt live`)
    return system_rows() + onnxruntime_rows() + torch_rows()


def doctor_command() -> None:
    """Show what this machine can run: torch on CPU/CUDA, and each onnxruntime provider or why not."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="slstt doctor: what this machine can run")
    for column in ("component", "usable", "detail"):
        table.add_column(column, overflow="fold")
    marks = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}
    for row in doctor_rows():
        table.add_row(row.component, marks[row.usable], escape(row.detail))
    Console().print(table)

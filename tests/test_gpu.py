"""GPU readiness checked without a GPU: after slstt's preload, in a process that never imports torch,
onnxruntime's CUDA provider library resolves every CUDA runtime / cuBLAS / cuDNN dependency from the
pip wheels and stops only at the NVIDIA driver (libcuda.so.1), which a GPU machine has. The same for
TensorRT when its extra is installed. Each load runs in a fresh subprocess: a dlopen cannot be undone."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from slstt import gpu
from slstt.errors import SlsttError

CUDA_RUNTIME_PREFIXES = ("libcudart", "libcublas", "libcublasLt", "libcurand", "libcufft", "libnvrtc", "libcudnn")

LOAD_SCRIPT = """
import ctypes, json, sys
from slstt import gpu
preload = {preload}
if preload:
    gpu.preload_gpu_libraries()
library = gpu.provider_library({name!r})
try:
    ctypes.CDLL(str(library))
    error = None
except OSError as exc:
    error = str(exc)
print(json.dumps({{"error": error, "torch": "torch" in sys.modules}}))
"""


def load_in_subprocess(name: str, preload: bool = True) -> dict:
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT.format(name=name, preload=preload)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def driver_present() -> bool:
    try:
        ctypes.CDLL(gpu.DRIVER_SONAME)
    except OSError:
        return False
    return True


needs_gpu_build = pytest.mark.skipif(gpu.provider_library("cuda") is None,
                                     reason="onnxruntime without the CUDA provider (CPU build)")


@needs_gpu_build
def test_cuda_provider_resolves_everything_but_the_driver():
    result = load_in_subprocess("cuda")
    assert result["torch"] is False  # the preload does not lean on torch
    if driver_present():
        assert result["error"] is None, result
        return
    error = result["error"]
    assert error and error.startswith("libcuda.so.1: cannot open shared object file"), error
    assert not any(lib in error for lib in CUDA_RUNTIME_PREFIXES), error
    # the cuDNN the CUDA provider opens at run time is loaded as well
    check = subprocess.run([sys.executable, "-c", "from slstt import gpu; gpu.preload_gpu_libraries(); "
                            "print(gpu.loaded_from('libcudnn.so'))"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "libcudnn.so.9" in check.stdout, check.stdout + check.stderr


@needs_gpu_build
def test_without_the_preload_a_cuda_runtime_library_is_what_fails():
    """The control: the preload is what makes the difference on a plain pip install."""
    result = load_in_subprocess("cuda", preload=False)
    if result["error"] is None or "libcuda.so.1" in result["error"]:
        pytest.skip("the CUDA libraries are on this machine's loader path already (system CUDA)")
    assert any(lib in result["error"] for lib in CUDA_RUNTIME_PREFIXES), result


@needs_gpu_build
def test_tensorrt_provider_resolves_everything_but_the_driver():
    if gpu.find_library("libnvinfer.so.10") is None:
        pytest.skip("TensorRT 10 not installed (pip install 'slstt[tensorrt]')")
    result = load_in_subprocess("tensorrt")
    assert result["torch"] is False
    if driver_present():
        assert result["error"] is None, result
        return
    error = result["error"]
    assert error and "libcuda.so.1" in error and "libnvinfer" not in error, error


def test_loader_errors_become_reasons():
    missing = "{}: cannot open shared object file: No such file or directory"
    assert gpu.explain_load_error(missing.format("libcuda.so.1")) == "NVIDIA driver (libcuda.so.1) absent"
    cublas = gpu.explain_load_error(missing.format("libcublasLt.so.13"))
    assert cublas.startswith("CUDA") and "libcublasLt.so.13 not found" in cublas
    assert "nvidia-cudnn" in gpu.explain_load_error(missing.format("libcudnn.so.9"))
    trt = gpu.explain_load_error(missing.format("libnvinfer.so.10"))
    assert "TensorRT 10" in trt and "slstt[tensorrt]" in trt
    mismatch = "/x/libcublas.so.13: version `libcublasLt.so.13' not found (required by /x/provider.so)"
    assert gpu.explain_load_error(mismatch).startswith("library version mismatch")


@needs_gpu_build
def test_explicit_cuda_fails_fast_with_the_reason_and_auto_falls_back(caplog, tmp_path):
    from slstt.export.runtime import check_provider, create_session_from_bytes, provider_status

    usable, reason = provider_status("cuda")
    if usable:
        pytest.skip("CUDA really runs here")
    if not driver_present():
        assert reason == "NVIDIA driver (libcuda.so.1) absent"
    with pytest.raises(SlsttError) as info:
        check_provider("cuda")
    assert reason in str(info.value) and "\n" not in str(info.value)
    from slstt.export.runtime import _probe_model

    with pytest.raises(SlsttError, match="libcuda|not usable"):
        create_session_from_bytes(_probe_model(), "cuda", warmup=False)
    with caplog.at_level(logging.INFO, logger="slstt.export"):
        session, used = create_session_from_bytes(_probe_model(), "auto", warmup=False)
    assert used == ["cpu"]
    np.testing.assert_array_equal(session.run(None, {"x": np.array([-1.0], np.float32)})[0], [0.0])


@needs_gpu_build
def test_doctor_names_the_driver_and_no_cuda_library():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "slstt.cli", "doctor"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.count("│") >= 3}
    assert {"onnxruntime cuda", "onnxruntime cpu", "torch", "torch cuda", "NVIDIA driver"} <= set(rows)
    if not driver_present():
        assert "NVIDIA driver (libcuda.so.1) absent" in rows["onnxruntime cuda"]
        assert "not found" not in rows["onnxruntime cuda"]
    assert time.perf_counter() - start < 60


@needs_gpu_build
def test_export_check_with_an_unusable_provider_is_one_quick_line(tmp_path):
    from slstt.export.runtime import provider_status

    if provider_status("cuda")[0]:
        pytest.skip("CUDA really runs here")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the provider is checked first")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "slstt.cli", "export", "check", str(model), "--provider", "cuda"],
                          capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and provider_status("cuda")[1] in lines[0], proc.stderr
    assert elapsed < 10  # generous for a loaded 2-core box; the check itself takes ~0.5 s

"""A model file is untrusted input: every metadata field is validated (type, range, length) before any
use, and `slstt export check`, `OnnxClassifier` and `slstt analyze` refuse a tampered file with one
line and exit 2, never a native crash. Tampered files are written the way an attacker would: by
editing the .onnx metadata_props with onnx. Everything that could crash runs in a subprocess.

The graph is a small hand-built ONNX (mean over frames and pixels, then a linear layer) carrying the
metadata the real producer (build_metadata/set_metadata) writes; test_export.py covers the real
exporter's files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slstt.config import ModelConfig, PreprocessConfig
from slstt.errors import SlsttError
from slstt.export.metadata import FLOW_PARAM_SPECS, build_metadata, set_metadata, validate_flow_params

T, SIZE = 3, 32
LABELS = ["negative", "positive", "surprise"]


def tiny_model(path: Path, weights: np.ndarray | None = None) -> Path:
    """flows (batch, T, 3, S, S) -> logits (batch, 3), with slstt metadata."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, len(LABELS))).astype(np.float32) if weights is None else weights
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["flows"], ["pooled"], axes=[1, 3, 4], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("flows", TensorProto.FLOAT, ["batch", "T", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [numpy_helper.from_array(w, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", input_size=SIZE, num_frames=T, num_classes=3, labels=LABELS)
    metadata = build_metadata(cfg, PreprocessConfig(input_size=SIZE, num_frames=T), {"data_fps": 30.0},
                              dtype="fp32", dynamic_time=True)
    metadata["export_id"] = "tiny"
    set_metadata(proto, metadata)
    onnx.save(proto, str(path))
    return path


def tampered(good: Path, out: Path, change=None, raw: str | None = None) -> Path:
    proto = onnx.load(str(good))
    props = {p.key: p for p in proto.metadata_props}
    if raw is not None:
        props["slstt"].value = raw
    else:
        metadata = json.loads(props["slstt"].value)
        change(metadata)
        props["slstt"].value = json.dumps(metadata)
    onnx.save(proto, str(out))
    return out


def _dis_stride_zero(m: dict) -> None:
    m["preprocess_config"].update(flow="dis", flow_params={"preset": "fast", "patch_stride": 0})


# (name, change of the metadata or raw "slstt" text, text the one-line error must contain)
CASES = [
    ("winsize", lambda m: m["preprocess_config"]["flow_params"].update(winsize=-5), "flow_params.winsize"),
    ("dis_stride", _dis_stride_zero, "flow_params.patch_stride"),
    ("std_zero", lambda m: m["preprocess_config"].update(std=[0, 0, 0]), "preprocess_config.std[0]"),
    ("labels", lambda m: m.update(labels=LABELS + ["other"]), "4 labels but model_config.num_classes is 3"),
    ("type_T", lambda m: m.update(T="3"), "'T' must be an integer"),
    ("type_mean", lambda m: m["preprocess_config"].update(mean="grey"), "preprocess_config.mean"),
    ("type_labels", lambda m: m.update(labels={"a": 1}), "'labels' must be a list"),
    ("huge_T", lambda m: (m.update(T=10**9), m["preprocess_config"].update(num_frames=10**9)), "num_frames"),
    ("negative_fps", lambda m: m["frame_rate"].update(data_fps=-1), "frame_rate.data_fps"),
    ("garbage", "{not json", "not valid JSON"),
    ("nan_token", '{"format_version": NaN}', "not valid JSON"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tampered")
    good = tiny_model(tmp / "good.onnx")
    out = {"good": good}
    for name, change, _ in CASES:
        if isinstance(change, str):
            out[name] = tampered(good, tmp / f"{name}.onnx", raw=change)
        else:
            out[name] = tampered(good, tmp / f"{name}.onnx", change)
    return out


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def test_the_untampered_model_loads_and_predicts(models):
    from slstt.export.runtime import OnnxClassifier

    clf = OnnxClassifier(models["good"], provider="cpu")
    x = np.random.default_rng(1).standard_normal((2, T, 3, SIZE, SIZE)).astype(np.float32)
    probs = clf.predict(x)
    assert probs.shape == (2, 3) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_classifier_refuses_each_tampered_file_with_one_line(models):
    """All cases in one child process: a native crash would show as a signal exit code."""
    script = textwrap.dedent("""
        import json, sys
        from slstt.errors import SlsttError
        from slstt.export.runtime import OnnxClassifier
        for path in sys.argv[1:]:
            try:
                OnnxClassifier(path, provider="cpu")
                print(json.dumps([path, None]))
            except SlsttError as exc:
                print(json.dumps([path, str(exc)]))
    """)
    proc = run("-c", script, *(str(models[name]) for name, _, _ in CASES))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = dict(json.loads(line) for line in proc.stdout.splitlines())
    for name, _, expected in CASES:
        message = results[str(models[name])]
        assert message is not None, f"{name}: accepted"
        assert "\n" not in message and expected in message, (name, message)


@pytest.mark.parametrize("name", ["winsize", "dis_stride", "std_zero", "labels", "type_T", "huge_T", "garbage"])
def test_export_check_refuses_with_one_line_and_exit_2(models, name):
    expected = dict((n, e) for n, _, e in CASES)[name]
    proc = run("-m", "slstt.cli", "export", "check", str(models[name]), "--runs", "1", "--provider", "cpu")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr


def test_analyze_refuses_the_crashing_metadata_before_any_frame(models, no_face_video, tmp_path):
    for name in ("winsize", "dis_stride"):
        proc = run("-m", "slstt.cli", "analyze", str(no_face_video), "--model", str(models[name]),
                   "--out", str(tmp_path / name), timeout=180)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1 and "flow_params" in lines[0], proc.stderr


def test_output_size_must_match_the_labels(models, tmp_path):
    from slstt.export.runtime import OnnxClassifier

    four = tampered(models["good"], tmp_path / "four.onnx", lambda m: (
        m.update(labels=LABELS + ["other"]), m["model_config"].update(num_classes=4, labels=LABELS + ["other"])))
    with pytest.raises(SlsttError, match="outputs 3 classes but its metadata lists 4 labels"):
        OnnxClassifier(four, provider="cpu")


def test_nan_logits_are_one_line_never_probabilities(tmp_path):
    from slstt.export.runtime import OnnxClassifier

    weights = np.full((3, len(LABELS)), np.nan, dtype=np.float32)
    clf = OnnxClassifier(tiny_model(tmp_path / "nan.onnx", weights), provider="cpu", warmup=False)
    x = np.zeros((1, T, 3, SIZE, SIZE), dtype=np.float32)
    with pytest.raises(SlsttError, match="non-finite outputs") as info:
        clf.predict(x)
    assert "\n" not in str(info.value)


def test_flow_params_outside_their_range_are_refused():
    bad = {"farneback": {"winsize": 0, "pyr_scale": 1.0, "levels": -1, "poly_n": 4, "flags": 4, "iterations": 1.5},
           "dis": {"patch_stride": 0, "patch_size": 100, "preset": "slow", "use_spatial_propagation": 1},
           "tvl1": {"nscales": 0, "medianFiltering": 2, "tau": float("nan"), "scaleStep": 0.01}}
    for backend, params in bad.items():
        for key, value in params.items():
            with pytest.raises(SlsttError, match=f"flow_params.{key}"):
                validate_flow_params(backend, {key: value}, "m.onnx")
    with pytest.raises(SlsttError, match="must not exceed patch_size"):
        validate_flow_params("dis", {"patch_size": 4, "patch_stride": 6}, "m.onnx")
    with pytest.raises(SlsttError, match="not a farneback parameter"):
        validate_flow_params("farneback", {"patch_size": 8}, "m.onnx")


def test_every_accepted_flow_param_extreme_runs_natively():
    """The accepted ranges are safe: each parameter at both ends of its range gives a finite flow
    (in a child process, so a crash is seen as such)."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        from slstt.export.metadata import FLOW_PARAM_SPECS, validate_flow_params
        from slstt.preprocess.flow import compute_flow

        def extremes(spec):
            kind = spec[0]
            if kind == "int":
                return [spec[1], spec[2]]
            if kind == "float":
                lo, hi, lo_open, hi_open = spec[1:]
                return [lo + 1e-3 if lo_open else lo, hi - 1e-3 if hi_open else hi]
            return list(spec[1]) if kind == "choice" else [False, True]

        rng = np.random.default_rng(0)
        bad = []
        for backend, specs in FLOW_PARAM_SPECS.items():
            side = 32 if backend == "tvl1" else 128  # TV-L1 is slow; DIS needs room for a 32 px patch
            a = (rng.random((side, side)) * 255).astype(np.uint8)
            b = np.roll(a, 1, axis=1)
            for name, spec in specs.items():
                for value in extremes(spec):
                    params = {name: value}
                    if backend == "dis" and name == "patch_stride":
                        params["patch_size"] = 32
                    if backend == "dis" and name == "patch_size":
                        params["patch_stride"] = 1
                    validate_flow_params(backend, params, "test")
                    if not np.isfinite(compute_flow(a, b, backend, params)).all():
                        bad.append([backend, name, value])
        print(json.dumps(bad))
    """)
    proc = run("-c", script, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert sum(len(s) for s in FLOW_PARAM_SPECS.values()) >= 30

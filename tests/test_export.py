"""slstt.export: ONNX export against torch (project and authors' checkpoints), metadata round trip,
dynamic batch/T, split parts, int8, the runtime's refusals and the CLI's one-line errors.
Tiny ViTs at 32 px, pretrained=False, no downloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from authors_reference import AuthorsSLSTT, randomize

from slstt.cli import main
from slstt.config import ModelConfig, PreprocessConfig
from slstt.errors import SlsttError
from slstt.export import onnx as export_module
from slstt.export.metadata import check_compatible, read_metadata
from slstt.export.onnx import export_onnx
from slstt.export.runtime import OnnxClassifier, available_providers, create_session
from slstt.models import create_model, save_checkpoint

T, SIZE = 3, 32
LABELS = ["negative", "positive", "surprise"]
META = {"dataset": "synth", "class_scheme": "megc-3", "labels": LABELS, "protocol": "loso", "fold": "s01",
        "optimistic": False, "selection": "last epoch", "epoch": 4, "metrics": {"uf1": 0.61, "uar": 0.6},
        "data_fps": 200.0, "versions": {}, "git": "abc123"}


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def one_line(fn, *args, **kwargs) -> str:
    with pytest.raises(SlsttError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project checkpoint and its fp32 --split export (dynamic batch and T)."""
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", input_size=SIZE, num_frames=T, num_classes=3, labels=LABELS,
                      class_scheme="megc-3", lstm_hidden=32, head_hidden=16)
    pre = PreprocessConfig(input_size=SIZE, num_frames=T, fps=30.0)
    model = create_model(cfg).eval()
    ckpt = save_checkpoint(tmp / "run.pt", model, preprocess=pre, meta=META)
    report = export_onnx(ckpt, tmp / "run.onnx", split=True)
    return dict(tmp=tmp, cfg=cfg, pre=pre, model=model, ckpt=ckpt, report=report, path=tmp / "run.onnx")


def test_project_export_single_file_matches_torch_in_bare_onnxruntime(project):
    report, path, model = project["report"], project["path"], project["model"]
    assert report.dynamic_time and report.outputs[0] == path
    assert {c.T for c in report.parity if c.part == "full"} == {T, T - 1, T + 2}
    assert all(c.passed and c.max_abs_diff <= 1e-4 for c in report.parity)
    proto = onnx.load(str(path))
    assert proto.ir_version <= 13
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in proto.graph.initializer)  # no external data
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix == ".onnx") == [
        "run.encoder.onnx", "run.head.onnx", "run.onnx"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # no slstt code involved
    rng = np.random.default_rng(1)
    for batch, frames in ((1, T), (3, T), (2, 1), (1, 6)):
        x = rng.standard_normal((batch, frames, 3, SIZE, SIZE)).astype(np.float32)
        got = session.run(["logits"], {"flows": x})[0]
        np.testing.assert_allclose(got, torch_logits(model, x), atol=1e-4, rtol=0)


def test_metadata_round_trips(project):
    metadata = read_metadata(project["path"])
    assert metadata == json.loads(json.dumps(project["report"].metadata))
    assert PreprocessConfig.from_dict(metadata["preprocess_config"]) == project["pre"]
    assert ModelConfig.from_dict(metadata["model_config"]) == project["cfg"]
    assert metadata["labels"] == LABELS and metadata["T"] == T and metadata["dtype"] == "fp32"
    assert metadata["frame_rate"] == {"preprocess_fps": 30.0, "data_fps": 200.0}
    assert metadata["training"]["fold"] == "s01" and metadata["training"]["optimistic"] is False
    assert metadata["metrics"] == META["metrics"] and metadata["versions"]["onnxruntime"] == ort.__version__
    flat = {p.key: p.value for p in onnx.load(str(project["path"])).metadata_props}
    assert flat["labels"] == ",".join(LABELS) and flat["T"] == str(T)
    check_compatible(metadata, input_shape=["batch", "T", 3, SIZE, SIZE], output_size=3)


def test_classifier_predicts_and_split_parts_compose(project):
    clf = OnnxClassifier(project["path"], provider="auto")
    assert clf.labels == LABELS and clf.num_frames == T and clf.input_size == SIZE
    assert clf.preprocess == project["pre"] and "cpu" in clf.providers
    x = np.random.default_rng(2).standard_normal((2, T, 3, SIZE, SIZE)).astype(np.float32)
    probs = clf.predict(x)
    ref = torch.softmax(torch.from_numpy(torch_logits(project["model"], x)), 1).numpy()
    assert probs.dtype == np.float32 and probs.shape == (2, 3)
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    features = clf.encode(x.reshape(-1, 3, SIZE, SIZE)).reshape(2, T, -1)
    with torch.no_grad():
        np.testing.assert_allclose(features, project["model"].encode(torch.from_numpy(x)).numpy(), atol=1e-4)
    np.testing.assert_allclose(clf.aggregate(features), clf.logits(x), atol=1e-4)
    assert "3, 32, 32" in one_line(clf.predict, x[:, :, :, :16])


def test_tampered_metadata_is_refused(project, tmp_path):
    proto = onnx.load(str(project["path"]))
    original = json.loads({p.key: p.value for p in proto.metadata_props}["slstt"])

    def tampered(change) -> Path:
        metadata = json.loads(json.dumps(original))
        change(metadata)
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        for prop in copy.metadata_props:
            if prop.key == "slstt":
                prop.value = json.dumps(metadata)
        out = tmp_path / "tampered.onnx"
        onnx.save(copy, str(out))
        return out

    cases = [
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m["preprocess_config"].update(flow="raft"), "flow backend 'raft'"),
        (lambda m: m["preprocess_config"].update(encoding="rgb"), "encoding 'rgb'"),
        (lambda m: m.update(labels=LABELS + ["other"]), "labels"),
        (lambda m: (m.update(labels=LABELS + ["other"]), m["model_config"].update(num_classes=4,
                    labels=LABELS + ["other"])), "outputs 3 classes"),
        (lambda m: (m.update(T=5), m["preprocess_config"].update(num_frames=5)), None),  # dynamic T graph: fine
        (lambda m: m["preprocess_config"]["flow_params"].update(winsize=-5), "flow_params.winsize"),
        (lambda m: m["preprocess_config"].update(std=[0, 0, 0]), "preprocess_config.std"),
        (lambda m: m.update(T=True), "'T' must be an integer"),
    ]
    for change, expected in cases:
        path = tampered(change)
        if expected is None:
            OnnxClassifier(path, warmup=False)
            continue
        assert expected in one_line(OnnxClassifier, path, warmup=False)
    # a static-T graph whose metadata claims another T
    meta = json.loads(json.dumps(original))
    meta["T"] = meta["preprocess_config"]["num_frames"] = 5
    assert "T=3" in one_line(check_compatible, meta, input_shape=[1, 3, 3, SIZE, SIZE], output_size=3)
    stripped = onnx.ModelProto()
    stripped.CopyFrom(proto)
    del stripped.metadata_props[:]
    onnx.save(stripped, str(tmp_path / "bare.onnx"))
    assert "'slstt' metadata" in one_line(OnnxClassifier, tmp_path / "bare.onnx", warmup=False)


def test_authors_checkpoint_exports_with_fixed_T_and_matches_reference(tmp_path):
    ref = randomize(AuthorsSLSTT(5, "lstm", dim=192, depth=12, heads=3, image_size=SIZE), 0).eval()
    path = tmp_path / "model_best_casme2_sub01.pth.tar"
    torch.save({"epoch": 3, "arch": "vit", "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()},
                "best_acc1": 50.0, "best_f1": 0.4, "optimizer": {}}, path)
    report = export_onnx(path, tmp_path / "authors.onnx", dynamic_time=False)
    assert not report.dynamic_time and report.num_frames == 11 and report.source == "authors"
    clf = OnnxClassifier(tmp_path / "authors.onnx", provider="cpu")
    assert clf.session.get_inputs()[0].shape[1] == 11 and len(clf.labels) == 5
    assert clf.metadata["training"]["optimistic"] is True and clf.metadata["dataset"] == "casme2"
    x = np.random.default_rng(3).standard_normal((2, 11, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(clf.logits(x), torch_logits(ref, x), atol=1e-4, rtol=0)
    assert "T=10" in one_line(clf.predict, x[:, :10])


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
def test_reduced_precision_export_reports_agreement(project, tmp_path, dtype):
    report = export_onnx(project["ckpt"], tmp_path / "q.onnx", dtype=dtype, dynamic_time=False)
    checks = [c for c in report.parity if c.dtype == dtype]
    assert checks and all(c.top1_agreement is not None and c.max_abs_diff < 0.05 for c in checks)
    assert report.size_bytes["full"] < 0.6 * project["report"].size_bytes["full"]
    proto = onnx.load(str(tmp_path / "q.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert "MatMulInteger" in ops if dtype == "int8" else proto.graph.input[0].type.tensor_type.elem_type == 1
    clf = OnnxClassifier(tmp_path / "q.onnx", provider="cpu")
    assert clf.dtype == dtype and clf.metadata["parity"]["checks"][-1]["dtype"] == dtype
    x = np.random.default_rng(4).standard_normal((4, T, 3, SIZE, SIZE)).astype(np.float32)
    assert np.abs(clf.logits(x) - torch_logits(project["model"], x)).max() < 0.05


def test_failed_parity_writes_nothing(project, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "FP32_TOLERANCE", 0.0)  # a real mismatch well below 1e-4 now fails
    message = one_line(export_onnx, project["ckpt"], tmp_path / "x.onnx", split=True, dynamic_time=False)
    assert "parity check failed" in message
    assert list(tmp_path.iterdir()) == []


def test_runtime_providers_are_probed_not_assumed(project):
    providers = available_providers()
    assert providers[-1] == "cpu"
    session, used = create_session(project["path"], provider="cpu")
    assert used == ["cpu"] and session.get_providers() == ["CPUExecutionProvider"]
    if "cuda" not in providers:
        assert "not usable" in one_line(create_session, project["path"], provider="cuda")
    assert "choose one of" in one_line(create_session, project["path"], provider="gpu")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_cli_bad_inputs_one_line_no_output(project, tmp_path, capsys):
    not_ckpt = tmp_path / "notes.pt"
    not_ckpt.write_text("not a checkpoint")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (["-c", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "a.onnx")], "not found"),
        (["-c", str(not_ckpt), "-o", str(tmp_path / "b.onnx")], "notes.pt"),
        (["-c", str(project["ckpt"]), "-o", str(blocker / "sub" / "c.onnx")], "not a directory"),
        (["-c", str(project["ckpt"]), "-o", str(tmp_path / "d.onnx"), "--dtype", "fp8"], "--dtype"),
        (["-c", str(project["ckpt"]), "-o", str(tmp_path / "e.onnx"), "--aggregator", "gru"], "--aggregator 'gru'"),
    ]
    for args, expected in cases:
        code, _, err = run_cli(capsys, "export", "onnx", *args)
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes.pt"]
    code, out, err = run_cli(capsys, "export", "check", str(not_ckpt))
    assert code != 0 and "not a readable ONNX model" in err


def test_cli_check_prints_metadata_and_latency(project, capsys):
    try:
        main(["export", "check", str(project["path"]), "--runs", "2"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "negative" in out and "megc-3" in out and "median ms" in out and "cpu" in out


def test_provenance_is_one_implementation():
    """Training and export record the same versions and the same (full, +dirty) revision."""
    from slstt import provenance
    from slstt.export import metadata as export_metadata
    from slstt.training import loso, report

    assert export_metadata.git_revision is provenance.git_revision is loso.git_revision
    assert export_metadata.package_versions is provenance.package_versions is loso.package_versions
    assert not hasattr(loso, "versions") and " versions()" not in Path(report.__file__).read_text()
    rev = provenance.git_revision()
    assert rev is None or len(rev.removesuffix("+dirty")) == 40
    versions = provenance.package_versions()
    assert str(torch.__version__).startswith(versions["torch"].split("+")[0])
    assert versions["onnxruntime"] == ort.__version__ and versions["numpy"] == np.__version__

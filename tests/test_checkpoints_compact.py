"""Compact fold checkpoints (only what training changed + the frozen backbone's identity, one backbone
copy per run) and the authors' SLSTT-Mean files through ONNX. Tiny ViTs, pretrained=False, no downloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from authors_reference import authors_model, save_like_authors

from slstt.config import ModelConfig, PreprocessConfig
from slstt.errors import SlsttError
from slstt.models import create_model, load_checkpoint, save_checkpoint
from slstt.models.checkpoint import (
    COMPACT_VERSION,
    backbone_identity,
    frozen_backbone_state,
    save_backbone_copy,
    tensors_sha256,
)

SIZE, T = 32, 3
LABELS = ["negative", "positive", "surprise"]


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(SlsttError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def trained_model(seed: int, aggregator: str = "lstm", **changes) -> torch.nn.Module:
    """What a fold starts from (torch seeded, random frozen backbone), with its trainable part moved."""
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", input_size=SIZE, num_frames=T, num_classes=3, labels=LABELS,
                      class_scheme="megc-3", aggregator=aggregator, lstm_hidden=32, head_hidden=16, **changes)
    torch.manual_seed(seed)
    model = create_model(cfg)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))  # stands in for training: only trainable tensors change
    return model.eval()


def write_run(root: Path, model, seed: int) -> tuple[Path, Path]:
    """A run folder as `slstt train` leaves it: <run>/backbone-<sha>.safetensors + <run>/fold_x/checkpoint.pt."""
    identity = backbone_identity(model, "random", seed=seed)
    save_backbone_copy(root / identity.file_name, model, identity)
    pre = PreprocessConfig(input_size=SIZE, num_frames=T)
    ckpt = save_checkpoint(root / "fold_s01" / "checkpoint.pt", model, preprocess=pre,
                           meta={"labels": LABELS, "fold": "s01"}, backbone=identity)
    return ckpt, root / identity.file_name


def logits(model, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(frames)


def test_compact_fold_checkpoint_loads_like_the_full_one(tmp_path):
    model = trained_model(seed=0, finetune_blocks=1)
    ckpt, backbone_file = write_run(tmp_path / "run", model, seed=0)
    full = save_checkpoint(tmp_path / "full.pt", model, preprocess=PreprocessConfig(input_size=SIZE, num_frames=T))
    raw = torch.load(ckpt, weights_only=True)
    assert raw["format_version"] == COMPACT_VERSION
    stored = set(raw["state_dict"])
    # only what training changed: final norm, fine-tuned last block, aggregator, head
    assert {k for k in stored if k.startswith("backbone.")} == {
        k for k in model.state_dict() if k.startswith(("backbone.norm.", "backbone.blocks.11."))}
    assert {"lstm.weight_ih_l0", "head.2.weight"} <= stored
    assert raw["backbone"]["frozen_sha256"] == tensors_sha256(frozen_backbone_state(model))
    assert ckpt.stat().st_size < 0.25 * full.stat().st_size

    frames = torch.randn(2, T, 3, SIZE, SIZE)
    loaded = load_checkpoint(ckpt)
    assert torch.equal(logits(loaded.model, frames), logits(load_checkpoint(full).model, frames))
    assert loaded.model.num_frozen_blocks == 11 and loaded.meta["fold"] == "s01"

    # the backbone copy may also sit next to the checkpoint, or be passed explicitly
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(ckpt, lone / "checkpoint.pt")
    shutil.copy(backbone_file, lone / "elsewhere.safetensors")
    explicit = load_checkpoint(lone / "checkpoint.pt", backbone_file=lone / "elsewhere.safetensors")
    assert torch.equal(logits(explicit.model, frames), logits(loaded.model, frames))


def test_wrong_backbone_refused_naming_both_identities(tmp_path):
    model = trained_model(seed=0)
    ckpt, backbone_file = write_run(tmp_path / "run", model, seed=0)
    other = trained_model(seed=1)
    other_id = backbone_identity(other, "random", seed=1)
    save_backbone_copy(backbone_file, other, other_id)  # another run's backbone under this run's file name
    message = one_line_error(load_checkpoint, ckpt)
    want = backbone_identity(model, "random", seed=0)
    assert "backbone mismatch" in message and want.describe() in message and other_id.describe() in message


def test_missing_backbone_rebuilt_from_identity_or_one_line(tmp_path):
    model = trained_model(seed=3)
    ckpt, backbone_file = write_run(tmp_path / "run", model, seed=3)
    frames = torch.randn(1, T, 3, SIZE, SIZE)
    expected = logits(model, frames)
    backbone_file.unlink()
    # random init: rebuilt from its seed, tensors checked against the recorded hash, no download
    assert torch.equal(logits(load_checkpoint(ckpt).model, frames), expected)

    # a weights-file backbone whose file is gone: one line saying what to pass
    weights = tmp_path / "w.pth"
    torch.save({k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")},
               weights)
    identity = backbone_identity(model, "weights", weights_file=str(weights))
    path = save_checkpoint(tmp_path / "w" / "fold_a" / "checkpoint.pt", model, backbone=identity)
    assert torch.equal(logits(load_checkpoint(path).model, frames), expected)  # rebuilt from the weights file
    weights.unlink()
    message = one_line_error(load_checkpoint, path)
    assert identity.file_name in message and "backbone_file" in message and "without a download" in message


def test_exported_fold_checkpoint_gives_the_same_logits_as_the_full_one(tmp_path):
    """`slstt export onnx` reads fold checkpoints through load_checkpoint: same ONNX logits as the
    self-contained checkpoint of the same model (what fold checkpoints were before)."""
    from slstt.export.onnx import export_onnx
    from slstt.export.runtime import OnnxClassifier

    model = trained_model(seed=0)
    ckpt, _ = write_run(tmp_path / "run", model, seed=0)
    full = save_checkpoint(tmp_path / "full.pt", model, preprocess=PreprocessConfig(input_size=SIZE, num_frames=T),
                           meta={"labels": LABELS, "fold": "s01"})
    x = np.random.default_rng(0).standard_normal((2, T, 3, SIZE, SIZE)).astype(np.float32)
    outs = []
    for name, path in (("compact", ckpt), ("full", full)):
        export_onnx(path, tmp_path / f"{name}.onnx", dynamic_time=False)
        outs.append(OnnxClassifier(tmp_path / f"{name}.onnx", provider="cpu").logits(x))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], logits(model, torch.from_numpy(x)).numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("aggregator", ["mean", "lstm"])
def test_authors_file_exports_to_onnx_matching_their_forward(tmp_path, aggregator):
    """An authors' model_best file, written as their class writes it (every key present), exports without
    any flag and the ONNX logits match their forward to 1e-4."""
    from slstt.export.onnx import export_onnx
    from slstt.export.runtime import OnnxClassifier

    ref = authors_model(3, aggregator, seed=5, lr=0.5, dim=192, depth=12, heads=3, image_size=SIZE)
    path = tmp_path / "model_best_com_casme2_sub01.pth.tar"
    save_like_authors(ref, path)
    report = export_onnx(path, tmp_path / "authors.onnx", dynamic_time=False)
    assert report.source == "authors"
    clf = OnnxClassifier(tmp_path / "authors.onnx", provider="cpu")
    x = np.random.default_rng(1).standard_normal((2, 11, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    assert np.abs(expected).max() > 0.05  # a trained head: the comparison has power
    np.testing.assert_allclose(clf.logits(x), expected, atol=1e-4, rtol=0)


def test_vit_tiny_lstm_fold_checkpoint_under_30_mb(tmp_path):
    """The paper's LSTM head (512 x 3 layers) on vit_tiny: the fold file holds no backbone copy."""
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", input_size=64, num_frames=5, num_classes=3)
    torch.manual_seed(0)
    model = create_model(cfg)
    identity = backbone_identity(model, "random", seed=0)
    compact = save_checkpoint(tmp_path / "fold" / "checkpoint.pt", model, backbone=identity)
    full = save_checkpoint(tmp_path / "full.pt", model)
    backbone = save_backbone_copy(tmp_path / identity.file_name, model, identity)
    assert compact.stat().st_size < 30e6 < full.stat().st_size
    assert compact.stat().st_size + backbone.stat().st_size == pytest.approx(full.stat().st_size, rel=0.02)

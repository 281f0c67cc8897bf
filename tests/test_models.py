"""slstt.models: shapes, freezing, the authors' checkpoints (against an independent re-implementation),
local backbone weights, project checkpoints and one-line errors. Tiny ViTs at 32 px, no downloads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from authors_reference import AuthorsSLSTT, ViT, authors_model, randomize, save_like_authors

from slstt.config import ModelConfig, PreprocessConfig
from slstt.errors import SlsttError
from slstt.models import create_model, load_authors_checkpoint, load_checkpoint, save_checkpoint

TINY = dict(backbone="vit_tiny_patch16_224", input_size=32)


def tiny_cfg(**changes) -> ModelConfig:
    return ModelConfig(**{**TINY, "num_classes": 3, "lstm_hidden": 32, "head_hidden": 16, **changes})


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(SlsttError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


AUTHORS_SIZES = dict(dim=192, depth=12, heads=3, image_size=32)


def authors_file(tmp_path: Path, name: str, aggregator: str, num_classes: int, seed: int = 0):
    """A model_best_*.pth.tar written as the authors' class writes it: every key (vit.fc, lstm, fc1,
    fc2) present, untouched tensors at their initial values, a few steps of their training."""
    ref = authors_model(num_classes, aggregator, seed=seed, lr=0.5, **AUTHORS_SIZES)
    path = tmp_path / name
    save_like_authors(ref, path)
    return ref, path


@pytest.mark.parametrize("aggregator", ["lstm", "mean"])
def test_shapes_for_several_clip_lengths(aggregator):
    model = create_model(tiny_cfg(aggregator=aggregator, num_classes=5)).eval()
    for t in (1, 4, 11):
        frames = torch.randn(2, t, 3, 32, 32)
        assert model.encode(frames).shape == (2, t, 192)
        assert model(frames).shape == (2, 5)
    # Mean head is the authors' zero-initialised vit.fc: all logits start at exactly 0.
    if aggregator == "mean":
        assert torch.count_nonzero(model(torch.randn(1, 3, 3, 32, 32))) == 0


def test_frozen_backbone_gets_no_gradient_head_and_final_norm_do():
    model = create_model(tiny_cfg(aggregator="lstm"))
    assert model.backbone_frozen
    model(torch.randn(2, 4, 3, 32, 32)).sum().backward()
    for name, p in model.backbone.named_parameters():
        if name.startswith("norm."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and not p.requires_grad, name
    for name, p in list(model.lstm.named_parameters()) + list(model.head.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name

    tuned = create_model(tiny_cfg(aggregator="mean", finetune_blocks=1))
    assert not tuned.backbone_frozen and tuned.num_frozen_blocks == 11
    with torch.no_grad():
        tuned.frame_fc.weight.normal_()  # zero-init head would block every gradient below it
    tuned(torch.randn(1, 2, 3, 32, 32)).sum().backward()
    trainable = {n for n, p in tuned.backbone.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    expected = {n for n, _ in tuned.backbone.named_parameters() if n.startswith(("blocks.11.", "norm."))}
    assert trainable == expected
    assert {n for n, p in tuned.named_parameters() if p.requires_grad} == {f"backbone.{n}" for n in expected} | {
        "frame_fc.weight", "frame_fc.bias"}


def test_dropout_stays_active_in_frozen_blocks_and_trunk_matches_forward():
    model = create_model(tiny_cfg(aggregator="lstm"))
    frames = torch.randn(1, 3, 3, 32, 32)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model.encode(frames), model.encode(frames))  # the authors' in-block dropout
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(frames), model.encode(frames))
        torch.testing.assert_close(model.aggregate_trunk(model.trunk(frames)), model(frames), rtol=0, atol=1e-6)


@pytest.mark.parametrize("aggregator,name,classes,labels", [
    ("lstm", "model_best_casme2_sub01.pth.tar", 5, ["disgust", "happiness", "repression", "surprise", "others"]),
    ("mean", "model_best_com_samm_006.pth.tar", 3, ["negative", "positive", "surprise"]),
    ("mean", "model_best_smic_s1.pth.tar", 4, ["class_0", "class_1", "class_2", "class_3"]),  # 4 != smic-3
])
def test_authors_checkpoint_matches_reference_network(tmp_path, aggregator, name, classes, labels):
    ref, path = authors_file(tmp_path, name, aggregator, classes, seed=classes)
    loaded = load_checkpoint(path)
    assert loaded.source == "authors" and not loaded.model.training
    cfg = loaded.model_config
    assert (cfg.aggregator, cfg.num_classes, cfg.input_size) == (aggregator, classes, 32)
    assert cfg.backbone.startswith("vit_tiny_patch16_") and cfg.class_names == labels
    if aggregator == "lstm":
        assert (cfg.lstm_hidden, cfg.lstm_layers, cfg.head_hidden) == (32, 3, 16)
    assert loaded.preprocess_config.input_size == 32 and loaded.preprocess_config.num_frames == 11
    assert loaded.meta["labels_assumed"] and loaded.meta["epoch"] == 12
    assert loaded.meta["metrics"] == {"best_acc1": 61.5, "best_f1": pytest.approx(0.47)}
    assert loaded.meta["aggregator"] == aggregator and loaded.meta["aggregator_source"] == "detected"
    raw = torch.load(path, weights_only=False)["state_dict"]
    assert {"module.vit.fc.weight", "module.lstm.weight_ih_l2", "module.fc1.weight", "module.fc2.bias"} <= set(raw)
    frames = torch.randn(2, 11, 3, 32, 32)
    with torch.no_grad():
        expected = ref(frames)
        diff = (loaded.model(frames) - expected).abs().max().item()
    assert diff <= 1e-4, diff
    assert expected.abs().max() > 0.05  # a trained head, not all-zero logits
    # the same conversion from an already-loaded dict (no prefix this time)
    again = load_authors_checkpoint({"state_dict": ref.state_dict()})
    with torch.no_grad():
        assert (again.model(frames) - ref(frames)).abs().max().item() <= 1e-4
    # the explicit flag that agrees with the file changes nothing
    given = load_checkpoint(path, aggregator=aggregator)
    assert given.meta["aggregator_source"] == "given"
    with torch.no_grad():
        assert torch.equal(given.model(frames), loaded.model(frames))


def test_authors_aggregator_contradiction_and_ambiguity_one_line(tmp_path):
    """The wrong --aggregator is refused naming the evidence; a file whose heads both look trained
    needs the flag, and with it loads as asked."""
    _, lstm_path = authors_file(tmp_path, "model_best_casme2_sub01.pth.tar", "lstm", 5, seed=1)
    ref_mean, mean_path = authors_file(tmp_path, "model_best_smic_s1.pth.tar", "mean", 3, seed=2)
    message = one_line_error(load_checkpoint, lstm_path, aggregator="mean")
    assert "vit.fc is all zero" in message and "aggregator='lstm'" in message
    message = one_line_error(load_checkpoint, mean_path, aggregator="lstm")
    assert "vit.fc is trained" in message and "untouched" in message and "aggregator='mean'" in message
    assert "not valid" in one_line_error(load_checkpoint, mean_path, aggregator="avg")

    # both heads trained (not something the authors' code writes): ambiguous without the flag
    both = authors_model(3, "mean", seed=3, lr=0.5, **AUTHORS_SIZES)
    with torch.no_grad():
        both.lstm.weight_hh_l0.add_(0.5)
    path = tmp_path / "model_best_smic_s2.pth.tar"
    save_like_authors(both, path)
    message = one_line_error(load_checkpoint, path)
    assert "cannot tell the aggregator" in message and "--aggregator lstm|mean" in message
    frames = torch.randn(1, 11, 3, 32, 32)
    with torch.no_grad():
        loaded = load_checkpoint(path, aggregator="mean").model(frames)
        assert (loaded - both(frames)).abs().max().item() <= 1e-4
        both.aggregator = "lstm"
        loaded = load_checkpoint(path, aggregator="lstm").model(frames)
        assert (loaded - both(frames)).abs().max().item() <= 1e-4

    # a project checkpoint stores its aggregator: a different flag is refused
    save_checkpoint(tmp_path / "p.pt", create_model(tiny_cfg(aggregator="mean")), meta={})
    assert "trained with 'mean'" in one_line_error(load_checkpoint, tmp_path / "p.pt", aggregator="lstm")


def test_b16_style_backbone_file_loads_via_weights(tmp_path):
    vit = randomize(ViT(num_classes=10, dim=192, depth=12, heads=3, image_size=32), seed=3).eval()
    path = tmp_path / "B_16_imagenet1k.pth"
    torch.save(vit.state_dict(), path)  # names without vit.; classifier fc is ignored
    model = create_model(tiny_cfg(aggregator="mean"), weights=str(path)).eval()
    frames = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        diff = (model.encode(frames) - vit.features(frames.flatten(0, 1)).view(2, 3, -1)).abs().max().item()
    assert diff <= 1e-4, diff

    # a 64 px file into a 32 px model: position embedding resampled, class token's entry kept
    big = randomize(ViT(num_classes=10, dim=192, depth=12, heads=3, image_size=64), seed=4)
    torch.save(big.state_dict(), tmp_path / "big.pth")
    model = create_model(tiny_cfg(), weights=tmp_path / "big.pth")
    assert model.backbone.pos_embed.shape == (1, 5, 192)
    torch.testing.assert_close(model.backbone.pos_embed[0, 0], big.positional_embedding.pos_embedding[0, 0])

    # a timm-layout state dict round-trips too
    timm_state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": timm_state}, tmp_path / "timm.pth")
    same = create_model(tiny_cfg(), weights=tmp_path / "timm.pth")
    assert all(torch.equal(a, b) for a, b in zip(same.backbone.state_dict().values(), timm_state.values(), strict=True))

    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "odd.pth")
    assert "expected a timm/HF ViT state dict" in one_line_error(create_model, tiny_cfg(), weights=tmp_path / "odd.pth")


def test_project_checkpoint_rebuilds_from_file_alone(tmp_path):
    cfg = tiny_cfg(aggregator="lstm", labels=["a", "b", "c"], class_scheme="custom", finetune_blocks=2)
    model = create_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the init a fresh model would get
    pre = PreprocessConfig(input_size=32, num_frames=4, flow="dis", fps=30.0)
    meta = {"dataset": "synth", "protocol": "loso", "fold": "s01", "optimistic": False, "metrics": {"uf1": 0.5}}
    path = tmp_path / "run" / "fold.pt"
    save_checkpoint(path, model, preprocess=pre, meta=meta)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "slstt.checkpoint" and raw["format_version"] == 1
    loaded = load_checkpoint(path)
    assert loaded.source == "slstt" and not loaded.model.training
    assert loaded.model_config == cfg and loaded.preprocess_config == pre and loaded.meta == meta
    assert loaded.model.num_frozen_blocks == 10
    frames = torch.randn(2, 4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(frames), model(frames))


def test_bad_files_give_one_line_errors(tmp_path):
    model = create_model(tiny_cfg(aggregator="mean"))
    good = tmp_path / "good.pt"
    save_checkpoint(good, model, meta={})
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3), "step": 5}, foreign)
    unsafe = tmp_path / "unsafe.pt"
    torch.save(ModelConfig(), unsafe)  # a Python object: weights_only=True must refuse it

    assert "corrupt.pt" in one_line_error(load_checkpoint, corrupt)
    assert "noise.pt" in (message := one_line_error(load_checkpoint, noise)) and "not a readable torch" in message
    message = one_line_error(load_checkpoint, foreign)
    assert "not an slstt or SLSTT-authors checkpoint" in message and "vit." in message
    assert "refused" in (message := one_line_error(load_checkpoint, unsafe)) and "ModelConfig" in message
    assert "not found" in one_line_error(load_checkpoint, tmp_path / "missing.pt")


def test_pretrained_offline_without_cache_names_weights_flag(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "TORCH_HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    code = (
        "from slstt.config import ModelConfig\nfrom slstt.errors import SlsttError\n"
        "from slstt.models import create_model\n"
        "try:\n    create_model(ModelConfig(backbone='vit_tiny_patch16_224', input_size=32), pretrained=True)\n"
        "except SlsttError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERR") and "--weights PATH" in lines[0], out.stdout + out.stderr


@pytest.mark.parametrize("name,fps", [
    ("model_best_casme2_sub01.pth.tar", 200.0), ("model_best_samm_006.pth.tar", 200.0),
    ("model_best_smic_s1.pth.tar", 100.0), ("model_best_com_samm_006.pth.tar", None),
])
def test_authors_checkpoint_data_fps_from_file_name(name, fps):
    """The live runtime resamples to meta data_fps: the authors' 11 frames span 55 ms at 200 fps."""
    from slstt.export.metadata import build_metadata

    state = {"state_dict": randomize(AuthorsSLSTT(3, "mean", dim=192, depth=12, heads=3, image_size=32), 0).state_dict()}
    loaded = load_authors_checkpoint(state, name=name)
    assert loaded.meta["data_fps"] == fps
    rate = build_metadata(loaded.model_config, loaded.preprocess_config, loaded.meta, dtype="fp32",
                          dynamic_time=False)["frame_rate"]
    assert rate["data_fps"] == fps
    if fps is None:  # composite: mixed 100/200 fps, a rate must be chosen; the note travels into the export
        assert "100 fps" in loaded.meta["data_fps_note"] and loaded.meta["data_fps_note"] in loaded.meta["assumptions"]
        assert rate["note"] == loaded.meta["data_fps_note"]
    else:
        assert "note" not in rate and any("data_fps" in a for a in loaded.meta["assumptions"])


def test_train_offline_without_weights_fails_fast_before_data_work(tmp_path):
    """`slstt train` with the default pretrained backbone on an offline machine: one line naming
    --weights within seconds (not a minute of hub retries, not after preparing the data)."""
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "TORCH_HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "slstt.cli", "train", "--dataset", "casme2", "--data-root",
                          str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--weights PATH" in lines[0], out.stderr
    assert elapsed < 30 and not (tmp_path / "cache").exists()

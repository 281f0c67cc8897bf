"""The Python API (slstt.Detector, slstt.train, slstt.export): the README's example runs as written,
Detector.stream yields the events `slstt analyze` writes, and train/export drive the CLI's code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# The README's "Python API" example (the lead pastes it into README.md; once there, the README's copy is
# the one tested). Self-contained: it makes its own short synthetic video.
README_EXAMPLE = '''\
import slstt
from slstt.data.synth import make_long_video

# a 6 s synthetic test video with two micro-expressions, and its ground truth (video.gt.csv)
truth = make_long_video("video.mp4", duration_s=6, size=(320, 240), n_micro=2, n_macro=0)

detector = slstt.Detector()  # spotting only; slstt.Detector("model.onnx") also labels each event
for event in detector.stream("video.mp4"):  # a file, a camera index (0) or a stream URL
    print(f"{event.kind} {event.onset_s:.2f}-{event.offset_s:.2f} s in {event.region} {event.label or ''}")

result = detector.analyze("video.mp4", out="analysis", ground_truth=truth)
print(f"micro spotting F1 {result.scores.f1:.2f}; files in {result.out_dir}")
'''


def readme_example() -> str:
    """The ```python block under the README's "Python API" heading, else this file's copy."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").is_file() else ""
    section = re.search(r"^##+ Python API\s*$(.*?)(?=^## |\Z)", readme, re.M | re.S)
    block = re.search(r"```python\n(.*?)```", section.group(1), re.S) if section else None
    return block.group(1) if block else README_EXAMPLE


def test_readme_example_runs(tmp_path: Path) -> None:
    code = readme_example()
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("micro spotting F1 "), proc.stdout
    summary = json.loads((tmp_path / "analysis" / "summary.json").read_text())
    events = [line for line in lines[:-1] if line.startswith(("micro ", "macro "))]
    assert len(events) == summary["events"] > 0  # the stream saw what analyze wrote
    assert summary["spot_frames"] > 0 and 0 < summary["spot_ratio"] <= 1


def test_import_slstt_stays_light() -> None:
    code = ("import sys, slstt; slstt.Detector; slstt.train; slstt.export; "
            "print(sorted(m for m in ('torch', 'cv2', 'onnxruntime', 'mediapipe') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from slstt.data.synth import make_long_video

    video = tmp_path_factory.mktemp("api_video") / "clip.mp4"
    return video, make_long_video(video, seed=5, duration_s=9, size=(320, 240), n_micro=2, n_macro=1)


def test_stream_yields_the_events_of_slstt_analyze(short_video, tmp_path, capsys) -> None:
    """The same video through `slstt analyze` (CLI) and Detector.stream: the same events, field by field,
    with the same non-default spotter option on both sides."""
    import slstt
    from slstt.cli import main
    from slstt.realtime.events import read_events

    video, _ = short_video
    with pytest.raises(SystemExit) as done:
        main(["analyze", str(video), "--out", str(tmp_path / "cli"), "--threshold-k", "5"])
    assert done.value.code == 0, capsys.readouterr().err
    from_cli = read_events(tmp_path / "cli" / "events.jsonl")
    streamed = [e.to_dict() for e in slstt.Detector(threshold_k=5).stream(video)]
    assert from_cli and any(e["kind"] == "micro" for e in from_cli)
    keys = ("kind", "onset_frame", "apex_frame", "offset_frame", "region", "regions", "score", "threshold")
    assert [[e[k] for k in keys] for e in streamed] == [[e[k] for k in keys] for e in from_cli]
    assert all(e["region"] for e in streamed if e["kind"] == "micro")  # which facial region fired


def test_detector_options_checked_like_the_cli(short_video) -> None:
    import slstt
    from slstt.errors import SlsttError

    with pytest.raises(SlsttError, match="--threshold-k 0"):
        slstt.Detector(threshold_k=0)
    with pytest.raises(SlsttError, match="unknown spotter option"):
        slstt.Detector(treshold_k=4)
    with pytest.raises(SlsttError, match="model not found"):
        slstt.Detector("missing.onnx")
    config = slstt.Detector(min_micro_ms=120, window_s=8.0).config
    assert (config.spotter.min_micro_ms, config.spotter.window_s) == (120, 8.0)


def test_analyze_many_needs_out_and_refuses_earlier_results(short_video, tmp_path) -> None:
    import shutil

    import slstt
    from slstt.errors import SlsttError

    video, truth = short_video
    folder = tmp_path / "videos_in"
    folder.mkdir()
    shutil.copy(video, folder / "a.mp4")
    shutil.copy(truth, folder / "a.gt.csv")
    detector = slstt.Detector()
    with pytest.raises(SlsttError, match="pass out=FOLDER"):
        detector.analyze(folder)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "pooled.json").write_text("{}")
    with pytest.raises(SlsttError, match="earlier run"):
        detector.analyze(folder, out=tmp_path / "out")


# --- train and export: the CLI's code ------------------------------------------------------------
CLASSES = ("happiness", "surprise", "disgust")
RECIPE = dict(scheme="megc-3", backbone="vit_tiny_patch16_224", pretrained=False, aggregator="mean", input_size=32,
              frames=5, epochs=3, lr=0.03, lr_step_epoch=2, batch_size=4, seed=0, device="cpu", workers=0)


def _cli_args(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    import torch

    import slstt
    from slstt.data.synth import make_corpus

    root = tmp_path_factory.mktemp("api_train")
    make_corpus(root / "corpus", subjects=3, clips_per_class=2, classes=CLASSES, seed=0, fps=60, size=96)
    options = dict(RECIPE, dataset="casme2", data_root=root / "corpus", cache_dir=root / "cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = slstt.train(out=root / "run", **options)
    finally:
        torch.set_num_threads(threads)
    return run, options, root


def test_train_returns_the_run_and_is_the_cli_run(trained, capsys) -> None:
    """slstt.train builds the very config `slstt train` builds: the CLI with the same options finds the
    run finished (same config hash) instead of refusing it as another config."""
    from slstt.cli import main

    run, options, root = trained
    assert run.run_dir == root / "run" and len(run.checkpoints) == 3  # one fold per subject
    assert run.pooled is not None and run.pooled["n"] == 18 and 0 <= run.pooled["uf1"] <= 1
    options = dict(options)
    args = ["train", "--out", str(root / "run"), *_cli_args(options)]
    before = [p.stat().st_mtime_ns for p in run.checkpoints]
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in run.checkpoints] == before  # resumed: nothing retrained
    with pytest.raises(SystemExit) as refused:  # a different config is refused in that folder
        main([*args[:-2], "--seed", "1"])
    assert refused.value.code == 2


def test_export_is_the_cli_export(trained, capsys) -> None:
    import onnxruntime as ort

    import slstt
    from slstt.cli import main
    from slstt.export.metadata import read_card

    run, _, root = trained
    checkpoint = run.checkpoints[0]
    # parity off on both sides: test_export checks it; here only the sameness of the two paths counts
    report = slstt.export(checkpoint, root / "api.onnx", parity=False)
    with pytest.raises(SystemExit) as done:
        main(["export", "onnx", "-c", str(checkpoint), "-o", str(root / "cli.onnx"), "--no-parity"])
    assert done.value.code == 0, capsys.readouterr().err
    assert report.outputs == [root / "api.onnx"]
    api, cli = read_card(root / "api.onnx"), read_card(root / "cli.onnx")
    volatile = ("export_id", "exported_at")
    assert {k: v for k, v in api.to_dict().items() if k not in volatile} == \
        {k: v for k, v in cli.to_dict().items() if k not in volatile}
    assert len(api.labels) == 3 and api.class_scheme == "megc-3"
    assert (api.num_frames, api.input_size, api.serving_fps()) == (5, 32, 200.0)  # CASME II's rate
    x = np.random.default_rng(0).standard_normal((1, 5, 3, 32, 32)).astype(np.float32)
    outs = [ort.InferenceSession(str(root / n), providers=["CPUExecutionProvider"]).run(None, {"flows": x})[0]
            for n in ("api.onnx", "cli.onnx")]
    np.testing.assert_array_equal(outs[0], outs[1])
    from slstt.export.onnx import default_output  # what both use without an output

    assert default_output(checkpoint) == checkpoint.with_suffix(".onnx")
    assert default_output(Path("x/model_best_casme2.pth.tar")) == Path("x/model_best_casme2.onnx")


def test_run_card_is_each_fold_checkpoints_card(trained) -> None:
    """TrainResult.card(fold) reads a fold's card from its checkpoint file without building the model:
    the same card as the loaded checkpoint's (what export writes), naming that fold."""
    import slstt
    from slstt.errors import SlsttError
    from slstt.models.checkpoint import load_checkpoint

    run, _, root = trained
    again = slstt.read_run(root / "run")
    folds = [p.parent.name.removeprefix("fold_") for p in again.checkpoints]
    assert len(folds) == 3
    for fold, checkpoint in zip(folds, again.checkpoints, strict=True):
        card, loaded = again.card(fold), load_checkpoint(checkpoint).card
        assert card.training.fold == fold and card.labels == again.results["labels"]
        assert {k: v for k, v in card.to_dict().items() if k != "exported_at"} == \
            {k: v for k, v in loaded.to_dict().items() if k != "exported_at"}
    assert again.card().training.fold == folds[0]
    with pytest.raises(SlsttError, match=re.escape(f"no checkpoint for fold 'nobody' (finished folds: {', '.join(folds)})")):
        again.card("nobody")
    from slstt.training.loso import fold_dir_name, subject_from_fold_dir
    for subject in ("samm/006", "casme2/sub01", "s3"):  # composite subjects keep the folder flat and come back
        assert "/" not in fold_dir_name(subject) and subject_from_fold_dir(fold_dir_name(subject)) == subject

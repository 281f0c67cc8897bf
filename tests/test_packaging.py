"""Packaging: one `slstt.*` namespace from the user's top-level folders, assets inside the wheel,
no bare `models`/`training`/... module, and the CLI lists the user's commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    # Build from a clean copy: setuptools writes build/ and *.egg-info beside the sources, and a stale
    # build/lib in the checkout could slip removed modules into the wheel.
    src = tmp_path_factory.mktemp("src") / "slstt"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "slstt_cache", "runs",
        "demo_out"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("slstt-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_wheel_maps_stage_folders_into_one_namespace(wheel_names: set[str]) -> None:
    for module in ("models/slstt.py", "training/loso.py", "export/onnx.py", "realtime/pipeline.py",
                   "preprocess/pipeline.py", "data/adapters.py", "cli.py"):
        assert f"slstt/{module}" in wheel_names, module
    assert "slstt/assets/face_landmarker.task" in wheel_names and "slstt/assets/NOTICE.md" in wheel_names
    top_level = {name.split("/")[0] for name in wheel_names}
    assert top_level == {"slstt", "slstt-0.1.0.dist-info"}, top_level  # no bare `models` on sys.path


def test_cli_help_lists_the_users_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "slstt.cli", "--help"], capture_output=True, text=True,
                          timeout=120, env={"COLUMNS": "120", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "export", "live", "analyze", "demo", "prepare", "synth", "data", "sweep"):
        assert f" {command} " in proc.stdout, command
    version = subprocess.run([sys.executable, "-m", "slstt.cli", "--version"], capture_output=True, text=True,
                             timeout=120)
    assert version.stdout.strip() == "slstt 0.1.0"

"""Session-wide generated data shared by the test files (built once per pytest session, lazily)."""

from __future__ import annotations

from pathlib import Path

import pytest

LONG_VIDEO_SECONDS = 24
LONG_VIDEO_SEED = 11


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small default synthetic corpus (6 subjects x 5 classes x 3 clips, 200 fps, 192 px), CASME II
    layout. Returns its folder: CASME2_RAW_selected/, CASME2-coding-synth.csv, manifest.csv, synth.json."""
    from slstt.data.synth import make_corpus

    out_dir = tmp_path_factory.mktemp("synth_corpus")
    make_corpus(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def synth_long_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(video.mp4, video.gt.csv): 24 s, 640x480, 30 fps, 6 micro + 2 macro events among distractors."""
    from slstt.data.synth import make_long_video

    video = tmp_path_factory.mktemp("synth_video") / "video.mp4"
    gt = make_long_video(video, seed=LONG_VIDEO_SEED, duration_s=LONG_VIDEO_SECONDS)
    return video, gt


@pytest.fixture(scope="session")
def no_face_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s 640x480 30 fps mp4 with no face in it."""
    from slstt.data.synth import make_no_face_video

    return make_no_face_video(tmp_path_factory.mktemp("no_face") / "no_face.mp4", seconds=3, fps=30)


def _read_video(path: Path) -> tuple[list, float]:
    """Every frame of a video file (BGR arrays) and its frame rate."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


@pytest.fixture(scope="session")
def read_video():
    """The tests' one video reader: read_video(path) -> (frames, fps)."""
    return _read_video

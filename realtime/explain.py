"""Why the spotter missed an event: for every ground-truth micro event, the rules that stood in its way
and, given a control (the same footage without the events, as `slstt synth --inject` and
`--style webcam --controls` write it),
whether the event alone was strong enough to pass the spotter's threshold on that footage.

The spotter records what its rules saw on every candidate frame (`Spotter.trace`, `CandidateTrace`).
For an event it did not find, the frames of the event and the spotter regions at its site are searched
for the best chance: the fewest rules against it, then the highest score / threshold. The rules there
are the reasons. With a control, the event's lift is the most it added to a region's score (copy
minus control, same frame); it is `strong` when that alone passes the region's threshold there. An
event that is not strong is found only when the footage's own movement happens to add up with it:
the footage moves too much for an event that size (the thresholds adapt to that movement).

    from slstt.realtime.explain import explain_video
    for e in explain_video("talk_inj0_0.mp4").events:
        print(e.region, e.amplitude_px, e.found, e.strong, e.reasons)
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from slstt.data.webcam import CONTROLS
from slstt.errors import SlsttError
from slstt.io import atomic_write_text
from slstt.realtime.analyze import GroundTruth, analyze_video, read_ground_truth
from slstt.realtime.spotting import BLINK_REGIONS, SPEECH_REGIONS, CandidateTrace, SpotterConfig

# ground-truth regions of slstt's webcam generator and `--inject` -> the spotter regions at that site;
# any other region name (a user's own labels) is looked for in every spotter region
SITES: dict[str, tuple[str, ...]] = {
    "brow_raise": ("inner_brow_r", "inner_brow_l", "outer_brow_r", "outer_brow_l"),
    "brow_lower": ("inner_brow_r", "inner_brow_l", "glabella"),
    "lip_corner": ("lip_corner_r", "lip_corner_l"),
    "lower_lip_chin": ("lower_lip", "chin"),
    "nose_wrinkle": ("nose_wing_r", "nose_wing_l"),
}
BELOW = "below threshold"
MOVED = "moved just before"  # the isolation rules: the region moved as much in the second before
SPEECH = "speech"
BLINK = "blink"
MACRO = "longer expression"
HEAD = "head moving fast"
WARMUP = "warm-up"
INTERVAL = "interval off"  # spotted, but the measured interval's IoU with the event is below 0.5
MACHINE = "not opened"  # every rule passed at some frame; the state machine was busy (another candidate,
# refractory after a spot, or many regions firing together)


@dataclass
class EventExplanation:
    video: str
    onset: int
    apex: int
    offset: int
    region: str  # the ground truth's
    amplitude_px: float | None
    context: str
    found: bool  # matched one-to-one by a micro spot with IoU >= 0.5 (MEGC rule)
    site: str  # the spotter region at the best chance
    frame: int  # ... and its candidate frame (-1: the spotter scored no frame of the event)
    ratio: float  # score / threshold there, before the rules
    reasons: tuple[str, ...]  # what stood in the way there (empty when found)
    lift: float | None = None  # px: the most the event added to a region's score over the control (copy - control)
    natural: float | None = None  # px: the control's score there (the footage's own movement at that moment)
    lift_threshold: float | None = None  # px: the region's threshold there
    strong: bool | None = None  # lift >= lift_threshold: the event alone would pass the threshold

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = "; ".join(self.reasons)
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


@dataclass
class VideoExplanation:
    video: str
    control: str | None
    events: list[EventExplanation]
    trace: dict[int, CandidateTrace]
    control_trace: dict[int, CandidateTrace] | None = None


def control_for(video: str | Path) -> Path | None:
    """The same footage without the micro events, when it is there: the control `slstt synth --inject`
    wrote beside an injected copy (<stem>_inj<seed>_<k>.mp4 -> <stem>_noevents.mp4), or a webcam set's
    (controls/<name>, slstt.data.webcam.write_controls)."""
    video = Path(video)
    m = re.fullmatch(r"(.+)_inj\d+_\d+", video.stem)
    control = video.with_name(f"{m.group(1)}_noevents{video.suffix}") if m else video.parent / CONTROLS / video.name
    return control if control.is_file() else None


def rules_against(t: CandidateTrace, site: str, cfg: SpotterConfig) -> tuple[float, list[str]]:
    """(score / threshold, the rules that kept `site` from opening an interval at candidate t), as
    Spotter._candidate and IntervalMachine apply them."""
    score, threshold = t.scores.get(site, 0.0), t.thresholds.get(site, float("inf"))
    ratio = score / threshold if threshold > 0 else 0.0
    reasons: list[str] = []
    if warming_up(t, cfg):
        reasons.append(WARMUP)
    if ratio < 1.0:
        reasons.append(BELOW)
    if site in t.moved_before:
        reasons.append(MOVED)
    left, penalties = ratio, []
    if t.speech == "skipped":
        reasons.append(SPEECH)
    elif t.speech == "penalised":
        factor = cfg.talk_factor if site in SPEECH_REGIONS else cfg.talk_face_factor
        if factor <= 0:
            reasons.append(SPEECH)
        else:
            left, penalties = left / factor, [SPEECH]
    if t.blink:
        if site in BLINK_REGIONS:
            reasons.append(BLINK)
        else:
            left, penalties = left / cfg.blink_factor, [*penalties, BLINK]
    if ratio >= 1.0 and left < 1.0:
        reasons += [p for p in penalties if p not in reasons]
    if site in t.macro:
        reasons.append(MACRO)
    if t.head > cfg.head_fast:
        reasons.append(HEAD)
    return ratio, reasons


def warming_up(t: CandidateTrace, cfg: SpotterConfig) -> bool:
    """The spotter decides nothing this early (its warm-up and calibration, Spotter.update)."""
    return t.time_s < cfg.decides_from_s


def is_open(t: CandidateTrace, cfg: SpotterConfig) -> bool:
    """The context rules (speech, blink, a longer expression, a fast head, the warm-up) leave at least
    one region open at candidate t: a large enough movement rising from calm would open an interval."""
    probe = replace(t, scores=dict.fromkeys(t.scores, 1e9), thresholds=dict.fromkeys(t.scores, 1.0),
                    moved_before=frozenset())
    return any(not rules_against(probe, region, cfg)[1] for region in t.scores)


class ContextTally:
    """A Spotter.trace sink that keeps counts, not frames (optionally also every trace in `keep`): how
    often, after the warm-up, the spotter was open (is_open) and each context rule was on."""

    def __init__(self, cfg: SpotterConfig, keep: dict[int, CandidateTrace] | None = None) -> None:
        self.cfg, self.keep = cfg, keep
        self.wants_thresholds = keep is not None  # the counts need none; explaining an event does
        self.counts = dict.fromkeys(("frames", "open", "speech", "blink", "macro", "fast_head"), 0)

    def __setitem__(self, index: int, t: CandidateTrace) -> None:
        if self.keep is not None:
            self.keep[index] = t
        if warming_up(t, self.cfg):
            return
        c = self.counts
        c["frames"] += 1
        c["open"] += is_open(t, self.cfg)
        c["speech"] += bool(t.speech)
        c["blink"] += t.blink
        c["macro"] += bool(t.macro)
        c["fast_head"] += t.head > self.cfg.head_fast

    def fractions(self) -> dict[str, float]:
        """rules_open and speech/blink/macro/fast_head _frames, as fractions of the candidate frames."""
        n = max(self.counts["frames"], 1)
        return {"rules_open": round(self.counts["open"] / n, 4),
                **{f"{k}_frames": round(self.counts[k] / n, 4) for k in ("speech", "blink", "macro", "fast_head")}}


def explain_events(video: str, truth: list[GroundTruth], trace: dict[int, CandidateTrace], spots: list[Any],
                   matched: set[tuple[int, int]], cfg: SpotterConfig,
                   control: dict[int, CandidateTrace] | None = None) -> list[EventExplanation]:
    """One EventExplanation per ground-truth micro event. spots: the micro SpotEvents; matched: the
    (onset, offset) of the events a spot matched."""
    out = []
    for g in (g for g in truth if g.kind == "micro"):
        sites = SITES.get(g.region) or tuple({r for t in trace.values() for r in t.scores})
        frames = [trace[i] for i in range(g.onset, g.offset + 1) if i in trace]
        found = (g.onset, g.offset) in matched
        best: tuple[int, float, str, int, list[str]] = (99, -1.0, "", -1, [])
        for t in frames:
            for site in sites:
                ratio, reasons = rules_against(t, site, cfg)
                if (len(reasons), -ratio) < (best[0], -best[1]):
                    best = (len(reasons), ratio, site, t.index, reasons)
        _, ratio, site, frame, reasons = best
        if found:
            reasons = []
        elif frames and not reasons:  # every rule passed somewhere: the spot went astray, or never opened
            near = any(s.onset_frame <= g.offset and s.offset_frame >= g.onset for s in spots)
            reasons = [INTERVAL if near else MACHINE]
        elif not frames:
            reasons = [BELOW]
        e = EventExplanation(video, g.onset, g.apex, g.offset, g.region, g.amplitude_px, g.context, found, site,
                             frame, max(ratio, 0.0), tuple(reasons))
        if control is not None:
            lifts = [(t.scores.get(s, 0.0) - control[t.index].scores.get(s, 0.0), control[t.index].scores.get(s, 0.0),
                      t.thresholds.get(s, float("inf"))) for t in frames if t.index in control for s in sites]
            if lifts:
                e.lift, e.natural, e.lift_threshold = max(lifts)
                e.strong = e.lift >= e.lift_threshold
        out.append(e)
    return out


def explain_video(video: str | Path, ground_truth: str | Path | None = None, *, control: str | Path | None = None,
                  config: Any = None, control_trace: dict[int, CandidateTrace] | None = None) -> VideoExplanation:
    """Analyse `video` with the spotter's trace on and explain every micro event of its ground truth
    (default <stem>.gt.csv). control: the same footage without the events (default: control_for's,
    when it exists); control_trace: its trace, if already computed."""
    video = Path(video)
    gt_path = Path(ground_truth) if ground_truth is not None else video.with_suffix(".gt.csv")
    if not gt_path.is_file():
        raise SlsttError(f"no ground truth for {video}: expected {gt_path} (kind,label,onset_frame,apex_frame,"
                         "offset_frame,... as `slstt synth` writes it)")
    truth = read_ground_truth(gt_path)
    trace: dict[int, CandidateTrace] = {}
    result = analyze_video(video, None, ground_truth=gt_path, config=config, trace=trace)
    control_path = Path(control) if control is not None else control_for(video)
    if control_path is not None and control_trace is None:
        control_trace = _trace_of(control_path, config)
    events = _explain(video.name, result, truth, trace, config, control_trace)
    return VideoExplanation(video.name, control_path.name if control_path else None, events, trace, control_trace)


def _trace_of(video: Path, config: Any) -> dict[int, CandidateTrace]:
    """Every candidate frame's CandidateTrace of `video` (a control: nothing written, no ground truth)."""
    trace: dict[int, CandidateTrace] = {}
    analyze_video(video, None, config=config, trace=trace)
    return trace


def _explain(name: str, result: Any, truth: list[GroundTruth], trace: dict[int, CandidateTrace], config: Any,
             control_trace: dict[int, CandidateTrace] | None) -> list[EventExplanation]:
    from slstt.realtime.pipeline import LiveConfig

    assert result.scores is not None
    matched = {(m["truth_onset"], m["truth_offset"]) for m in result.scores.matches}
    spots = [e for e in result.events if e.kind == "micro"]
    return explain_events(name, truth, trace, spots, matched, (config or LiveConfig()).spotter,
                          control_trace)


def explain_runs(runs: dict[Path, tuple[Any, list[GroundTruth], dict[int, CandidateTrace]]],
                 config: Any = None) -> list[EventExplanation]:
    """The events of traced analyses (video -> (AnalyzeResult, ground truth, trace), as analyze_many
    keeps them with explain=True), each injected copy against its control when that was analysed too."""
    out: list[EventExplanation] = []
    for video, (result, truth, trace) in runs.items():
        if any(g.kind == "micro" for g in truth):
            control = control_for(video)
            control_trace = runs[control][2] if control in runs else None
            if control is not None and control_trace is None:  # a control outside the analysed videos
                control_trace = _trace_of(control, config)
            out += _explain(video.name, result, truth, trace, config, control_trace)
    return out


def summary_lines(events: list[EventExplanation]) -> list[str]:
    """Found / strong counts and, for the missed events, how often each rule stood in the way (alone:
    the only one)."""
    n = len(events)
    if not n:
        return ["no micro events to explain"]
    found = sum(e.found for e in events)
    lines = [f"{n} micro events: {found} found ({found / n:.0%})"]
    judged = [e for e in events if e.strong is not None]
    if judged:
        strong = [e for e in judged if e.strong]
        lines.append(f"strong enough for this footage (the event alone, copy minus control, passes its region's "
                     f"threshold): {len(strong)} of {len(judged)}, of which {sum(e.found for e in strong)} found")
        amps = sorted({e.amplitude_px for e in judged if e.amplitude_px is not None})
        if amps:
            lines.append("  strong per amplitude: " + ", ".join(
                f"{a:g} px {sum(bool(e.strong) for e in judged if e.amplitude_px == a)}/"
                f"{sum(e.amplitude_px == a for e in judged)}" for a in amps))
    missed, every, alone = _reason_counts(events)
    if missed:
        lines.append(f"{len(missed)} missed; what stood in the way at their best chance (alone: the only rule):")
        lines += [f"  {reason:20s} {count:4d}   alone {alone[reason]:4d}" for reason, count in every]
    return lines


def _reason_counts(events: list[EventExplanation]) -> tuple[list[EventExplanation], list[tuple[str, int]], Counter[str]]:
    """(the missed events, how often each rule stood in their way, most first; how often it was the only one)."""
    missed = [e for e in events if not e.found]
    every = Counter(r for e in missed for r in e.reasons).most_common()
    return missed, every, Counter(e.reasons[0] for e in missed if len(e.reasons) == 1)


def write_csv(path: str | Path, events: list[EventExplanation]) -> Path:
    buf = io.StringIO()
    fields = list(EventExplanation.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for e in events:
        w.writerow(e.row())
    return atomic_write_text(path, buf.getvalue())


def plot(path: str | Path, events: list[EventExplanation]) -> Path:
    """explain.png: per amplitude, the events found / strong but missed / the rest; and, for the missed
    ones, how often each rule stood in the way (dark: the only one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slstt.io import atomic_savefig

    groups: list[float | None] = [*sorted({e.amplitude_px for e in events if e.amplitude_px is not None})] or [None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ax = axes[0]
    for i, a in enumerate(groups):
        these = [e for e in events if a is None or e.amplitude_px == a]
        found = sum(e.found for e in these)
        strong = sum(bool(e.strong) and not e.found for e in these)
        ax.bar(i, found, color="tab:green", label="found" if i == 0 else None)
        ax.bar(i, strong, bottom=found, color="tab:orange", label="strong, missed" if i == 0 else None)
        ax.bar(i, len(these) - found - strong, bottom=found + strong, color="tab:gray",
               label="missed, not strong" if i == 0 else None)
    ax.set_xticks(range(len(groups)), ["all" if a is None else f"{a:g} px" for a in groups])
    ax.set_ylabel("micro events")
    ax.set_title("strong: the event alone passes its region's threshold (needs a control)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    ax = axes[1]
    missed, every, alone = _reason_counts(events)
    ax.barh(range(len(every)), [n for _, n in every], color="tab:red", alpha=0.4, label="in the way")
    ax.barh(range(len(every)), [alone[r] for r, _ in every], color="tab:red", label="the only rule")
    ax.set_yticks(range(len(every)), [r for r, _ in every], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("missed events")
    ax.set_title(f"{len(missed)} of {len(events)} missed: what stood in the way at their best chance", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = atomic_savefig(path, fig, dpi=110)
    plt.close(fig)
    return out

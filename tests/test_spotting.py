"""The spotter's three parts on their own (motion scorer, per-region thresholds, interval state
machine) and together, on frames rendered here from the packaged face photo with known movements."""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np
import pytest

from slstt.data import synth
from slstt.errors import SlsttError
from slstt.preprocess.face import crop_box
from slstt.realtime.spotting import (
    BLINK_REGIONS,
    DEFAULT_REGIONS,
    Candidate,
    IntervalMachine,
    MotionScorer,
    RegionThresholds,
    Spotter,
    SpotterConfig,
    rise_return_score,
)
from slstt.realtime.tracker import tracking_box

FPS = 30.0


@pytest.fixture(scope="module")
def face():
    """Gray photo, its landmarks and the lip-corner bump of a 3 px movement (field at full amplitude)."""
    img = cv2.cvtColor(synth.photo(), cv2.COLOR_BGR2GRAY)
    lm = synth.photo_landmarks().astype(np.float32)
    bumps = synth.motion_bumps(lm, (synth.Motion((61,), up=0.6, out=0.8, sigma=0.12),), 3.0)
    field = synth.bumps_field(bumps, img.shape[:2])
    return img, lm, field


def render(img: np.ndarray, shift: tuple[float, float], field: np.ndarray | None = None, k: float = 0.0) -> np.ndarray:
    """The photo moved by `shift` plus k x a forward displacement field (backward-mapped approximation)."""
    h, w = img.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mx, my = xs - shift[0], ys - shift[1]
    if field is not None and k:
        mx, my = mx - k * field[..., 0], my - k * field[..., 1]
    return cv2.remap(img, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def moved_landmarks(lm: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    return (lm + np.array(shift, np.float32)).astype(np.float32)


# --- rise-and-return score -------------------------------------------------------------------
def test_rise_return_score_is_the_amplitude_of_a_return_and_zero_for_steady_motion():
    v = np.array([1.0, 2.0])
    assert rise_return_score(v, v) == pytest.approx(np.hypot(1, 2))  # displaced from both sides
    assert rise_return_score(v, -v) == 0.0  # linear motion: c is between a and b
    assert rise_return_score(v, np.zeros(2)) == 0.0  # a ramp (onset of a long expression)
    assert 0 < rise_return_score(v, 0.5 * v) < rise_return_score(v, v)  # partial return: partial score


# --- motion scorer ---------------------------------------------------------------------------
def test_motion_scorer_finds_the_moved_region_and_ignores_head_translation(face):
    img, lm, field = face
    cfg = SpotterConfig()
    scorer = MotionScorer(cfg, gap=1, size=cfg.flow_size, regions=DEFAULT_REGIONS, highpass=cfg.highpass)
    scorer.coarse_field = True
    box = crop_box(lm)
    a = render(img, (0, 0))
    b = render(img, (2.0, 1.0), field, 1.0)  # the head moved 2.2 px and the right lip corner 3 px more
    assert scorer.update(a, 0, box, lm) is None
    motion = scorer.update(b, 1, crop_box(moved_landmarks(lm, (2, 1))), moved_landmarks(lm, (2, 1)))
    assert motion is not None and motion.index == 0 and motion.field is not None and motion.geometry is not None
    scale = cfg.flow_size / box.side
    assert motion.head == pytest.approx(np.hypot(2, 1) * scale, rel=0.35)  # rigid motion measured
    peaks = {name: float(np.hypot(motion.field[..., 0], motion.field[..., 1])[zone].max())
             for name, zone in motion.geometry.zones.items()}
    best = max(peaks, key=peaks.get)
    assert best == "lip_corner_r", peaks
    far = [peaks[n] for n in ("inner_brow_l", "outer_brow_l", "glabella", "cheek_l") if n in peaks]
    assert max(far) < 0.35 * peaks[best], peaks  # the translation itself left (almost) nothing


# --- thresholds ------------------------------------------------------------------------------
def test_region_threshold_is_median_plus_k_mad_with_floor_and_calibration():
    rng = np.random.default_rng(0)
    th = RegionThresholds(k=5.0, floor=0.05, window=500)
    values = rng.normal(0.3, 0.02, 400)
    for v in values:
        th.add({"chin": float(v), "glabella": 0.0})
    med = np.median(values)
    mad = np.median(np.abs(values - med)) * 1.4826
    assert th["chin"] == pytest.approx(med + 5 * mad, rel=1e-6)
    assert th["glabella"] == 0.05  # a still region: the floor
    for v in rng.normal(1.0, 0.1, 60):  # a noisier user calibrates: the floor rises for that region only
        th.calibrate({"glabella": float(v)})
    th.end_calibration()
    assert th["glabella"] > 1.0 and th["chin"] == pytest.approx(med + 5 * mad, rel=1e-6)


# --- interval state machine ------------------------------------------------------------------
def _cand(i: int, ratios: dict[str, float], head: float = 0.5, blink: bool = False) -> Candidate:
    full = {name: 0.1 for name in DEFAULT_REGIONS}
    full.update(ratios)
    return Candidate(i, full, {k: v * 0.2 for k, v in full.items()}, head, blink)


def _run(machine: IntervalMachine, seq: list[Candidate]):
    return [d for c in seq if (d := machine.step(c)) is not None]


HUMP = [0.2, 0.6, 1.2, 2.0, 2.6, 2.1, 1.1, 0.4, 0.2, 0.1, 0.1, 0.1]


def test_machine_spots_one_event_at_its_peak_and_names_the_region():
    m = IntervalMachine(SpotterConfig(), max_open=8, refractory=9)
    out = _run(m, [_cand(i, {"chin": r}) for i, r in enumerate(HUMP)])
    assert len(out) == 1 and out[0].kind == "spot" and out[0].region == "chin" and out[0].apex.index == 4


def test_machine_rejects_global_movements_and_fast_turns():
    cfg = SpotterConfig()
    everywhere = [_cand(i, {name: r for name in DEFAULT_REGIONS}) for i, r in enumerate(HUMP)]
    out = _run(IntervalMachine(cfg, 8, 9), everywhere)
    assert [d.kind for d in out] == ["reject"] and "regions fired together" in out[0].reason
    turning = [_cand(i, {"chin": r}, head=cfg.head_fast + 1) for i, r in enumerate(HUMP)]
    out = _run(IntervalMachine(cfg, 8, 9), turning)
    assert [d.kind for d in out] == ["reject"] and "head moving fast" in out[0].reason


def test_machine_ignores_lid_dragged_regions_during_a_blink_but_not_the_mouth():
    cfg = SpotterConfig()
    brow = next(iter(BLINK_REGIONS))
    assert _run(IntervalMachine(cfg, 8, 9), [_cand(i, {brow: r}, blink=True) for i, r in enumerate(HUMP)]) == []
    out = _run(IntervalMachine(cfg, 8, 9), [_cand(i, {"lower_lip": r}, blink=True) for i, r in enumerate(HUMP)])
    assert len(out) == 1 and out[0].region == "lower_lip"


def test_machine_gives_one_spot_per_event_non_maximum_suppression():
    double = HUMP[:6] + [1.5, 2.4, 1.0] + [0.1] * 12  # a second crest right after the first: one event
    out = _run(IntervalMachine(SpotterConfig(), 8, 9), [_cand(i, {"chin": r}) for i, r in enumerate(double)])
    assert len(out) == 1 and out[0].kind == "spot"


# --- the whole spotter -----------------------------------------------------------------------
def _spot(frames: list[tuple[np.ndarray, np.ndarray]], cfg: SpotterConfig | None = None):
    spotter = Spotter(cfg or SpotterConfig(), FPS)
    closed = []
    for i, (gray, lm) in enumerate(frames):
        step = spotter.update(gray, i, i / FPS, tracking_box(lm, "slstt"), lm)
        closed += step.closed
    return closed


def test_spotter_finds_a_micro_movement_on_a_drifting_head_and_measures_its_interval(face):
    img, lm, field = face
    n, onset, apex, offset = 120, 70, 75, 80  # a 0.33 s rise and return at 2.3 s
    profile = synth.rise_fall(np.arange(n), onset, apex, offset)
    frames = []
    for i in range(n):
        shift = (0.08 * i, 0.03 * i)  # the head drifts 2.4 px/s all along
        frames.append((render(img, shift, field, float(profile[i])), moved_landmarks(lm, shift)))
    events = _spot(frames)
    micro = [e for e in events if e.kind == "micro"]
    assert len(micro) == 1, [(e.kind, e.onset, e.offset, e.region) for e in events]
    e = micro[0]
    inter = min(e.offset, offset) - max(e.onset, onset) + 1
    union = max(e.offset, offset) - min(e.onset, onset) + 1
    assert inter / union >= 0.5, (e.onset, e.apex, e.offset)
    assert e.region.startswith("lip_corner") and abs(e.apex - apex) <= 2
    assert (e.closed_index - e.apex) / FPS <= 0.5  # decided within 0.5 s of the apex


def test_a_face_turned_in_the_frame_is_spotted_as_upright(face):
    """A sideways phone, a head on a pillow: the paper's crop is sized along the image's vertical, so it
    shrinks to the nose of a face turned 70 degrees and has no size at 90; the tracker keeps the face
    (tracking_box), and the spotter measures it along the face's own axes (upright_box; the lids' and
    the jaw's "down"), so it spots what it spots upright."""
    img, lm, field = face
    n, onset, apex, offset = 120, 70, 75, 80
    profile = synth.rise_fall(np.arange(n), onset, apex, offset)
    h, w = img.shape
    size = int(np.hypot(h, w)) + 2
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 70, 1.0)  # counter-clockwise on screen
    turn[:, 2] += ((size - w) / 2, (size - h) / 2)  # onto a canvas that holds the whole photo
    upright, turned = [], []
    for i in range(n):
        shift = (0.08 * i, 0.03 * i)
        gray, points = render(img, shift, field, float(profile[i])), moved_landmarks(lm, shift)
        upright.append((gray, points))
        turned.append((cv2.warpAffine(gray, turn, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
                       (points @ turn[:, :2].T + turn[:, 2]).astype(np.float32)))
    assert crop_box(turned[0][1], "slstt").side < 0.5 * crop_box(lm, "slstt").side  # the paper's box: the nose
    quarter = np.stack([lm[:, 1], w - 1 - lm[:, 0]], 1)  # np.rot90: a quarter turn
    with pytest.raises(SlsttError, match="degenerate"):
        crop_box(quarter, "slstt")
    assert abs(tracking_box(quarter, "slstt").side - crop_box(lm, "slstt").side) <= 2
    micro = {name: [(e.onset, e.apex, e.offset, e.region) for e in _spot(frames) if e.kind == "micro"]
             for name, frames in (("upright", upright), ("turned", turned))}
    assert len(micro["upright"]) == 1 and len(micro["turned"]) == 1, micro
    (a0, p0, b0, r0), (a1, p1, b1, r1) = micro["upright"][0], micro["turned"][0]
    assert r1 == r0 and abs(p1 - p0) <= 1 and abs(a1 - a0) <= 1 and abs(b1 - b0) <= 1, micro


def test_a_follower_decides_as_a_spotter_of_its_own_config_on_the_leaders_flows(face):
    """Spotter.follower (analyze's operating curve): the same intervals as a separate spotter at its
    threshold_k, from the leader's movements; a knob that changes what is measured is refused."""
    img, lm, field = face
    n, onset, apex, offset = 120, 70, 75, 80
    profile = synth.rise_fall(np.arange(n), onset, apex, offset)
    frames = [(render(img, (0.08 * i, 0.03 * i), field, float(profile[i])), moved_landmarks(lm, (0.08 * i, 0.03 * i)))
              for i in range(n)]
    leader, alone = Spotter(SpotterConfig(), FPS), Spotter(SpotterConfig(threshold_k=1.5), FPS)
    low, high = leader.follower(threshold_k=1.5), leader.follower(threshold_k=1000.0)
    own, separate = [], []
    for i, (gray, landmarks) in enumerate(frames):
        own += leader.update(gray, i, i / FPS, crop_box(landmarks), landmarks).closed
        separate += alone.update(gray, i, i / FPS, crop_box(landmarks), landmarks).closed
    own, separate = own + leader.flush(), separate + alone.flush()
    assert low.intervals == separate and [e.kind for e in own] == ["micro"]  # to the last float
    assert not [e for e in high.intervals if e.kind == "micro"]  # each decides with its own k
    assert low.scorer._frames == deque()  # it measured nothing itself
    with pytest.raises(ValueError, match="gap_s"):
        leader.follower(gap_s=0.3)


def test_every_knob_the_motion_scorer_reads_is_a_motion_field():
    """A follower may change any knob but MOTION_FIELDS: a new knob the scorer reads must join them."""
    import inspect
    import re

    from slstt.realtime.spotting import MOTION_FIELDS, RegionGeometry

    read = set(re.findall(r"self\.cfg\.(\w+)", inspect.getsource(MotionScorer)))
    scorers = [line for line in inspect.getsource(Spotter.__init__).splitlines() if "MotionScorer(" in line]
    read |= {name for line in scorers for name in re.findall(r"\bc\.(\w+)", line)}
    assert read and read <= MOTION_FIELDS, read - MOTION_FIELDS
    assert "self.cfg" not in inspect.getsource(RegionGeometry) and MOTION_FIELDS <= set(SpotterConfig.__dataclass_fields__)


def test_spotter_stays_quiet_on_head_motion_without_expressions(face):
    img, lm, _ = face
    n = 120
    t = np.arange(n) / FPS
    frames = []
    for i in range(n):  # a nod-like back-and-forth of 3 px with a 0.6 s period plus a drift
        shift = (0.05 * i, 3.0 * np.sin(2 * np.pi * t[i] / 0.6))
        frames.append((render(img, shift), moved_landmarks(lm, shift)))
    events = _spot(frames)
    assert [e for e in events if e.kind == "micro"] == []


# --- the face's movement model: parallax of a rotating head, the jaw -------------------------------
@pytest.fixture(scope="module")
def turning_head():
    """Webcam-generator frames of one 3-D head (no lighting, noise or events): 0 neutral, 1 yawed 3
    degrees, 2 neutral with the jaw opened by 4 % of the face; MediaPipe's landmarks and depth of
    frame 0, the jaw's opening in px."""
    from slstt.data import webcam
    from slstt.preprocess.face import FaceLandmarker

    plan, scene = webcam.plan_webcam_video(7, duration_s=2.0, n_micro=0, face_px=200)
    plan.events, plan.gaze_lid = [], None  # the head and the jaw alone
    plan.head[:] = plan.head[0]
    plan.head[:, :3] = 0.0
    plan.head[1, 0] = 3.0
    plan.jaw[:] = 0.0
    plan.jaw[2] = 0.04 * plan.face_px
    frames = webcam.render_frames(plan, scene, [0, 1, 2], micro=False, camera=False)
    with FaceLandmarker() as landmarker:
        lm = landmarker.detect(frames[0])
        depth = landmarker.last_depth
    assert lm is not None and depth is not None and depth.shape == (478,)
    return [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames], lm, depth, float(plan.jaw[2])


def _motion(cfg: SpotterConfig, frames, lm, depth, first: int, last: int):
    scorer = MotionScorer(cfg, gap=last - first, size=cfg.flow_size, regions=DEFAULT_REGIONS, highpass=cfg.highpass)
    scorer.coarse_field = True
    box = crop_box(lm)
    motion = None
    for i in range(first, last + 1):
        motion = scorer.update(frames[i], i, box, lm, depth)
    assert motion is not None and motion.field is not None and motion.geometry is not None
    peaks = {n: float(np.hypot(motion.field[..., 0], motion.field[..., 1])[z].max()) for n, z in motion.geometry.zones.items()}
    return motion, peaks, cfg.flow_size / box.side


def test_depth_model_removes_most_of_a_head_rotations_parallax(turning_head):
    frames, lm, depth, _ = turning_head
    _, flat, _ = _motion(SpotterConfig(depth_model=False), frames, lm, depth, 0, 1)
    _, with_depth, _ = _motion(SpotterConfig(), frames, lm, depth, 0, 1)
    # a 3 degree yaw moves the nose ~1 px more than the cheeks on the crop: 2-D models leave it behind
    assert max(flat.values()) > 0.3
    assert max(with_depth.values()) < 0.75 * max(flat.values()), (flat, with_depth)


def test_jaw_movement_is_measured_and_a_head_turn_is_not_a_jaw(turning_head):
    frames, lm, depth, jaw_px = turning_head
    opened, _, scale = _motion(SpotterConfig(), frames, lm, depth, 0, 2)  # frame 2: the jaw opened
    turned, _, _ = _motion(SpotterConfig(), frames, lm, depth, 0, 1)  # frame 1: the head turned
    assert 0.5 * jaw_px * scale < opened.jaw < 2.0 * jaw_px * scale, (opened.jaw, jaw_px * scale)
    assert turned.jaw < 0.25 * opened.jaw, (turned.jaw, opened.jaw)


def test_talking_is_the_jaw_opening_and_closing_before_a_candidate_not_one_movement():
    """Speech is the jaw opening and closing again and again in the second before a candidate's rise;
    one movement down and back (a nod, a smile, a blink dragging the skin) is not, nor is the
    candidate's own movement, nor movement within +-talk_jaw."""
    from slstt.realtime.spotting import FrameMotion

    cfg = SpotterConfig()
    c = 100
    big = 2 * cfg.talk_jaw

    def talking(jaw_y: dict[int, float]) -> bool:
        spotter = Spotter(cfg, FPS)
        for j in range(c - 40, c + 1):
            y = jaw_y.get(j, 0.0)
            spotter._motion[j] = FrameMotion(j, {}, 0.0, 0.0, jaw=abs(y), jaw_y=y)
        return spotter._talking(c)

    window = range(c - 30, c - 17)
    assert talking({j: big if (j // 3) % 2 else -big for j in window})  # open, close, open, ...
    assert not talking({j: big if j < c - 24 else -big for j in window})  # down, then back up once
    assert not talking({j: 0.9 * cfg.talk_jaw * (1 if (j // 3) % 2 else -1) for j in window})  # within +-talk_jaw
    assert not talking({j: big if (j // 3) % 2 else -big for j in range(c - 16, c + 1)})  # the candidate's own


def test_wide_blur_gives_the_same_local_high_pass_as_the_full_size_blur():
    """The spotter's local compensation (flow minus its blur normalised by the face mask's) is the
    same, within 1 % of the flow's RMS, with the cheap wide blur; small sigmas are not approximated."""
    from slstt.realtime.spotting import wide_blur

    rng = np.random.default_rng(0)
    for size, sigma in ((112, 0.12 * 112), (64, 0.3 * 64)):
        flow = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 3)
        mask = np.zeros((size, size), np.float32)
        cv2.circle(mask, (size // 2, size // 2), size // 3, 1, -1)
        exact = flow - cv2.GaussianBlur(flow * mask, (0, 0), sigma) / (cv2.GaussianBlur(mask, (0, 0), sigma) + 1e-6)
        cheap = flow - wide_blur(flow * mask, sigma) / (wide_blur(mask, sigma) + 1e-6)
        inside = mask > 0
        assert np.sqrt(((exact - cheap)[inside] ** 2).mean()) < 0.01 * np.sqrt((flow[inside] ** 2).mean())
        assert not np.array_equal(exact, cheap)  # it is an approximation, not the same call
    small = rng.normal(0, 1, (112, 112)).astype(np.float32)
    np.testing.assert_array_equal(wide_blur(small, 4.0), cv2.GaussianBlur(small, (0, 0), 4.0))


def test_quantile_is_numpys_to_the_last_bit():
    """The robust fits drop residuals above their 70 % quantile: the partition-based quantile must give
    numpy's float exactly (else the kept points, and the events, would change)."""
    from slstt.realtime.spotting import quantile

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 12, 100, 255, 256):
        for _ in range(50):
            x = rng.normal(size=n) * rng.uniform(0.01, 10)
            for q in (0.3, 0.5, 0.7, 0.9):
                assert quantile(x, q) == np.quantile(x, q)


@pytest.mark.parametrize("mode", ["penalise", "skip"])
def test_skip_during_speech_drops_candidates_only_while_the_jaw_works(mode):
    """during_speech="skip": a clear rise-and-return in the glabella is no candidate while the jaw works
    on the flows around it (speech), and is one when the jaw is still; the default keeps it."""
    from types import SimpleNamespace

    from slstt.realtime.spotting import FrameMotion

    cfg = SpotterConfig(during_speech=mode)
    c = 100

    def ratio(jaw_working: bool) -> float:
        spotter = Spotter(cfg, FPS)
        g = cfg.flow_size // 4
        zone = np.zeros((g, g), bool)
        zone[5:8, 12:15] = True
        geometry = SimpleNamespace(zones={"glabella": zone})
        for j in range(c - 2 * spotter.gap - 2, c + 1):
            jaw = 2 * cfg.talk_jaw if jaw_working and j >= c - spotter.gap else 0.0
            spotter._motion[j] = FrameMotion(j, {}, 0.0, 0.0, jaw=jaw)
        rise, back = np.zeros((g, g, 2), np.float32), np.zeros((g, g, 2), np.float32)
        rise[zone], back[zone] = (1.0, 0.0), (-1.0, 0.0)  # c - gap -> c: +1 px; c -> c + gap: back
        spotter._motion[c - spotter.gap] = FrameMotion(c - spotter.gap, {}, 0.0, 0.0, rise, geometry)
        spotter._motion[c] = FrameMotion(c, {}, 0.0, 0.0, back, geometry, jaw=2 * cfg.talk_jaw if jaw_working else 0.0)
        cand = spotter._candidate(c + spotter.gap)
        assert cand is not None and cand.scores["glabella"] == pytest.approx(1.0)
        return cand.ratios["glabella"]

    assert ratio(jaw_working=False) > 1.0
    assert (ratio(jaw_working=True) == 0.0) == (mode == "skip")


def test_during_speech_must_be_a_known_mode():
    from slstt.realtime.pipeline import live_config

    assert live_config(during_speech="skip").spotter.during_speech == "skip"
    with pytest.raises(SlsttError, match="--during-speech 'mute': choose penalise or skip"):
        live_config(during_speech="mute")


def test_speech_at_the_candidate_ignores_speech_regions_and_raises_the_others_bar():
    """A syllable's worth of jaw movement on the flows around a candidate (the first syllable of a
    sentence: no earlier flows say "talking" yet) is speech now: the speech regions (what the lips
    drag: here a lip corner and a nose wing) are ignored, the glabella needs talk_face_factor times
    its threshold. A lower-face micro-movement's smaller jaw movement changes nothing."""
    from types import SimpleNamespace

    from slstt.realtime.spotting import SPEECH_REGIONS, FrameMotion

    cfg = SpotterConfig()
    c = 100
    assert {"lip_corner_r", "nose_wing_l"} <= set(SPEECH_REGIONS) and "glabella" not in SPEECH_REGIONS

    def ratios(jaw: float) -> dict[str, float]:
        spotter = Spotter(cfg, FPS)
        g = cfg.flow_size // 4
        zones = {name: np.zeros((g, g), bool) for name in ("glabella", "lip_corner_r", "nose_wing_l")}
        zones["glabella"][5:8, 12:15] = zones["lip_corner_r"][20:23, 8:11] = zones["nose_wing_l"][14:17, 16:19] = True
        geometry = SimpleNamespace(zones=zones)
        for j in range(c - 2 * spotter.gap - 2, c + 1):
            spotter._motion[j] = FrameMotion(j, {}, 0.0, 0.0, jaw=jaw if j >= c - spotter.gap else 0.0)
        rise, back = np.zeros((g, g, 2), np.float32), np.zeros((g, g, 2), np.float32)
        for zone in zones.values():
            rise[zone], back[zone] = (1.0, 0.0), (-1.0, 0.0)
        spotter._motion[c - spotter.gap] = FrameMotion(c - spotter.gap, {}, 0.0, 0.0, rise, geometry)
        spotter._motion[c] = FrameMotion(c, {}, 0.0, 0.0, back, geometry, jaw=jaw)
        cand = spotter._candidate(c + spotter.gap)
        assert cand is not None and all(v == pytest.approx(1.0) for v in cand.scores.values())
        return cand.ratios

    still, micro, syllable = ratios(0.0), ratios(0.6 * cfg.talk_now_jaw), ratios(1.5 * cfg.talk_now_jaw)
    assert all(v > 1.0 for v in still.values()) and micro == still
    assert syllable["lip_corner_r"] == syllable["nose_wing_l"] == 0.0
    assert syllable["glabella"] == pytest.approx(still["glabella"] / cfg.talk_face_factor)

"""The MEGC long-video spotting benchmarks: CAS(ME)^2 (`casme_sq`) and SAMM Long Videos (`samm_lv`),
as released, and the MEGC 2020/2021 spotting score.

Layouts (checked against public MEGC spotting code, see docs in the README):
- CAS(ME)^2: ``rawpic/s15/15_0101disgustingteeth/img1.jpg`` (30 fps) and ``CAS(ME)^2code_final.xlsx``.
  Its first sheet has no header row; columns: participant (1..22), video name and expression
  number (``disgust1_1``), onset, apex, offset, AUs, estimated emotion, expression type
  (``micro-expression``/``macro-expression``), self-reported emotion. Sheet ``naming rule1`` maps the
  participant to the subject folder (columns: subject number, name, participant), sheet
  ``naming rule2`` maps the 4-digit video code in the folder name (``0101``) to the name (``disgust1``).
- SAMM Long Videos: ``SAMM_longvideos/006_1/006_1_0001.jpg`` (200 fps) and
  ``SAMM_LongVideos_V3_Release.xlsx``: title rows, then a header row (Subject, Filename, Inducement
  Code, Onset, Apex, Offset, Duration, Type, Action Units, Notes); Filename ``006_1_1`` is video
  ``006_1``, expression 1; Type ``Micro - 1/2`` or ``Macro``.

Frame numbers are the numbers in the frame file names (img1.jpg = 1), as in the annotations.
Annotation errors are never a crash: each is a Problem (kept with a fix, or skipped).

Scoring (MEGC 2020/2021): a spotted interval is a true positive when its IoU with a ground-truth
interval of the same video and the same kind is >= 0.5 (frames counted inclusively); matching is
one-to-one (maximum matching); FP = spotted - TP, FN = ground truth - TP; the overall score pools the
micro and macro counts. A kind is scored against the ground truth of that kind, as MEGC scores the
micro and the macro submissions separately.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slstt.data.samples import Problem
from slstt.errors import SlsttError

LONG_DATASETS = ("casme_sq", "samm_lv")
LONG_FPS = {"casme_sq": 30.0, "samm_lv": 200.0}
# MEGC: a micro-expression lasts at most 0.5 s: 15 frames at 30 fps, 100 frames at 200 fps.
MICRO_MAX_FRAMES = {"casme_sq": 15, "samm_lv": 100}
KINDS = ("micro", "macro")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class GTInterval:
    """One interval in frame numbers (inclusive). Also used for spotted intervals."""

    kind: str  # micro | macro
    onset: int
    apex: int | None
    offset: int
    label: str = ""  # estimated emotion, when annotated
    where: str = ""  # annotation file:row


@dataclass
class LongVideo:
    subject: str  # s15 (CAS(ME)^2) | 006 (SAMM-LV)
    video: str  # folder name: 15_0101disgustingteeth | 006_1
    frames: list[Path]  # in frame-number order
    frame_numbers: list[int]
    fps: float
    intervals: list[GTInterval] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.video}"

    @property
    def missing_frames(self) -> int:
        """Frame numbers absent between the first and the last frame on disk."""
        if not self.frame_numbers:
            return 0
        return self.frame_numbers[-1] - self.frame_numbers[0] + 1 - len(self.frame_numbers)


@dataclass
class LongVideoTable:
    dataset: str
    videos: list[LongVideo]
    problems: list[Problem] = field(default_factory=list)
    annotations: Path | None = None

    @property
    def subjects(self) -> list[str]:
        return sorted({v.subject for v in self.videos})

    def truth(self) -> dict[str, list[GTInterval]]:
        return {v.key: list(v.intervals) for v in self.videos}

    def counts(self) -> dict[str, int]:
        kinds = Counter(iv.kind for v in self.videos for iv in v.intervals)
        return {"videos": len(self.videos), "subjects": len(self.subjects), "micro": kinds["micro"],
                "macro": kinds["macro"], "frames": sum(len(v.frames) for v in self.videos),
                "missing_frames": sum(v.missing_frames for v in self.videos), "problems": len(self.problems)}

    def problem_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))


# ---------------------------------------------------------------- reading

def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # xlsx numbers come back as 46.0
    return str(value).replace("\r", "").replace("\n", " ").strip()


def _sheets(path: Path) -> dict[str, list[list[str]]]:
    """{sheet name: rows of cell text} of an xlsx workbook."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zip/XML errors of a damaged or non-xlsx file
        raise SlsttError(f"cannot read annotation workbook {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                         "pass the released .xlsx with --annotations") from None
    try:
        return {ws.title: [[_cell(v) for v in row] for row in ws.iter_rows(values_only=True)] for ws in book.worksheets}
    finally:
        book.close()


def _frame(text: str) -> int | None:
    """A frame number cell: int, or None when empty / not a number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def list_frames(folder: Path) -> dict[int, Path]:
    """{frame number: path} of the images in a video folder (number = trailing digits of the name)."""
    frames = {}
    for entry in os.scandir(folder):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
            m = re.search(r"(\d+)$", stem)
            if m:
                frames[int(m.group(1))] = Path(entry.path)
    return frames


def _find(folder_candidates: list[Path], patterns: tuple[str, ...]) -> Path | None:
    import fnmatch

    for pattern in patterns:
        for folder in dict.fromkeys(folder_candidates):
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    if path.is_file() and not path.name.startswith("~$") and fnmatch.fnmatch(path.name.lower(), pattern):
                        return path
    return None


def _annotation_file(dataset: str, roots: list[Path], annotations: str | Path | None) -> Path:
    if annotations is not None:
        path = Path(annotations)
        if not path.is_file():
            raise SlsttError(f"{dataset}: annotation file {path} not found; check --annotations")
        return path
    patterns = {"casme_sq": ("cas(me)^2code_final*.xlsx", "cas(me)2code_final*.xlsx", "*code_final*.xlsx"),
                "samm_lv": ("samm_longvideos_v*_release*.xlsx", "samm_longvideos*.xlsx")}[dataset]
    found = _find(roots, patterns)
    if found is None:
        expect = {"casme_sq": "CAS(ME)^2code_final.xlsx", "samm_lv": "SAMM_LongVideos_V3_Release.xlsx"}[dataset]
        raise SlsttError(f"{dataset}: no {expect} in {roots[0]}; pass --annotations <file>")
    return found


def _videos_dir(dataset: str, root: Path) -> Path:
    """The folder holding the data set's frame folders, accepting the release folder or one above it."""
    if not root.is_dir():
        raise SlsttError(f"{dataset}: data root {root} does not exist; pass --data-root <folder>")
    names: tuple[str, ...]
    if dataset == "casme_sq":
        names = ("rawpic", "CASME_sq/rawpic", "CAS(ME)^2/rawpic", "CAS(ME)2/rawpic", "rawpic/rawpic")
        pattern, expect = r"s\d+", "rawpic/s15/15_0101disgustingteeth/img1.jpg"
    else:
        names = ("SAMM_longvideos", "SAMM_LongVideos", "SAMM_MEGC/SAMM_longvideos", "SAMMLV/SAMM_longvideos")
        pattern, expect = r"\d+_\d+", "SAMM_longvideos/006_1/006_1_0001.jpg"
    for folder in [root / n for n in names] + [root]:
        try:
            if any(e.is_dir() and re.fullmatch(pattern, e.name) for e in os.scandir(folder)):
                return folder
        except OSError:
            continue
    raise SlsttError(f"{dataset}: no {names[0]} folder with video folders under {root}; expected {expect}")


def _kind(type_text: str, onset: int, offset: int, dataset: str) -> tuple[str, str | None]:
    """(kind, note): the annotated type; the MEGC duration rule (<= 0.5 s is micro) when it is
    missing; a note when the two disagree."""
    t = type_text.lower()
    by_length = "micro" if offset - onset <= MICRO_MAX_FRAMES[dataset] else "macro"
    if "micro" in t:
        kind = "micro"
    elif "macro" in t:
        kind = "macro"
    else:
        return by_length, f"expression type {type_text!r} unknown; {by_length} by its length ({offset - onset} frames)"
    if kind == "micro" and by_length == "macro":
        return kind, f"annotated micro but {offset - onset} frames long (> {MICRO_MAX_FRAMES[dataset]}); kept as micro"
    return kind, None


@dataclass
class _Row:
    subject: str
    video: str
    onset_text: str
    apex_text: str
    offset_text: str
    type_text: str
    label: str
    where: str


def _interval(row: _Row, dataset: str, problems: list[Problem], key: str) -> GTInterval | None:
    """A checked interval, or None (skipped, with a problem). MEGC conventions: apex 0 means not
    annotated; offset 0 means not annotated and the apex closes the interval."""
    onset, apex, offset = (_frame(t) for t in (row.onset_text, row.apex_text, row.offset_text))

    def problem(kind: str, message: str) -> None:
        problems.append(Problem(kind, f"{row.where} {key}", message))

    if onset is None or onset < 0 or (apex is None and row.apex_text not in ("", "/", "-")) or \
            (offset is None and row.offset_text not in ("", "/", "-")):
        problem("bad_annotation", f"onset/apex/offset {row.onset_text!r}/{row.apex_text!r}/{row.offset_text!r} "
                "are not frame numbers; row skipped")
        return None
    if apex is None or apex <= 0:  # 0 (CAS(ME)^2), -1 (SAMM-LV) or empty: not annotated
        problem("apex_missing", f"apex {row.apex_text or 'empty'} means not annotated; kept without an apex")
        apex = None
    if offset is None or offset == 0:
        if apex is None:
            problem("bad_annotation", f"offset {row.offset_text or 'empty'} and no apex: the interval has no end; row skipped")
            return None
        problem("offset_missing", f"offset {row.offset_text or 'empty'} means not annotated; the apex {apex} closes the interval")
        offset = apex
    if offset < 0 or onset > offset:
        problem("bad_annotation", f"onset {onset} > offset {offset}; row skipped")
        return None
    if apex is not None and not onset <= apex <= offset:
        problem("apex_outside", f"apex {apex} outside [{onset}, {offset}]; kept without an apex")
        apex = None
    kind, note = _kind(row.type_text, onset, offset, dataset)
    if note:
        problem("type_unknown" if "unknown" in note else "type_length", note)
    return GTInterval(kind, onset, apex, offset, row.label, row.where)


# ---------------------------------------------------------------- CAS(ME)^2

def _naming_sheets(sheets: dict[str, list[list[str]]], path: Path) -> tuple[list[list[str]], list[list[str]]]:
    by_name = {re.sub(r"[^a-z0-9]", "", name.lower()): rows for name, rows in sheets.items()}
    rule1, rule2 = by_name.get("namingrule1"), by_name.get("namingrule2")
    ordered = list(sheets.values())
    if rule1 is None and len(ordered) >= 3:
        rule1, rule2 = ordered[1], ordered[2]
    if rule1 is None or rule2 is None:
        raise SlsttError(f"{path}: no 'naming rule1' and 'naming rule2' sheets (participant -> subject folder, "
                         "video code -> name); pass the released CAS(ME)^2code_final.xlsx")
    return rule1, rule2


def _casme_rows(path: Path) -> tuple[list[_Row], list[Problem]]:
    sheets = _sheets(path)
    code = next(iter(sheets.values()), [])
    rule1, rule2 = _naming_sheets(sheets, path)
    subjects: dict[str, str] = {}  # participant -> s15
    for cells in rule1:  # e.g. 15 | s15 | 1 (a header row, if any, has no participant number)
        if len(cells) >= 3 and _frame(cells[2]) is not None:
            digits = re.findall(r"\d+", cells[0]) or re.findall(r"\d+", cells[1])
            if digits:
                subjects[str(_frame(cells[2]))] = f"s{int(digits[0])}"
    names: dict[str, str] = {}  # disgust1 -> 0101
    for cells in rule2:
        if len(cells) >= 2 and cells[0] and cells[1]:
            number = _frame(cells[0])
            names[cells[1].lower()] = f"{number:04d}" if number is not None else cells[0]
    rows, problems = [], []
    for number, cells in enumerate(code, start=1):
        if not any(cells):
            continue
        cells = cells + [""] * (9 - len(cells))
        where = f"{path.name}:{number}"
        if number == 1 and _frame(cells[2]) is None and _frame(cells[0]) is None:
            continue  # a header row some copies carry
        participant = str(_frame(cells[0])) if _frame(cells[0]) is not None else cells[0]
        name = cells[1].split("_")[0].lower()
        subject, video_code = subjects.get(participant), names.get(name)
        if subject is None or video_code is None:
            what = f"participant {cells[0]!r}" if subject is None else f"video name {cells[1]!r}"
            problems.append(Problem("unknown_video", where, f"{what} not in the naming sheets; row skipped"))
            continue
        rows.append(_Row(subject, video_code, cells[2], cells[3], cells[4], cells[7], cells[6], where))
    return rows, problems


def _casme_videos(videos_dir: Path) -> dict[tuple[str, str], Path]:
    """{(s15, 0101): folder 15_0101disgustingteeth}."""
    found = {}
    for subject_dir in sorted(p for p in videos_dir.iterdir() if p.is_dir() and re.fullmatch(r"s\d+", p.name)):
        for video_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            m = re.match(r"\d+_(\d{4})", video_dir.name)
            if m:
                found[(f"s{int(subject_dir.name[1:])}", m.group(1))] = video_dir
    return found


# ---------------------------------------------------------------- SAMM Long Videos

def _first(record: dict[str, str], *names: str) -> str:
    """The first of these (normalised) columns the file has ('Onset' or 'Onset Frame'), else ''."""
    return next((record[n] for n in names if n in record), "")


def _samm_rows(path: Path) -> tuple[list[_Row], list[Problem]]:
    from slstt.data.adapters import read_table

    rows, problems = [], []
    table = read_table(path, required=("subject", "filename"))  # the header row is below the title rows
    for column in (("onset", "onsetframe"), ("offset", "offsetframe"), ("type",)):
        if table and not any(c in table[0][1] for c in column):
            raise SlsttError(f"{path}: no {column[0].capitalize()} column in the header row; expected the released "
                             "SAMM_LongVideos_V3_Release.xlsx (Subject, Filename, Inducement Code, Onset, Apex, Offset, "
                             "Duration, Type, ...)")
    for number, rec in table:
        where = f"{path.name}:{number}"
        parts = rec.get("filename", "").split("_")
        if len(parts) < 2 or not parts[0].isdigit():
            problems.append(Problem("bad_annotation", where, f"Filename {rec.get('filename')!r} is not "
                                    "<subject>_<video>_<n> (e.g. 006_1_1); row skipped"))
            continue
        video = f"{int(parts[0]):03d}_{parts[1]}"
        rows.append(_Row(f"{int(parts[0]):03d}", video, _first(rec, "onset", "onsetframe"), _first(rec, "apex", "apexframe"),
                         _first(rec, "offset", "offsetframe"), _first(rec, "type"),
                         _first(rec, "emotion", "estimatedemotion"), where))
    return rows, problems


def _samm_videos(videos_dir: Path) -> dict[tuple[str, str], Path]:
    found = {}
    for video_dir in sorted(p for p in videos_dir.iterdir() if p.is_dir()):
        m = re.fullmatch(r"(\d+)_(\d+)", video_dir.name)
        if m:
            subject = f"{int(m.group(1)):03d}"
            found[(subject, f"{subject}_{m.group(2)}")] = video_dir
    return found


# ---------------------------------------------------------------- the table

def load_long_videos(name: str, root: str | Path, annotations: str | Path | None = None) -> LongVideoTable:
    """Every long video of CAS(ME)^2 (`casme_sq`) or SAMM Long Videos (`samm_lv`) with its
    ground-truth intervals; videos without any interval are kept (they count for false positives)."""
    name = name.lower()
    if name not in LONG_DATASETS:
        raise SlsttError(f"unknown long-video data set {name!r}; choose one of {', '.join(LONG_DATASETS)}")
    root = Path(root).expanduser()
    videos_dir = _videos_dir(name, root)
    path = _annotation_file(name, [root, videos_dir.parent, videos_dir], annotations)
    if path.suffix.lower() not in (".xlsx", ".xlsm") and name == "casme_sq":
        raise SlsttError(f"casme_sq: {path} is not an .xlsx workbook; pass CAS(ME)^2code_final.xlsx")
    rows, problems = _casme_rows(path) if name == "casme_sq" else _samm_rows(path)
    folders = _casme_videos(videos_dir) if name == "casme_sq" else _samm_videos(videos_dir)
    fps = LONG_FPS[name]
    videos: dict[tuple[str, str], LongVideo] = {}
    for key, folder in folders.items():
        frames = list_frames(folder)
        if not frames:
            problems.append(Problem("missing_frames", f"{key[0]}/{folder.name}", f"no frames in {folder}; video skipped"))
            continue
        numbers = sorted(frames)
        videos[key] = LongVideo(key[0], folder.name, [frames[n] for n in numbers], numbers, fps)
    seen: dict[tuple[str, ...], str] = {}
    for row in rows:
        video = videos.get((row.subject, row.video))
        if video is None:
            problems.append(Problem("missing_video", row.where, f"no frame folder for {row.subject} video {row.video} "
                                    f"under {videos_dir}; row skipped"))
            continue
        ident = (video.key, row.onset_text, row.apex_text, row.offset_text, row.type_text.lower())
        if ident in seen:  # one event annotated twice must not be scored twice
            problems.append(Problem("duplicate", f"{row.where} {video.key}", f"same interval as {seen[ident]}; dropped"))
            continue
        seen[ident] = row.where
        interval = _interval(row, name, problems, video.key)
        if interval is None:
            continue
        if interval.onset < video.frame_numbers[0] or interval.offset > video.frame_numbers[-1]:
            problems.append(Problem("missing_frames", f"{row.where} {video.key}", f"frames {interval.onset}..{interval.offset} "
                                    f"outside the video's frames {video.frame_numbers[0]}..{video.frame_numbers[-1]}; row skipped"))
            continue
        video.intervals.append(interval)
    for video in videos.values():
        video.intervals.sort(key=lambda iv: (iv.onset, iv.offset))
        if video.missing_frames:
            problems.append(Problem("frame_gaps", video.key, f"{video.missing_frames} frame number(s) missing between "
                                    f"{video.frame_numbers[0]} and {video.frame_numbers[-1]}"))
    ordered = [videos[k] for k in sorted(videos)]
    return LongVideoTable(name, ordered, problems, path)


# ---------------------------------------------------------------- MEGC scoring

@dataclass
class KindScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def __add__(self, other: KindScore) -> KindScore:
        return KindScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": round(self.precision, 6), "recall": round(self.recall, 6),
                "f1": round(self.f1, 6)}


@dataclass
class MegcScore:
    micro: KindScore
    macro: KindScore

    @property
    def overall(self) -> KindScore:
        return self.micro + self.macro

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"micro": self.micro.to_dict(), "macro": self.macro.to_dict(), "overall": self.overall.to_dict()}


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive frame intervals (onset, offset)."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
    return inter / union


def match_count(spotted: list[tuple[int, int]], truth: list[tuple[int, int]], threshold: float = IOU_THRESHOLD) -> int:
    """Largest one-to-one matching of spotted to ground-truth intervals with IoU >= threshold
    (augmenting paths; a video holds tens of intervals)."""
    edges = [[j for j, t in enumerate(truth) if interval_iou(s, t) >= threshold] for s in spotted]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(spotted)))


def _as_interval(item: Any) -> tuple[str, int, int]:
    if isinstance(item, (tuple, list)):
        kind, onset, offset = item[0], item[1], item[-1]
    elif isinstance(item, Mapping):
        kind, onset, offset = item["kind"], item["onset"], item["offset"]
    else:
        kind, onset, offset = item.kind, item.onset, item.offset
    if kind not in KINDS:
        raise SlsttError(f"interval kind {kind!r} is not micro or macro")
    return str(kind), int(onset), int(offset)


def score_megc(predicted_per_video: Mapping[str, Iterable[Any]], truth_per_video: Mapping[str, Iterable[Any]],
               threshold: float = IOU_THRESHOLD) -> MegcScore:
    """MEGC spotting counts per kind over every video of either mapping. Intervals: GTInterval,
    {"kind", "onset", "offset"} mappings or (kind, onset, offset) tuples, in frame numbers."""
    counts = {k: KindScore() for k in KINDS}
    for video in sorted(set(predicted_per_video) | set(truth_per_video)):
        spotted = [_as_interval(x) for x in predicted_per_video.get(video, ())]
        truth = [_as_interval(x) for x in truth_per_video.get(video, ())]
        for kind in KINDS:
            s = [(a, b) for k, a, b in spotted if k == kind]
            t = [(a, b) for k, a, b in truth if k == kind]
            tp = match_count(s, t, threshold)
            counts[kind] += KindScore(tp, len(s) - tp, len(t) - tp)
    return MegcScore(counts["micro"], counts["macro"])


# MEGC 2020 baseline (MDMD; He, Wang, Li, Yap, arXiv:1912.11985): F1 per kind and overall.
MEGC2020_BASELINE: dict[str, dict[str, Any]] = {  # F1 per kind, and the method's name
    "casme_sq": {"method": "MDMD (MEGC 2020 baseline)", "micro": 0.0082, "macro": 0.1196, "overall": 0.0376},
    "samm_lv": {"method": "MDMD (MEGC 2020 baseline)", "micro": 0.0364, "macro": 0.0629, "overall": 0.0445},
}

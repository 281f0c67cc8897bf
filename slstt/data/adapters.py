"""Data set adapters: the released folder layouts and annotation files -> one DatasetTable.

Policy for annotation errors (a row is never a crash):
- clip folder missing, frames between onset and offset missing, offset < onset, unparsable
  numbers, labels the scheme does not know, conflicting duplicate rows -> Problem, sample skipped;
- labels the scheme drops on purpose (fear/sadness in casme2-5, others in megc-3) -> skipped silently;
- repairable errata -> sample kept, fix recorded in DatasetTable.errata (see ERRATA for the known ones).
Frame numbers in annotations are the numbers in the frame file names (img46.jpg = 46); a Sample
holds only the frames onset..offset, so its onset position is 0.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slstt.data.samples import DatasetTable, Problem, Sample
from slstt.data.schemes import CLASS_SCHEMES, DEFAULT_SCHEME, ClassScheme, get_scheme, normalize_label
from slstt.errors import SlsttError

DATASETS = ("casme2", "samm", "smic", "megc2019", "manifest")
FPS = {"casme2": 200.0, "samm": 200.0, "smic": 100.0}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
MANIFEST_COLUMNS = ["dataset", "subject", "clip", "frames_dir", "onset", "apex", "offset", "label", "fps"]
MEGC_CLASSES = ("negative", "positive", "surprise")  # class 0, 1, 2 of the composite ground truth
UNKNOWN_FRAME = {"", "/", "-", "?", "none", "nan"}

# Known errata of the released annotation files and how the adapters treat them.
ERRATA: list[dict[str, str]] = [
    {"dataset": "casme2", "clip": "*", "issue": "ApexFrame '/' (unknown) in the released xlsx",
     "fix": "apex None; chosen by cfg.apex_policy (middle or largest flow)"},
    {"dataset": "casme2", "clip": "*", "issue": "coding file names subjects '1', folders are 'sub01'",
     "fix": "subjects normalised to subNN"},
    {"dataset": "casme2", "clip": "sub05/EP09_05f", "issue": "apex == onset (69)",
     "fix": "kept; frame selection starts at onset+1 (spec 1.1); absent from the MEGC 2019 composite"},
    {"dataset": "casme2", "clip": "sub05/EP16_04f sub12/EP09_06 sub20/EP16_01 sub25/EP18_04f",
     "issue": "apex == offset", "fix": "kept; frames end at the offset"},
    {"dataset": "samm", "clip": "028/028_4_1", "issue": "apex == offset (1134)", "fix": "kept"},
    {"dataset": "samm", "clip": "*", "issue": "subjects '6' (composite) vs folder '006'; labels with stray "
     "spaces, mixed case or a trailing CR ('Other\\r')", "fix": "subjects zero-padded; normalize_label"},
    {"dataset": "samm", "clip": "*", "issue": "xlsx header row below title rows",
     "fix": "header found as the first row holding Subject and Filename"},
    {"dataset": "smic", "clip": "*", "issue": "no apex in the release; first/last frame = onset/offset",
     "fix": "apex None -> cfg.apex_policy, or the authors' apex from a coding CSV"},
    {"dataset": "megc2019", "clip": "*", "issue": "last line has no line end ('samm,0' vs 'samm,0\\r')",
     "fix": "cells stripped of spaces and CR"},
    {"dataset": "megc2019", "clip": "casme2 sub04/EP12_01f sub05/EP09_05f sub24/EP07_01 sub24/EP07_04f "
     "sub24/EP10_03", "issue": "CASME II clips with negative/surprise labels absent from the ground truth",
     "fix": "the ground-truth file is authoritative (145 CASME II clips)"},
    {"dataset": "*", "clip": "*", "issue": "apex outside [onset, offset]",
     "fix": "apex treated as unknown (None -> cfg.apex_policy); recorded per clip"},
    {"dataset": "*", "clip": "*", "issue": "onset or offset '/' (unknown)",
     "fix": "the clip folder's first / last frame; recorded per clip"},
    {"dataset": "*", "clip": "*", "issue": "identical duplicate annotation or manifest rows",
     "fix": "later copies dropped (a clip is never trained on twice); conflicting duplicates are problems"},
    {"dataset": "*", "clip": "*", "issue": "negative apex (SAMM's -1: not coded)", "fix": "apex None -> cfg.apex_policy"},
    {"dataset": "*", "clip": "*", "issue": "CSV saved as Windows-1252 (Excel on Western Windows), not UTF-8",
     "fix": "read as cp1252 when that gives plain text; other encodings are refused with one line"},
]


@dataclass
class _Row:
    """One annotation row before its frames are found on disk."""

    dataset: str
    subject: str
    clip: str
    onset: int | None  # None: unknown ('/'), the clip's first frame on disk
    apex: int | None
    offset: int | None  # None: unknown, the clip's last frame on disk
    raw_label: str
    fps: float
    where: str
    clip_dir: Path | None = None
    class_name: str | None = None  # set when the class comes from elsewhere (composite ground truth)


# ---------------------------------------------------------------- annotation tables

def _header_key(text: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # xlsx numbers come back as 46.0
    return str(value).replace("\r", "").replace("\n", " ").strip()


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def read_text(path: Path) -> tuple[str, str]:
    """(text, encoding) of an annotation or manifest CSV: UTF-8 (with or without BOM), else Windows-1252
    when that decodes to plain text (Excel's 'CSV' on Western Windows); anything else -> SlsttError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SlsttError(f"cannot read {path}: {exc.strerror or exc}; check the path and its permissions") from None
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        bad = exc.start
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = None
    if text is not None and not _CONTROL.search(text):
        return text, "cp1252"
    raise SlsttError(f"{path} is not a UTF-8 text file (byte 0x{data[bad]:02x} at offset {bad}); "
                     "save it as CSV UTF-8 (or pass the .xlsx)")


def read_table(path: Path, required: tuple[str, ...] = ("subject", "filename"),
               encoding: list[str] | None = None) -> list[tuple[int, dict[str, str]]]:
    """(row number, {normalised header: cell text}) of an xlsx or CSV annotation file; the header
    is the first row holding every `required` column (SAMM's xlsx has title rows above it).
    A CSV's text encoding is appended to `encoding` when given (callers record a non-UTF-8 file)."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        import openpyxl

        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:
            raise SlsttError(f"cannot read annotation workbook {path}: {exc}") from None
        rows = [[_cell_text(v) for v in row] for row in book.worksheets[0].iter_rows(values_only=True)]
        book.close()
    else:
        text, used = read_text(path)
        if encoding is not None:
            encoding.append(used)
        try:
            rows = [[_cell_text(v) for v in row] for row in csv.reader(io.StringIO(text, newline=""))]
        except csv.Error as exc:
            raise SlsttError(f"{path}: not a readable CSV ({exc}); save it as CSV UTF-8") from None
    for h, header in enumerate(rows):
        keys = [_header_key(c) for c in header]
        if all(r in keys for r in required):
            table = []
            for i, row in enumerate(rows[h + 1:], start=h + 2):
                if any(row):
                    table.append((i, {k: (row[j] if j < len(row) else "") for j, k in enumerate(keys) if k}))
            return table
    raise SlsttError(f"{path}: no header row with columns {', '.join(required)}; is this the right annotation file?")


def _column(record: dict[str, str], *names: str) -> str:
    for name in names:
        if name in record:
            return record[name]
    raise KeyError(names[0])


def _rows_from_annotations(path: Path, dataset: str, normalize_subject: Callable[[str], str]) -> tuple[
        list[_Row], list[Problem], list[dict[str, str]]]:
    rows: list[_Row] = []
    problems: list[Problem] = []
    errata: list[dict[str, str]] = []
    seen: dict[tuple[str, str], _Row] = {}
    encoding: list[str] = []
    table = read_table(path, encoding=encoding)
    if encoding and encoding[0] != "utf-8":
        errata.append(_erratum(dataset, "*", f"{path.name} is {encoding[0]}, not UTF-8", "read as " + encoding[0]))
    for number, rec in table:
        where = f"{path.name}:{number}"
        try:
            subject, clip = normalize_subject(rec["subject"]), rec["filename"]
            onset_text = _column(rec, "onsetframe", "onset")
            apex_text = _column(rec, "apexframe", "apex")
            offset_text = _column(rec, "offsetframe", "offset")
            raw_label = _column(rec, "estimatedemotion", "emotion")
        except KeyError as exc:
            raise SlsttError(f"{path}: no {exc.args[0]} column; expected the released {dataset} coding file") from None
        try:
            onset, apex, offset = (_frame_or_none(t) for t in (onset_text, apex_text, offset_text))
        except ValueError:
            problems.append(Problem("bad_annotation", where, f"{subject}/{clip}: onset/apex/offset "
                                    f"{onset_text!r}/{apex_text!r}/{offset_text!r} are not frame numbers"))
            continue
        if apex is None:
            errata.append(_erratum(dataset, f"{subject}/{clip}", f"apex {apex_text!r} unknown", "apex None -> cfg.apex_policy"))
        row = _Row(dataset, subject, clip, onset, apex, offset, raw_label, FPS[dataset], where)
        previous = seen.get((subject, clip))
        if previous is not None:
            same = (previous.onset, previous.apex, previous.offset, normalize_label(previous.raw_label)) == (
                onset, apex, offset, normalize_label(raw_label))
            if same:
                errata.append(_erratum(dataset, f"{subject}/{clip}", f"duplicate row {where}", "dropped"))
            else:
                problems.append(Problem("duplicate", where, f"{subject}/{clip} annotated again, differently "
                                        f"(first at {previous.where}); later row skipped"))
            continue
        seen[(subject, clip)] = row
        rows.append(row)
    return rows, problems, errata


def _frame_or_none(text: str) -> int | None:
    """None for an unknown frame ('/', '-', empty), else an integral frame number (ValueError otherwise)."""
    if text.lower() in UNKNOWN_FRAME:
        return None
    value = float(text)
    if not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{text!r} is not a whole frame number")
    return int(value)


def _erratum(dataset: str, clip: str, issue: str, fix: str) -> dict[str, str]:
    return {"dataset": dataset, "clip": clip, "issue": issue, "fix": fix}


# ---------------------------------------------------------------- layouts

def _subject_casme2(text: str) -> str:
    m = re.fullmatch(r"(?:sub)?0*(\d+)", text.strip(), re.IGNORECASE)
    return f"sub{int(m.group(1)):02d}" if m else text.strip()


def _subject_samm(text: str) -> str:
    return f"{int(text):03d}" if text.strip().isdigit() else text.strip()


def _subject_smic(text: str) -> str:
    m = re.fullmatch(r"s?0*(\d+)", text.strip(), re.IGNORECASE)
    return f"s{int(m.group(1))}" if m else text.strip()


SUBJECT_NORMALIZERS = {"casme2": _subject_casme2, "samm": _subject_samm, "smic": _subject_smic}


def _has_child(folder: Path, pattern: str) -> bool:
    try:
        return any(e.is_dir() and re.fullmatch(pattern, e.name) for e in os.scandir(folder))
    except OSError:
        return False


def _image_dir(dataset: str, root: Path) -> Path:
    """The folder holding subject folders, accepting the release's folder or the one above it."""
    if not root.is_dir():
        raise SlsttError(f"{dataset}: data root {root} does not exist; pass --data-root <folder>")
    names: tuple[str, ...]
    if dataset == "casme2":
        names, pattern, expect = ("CASME2_RAW_selected", "CASME2_RAW", "CASME2-RAW", "CASME2"), r"sub\d+", "CASME2_RAW_selected/sub01/EP02_01f"
    elif dataset == "samm":
        names, pattern, expect = ("SAMM",), r"\d+", "SAMM/006/006_1_2"
    else:
        names, pattern, expect = ("SMIC/HS", "HS", "SMIC_all_raw/HS", "SMIC"), r"s\d+", "SMIC/HS/s1/micro/negative/s1_ne_01"
    for folder in [root / n for n in names] + [root]:
        if _has_child(folder, pattern):
            return folder
    raise SlsttError(f"{dataset}: no {names[0]} folder with subject folders under {root}; expected {expect}/<frames>")


ANNOTATION_PATTERNS = {
    "casme2": ("casme2-coding*.xlsx", "casme2*coding*.csv", "casme2*coding*.xlsx"),
    "samm": ("samm_micro_facs_codes*.xlsx", "samm*coding*.csv", "samm*codes*.csv", "samm*.xlsx"),
    "smic": ("smic*coding*.csv", "smic*coding*.xlsx"),
    "megc2019": ("megc2019*gt*.csv", "*composite*gt*.csv", "megc2019*.csv"),
}


def find_annotations(dataset: str, folders: list[Path]) -> Path | None:
    """The first annotation file of a data set in the given folders (case-insensitive names)."""
    for pattern in ANNOTATION_PATTERNS[dataset]:
        for folder in dict.fromkeys(folders):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("~$") and fnmatch.fnmatch(path.name.lower(), pattern):
                    return path
    return None


def _annotations(dataset: str, root: Path, images: Path, annotations: str | Path | None, required: bool = True) -> Path | None:
    if annotations is not None:
        path = Path(annotations)
        if not path.is_file():
            raise SlsttError(f"{dataset}: annotation file {path} not found; check --annotations")
        return path
    found = find_annotations(dataset, [root, images, images.parent])
    if found is None and required:
        raise SlsttError(f"{dataset}: no annotation file ({' or '.join(ANNOTATION_PATTERNS[dataset][:2])}) in {root}; "
                         f"pass --annotations <file>")
    return found


def _frame_number(path: str) -> int | None:
    m = re.search(r"(\d+)$", os.path.splitext(os.path.basename(path))[0])
    return int(m.group(1)) if m else None


def list_frames(folder: Path) -> dict[int, str]:
    """{frame number: path} of the images in a clip folder."""
    frames = {}
    for entry in os.scandir(folder):
        if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            number = _frame_number(entry.name)
            if number is not None:
                frames[number] = entry.path
    return frames


def _smic_clips(images: Path) -> dict[tuple[str, str], tuple[Path, str]]:
    """{(subject, clip): (folder, emotion folder name)} from HS/s1/micro/negative/s1_ne_01."""
    clips = {}
    for subject_dir in sorted(p for p in images.iterdir() if p.is_dir()):
        micro = subject_dir / "micro"
        for emotion_dir in sorted(p for p in micro.iterdir() if p.is_dir()) if micro.is_dir() else []:
            for clip_dir in sorted(p for p in emotion_dir.iterdir() if p.is_dir()):
                clips[(_subject_smic(subject_dir.name), clip_dir.name)] = (clip_dir, emotion_dir.name)
    return clips


def _dataset_rows(dataset: str, root: Path, annotations: str | Path | None) -> tuple[
        list[_Row], list[Problem], list[dict[str, str]]]:
    """Annotation rows of casme2 / samm / smic with their clip folders."""
    images = _image_dir(dataset, root)
    if dataset == "smic":
        clips = _smic_clips(images)
        path = _annotations("smic", root, images, annotations, required=False)
        if path is None:  # the release: label from the folder, whole clip, no apex
            rows, problems = [], []
            for (subject, clip), (folder, emotion) in clips.items():
                numbers = sorted(list_frames(folder))
                if numbers:
                    rows.append(_Row("smic", subject, clip, numbers[0], None, numbers[-1], emotion, FPS["smic"],
                                     str(folder), folder))
                else:
                    problems.append(Problem("missing_frames", f"smic/{subject}/{clip}", f"no frames in {folder}"))
            return rows, problems, []
        rows, problems, errata = _rows_from_annotations(path, "smic", _subject_smic)
        for row in rows:
            found = clips.get((row.subject, row.clip))
            row.clip_dir = found[0] if found else images / row.subject / "micro" / row.clip
        return rows, problems, errata
    path = _annotations(dataset, root, images, annotations)
    assert path is not None
    rows, problems, errata = _rows_from_annotations(path, dataset, SUBJECT_NORMALIZERS[dataset])
    for row in rows:
        row.clip_dir = images / row.subject / row.clip
    return rows, problems, errata


# ---------------------------------------------------------------- rows -> samples

def _build(rows: list[_Row], scheme: ClassScheme, problems: list[Problem], errata: list[dict[str, str]]) -> list[Sample]:
    samples = []
    for row in rows:
        subject = row.subject.split("/", 1)[1] if row.subject.startswith(row.dataset + "/") else row.subject
        key = f"{row.dataset}/{subject}/{row.clip}"
        name = row.class_name or scheme.class_of(row.raw_label)
        if name is None:
            if normalize_label(row.raw_label) not in scheme.mapping:  # dropped on purpose is not a problem
                problems.append(Problem("unknown_label", key, f"label {row.raw_label!r} is not a class of "
                                        f"scheme {scheme.name} ({', '.join(scheme.labels)}); {row.where}"))
            continue
        if row.clip_dir is None or not row.clip_dir.is_dir():
            problems.append(Problem("missing_clip", key, f"clip folder {row.clip_dir} not found"))
            continue
        onset, apex, offset = row.onset, row.apex, row.offset
        if (onset is not None and onset < 0) or (offset is not None and offset < 0):
            problems.append(Problem("bad_annotation", key, f"negative frame number (onset {onset}, offset {offset}); "
                                    f"{row.where}"))
            continue
        if apex is not None and apex < 0:  # -1 is SAMM's 'not coded'
            errata.append(_erratum(row.dataset, f"{subject}/{row.clip}", f"apex {apex} (negative)",
                                   "apex None -> cfg.apex_policy"))
            apex = None
        on_disk = list_frames(row.clip_dir)
        if (onset is None or offset is None) and on_disk:  # '/' onset or offset: the clip's first/last frame
            onset = min(on_disk) if onset is None else onset
            offset = max(on_disk) if offset is None else offset
            errata.append(_erratum(row.dataset, f"{subject}/{row.clip}", "onset or offset unknown",
                                   f"first/last frame on disk: {onset}..{offset}"))
        if onset is None or offset is None or offset < onset:
            problems.append(Problem("bad_annotation", key, f"offset {offset} < onset {onset}; {row.where}"
                                    if onset is not None and offset is not None else f"no frames in {row.clip_dir}"))
            continue
        if apex is not None and not onset <= apex <= offset:
            errata.append(_erratum(row.dataset, f"{subject}/{row.clip}",
                                   f"apex {apex} outside [{onset}, {offset}]", "apex None -> cfg.apex_policy"))
            apex = None
        numbers = list(range(onset, offset + 1))
        missing = [n for n in numbers if n not in on_disk]
        if missing:
            problems.append(Problem("missing_frames", key, f"{len(missing)} of {len(numbers)} frames "
                                    f"{onset}..{offset} missing in {row.clip_dir} (first: {missing[0]})"))
            continue
        samples.append(Sample(
            dataset=row.dataset, subject=row.subject, clip=row.clip, frames=[on_disk[n] for n in numbers],
            frame_numbers=numbers, onset=0, apex=None if apex is None else apex - onset,
            offset=len(numbers) - 1, label=name, class_index=scheme.index_of(name),
            raw_label=normalize_label(row.raw_label), fps=row.fps))
    return samples


def _scheme(dataset: str, scheme: str | ClassScheme | None) -> ClassScheme:
    if isinstance(scheme, ClassScheme):
        return scheme
    return get_scheme(scheme or DEFAULT_SCHEME[dataset])


# ---------------------------------------------------------------- composite and manifest

def _load_megc2019(root: Path, annotations: str | Path | None, scheme: ClassScheme) -> DatasetTable:
    missing = [c for c in MEGC_CLASSES if c not in scheme.labels]
    if missing:
        raise SlsttError(f"megc2019: scheme {scheme.name} lacks class(es) {', '.join(missing)}; use --scheme megc-3")
    if not root.is_dir():
        raise SlsttError(f"megc2019: data root {root} does not exist; pass --data-root <folder>")
    gt_path = _annotations("megc2019", root, root, annotations)
    assert gt_path is not None
    text, _ = read_text(gt_path)
    gt = [(i, [_cell_text(c) for c in row]) for i, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1)
          if any(_cell_text(c) for c in row)]
    problems: list[Problem] = []
    errata: list[dict[str, str]] = []
    coded: dict[str, dict[tuple[str, str], _Row]] = {}
    for name in ("casme2", "samm", "smic"):  # each data set's own annotations give onset/apex/offset
        rows, p, e = _dataset_rows(name, root, None)
        problems += p
        errata += e
        coded[name] = {(r.subject, r.clip): r for r in rows}
    rows = []
    for number, cells in gt:
        where = f"{gt_path.name}:{number}"
        if len(cells) < 4 or cells[0].lower() not in coded or cells[3] not in ("0", "1", "2"):
            if number == 1 and len(cells) >= 4 and not cells[3].isdigit():
                continue  # a header row
            problems.append(Problem("bad_annotation", where, f"expected dataset,subject,filename,class(0-2), got {cells}"))
            continue
        dataset, clip, class_name = cells[0].lower(), cells[2], MEGC_CLASSES[int(cells[3])]
        subject = SUBJECT_NORMALIZERS[dataset](cells[1])
        row = coded[dataset].get((subject, clip))
        if row is None:
            problems.append(Problem("missing_clip", f"{dataset}/{subject}/{clip}",
                                    f"no {dataset} annotation row for this ground-truth clip ({where})"))
            continue
        own = CLASS_SCHEMES["megc-3"].class_of(row.raw_label)
        if dataset != "smic" and own is not None and own != class_name:
            errata.append(_erratum(dataset, f"{subject}/{clip}", f"ground truth {class_name} vs coded {row.raw_label!r}",
                                   "ground truth kept"))
        rows.append(_Row(dataset, f"{dataset}/{subject}", clip, row.onset, row.apex, row.offset, row.raw_label,
                         row.fps, where, row.clip_dir, class_name))
    samples = _build(rows, scheme, problems, errata)
    return DatasetTable(samples, scheme, problems, errata)


def _infer_manifest_scheme(rows: list[_Row]) -> ClassScheme:
    """A known scheme whose classes cover the manifest's labels, else classes in sorted order."""
    labels = {normalize_label(r.raw_label) for r in rows}
    datasets = {r.dataset for r in rows}
    preferred = [DEFAULT_SCHEME[d] for d in datasets if len(datasets) == 1 and d in DEFAULT_SCHEME]
    for name in preferred + list(CLASS_SCHEMES):
        if labels <= set(CLASS_SCHEMES[name].labels):
            return CLASS_SCHEMES[name]
    return ClassScheme("manifest", tuple(sorted(labels)))


def _load_manifest(path: Path, scheme: str | ClassScheme | None) -> DatasetTable:
    if path.is_dir():
        found = sorted(path.glob("*.csv"))
        if len(found) != 1:
            raise SlsttError(f"manifest: {path} is a folder with {len(found)} CSV files; pass the manifest CSV itself")
        path = found[0]
    if not path.is_file():
        raise SlsttError(f"manifest: {path} not found; pass the manifest CSV with --data-root or --annotations")
    rows, problems = [], []
    errata: list[dict[str, str]] = []
    encoding: list[str] = []
    seen: dict[tuple[str, str, str], _Row] = {}
    for number, rec in read_table(path, required=("dataset", "subject", "clip", "framesdir"), encoding=encoding):
        where = f"{path.name}:{number}"
        try:
            row = _Row(rec["dataset"], rec["subject"], rec["clip"], _frame_or_none(rec["onset"]),
                       _frame_or_none(rec.get("apex", "")), _frame_or_none(rec["offset"]),
                       rec["label"], float(rec["fps"]), where,
                       Path(os.path.normpath(path.parent / rec["framesdir"])))
        except (KeyError, ValueError) as exc:
            problems.append(Problem("bad_annotation", where, f"bad manifest row ({exc}); columns: {','.join(MANIFEST_COLUMNS)}"))
            continue
        if not (math.isfinite(row.fps) and 0 < row.fps <= 10000):
            problems.append(Problem("bad_annotation", where, f"fps {rec['fps']!r} of {row.subject}/{row.clip} must be a "
                                    "finite number in (0, 10000]; row skipped"))
            continue
        ident = (row.dataset, row.subject, row.clip)
        previous = seen.get(ident)
        if previous is not None:  # the same clip twice would be trained on twice
            if (previous.onset, previous.apex, previous.offset, previous.raw_label, previous.fps, previous.clip_dir) == (
                    row.onset, row.apex, row.offset, row.raw_label, row.fps, row.clip_dir):
                errata.append(_erratum(row.dataset, f"{row.subject}/{row.clip}", f"duplicate row {where}", "dropped"))
            else:
                problems.append(Problem("duplicate", where, f"{'/'.join(ident)} listed again, differently "
                                        f"(first at {previous.where}); later row skipped"))
            continue
        seen[ident] = row
        rows.append(row)
    if encoding and encoding[0] != "utf-8":
        errata.append(_erratum("manifest", "*", f"{path.name} is {encoding[0]}, not UTF-8", "read as " + encoding[0]))
    chosen = _infer_manifest_scheme(rows) if scheme is None else _scheme("", scheme)
    return DatasetTable(_build(rows, chosen, problems, errata), chosen, problems, errata)


def write_manifest(samples: list[Sample], path: str | Path) -> Path:
    """Generic CSV any table round-trips through (frames_dir relative to the CSV, frame numbers)."""
    import io

    from slstt.io import atomic_write_text

    path = Path(path).absolute()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for s in samples:
        frames_dir = Path(os.path.relpath(Path(s.frames[0]).absolute().parent, path.parent)).as_posix()
        apex = "" if s.apex is None else s.frame_numbers[s.apex]
        writer.writerow([s.dataset, s.subject, s.clip, frames_dir, s.frame_numbers[s.onset], apex,
                         s.frame_numbers[s.offset], s.label, s.fps])
    return atomic_write_text(path, out.getvalue())


def load_dataset(name: str, root: str | Path, annotations: str | Path | None = None,
                 scheme: str | ClassScheme | None = None) -> DatasetTable:
    """Samples of a data set as released (casme2, samm, smic), the MEGC 2019 composite
    (root holding CASME2_RAW_selected/, SAMM/, SMIC/ and the annotation files) or a manifest CSV."""
    name = name.lower()
    if name not in DATASETS:
        raise SlsttError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    if name == "manifest":
        return _load_manifest(Path(annotations) if annotations else root, scheme)
    chosen = _scheme(name, scheme)
    if name == "megc2019":
        return _load_megc2019(root, annotations, chosen)
    rows, problems, errata = _dataset_rows(name, root, annotations)
    samples = _build(rows, chosen, problems, errata)
    return DatasetTable(samples, chosen, problems, errata)

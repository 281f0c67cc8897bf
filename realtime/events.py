"""Spotted events and their sinks: JSONL flushed line by line as events close (a crash or a
SIGTERM never leaves a half-written line), and a CSV table written atomically at the end.

The JSONL is strict JSON (NaN/inf are written as null). Besides events it may hold
{"type": "gap", ...} records: a live stream that stalled and came back (or never did)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from slstt.errors import SlsttError
from slstt.io import atomic_write_text, nan_to_none

if TYPE_CHECKING:
    from slstt.realtime.spotting import Interval

CSV_COLUMNS = [
    "event", "kind", "onset_frame", "apex_frame", "offset_frame", "onset_s", "apex_s", "offset_s",
    "duration_ms", "score", "threshold", "region", "label", "confidence", "recognition_latency_ms", "recognition_error",
    "recognition_note",
]


@dataclass
class SpotEvent:
    """One spotted interval. Frames are indices in the source stream, times in seconds from its start."""

    event: int  # running number in this run
    kind: str  # micro | macro
    onset_frame: int
    apex_frame: int
    offset_frame: int
    onset_s: float
    apex_s: float
    offset_s: float
    score: float  # peak motion score (px of head-compensated flow on the spotting crop)
    threshold: float  # the firing region's adaptive threshold
    regions: dict[str, float] = field(default_factory=dict)  # score / threshold per facial region at the apex
    label: str | None = None
    probabilities: dict[str, float] | None = None
    recognition_latency_ms: float | None = None  # event closed -> label known
    recognition_error: str | None = None
    recognition_note: str | None = None  # e.g. cropped with the tracked box (no face on the apex frame)
    closed_s: float = 0.0  # stream time at which the spotter closed the event (latency = window)
    region: str = ""  # the facial region that fired (the spotter's Interval.region)

    @classmethod
    def from_interval(cls, number: int, iv: Interval) -> SpotEvent:
        """The event of a spotter's closed interval (not yet labelled)."""
        return cls(number, iv.kind, iv.onset, iv.apex, iv.offset, iv.onset_s, iv.apex_s, iv.offset_s, iv.score,
                   iv.threshold, dict(iv.regions), closed_s=iv.closed_s, region=iv.region)

    @property
    def duration_ms(self) -> float:
        return (self.offset_s - self.onset_s) * 1000.0

    @property
    def confidence(self) -> float | None:
        if not self.probabilities or self.label is None:
            return None
        return self.probabilities.get(self.label)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: rounded, and every NaN/inf (a degenerate score or probability) becomes None,
        so the JSONL stays strict JSON."""
        data = asdict(self)
        for key in ("onset_s", "apex_s", "offset_s", "closed_s", "score", "threshold"):
            data[key] = _round(data[key], 4)
        data["duration_ms"] = _round(self.duration_ms, 1)
        data["regions"] = {k: _round(v, 4) for k, v in self.regions.items()}
        if self.probabilities is not None:
            data["probabilities"] = {k: _round(v, 5) for k, v in self.probabilities.items()}
        if self.recognition_latency_ms is not None:
            data["recognition_latency_ms"] = _round(self.recognition_latency_ms, 2)
        return data


@dataclass
class GapRecord:
    """A stretch of a live stream with no frames (a stall, then a reconnection or the end)."""

    start_s: float  # stream time of the last frame before the gap
    end_s: float | None  # stream time of the first frame after it; None: the stream never came back
    reason: str
    attempts: int = 0  # reconnection attempts made
    last_frame: int = -1  # index of the last frame before the gap

    def to_dict(self) -> dict[str, Any]:
        return {"type": "gap", "start_s": _round(self.start_s, 3),
                "end_s": None if self.end_s is None else _round(self.end_s, 3),
                "duration_s": None if self.end_s is None else _round(self.end_s - self.start_s, 3),
                "reason": self.reason, "attempts": self.attempts, "last_frame": self.last_frame}


def _round(value: Any, digits: int) -> float | None:
    """round(), with NaN/inf/None -> None (JSON has no NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, digits) if math.isfinite(number) else None


def strict_json(obj: Any) -> str:
    """One JSON line; NaN or inf anywhere is a bug upstream, written as null rather than a bare NaN."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        return json.dumps(nan_to_none(obj), allow_nan=False)


def check_output_file(path: Path, what: str, example: str) -> None:
    """One line instead of IsADirectoryError/NotADirectoryError for a file we are about to write."""
    if path.is_dir():
        raise SlsttError(f"{what} {path} is a folder; pass a file path such as {path / example}")
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise SlsttError(f"{what} {path}: {parent} is a file, not a folder; pass a path in a writable folder")
            return


class EventLog:
    """Append events (and gap records) to a JSONL file, one flushed (and fsynced) line each.

    The caller checks the path first (`slstt.io.check_output`): opening truncates the file."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.events: list[SpotEvent] = []
        self.gaps: list[GapRecord] = []
        self._file: TextIO | None = None
        if self.path is not None:
            check_output_file(self.path, "events file", "events.jsonl")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise SlsttError(f"cannot write events file {self.path}: {exc.strerror or exc}; "
                                 "pass a path in a writable folder") from None

    def _line(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(strict_json(record) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def write(self, event: SpotEvent) -> None:
        self.events.append(event)
        self._line(event.to_dict())

    def write_gap(self, gap: GapRecord) -> None:
        self.gaps.append(gap)
        self._line(gap.to_dict())

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL events file: events and {"type": "gap"} records, in file order."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The events of a JSONL file (gap records left out)."""
    return [r for r in read_records(path) if r.get("type", "event") == "event"]


def write_events_csv(path: str | Path, events: list[SpotEvent]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for ev in sorted(events, key=lambda e: e.onset_frame):
        d = ev.to_dict()
        d["confidence"] = None if ev.confidence is None else _round(ev.confidence, 5)
        writer.writerow(["" if d.get(c) is None else d.get(c) for c in CSV_COLUMNS])
    return atomic_write_text(path, buf.getvalue())

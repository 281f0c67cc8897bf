"""One sample table for every data set: what the adapters produce and every later stage reads."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slstt.data.schemes import ClassScheme
from slstt.errors import SlsttError


@dataclass
class Sample:
    """One micro-expression clip. onset/apex/offset are 0-based positions into `frames`
    (frame files in time order); `frame_numbers` are the numbers in those file names."""

    dataset: str
    subject: str  # unique across data sets in a composite table, e.g. "samm/006"
    clip: str
    frames: list[str]
    frame_numbers: list[int]
    onset: int
    apex: int | None  # None: not annotated, chosen later by cfg.apex_policy
    offset: int
    label: str  # class name in the table's scheme
    class_index: int
    raw_label: str
    fps: float

    @property
    def key(self) -> str:
        """'dataset/subject/clip'; a composite subject already carries its data set prefix,
        so a clip has the same key (and prepared cache file) in single and composite tables."""
        subject = self.subject.split("/", 1)[1] if self.subject.startswith(self.dataset + "/") else self.subject
        return f"{self.dataset}/{subject}/{self.clip}"

    def load_frame(self, position: int) -> np.ndarray:
        """BGR frame at a 0-based position; SlsttError when the file cannot be read."""
        import cv2

        path = self.frames[position]
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SlsttError(f"cannot read frame {path} of {self.key}; replace or remove the file")
        return image


@dataclass
class Problem:
    """A sample that could not be used (the adapter skipped it) and why."""

    kind: str  # missing_clip | missing_frames | bad_annotation | unknown_label | duplicate
    where: str  # sample key or annotation file:row
    message: str


@dataclass
class DatasetTable:
    samples: list[Sample]
    scheme: ClassScheme
    problems: list[Problem] = field(default_factory=list)
    errata: list[dict[str, str]] = field(default_factory=list)  # annotation fixes applied (kept samples)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def subjects(self) -> list[str]:
        return sorted({s.subject for s in self.samples})

    def class_counts(self) -> dict[str, int]:
        """Samples per class in class-index order (zero counts included)."""
        counts = Counter(s.label for s in self.samples)
        return {name: counts.get(name, 0) for name in self.scheme.labels}

    def subject_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.subject for s in self.samples).items()))

    def dataset_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.dataset for s in self.samples).items()))

    def problem_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def to_csv(self, path: str | Path) -> Path:
        """One row per sample (frame numbers, not paths), written atomically."""
        from slstt.io import atomic_write_text

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["key", "dataset", "subject", "clip", "label", "class_index", "raw_label",
                         "onset_frame", "apex_frame", "offset_frame", "num_frames", "fps"])
        for s in self.samples:
            apex = "" if s.apex is None else s.frame_numbers[s.apex]
            writer.writerow([s.key, s.dataset, s.subject, s.clip, s.label, s.class_index, s.raw_label,
                             s.frame_numbers[s.onset], apex, s.frame_numbers[s.offset], len(s.frames), s.fps])
        return atomic_write_text(path, out.getvalue())

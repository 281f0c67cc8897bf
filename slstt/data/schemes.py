"""Class schemes: which raw emotion labels a data set's annotations use and which classes a run trains.

Raw labels are normalised first (case, stray spaces, CR characters), then mapped to a class name;
a raw label that maps to None is dropped from that scheme (e.g. fear and sadness in CASME II 5-class).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slstt.errors import SlsttError

NEGATIVE = ("repression", "anger", "contempt", "disgust", "fear", "sadness")


def normalize_label(raw: object) -> str:
    """'  Happiness\\r' -> 'happiness'; inner runs of spaces collapse to one."""
    return " ".join(str(raw).replace("\r", " ").replace("\n", " ").split()).lower()


@dataclass(frozen=True)
class ClassScheme:
    name: str
    labels: tuple[str, ...]  # class names in class-index order
    mapping: dict[str, str | None] = field(default_factory=dict)  # normalised raw label -> class name

    def class_of(self, raw: object) -> str | None:
        """Class name for a raw label, or None when the scheme drops it."""
        norm = normalize_label(raw)
        if norm in self.mapping:
            return self.mapping[norm]
        return norm if norm in self.labels else None

    def index_of(self, class_name: str) -> int:
        return self.labels.index(class_name)


CLASS_SCHEMES: dict[str, ClassScheme] = {
    "casme2-5": ClassScheme(
        "casme2-5",
        ("disgust", "happiness", "repression", "surprise", "others"),
        {"other": "others", "fear": None, "sadness": None},
    ),
    "samm-5": ClassScheme(
        "samm-5",
        ("anger", "other", "happiness", "surprise", "contempt"),
        {"others": "other", "disgust": None, "fear": None, "sadness": None},
    ),
    "smic-3": ClassScheme("smic-3", ("negative", "positive", "surprise")),
    "megc-3": ClassScheme(
        "megc-3",
        ("negative", "positive", "surprise"),
        {**{n: "negative" for n in NEGATIVE}, "happiness": "positive", "others": None, "other": None},
    ),
}

# The scheme a data set uses when the user names none.
DEFAULT_SCHEME = {"casme2": "casme2-5", "samm": "samm-5", "smic": "smic-3", "megc2019": "megc-3", "composite": "megc-3"}


def get_scheme(name: str) -> ClassScheme:
    try:
        return CLASS_SCHEMES[name]
    except KeyError:
        raise SlsttError(
            f"unknown class scheme {name!r}; choose one of {', '.join(CLASS_SCHEMES)}"
        ) from None

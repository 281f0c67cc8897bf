"""User-facing errors: the CLI prints one line (what, where, how to fix) and exits 2."""


class SlsttError(Exception):
    """An error caused by the user's input or environment, not a bug.

    The message must be one line saying what is wrong, where, and how to fix it.
    """

    exit_code = 2


class NoFaceError(SlsttError):
    """No face was found where one is required (per-sample; callers count and report these)."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message (or its type name), cut to `limit`:
    third-party errors (OpenCV, onnxruntime, MediaPipe) are often pages long."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__


def check_number(option: str, value: float | None, low: float, high: float, *, low_open: bool = False) -> None:
    """A user-given number: finite and in [low, high] (or (low, high] with low_open); else one line
    naming the option (the CLI's --name; the Python API uses the same names)."""
    import math

    if value is None:
        return
    bad = not math.isfinite(value) or value > high or value < low or (low_open and value == low)
    if bad:
        above = f"above {low:g}" if low_open else f"at least {low:g}"
        raise SlsttError(f"{option} {value:g}: give a finite number {above} and at most {high:g}")


def check_int(option: str, value: int | None, low: int, high: int) -> None:
    """A user-given whole number in [low, high]; else one line naming the option."""
    if value is not None and not low <= value <= high:
        raise SlsttError(f"{option} {value}: give a whole number from {low} to {high}")

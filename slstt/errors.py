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

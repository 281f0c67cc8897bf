"""User-facing errors: the CLI prints one line (what, where, how to fix) and exits 2."""


class SlsttError(Exception):
    """An error caused by the user's input or environment, not a bug.

    The message must be one line saying what is wrong, where, and how to fix it.
    """

    exit_code = 2


class NoFaceError(SlsttError):
    """No face was found where one is required (per-sample; callers count and report these)."""

"""Errors of capture: making a recording (segments, stamps, seals, spool)."""

from evidence.errors import RecorderError


class CaptureError(RecorderError):
    """Recording could not go on as asked; the message says what failed and what to do."""

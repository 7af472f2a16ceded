"""The one exception hierarchy of capture: segments, stamps, seals, spool and verification."""


class CaptureError(Exception):
    """Recording could not go on as asked; the message says what failed and what to do."""


class StorageFault(CaptureError):
    """A write or fsync failed. The segment was closed; nothing is retried silently."""


"""Errors of capture: making a recording (segments, stamps, seals, spool), and the cause each one names."""

import errno

from evidence.errors import RecorderError, StorageFault
from evidence.reasons import INTERRUPTION_REASONS


class CaptureError(RecorderError):
    """Recording could not go on as asked; the message says what failed and what to do."""


class InputFault(CaptureError):
    """A live input failed while recording (the camera, the microphone, the encoder, the power supply);
    `cause` is the reason code the session's `interruption` entry gives it."""

    def __init__(self, cause: str, message: str) -> None:
        if cause not in INTERRUPTION_REASONS:
            raise ValueError(f"{cause!r} is not an interruption reason code")
        super().__init__(message)
        self.cause = cause


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def fault_cause(err: BaseException) -> str:
    """The interruption reason code (FORMAT §4.5) a fault that stops recording is recorded with."""
    if isinstance(err, InputFault):
        return err.cause
    if isinstance(err, StorageFault):
        seen: BaseException | None = err
        while seen is not None:
            if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
                return "storage_full"
            seen = seen.__cause__ or seen.__context__
    return "device_fault"

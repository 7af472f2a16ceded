"""Errors of central: the receiver, the store and its index."""

from evidence.errors import RecorderError


class CentralError(RecorderError):
    """Central cannot do what was asked; the message says what to do."""


class Refused(CentralError):
    """A message that must not be stored; the text is the logged reason."""


class KeyChangeRefused(CentralError):
    """A device enrolled once came back with another key: kept as pending until an operator approves it."""


class NotEnrolled(Refused):
    """Everything from a device that is not enrolled, or was revoked."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(message)
        self.device = device

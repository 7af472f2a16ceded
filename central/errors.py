"""Errors of central: the receiver, the store and its index."""

from evidence.errors import RecorderError


class CentralError(RecorderError):
    """Central cannot do what was asked; the message says what to do."""


class Refused(CentralError):
    """A message that must not be stored; the text is the logged reason."""

"""Errors of the hardware layer."""

from evidence.errors import RecorderError


class HalError(RecorderError):
    """A device could not do what was asked; the message names the device and what to do."""


class DeviceUnavailable(HalError):
    """The device is missing or its driver cannot be loaded."""


class BackendError(HalError):
    """The configured backend cannot be built on this machine."""

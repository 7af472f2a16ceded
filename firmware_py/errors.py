"""Errors of the device service (beneath the product's root, evidence.errors.RecorderError)."""

from evidence.errors import RecorderError


class ServiceError(RecorderError):
    """The service or a command cannot do what was asked; the message says what to do."""


class ScenarioError(RecorderError):
    """A scenario file has a bad line; the message names the line."""

"""The one exception hierarchy of the service."""


class RecorderError(Exception):
    """Something the operator must act on; the message says what is wrong and what to do."""


class ConfigError(RecorderError):
    """A configuration field is unknown, missing or has a bad value; the message names the field."""


class ScenarioError(RecorderError):
    """A scenario file has a bad line; the message names the line."""

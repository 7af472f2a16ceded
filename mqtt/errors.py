"""Errors of the MQTT side: protocol, uploader, broker."""

from evidence.errors import RecorderError


class MqttError(RecorderError):
    """Transport to or from central failed; the message says what and what to do."""


class ProtocolError(MqttError):
    """A message on a recorder topic is malformed; it is refused and logged, never stored."""


class BrokerError(MqttError):
    """The local Mosquitto could not be started."""

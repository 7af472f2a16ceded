"""The one exception hierarchy of the MQTT side: protocol, uploader, receiver, broker."""


class MqttError(Exception):
    """Transport to or from central failed; the message says what and what to do."""


class ProtocolError(MqttError):
    """A message on a recorder topic is malformed; it is refused and logged, never stored."""


class BrokerError(MqttError):
    """The local Mosquitto could not be started."""

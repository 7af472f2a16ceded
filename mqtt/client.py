"""paho-mqtt client construction shared by the uploader and the receiver (MQTT 5, callback API 2)."""

from __future__ import annotations

import ssl

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from mqtt.errors import MqttError
from mqtt.tls import TlsFiles, check_client_files

DEFAULT_MAX_PACKET = 256 * 1024 * 1024
"""MQTT's own limit, assumed when the broker's CONNACK does not state a smaller one."""


def make_client(client_id: str, retry_max_seconds: float, tls: TlsFiles | None = None) -> paho.Client:
    """A client; with `tls`, one that proves its identity with its certificate and checks the broker's."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if tls is not None:
        check_client_files(tls)
        try:
            client.tls_set(ca_certs=str(tls.ca_file), certfile=str(tls.cert_file), keyfile=str(tls.key_file),
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError, ValueError) as err:
            raise MqttError(f"TLS with {tls.cert_file} (CA {tls.ca_file}): {err}") from err
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(retry_max_seconds)))
    # Outgoing QoS 1 messages in flight at once; the receipt window on top bounds memory.
    client.max_inflight_messages_set(64)
    return client


def max_packet_size(properties: Properties | None) -> int:
    value = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_MAX_PACKET

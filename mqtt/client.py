"""paho-mqtt client construction shared by the uploader and the receiver (MQTT 5, callback API 2)."""

from __future__ import annotations

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

DEFAULT_MAX_PACKET = 256 * 1024 * 1024
"""MQTT's own limit, assumed when the broker's CONNACK does not state a smaller one."""


def make_client(client_id: str, retry_max_seconds: float) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(retry_max_seconds)))
    # Outgoing QoS 1 messages in flight at once; the receipt window on top bounds memory.
    client.max_inflight_messages_set(64)
    return client


def max_packet_size(properties: Properties | None) -> int:
    value = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_MAX_PACKET

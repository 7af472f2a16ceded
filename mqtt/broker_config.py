"""The broker's configuration for recorders: one mutual-TLS listener and the ACL that makes receipts mean
something. The same text runs under the tests and the demo (mqtt/broker.py) and is what
`recorder central broker-config` writes for a real Mosquitto (2.0).

Identity: the broker requires a client certificate from the agency CA and takes its CN as the username
(`use_identity_as_username`); no passwords, no anonymous clients. Rights, by username:

    device D     write P/D/entry, P/D/media, P/D/status, P/D/alert     read P/D/receipt, P/D/alert_ack
    receiver R   read P/+/entry, P/+/media, P/+/status, P/+/alert       write P/+/receipt, P/+/alert_ack

A device can thus neither pose as another device nor forge or read another device's receipts, and only a
receiver can send the receipt that lets a device consider evidence delivered (docs/PROTOCOL.md §10).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mqtt import protocol
from mqtt.tls import TlsFiles

DEVICE_WRITES = (protocol.ENTRY, protocol.MEDIA, protocol.STATUS, protocol.ALERT)
DEVICE_READS = (protocol.RECEIPT, protocol.ALERT_ACK)
RECEIVER_READS = (protocol.ENTRY, protocol.MEDIA, protocol.STATUS, protocol.ALERT)
RECEIVER_WRITES = (protocol.RECEIPT, protocol.ALERT_ACK)


@dataclass(frozen=True)
class BrokerSettings:
    port: int
    bind: str | None = None
    """Address to listen on; None for every interface."""
    tls: TlsFiles | None = None
    """The broker's CA, certificate and key. None is the plain, anonymous listener of the local demo."""
    acl_file: Path | None = None
    """Required with `tls`: the file `render_acl` was written to."""
    persistence_dir: Path | None = None
    log_file: Path | None = None
    max_packet_size: int | None = None
    run_as_root: bool = False
    """Stay root rather than switch to the 'mosquitto' user (which could not read a private work folder)."""


def render_conf(settings: BrokerSettings) -> str:
    lines = ["# Written by `recorder central broker-config` (mqtt/broker_config.py): mosquitto -c <this file>",
             "per_listener_settings false"]
    if settings.tls is None:
        lines.append("allow_anonymous true")
    else:
        if settings.acl_file is None:
            raise ValueError("a TLS broker needs its ACL file")
        lines += ["allow_anonymous false", f"acl_file {settings.acl_file}"]
    if settings.persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {settings.persistence_dir}/"]
    if settings.log_file is not None:
        lines += [f"log_dest file {settings.log_file}", "log_type error", "log_type warning", "log_type notice"]
    # Messages queued for a client beyond its in-flight window: a backlog after an outage reaches a slow
    # receiver in bursts, and the default of 1000 would drop part of it (the devices resend, but 15 s later).
    lines.append("max_queued_messages 100000")
    if settings.max_packet_size:
        lines.append(f"max_packet_size {settings.max_packet_size}")
    if settings.run_as_root:
        lines.append("user root")
    lines.append(f"listener {settings.port}" + (f" {settings.bind}" if settings.bind else ""))
    if settings.tls is not None:
        lines += [
            f"cafile {settings.tls.ca_file}",
            f"certfile {settings.tls.cert_file}",
            f"keyfile {settings.tls.key_file}",
            "require_certificate true",
            "use_identity_as_username true",
            # Otherwise a device could connect under another's client id and so knock it off the broker.
            "use_username_as_clientid true",
        ]
    return "\n".join(lines) + "\n"


def render_acl(prefix: str, receivers: Iterable[str]) -> str:
    """The ACL for devices (any authenticated name, by pattern) and the named receivers.

    Mosquitto applies `pattern` lines to every user, receivers included; that a receiver's name is never
    also a device id is kept by the CA (provisioning/ca.py), so those lines grant a receiver nothing.
    """
    lines = ["# Devices: %u is the CN of the client certificate, i.e. the device id."]
    lines += [f"pattern write {protocol.topic(prefix, '%u', kind)}" for kind in DEVICE_WRITES]
    lines += [f"pattern read {protocol.topic(prefix, '%u', kind)}" for kind in DEVICE_READS]
    for name in receivers:
        lines += ["", f"user {name}"]
        lines += [f"topic read {protocol.topic(prefix, '+', kind)}" for kind in RECEIVER_READS]
        lines += [f"topic write {protocol.topic(prefix, '+', kind)}" for kind in RECEIVER_WRITES]
    return "\n".join(lines) + "\n"

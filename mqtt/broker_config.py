"""The broker's configuration for recorders: one mutual-TLS listener, and Mosquitto's dynamic-security
plugin holding who may do what. The same text runs under the tests and the demo (mqtt/broker.py) and is what
`recorder central broker-config` writes for a real Mosquitto (2.0).

Identity: the broker requires a client certificate from the agency CA, not on its revocation list, and takes
its CN as the username (`use_identity_as_username`); no passwords, no anonymous clients. Rights, by username:

    device D     publish P/D/entry, P/D/media, P/D/status, P/D/alert, P/D/selftest
                 subscribe to and receive P/D/receipt, P/D/alert_ack, P/D/bookings  (those topics exactly)
    receiver R   subscribe to and receive P/+/entry, P/+/media, P/+/status, P/+/alert, P/+/selftest
                 (shared or not)
                 publish P/+/receipt, P/+/alert_ack, P/+/bookings (the rooms' signed bookings, retained)
    admin A      the plugin's own $CONTROL/dynamic-security/v1 topics: central adds and removes devices

Anything else is refused, subscriptions included: Mosquitto's ACL file never checks a SUBSCRIBE, so a device
certificate could join the receivers' share group and starve them (each message given to the intruder is
then dropped by the read check). A name not in the plugin's list (a device never enrolled, or revoked) may
connect at most, and do nothing. The plugin keeps its list in its own JSON file, which it rewrites on every
change; it is written here once, and changed at run time only through $CONTROL (mqtt/broker_admin.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqtt import protocol
from mqtt.errors import BrokerError
from mqtt.tls import TlsFiles

DEVICE_WRITES = (protocol.ENTRY, protocol.MEDIA, protocol.STATUS, protocol.ALERT, protocol.SELFTEST)
DEVICE_READS = (protocol.RECEIPT, protocol.ALERT_ACK, protocol.BOOKINGS)
RECEIVER_READS = (protocol.ENTRY, protocol.MEDIA, protocol.STATUS, protocol.ALERT, protocol.SELFTEST)
RECEIVER_WRITES = (protocol.RECEIPT, protocol.ALERT_ACK, protocol.BOOKINGS)
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_RESPONSE = CONTROL_TOPIC + "/response"
RECEIVER_ROLE, ADMIN_ROLE = "recorder-receiver", "recorder-admin"
PLUGIN_NAME = "mosquitto_dynamic_security.so"
PLUGIN_PLACES = ("/usr/lib/*-linux-*/" + PLUGIN_NAME, "/usr/lib/" + PLUGIN_NAME, "/usr/local/lib/" + PLUGIN_NAME)
"""Where Debian, Raspberry Pi OS and a source build put the plugin (Debian's multiarch folder first)."""


@dataclass(frozen=True)
class BrokerSettings:
    port: int
    bind: str | None = None
    """Address to listen on; None for every interface."""
    tls: TlsFiles | None = None
    """The broker's CA, certificate and key. None is the plain, anonymous listener of the local demo."""
    dynsec_file: Path | None = None
    """Required with `tls`: the plugin's JSON file (`render_dynsec` once; the plugin's own afterwards)."""
    crl_file: Path | None = None
    """Required with `tls`: the CA's certificate revocation list (provisioning/ca.py keeps it current)."""
    plugin: Path | None = None
    """The dynamic-security plugin; None finds it (`find_plugin`)."""
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
        if settings.dynsec_file is None or settings.crl_file is None:
            raise ValueError("a TLS broker needs its dynamic-security file and its revocation list")
        lines += ["allow_anonymous false", f"plugin {settings.plugin or find_plugin()}",
                  f"plugin_opt_config_file {settings.dynsec_file}"]
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
            f"crlfile {settings.crl_file}",
            "require_certificate true",
            "use_identity_as_username true",
            # Otherwise a device could connect under another's client id and so knock it off the broker.
            "use_username_as_clientid true",
        ]
    return "\n".join(lines) + "\n"


def find_plugin() -> Path:
    for pattern in PLUGIN_PLACES:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[0]
    raise BrokerError(f"Mosquitto's dynamic-security plugin ({PLUGIN_NAME}) is not installed: install the "
                      "mosquitto package (2.0 or later), or name the file with --plugin")


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def device_role(prefix: str, device: str) -> dict[str, Any]:
    """The rights of device `device`: its own topics, spelled out (the plugin has no %u)."""
    acls = [_acl("publishClientSend", protocol.topic(prefix, device, kind)) for kind in DEVICE_WRITES]
    for kind in DEVICE_READS:
        own = protocol.topic(prefix, device, kind)
        acls += [_acl("subscribeLiteral", own), _acl("publishClientReceive", own)]
    return {"rolename": f"recorder-device-{device}", "acls": acls}


def device_client(device: str) -> dict[str, Any]:
    return {"username": device, "textname": f"recorder device {device}",
            "roles": [{"rolename": f"recorder-device-{device}"}]}


def receiver_role(prefix: str) -> dict[str, Any]:
    """The receivers' rights: every device's uploads (shared or not) in, receipts, acknowledgements and bookings
    out."""
    acls = []
    for kind in RECEIVER_READS:
        every = protocol.topic(prefix, "+", kind)
        acls += [_acl("subscribePattern", every), _acl("subscribePattern", f"$share/+/{every}"),
                 _acl("publishClientReceive", every)]
    acls += [_acl("publishClientSend", protocol.topic(prefix, "+", kind)) for kind in RECEIVER_WRITES]
    return {"rolename": RECEIVER_ROLE, "acls": acls}


def render_dynsec(prefix: str, receivers: Iterable[str], devices: Iterable[str], admins: Iterable[str]) -> str:
    """The plugin's first JSON file: default deny, the receivers' and admins' roles, and each device's."""
    admin_acls = [_acl("publishClientSend", CONTROL_TOPIC), _acl("subscribeLiteral", CONTROL_RESPONSE),
                  _acl("publishClientReceive", CONTROL_RESPONSE)]
    devices = list(devices)
    config = {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                             "unsubscribe": True},
        "clients": ([{"username": name, "textname": "central receiver", "roles": [{"rolename": RECEIVER_ROLE}]}
                     for name in receivers]
                    + [{"username": name, "textname": "central broker admin", "roles": [{"rolename": ADMIN_ROLE}]}
                       for name in admins]
                    + [device_client(device) for device in devices]),
        "groups": [],
        "roles": ([receiver_role(prefix), {"rolename": ADMIN_ROLE, "acls": admin_acls}]
                  + [device_role(prefix, device) for device in devices]),
    }
    return json.dumps(config, indent=1) + "\n"

"""Central's hand on the broker's list of devices: Mosquitto's dynamic-security plugin, through its
`$CONTROL/dynamic-security/v1` topic, as the CA's admin identity (mqtt/broker_config.py).

Enrolling a device adds it with the rights to its own topics only; revoking removes it, and the plugin
disconnects it at once (its certificate still passes TLS until the broker rereads the CRL, but a name the
plugin does not know may do nothing). `sync` brings the list in line with central's records, for a broker
that was down or rebuilt while devices came and went, and gives the roles already there any right added since
they were made (the rooms' bookings, PROTOCOL §14), so a broker set up by an older central keeps up.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

from mqtt.broker_config import CONTROL_RESPONSE, CONTROL_TOPIC, device_client, device_role, receiver_role
from mqtt.client import make_client
from mqtt.errors import BrokerError
from mqtt.tls import TlsFiles

DEVICE_ROLE_PREFIX = "recorder-device-"
ACL_THERE = "ACL with this topic already exists"
"""The plugin's answer to `addRoleACL` for a right the role has: no change."""


@dataclass(frozen=True)
class Synced:
    added: list[str]
    removed: list[str]


class BrokerAdmin:
    def __init__(self, host: str, port: int, tls: TlsFiles, prefix: str, timeout: float = 10.0) -> None:
        self._where = f"{host}:{port}"
        self._prefix = prefix
        self._timeout = timeout
        self._client = make_client(f"central-admin-{secrets.token_hex(4)}", 5, tls)
        self._replies: dict[str, dict[str, Any]] = {}
        self._ready = threading.Event()
        self._failed = ""
        self._cond = threading.Condition()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        try:
            self._client.connect(host, port)
        except OSError as err:
            raise BrokerError(f"cannot reach the broker at {self._where} to change its list of devices: {err}; "
                              "start it, then run `recorder central broker-sync`") from err
        self._client.loop_start()
        if not self._ready.wait(timeout) or self._failed:
            self.close()
            raise BrokerError(f"the broker at {self._where} did not let central's admin identity ({tls.cert_file}) "
                              f"in{': ' + self._failed if self._failed else ''}; check that the broker runs the "
                              "dynamic-security plugin with that admin (recorder central broker-config)")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._failed = str(reason)
        else:
            client.subscribe(CONTROL_RESPONSE, qos=1)
        self._ready.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            for response in responses if isinstance(responses, list) else []:
                if isinstance(response, dict) and isinstance(response.get("correlationData"), str):
                    self._replies[response["correlationData"]] = response
            self._cond.notify_all()

    def _run(self, commands: list[dict[str, Any]], tolerate: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Send `commands` and wait for every response; an error not in `tolerate` is raised."""
        tags = [secrets.token_hex(8) for _ in commands]
        payload = json.dumps({"commands": [{**c, "correlationData": t} for c, t in zip(commands, tags, strict=True)]})
        # The subscription to the responses must be in place first: the broker answers at once.
        with self._cond:
            self._client.publish(CONTROL_TOPIC, payload, qos=1)
            if not self._cond.wait_for(lambda: all(t in self._replies for t in tags), self._timeout):
                raise BrokerError(f"the broker at {self._where} did not answer central's admin commands within "
                                  f"{self._timeout:g} s; is its admin identity allowed $CONTROL "
                                  "(recorder central broker-config)?")
            replies = [self._replies.pop(t) for t in tags]
        allowed = set(tolerate)
        for command, reply in zip(commands, replies, strict=True):
            if reply.get("error") and reply["error"] not in allowed:
                raise BrokerError(f"the broker refused {command['command']}: {reply['error']}")
        return replies

    def add_device(self, device: str) -> None:
        role = device_role(self._prefix, device)
        replies = self._run([{"command": "createRole", **role}, {"command": "createClient", **device_client(device)}],
                            tolerate=("Role already exists", "Client already exists"))
        if replies[0].get("error"):
            self._grant([role])

    def _grant(self, roles: Iterable[dict[str, Any]]) -> None:
        """Give roles that exist every right their definition has now: `createRole` leaves an existing role as it
        was, so one made by an older central would lack the rights added since."""
        commands = [{"command": "addRoleACL", "rolename": role["rolename"], **acl}
                    for role in roles for acl in role["acls"]]
        if commands:
            self._run(commands, tolerate=(ACL_THERE,))

    def remove_device(self, device: str) -> None:
        """Take `device` off the broker's list: it is disconnected now and may do nothing from then on."""
        self._run([{"command": "deleteClient", "username": device},
                   {"command": "deleteRole", "rolename": DEVICE_ROLE_PREFIX + device}],
                  tolerate=("Client not found", "Role not found"))

    def devices(self) -> list[str]:
        reply = self._run([{"command": "listRoles", "verbose": False, "count": -1, "offset": 0}])[0]
        roles = reply.get("data", {}).get("roles", [])
        return sorted(r[len(DEVICE_ROLE_PREFIX):] for r in roles
                      if isinstance(r, str) and r.startswith(DEVICE_ROLE_PREFIX))

    def sync(self, allowed: Iterable[str]) -> Synced:
        """Add every device in `allowed` the broker lacks, remove every device it has that is not, and give the
        receivers' and the remaining devices' roles any right they lack."""
        wanted, present = set(allowed), set(self.devices())
        added, removed = sorted(wanted - present), sorted(present - wanted)
        for device in added:
            self.add_device(device)
        for device in removed:
            self.remove_device(device)
        self._grant([receiver_role(self._prefix), *(device_role(self._prefix, d) for d in sorted(wanted & present))])
        return Synced(added, removed)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> BrokerAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

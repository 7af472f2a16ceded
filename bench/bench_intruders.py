"""Device certificates trying to join the receivers' share group (issue 9: trust nothing on the wire).

With Mosquitto's ACL file a device could subscribe to `$share/<group>/P/+/entry`; the broker then handed it
part of the group's messages and dropped them at the read check: one intruder made a backlog take 15.6 s to
drain instead of 0.6 s, two left 11 of 32 entries receipted after 360 s. The broker now runs the
dynamic-security plugin, which refuses those subscriptions.

intruders_session_s_<n>: with the receiver (in a share group) running and n enrolled devices having tried
to subscribe to the group's topics, a session is recorded (START, the notice, RECORD_S seconds, STOP held)
and streamed; the time from START to every entry receipted. An entry an intruder took would wait for the
device's resend (15 s), so any starvation shows as seconds here; without, it is the session's own length.
intruders_session_ratio_3_vs_0: n = 3 against none (target: 1, within the run-to-run spread). Mutual TLS,
loopback, the simulated device.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from central import config as central_config
from firmware_py import config as config_mod
from firmware_py import rig as rig_mod
from mqtt import protocol
from mqtt.client import make_client
from mqtt.tls import TlsFiles

RECORD_S = 2.0
GROUP = "central"


class _Intruder:
    def __init__(self, port: int, tls: TlsFiles, name: str) -> None:
        self.refused = 0
        self.answered = threading.Event()
        self.client = make_client(name, 1, tls)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe([(f"$share/{GROUP}/{protocol.topic('recorders', '+', kind)}", 1)
                          for kind in (protocol.ENTRY, protocol.MEDIA)])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        self.refused = sum(1 for code in codes if code.is_failure)
        self.answered.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _trial(workdir: Path, intruders: int) -> tuple[float, int]:
    device, central = rig_mod.configs(workdir, "127.0.0.1", 1, rig_mod.fast(),
                                      {"receiver": {"share_group": GROUP}})
    device, central, ca = rig_mod.with_pki(workdir / "ca", device, central)
    names = [f"INTRUDER-{n}" for n in range(intruders)]
    issued = [ca.issue_device(name) for name in names]
    broker = rig_mod.pki_broker(workdir / "broker", ca)
    broker.start()
    device = config_mod.replace(device, mqtt=dataclasses.replace(device.mqtt, port=broker.port))
    central = central_config.replace(central, mqtt=dataclasses.replace(central.mqtt, port=broker.port))
    joined = [_Intruder(broker.port, TlsFiles(ca.ca_file, i.cert, i.key), i.name) for i in issued]
    for intruder in joined:
        intruder.answered.wait(10)
    rig = rig_mod.make_rig(device, central)
    try:
        started = time.monotonic()
        rig.record(RECORD_S)
        if not rig.service.spool.wait_drained(120):
            raise RuntimeError(f"the backlog did not drain with {intruders} intruder(s)")
        return time.monotonic() - started, sum(i.refused for i in joined)
    finally:
        for intruder in joined:
            intruder.close()
        rig.close()
        broker.stop()


def run(workdir: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    sessions = {}
    for n in range(4):
        drain, refused = _trial(workdir / f"intruders-{n}", n)
        sessions[n] = drain
        results[f"intruders_session_s_{n}"] = round(drain, 3)
        results[f"intruders_subscriptions_refused_{n}"] = refused
    results["intruders_session_ratio_3_vs_0"] = round(sessions[3] / sessions[0], 3)
    return results

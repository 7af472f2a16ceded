"""The device's retained health message, and the Last Will that marks it offline (DEVICE-CHECK, FAULT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from paho.mqtt.client import MQTTMessage

from mqtt.broker import LocalBroker
from mqtt.client import make_client


class Watcher:
    """A plain subscriber to one device's status topic, keeping every message it sees."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.retained: list[bool] = []
        self._seen = threading.Condition()
        self._client = make_client("status-watcher", 2)
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: MQTTMessage) -> None:
        with self._seen:
            self.messages.append(json.loads(message.payload))
            self.retained.append(bool(message.retain))
            self._seen.notify_all()

    def wait_for(self, condition: Any, timeout: float) -> dict[str, Any]:
        with self._seen:
            assert self._seen.wait_for(lambda: any(condition(m) for m in self.messages), timeout), self.messages
            return next(m for m in reversed(self.messages) if condition(m))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_health_is_retained_and_the_last_will_marks_a_dead_device_offline__FAULT(tmp_path: Path,
                                                                                  broker: LocalBroker) -> None:
    config = tmp_path / "recorder.toml"
    config.write_text(f'[device]\nid = "GD-0042"\nstate_dir = "{tmp_path / "device"}"\n'
                      f'[mqtt]\nport = {broker.port}\nkeepalive = 2\n')
    scenario = tmp_path / "idle.txt"
    scenario.write_text("3600 end\n")
    proc = subprocess.Popen([sys.executable, "-m", "firmware_py.cli", "run", "--config", str(config), "--hal", "sim",
                             "--scenario", str(scenario)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watcher = Watcher(broker.port, "recorders/GD-0042/status")
    try:
        health = watcher.wait_for(lambda m: m.get("online") is True, 30)
        for field in ("state", "backlog_entries", "backlog_bytes", "oldest_unreceipted_s", "free_bytes",
                      "clock_synced", "upload_alerts"):
            assert field in health, field
        assert health["state"] == "idle" and health["free_bytes"] > 0
        os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT: the broker must publish the will
        proc.wait()
        started = time.monotonic()
        watcher.wait_for(lambda m: m.get("online") is False, 15)
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
        watcher.close()
    # A monitor that connects later still learns the device is offline: the will is retained.
    late = Watcher(broker.port, "recorders/GD-0042/status")
    try:
        assert late.wait_for(lambda m: "online" in m, 5)["online"] is False
        assert late.retained[-1]
    finally:
        late.close()

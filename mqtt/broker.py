"""A Mosquitto of our own on a free loopback port, for the demo and the tests.

With `tls` it runs the configuration shipped for real brokers (mqtt/broker_config.py): mutual TLS, the CA's
revocation list, and the dynamic-security plugin with `receivers`, `devices` and `admins` as its first list
(kept across restarts in the same work folder, as the plugin keeps it); without, a plain anonymous listener.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from mqtt.broker_config import BrokerSettings, render_conf, render_dynsec
from mqtt.errors import BrokerError
from mqtt.tls import TlsFiles


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    def __init__(self, workdir: Path, port: int | None = None, max_packet_size: int | None = None,
                 tls: TlsFiles | None = None, crl_file: Path | None = None, receivers: Sequence[str] = (),
                 devices: Sequence[str] = (), admins: Sequence[str] = (), prefix: str = "recorders") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._max_packet = max_packet_size
        self._tls = tls
        self._crl = crl_file
        self._receivers = tuple(receivers)
        self._devices = tuple(devices)
        self._admins = tuple(admins)
        self._prefix = prefix
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dynsec_file(self) -> Path:
        return self.workdir / "dynamic-security.json"

    def _config(self) -> str:
        return render_conf(BrokerSettings(
            port=self.port, bind=self.host, tls=self._tls,
            dynsec_file=self.dynsec_file if self._tls else None, crl_file=self._crl,
            persistence_dir=self.workdir, log_file=self.workdir / "mosquitto.log",
            max_packet_size=self._max_packet,
            # As root Mosquitto would switch to the 'mosquitto' user, which cannot write our work folder.
            run_as_root=os.geteuid() == 0,
        ))

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            raise BrokerError("mosquitto is not installed: install the mosquitto package (make demo/test do this)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        if self._tls is not None and not self.dynsec_file.exists():
            self.dynsec_file.write_text(render_dynsec(self._prefix, self._receivers, self._devices, self._admins))
        conf.write_text(self._config())
        self._proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerError(f"mosquitto exited at start: {err.strip() or 'see ' + str(self.workdir)}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._close_pipe()

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its certificates and revocation list again (what `systemctl reload` does)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """Abrupt loss of the broker, for fault tests."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

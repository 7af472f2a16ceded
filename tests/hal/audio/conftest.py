"""A real sound server for the audio tests: a private PulseAudio with one null sink, "room".

What the speaker plays into the room comes back on room.monitor, which is the default source, so the
microphone hears the speaker through the same PortAudio -> ALSA -> PulseAudio path a board can use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0


def _pactl(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pactl", "-s", server, *args], capture_output=True, text=True, timeout=5)


@pytest.fixture(scope="session")
def pulse_room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("pulseaudio")
    if binary is None:
        pytest.skip("pulseaudio is not installed: apt install pulseaudio pulseaudio-utils libasound2-plugins")
    root = tmp_path_factory.mktemp("pulse")
    runtime = root / "run"
    runtime.mkdir(mode=0o700)  # PulseAudio refuses a runtime directory others can read
    home = root / "home"
    home.mkdir()
    server = f"unix:{runtime}/pulse/native"
    log_path = root / "pulseaudio.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(XDG_RUNTIME_DIR=str(runtime), HOME=str(home))
    with log_path.open("w") as log:
        # Running as root only earns a warning; -n skips the system's default.pa so nothing but the null
        # sink exists, and module-always-sink keeps a sink loaded whatever happens.
        daemon = subprocess.Popen(
            [binary, "--daemonize=no", "-n", "--exit-idle-time=-1", "--log-target=stderr",
             "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=room",
             "--load=module-always-sink"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_serving(daemon, server, log_path)
        for command in (("set-default-sink", "room"), ("set-default-source", "room.monitor")):
            done = _pactl(server, *command)
            assert done.returncode == 0, f"pactl {' '.join(command)}: {done.stderr}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PULSE_SERVER", server)
            mp.setenv("XDG_RUNTIME_DIR", str(runtime))
            _reinitialise_portaudio()
            yield server
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _wait_until_serving(daemon: subprocess.Popen[bytes], server: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while _pactl(server, "info").returncode != 0:
        if daemon.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"pulseaudio did not start serving {server}:\n{log_path.read_text()}")
        time.sleep(0.1)


def _reinitialise_portaudio() -> None:
    # PortAudio lists the ALSA devices once, when sounddevice is imported; if something imported it before
    # this server ran, the pulse device is missing from that list until PortAudio starts over.
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()

"""systemd's service protocol: readiness and the watchdog (sd_notify), and log levels for the journal.

With `Type=notify` and `WatchdogSec=` (image/recorder.service) systemd passes the notification socket and the
watchdog period in the environment of the service; the CLI reads them when `recorder run` starts (never at
import) and hands them here. Outside systemd there is no socket and nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
"""How often the service checks its threads when systemd asks for no watchdog."""


class Notifier:
    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None) -> None:
        self._address = socket_path
        if socket_path is not None and socket_path.startswith("@"):
            self._address = "\0" + socket_path[1:]  # Linux abstract namespace
        # Fed at half the period, as sd_watchdog_enabled(3) advises.
        self.interval_s = watchdog_usec / 2e6 if watchdog_usec else DEFAULT_INTERVAL_S
        self.watchdog_enabled = bool(watchdog_usec) and socket_path is not None
        """systemd restarts the service when it stops feeding the watchdog."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Notifier:
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        return cls(environ.get("NOTIFY_SOCKET") or None, int(usec) if usec.isdigit() and mine else None)

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as err:
            log.warning("cannot notify systemd (%s): %s", message.split("=", 1)[0], err)

    def ready(self) -> None:
        self._send("READY=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text[:200]}")

    def stopping(self) -> None:
        self._send("STOPPING=1")


_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """Prefixes each line with its syslog priority (`<3>` for errors), which journald reads from a service's
    stderr (SyslogLevelPrefix=, on by default), so `journalctl -p err -u recorder` shows the faults."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def stderr_is_journal(environ: Mapping[str, str]) -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM to its device:inode)."""
    stream = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)

"""Long-lived threads under one supervisor: none ends silently, none hangs unseen.

A supervised thread runs a body that takes a `beat` function and calls it at least every `silence_s`
seconds while it is healthy (its waits have timeouts shorter than that). An exception the body does not
handle becomes a reported fault (logged at error level with its traceback, and passed to `on_fault`), and
the body is started again after a short pause unless it was spawned with `restart=False`. A thread that
stops beating is reported as hung by `problems()`; the device service feeds systemd's watchdog only while
there are none, so a hung service is restarted (image/recorder.service).

It lives in the evidence core because the device and central both run long-lived threads and it needs
nothing but the standard library.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

Beat = Callable[[], None]
Body = Callable[[Beat], None]
RESTART_PAUSE = 1.0
"""Seconds before a failed body is started again: a body that fails at once must not spin."""


class Spawn(Protocol):
    def __call__(self, name: str, body: Body, *, restart: bool = True, silence_s: float = 30.0) -> Supervised: ...


@dataclass
class Supervised:
    name: str
    body: Body
    restart: bool
    silence_s: float
    last_beat: float
    thread: threading.Thread | None = None
    failures: int = 0
    ended: bool = False
    """The body returned: the thread's work is done (not a fault)."""
    dead: bool = False
    """The body failed and is not restarted."""
    reported_hung: bool = field(default=False, repr=False)

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class Supervisor:
    def __init__(self, on_fault: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._on_fault = on_fault
        self._clock = clock
        self._lock = threading.Lock()
        self._threads: list[Supervised] = []
        self._stopping = threading.Event()

    def set_fault_handler(self, on_fault: Callable[[str, str], None]) -> None:
        self._on_fault = on_fault

    def spawn(self, name: str, body: Body, *, restart: bool = True, silence_s: float = 30.0) -> Supervised:
        """Start `body` on a daemon thread named `name` under supervision."""
        supervised = Supervised(name, body, restart, silence_s, self._clock())
        supervised.thread = threading.Thread(target=self._run, args=(supervised,), name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if not t.ended] + [supervised]
        supervised.thread.start()
        return supervised

    def _run(self, supervised: Supervised) -> None:
        def beat() -> None:
            supervised.last_beat = self._clock()

        while True:
            beat()
            try:
                supervised.body(beat)
            except Exception as err:
                supervised.failures += 1
                reason = f"{type(err).__name__}: {err}"
                log.error("thread %s failed (%d time(s)): %s", supervised.name, supervised.failures, reason,
                          exc_info=True)
                self._report(supervised.name, reason)
                if not supervised.restart or self._stopping.wait(RESTART_PAUSE):
                    # Reported, and its failure handled by whoever was told; it is no longer watched, so it
                    # does not hold back the watchdog for good.
                    supervised.dead = True
                    with self._lock:
                        self._threads = [t for t in self._threads if t is not supervised]
                    return
                log.warning("thread %s restarted", supervised.name)
                continue
            supervised.ended = True
            return

    def _report(self, name: str, reason: str) -> None:
        if self._on_fault is None:
            return
        try:
            self._on_fault(name, reason)
        except Exception:
            log.exception("the fault handler failed for thread %s", name)

    def threads(self) -> list[Supervised]:
        """The threads under supervision (those still running or failed)."""
        with self._lock:
            return [t for t in self._threads if not t.ended]

    def problems(self) -> list[str]:
        """Threads that died, and threads that have not beaten within their `silence_s` (hung). A hang is
        reported to `on_fault` once, when first seen."""
        now = self._clock()
        found = []
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            if t.ended:
                continue
            if not t.is_alive():
                found.append(f"thread {t.name} is not running")
            elif now - t.last_beat > t.silence_s:
                found.append(f"thread {t.name} has not reported for {now - t.last_beat:.0f} s (hung)")
                if not t.reported_hung:
                    t.reported_hung = True
                    log.error("thread %s has not reported for %.0f s: it is hung", t.name, now - t.last_beat)
                    self._report(t.name, f"hung: no sign of life for {now - t.last_beat:.0f} s")
        return found

    def stop(self) -> None:
        """No more restarts: threads that fail from now on stay down (the service is stopping)."""
        self._stopping.set()


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM (systemd stopping the service) or SIGINT (Ctrl-C): the process's cue to stop
    its threads in order. Call from the main thread."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop

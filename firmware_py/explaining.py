"""After a break, while recording again: ask for the reason, bracket the officer's spoken explanation, and let
the officer confirm or change the reason code through a spoken menu (INTERRUPT). There is no screen: the
device speaks each option, MARK moves to the next, START confirms, and a timeout keeps the detected cause.

Driven entirely by the session thread: it passes in button presses, finished utterances and clock ticks,
and reads back what to log. Recording goes on whatever the officer does.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from capture.recording import MediaTime
from firmware_py.prompts import Prompt
from firmware_py.voice import Utterance, Voice
from hal.buttons.base import ButtonName

MENU_ORDER = ("device_fault", "power", "storage_full", "weather", "obstruction", "venue_change", "party_break", "other")
"""The causes the law lists, in its order, as the menu offers them after the detected one."""


class Choice(enum.Enum):
    CONFIRMED = "confirmed"
    CHANGED = "changed"
    TIMEOUT = "timeout"


class SpokenMenu:
    """Options spoken one at a time: MARK says the next one, START takes the one last announced, and silence
    for `timeout_s` after the device stopped speaking takes the first (the default). MARK drops whatever of
    the menu was not begun yet, so quick presses skip ahead instead of leaving the device reading out options
    that no longer count; what is taken is then said back ("reason recorded: …"), so a press that skipped too
    far is heard."""

    def __init__(self, voice: Voice, intro: list[Prompt], options: list[tuple[str, list[Prompt]]],
                 timeout_s: float, on_spoken: Callable[[Utterance], None]) -> None:
        self._voice = voice
        self._options = options
        self._timeout_s = timeout_s
        self._on_spoken = on_spoken
        self._index = 0
        self._talking: list[Utterance] = []
        self._quiet_since: float | None = None
        self.result: tuple[str, Choice] | None = None
        self._say(intro)

    def _say(self, prompts: list[Prompt]) -> None:
        self._quiet_since = None
        self._talking += [self._voice.say(prompt, self._on_spoken) for prompt in prompts]

    def _hush(self) -> None:
        """Drop what is queued and not begun; what is being said finishes."""
        self._voice.cancel(self._talking)
        self._talking = [u for u in self._talking if not u.done.is_set()]
        if not self._talking:
            self._quiet_since = time.monotonic()

    def spoken(self, utterance: Utterance) -> None:
        self._talking = [u for u in self._talking if u is not utterance]
        if not self._talking:
            self._quiet_since = time.monotonic()

    def button(self, name: ButtonName) -> bool:
        """True when the press was the menu's."""
        if self.result is not None:
            return False
        if name is ButtonName.MARK:
            self._hush()
            self._index = (self._index + 1) % len(self._options)
            self._say(self._options[self._index][1])
            return True
        if name is ButtonName.START:
            self.take(self._options[self._index][0])
            return True
        return False

    def take(self, code: str) -> None:
        """End the menu with `code`, one of its options, as if the officer had picked it."""
        if self.result is None:
            self.result = (code, Choice.CONFIRMED if code == self._options[0][0] else Choice.CHANGED)
            self._hush()

    def close(self) -> None:
        """The menu is no longer wanted: nothing more of it is said."""
        self._hush()

    def tick(self) -> None:
        if self.result is None and self._quiet_since is not None and \
                time.monotonic() - self._quiet_since >= self._timeout_s:
            self.result = (self._options[0][0], Choice.TIMEOUT)


def reason_options(detected: str, option: Callable[[str], list[Prompt]]) -> list[tuple[str, list[Prompt]]]:
    codes = [detected] + [c for c in MENU_ORDER if c != detected]
    return [(code, option(code)) for code in codes]


class Step(enum.Enum):
    ASKING = "asking"
    LISTENING = "listening"
    CHOOSING = "choosing"
    DONE = "done"


class Explanation:
    """One break's explanation: ask (the device speaks), listen (the officer speaks; START or
    `listen_s` ends it), choose (the spoken menu), then done."""

    def __init__(self, voice: Voice, question: list[Prompt], choose: list[Prompt],
                 options: list[tuple[str, list[Prompt]]], chosen: Callable[[str], list[Prompt]], listen_s: float,
                 menu_s: float, now: Callable[[], MediaTime], log: Callable[..., None],
                 on_spoken: Callable[[Utterance], None], interruption_seq: int) -> None:
        self._voice = voice
        self._choose = choose
        self._options = options
        self._chosen = chosen
        self._listen_s = listen_s
        self._menu_s = menu_s
        self._now = now
        self._log = log
        self._on_spoken = on_spoken
        self._seq = interruption_seq
        self._asking = {id(voice.say(p, on_spoken, cache=False)) for p in question}
        self._listening_since: float | None = None
        self._began: MediaTime | None = None
        self._menu: SpokenMenu | None = None
        self.step = Step.ASKING

    @property
    def detected(self) -> str:
        return self._options[0][0]

    def spoken(self, utterance: Utterance) -> None:
        if self.step is Step.ASKING:
            self._asking.discard(id(utterance))
            if not self._asking:
                self._listen()
        elif self._menu is not None:
            self._menu.spoken(utterance)

    def _listen(self) -> None:
        self.step = Step.LISTENING
        self._listening_since = time.monotonic()
        self._began = self._now()

    def _stop_listening(self) -> None:
        ended = self._now()
        assert self._began is not None
        self._log("explanation", interruption=self._seq, began_ns=self._began.ns, began_wall=self._began.wall,
                  ended_ns=ended.ns, ended_wall=ended.wall)
        self.step = Step.CHOOSING
        self._menu = SpokenMenu(self._voice, self._choose, self._options, self._menu_s, self._on_spoken)

    def button(self, name: ButtonName) -> bool:
        """True when the press belonged to the explanation (START ends listening; the menu's keys)."""
        if self.step is Step.LISTENING and name is ButtonName.START:
            self._stop_listening()
            return True
        if self.step is Step.CHOOSING and self._menu is not None and self._menu.button(name):
            self._finish_if_chosen()
            return True
        return False

    def tick(self) -> None:
        if self.step is Step.LISTENING and self._listening_since is not None and \
                time.monotonic() - self._listening_since >= self._listen_s:
            self._stop_listening()
        elif self.step is Step.CHOOSING and self._menu is not None:
            self._menu.tick()
            self._finish_if_chosen()

    def _finish_if_chosen(self) -> None:
        assert self._menu is not None
        if self._menu.result is None:
            return
        code, how = self._menu.result
        details: dict[str, Any] = {"interruption": self._seq, "code": code, "chosen": how.value,
                                   "detected": self.detected}
        self._log("reason", **details)
        for prompt in self._chosen(code):
            self._voice.say(prompt, self._on_spoken)
        self.step = Step.DONE


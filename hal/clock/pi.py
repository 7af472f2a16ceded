"""The board's clock: synchronised when the kernel says NTP has disciplined it."""

from __future__ import annotations

import ctypes
import ctypes.util

from hal.clock.base import Clock

_TIME_ERROR = 5  # adjtimex() result meaning "clock not synchronised"


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: we only read the return value, but the kernel writes the whole struct.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 508)]


class PiClock(Clock):
    def is_synchronised(self) -> bool:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        state = int(libc.adjtimex(ctypes.byref(_Timex())))
        return state not in (-1, _TIME_ERROR)

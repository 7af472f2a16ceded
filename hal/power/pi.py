"""Power on a Raspberry Pi: the firmware's throttled flags say whether the supply sags."""

from __future__ import annotations

from pathlib import Path

from hal.power.base import Power, PowerState

# The firmware exposes get_throttled here on current Raspberry Pi OS kernels; bit 0 is "under-voltage now".
_THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")


class PiPower(Power):
    def __init__(self, throttled_path: Path = _THROTTLED) -> None:
        self._path = throttled_path

    def state(self) -> PowerState:
        try:
            flags = int(self._path.read_text().strip(), 16)
        except (OSError, ValueError):
            # No firmware node (not a Pi, or an old kernel): we cannot see a sagging supply, so we
            # report none rather than block every session.
            return PowerState(under_voltage=False, battery_percent=None)
        return PowerState(under_voltage=bool(flags & 0x1), battery_percent=None)

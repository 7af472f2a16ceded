"""Why recording stopped, why a session ended, and why one was declined: the reason codes of the ledger
(FORMAT §4.3, §4.5, §4.6).

The law lists the objective causes an officer must explain on restarting (equipment fault or damage, power
or battery, storage full, bad weather, obstruction by people present, change of venue; seeds 000 Art. 22,
001 Art. 11, 002 Art. 20, 003 Art. 22). Each code below belongs to one of those causes (`family`), so central
can count them by the law's list; the device fills in the finer causes it can detect itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    code: str
    zh: str
    en: str
    family: str
    """The law's cause this one is a case of (itself a code of this table)."""
    detected: bool
    """The device can tell this cause by itself (else only an officer can say it)."""


INTERRUPTION_REASONS: dict[str, Reason] = {r.code: r for r in (
    Reason("device_fault", "设备故障或损坏", "equipment fault or damage", "device_fault", False),
    Reason("camera", "摄像头故障", "the camera failed", "device_fault", True),
    Reason("microphone", "麦克风故障", "the microphone failed", "device_fault", True),
    Reason("encoder", "编码故障", "the encoder failed", "device_fault", True),
    Reason("watchdog", "设备无响应后重启", "the device stopped responding and was restarted", "device_fault", True),
    Reason("power", "电源或电量不足", "power or battery", "power", False),
    Reason("undervoltage", "供电电压不足", "the power supply is under-voltage", "power", True),
    Reason("abrupt_stop", "设备意外停止或断电", "the device stopped abruptly or lost power", "power", True),
    Reason("service_restart", "录音录像服务重启", "the recording service was restarted", "device_fault", True),
    Reason("storage_full", "存储空间已满", "storage full", "storage_full", True),
    Reason("weather", "恶劣天气", "bad weather", "weather", False),
    Reason("obstruction", "现场人员阻碍", "obstruction by people present", "obstruction", False),
    Reason("venue_change", "执法场所变更", "change of venue", "venue_change", False),
    Reason("party_break", "当事人要求暂停", "a break asked for by the party", "party_break", False),
    Reason("other", "其他原因", "other", "other", False),
)}

CLOSE_REASONS: dict[str, str] = {
    "stop_button": "the STOP button was held",
    "fault_not_cleared": "recording could not continue: a fault did not clear",
    "service_stopped": "the service was stopped while the session was open",
    "not_resumed": "the device restarted too long after the session was interrupted to resume it",
    "recovered": "closed by crash recovery (a session recorded before sessions resumed)",
    "declined": "an officer declined to record, for a reason the law allows; nothing was recorded",
}

DECLINE_REASONS: dict[str, Reason] = {r.code: r for r in (
    Reason("explosion_risk", "易燃易爆等危险场所且无防爆设备",
           "an explosion-risk area without explosion-proof equipment", "explosion_risk", False),
    Reason("state_secret", "涉及国家秘密", "state secrets", "secrets", False),
    Reason("trade_secret", "涉及商业秘密且未经同意", "trade secrets, without consent", "secrets", False),
    Reason("privacy", "涉及个人隐私且未经同意", "personal privacy, without consent", "secrets", False),
)}
"""Why a session may be declined (NO-RECORD, seed 001 Art. 8): the `declined` event's `code`."""

RETENTION_CLASSES = ("everyday", "evidence", "long_term")
"""A session's retention classes (RETENTION), from the shortest kept to the longest: central's rule book is
central/retention.py; a booking names the class its session is to have at least (evidence/booking.py)."""

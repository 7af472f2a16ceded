"""What the device says during a session, in Mandarin and (as configured for the notice) English.

Every sentence a person hears from the device is here, so the wording can be reviewed in one place. Each
function returns the prompts to say, Chinese first; the English one only when `notice.en` is set.
"""

from __future__ import annotations

import datetime as dt

from evidence.reasons import DECLINE_REASONS, INTERRUPTION_REASONS
from firmware_py.config import NoticeConfig
from firmware_py.prompts import Prompt

# What happened and what to do, per interruption cause the device detects while recording.
FAULTS: dict[str, tuple[str, str]] = {
    "camera": ("摄像头故障，录像中断，正在尝试恢复。请检查摄像头。",
               "Camera fault. Recording is interrupted; trying to resume. Check the camera."),
    "microphone": ("麦克风故障，录像中断，正在尝试恢复。请检查麦克风。",
                   "Microphone fault. Recording is interrupted; trying to resume. Check the microphone."),
    "encoder": ("编码故障，录像中断，正在尝试恢复。",
                "Encoder fault. Recording is interrupted; trying to resume."),
    "storage_full": ("存储空间已满，录像中断。请联系技术人员释放存储空间。",
                     "Storage is full. Recording is interrupted. Ask a technician to free space."),
    "undervoltage": ("供电电压不足，录像中断。请检查电源。",
                     "The power supply is under-voltage. Recording is interrupted. Check the power supply."),
    "device_fault": ("设备故障，录像中断，正在尝试恢复。",
                     "Device fault. Recording is interrupted; trying to resume."),
}
REMINDER = ("室内有人，但未在录音录像。如正在执法，请按开始键开始录音录像。",
            "There are people in the room, but nothing is being recorded. If this is an enforcement activity, "
            "press START to record it.")
OVERRUN = ("预约时间已过，室内无人，录音录像仍在进行。如执法已结束，请按住停止键结束录像。",
           "The booked time is over and nobody is in the room, but recording goes on. If it has ended, hold STOP "
           "to end the recording.")
RECOVERED = ("设备内部故障已自动恢复，录像继续。", "An internal fault was recovered. Recording continues.")
HOLD_TO_STOP = ("结束录像请按住停止键。", "To end the recording, hold STOP.")


class Words:
    def __init__(self, notice: NoticeConfig) -> None:
        self._notice = notice

    def _pair(self, key: str, zh: str, en: str) -> list[Prompt]:
        prompts = [Prompt(f"{key}_zh", zh, self._notice.voice_zh)]
        if self._notice.en:
            prompts.append(Prompt(f"{key}_en", en, self._notice.voice_en))
        return prompts

    def fault(self, cause: str) -> list[Prompt]:
        zh, en = FAULTS.get(cause, FAULTS["device_fault"])
        return self._pair(f"fault_{cause if cause in FAULTS else 'device_fault'}", zh, en)

    def recovered(self) -> list[Prompt]:
        return self._pair("recovered", *RECOVERED)

    def hold_to_stop(self) -> list[Prompt]:
        return self._pair("hold_to_stop", *HOLD_TO_STOP)

    def interrupted(self, since: dt.datetime, now: dt.datetime, cause: str) -> list[Prompt]:
        """On resuming: since when recording was interrupted, the detected cause, and the question."""
        reason = INTERRUPTION_REASONS[cause]
        return self._pair(
            "interrupted",
            f"录音录像于{_zh_time(since, now)}中断，检测到的原因是：{reason.zh}。"
            "请说明中断的原因和时间。说明完毕请按开始键。",
            f"Recording was interrupted at {_en_time(since, now)}. Detected cause: {reason.en}. "
            "Please state the reason for the interruption and the time, aloud. Press START when you are done.",
        )

    def choose(self, cause: str) -> list[Prompt]:
        reason = INTERRUPTION_REASONS[cause]
        return self._pair(f"choose_{cause}", f"请确认中断原因：{reason.zh}。按开始键确认，按标记键选择其他原因。",
                          f"Confirm the reason: {reason.en}. Press START to confirm, or MARK for another reason.")

    def option(self, cause: str) -> list[Prompt]:
        reason = INTERRUPTION_REASONS[cause]
        return self._pair(f"option_{cause}", f"{reason.zh}。", f"{reason.en}.")

    def chosen(self, cause: str) -> list[Prompt]:
        reason = INTERRUPTION_REASONS[cause]
        return self._pair(f"chosen_{cause}", f"中断原因已记录：{reason.zh}。", f"Reason recorded: {reason.en}.")

    def cannot_continue(self, cause: str) -> list[Prompt]:
        reason = INTERRUPTION_REASONS[cause]
        return self._pair(
            f"cannot_continue_{cause}",
            f"录像无法继续，原因：{reason.zh}。请立即报告单位负责人，并由两名以上执法人员书面说明情况。",
            f"Recording cannot continue: {reason.en}. Report to the head of the unit at once; "
            "two or more officers must explain in writing afterwards.",
        )

    def decline_intro(self) -> list[Prompt]:
        return self._pair("decline_intro", "不予录音录像登记。按标记键逐项听取原因，按开始键确认；不操作则取消。",
                          "Declining to record. Press MARK to hear each reason and START to confirm; do nothing "
                          "to cancel.")

    def decline_option(self, code: str) -> list[Prompt]:
        """One option of the decline menu: a code of DECLINE_REASONS, or `cancel`."""
        if code == "cancel":
            return self._pair("decline_option_cancel", "取消，不登记。", "Cancel: nothing is logged.")
        reason = DECLINE_REASONS[code]
        return self._pair(f"decline_option_{code}", f"{reason.zh}。", f"{reason.en}.")

    def declined(self, code: str) -> list[Prompt]:
        reason = DECLINE_REASONS[code]
        return self._pair(f"declined_{code}", f"已登记不予录音录像，原因：{reason.zh}。本次不录音录像。",
                          f"Declined and logged: {reason.en}. Nothing is recorded.")

    def decline_cancelled(self) -> list[Prompt]:
        return self._pair("decline_cancelled", "已取消，未登记。", "Cancelled. Nothing was logged.")

    def ended(self, at: dt.datetime, act: str = "", matter: str = "") -> list[Prompt]:
        """The closing statement, said into the recording before it closes; naming the booking's act and matter
        when the session has a booking (in Chinese only: an English voice cannot read them)."""
        what = matter_words(act, matter)
        return self._pair("ended", f"{what}本次录音录像于{_zh_time(at, at)}结束。",
                          f"This recording ends at {_en_time(at, at)}.")

    def matter(self, act: str, matter: str) -> list[Prompt]:
        """Said after the standard notice when the session has a booking: what this enforcement is (Chinese
        only, as the booking's words are). Its words change with every booking, so it is never cached by key."""
        what = matter_words(act, matter)
        return [Prompt("notice_matter_zh", what, self._notice.voice_zh)] if what else []

    def reminder(self) -> list[Prompt]:
        """People in the room and no session open (NO-RECORD): said into the room, recorded nowhere."""
        return self._pair("reminder", *REMINDER)

    def overrun(self) -> list[Prompt]:
        """A session still recording well after its booking's end, with nobody in the room."""
        return self._pair("overrun", *OVERRUN)


def matter_words(act: str, matter: str) -> str:
    """"本次执法事项：<act>，<matter>。" with what the booking names; "" when it names neither."""
    what = "，".join(part.strip() for part in (act, matter) if part.strip())
    return f"本次执法事项：{what}。" if what else ""


def _zh_time(at: dt.datetime, now: dt.datetime) -> str:
    clock = f"{at.hour}时{at.minute:02d}分{at.second:02d}秒"
    return clock if at.date() == now.date() else f"{at.month}月{at.day}日{clock}"


def _en_time(at: dt.datetime, now: dt.datetime) -> str:
    clock = f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}"
    return clock if at.date() == now.date() else f"{clock} on {at:%d %B}"

"""What every page shows above its content: who is logged in, and the alerts that need a person now (a device
offline during a session, recording that could not continue, an upload deadline passing), so they stand
out on every page (FAULT)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from django.http import HttpRequest

from central.index import Query
from central.sweep import broken_sessions
from central.web import roles
from central.web.models import Staff
from central.web.services import services
from central.web.timefmt import local

SESSION_STATES = ("preflight", "notice", "recording", "interrupted", "explaining")
"""A device that goes offline in one of these states leaves a session unwatched (PROTOCOL §4.4 `state`)."""
BANNER_SECONDS = 5.0
"""Alerts are gathered at most this often per server process (they read the store's alert files)."""


def urgent() -> list[dict[str, Any]]:
    svc = services()
    cached = svc.banner_cache
    if cached is not None and time.monotonic() - cached[0] < BANNER_SECONDS:
        return cached[1]
    found: list[dict[str, Any]] = []
    for kept in svc.store.alerts():
        if kept.handled is None:
            a = kept.alert
            found.append({"kind": "alert", "id": a.id, "device": a.device, "room": a.room, "unit": a.unit,
                          "session": a.session, "text": f"{a.room or a.device}: {a.headline} ({a.cause_label})"})
    for device in svc.store.enrolled():
        status = svc.store.device_status(device)
        if status is not None and not status.online and status.fields.get("state") in SESSION_STATES:
            found.append({"kind": "offline", "device": device, "unit": "",
                          "text": f"{device}: 录制中离线 offline during a session since {local(status.since)} "
                                  f"(last {status.fields.get('state')})"})
    for row, standing in svc.index.late(dt.datetime.now(dt.UTC), svc.config.upload):
        if standing.status in ("warning", "at risk"):
            found.append({"kind": "deadline", "device": row.device, "unit": row.unit,
                          "session": row.session,
                          "text": f"{row.room or row.device}: 上传期限 upload deadline {standing.status} "
                                  f"({standing.hours:.1f} h)"})
    for device, session, problem in broken_sessions(svc.store):
        rows = svc.index.sessions(Query(device=device, session=session))
        found.append({"kind": "integrity", "device": device, "session": session,
                      "unit": rows[0].unit if rows else "",
                      "text": f"{device}/{session}: 完整性校验失败 no longer as stored ({problem[:200]})"})
    svc.banner_cache = (time.monotonic(), found)
    return found


def banner(request: HttpRequest) -> dict[str, Any]:
    if not request.user.is_authenticated:
        return {}
    staff = Staff.objects.filter(user_id=request.user.pk).first()
    if staff is None:
        return {}
    shown = [a for a in urgent() if roles.sees_alert(staff.role, staff.unit, a["unit"])
             or (not a["unit"] and roles.may_see_fleet(staff.role))]
    return {"staff": staff, "role_label": roles.LABELS.get(staff.role, staff.role), "urgent": shown,
            "zone_name": services().config.central.timezone, "nav": {
                "search": roles.may_search(staff.role), "fleet": roles.may_see_fleet(staff.role),
                "audit": roles.may_audit(staff.role), "stats": roles.may_see_stats(staff.role),
                "retention": roles.may_see_retention(staff.role), "rooms": roles.may_see_rooms(staff.role),
                "accounts": roles.may_manage_accounts(staff.role),
                "approvals": roles.may_search(staff.role)}}

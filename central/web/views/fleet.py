"""The fleet page (FAULT, DEVICE-CHECK): each device online or offline since when, recording, idle or in
fault, its backlog, free disk, clock, last self-test and alerts; and acknowledging an alert."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from central.errors import CentralError
from central.fleet import fleet_rows
from central.web import roles
from central.web.access import audit, who
from central.web.services import services
from central.web.timefmt import local, zone_name


def _shown(row: dict[str, Any], sessions: bool) -> dict[str, Any]:
    selftest = row.get("selftest")
    online = row.get("online")
    return {
        "device": row["device"],
        "online": "从未连接 never seen" if online is None else "在线 online" if online else "离线 OFFLINE",
        "offline": online is False,
        "since": local(row.get("since")),
        "state": row.get("state", "-") if online else "-",
        "fault": row.get("state") == "fault" or bool(row.get("last_fault")),
        "session": (row.get("session") or "") if sessions else "",
        "backlog": f"{row.get('backlog_entries', 0)} / {row.get('backlog_bytes', 0) / 1e6:.1f} MB",
        "free": f"{row['free_bytes'] / 1e9:.1f} GB" if "free_bytes" in row else "-",
        "clock": "-" if row.get("clock_synced") is None else "synced" if row["clock_synced"] else "NOT synced",
        "last_fault": row.get("last_fault") or "",
        "selftest": "never" if selftest is None else
        f"{local(selftest['time'])} {'passed' if selftest['passed'] else 'FAILED ' + ','.join(selftest['failed'])}",
        "alerts": row.get("alerts_at_central", 0) + len(row.get("alerts", [])),
        "late": len(row.get("upload_alerts", [])),
        "cert": str(row.get("certificate_expires") or "-")[:10],
        "pending_key": row.get("key_change_pending") or "",
    }


@require_GET
def fleet_view(request: HttpRequest) -> HttpResponse:
    person = who(request)
    if not roles.may_see_fleet(person.role):
        return HttpResponseForbidden("the fleet page is for technicians, supervisors and administrators")
    svc = services()
    alerts = [{"id": a.alert.id, "device": a.alert.device, "room": a.alert.room, "cause": a.alert.cause,
               "detail": a.alert.detail, "at": local(a.stored_ts), "session": a.alert.session,
               # The written explanation's form, for those who may open the session (technicians may not).
               "form": f"/s/{a.alert.device}/{a.alert.session}/explanation/alert-{a.alert.id}/"
               if roles.may_search(person.role) and a.alert.about_a_break else "",
               "what": a.alert.headline}
              for a in svc.store.alerts()
              if a.handled is None and roles.sees_alert(person.role, person.unit, a.alert.unit)]
    # Which session a device records is shown to those who look after every room, not to other units.
    every = roles.sees_every_alert(person.role)
    return render(request, "web/fleet.html", {"rows": [_shown(r, every) for r in fleet_rows(svc.store)],
                                              "alerts": alerts, "zone": zone_name()})


class AckForm(forms.Form):
    device = forms.CharField(max_length=64)
    note = forms.CharField(max_length=2000, required=False)


@require_POST
def ack_view(request: HttpRequest, alert_id: str) -> HttpResponse:
    person = who(request)
    if not roles.may_see_fleet(person.role):
        return HttpResponseForbidden("alerts are acknowledged by technicians, supervisors and administrators")
    form = AckForm(request.POST)
    if not form.is_valid():
        return HttpResponse("name the alert's device", status=400)
    device = form.cleaned_data["device"]
    kept = [a for a in services().store.alerts() if a.alert.id == alert_id and a.alert.device == device
            and a.handled is None and roles.sees_alert(person.role, person.unit, a.alert.unit)]
    if not kept:
        return HttpResponse("no such alert waiting, or not one of your unit's", status=404,
                            content_type="text/plain; charset=utf-8")
    audit(request, "alert_ack", f"{device}/{alert_id}", {"note": form.cleaned_data["note"]}, actor=person)
    try:
        services().store.handle_alert(device, alert_id, person.username, form.cleaned_data["note"])
    except CentralError:
        return HttpResponse("this alert was acknowledged meanwhile", status=409,
                            content_type="text/plain; charset=utf-8")
    services().banner_cache = None
    return HttpResponseRedirect("/fleet/")

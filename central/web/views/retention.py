"""Retention in the browser (RETENTION): a session's class, case, hold and history on its page, and the decisions
on it; the retention report (what expires when, with CSV); and the records keeper's removal of an expired
session, confirmed with their password. Every rule is central/retention.py's; every decision is written to
the session's register and the audit by it."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from central import retention
from central.csv_cells import inert
from central.errors import CentralError
from central.index import Query
from central.register import Actor
from central.web import roles
from central.web.access import Who, audit, session_or_404, visible_query, who
from central.web.services import services
from central.web.timefmt import local, zone_name
from central.web.views.accounts import confirm_password
from evidence.errors import RecorderError

OPS = ("raise", "lower", "confirm", "hold", "release", "case")


def actor(person: Who) -> Actor:
    return Actor(person.username, person.role, person.address)


def session_context(person: Who, device: str, session: str) -> dict[str, Any]:
    """What the session page shows of its retention, and which decisions this person may take."""
    svc = services()
    try:
        return _session_context(svc, person, device, session)
    except CentralError as err:
        return {"broken": str(err), "label": "—", "state": "登记受损 register broken: nothing is decided by it",
                "history": [], "may_decide": False, "may_hold": False}


def _session_context(svc: Any, person: Who, device: str, session: str) -> dict[str, Any]:
    # A MARK naming a class is the room's decision: written to the register when central first reads it here
    # (the sweep and a removal do the same), so the class shown is never below what the device asked for.
    svc.retention.record_device_classes(device, session, svc.ledger(device, session).entries)
    d = svc.retention.of(device, session)
    row = svc.index.sessions(Query(device=device, session=session))[0]
    now = dt.datetime.now(svc.config.central.zone)
    since = retention.kept_since(row).astimezone(now.tzinfo)
    end = retention.expires(d, since, svc.retention.cfg)
    return {
        "label": d.label, "cls": d.cls, "case": d.case, "hold": d.hold, "hold_reason": d.hold_reason,
        "case_file_until": d.case_file_until.isoformat() if d.case_file_until else "",
        "expires": local(end) if end else "", "state": retention.state_text(d, since, now, svc.retention.cfg),
        "removed": d.removal is not None,
        "pending": None if d.pending is None else {
            "cls": retention.LABELS[d.pending.cls], "by": d.pending.by, "role": roles.LABELS.get(d.pending.role, ""),
            "reason": d.pending.reason, "seq": d.pending.seq, "at": local(d.pending.at),
            "mine": d.pending.by == person.username or d.pending.role == person.role},
        "history": [{"seq": r.seq, "at": local(r.time), "actor": r.actor, "action": r.action,
                     "text": _history_text(r.action, r.detail)} for r in d.history],
        "may_decide": roles.may_decide_retention(person.role) and d.removal is None,
        "may_hold": roles.may_hold(person.role) and d.removal is None,
        "classes": [(c, retention.LABELS[c]) for c in retention.CLASSES],
        "grounds": list(retention.GROUNDS.items()),
    }


def _history_text(action: str, detail: Any) -> str:
    if action == "retention":
        how = (f"降低 lowered (asked by {detail.get('requested_by')})" if detail.get("lowered")
               else "提高 raised")
        return f"{how} → {retention.LABELS.get(detail.get('class'), detail.get('class'))}: {detail.get('reason', '')}"
    if action == "lower_request":
        return f"申请降低 asked to lower to {retention.LABELS.get(detail.get('class'), '')}: {detail.get('reason', '')}"
    if action == "hold":
        what = "法律保全 legal hold placed" if detail.get("on") else "解除保全 hold lifted"
        return f"{what}: {detail.get('reason', '')}"
    if action == "case":
        until = detail.get("case_file_until") or "未定 not given"
        return f"关联案件 linked to case {detail.get('case')} (case file kept until {until})"
    if action == "removal":
        return f"到期删除 removed after expiry: {len(detail.get('files', []))} segment files; entries kept"
    if action == "export":
        return f"导出 exported {detail.get('image')} ({detail.get('segments')} segments)"
    if action == "explanation":
        return "情况说明 written explanation"
    return action


class DecisionForm(forms.Form):
    op = forms.ChoiceField(choices=[(o, o) for o in OPS])
    cls = forms.ChoiceField(choices=[(c, c) for c in retention.CLASSES], required=False)
    grounds = forms.CharField(max_length=40, required=False)
    reason = forms.CharField(max_length=2000, required=False)
    request_seq = forms.IntegerField(min_value=0, required=False)
    case = forms.CharField(max_length=200, required=False)
    case_file_until = forms.DateField(required=False)


@require_POST
def decide_view(request: HttpRequest, device: str, session: str) -> HttpResponse:
    person = who(request)
    session_or_404(person, device, session)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return refused(request, device, session, "the form is incomplete: " + "; ".join(
            f"{k}: {' '.join(str(m) for m in v)}" for k, v in form.errors.items()), 400)
    f = form.cleaned_data
    rules = services().retention
    try:
        match f["op"]:
            case "raise":
                rules.raise_class(device, session, actor(person), f["cls"], f["reason"], f["grounds"])
            case "lower":
                rules.request_lower(device, session, actor(person), f["cls"], f["reason"])
            case "confirm":
                rules.confirm_lower(device, session, actor(person), -1 if f["request_seq"] is None
                                    else f["request_seq"])
            case "hold" | "release":
                rules.set_hold(device, session, actor(person), f["op"] == "hold", f["reason"])
            case _:
                rules.link_case(device, session, actor(person), f["case"], f["case_file_until"], f["reason"])
    except CentralError as err:  # the rule refused it, or the register needs a look: said, never a 500
        return refused(request, device, session, str(err), 409)
    return HttpResponseRedirect(f"/s/{device}/{session}/#retention")


def refused(request: HttpRequest, device: str, session: str, why: str, status: int) -> HttpResponse:
    return render(request, "web/refused.html", {"why": why, "back": f"/s/{device}/{session}/"}, status=status)


def _report_rows(person: Who, state: str) -> list[retention.ReportRow]:
    svc = services()
    rows = svc.index.sessions(visible_query(person, Query()))
    found = retention.report(svc.retention, rows, dt.datetime.now(svc.config.central.zone))
    if state == "expired":
        return [r for r in found if r.state.endswith("expired")]
    if state == "hold":
        return [r for r in found if r.hold]
    if state == "removed":
        return [r for r in found if r.removed]
    return found


def _report(request: HttpRequest, target: str) -> tuple[Who, str, list[retention.ReportRow]] | HttpResponse:
    """Who asks, the state they filter by and the report's rows, audited; or the refusal."""
    person = who(request)
    if not roles.may_see_retention(person.role):
        return HttpResponseForbidden("the retention report is for records keepers, the legal office, supervisors "
                                     "and administrators")
    state = request.GET.get("state", "")
    rows = _report_rows(person, state)
    audit(request, "retention_report", target, {"state": state, "found": len(rows)}, actor=person)
    return person, state, rows


@require_GET
def report_view(request: HttpRequest) -> HttpResponse:
    got = _report(request, "")
    if isinstance(got, HttpResponse):
        return got
    person, state, rows = got
    shown = [{**r.as_json(), "label": retention.LABELS[r.cls], "expires": local(r.expires) if r.expires else "",
              "expired": r.state.endswith("expired")} for r in rows[:1000]]
    return render(request, "web/retention.html", {"rows": shown, "total": len(rows), "state": state,
                                                  "zone": zone_name(), "may_remove": roles.may_remove(person.role)})


@require_GET
def report_csv_view(request: HttpRequest) -> HttpResponse:
    got = _report(request, "retention.csv")
    if isinstance(got, HttpResponse):
        return got
    rows = got[2]
    out = io.StringIO()
    writer = csv.writer(out)
    fields = ("device", "session", "unit", "room", "opened_at", "class", "case", "hold", "kept_since", "expires",
              "state")
    writer.writerow(fields)
    for r in rows:
        j = r.as_json()
        writer.writerow([inert(str(j[k])) for k in fields])
    response = HttpResponse(out.getvalue().encode("utf-8-sig"), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="retention.csv"'
    return response


class RemoveForm(forms.Form):
    confirm = forms.CharField(max_length=200)
    password = forms.CharField(max_length=200)


@require_http_methods(["GET", "POST"])
def remove_view(request: HttpRequest, device: str, session: str) -> HttpResponse:
    """The records keeper's confirmation: the session typed again and their own password."""
    person = who(request)
    row = session_or_404(person, device, session)
    if not roles.may_remove(person.role):
        return HttpResponseForbidden("only the records keeper removes an expired session's recordings")
    svc = services()
    context = {"device": device, "session": session, "retention": session_context(person, device, session),
               "segments": row.segments, "mb": f"{row.media_bytes / 1e6:.1f}"}
    if request.method == "GET":
        return render(request, "web/remove.html", context)
    form = RemoveForm(request.POST)
    if not form.is_valid() or form.cleaned_data["confirm"].strip() != f"{device}/{session}":
        return render(request, "web/remove.html", {**context, "error": f"type {device}/{session} exactly"},
                      status=400)
    wrong = confirm_password(request, form.cleaned_data["password"])
    if wrong:
        return render(request, "web/remove.html", {**context, "error": wrong}, status=403)
    now = dt.datetime.now(svc.config.central.zone)
    try:
        svc.retention.remove(device, session, actor(person), retention.kept_since(row).astimezone(now.tzinfo), now)
    except RecorderError as err:  # refused by the rules, or the disk failed: said, never a 500
        return refused(request, device, session, str(err), 409)
    return HttpResponseRedirect(f"/s/{device}/{session}/#retention")

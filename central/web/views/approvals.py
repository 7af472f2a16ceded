"""Asking to view a session, and a supervisor's approval or refusal (ACCESS): an approval lasts
`web.approval_hours`; both are in the audit."""

from __future__ import annotations

from django import forms
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from central.web import roles
from central.web.access import approval_expiry, audit, session_or_404, who
from central.web.models import AccessRequest
from central.web.timefmt import local


class RequestForm(forms.Form):
    reason = forms.CharField(label="事由 reason", max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class DecideForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "approve"), ("refuse", "refuse")])
    note = forms.CharField(required=False, max_length=2000)


@require_POST
def request_view(request: HttpRequest, device: str, session: str) -> HttpResponse:
    person = who(request)
    row = session_or_404(person, device, session)
    form = RequestForm(request.POST)
    if not form.is_valid() or not form.cleaned_data["reason"].strip():
        return HttpResponse("give a reason for viewing this session", status=400)
    reason = form.cleaned_data["reason"].strip()
    with transaction.atomic():  # the request stands only if its audit record was written
        made = AccessRequest.objects.create(requester=User.objects.get(pk=request.user.pk), device=device,
                                            session=session, unit=row.unit, reason=reason)
        audit(request, "request", f"{device}/{session}", {"request": made.pk, "reason": reason}, actor=person)
    return HttpResponseRedirect(f"/s/{device}/{session}/")


@require_GET
def approvals_view(request: HttpRequest) -> HttpResponse:
    person = who(request)
    deciding = person.role in roles.APPROVERS
    pending = (AccessRequest.objects.filter(state=AccessRequest.PENDING, unit=person.unit) if deciding
               else AccessRequest.objects.none())
    mine = AccessRequest.objects.filter(requester=request.user).order_by("-created")[:50]
    decided = (AccessRequest.objects.filter(decided_by=request.user).order_by("-decided_at")[:50] if deciding
               else AccessRequest.objects.none())

    def shown(r: AccessRequest) -> dict[str, object]:
        return {"id": r.pk, "who": r.requester.username, "device": r.device, "session": r.session, "unit": r.unit,
                "reason": r.reason, "created": local(r.created), "state": r.state, "note": r.note,
                "purpose": r.purpose, "range": "" if r.range_start is None else f"{r.range_start:g}–{r.range_end:g} s",
                "by": r.decided_by.username if r.decided_by else "", "expires": local(r.expires),
                "current": r.state == AccessRequest.APPROVED and r.expires is not None and r.expires > timezone.now()}

    return render(request, "web/approvals.html", {
        "deciding": deciding, "pending": [shown(r) for r in pending.select_related("requester").order_by("created")],
        "mine": [shown(r) for r in mine], "decided": [shown(r) for r in decided]})


@require_POST
def decide_view(request: HttpRequest, pk: int) -> HttpResponse:
    person = who(request)
    form = DecideForm(request.POST)
    if not form.is_valid():
        return HttpResponse("decision must be approve or refuse", status=400)
    with transaction.atomic():
        found = AccessRequest.objects.select_for_update().filter(pk=pk).first()
        if found is None or not roles.may_decide(person.role, person.unit, found.unit):
            return HttpResponseForbidden("only a supervisor of the session's unit decides this request")
        if found.requester_id == request.user.pk:
            return HttpResponseForbidden("nobody decides their own request")
        if found.state != AccessRequest.PENDING:
            return HttpResponse(f"this request was already {found.state}", status=409)
        approve = form.cleaned_data["decision"] == "approve"
        found.state = AccessRequest.APPROVED if approve else AccessRequest.REFUSED
        found.decided_by, found.decided_at = User.objects.get(pk=request.user.pk), timezone.now()
        found.note = form.cleaned_data["note"].strip()
        found.expires = approval_expiry() if approve else None
        found.save()
        audit(request, "approve" if approve else "refuse", f"{found.device}/{found.session}",
              {"request": found.pk, "requester": found.requester.username, "note": found.note,
               "expires": found.expires.isoformat() if found.expires else None}, actor=person)
    return HttpResponseRedirect("/approvals/")

"""Evidence exports in the browser (ARCHIVE, ACCESS): the legal office asks to export a session or a range of it,
a supervisor of the session's unit approves (on the approvals page, as for viewing), the legal office builds
the package while the approval lasts, and downloads the ISO image; central keeps the image. Every step is
audited; the export is also in the session's register."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.views.decorators.http import require_GET, require_POST

from central.errors import CentralError
from central.export.package import TimeRange, export_session
from central.web import roles
from central.web.access import Who, audit, current_approval, session_or_404, who
from central.web.models import AccessRequest
from central.web.services import services
from central.web.timefmt import local
from central.web.views.retention import actor, refused
from evidence.errors import RecorderError


class ExportRequestForm(forms.Form):
    reason = forms.CharField(max_length=2000)
    range_start = forms.FloatField(required=False, min_value=0)
    range_end = forms.FloatField(required=False, min_value=0)


def session_context(person: Who, device: str, session: str) -> dict[str, Any]:
    """What the session page shows of exports: the kept packages, and whether this person may ask or build."""
    if not roles.may_export(person.role):
        return {"may_export": False}
    approval = current_approval(person, device, session, AccessRequest.EXPORT)
    kept = [{"image": r.detail.get("image"), "at": local(r.time), "by": r.actor, "bytes": r.detail.get("bytes"),
             "range": r.detail.get("range"), "manifest": r.detail.get("manifest_sha256")}
            for r in services().retention.registers.records(device, session) if r.action == "export"]
    return {"may_export": True, "kept": kept, "approval": None if approval is None else {
        "id": approval.pk, "until": local(approval.expires), "by": approval.decided_by.username
        if approval.decided_by else "", "range": None if approval.range_start is None
        else f"{approval.range_start:g}–{approval.range_end:g} s"}}


@require_POST
def request_view(request: HttpRequest, device: str, session: str) -> HttpResponse:
    person = who(request)
    row = session_or_404(person, device, session)
    if not roles.may_export(person.role):
        return HttpResponseForbidden("evidence packages are made by the legal office")
    form = ExportRequestForm(request.POST)
    if not form.is_valid() or not form.cleaned_data["reason"].strip():
        return refused(request, device, session, "give the reason for the export (the case, the court, who asked)",
                       400)
    f = form.cleaned_data
    start, end = f["range_start"], f["range_end"]
    if (start is None) != (end is None):
        return refused(request, device, session, "give both ends of the range, or neither for the whole session", 400)
    if start is not None and end is not None:
        try:
            TimeRange(start, end)
        except CentralError as err:
            return refused(request, device, session, str(err), 400)
    with transaction.atomic():  # the request stands only if its audit record was written
        made = AccessRequest.objects.create(requester=User.objects.get(pk=request.user.pk), device=device,
                                            session=session, unit=row.unit, reason=f["reason"].strip(),
                                            purpose=AccessRequest.EXPORT, range_start=start, range_end=end)
        audit(request, "request", f"{device}/{session}", {"request": made.pk, "reason": made.reason,
                                                          "purpose": "export", "range": [start, end]}, actor=person)
    return HttpResponseRedirect(f"/s/{device}/{session}/#export")


@require_POST
def build_view(request: HttpRequest, device: str, session: str) -> HttpResponse:
    person = who(request)
    session_or_404(person, device, session)
    if not roles.may_export(person.role):
        return HttpResponseForbidden("evidence packages are made by the legal office")
    approval = current_approval(person, device, session, AccessRequest.EXPORT)
    if approval is None:
        return HttpResponseForbidden("exporting needs a current approval: ask for one on the session's page")
    svc = services()
    part = None if approval.range_start is None or approval.range_end is None \
        else TimeRange(approval.range_start, approval.range_end)
    granted = {"request": approval.pk, "reason": approval.reason,
               "approved_by": approval.decided_by.username if approval.decided_by else "",
               "approved_at": approval.decided_at.isoformat(timespec="seconds") if approval.decided_at else ""}
    try:
        export_session(svc.store, svc.retention.registers, svc.central_key, device, session, actor(person),
                       roles.LABELS.get(person.role, person.role), granted, svc.config.central.zone, part)
    except RecorderError as err:  # refused (a changed original, a removed session) or the disk failed
        return refused(request, device, session, str(err), 409)
    return HttpResponseRedirect(f"/s/{device}/{session}/#export")


@require_GET
def download_view(request: HttpRequest, device: str, session: str, image: str) -> HttpResponse | FileResponse:
    """A kept package, to the legal office (who burns it to disc); audited."""
    person = who(request)
    session_or_404(person, device, session)
    if not roles.may_export(person.role):
        return HttpResponseForbidden("evidence packages are handed out by the legal office")
    if current_approval(person, device, session, AccessRequest.EXPORT) is None:
        return HttpResponseForbidden("handing out a package needs a current export approval: ask for one on the "
                                     "session's page")
    kept = {r.detail.get("image") for r in services().retention.registers.records(device, session)
            if r.action == "export"}
    if image not in kept:
        raise Http404("no such package of this session")
    path = services().store.export_path(device, session, image)
    audit(request, "download", f"{device}/{session}", {"package": image}, actor=person)
    return FileResponse(path.open("rb"), as_attachment=True, filename=image, content_type="application/x-iso9660-image")

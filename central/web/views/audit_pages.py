"""The access audit, browsable and filterable, and as CSV. The signed file is the record; its rows are copied
into the database (`AuditRow`) as they are read, from where the last copy stopped, to filter and page."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import urllib.parse
from collections.abc import Iterator

from django.db import transaction
from django.db.models import Max, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from central.csv_cells import inert
from central.web import roles
from central.web.access import audit, page_number, who
from central.web.models import AuditRow
from central.web.services import services
from central.web.timefmt import entered, local, zone_name
from evidence.audit import ACTIONS, MalformedAudit, parse_record

PAGE = 100


def sync_rows() -> int:
    """Copy the audit file's records not yet in the database; returns how many were added."""
    path = services().audit.path
    with transaction.atomic():
        end = AuditRow.objects.aggregate(end=Max("end"))["end"] or 0
        rows: list[AuditRow] = []
        with path.open("rb") as f:
            f.seek(end)
            offset = end
            for line in f:
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                try:
                    r = parse_record(line[:-1])
                except MalformedAudit:
                    continue  # `recorder central audit --check` reports it; the page shows the rest
                rows.append(AuditRow(seq=r.seq, time=r.when, actor=r.actor, role=r.role, action=r.action,
                                     target=r.target, detail=json.dumps(r.detail, ensure_ascii=False),
                                     address=r.address, end=offset))
        AuditRow.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _filtered(request: HttpRequest) -> tuple[QuerySet[AuditRow], dict[str, str], str]:
    rows = AuditRow.objects.all().order_by("-seq")
    shown = {k: request.GET.get(k, "").strip() for k in ("actor", "action", "target", "from", "to")}
    error = ""
    if shown["actor"]:
        rows = rows.filter(actor__icontains=shown["actor"])
    if shown["action"]:
        rows = rows.filter(action=shown["action"])
    if shown["target"]:
        rows = rows.filter(target__icontains=shown["target"])
    try:
        start, end = entered(shown["from"]), entered(shown["to"])
    except ValueError as err:
        error, start, end = str(err), None, None
    if start is not None:
        rows = rows.filter(time__gte=start)
    if end is not None:
        rows = rows.filter(time__lt=end)
    return rows, shown, error


@require_GET
def audit_view(request: HttpRequest) -> HttpResponse:
    person = who(request)
    if not roles.may_audit(person.role):
        return HttpResponseForbidden("the audit is for the legal office, the records keeper and administrators")
    sync_rows()
    rows, shown, error = _filtered(request)
    page = page_number(request)
    total = rows.count()
    listed = [{"seq": r.seq, "time": local(r.time), "actor": r.actor, "role": r.role, "action": r.action,
               "target": r.target, "detail": r.detail, "address": r.address}
              for r in rows[(page - 1) * PAGE: page * PAGE]]
    check = services().audit.check() if request.GET.get("check") else None
    params = urllib.parse.urlencode({k: v for k, v in shown.items() if v})
    return render(request, "web/audit.html", {"rows": listed, "shown": shown, "actions": ACTIONS, "total": total,
                                              "page": page, "pages": max(1, math.ceil(total / PAGE)),
                                              "params": params, "error": error, "check": check,
                                              "zone": zone_name()})


@require_GET
def audit_csv_view(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    person = who(request)
    if not roles.may_audit(person.role):
        return HttpResponseForbidden("the audit is for the legal office, the records keeper and administrators")
    sync_rows()
    rows, shown, _ = _filtered(request)
    audit(request, "download", "audit.csv", {"filters": {k: v for k, v in shown.items() if v}}, actor=person)

    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["seq", "time", "actor", "role", "action", "target", "detail", "address"])
        for r in rows.order_by("seq").iterator():
            writer.writerow([r.seq, local(r.time), *map(inert, (r.actor, r.role, r.action, r.target, r.detail,
                                                                r.address))])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        yield out.getvalue()

    response = StreamingHttpResponse(itertools.chain(["\ufeff"], lines()), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="audit.csv"'
    return response

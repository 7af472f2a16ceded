"""Finding sessions (CLASSIFY), the session page (metadata, verification, timeline, player), the player's
manifest and segments, and the download of the originals. Content needs `access.may_view`; every search,
view, playback and download is in the audit."""

from __future__ import annotations

import datetime as dt
import io
import math
import tarfile
import urllib.parse
from collections.abc import Iterator
from typing import Any

from django import forms
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.views.decorators.http import require_GET

from central.errors import CentralError
from central.index import STATUSES, Query, SessionRow
from central.web import roles
from central.web.access import (
    Who,
    audit,
    current_approval,
    may_view,
    page_number,
    session_or_404,
    visible_query,
    who,
)
from central.web.models import AccessRequest
from central.web.playback import DEFAULT_CODECS, Ledger, codecs, fragment, viewable
from central.web.services import services
from central.web.timefmt import entered, local, zone_name
from central.web.views.explanations import session_explanations
from central.web.views.exports import session_context as export_context
from central.web.views.retention import session_context as retention_context
from evidence import layout
from evidence.rules import Problem
from evidence.verify import verify_session

PLAYING = "playing"
"""Session key: the sessions whose playback start this browser session has been audited for."""


class SearchForm(forms.Form):
    q_unit = forms.CharField(label="单位 unit", required=False, max_length=200)
    q_room = forms.CharField(label="房间 room", required=False, max_length=200)
    q_device = forms.CharField(label="设备编号 device", required=False, max_length=64)
    q_officer = forms.CharField(label="民警 officer (姓名或警号 name or certificate)", required=False, max_length=200)
    q_party = forms.CharField(label="当事人 party", required=False, max_length=200)
    q_case = forms.CharField(label="案件或事项 case or matter", required=False, max_length=200)
    q_status = forms.ChoiceField(label="状态 status", required=False,
                                 choices=[("", "全部 any")] + [(s, s) for s in STATUSES])
    q_from = forms.CharField(label="从 from", required=False, max_length=40)
    q_to = forms.CharField(label="到 to", required=False, max_length=40)

    def query(self) -> Query:
        d = self.cleaned_data

        def text(name: str) -> str | None:
            return str(d.get(name) or "").strip() or None

        try:
            start, end = entered(d.get("q_from") or ""), entered(d.get("q_to") or "")
        except ValueError as err:
            raise forms.ValidationError(str(err)) from err
        return Query(device=text("q_device"), officer=text("q_officer"), unit=text("q_unit"), case=text("q_case"),
                     party=text("q_party"), start=start, end=end, room=text("q_room"), status=text("q_status"))


def _row(row: SessionRow, now: dt.datetime) -> dict[str, Any]:
    standing = row.standing(now, services().config.upload)
    return {"device": row.device, "session": row.session, "unit": row.unit, "room": row.room,
            "location": row.location, "case": row.case, "matter": row.matter,
            "officers": ", ".join(f"{o.name} {o.certificate}" for o in row.officers),
            "parties": ", ".join(row.parties), "opened": local(row.opened_at), "closed": local(row.closed_at),
            "status": "interrupted, " + standing.status if row.interrupted else standing.status,
            "complete": row.complete, "segments": row.segments, "mb": f"{row.media_bytes / 1e6:.1f}",
            "booking": None if row.booking is None else {"id": row.booking.id, "version": row.booking.version,
                                                         "act": row.booking.act}}


@require_GET
def search_view(request: HttpRequest) -> HttpResponse:
    person = who(request)
    if not roles.may_search(person.role):
        if roles.may_see_fleet(person.role) and not request.GET:
            return HttpResponseRedirect("/fleet/")  # the technician's start page
        return HttpResponseForbidden("this role does not search sessions")
    form = SearchForm(request.GET or None)
    rows: list[dict[str, Any]] = []
    total, page, pages, error = 0, 1, 1, ""
    query = Query()
    if request.GET and not form.is_valid():
        error = "; ".join(str(e) for errors in form.errors.values() for e in errors)
    elif request.GET:
        try:
            query = form.query()
        except forms.ValidationError as err:
            error = "; ".join(err.messages)
    if not error:
        size = services().config.web.page_size
        page = page_number(request)
        now = dt.datetime.now(dt.UTC)
        found, total = services().index.search(visible_query(person, query), now, services().config.upload, size,
                                               (page - 1) * size)
        rows = [_row(r, now) for r in found]
        pages = max(1, math.ceil(total / size))
        filters = {k: str(v) for k, v in form.cleaned_data.items() if v} if request.GET else {}
        audit(request, "search", "", {"filters": filters, "page": page, "found": total}, actor=person)
    params = urllib.parse.urlencode({k: v for k, v in request.GET.items() if k != "page"})
    return render(request, "web/search.html", {"form": form, "rows": rows, "total": total, "page": page,
                                               "pages": pages, "error": error, "params": params,
                                               "zone": zone_name()})


@require_GET
def session_view(request: HttpRequest, device: str, session: str) -> HttpResponse:
    person = who(request)
    row = session_or_404(person, device, session)
    svc = services()
    allowed = may_view(person, device, session)
    context: dict[str, Any] = {"row": _row(row, dt.datetime.now(dt.UTC)), "allowed": allowed,
                               "device": device, "session": session, "zone": zone_name(), "person": person}
    approval = current_approval(person, device, session)
    context["approval_until"] = local(approval.expires) if approval is not None else ""
    context["needs_approval"] = roles.needs_approval(person.role, svc.config.web)
    context["requests"] = [
        {"created": local(r.created), "state": r.state, "reason": r.reason, "note": r.note, "purpose": r.purpose,
         "by": r.decided_by.username if r.decided_by else "", "expires": local(r.expires)}
        for r in AccessRequest.objects.filter(requester__username=person.username, device=device, session=session)
        .select_related("decided_by").order_by("-created")[:10]]
    if allowed:
        ledger = svc.ledger(device, session)
        report = svc.report(device, session, lambda: verify_session(
            svc.store.session_files(device, session), svc.store.session_key(device, session)))
        context["report"] = report
        # A session still being recorded or received has no close yet: that alone is not a problem to show.
        context["receiving"] = not row.complete and bool(report.findings) and all(
            f.problem is Problem.TRUNCATED for f in report.findings)
        context["moments"] = [{"t": m.seconds, "kind": m.kind, "text": m.text, "time": local(m.time)}
                              for m in ledger.moments()]
        context["officers"] = list(ledger.opening.officers) if ledger.opening else []
    context["explanations"] = session_explanations(person, device, session, row.unit)
    context["retention"] = retention_context(person, device, session)
    context["export"] = export_context(person, device, session)
    audit(request, "view", f"{device}/{session}", {"content": allowed}, actor=person)
    return render(request, "web/session.html", context)


def _viewer(request: HttpRequest, device: str, session: str) -> tuple[Who, Ledger] | HttpResponse:
    """The person and the session's ledger, if they may see its content now; else the 403 or 404."""
    person = who(request)
    session_or_404(person, device, session)
    if not may_view(person, device, session):
        return HttpResponseForbidden("viewing this session needs a current approval: ask for one on its page")
    svc = services()
    return person, svc.ledger(device, session)


def _playback_started(request: HttpRequest, person: Who, device: str, session: str) -> None:
    """Audit the first playback of the session in this browser session (the player's polls are not)."""
    key = f"{device}/{session}"
    playing = list(request.session.get(PLAYING, []))
    if key not in playing:
        audit(request, "playback", key, {}, actor=person)
        request.session[PLAYING] = [*playing[-50:], key]


@require_GET
def manifest_view(request: HttpRequest, device: str, session: str) -> HttpResponse:
    got = _viewer(request, device, session)
    if isinstance(got, HttpResponse):
        return got
    person, _ = got
    _playback_started(request, person, device, session)
    svc = services()
    ledger, ready = svc.viewable(device, session)

    def find() -> str | None:
        # One encoder per session: its first segment tells the codecs once it can be viewed.
        if not ready or ledger.opening is None:
            return None
        try:
            return codecs(viewable(svc.store, device, session, ready[0], ledger.opening.encrypted))
        except CentralError:
            return None  # the segment fails its check: its own fetch says so

    manifest = ledger.manifest(ready)
    manifest["codecs"] = svc.codecs(device, session, find) or DEFAULT_CODECS
    return JsonResponse(manifest)


@require_GET
def segment_view(request: HttpRequest, device: str, session: str, index: int) -> HttpResponse:
    got = _viewer(request, device, session)
    if isinstance(got, HttpResponse):
        return got
    person, ledger = got
    _playback_started(request, person, device, session)
    try:
        segment = ledger.segment(index)
        if ledger.opening is None:
            raise CentralError("the session's open entry is not stored")
        data = fragment(viewable(services().store, device, session, segment, ledger.opening.encrypted),
                        segment.start_ns)
    except CentralError as err:
        return HttpResponse(str(err), status=404, content_type="text/plain; charset=utf-8")
    return HttpResponse(data, content_type="video/mp4")


class _Chunks(io.RawIOBase):
    """A write-only stream that hands what was written to a generator, for tarfile's stream mode."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        parts, self.parts = self.parts, []
        yield from parts


def _originals(device: str, session: str, ledger: Ledger) -> Iterator[bytes]:
    files = services().store.session_files(device, session)
    key = services().store.session_key(device, session) or ""
    sink = _Chunks()
    root = f"{device}/{session}"
    with tarfile.open(fileobj=sink, mode="w|") as tar:
        def add(name: str, data: io.BufferedIOBase | io.BytesIO | Any, size: int) -> None:
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size, info.mode = size, 0o600  # evidence: the owner's alone, wherever it is unpacked
            tar.addfile(info, data)

        add("device.pub", io.BytesIO(key.encode() + b"\n"), len(key) + 1)
        for entry in ledger.entries:
            add(f"{layout.ENTRIES}/{layout.entry_name(entry.seq)}", io.BytesIO(entry.raw), len(entry.raw))
            yield from sink.drain()
        for segment in ledger.segments:
            with files.open_media(segment.file) as media:
                add(f"{layout.MEDIA}/{segment.file}", media, segment.bytes)
            yield from sink.drain()
    yield from sink.drain()


@require_GET
def download_view(request: HttpRequest, device: str, session: str) -> HttpResponse | StreamingHttpResponse:
    """The session's originals as stored (entries, sealed segments, the device's key): what `recorder verify`
    checks, as one tar file."""
    got = _viewer(request, device, session)
    if isinstance(got, HttpResponse):
        return got
    person, ledger = got
    audit(request, "download", f"{device}/{session}", {"entries": len(ledger.entries),
                                                       "segments": len(ledger.segments)}, actor=person)
    response = StreamingHttpResponse(_originals(device, session, ledger), content_type="application/x-tar")
    response["Content-Disposition"] = f'attachment; filename="{device}_{session}.tar"'
    return response


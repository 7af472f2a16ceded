"""The rooms page (ROOM): each room's day, for the units the viewer sees — its bookings, its sessions and the
gaps between them (booked time gone by with nothing recorded, sessions recorded without a booking) — as a
timeline drawn on the server (SVG, no script and no style attribute: the pages' Content-Security-Policy holds)
and as tables; and the booking form: make, change, cancel. The rules are central/bookings.py's (every change
signed for the room and audited there) and roles.py's; every look at the page is audited here."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.shortcuts import render
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from central.bookings import DECLINED, BookingRefused, Fields, Kept, Room, RoomDay, room_day
from central.index import Query
from central.register import Actor
from central.retention import LABELS
from central.web import roles
from central.web.access import Who, audit, visible_query, who
from central.web.services import services
from central.web.timefmt import entered, zone, zone_name
from evidence.booking import MAX_TEXT
from evidence.entry import Officer
from evidence.reasons import RETENTION_CLASSES

WIDTH, LEFT = 960, 0
"""The timeline's width in SVG units (a day, midnight to midnight)."""
BAND, GAP_BAND = 18, 8
GAP_LABELS = {"unrecorded": "预约未录 booked, nothing recorded", "unbooked": "无预约录制 recorded without a booking"}
STATES = {"booked": "已预约 booked", "under way": "进行中 under way", "over": "已结束 over",
          "cancelled": "已取消 cancelled"}


def actor(person: Who) -> Actor:
    return Actor(person.username, person.role, person.address)


def _day(text: str) -> tuple[dt.date, str]:
    """The day asked for (default today in the agency's zone), and what was wrong with the one given."""
    today = dt.datetime.now(zone()).date()
    if not text.strip():
        return today, ""
    try:
        return dt.date.fromisoformat(text.strip()), ""
    except ValueError:
        return today, f"{text!r} is not a day like 2026-11-29; today is shown"


def _bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    tz = zone()
    return (dt.datetime.combine(day, dt.time(), tz),
            dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz))


def _hm(when: dt.datetime, day: dt.date, clock: str = "%H:%M") -> str:
    """A time in the agency's zone: the clock alone on `day`, with the date otherwise."""
    local = when.astimezone(zone())
    return local.strftime(clock) if local.date() == day else local.strftime(f"%Y-%m-%d {clock}")



def _x(when: dt.datetime, start: dt.datetime, end: dt.datetime) -> float:
    span = (end - start).total_seconds()
    return LEFT + WIDTH * min(max((when - start).total_seconds(), 0.0), span) / span


def timeline(day: RoomDay, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> SafeString:
    """The room's day as SVG: hours along the top, the bookings, the sessions, and the gaps under them."""
    height = 16 + 2 * (BAND + 4) + GAP_BAND + 4
    hours = [(f"{_x(start + dt.timedelta(hours=h), start, end):.1f}", f"{h:02d}") for h in range(0, 24, 2)]
    ticks = format_html_join("", '<line class="hour" x1="{0}" y1="12" x2="{0}" y2="' + str(height) + '"></line>'
                             '<text class="hour" x="{0}" y="10">{1}</text>', hours)

    def bar(kind: str, s: dt.datetime, e: dt.datetime, y: int, h: int, title: str) -> tuple[Any, ...]:
        x0, x1 = _x(s, start, end), _x(e, start, end)
        return (kind, f"{x0:.1f}", y, f"{max(x1 - x0, 1.5):.1f}", h, title)

    row_b, row_s, row_g = 16, 16 + BAND + 4, 16 + 2 * (BAND + 4)
    bars = [bar("booked", k.booking.start, k.booking.end, row_b, BAND,
                f"{_hm(k.booking.start, start.date())}–{_hm(k.booking.end, start.date())} "
                f"{k.booking.matter or k.booking.case or k.booking.act}")
            for k in day.bookings if k.active()]
    for r in day.sessions:
        if r.close_reason == DECLINED:
            continue
        s = dt.datetime.fromtimestamp(r.opened_ts, dt.UTC)
        e = dt.datetime.fromtimestamp(r.closed_ts, dt.UTC) if r.closed_ts is not None else max(s, now)
        bars.append(bar("recorded", s, e, row_s, BAND, f"{_hm(s, start.date())}–{_hm(e, start.date())} {r.session}"))
    for g in day.gaps:
        what = GAP_LABELS[g.kind]
        bars.append(bar(f"gap-{g.kind}", g.start, g.end, row_g, GAP_BAND,
                        f"{_hm(g.start, start.date())}–{_hm(g.end, start.date())} {what}"))
    rects = format_html_join("", '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
                             bars)
    marker = SafeString("")
    if start <= now < end:
        marker = format_html('<line class="now" x1="{0}" y1="12" x2="{0}" y2="{1}"></line>',
                             f"{_x(now, start, end):.1f}", height)
    return format_html('<svg class="timeline" id="timeline-{}" role="img" aria-label="{}" viewBox="0 0 {} {}" '
                       'width="{}" height="{}">{}{}{}</svg>', day.room.device, day.room.name, WIDTH, height, WIDTH,
                       height, ticks, rects, marker)


def _room_context(person: Who, day: RoomDay, start: dt.datetime, end: dt.datetime, now: dt.datetime,
                  ) -> dict[str, Any]:
    d = start.date()
    bookings = [{
        "id": k.booking.id, "version": k.booking.version, "start": _hm(k.booking.start, d),
        "end": _hm(k.booking.end, d), "case": k.booking.case, "matter": k.booking.matter, "act": k.booking.act,
        "parties": "、".join(k.booking.parties),
        "officers": "、".join(f"{o.name} {o.certificate}" for o in k.booking.officers),
        "retention": LABELS[k.booking.retention], "auto_start": k.booking.auto_start,
        "state": STATES[k.state(now)], "cancelled": k.cancelled is not None,
        "open": k.cancelled is None and k.booking.end > now,
        "sessions": day.matched.get(k.booking.id, ()), "made_by": k.made.by,
    } for k in day.bookings]
    sessions = [{
        "session": r.session, "opened": _hm(dt.datetime.fromtimestamp(r.opened_ts, dt.UTC), d, "%H:%M:%S"),
        "closed": _hm(dt.datetime.fromtimestamp(r.closed_ts, dt.UTC), d, "%H:%M:%S") if r.closed_ts is not None
        else "",
        "booking": r.booking.id if r.booking is not None else "", "matter": r.matter or r.case,
        "declined": r.close_reason == DECLINED,
    } for r in day.sessions]
    gaps = [{"kind": g.kind, "start": _hm(g.start, d), "end": _hm(g.end, d), "booking": g.booking,
             "session": g.session} for g in day.gaps]
    return {"device": day.room.device, "unit": day.room.unit, "name": day.room.name,
            "timeline": timeline(day, start, end, now), "bookings": bookings, "sessions": sessions, "gaps": gaps,
            "may_book": roles.may_book(person.role, person.unit, day.room.unit)}


def _visible_rooms(person: Who) -> list[Room]:
    return [r for r in services().bookings.rooms() if roles.sees_unit(person.role, person.unit, r.unit)]


@require_GET
def rooms_view(request: HttpRequest) -> HttpResponse:
    person = who(request)
    if not roles.may_see_rooms(person.role):
        return HttpResponseForbidden("the rooms page is for those who find sessions")
    day, error = _day(request.GET.get("day", ""))
    start, end = _bounds(day)
    now = dt.datetime.now(zone())
    svc = services()
    rooms = []
    for room in _visible_rooms(person):
        sessions = svc.index.sessions(visible_query(person, Query(device=room.device, start=start, end=end)))
        rooms.append(_room_context(person, room_day(room, svc.bookings.of(room.device).bookings, sessions, start,
                                                    end, now), start, end, now))
    audit(request, "search", "rooms", {"filters": {"day": day.isoformat()}, "page": 1, "found": len(rooms)},
          actor=person)
    return render(request, "web/rooms.html", {
        "rooms": rooms, "day": day.isoformat(), "zone": zone_name(), "error": error,
        "previous": (day - dt.timedelta(days=1)).isoformat(), "next": (day + dt.timedelta(days=1)).isoformat()})


class BookingForm(forms.Form):
    start = forms.CharField(max_length=40)
    end = forms.CharField(max_length=40)
    case = forms.CharField(max_length=MAX_TEXT, required=False)
    matter = forms.CharField(max_length=MAX_TEXT, required=False)
    act = forms.CharField(max_length=MAX_TEXT, required=False)
    parties = forms.CharField(max_length=20 * MAX_TEXT, required=False)
    officers = forms.CharField(max_length=20 * MAX_TEXT, required=False)
    retention = forms.ChoiceField(choices=[(c, c) for c in RETENTION_CLASSES])
    auto_start = forms.BooleanField(required=False)

    def booking_fields(self) -> Fields:
        """The fields as typed; BookingRefused naming the field that cannot be read."""
        d = self.cleaned_data
        try:
            start, end = entered(d["start"]), entered(d["end"])
        except ValueError as err:
            raise BookingRefused(f"start/end: {err}") from err
        if start is None or end is None:
            raise BookingRefused("start/end: give when the booking starts and when it is expected to end")
        officers = []
        for n, line in enumerate(_lines(d["officers"]), 1):
            name, sep, certificate = line.replace("：", ":").partition(":")
            if not sep:
                raise BookingRefused(f"officers, line {n}: {line!r}: write each officer as NAME:CERTIFICATE_NUMBER")
            officers.append(Officer(name.strip(), certificate.strip()))
        return Fields(start, end, d["case"], d["matter"], d["act"], tuple(_lines(d["parties"])), tuple(officers),
                      d["retention"], d["auto_start"])


def _form_errors(form: forms.Form) -> str:
    return "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in form.errors.items())


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _form_values(fields: Fields | None, day: dt.date) -> dict[str, Any]:
    """What the form shows: a booking's fields, or the next whole hour (on `day`, if later) for a new one."""
    if fields is None:
        now = dt.datetime.now(zone())
        start = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        if day > start.date():
            start = dt.datetime.combine(day, dt.time(9), zone())
        fields = Fields(start, start + dt.timedelta(hours=1))
    return {"start": fields.start.astimezone(zone()).strftime("%Y-%m-%dT%H:%M"),
            "end": fields.end.astimezone(zone()).strftime("%Y-%m-%dT%H:%M"), "case": fields.case,
            "matter": fields.matter, "act": fields.act, "parties": "\n".join(fields.parties),
            "officers": "\n".join(f"{o.name}:{o.certificate}" for o in fields.officers),
            "retention": fields.retention, "auto_start": fields.auto_start}


def _posted(request: HttpRequest) -> dict[str, Any]:
    """The form as posted, to show again beside what was wrong."""
    post = request.POST
    return {k: post.get(k, "") for k in ("start", "end", "case", "matter", "act", "parties", "officers",
                                          "retention")} | {"auto_start": bool(post.get("auto_start"))}


def _form_page(request: HttpRequest, person: Who, room: Room, values: dict[str, Any], kept: Kept | None = None,
               error: str = "", status: int = 200) -> HttpResponse:
    history = [] if kept is None else [{"change": s.change, "version": s.version, "by": s.by, "at": s.at}
                                       for s in kept.history]
    now = dt.datetime.now(zone())
    return render(request, "web/booking.html", {
        "room": room, "v": values, "kept": kept, "history": history, "error": error, "zone": zone_name(),
        "classes": [(c, LABELS[c]) for c in RETENTION_CLASSES],
        "state": STATES[kept.state(now)] if kept is not None else "",
        "may_book": roles.may_book(person.role, person.unit, room.unit)
        and (kept is None or (kept.cancelled is None and kept.booking.end > now))}, status=status)


def _booking_room(person: Who, device: str) -> Room:
    """The room, if this person sees it (404 otherwise, so rooms of other units cannot be probed)."""
    for room in _visible_rooms(person):
        if room.device == device:
            return room
    raise Http404("no such room, or not one you may see")


def _may_book(person: Who, room: Room) -> HttpResponse | None:
    if roles.may_book(person.role, person.unit, room.unit):
        return None
    return HttpResponseForbidden("bookings are made by the case officers and supervisors of the room's unit, and "
                                 "administrators")


@require_http_methods(["GET", "POST"])
def book_view(request: HttpRequest) -> HttpResponse:
    """A new booking of the room named by `device`."""
    person = who(request)
    room = _booking_room(person, (request.POST if request.method == "POST" else request.GET).get("device", ""))
    refused = _may_book(person, room)
    if refused is not None:
        return refused
    if request.method == "GET":
        day, _ = _day(request.GET.get("day", ""))
        return _form_page(request, person, room, _form_values(None, day))
    form = BookingForm(request.POST)
    if not form.is_valid():
        return _form_page(request, person, room, _posted(request), error=_form_errors(form), status=400)
    try:
        kept = services().bookings.make(room.device, form.booking_fields(), actor(person))
    except BookingRefused as err:
        return _form_page(request, person, room, _posted(request), error=str(err), status=409)
    return _redirect(kept, room)


def _redirect(kept: Kept, room: Room) -> HttpResponseRedirect:
    day = kept.booking.start.astimezone(zone()).date().isoformat()
    return HttpResponseRedirect(f"/rooms/?day={day}#room-{room.device}")


def _found(person: Who, booking_id: str) -> tuple[Room, Kept]:
    try:
        held, kept = services().bookings.find(booking_id)
    except BookingRefused as err:
        raise Http404("no such booking") from err
    return _booking_room(person, held.device), kept


@require_http_methods(["GET", "POST"])
def booking_view(request: HttpRequest, booking_id: str) -> HttpResponse:
    """A booking: its fields and history; the form to change it."""
    person = who(request)
    room, kept = _found(person, booking_id)
    if request.method == "GET":
        audit(request, "search", "rooms", {"filters": {"booking": booking_id}, "page": 1, "found": 1}, actor=person)
        return _form_page(request, person, room, _form_values(Fields.of(kept.booking), dt.date.min), kept)
    refused = _may_book(person, room)
    if refused is not None:
        return refused
    form = BookingForm(request.POST)
    if not form.is_valid():
        return _form_page(request, person, room, _posted(request), kept, error=_form_errors(form), status=400)
    try:
        changed = services().bookings.change(booking_id, form.booking_fields(), actor(person))
    except BookingRefused as err:
        return _form_page(request, person, room, _posted(request), kept, error=str(err), status=409)
    return _redirect(changed, room)


@require_POST
def cancel_view(request: HttpRequest, booking_id: str) -> HttpResponse:
    person = who(request)
    room, kept = _found(person, booking_id)
    refused = _may_book(person, room)
    if refused is not None:
        return refused
    try:
        cancelled = services().bookings.cancel(booking_id, actor(person))
    except BookingRefused as err:
        return _form_page(request, person, room, _form_values(Fields.of(kept.booking), dt.date.min), kept,
                          error=str(err), status=409)
    return _redirect(cancelled, room)


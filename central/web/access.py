"""Who is asking, and whether they may (ACCESS): the log-in wall, the role and unit of the account, the
approval to view a session, and the audit record of what they did. Every view goes through here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.utils import timezone

from central.index import Query, SessionRow
from central.web import roles
from central.web.models import AccessRequest, Staff
from central.web.services import services
from evidence import layout

OPEN_PATHS = ("/login/", "/static/")
CSP = ("default-src 'self'; media-src 'self' blob:; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
"""Only this server's own scripts, styles and media (the player's MediaSource is a blob: URL)."""


class LoginRequiredMiddleware:
    """Every page and file needs a logged-in account with a role: pages send the browser to the log-in
    page; media, data and downloads answer 403, so no URL is reachable without logging in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self._answer(request)
        if not request.path.startswith("/static/"):
            # Recordings, names and the audit are never kept in a browser's or a proxy's cache: an expired
            # approval must not leave the video on the officer's disk.
            response["Cache-Control"] = "no-store"
        response["Content-Security-Policy"] = CSP
        return response

    def _answer(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(OPEN_PATHS):
            if not request.user.is_authenticated:
                if request.path.endswith((".json", ".mp4", ".tar", ".csv")):
                    return HttpResponseForbidden("log in first")
                return HttpResponseRedirect(f"/login/?next={request.path}")
            if not Staff.objects.filter(user_id=request.user.pk).exists():
                return HttpResponseForbidden("this account has no role; an administrator gives it one")
        return self.get_response(request)


@dataclass(frozen=True)
class Who:
    username: str
    role: str
    unit: str
    address: str

    @property
    def label(self) -> str:
        return roles.LABELS.get(self.role, self.role)


def who(request: HttpRequest) -> Who:
    staff = Staff.objects.get(user_id=request.user.pk)
    return Who(request.user.get_username(), staff.role, staff.unit, address(request))


MAX_PAGE = 100_000


def page_number(request: HttpRequest) -> int:
    """The `page` asked for: 1 unless it is a whole number, and never past MAX_PAGE (a database cannot skip
    more rows than a 64-bit number holds)."""
    try:
        return min(MAX_PAGE, max(1, int(request.GET.get("page", "1"))))
    except ValueError:
        return 1


def address(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def audit(request: HttpRequest | None, action: str, target: str = "", detail: dict[str, Any] | None = None,
          actor: Who | None = None, username: str = "") -> None:
    """Append a record to the signed access audit before the action is answered."""
    if actor is None and request is not None and request.user.is_authenticated:
        actor = who(request)
    services().audit.append(actor.username if actor else username, actor.role if actor else "",
                            action, target, detail or {}, actor.address if actor else
                            (address(request) if request is not None else ""))


def visible_query(person: Who, query: Query) -> Query:
    """`query` narrowed to the units this person may see."""
    from dataclasses import replace

    return query if person.role in roles.ALL_UNITS else replace(query, units=(person.unit,))


def find_session(person: Who, device: str, session: str) -> SessionRow | None:
    """The indexed session, if it exists and this person may see it; None otherwise (the caller answers 404
    for both, so ids cannot be probed)."""
    if not roles.may_search(person.role) or not layout.DEVICE_ID.match(device) or not layout.SESSION_ID.match(session):
        return None
    rows = services().index.sessions(visible_query(person, Query(device=device, session=session)))
    return rows[0] if rows else None


def session_or_404(person: Who, device: str, session: str) -> SessionRow:
    """The session, if this person may see it; else 404, the same for one that does not exist."""
    row = find_session(person, device, session)
    if row is None:
        raise Http404("no such session, or not one you may see")
    return row


def current_approval(person: Who, device: str, session: str,
                     purpose: str = AccessRequest.VIEW) -> AccessRequest | None:
    """This person's approval for `purpose` (viewing, or an export) of the session, while it lasts."""
    now = timezone.now()
    return (AccessRequest.objects.filter(requester__username=person.username, device=device, session=session,
                                         state=AccessRequest.APPROVED, expires__gt=now, purpose=purpose)
            .order_by("-expires").first())


def may_view(person: Who, device: str, session: str) -> bool:
    """Whether this person may see the session's content now: an exempt role, or a current approval."""
    return not roles.needs_approval(person.role, services().config.web) or current_approval(
        person, device, session) is not None


def approval_expiry() -> dt.datetime:
    return timezone.now() + dt.timedelta(hours=services().config.web.approval_hours)

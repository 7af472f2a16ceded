from __future__ import annotations

from django.contrib.staticfiles.views import serve
from django.urls import path, re_path

from central.web.views import (
    accounts,
    approvals,
    audit_pages,
    explanations,
    exports,
    fleet,
    retention,
    rooms,
    sessions,
    stats,
)

_S = "s/<str:device>/<str:session>/"

urlpatterns = [
    path("login/", accounts.login_view),
    path("logout/", accounts.logout_view),
    path("accounts/", accounts.accounts_view),
    path("password/", accounts.password_view),
    path("", sessions.search_view),
    path(_S, sessions.session_view),
    path(_S + "play.json", sessions.manifest_view),
    path(_S + "seg/<int:index>.mp4", sessions.segment_view),
    path(_S + "originals.tar", sessions.download_view),
    path(_S + "request", approvals.request_view),
    path(_S + "retention", retention.decide_view),
    path(_S + "remove", retention.remove_view),
    path(_S + "export/request", exports.request_view),
    path(_S + "export/build", exports.build_view),
    path(_S + "export/<str:image>", exports.download_view),
    path("retention/", retention.report_view),
    path("retention.csv", retention.report_csv_view),
    path(_S + "explanation/scan/<str:sha256>", explanations.scan_view),
    path(_S + "explanation/<str:key>/", explanations.explanation_view),
    path("approvals/", approvals.approvals_view),
    path("approvals/<int:pk>/decide", approvals.decide_view),
    path("audit/", audit_pages.audit_view),
    path("audit.csv", audit_pages.audit_csv_view),
    path("rooms/", rooms.rooms_view),
    path("rooms/book", rooms.book_view),
    path("rooms/booking/<str:booking_id>/", rooms.booking_view),
    path("rooms/booking/<str:booking_id>/cancel", rooms.cancel_view),
    path("fleet/", fleet.fleet_view),
    path("stats/", stats.stats_view),
    path("stats.csv", stats.stats_csv_view),
    path("fleet/alerts/<str:alert_id>/ack", fleet.ack_view),
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
]

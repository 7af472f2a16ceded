"""The statistics (STATS): per unit, room, officer or device and per day, week or month, the sessions, hours
recorded, breaks and declined sessions by reason, upload delays, retention classes and device availability,
as tables and bar charts, and as CSV. A supervisor's cover their own unit; every view is audited."""

from __future__ import annotations

import csv
import datetime as dt
import io
import urllib.parse
from collections.abc import Callable
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import render
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET

from central.csv_cells import inert
from central.errors import CentralError
from central.retention import EVERYDAY, LABELS
from central.stats import Stats, StatsQuery, compute
from central.web import roles
from central.web.access import Who, audit, who
from central.web.charts import bar_chart
from central.web.services import services
from central.web.timefmt import entered, zone, zone_name
from evidence.reasons import DECLINE_REASONS, INTERRUPTION_REASONS

DEFAULT_DAYS = 28
FIRST_YEAR, LAST_YEAR = 2000, 2200
"""Statistics are asked for within these years (the arithmetic of periods near year 9999 overflows)."""
MAX_BARS = 60
"""A chart draws at most this many bars (the table and the CSV have every row)."""
MAX_TABLE_ROWS = 2000
"""The page's table shows at most this many rows (the CSV has them all)."""
GROUP_LABELS = {"unit": "单位 unit", "room": "房间 room", "officer": "民警 officer", "device": "设备 device"}
PERIOD_LABELS = {"day": "日 day", "week": "周 week", "month": "月 month"}
COLUMN_LABELS = {
    "unit": "单位 unit", "room": "房间 room", "officer": "民警 officer", "certificate": "警号 certificate",
    "device": "设备 device", "period": "时段 period", "period_start": "起始 from", "sessions": "会话 sessions",
    "hours_recorded": "录制小时 hours recorded", "interruptions": "中断合计 breaks", "declined": "拒绝合计 declined",
    "complete": "已完整 complete", "upload_delay_median_s": "上传延迟中位数 upload delay median",
    "upload_delay_p95_s": "上传延迟95% upload delay p95", "late": "超期 late",
    "online_share": "在线率 online", "online_hours": "在线小时 hours online", "known_hours": "已知小时 hours known",
}


class StatsForm(forms.Form):
    start = forms.CharField(label="从 from", max_length=40)
    end = forms.CharField(label="到 to (含当日 the day included)", max_length=40)
    group = forms.ChoiceField(label="分组 group by", choices=list(GROUP_LABELS.items()))
    period = forms.ChoiceField(label="时段 period", choices=list(PERIOD_LABELS.items()))

    @classmethod
    def asked(cls, request: HttpRequest) -> StatsForm:
        """The form as asked, each field not given at its default, so the form shows what is counted."""
        today = dt.datetime.now(zone()).date()
        data = {"start": (today - dt.timedelta(days=DEFAULT_DAYS - 1)).isoformat(), "end": today.isoformat(),
                "group": "unit", "period": "week"}
        data.update({k: given for k in data if (given := request.GET.get(k, "")).strip()})
        return cls(data)

    def stats_query(self, person: Who) -> StatsQuery:
        """The query the form asks for, narrowed to the units `person` may see. A date alone for `end` takes
        that whole day in; a date and time is the moment the range ends."""
        d = self.cleaned_data
        try:
            start, end = entered(d["start"]), entered(d["end"])
        except ValueError as err:
            raise forms.ValidationError(str(err)) from err
        if start is None or end is None:
            raise forms.ValidationError("give the range's start and end")
        if not FIRST_YEAR <= start.year <= LAST_YEAR or not FIRST_YEAR <= end.year <= LAST_YEAR:
            raise forms.ValidationError(f"give a range within the years {FIRST_YEAR}–{LAST_YEAR}")
        if _date_only(d["end"].strip()):
            end = dt.datetime.combine(end.date() + dt.timedelta(days=1), dt.time(), end.tzinfo)
        units = None if person.role in roles.ALL_UNITS else (person.unit,)
        return StatsQuery(start, end, d["group"], d["period"], units)


def _date_only(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _retention() -> Callable[[str, str], str]:
    """A session's retention class: only a session with a register can be other than everyday, so the
    register is read for those alone."""
    svc = services()
    registered = set(svc.store.registers())
    return lambda device, session: (svc.retention.of(device, session).cls if (device, session) in registered
                                    else EVERYDAY)


def _statistics(request: HttpRequest, person: Who) -> tuple[StatsForm, Stats | None, str]:
    form = StatsForm.asked(request)
    if not form.is_valid():
        return form, None, "; ".join(str(e) for errors in form.errors.values() for e in errors)
    svc = services()
    try:
        query = form.stats_query(person)
        every = query.units is None
        stats = compute(svc.index, query, zone(), svc.config.upload, _retention(), svc.store.presence,
                        svc.store.enrolled() if every else ())
    except forms.ValidationError as err:
        return form, None, "; ".join(err.messages)
    except CentralError as err:
        return form, None, str(err)
    return form, stats, ""


def _filters(form: StatsForm) -> dict[str, str]:
    return {k: str(v) for k, v in form.cleaned_data.items()}


def _heading(column: str) -> str:
    for prefix, table in (("interruptions_", INTERRUPTION_REASONS), ("declined_", DECLINE_REASONS)):
        if column.startswith(prefix):
            code = column.removeprefix(prefix)
            return f"{table[code].zh} {code}" if code in table else code
    if column.startswith("retention_"):
        code = column.removeprefix("retention_")
        return f"{LABELS.get(code, code)}"
    return COLUMN_LABELS.get(column, column)


def _duration(seconds: float) -> str:
    if abs(seconds) < 120:
        return f"{seconds:.0f} s"
    if abs(seconds) < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column in ("upload_delay_median_s", "upload_delay_p95_s"):
        return _duration(float(value))
    if column == "online_share":
        return f"{100 * value:.1f} %"
    if column == "period_start":
        return str(value)[:10]
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _charts(stats: Stats) -> list[SafeString]:
    by_period = {p.label: 0.0 for p in stats.periods}
    hours: dict[str, float] = {}
    breaks: dict[str, float] = {}
    declined: dict[str, float] = {}
    online: dict[str, list[float]] = {}
    for r in stats.rows:
        name = " · ".join(r.group)
        by_period[r.period] += r.sessions
        hours[name] = hours.get(name, 0.0) + r.hours
        for code, n in r.interruptions.items():
            breaks[code] = breaks.get(code, 0.0) + n
        for code, n in r.declined.items():
            declined[code] = declined.get(code, 0.0) + n
        if r.known_s > 0:
            known = online.setdefault(name, [0.0, 0.0])
            known[0] += r.online_s
            known[1] += r.known_s

    def count(v: float) -> str:
        return f"{v:.0f}"

    periods = list(by_period.items())
    charts = [
        bar_chart("chart-sessions", _cut("各时段会话数 Sessions per period", len(periods), "last"), periods[-MAX_BARS:],
                  count),
        bar_chart("chart-hours", _cut("录制时长 Hours recorded", len(hours), "largest"), _most(hours, True),
                  lambda v: _duration(v * 3600)),
        bar_chart("chart-breaks", "中断原因 Breaks by reason",
                  [(f"{INTERRUPTION_REASONS[c].zh if c in INTERRUPTION_REASONS else ''} {c}".strip(), breaks[c])
                   for c in stats.interruption_codes], count),
        bar_chart("chart-declined", "拒绝录制原因 Declined by reason",
                  [(f"{DECLINE_REASONS[c].zh if c in DECLINE_REASONS else ''} {c}".strip(), declined[c])
                   for c in stats.decline_codes], count),
    ]
    if stats.query.group != "officer":
        share = {k: 100 * v[0] / v[1] for k, v in online.items()}
        charts.append(bar_chart("chart-online", _cut("设备在线率 Device availability", len(share), "lowest"),
                                _most(share, False), lambda v: f"{v:.1f} %"))
    return charts


def _most(values: dict[str, float], largest: bool) -> list[tuple[str, float]]:
    """The MAX_BARS largest (or lowest) values, in the order of their names."""
    kept = sorted(values.items(), key=lambda kv: -kv[1] if largest else kv[1])[:MAX_BARS]
    return sorted(kv for kv in kept if kv[1] > 0 or not largest)


def _cut(title: str, count: int, which: str) -> str:
    return title if count <= MAX_BARS else f"{title} ({which} {MAX_BARS} of {count})"


@require_GET
def stats_view(request: HttpRequest) -> HttpResponse:
    person = who(request)
    if not roles.may_see_stats(person.role):
        return HttpResponseForbidden("the statistics are for supervisors, the legal office, the records keeper and "
                                     "administrators")
    form, stats, error = _statistics(request, person)
    context: dict[str, Any] = {"form": form, "error": error, "zone": zone_name(),
                               "params": urllib.parse.urlencode(request.GET), "own_unit": person.unit
                               if person.role not in roles.ALL_UNITS else ""}
    if stats is not None:
        header, body = stats.table()
        context.update(
            header=[_heading(c) for c in header], rows=len(body), shown=min(len(body), MAX_TABLE_ROWS),
            body=[[_cell(c, v) for c, v in zip(header, row, strict=True)] for row in body[:MAX_TABLE_ROWS]],
            charts=_charts(stats), start=stats.query.start.isoformat(sep=" "),
            end=stats.query.end.isoformat(sep=" "))
        audit(request, "stats", "", {"filters": _filters(form), "rows": len(body)}, actor=person)
    return render(request, "web/stats.html", context, status=400 if error else 200)


@require_GET
def stats_csv_view(request: HttpRequest) -> HttpResponse:
    person = who(request)
    if not roles.may_see_stats(person.role):
        return HttpResponseForbidden("the statistics are for supervisors, the legal office, the records keeper and "
                                     "administrators")
    form, stats, error = _statistics(request, person)
    if stats is None:
        return HttpResponse(error, status=400, content_type="text/plain; charset=utf-8")
    header, body = stats.table()
    audit(request, "stats", "stats.csv", {"filters": _filters(form), "rows": len(body)}, actor=person)
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(header)
    for row in body:
        writer.writerow(["" if v is None else inert(v) if isinstance(v, str) else v for v in row])
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="stats.csv"'
    return response

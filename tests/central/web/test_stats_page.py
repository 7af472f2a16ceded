"""The statistics page and its CSV (STATS) on the real server over the shared recorded session: the figures the
page and the export give are the statistics of the index, for the roles that may see them and, for a
supervisor, of their own unit only; every look is audited; the charts draw in Chromium under the pages'
Content-Security-Policy with nothing refused."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import urllib.parse
from pathlib import Path
from typing import Any

from central.index import SessionIndex
from central.stats import StatsQuery, compute
from central.web.client import WebClient
from firmware_py import rig as rig_mod
from provisioning.central_key import load_central_key
from tests.central.web.conftest import ACCOUNTS, OTHER_UNIT, PASSWORD, Site

LEGAL, SUPERVISOR, VIEWER, TECHNICIAN = (ACCOUNTS[k][0] for k in ("legal", "supervisor", "viewer", "technician"))
OTHER_SUPERVISOR = "钱科长"


def exported(client: WebClient, params: str) -> list[dict[str, str]]:
    reply = client.get("/stats.csv?" + params)
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/csv"), reply.text[:300]
    return list(csv.DictReader(io.StringIO(reply.text.lstrip("\ufeff"))))


def without_clock(row: dict[str, str]) -> dict[str, str]:
    """A row without the availability columns, which grow with the clock within the current period."""
    return {k: v for k, v in row.items() if k not in ("online_share", "online_hours", "known_hours")}


def today(site: Site) -> dt.date:
    return dt.datetime.now(site.recorded.rig.central.central.zone).date()


def test_the_export_gives_the_statistics_of_the_index__STATS(site: Site) -> None:
    day = today(site).isoformat()
    rows = exported(site.client(LEGAL), f"start={day}&end={day}&group=device&period=month")
    [ours] = [r for r in rows if r["device"] == site.device]
    assert int(ours["sessions"]) >= 1 and float(ours["hours_recorded"]) > 0

    rig = site.recorded.rig
    zone = rig.central.central.zone
    index = SessionIndex(rig.store, load_central_key(Path(rig.central.receiver.private_key_file)))
    try:
        start = dt.datetime.combine(today(site), dt.time(), zone)
        stats = compute(index, StatsQuery(start, start + dt.timedelta(days=1), "device", "month"), zone,
                        rig.central.upload, lambda d, s: "everyday", rig.store.presence, rig.store.enrolled())
    finally:
        index.close()
    header, body = stats.table()
    [expected] = [dict(zip(header, r, strict=True)) for r in body if r[0] == site.device]
    # Everything but the retention classes (the register's) and the availability, which runs on with the clock.
    for column in header[:header.index("late") + 1]:
        assert ours[column] == ("" if expected[column] is None else str(expected[column])), column
    assert sum(int(v) for k, v in ours.items() if k.startswith("retention_")) == int(ours["sessions"])
    assert 0 < float(ours["online_share"]) <= 1  # the rig's device has been online since it started


def test_the_page_shows_tables_and_charts_and_both_are_audited__STATS(site: Site) -> None:
    legal = site.client(LEGAL)
    page = legal.get("/stats/?group=unit&period=day")
    assert page.status == 200 and '<svg class="chart" id="chart-sessions"' in page.text
    assert site.unit in page.text and 'href="/stats/"' in page.text  # the table, and the link in the menu
    exported(legal, f"start={today(site).isoformat()}&end={today(site).isoformat()}&group=officer&period=week")
    audit = site.client("admin").get(f"/audit.csv?action=stats&actor={urllib.parse.quote(LEGAL)}").text
    mine = list(csv.DictReader(io.StringIO(audit.lstrip("\ufeff"))))
    day = today(site).isoformat()
    # The range not given is the last four weeks, and the record says so.
    assert [(r["target"], json.loads(r["detail"])["filters"]) for r in mine[-2:]] == [
        ("", {"start": (today(site) - dt.timedelta(days=27)).isoformat(), "end": day, "group": "unit",
              "period": "day"}),
        ("stats.csv", {"start": day, "end": day, "group": "officer", "period": "week"})]
    assert all(json.loads(r["detail"])["rows"] >= 1 for r in mine[-2:])
    assert legal.get("/stats/?start=yesterday").status == 400
    assert legal.get("/stats.csv?group=party").status == 400


def test_only_supervisors_legal_records_and_admin_see_statistics__STATS(site: Site) -> None:
    for name in (VIEWER, TECHNICIAN):
        client = site.client(name)
        assert client.get("/stats/").status == 403 and client.get("/stats.csv").status == 403, name
        assert 'href="/stats/"' not in client.get("/password/").text
    assert site.client().get("/stats.csv").status == 403  # not logged in
    for name in (ACCOUNTS["records"][0], "admin"):
        assert site.client(name).get("/stats/").status == 200, name


def test_a_supervisor_sees_only_their_own_units_statistics__STATS(site: Site) -> None:
    admin = site.client("admin")
    if f">{OTHER_SUPERVISOR}<" not in admin.get("/accounts/").text:
        reply = admin.post("/accounts/", {"username": OTHER_SUPERVISOR, "role": "supervisor", "password": PASSWORD,
                                          "unit": OTHER_UNIT, "active": "on"})
        assert reply.status == 200 and "/accounts/" in reply.url, reply.text[:500]
    everyone = exported(site.client(LEGAL), "group=unit&period=month")
    assert site.unit in {r["unit"] for r in everyone}
    own = exported(site.client(SUPERVISOR), "group=unit&period=month")
    assert own and {r["unit"] for r in own} == {site.unit}
    assert [without_clock(r) for r in everyone if r["unit"] == site.unit] == [without_clock(r) for r in own]
    assert exported(site.client(OTHER_SUPERVISOR), "group=unit&period=month") == []
    assert exported(site.client(OTHER_SUPERVISOR), "group=device&period=month") == []  # nor its devices


def test_the_charts_draw_under_the_content_security_policy__STATS(site: Site) -> None:
    with rig_mod.chromium() as browser:
        page = browser.new_context().new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(f"{message.text} {message.location}")
                if message.type in ("error", "warning") else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(site.url + "/login/?next=/stats/")
        page.fill("#id_username", LEGAL)
        page.fill("#id_password", PASSWORD)
        page.click("#login")
        page.wait_for_load_state()
        assert page.url.endswith("/stats/"), page.url
        bars = page.locator("svg#chart-sessions rect")
        assert bars.count() >= 1
        box: Any = bars.first.bounding_box()
        assert box is not None and box["height"] > 5
        widths = [float(w) for w in bars.evaluate_all("rects => rects.map(r => r.getAttribute('width'))")]
        assert max(widths) > 100  # the busiest period's bar spans the chart
        # The colours come from the stylesheet: an inline style would have been refused.
        assert page.eval_on_selector("svg#chart-sessions rect", "r => getComputedStyle(r).fill") == "rgb(22, 50, 92)"
        page.select_option("#id_group", "officer")
        page.click("#stats-filter button[type=submit]")
        page.wait_for_load_state()
        assert page.locator("svg#chart-hours rect").count() >= 1 and page.locator("svg#chart-online").count() == 0
        assert problems == []

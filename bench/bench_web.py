"""The staff's web application (issue 10), measured against the real server and Debian's Chromium.

web_search_p95_ms: the 95th percentile of a search page's time to answer (HTTP, from request to the last
byte; the search audited as every search is), over an index of SEARCH_SESSIONS synthetic sessions (20 units,
400 rooms, 500 officers, Chinese names), for a mix of filters, as the legal office (every unit) and as a
case officer (own unit). Target ≤ 100 ms.
playback_first_frame_s: from the click on a session in the results to its first frame decoded in the page
(the video's readyState reaches HAVE_CURRENT_DATA), median of PLAYBACK_RUNS. Target ≤ 1.5 s.
live_view_latency_s: a session recording on the simulated device with 2-second segments, watched live on its
page: for each frame shown (requestVideoFrameCallback), the time it was shown minus the time it was captured
(its media time on the session's timeline, placed by the segments' signed wall-clock spans); the median and
the largest over LIVE_S seconds, once the page has caught up (LIVE_SETTLE_S). Target ≤ 4 s.
audit_appends_per_s: signed, chained, fsynced appends to the access audit, one after another.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from central.audit import AuditLog
from central.index import SessionIndex
from central.store import FileStore
from central.web.client import WebClient
from evidence.entry import parse_entry
from firmware_py import rig as rig_mod
from firmware_py.state_machine import State
from hal.buttons.base import ButtonName
from mqtt.broker import LocalBroker
from provisioning.identity import DeviceIdentity

SEARCH_SESSIONS = 100_000
PLAYBACK_RUNS = 5
LIVE_S = 12.0
LIVE_SETTLE_S = 8.0
"""A page opened on a live session starts on a segment already some seconds old and catches up (playing a
little faster) within a few segments; the latency is sampled after that, as a supervisor watching sees it."""
AUDIT_APPENDS = 300
PASSWORD = "bench pass 1234 word"
UNITS = [f"{city}市公安局{part}分局" for city in ("示例", "东城", "西城", "南山") for part in ("城关", "开发区", "江北",
                                                                                              "高新", "港口")]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)


def fill_index(store: FileStore, sessions: int, seed: int = 10) -> None:
    """`sessions` synthetic rows in the store's session index (only the index: no files behind them)."""
    SessionIndex(store).close()  # the schema
    rng = random.Random(seed)
    officers = [(_name(rng), f"{440000000000 + i}") for i in range(500)]
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    rows, officer_rows, party_rows, entry_rows = [], [], [], []
    for i in range(sessions):
        unit = UNITS[i % len(UNITS)]
        room = i % 400
        device = f"ROOM-{room:04d}"
        opened = start + i * 300 + rng.random() * 100
        closed = opened + rng.uniform(600, 7200)
        session = dt.datetime.fromtimestamp(opened, dt.UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{i:06x}"
        iso = dt.datetime.fromtimestamp(opened, dt.UTC).isoformat(timespec="milliseconds")
        iso_closed = dt.datetime.fromtimestamp(closed, dt.UTC).isoformat(timespec="milliseconds")
        segments = int((closed - opened) / 2)
        rows.append((device, session, unit, f"询问室{room % 12 + 1}", f"{unit}办案中心", f"A{2026_0000 + i}",
                     rng.choice(["询问", "讯问", "听证", "调解"]), iso, opened, iso_closed, closed, "STOP held",
                     segments, segments * 400_000, segments + 3, iso_closed, closed, closed + rng.uniform(1, 30),
                     int(rng.random() < 0.05), segments * 2_000_000_000))
        for position, officer in enumerate(rng.sample(officers, 2)):
            officer_rows.append((device, session, position, *officer))
        for position in range(rng.randint(1, 2)):
            party_rows.append((device, session, position, _name(rng)))
        entry_rows.append((device, session, 0, "open", iso, opened, opened + 1))
    db = sqlite3.connect(store.state_file("index.sqlite3"))
    with db:
        db.executemany("INSERT INTO sessions (device, session, unit, room, location, case_ref, matter, opened_at, "
                       "opened_ts, closed_at, closed_ts, close_reason, segments, media_bytes, last_seq, last_at, "
                       "last_ts, last_stored_ts, interrupted, recorded_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                       "?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO officers VALUES (?, ?, ?, ?, ?)", officer_rows)
        db.executemany("INSERT INTO parties VALUES (?, ?, ?, ?)", party_rows)
        db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", entry_rows)
    db.close()


SEARCHES = ["/", "/?q_unit=东城", "/?q_officer=王", "/?q_officer=440000000123", "/?q_party=李", "/?q_case=A2026",
            "/?q_room=询问室3", "/?q_device=ROOM-0042", "/?q_status=interrupted",
            "/?q_from=2026-03-01&q_to=2026-03-08", "/?q_unit=示例&q_officer=张&q_status=complete", "/?page=40"]


def _search(workdir: Path) -> dict[str, Any]:
    cfg_device, central = rig_mod.configs(workdir, "127.0.0.1", 1)
    del cfg_device
    store = FileStore(central.receiver.store_dir)
    t0 = time.perf_counter()
    fill_index(store, SEARCH_SESSIONS)
    filled_s = time.perf_counter() - t0
    server = rig_mod.start_web(central, workdir / "web", admin=("admin", PASSWORD))
    try:
        admin = WebClient(server.url)
        admin.login("admin", PASSWORD)
        for username, role, unit in (("legal", "legal", ""), ("viewer", "viewer", UNITS[3])):
            admin.post("/accounts/", {"username": username, "role": role, "password": PASSWORD, "unit": unit,
                                      "active": "on"})
        times: list[float] = []
        for username in ("legal", "viewer"):
            client = WebClient(server.url)
            client.login(username, PASSWORD)
            client.get("/")  # warm
            for _ in range(5):
                for url in SEARCHES:
                    t = time.perf_counter()
                    reply = client.get(url)
                    times.append(time.perf_counter() - t)
                    assert reply.status == 200, (url, reply.status)
        times.sort()
        return {"web_search_p95_ms": round(times[int(len(times) * 0.95) - 1] * 1000, 1),
                "web_search_median_ms": round(statistics.median(times) * 1000, 1),
                "web_search_sessions": SEARCH_SESSIONS, "web_search_requests": len(times),
                "web_search_index_fill_s": round(filled_s, 1)}
    finally:
        server.close()


def _live_and_playback(workdir: Path) -> dict[str, Any]:
    with LocalBroker(workdir / "broker") as broker:
        device, central = rig_mod.configs(workdir, "127.0.0.1", broker.port,
                                          {"notice": {"en": "", "closing_statement": False}})
        rig = rig_mod.make_rig(device, central)
        server = rig_mod.start_web(central, workdir / "web", admin=("admin", PASSWORD))
        try:
            admin = WebClient(server.url)
            admin.login("admin", PASSWORD)
            admin.post("/accounts/", {"username": "supervisor", "role": "supervisor", "password": PASSWORD,
                                      "unit": device.device.unit, "active": "on"})
            with rig_mod.chromium() as browser:
                page = browser.new_context().new_page()
                page.goto(server.url + "/login/")
                page.fill("#id_username", "supervisor")
                page.fill("#id_password", PASSWORD)
                page.click("#login")
                page.wait_for_load_state()
                rig.tap(ButtonName.START)
                rig.wait_state(State.RECORDING)
                session = rig.service.controller.session_id
                assert session is not None
                path = f"/s/{device.device.id}/{session}/"
                watcher = WebClient(server.url)
                watcher.login("supervisor", PASSWORD)
                while not json.loads(watcher.get(path + "play.json").body)["segments"]:
                    time.sleep(0.2)
                page.goto(server.url + path)
                page.wait_for_function("() => document.getElementById('video').readyState >= 2", timeout=20000)
                time.sleep(LIVE_SETTLE_S)
                page.evaluate("""() => { window.shown = []; const v = document.getElementById('video');
                    const tick = (now, meta) => { window.shown.push([meta.mediaTime, performance.timeOrigin + now]);
                        v.requestVideoFrameCallback(tick); };
                    v.requestVideoFrameCallback(tick); }""")
                time.sleep(LIVE_S)
                shown: list[list[float]] = page.evaluate("window.shown")
                rig.tap(ButtonName.STOP, device.session.stop_hold_seconds + 0.3)
                rig.wait_state(State.IDLE)
                assert rig.service.spool.wait_drained(60)
                rig.central_dir(session)
                latencies = _latencies(rig.store, device.device.id, session, shown)

                firsts: list[float] = []
                for _ in range(PLAYBACK_RUNS):
                    page.goto(f"{server.url}/?q_device={device.device.id}")
                    link = page.locator("#results tbody a").first
                    t = time.perf_counter()
                    link.click()
                    page.wait_for_function("() => document.getElementById('video') && "
                                           "document.getElementById('video').readyState >= 2", polling="raf",
                                           timeout=20000)
                    firsts.append(time.perf_counter() - t)
        finally:
            server.close()
            rig.close()
    return {"live_view_latency_s": round(statistics.median(latencies), 2),
            "live_view_latency_max_s": round(max(latencies), 2), "live_view_frames": len(latencies),
            "playback_first_frame_s": round(statistics.median(firsts), 3),
            "playback_first_frame_max_s": round(max(firsts), 3)}


def _latencies(store: FileStore, device: str, session: str, shown: list[list[float]]) -> list[float]:
    """Shown minus captured, for each frame shown: its capture time is its segment's signed wall-clock start
    plus its offset into the segment on the media timeline."""
    spans: list[tuple[float, float, float]] = []
    seq = 0
    while (data := store.get_entry(device, session, seq)) is not None:
        entry = parse_entry(data)
        if entry.segment is not None:
            wall = dt.datetime.fromisoformat(str(entry.body["start_wall"])).timestamp()
            spans.append((entry.segment.start_ns / 1e9, entry.segment.end / 1e9, wall))
        seq += 1
    found = []
    for media_s, shown_ms in shown:
        for start, end, wall in spans:
            if start - 0.05 <= media_s < end:
                found.append(shown_ms / 1000 - (wall + media_s - start))
                break
    return found


def _audit(workdir: Path) -> dict[str, Any]:
    identity = DeviceIdentity.create_at(workdir / "signing.pem", "bench")
    log = AuditLog(workdir / "audit.log", identity.sign, identity.public_key_b64)
    t = time.perf_counter()
    for i in range(AUDIT_APPENDS):
        log.append("bench", "viewer", "view", f"ROOM-0001/s{i}", {"content": True}, "127.0.0.1")
    return {"audit_appends_per_s": round(AUDIT_APPENDS / (time.perf_counter() - t), 1)}


def run(workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, part in (("audit", _audit), ("search", _search), ("live", _live_and_playback)):
        (workdir / name).mkdir()
        results.update(part(workdir / name))
    return results

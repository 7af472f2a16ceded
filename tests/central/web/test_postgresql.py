"""The web application on PostgreSQL (web.database), a real server the test starts itself: accounts,
requests and approvals live there, and the same rules hold (ACCESS)."""

from __future__ import annotations

from pathlib import Path

from central.web.client import WebClient
from firmware_py import rig as rig_mod
from tests.central.web.conftest import PASSWORD
from tests.conftest import RecordedSession
from tests.postgres import postgres, query


def test_accounts_approvals_and_the_audit_on_postgresql__ACCESS(recorded: RecordedSession, tmp_path: Path) -> None:
    with postgres() as url:
        server = rig_mod.start_web(recorded.rig.central, tmp_path / "web", {"database": url},
                                   admin=("pgadmin", PASSWORD))
        try:
            admin = WebClient(server.url)
            admin.login("pgadmin", PASSWORD)
            for username, role in (("周警官", "viewer"), ("吴科长", "supervisor")):
                admin.post("/accounts/", {"username": username, "role": role, "password": PASSWORD,
                                          "unit": recorded.rig.config.device.unit, "active": "on"})
            page = f"/s/{recorded.rig.config.device.id}/{recorded.session}/"
            viewer, supervisor = WebClient(server.url), WebClient(server.url)
            viewer.login("周警官", PASSWORD)
            supervisor.login("吴科长", PASSWORD)
            assert "共 1 条" in viewer.get("/?q_officer=张三").text
            assert viewer.get(page + "play.json").status == 403
            viewer.post(page + "request", {"reason": "在PostgreSQL上 on PostgreSQL"})
            request_id = supervisor.get("/approvals/").text.split('id="req-')[1].split('"')[0]
            supervisor.post(f"/approvals/{request_id}/decide", {"decision": "approve"})
            assert viewer.get(page + "play.json").status == 200
            assert viewer.get(page + "seg/1.mp4").status == 200
            # Times compare in the database's own zone handling: an approval past its end opens nothing.
            query(url, f"UPDATE web_accessrequest SET expires = now() - interval '1 minute' WHERE id = {request_id}")
            assert viewer.get(page + "play.json").status == 403
            for _ in range(5):
                WebClient(server.url).login("吴科长", "wrong password")
            locked = WebClient(server.url).login("吴科长", PASSWORD)
            assert locked.status == 403 and "too many failed log-ins" in locked.text
        finally:
            server.close()
        assert query(url, "SELECT u.username, s.role FROM auth_user u JOIN web_staff s ON s.user_id = u.id"
                          " ORDER BY u.id") == [("pgadmin", "admin"), ("周警官", "viewer"), ("吴科长", "supervisor")]
        assert query(url, "SELECT state, reason FROM web_accessrequest") == [
            ("approved", "在PostgreSQL上 on PostgreSQL")]
        assert query(url, "SELECT count(*) FROM web_loginfailure WHERE username = '吴科长'") == [(5,)]

"""The written explanation (情况说明) in a real browser (Debian's Chromium driven by Playwright) against the real
server (INTERRUPT): two officers of the unit, each logged in to their own account, sign the form central filled
in from the session whose recording could not continue; a wrong password signs nothing; the session page then
shows it complete, and the session's register and the access audit hold both signatures. A signed paper form is
uploaded and downloaded byte for byte; an officer of another unit cannot open the form, nor anyone but an
officer of the unit sign it; the fleet page links an alert to its form."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central import config as central_config
from central.build import build_audit
from central.register import Registers
from central.store import FileStore
from central.web.client import WebClient
from firmware_py import rig as rig_mod
from mqtt.broker import free_port
from tests.central.test_explanation import ACCOUNT, PDF, UNIT, forge_cannot_continue
from tests.central.web.conftest import ACCOUNTS, PASSWORD, make_accounts
from tests.central.web.test_browser import logged_in

OFFICER, SUPERVISOR, OUTSIDER = ACCOUNTS["viewer"][0], ACCOUNTS["supervisor"][0], ACCOUNTS["outsider"][0]


@dataclasses.dataclass
class Served:
    url: str
    config: central_config.CentralConfig
    store: FileStore
    device: str
    session: str

    @property
    def page(self) -> str:
        return f"{self.url}/s/{self.device}/{self.session}/"

    def registers(self) -> Registers:
        return Registers(self.store, build_audit(self.config, self.store))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A store holding one session whose disk filled for good (its ledger and the device's alert), served by
    the web application, with the accounts of tests/central/web/conftest.py in the session's unit."""
    workdir = tmp_path_factory.mktemp("explanation-web")
    _, central = rig_mod.configs(workdir, "127.0.0.1", free_port())
    forged = forge_cannot_continue(Path(central.receiver.store_dir))
    server = rig_mod.start_web(central, workdir / "web", admin=("admin", PASSWORD))
    try:
        make_accounts(server.url, UNIT)
        yield Served(server.url, central, FileStore(Path(central.receiver.store_dir)), forged.device, forged.session)
    finally:
        server.close()


def open_form(page: Any, served: Served) -> None:
    page.goto(served.page)
    page.click("#explanations a.explanation-link")
    page.wait_for_load_state()
    assert "/explanation/" in page.url


def test_two_officers_sign_the_written_explanation_in_their_own_accounts__INTERRUPT(browser: Any,
                                                                                    served: Served) -> None:
    officer = logged_in(browser, served, OFFICER)
    officer.goto(served.page)
    assert "未说明 not yet explained" in officer.inner_text("#explanations")
    open_form(officer, served)
    facts = officer.inner_text("#facts")
    for fact in ("城关派出所", "询问室二", "李警官 44010000123", "2026-03-04 14:00:20+08:00", "存储空间已满",
                 "2 段 segments, 20.0 s", "free space below a minute"):
        assert fact in facts, fact
    officer.fill("#account", ACCOUNT)
    officer.fill("#certificate", "44010000123")
    officer.fill("#password", PASSWORD)
    officer.click("#sign")
    officer.wait_for_load_state()
    assert "已签 1/2" in officer.inner_text("#explanation-state")
    assert officer.locator(".cosign-form").count() == 0  # nobody signs a form twice

    supervisor = logged_in(browser, served, SUPERVISOR)
    open_form(supervisor, served)
    assert ACCOUNT in supervisor.inner_text("#explanations-list")
    supervisor.fill(".cosign-form input[name=password]", "not my password at all")
    supervisor.click(".cosign-form button.cosign")
    supervisor.wait_for_load_state()
    assert "wrong password" in supervisor.inner_text("#error")
    assert len([r for r in served.registers().records(served.device, served.session)
                if r.action == "explanation"]) == 1  # refused, and nothing written
    supervisor.fill(".cosign-form input[name=password]", PASSWORD)
    supervisor.click(".cosign-form button.cosign")
    supervisor.wait_for_load_state()
    assert "已完成 complete" in supervisor.inner_text("#explanation-state")

    officer.goto(served.page)
    shown = officer.inner_text("#explanations")
    assert "已完成 complete" in shown and "李警官, 王科长" in shown

    registers = served.registers()
    signed = [r for r in registers.records(served.device, served.session) if r.action == "explanation"]
    assert [(r.actor, r.role, r.detail["step"], r.detail["signer"]) for r in signed] == [
        (OFFICER, "viewer", "signed", OFFICER), (SUPERVISOR, "supervisor", "signed", SUPERVISOR)]
    assert signed[0].detail["form_sha256"] == signed[1].detail["form_sha256"]
    assert signed[0].detail["form"]["account"] == ACCOUNT and signed[0].detail["certificate"] == "44010000123"
    assert registers.check(served.device, served.session).ok
    in_audit = [r for r in registers.audit.records() if r.action == "explanation"]
    assert [(r.actor, r.detail["register_seq"], r.detail["form_sha256"]) for r in in_audit] == [
        (OFFICER, signed[0].seq, signed[0].detail["form_sha256"]),
        (SUPERVISOR, signed[1].seq, signed[1].detail["form_sha256"])]
    assert registers.audit.check().ok


def test_a_signed_paper_form_is_uploaded_and_downloaded_byte_for_byte__INTERRUPT(browser: Any,
                                                                                 served: Served) -> None:
    officer = logged_in(browser, served, OFFICER)
    open_form(officer, served)
    officer.set_input_files("#scan", files=[{"name": "情况说明.pdf", "mimeType": "application/pdf", "buffer": PDF}])
    officer.fill("#signer1", OFFICER)
    officer.fill("#signer2", SUPERVISOR)
    officer.fill("#scan-password", PASSWORD)
    officer.click("#upload")
    officer.wait_for_load_state()
    assert "已上传签字扫描件" in officer.inner_text("#explanation-state")
    link = officer.locator("a.scan-link").first.get_attribute("href")
    assert link.endswith(hashlib.sha256(PDF).hexdigest())
    reply = officer.request.get(served.url + link)
    assert reply.status == 200 and reply.headers["content-type"] == "application/pdf" and reply.body() == PDF
    audited = [r for r in served.registers().audit.records() if r.actor == OFFICER]
    assert {"explanation", "download"} <= {r.action for r in audited}

    outsider = logged_in(browser, served, OUTSIDER)
    assert outsider.goto(served.page + "explanation/4/").status == 404
    assert outsider.request.get(served.url + link).status == 404


def test_only_officers_of_the_unit_sign_and_the_fleet_links_the_alert_to_its_form__INTERRUPT(served: Served) -> None:
    form = f"/s/{served.device}/{served.session}/explanation/4/"
    legal = WebClient(served.url)
    legal.login(ACCOUNTS["legal"][0], PASSWORD)
    assert legal.get(form).status == 200  # the legal office reads every unit's forms
    before = len(served.registers().records(served.device, served.session))
    refused = legal.post(form, {"step": "sign", "account": ACCOUNT, "password": PASSWORD, "facts_sha256": "0" * 64})
    assert refused.status == 403 and "only officers" in refused.text
    assert len(served.registers().records(served.device, served.session)) == before
    assert legal.get(f"/s/{served.device}/{served.session}/explanation/3/").status == 404  # no such break

    supervisor = WebClient(served.url)
    supervisor.login(SUPERVISOR, PASSWORD)
    fleet = supervisor.get("/fleet/").text
    found = re.search(r'href="(/s/[^"]+/explanation/alert-[0-9a-f]{16}/)"', fleet)
    assert found is not None, fleet[:2000]
    page = supervisor.get(found.group(1))
    assert page.status == 200 and "interruption #4" in page.text and "存储空间已满" in page.text

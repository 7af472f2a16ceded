"""The web application in a real browser (Debian's Chromium driven by Playwright) against the real server:
log in, search in Chinese, ask for access, refuse and approve, play the session (time advances, it has
sound), jump to a mark, and find each of those actions in the audit (ACCESS, CLASSIFY)."""

from __future__ import annotations

import csv
import io
from typing import Any, Protocol

from tests.central.web.conftest import ACCOUNTS, PASSWORD, Site

H264 = 'video/mp4; codecs="avc1.42E01E"'


class Served(Protocol):
    @property
    def url(self) -> str: ...


def logged_in(browser: Any, site: Served, username: str) -> Any:
    """A new browser context logged in as `username` on the server at `site.url`."""
    page = browser.new_context().new_page()
    page.goto(site.url + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("#login")
    page.wait_for_load_state()
    assert "/login/" not in page.url, page.content()[:500]
    return page


def video(page: Any, what: str) -> Any:
    return page.evaluate(f"(() => {{ const v = document.getElementById('video'); return {what}; }})()")


def decide(supervisor: Any, site: Site, reason: str, decision: str) -> None:
    supervisor.goto(site.url + "/approvals/")
    row = supervisor.locator("#pending tbody tr", has_text=reason)
    row.locator("input[name=note]").fill("同意" if decision == "approve" else "理由不足 not enough reason")
    row.locator(f"button.{decision}").click()
    supervisor.wait_for_load_state()


def test_a_case_officer_finds_asks_is_refused_then_approved_and_plays__ACCESS_CLASSIFY(
        browser: Any, site: Site) -> None:
    viewer_name, supervisor_name = ACCOUNTS["viewer"][0], ACCOUNTS["supervisor"][0]
    viewer = logged_in(browser, site, viewer_name)
    viewer.fill("#id_q_officer", "张三")
    viewer.fill("#id_q_unit", "示例执法")
    viewer.click("#search button[type=submit]")
    viewer.wait_for_load_state()
    assert "共 1 条" in viewer.inner_text("#total")
    assert "Asia/Shanghai" in viewer.inner_text("#results thead")
    viewer.click("#results tbody a")
    viewer.wait_for_load_state()
    assert viewer.locator("#video").count() == 0

    viewer.fill("#request-form textarea", "复核案件材料 reviewing the case")
    viewer.click("#request-form button")
    supervisor = logged_in(browser, site, supervisor_name)
    decide(supervisor, site, "复核案件材料", "refuse")
    viewer.reload()
    assert "refused by 王科长" in viewer.inner_text("#my-requests") and viewer.locator("#video").count() == 0

    viewer.fill("#request-form textarea", "补充材料后再次申请 asking again")
    viewer.click("#request-form button")
    decide(supervisor, site, "补充材料后再次申请", "approve")
    viewer.reload()
    assert viewer.evaluate(f"MediaSource.isTypeSupported('{H264}')")
    viewer.wait_for_function("() => document.getElementById('video').readyState >= 2", timeout=15000)
    assert "Intact" in viewer.inner_text("#verification")
    video(viewer, "v.play()")
    first = video(viewer, "v.currentTime")
    viewer.wait_for_function(f"() => document.getElementById('video').currentTime > {first} + 0.8", timeout=10000)
    viewer.wait_for_function("() => document.getElementById('video').webkitAudioDecodedByteCount > 0", timeout=5000)
    assert video(viewer, "v.videoWidth") > 0

    mark = viewer.locator("li.moment-mark button.jump").first
    at = float(mark.get_attribute("data-t"))
    mark.click()
    viewer.wait_for_function(f"() => Math.abs(document.getElementById('video').currentTime - {at}) < 1.5 && "
        "document.getElementById('video').readyState >= 2", timeout=10000)
    assert not viewer.is_visible("#player-error"), viewer.inner_text("#player-error")

    admin = logged_in(browser, site, "admin")
    admin.goto(site.url + f"/audit/?target={site.session}")
    rows = admin.inner_text("#audit")
    for action in ("view", "request", "refuse", "approve", "playback"):
        assert f"\t{action}\t" in rows, action
    admin.goto(site.url + f"/audit/?actor={viewer_name}&action=search")
    assert "示例执法" in admin.inner_text("#audit")
    admin.goto(site.url + f"/audit/?actor={viewer_name}&action=login")
    assert admin.locator("#audit tbody tr").count() >= 1
    admin.goto(site.url + "/audit/?check=1")
    assert "The audit holds" in admin.inner_text("#check-result")
    with admin.expect_download() as download:
        admin.click("#csv")
    exported = list(csv.DictReader(io.StringIO(download.value.path().read_text("utf-8-sig"))))
    done = {(r["actor"], r["action"]) for r in exported}
    for action in ("login", "search", "view", "request", "playback"):
        assert (viewer_name, action) in done, action
    for action in ("refuse", "approve"):
        assert (supervisor_name, action) in done, action

"""A logged-in HTTP client of the web application (standard library only), as a script, the rig, the tests and
the benchmarks use it: it keeps the session cookie and sends the CSRF token with every POST."""

from __future__ import annotations

import http.cookiejar
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    url: str
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class WebClient:
    def __init__(self, base_url: str, follow_redirects: bool = True, ca_file: Path | None = None) -> None:
        """`ca_file`: the CA that signed an HTTPS server's certificate (the agency CA)."""
        self.base = base_url.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPCookieProcessor(self.cookies)]
        if ca_file is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca_file))))
        if not follow_redirects:
            handlers.append(_NoRedirect())
        self._opener = urllib.request.build_opener(*handlers)

    def request(self, path: str, data: dict[str, str] | None = None, timeout: float = 30.0,
                method: str | None = None) -> Reply:
        body = None
        headers = {"Referer": self.base + "/"}
        if data is not None or method not in (None, "GET"):
            body = urllib.parse.urlencode({**(data or {}), "csrfmiddlewaretoken": self._csrf()}).encode()
        # A path may carry Chinese query text: sent percent-encoded, as a browser does.
        request = urllib.request.Request(self.base + urllib.parse.quote(path, safe="/?=&%:+"), data=body,
                                         headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return Reply(response.status, response.read(), response.url, dict(response.headers))
        except urllib.error.HTTPError as err:
            return Reply(err.code, err.read(), err.url or path, dict(err.headers or {}))

    def get(self, path: str) -> Reply:
        return self.request(path)

    def post(self, path: str, data: dict[str, str]) -> Reply:
        return self.request(path, data)

    def _csrf(self) -> str:
        for cookie in self.cookies:
            if cookie.name == "csrftoken" and cookie.value:
                return cookie.value
        page = self.get("/login/").text
        found = _CSRF.search(page)
        return found.group(1) if found else ""

    def login(self, username: str, password: str) -> Reply:
        self.get("/login/")
        return self.post("/login/", {"username": username, "password": password})

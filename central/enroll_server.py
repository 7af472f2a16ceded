"""Central's enrollment endpoint: HTTPS, one request (PROTOCOL §13).

`POST /v1/enroll` with a `provisioning.enrollment.Request` (canonical JSON) answers 200 with an `Answer`,
or an error status with `{"error": "..."}` saying what to do: 400 malformed, 403 token unknown, used or
expired, 409 a changed key waits for an operator's approval, 413 too large, 500 central's own fault. The
server's certificate is issued by the agency CA; the boxes pin it through the token, not through a CA
they do not have yet.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from central.enrollment import ClaimRefused, Enrollment
from central.errors import CentralError
from evidence.errors import RecorderError
from evidence.supervisor import Beat, Supervised, Supervisor
from provisioning.enrollment import MAX_MESSAGE, PATH, Request
from provisioning.errors import ProvisioningError

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: EnrollServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # a box that stops mid-request does not hold a thread for ever

    def log_message(self, format: str, *args: Any) -> None:
        log.info("enrollment %s: %s", self.client_address[0], format % args)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True  # whatever of the request was not read must not be taken for the next one
        self._reply(status, json.dumps({"error": message}, ensure_ascii=False).encode())

    def do_GET(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"POST an enrollment request to {PATH} (recorder enroll does)")

    def do_POST(self) -> None:
        peer = self.client_address[0]
        if self.path != PATH:
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint; enrollment is POST {PATH}")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
            return
        if not 0 < length <= MAX_MESSAGE:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"an enrollment request is at most {MAX_MESSAGE} bytes")
            return
        try:
            body = self.rfile.read(length)
        except OSError as err:
            log.warning("enrollment from %s: the connection broke off while sending: %s", peer, err)
            self.close_connection = True
            return
        try:
            request = Request.parse(body)
            answer = self.server.enrollment.claim(request, peer)
        except ClaimRefused as err:
            log.warning("enrollment from %s refused: %s", peer, err)
            self._error(err.status, str(err))
            return
        except ProvisioningError as err:
            log.warning("enrollment from %s refused: %s", peer, err)
            self._error(HTTPStatus.BAD_REQUEST, str(err))
            return
        except RecorderError as err:
            log.error("enrollment from %s failed: %s", peer, err)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"central could not enroll the box: {err}")
            return
        except Exception:
            log.exception("enrollment from %s failed: unexpected error", peer)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "central could not enroll the box (see central's log)")
            return
        self._reply(HTTPStatus.OK, answer.encode())


class EnrollServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, enrollment: Enrollment, host: str, port: int) -> None:
        paths = enrollment.ca.enrollment_paths()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(paths.cert, paths.key)
        except (OSError, ssl.SSLError) as err:
            raise CentralError(f"{paths.cert}: cannot serve enrollment with it: {err}; issue it with `recorder "
                               f"central certs --out {enrollment.ca.directory} --enrollment-host HOST`") from err
        try:
            super().__init__((host, port), _Handler)
        except OSError as err:
            raise CentralError(f"cannot listen for enrollments on {host}:{port}: {err.strerror or err}; set "
                               "enrollment.listen and enrollment.port") from err
        # The handshake happens in the request's own thread, so a slow box does not hold up the others.
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.enrollment = enrollment
        self._serving: Supervised | None = None
        self._beat: Beat = lambda: None
        self._stopping = threading.Event()
        self._supervisor = Supervisor()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self, sync_every_s: float | None = None) -> None:
        """Serve on a supervised thread of its own; with `sync_every_s`, also bring the broker's list of devices
        in line with central's records that often. An unexpected failure of either is logged and the thread
        runs again."""
        self._serving = self._supervisor.spawn("enroll-server", self._serve)
        if sync_every_s is not None:
            self._supervisor.spawn("broker-sync", lambda beat: self._sync(beat, sync_every_s),
                                   silence_s=max(60.0, 2 * sync_every_s))

    def _serve(self, beat: Beat) -> None:
        self._beat = beat
        self.serve_forever()

    def service_actions(self) -> None:
        # socketserver calls this on every turn of its loop (every 0.5 s): the serving thread's sign of life.
        self._beat()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection that is not TLS, or drops during the handshake: a line in the log, not a traceback.
        log.warning("enrollment connection from %s failed: %s", client_address[0], sys.exc_info()[1])

    def _sync(self, beat: Beat, every_s: float) -> None:
        while not self._stopping.wait(every_s):
            beat()
            change = self.enrollment.broker_sync()
            (log.info if change.done else log.error)("broker sync: %s", change.said)

    def stop(self) -> None:
        self._stopping.set()
        self._supervisor.stop()
        self.shutdown()
        self.server_close()
        if self._serving is not None and self._serving.thread is not None:
            self._serving.thread.join()

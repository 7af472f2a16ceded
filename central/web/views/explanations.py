"""The written explanation (情况说明) of a break in recording that could not be resolved (INTERRUPT): the form
pre-filled by central (central/explanation.py), signed by two officers of the session's unit, each in their
own account with their password, or a scanned paper form signed by hand; and the download of a kept scan.
Each signature and scan is a record of the session's register and of the audit; viewing the form and
downloading a scan are audited too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from central.errors import CentralError
from central.explanation import (
    KEY,
    MAX_ACCOUNT_CHARS,
    MAX_SCAN_BYTES,
    SCAN_TYPES,
    ExplanationForm,
    ExplanationRefused,
    Explanations,
    ExplanationState,
    Signature,
)
from central.index import SessionRow
from central.register import Actor
from central.web import roles
from central.web.access import Who, audit, session_or_404, who
from central.web.services import services
from central.web.timefmt import local, zone_name
from central.web.views.accounts import confirm_password

_FORM_BYTES = 64 * 1024
"""Room for a scan upload's other fields and multipart framing, beyond the scan itself."""


def explanations() -> Explanations:
    svc = services()
    return Explanations(svc.store, svc.retention.registers, svc.config.central.zone, svc.central_key)


def _states(device: str, session: str) -> list[ExplanationState]:
    ledger = services().ledger(device, session)
    book = explanations()
    return book.states(device, session, book.forms(device, session, ledger.entries, ledger.opening))


def _url(device: str, session: str, key: str) -> str:
    return f"/s/{device}/{session}/explanation/{key}/"


def session_explanations(person: Who, device: str, session: str, unit: str) -> list[dict[str, Any]]:
    """For the session page: each break that could not be resolved, how far its written explanation has got,
    and the link to its form."""
    return [{"url": _url(device, session, s.form.key), "interrupted_at": s.form.interrupted_at,
             "cause": s.form.cause_label, "kind": s.form.kind_label, "state": s.state, "state_label": s.state_label,
             "signers": [", ".join(e.signers) for e in s.complete],
             "may_sign": roles.may_sign_explanation(person.role, person.unit, unit)}
            for s in _states(device, session)]


def _state(device: str, session: str, key: str) -> ExplanationState:
    if not KEY.match(key):
        raise Http404("a written explanation is named by its interruption entry's number")
    states = _states(device, session)
    try:
        form = explanations().form(device, session, key, [s.form for s in states])
    except ExplanationRefused as err:
        raise Http404(str(err)) from err
    return next(s for s in states if s.form == form)


def _signature(s: Signature) -> dict[str, str]:
    return {"signer": s.signer, "role": roles.LABELS.get(s.role, s.role), "certificate": s.certificate,
            "time": local(s.time)}


def _page(request: HttpRequest, person: Who, row: SessionRow, state: ExplanationState, error: str = "",
          status: int = 200) -> HttpResponse:
    form = state.form
    shown = [{"account": e.account, "sha256": e.form_sha256, "complete": e.complete,
              "signatures": [_signature(s) for s in e.signatures],
              "scan": None if e.scan is None else {
                  "url": f"/s/{form.device}/{form.session}/explanation/scan/{e.scan.sha256}",
                  "type": e.scan.type, "kb": f"{e.scan.bytes / 1024:.0f}", "signers": ", ".join(e.scan.signers),
                  "uploader": e.scan.uploader, "time": local(e.scan.time)},
              "cosign": not e.complete and person.username not in e.signers}
             for e in state.explanations]
    may_sign = roles.may_sign_explanation(person.role, person.unit, row.unit)
    return render(request, "web/explanation.html", {
        "form": form, "state": state, "explanations": shown, "may_sign": may_sign, "error": error,
        "recorded_s": f"{form.recorded_ns / 1e9:.1f}", "zone": zone_name(), "max_account": MAX_ACCOUNT_CHARS,
        "max_scan_mb": MAX_SCAN_BYTES // (1024 * 1024), "account": request.POST.get("account", "")[:MAX_ACCOUNT_CHARS],
        "session_url": f"/s/{form.device}/{form.session}/"}, status=status)


class _ScanInMemory(MemoryFileUploadHandler):
    """Keeps an upload of up to a scan's limit in memory: a scan of a signed form names people, and Django would
    otherwise spool anything over 2.5 MB to a temporary file outside the store."""

    def handle_raw_input(self, input_data: Any, META: Any, content_length: int, boundary: Any,
                         encoding: str | None = None) -> None:
        self.activated = content_length is not None and content_length <= MAX_SCAN_BYTES + _FORM_BYTES


@csrf_exempt
@require_http_methods(["GET", "POST"])
def explanation_view(request: HttpRequest, device: str, session: str, key: str) -> HttpResponse:
    # The upload handlers must be set before anything reads the body: CSRF is checked below, not by the middleware.
    request.upload_handlers = [_ScanInMemory(request)]
    if request.method == "POST" and _length(request) > MAX_SCAN_BYTES + _FORM_BYTES:
        return HttpResponse(f"at most {MAX_SCAN_BYTES // (1024 * 1024)} MB can be uploaded: scan the form again at a "
                            "lower resolution", status=413, content_type="text/plain; charset=utf-8")
    return _explanation(request, device, session, key)


def _length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # Django reads such a body as empty


@csrf_protect
def _explanation(request: HttpRequest, device: str, session: str, key: str) -> HttpResponse:
    person = who(request)
    row = session_or_404(person, device, session)
    state = _state(device, session, key)
    if request.method == "GET":
        audit(request, "view", f"{device}/{session}", {"explanation": state.form.key}, actor=person)
        return _page(request, person, row, state)
    if not roles.may_sign_explanation(person.role, person.unit, row.unit):
        return _page(request, person, row, state, "只有本单位民警可以签名 only officers (case officers and "
                     "supervisors) of the session's unit sign its written explanation", 403)
    steps: dict[str, Callable[[HttpRequest, Who, ExplanationForm], str]] = {
        "sign": _sign, "cosign": _cosign, "scan": _scan}
    step = steps.get(request.POST.get("step", ""))
    if step is None:
        return _page(request, person, row, state, "unknown step: sign, cosign or scan", 400)
    try:
        done = step(request, person, state.form)
    except CentralError as err:
        # A refusal is the officer's to mend; anything else (the store) is not, and is answered as such.
        return _page(request, person, row, state, str(err), 400 if isinstance(err, ExplanationRefused) else 500)
    messages.success(request, done)
    return HttpResponseRedirect(_url(device, session, key))


def _actor(person: Who) -> Actor:
    return Actor(person.username, person.role, person.address)


def _password(request: HttpRequest) -> None:
    """The signer types their own password again: a signature is theirs, not whoever sits at their screen."""
    wrong = confirm_password(request, request.POST.get("password", ""))
    if wrong:
        raise ExplanationRefused(f"{wrong}; sign with your own password")


def _sign(request: HttpRequest, person: Who, form: ExplanationForm) -> str:
    _password(request)
    explanations().sign(form.device, form.session, _actor(person), form.with_account(request.POST.get("account", "")),
                        request.POST.get("facts_sha256", ""), request.POST.get("certificate", ""))
    return "已签名 Signed: a second officer of the unit signs the same form in their own account"


def _cosign(request: HttpRequest, person: Who, form: ExplanationForm) -> str:
    _password(request)
    record = explanations().cosign(form.device, form.session, _actor(person), form,
                                   request.POST.get("form_sha256", ""), request.POST.get("certificate", ""))
    return f"已签名 Signed: form {str(record.detail['form_sha256'])[:12]}…"


def _scan(request: HttpRequest, person: Who, form: ExplanationForm) -> str:
    _password(request)  # the upload completes the explanation: as much the uploader's act as a signature
    upload = request.FILES.get("scan")
    if upload is None:
        raise ExplanationRefused(f"choose the scanned, signed form (PDF, PNG or JPEG, at most "
                                 f"{MAX_SCAN_BYTES // (1024 * 1024)} MB)")
    data = upload.read()
    explanations().keep_scan(form.device, form.session, _actor(person), form, data,
                             [request.POST.get("signer1", ""), request.POST.get("signer2", "")])
    return "已保存签字扫描件 The signed paper form is kept with the session"


@require_GET
def scan_view(request: HttpRequest, device: str, session: str, sha256: str) -> HttpResponse:
    """A kept scan, to whoever may see the session."""
    person = who(request)
    session_or_404(person, device, session)
    try:
        data, kind = explanations().read_scan(device, session, sha256)
    except CentralError as err:
        return HttpResponse(str(err), status=404, content_type="text/plain; charset=utf-8")
    audit(request, "download", f"{device}/{session}", {"scan": sha256}, actor=person)
    _, suffix, media_type = SCAN_TYPES[kind]
    response = HttpResponse(data, content_type=media_type)
    response["Content-Disposition"] = f'inline; filename="{session}-explanation-{sha256[:12]}{suffix}"'
    return response

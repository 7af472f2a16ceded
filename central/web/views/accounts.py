"""Logging in and out (throttled, audited), and the administrator's page of staff accounts."""

from __future__ import annotations

import datetime as dt
import threading

from django import forms
from django.contrib.auth import authenticate, login, logout, update_session_auth_hash
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from central.config import ROLES
from central.web import roles
from central.web.access import address, audit, who
from central.web.models import LoginFailure, Staff
from central.web.services import services
from central.web.timefmt import local

ADDRESS_FACTOR = 4
_LOCKS_AUDITED: set[tuple[str, str, dt.datetime]] = set()
_LOCKS_AUDITED_LOCK = threading.Lock()


class LoginForm(forms.Form):
    username = forms.CharField(label="用户名 username", max_length=150)
    password = forms.CharField(label="密码 password", widget=forms.PasswordInput, max_length=256)


def locked_until(username: str, addr: str) -> dt.datetime | None:
    """When log-ins to this account (or from this address) are allowed again, if they are locked now."""
    web = services().config.web
    window = dt.timedelta(minutes=web.lockout_minutes)
    since = timezone.now() - window
    # An address gets ADDRESS_FACTOR times an account's allowance: many staff may share one address (a
    # proxy, a station's NAT), while one guesser trying many accounts is still stopped.
    for failures, allowed in ((LoginFailure.objects.filter(username=username, at__gte=since), web.login_attempts),
                              (LoginFailure.objects.filter(address=addr, at__gte=since),
                               web.login_attempts * ADDRESS_FACTOR)):
        if failures.count() >= allowed:
            last = failures.order_by("-at").first()
            assert last is not None
            return last.at + window
    return None


def confirm_password(request: HttpRequest, password: str) -> str:
    """The logged-in person types their own password again to sign or to remove: "" if it is theirs, else why
    not. A wrong one counts towards the same lock-out as a failed log-in, and is audited as one, so the
    screen of someone who stepped away cannot be used to guess it."""
    username, addr = request.user.get_username(), address(request)
    until = locked_until(username, addr)
    if until is not None:
        return f"登录失败次数过多 too many wrong passwords: try again after {local(until)}"
    if authenticate(request, username=username, password=password) is None:
        LoginFailure.objects.create(username=username, address=addr, at=timezone.now())
        audit(request, "login_failed", username, {"why": "wrong password to confirm an action"})
        return "密码错误 wrong password: nothing was done"
    return ""


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    form = LoginForm(request.POST or None)
    error = ""
    target = request.GET.get("next", "/")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    if request.method == "POST" and form.is_valid():
        username, addr = form.cleaned_data["username"], address(request)
        until = locked_until(username, addr)
        if until is not None:
            error = f"登录失败次数过多 too many failed log-ins: try again after {local(until)}"
            # Once per lock: a stream of attempts at a locked account must not fill the audit.
            with _LOCKS_AUDITED_LOCK:
                first = (username, addr, until) not in _LOCKS_AUDITED
                _LOCKS_AUDITED.add((username, addr, until))
            if first:
                audit(request, "login_failed", username, {"why": "locked", "until": until.isoformat()},
                      username=username)
        else:
            user = authenticate(request, username=username, password=form.cleaned_data["password"])
            if user is None or not Staff.objects.filter(user=user).exists():
                LoginFailure.objects.create(username=username, address=addr, at=timezone.now())
                audit(request, "login_failed", username, {"why": "wrong name or password"}, username=username)
                error = "用户名或密码错误 wrong username or password"
            else:
                login(request, user)
                audit(request, "login")
                return HttpResponseRedirect(target)
    return render(request, "web/login.html", {"form": form, "error": error, "next": target},
                  status=403 if error else 200)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        audit(request, "logout")
    logout(request)
    return HttpResponseRedirect("/login/")


class AccountForm(forms.Form):
    username = forms.CharField(label="用户名 username", max_length=150)
    role = forms.ChoiceField(label="角色 role", choices=[(r, roles.LABELS[r]) for r in ROLES])
    unit = forms.CharField(label="单位 unit", max_length=200, required=False)
    password = forms.CharField(label="密码 password (new accounts, or to reset)", widget=forms.PasswordInput,
                               required=False, max_length=256)
    active = forms.BooleanField(label="启用 active", required=False, initial=True)


def save_account(username: str, role: str, unit: str, password: str, active: bool) -> tuple[User, bool]:
    """Create or change a staff account; ValidationError names what is wrong (a weak password)."""
    if role not in ROLES:
        raise ValidationError(f"{role!r} is not a role ({', '.join(ROLES)})")
    if role in ("viewer", "supervisor") and not unit.strip():
        raise ValidationError("a case officer or supervisor belongs to a unit: give it (--unit)")
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username)
        if created and not password:
            raise ValidationError("a new account needs a password")
        if password:
            validate_password(password, user)
            user.set_password(password)
        user.is_active = active
        user.save()
        Staff.objects.update_or_create(user=user, defaults={"role": role, "unit": unit.strip()})
    return user, created


@require_http_methods(["GET", "POST"])
def accounts_view(request: HttpRequest) -> HttpResponse:
    person = who(request)
    if not roles.may_manage_accounts(person.role):
        return HttpResponseForbidden("only an administrator manages accounts")
    form = AccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            with transaction.atomic():  # the change stands only if its audit record was written
                _, created = save_account(d["username"], d["role"], d["unit"], d["password"], d["active"])
                audit(request, "account", d["username"], {"created": created, "role": d["role"],
                                                          "unit": d["unit"], "active": d["active"],
                                                          "password_set": bool(d["password"])})
        except ValidationError as err:
            form.add_error(None, err)
        else:
            return HttpResponseRedirect("/accounts/")
    query = request.GET.get("q", "").strip()
    staff = Staff.objects.select_related("user").order_by("user__username")
    if query:
        staff = staff.filter(Q(user__username__icontains=query) | Q(unit__icontains=query))
    return render(request, "web/accounts.html", {"form": form, "accounts": staff[:500], "labels": roles.LABELS})


class PasswordForm(forms.Form):
    current = forms.CharField(label="当前密码 current password", widget=forms.PasswordInput, max_length=256)
    new = forms.CharField(label="新密码 new password", widget=forms.PasswordInput, max_length=256)
    again = forms.CharField(label="再次输入 again", widget=forms.PasswordInput, max_length=256)


@require_http_methods(["GET", "POST"])
def password_view(request: HttpRequest) -> HttpResponse:
    """Every account changes its own password here (the current one first); audited, the password never."""
    form = PasswordForm(request.POST or None)
    done = False
    if request.method == "POST" and form.is_valid():
        user = User.objects.get(pk=request.user.pk)
        d = form.cleaned_data
        if not user.check_password(d["current"]):
            form.add_error("current", "不正确 not your current password")
        elif d["new"] != d["again"]:
            form.add_error("again", "两次不一致 the two new passwords differ")
        else:
            try:
                with transaction.atomic():
                    validate_password(d["new"], user)
                    user.set_password(d["new"])
                    user.save()
                    audit(request, "account", user.get_username(), {"password_set": True, "own": True})
            except ValidationError as err:
                form.add_error("new", err)
            else:
                update_session_auth_hash(request, user)  # stay logged in here; other sessions end
                done = True
    return render(request, "web/password.html", {"form": form, "done": done})

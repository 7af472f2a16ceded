"""The web application's own records: staff accounts' roles, access requests and their decisions, failed
log-ins (for the throttle) and a browsable copy of the access audit. The recordings themselves stay in the
store; the signed audit file (central/audit.py) is the record, `AuditRow` only its index for the pages."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models

from central.config import ROLES

ROLE_CHOICES = [(r, r) for r in ROLES]


class Staff(models.Model):
    user: models.OneToOneField[User, User] = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                                                  related_name="staff")
    role: models.CharField[str, str] = models.CharField(max_length=16, choices=ROLE_CHOICES)
    unit: models.CharField[str, str] = models.CharField(max_length=200, blank=True)
    """The unit a viewer or supervisor belongs to: they see only its sessions."""


class AccessRequest(models.Model):
    PENDING, APPROVED, REFUSED = "pending", "approved", "refused"
    VIEW, EXPORT = "view", "export"
    purpose: models.CharField[str, str] = models.CharField(max_length=8, default=VIEW,
                                                           choices=[(VIEW, VIEW), (EXPORT, EXPORT)])
    """To view the session, or (the legal office) to export an evidence package of it."""
    range_start: models.FloatField[float | None, float | None] = models.FloatField(null=True)
    range_end: models.FloatField[float | None, float | None] = models.FloatField(null=True)
    """An export of part of the session: seconds on its media timeline; None: the whole session."""
    requester: models.ForeignKey[User, User] = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                                                 related_name="requests")
    device: models.CharField[str, str] = models.CharField(max_length=64)
    session: models.CharField[str, str] = models.CharField(max_length=64)
    unit: models.CharField[str, str] = models.CharField(max_length=200)
    """The session's unit when asked: the supervisors of this unit decide."""
    reason: models.TextField[str, str] = models.TextField()
    created: models.DateTimeField[dt.datetime, dt.datetime] = models.DateTimeField(auto_now_add=True)
    state: models.CharField[str, str] = models.CharField(max_length=10, default=PENDING,
                             choices=[(PENDING, PENDING), (APPROVED, APPROVED), (REFUSED, REFUSED)])
    decided_by: models.ForeignKey[User | None, User | None] = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="decisions")
    decided_at: models.DateTimeField[dt.datetime | None, dt.datetime | None] = models.DateTimeField(null=True)
    note: models.TextField[str, str] = models.TextField(blank=True)
    expires: models.DateTimeField[dt.datetime | None, dt.datetime | None] = models.DateTimeField(null=True)
    requester_id: int

    class Meta:
        indexes = (models.Index(fields=["requester", "device", "session"]), models.Index(fields=["state", "unit"]))


class LoginFailure(models.Model):
    username: models.CharField[str, str] = models.CharField(max_length=150, db_index=True)
    address: models.CharField[str, str] = models.CharField(max_length=64, db_index=True)
    at: models.DateTimeField[dt.datetime, dt.datetime] = models.DateTimeField(db_index=True)


class AuditRow(models.Model):
    seq: models.BigIntegerField[int, int] = models.BigIntegerField(primary_key=True)
    time: models.DateTimeField[dt.datetime, dt.datetime] = models.DateTimeField(db_index=True)
    actor: models.CharField[str, str] = models.CharField(max_length=150, db_index=True)
    role: models.CharField[str, str] = models.CharField(max_length=16)
    action: models.CharField[str, str] = models.CharField(max_length=16, db_index=True)
    target: models.CharField[str, str] = models.CharField(max_length=200, db_index=True)
    detail: models.TextField[str, str] = models.TextField()
    address: models.CharField[str, str] = models.CharField(max_length=64)
    end: models.BigIntegerField[int, int] = models.BigIntegerField()
    """The byte offset just after this record in the audit file: where the next sync reads from."""
